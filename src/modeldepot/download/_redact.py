"""Keep secrets out of messages, events and persisted state: URL redaction and host identity."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

# One redaction and one host identity for the whole project live in ``modeldepot._http``; they are
# re-exported here because the download layer and its callers have always imported them from here.
from modeldepot._http import REDACTED, host_key, is_secret_name, redact_url


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


def redact_text(text: str, *secrets: str | None) -> str:
    """Remove literal secrets (a token that an exception message may echo) from ``text``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, REDACTED)
    return text


__all__ = ["REDACTED", "host_key", "is_secret_name", "redact_text", "redact_url", "strip_secrets"]
