"""Which addresses a download may connect to, decided once per hop and then pinned.

Every request of the download layer (the first URL and each redirect hop; the metadata clients'
requests too) resolves its host once through :meth:`ConnectPolicy.resolve`. The addresses it
returns are the ones the socket connects to, so a DNS answer that changes between the check and the
connect (rebinding) cannot reach another address. Private, loopback, link-local, CGNAT, multicast,
reserved and unspecified addresses are refused unless the host is trusted: the endpoints the user
configured (``hf_endpoint``, ``civitai_endpoint``), ``trusted_hosts``, or everything when
``allow_private_urls`` is set. Trust belongs to a host; a redirect target is judged on its own.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from modeldepot._urls import default_port, parse_host
from modeldepot.errors import BlockedAddressError, DownloadError

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig

#: (family, sockaddr) pairs as ``socket.getaddrinfo`` gives them.
Address = tuple[int, tuple[Any, ...]]
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NO_SUCH_HOST = frozenset(getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n))


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where it really goes."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: _IP) -> bool:
    """True for globally routable unicast addresses only."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return is_public(inner)
        if ip.is_site_local:
            return False
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or ip.is_loopback or ip.is_link_local:
        return False
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return False
    return ip.is_global and not ip.is_private


@dataclass(frozen=True)
class ConnectPolicy:
    """Where connections may go. The default refuses every non-public address.

    Args:
        allow_private: the blunt switch (``allow_private_urls``) for tests, demos and LAN-only use.
        trusted: hosts (``"mirror.lan"``: any port) or ``"host:port"`` entries, or URLs (their
            host and port) that are trusted even when they resolve to a private address.
    """

    allow_private: bool = False
    trusted: frozenset[str] = frozenset()
    _any_port: frozenset[str] = field(init=False, repr=False, compare=False)
    _with_port: frozenset[tuple[str, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        any_port: set[str] = set()
        with_port: set[tuple[str, int]] = set()
        for entry in self.trusted:
            host, port = parse_host(entry, allow_path=True)
            if port is None:
                any_port.add(host)
            else:
                with_port.add((host, port))
        object.__setattr__(self, "_any_port", frozenset(any_port))
        object.__setattr__(self, "_with_port", frozenset(with_port))

    @classmethod
    def of(cls, trusted: Iterable[str] = (), allow_private: bool = False) -> ConnectPolicy:
        return cls(allow_private=allow_private, trusted=frozenset(trusted))

    @classmethod
    def from_config(cls, config: DepotConfig) -> ConnectPolicy:
        """The configured endpoints and ``trusted_hosts`` are trusted; ``allow_private_urls`` opens all."""
        trusted = [config.hf_endpoint, config.civitai_endpoint, *config.trusted_hosts]
        return cls.of(trusted, allow_private=config.allow_private_urls)

    @classmethod
    def for_endpoint(cls, endpoint: str, config: DepotConfig | None = None) -> ConnectPolicy:
        """A metadata client's policy: the endpoint it was given is the user's choice, so trusted."""
        base = cls.from_config(config) if config is not None else cls()
        return base.trusting(endpoint)

    def trusting(self, *entries: str) -> ConnectPolicy:
        """This policy with ``entries`` trusted as well."""
        return ConnectPolicy(allow_private=self.allow_private, trusted=self.trusted | frozenset(entries))

    def is_trusted(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        return host in self._any_port or (host, port) in self._with_port

    def resolve(self, host: str, port: int, shown: str) -> list[Address]:
        """The addresses to connect to for ``host:port``; refused ones raise, a failed lookup too.

        Args:
            shown: the URL as it may be shown (redacted), for messages.

        Raises:
            BlockedAddressError: an address is not public and the host is not trusted.
            DownloadError: the name does not exist (never retried).
            socket.gaierror: the lookup failed for now (a connection error: the caller may retry it).
        """
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except UnicodeError as exc:
            raise DownloadError(f"{shown}: the host name {host!r} is not valid", url=shown) from exc
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_HOST:  # the name does not exist: asking again will not help
                raise DownloadError(f"{shown}: cannot resolve host {host}: {exc.strerror}", url=shown) from exc
            raise  # a temporary failure (EAI_AGAIN...): the caller retries it like a connection error
        addrs: list[Address] = [(info[0], info[4]) for info in infos]
        if not addrs:
            raise socket.gaierror(socket.EAI_NONAME, f"no address for {host}")
        if self.allow_private or self.is_trusted(host, port):
            return addrs
        for _family, sockaddr in addrs:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if not is_public(ip):
                raise BlockedAddressError(
                    f"{shown}: refused: private address {ip} for host {host} (add it to trusted_hosts, "
                    "or set allow_private_urls)",
                    url=shown,
                )
        return addrs

    def check_url(self, url: str, shown: str | None = None) -> list[Address]:
        """Resolve and check ``url``'s host (a preflight; every connection checks again)."""
        parts = urlsplit(url)
        shown = shown or url
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise DownloadError(f"{shown}: only http(s) URLs can be downloaded", url=shown)
        return self.resolve(parts.hostname, parts.port or default_port(parts.scheme), shown)


def connect_pinned(addrs: list[Address], timeout: float | None, rcvbuf: int | None = None) -> socket.socket:
    """Connect to the first reachable address of ``addrs`` (already checked), like ``create_connection``.

    ``rcvbuf``, when given, is set before the handshake. Why: on a fast link where the writer is
    the bottleneck, kernel autotuning grows the receive buffer to ``tcp_rmem`` max (often 32 MiB
    per connection), bytes lost on kill -9 or pause; a fixed buffer bounds that loss.
    """
    err: OSError | None = None
    for family, sockaddr in addrs:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            err = exc
            sock.close()
    raise err or OSError("no address to connect to")


__all__ = ["Address", "ConnectPolicy", "connect_pinned", "is_public"]
