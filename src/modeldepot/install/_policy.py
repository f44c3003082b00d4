"""Which remote hosts an install may reach: never a private network unless the settings allow it."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from modeldepot.errors import NotAllowedError


def _is_private(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    return bool(
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified
    )


def check_public_url(url: str, allow_private: bool) -> None:
    """Refuse URLs whose host resolves to loopback, private or link-local addresses.

    Raises:
        NotAllowedError: naming the host and how to allow it.
    """
    if allow_private:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise NotAllowedError(f"only http(s) sources can be installed, not {parts.scheme!r}")
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError):
        return  # unresolvable: the download itself will fail with a clear error
    for info in infos:
        if _is_private(str(info[4][0])):
            raise NotAllowedError(
                f"{host} resolves to a private or loopback address ({info[4][0]}); installs from private "
                "networks are refused unless allow_private_urls is set"
            )
