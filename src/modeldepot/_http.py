"""The HTTP vocabulary every client here shares: who we say we are, which answers are retried or
followed, how long to wait, how a URL is shown, and how an error status becomes an exception.

Two clients speak HTTP: the metadata clients (``remote/``, httpx) and the download engine
(``download/``, ``http.client``). Both take their constants, their ``Retry-After`` handling, their
URL redaction and their status -> error mapping from here, so a fix lands in both. Stdlib only: the
download engine must not pay for importing httpx.

Errors (DESIGN §5, "translate foreign errors in one place")::

    status_error(status, url, ...)
      401, 403  -> RemoteAccessError
      404, 410  -> RemoteNotFoundError
      RETRY_STATUSES -> RetryableHTTPError (a DownloadError carrying .status and .retry_after)
      anything else  -> DownloadError
"""

from __future__ import annotations

import email.utils
import math
import re
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from modeldepot import __version__
from modeldepot._urls import default_port
from modeldepot.errors import DownloadError, RemoteAccessError, RemoteNotFoundError

USER_AGENT = f"modeldepot/{__version__}"

#: Answers worth asking again. 408 is in the set although only the download engine used to retry
#: it: it says the server gave up waiting for our request before acting on it, and both clients
#: send only GET/HEAD, so repeating is safe; a metadata call hitting a busy proxy's 408 deserves
#: the same second chance as a 503.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: The longest a ``Retry-After`` (or the backoff) makes a client wait between two attempts.
MAX_RETRY_AFTER = 10.0
#: The first backoff step when the server names no delay (then doubled each attempt).
BACKOFF_BASE = 0.25

# Query parameter names that carry credentials or signatures (Civitai ``token``, S3/GCS/Azure
# presigned URLs, generic API keys).
_SECRET_PARAM = re.compile(
    r"token|key|sig|signature|secret|passw|auth|credential|session|policy|x-amz-|x-goog-", re.IGNORECASE
)
REDACTED = "***"
#: Percent-decoding rounds before a name is judged: ``%2574oken`` is ``token`` encoded twice.
_DECODE_ROUNDS = 3


class RetryableHTTPError(DownloadError):
    """A status worth retrying (:data:`RETRY_STATUSES`); ``retry_after`` comes from the response, if any."""

    def __init__(self, message: str, url: str | None, status: int, retry_after: float | None) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.retry_after = retry_after


# -- waiting ---------------------------------------------------------------------------------------


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff_seconds(
    attempt: int, retry_after: float | None = None, *, base: float = BACKOFF_BASE, cap: float = MAX_RETRY_AFTER
) -> float:
    """The wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    The server's ``retry_after`` when it gave one, else ``base * 2**attempt``; ``cap`` either way.
    """
    if retry_after is not None:
        return max(0.0, min(cap, retry_after))
    return float(min(cap, base * (2 ** max(0, attempt))))


def retry_after_seconds(
    header_value: str | None, attempt: int, *, base: float = BACKOFF_BASE, cap: float = MAX_RETRY_AFTER
) -> float:
    """The wait before the next attempt from a raw ``Retry-After`` value (see :func:`backoff_seconds`)."""
    return backoff_seconds(attempt, parse_retry_after(header_value), base=base, cap=cap)


# -- showing URLs ----------------------------------------------------------------------------------


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


def redact_url(url: object) -> str:
    """``url`` (a string or an ``httpx.URL``) with passwords and secret-looking query values
    replaced by ``***``; other query parameters stay, so the message still names the resource."""
    try:
        parts = urlsplit(str(url))
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
    """Identity of the server a request (and a token) goes to: scheme, lower-cased host and port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or default_port(scheme)


# -- errors ----------------------------------------------------------------------------------------

#: The download engine's wording, the default when a caller names nothing more specific.
ACCESS_HINT = "a token is missing or not accepted for this host (pass access_token or configure remote_api_tokens)"
NOT_FOUND_HINT = "the file does not exist on the server"


def status_error(
    status: int,
    url: str,
    *,
    reason: str = "",
    detail: str = "",
    retry_after: str | None = None,
    access: str | None = None,
    not_found: str | None = None,
    other: str | None = None,
) -> DownloadError:
    """The exception for an HTTP error answer: the one status -> error table of the project.

    Args:
        status: the answer's status code (callers decide which statuses are errors).
        url: the URL as it may be shown (already redacted).
        reason: the status line's reason phrase.
        detail: the server's own short error text; appended to the default messages.
        retry_after: the raw ``Retry-After`` header, kept on a :class:`RetryableHTTPError`.
        access, not_found, other: a service's own message for 401/403, for 404/410, and for every
            other status (retryable or not). The class is chosen here whatever the wording.
    """
    head = f"{url}: HTTP {status} {reason}".rstrip()
    extra = f": {detail}" if detail else ""
    if status in (401, 403):
        return RemoteAccessError(access or f"{head} - {ACCESS_HINT}{extra}", url=url)
    if status in (404, 410):
        return RemoteNotFoundError(not_found or f"{head} - {NOT_FOUND_HINT}{extra}", url=url)
    message = other or f"{head}{extra}"
    if status in RETRY_STATUSES:
        return RetryableHTTPError(message, url=url, status=status, retry_after=parse_retry_after(retry_after))
    return DownloadError(message, url=url)


__all__ = [
    "ACCESS_HINT",
    "BACKOFF_BASE",
    "MAX_RETRY_AFTER",
    "NOT_FOUND_HINT",
    "REDACTED",
    "REDIRECT_STATUSES",
    "RETRY_STATUSES",
    "USER_AGENT",
    "RetryableHTTPError",
    "backoff_seconds",
    "host_key",
    "is_secret_name",
    "parse_retry_after",
    "redact_url",
    "retry_after_seconds",
    "status_error",
]
