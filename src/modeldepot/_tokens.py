"""The one rule for which bearer token a request carries (the metadata clients and the download queue).

    explicit token  >  config.remote_api_tokens (host-scoped)  >  huggingface_hub's cached login

The cached login is a Hugging Face credential: it goes only to the Hugging Face endpoint's own host
(scheme, host and port), never to Civitai, a mirror or a plain URL. Tokens are returned, never
logged or stored here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldepot._http import host_key

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig

DEFAULT_HF_ENDPOINT = "https://huggingface.co"


def cached_login_token() -> str | None:
    """huggingface_hub's token (``HF_TOKEN`` or the saved login), when the package is installed."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    try:
        token = get_token()
    except Exception:  # a broken token file must not break installs that need no token
        return None
    return str(token) if token else None


def _same_host(url: str, other: str) -> bool:
    try:
        return host_key(url) == host_key(other)
    except ValueError:  # a malformed port
        return False


def resolve_token(
    url: str,
    *,
    explicit: str | None = None,
    config: DepotConfig | None = None,
    explicit_for: str | None = None,
    hf_endpoint: str | None = None,
    cached_login: bool = True,
) -> str | None:
    """The token to send with a request to ``url``, or None.

    Args:
        url: where the request goes.
        explicit: a token the user gave for this request or client; it wins.
        config: its ``remote_api_tokens`` are asked next (``DepotConfig.token_for``: each entry
            belongs to its own host).
        explicit_for: when set, ``explicit`` is sent only to this endpoint's host (a client's
            token must not follow a listing's link to another server); None sends it to ``url``.
        hf_endpoint: the Hugging Face endpoint whose host may receive the cached login; default
            ``config.hf_endpoint``, else ``https://huggingface.co``.
        cached_login: False never consults huggingface_hub (a client that is not Hugging Face's,
            or a user who opted out).
    """
    if explicit and (explicit_for is None or _same_host(url, explicit_for)):
        return explicit
    if config is not None:
        found = config.token_for(url)
        if found:
            return found
    if not cached_login:
        return None
    hub = hf_endpoint or (config.hf_endpoint if config is not None else DEFAULT_HF_ENDPOINT)
    return cached_login_token() if _same_host(url, hub) else None


__all__ = ["DEFAULT_HF_ENDPOINT", "cached_login_token", "resolve_token"]
