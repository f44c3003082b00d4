"""Keep secrets out of messages, events and persisted state: URL redaction and host identity."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from modeldepot._urls import default_port

# Query parameter names that carry credentials or signatures (Civitai ``token``, S3/GCS/Azure
# presigned URLs, generic API keys).
_SECRET_PARAM = re.compile(
    r"token|key|sig|signature|secret|passw|auth|credential|session|policy|x-amz-|x-goog-", re.IGNORECASE
)
REDACTED = "***"
#: Percent-decoding rounds before a name is judged: ``%2574oken`` is ``token`` encoded twice.
_DECODE_ROUNDS = 3


def is_secret_name(name: str) -> bool:
    """Whether a query parameter name looks like it carries a credential.

    The name is percent-decoded first (``api%5Fkey``, ``%74oken``): servers decode names before
    reading them, so an encoded spelling carries the secret just as well.
    """
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return bool(_SECRET_PARAM.search(name))


def strip_secrets(source: str) -> str:
    """``source`` fit to store or show: secret query parameters, user info and fragment removed.

    Unlike :func:`redact_url` the secret parameters are dropped rather than masked, so a stored
    Civitai or plain URL stays a usable URL (a configured token is added again when it is used).
    Other parameters are kept exactly as written. Strings that are not URLs (paths, repo ids) come
    back unchanged; ``civitai:ID?...`` forms are cleaned like URLs.
    """
    try:
        parts = urlsplit(source)
    except ValueError:
        return "<unparseable url>"
    if len(parts.scheme) < 2:  # a path, a repo id, or a Windows drive letter
        return source
    netloc = parts.netloc.rpartition("@")[2]  # a user name alone can be a token (https://TOKEN@host)
    pairs = parts.query.split("&") if parts.query else []
    kept = [p for p in pairs if not is_secret_name(p.partition("=")[0])]
    if netloc == parts.netloc and len(kept) == len(pairs) and not parts.fragment:
        return source  # nothing to remove: not even re-spelled
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(kept), ""))


def redact_url(url: str) -> str:
    """``url`` with passwords and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostport}" if ":" in userinfo else f"{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def host_key(url: str) -> tuple[str, str, int]:
    """Identity of the server a token belongs to: scheme, lower-cased host and port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or default_port(scheme)


def redact_text(text: str, *secrets: str | None) -> str:
    """Remove literal secrets (a token that an exception message may echo) from ``text``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, REDACTED)
    return text
