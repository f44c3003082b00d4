"""Keep secrets out of messages, events and persisted state: URL redaction and host identity."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameter names that carry credentials or signatures (Civitai ``token``, S3/GCS/Azure
# presigned URLs, generic API keys).
_SECRET_PARAM = re.compile(
    r"token|key|sig|signature|secret|passw|auth|credential|session|policy|x-amz-|x-goog-", re.IGNORECASE
)
REDACTED = "***"


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
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def host_key(url: str) -> tuple[str, str, int]:
    """Identity of the server a token belongs to: scheme, lower-cased host and port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def redact_text(text: str, *secrets: str | None) -> str:
    """Remove literal secrets (a token that an exception message may echo) from ``text``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, REDACTED)
    return text
