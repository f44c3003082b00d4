"""The one parser of the fleet's ``blob_remote`` URL (``s3://bucket/prefix``), for the settings and
the S3 blob tier alike."""

from __future__ import annotations

import re

from modeldepot.errors import ConfigurationError

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def parse_bucket_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (prefix "" or ``a/b``, no edge slashes).

    Raises:
        ConfigurationError: not such a URL; the message never echoes credentials or a query.
    """
    bad = "blob_remote must look like s3://bucket/prefix"
    text = url.strip()
    if not text.lower().startswith("s3://"):
        raise ConfigurationError(f"{bad}: it does not start with s3://")
    netloc, _, rest = text[5:].partition("/")
    if "@" in netloc:
        # Never echo it: the part before "@" is a key (and maybe a secret).
        raise ConfigurationError(f"{bad}: credentials do not belong in the URL (use the AWS environment or profile)")
    if "?" in text or "#" in text:
        # Not echoed either: a pasted presigned URL carries its signature in the query.
        raise ConfigurationError(f"{bad}: no ?query or #fragment")
    if not netloc:
        raise ConfigurationError(f"{bad}: no bucket name")
    if not _BUCKET_RE.match(netloc) or ".." in netloc or _IP_RE.match(netloc):
        raise ConfigurationError(f"blob_remote: {netloc!r} is not a valid S3 bucket name")
    parts = [p for p in rest.split("/") if p]
    if any(p in (".", "..") for p in parts) or any(ord(c) < 32 or c == "\\" for c in rest):
        raise ConfigurationError(f"blob_remote: the prefix {rest!r} is not a plain folder path")
    return netloc, "/".join(parts)
