"""Host identity in URLs and host settings, for every layer (settings included): one parser."""

from __future__ import annotations

from urllib.parse import urlsplit


def default_port(scheme: str) -> int:
    return 443 if scheme.lower() == "https" else 80


def parse_host(entry: str, *, allow_path: bool = False) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a URL → (lower-cased host, port or None: any port).

    A URL's port defaults from its scheme. A path is refused unless ``allow_path`` (an endpoint
    such as ``https://hub.corp/mirror`` is judged by its host and port).

    Raises:
        ValueError: no host, a bad port, or a path where none is allowed.
    """
    text = entry.strip()
    is_url = "://" in text
    parts = urlsplit(text if is_url else f"//{text}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise ValueError(f"{entry!r} names no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{entry!r} has a bad port") from exc
    if not allow_path and parts.path not in ("", "/"):
        raise ValueError(f"{entry!r} must be a host or host:port")
    if port is None and is_url:
        port = default_port(parts.scheme)
    return host, port


__all__ = ["default_port", "parse_host"]
