"""Every hop of every download goes through the connection policy (issue: SSRF through redirects).

The trusted side is the configured endpoint on 127.0.0.1; the target of its redirects is a second
server on 127.0.0.2, a private address nobody trusted. That server must never see a connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.errors import BlockedAddressError
from modeldepot.manager import ModelManager
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

REFUSED = r"refused: private address 127\.0\.0\.2"


@pytest.fixture
def inner() -> Iterator[FakeHub]:
    """The internal server an attacker wants to reach."""
    with FakeHub(host="127.0.0.2") as h:
        h.add_file("secret/model.safetensors", b"internal only")
        yield h


@pytest.fixture
def strict(tmp_path: Path, hub: FakeHub) -> Iterator[ModelManager]:
    """Endpoints on the local hub (trusted because configured); no allow_private_urls."""
    with ModelManager.open(home=tmp_path / "depot", hf_endpoint=hub.url, civitai_endpoint=hub.url) as m:
        yield m


def _untouched(inner: FakeHub) -> None:
    assert inner.stats.max_concurrent_connections == 0 and inner.stats.requests == []


def test_hf_lfs_redirect_to_a_private_host_is_refused(
    strict: ModelManager, hub: FakeHub, inner: FakeHub, tmp_path: Path
) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "l.safetensors")
    hub.add_hf_repo("acme/lora", {"l.safetensors": lora.read_bytes()})
    hub.cdn_host = inner.url  # the hub's LFS redirects now point at 127.0.0.2
    job = strict.install.wait_for_job(strict.install.heuristic_import("acme/lora"), timeout=60)
    assert job.errored and "refused: private address 127.0.0.2" in (job.error or "")
    assert strict.store.all_models() == []
    _untouched(inner)
    # Control: the same install works when the CDN is the trusted endpoint itself.
    hub.cdn_host = None
    job = strict.install.wait_for_job(strict.install.heuristic_import("acme/lora"), timeout=60)
    assert job.complete, job.error


def test_civitai_download_redirect_to_a_private_host_is_refused(
    strict: ModelManager, hub: FakeHub, inner: FakeHub, tmp_path: Path
) -> None:
    emb = factories.write_textual_inversion(tmp_path / "emb.safetensors")
    hub.add_civitai_model(
        {
            "id": 7,
            "name": "Emb",
            "type": "TextualInversion",
            "modelVersions": [
                {"id": 70, "name": "v1", "baseModel": "SD 1.5", "files": [{"name": "e.safetensors", "primary": True,
                                                                         "type": "Model", "data": emb.read_bytes()}]}
            ],
        }
    )  # fmt: skip
    hub.cdn_host = inner.url
    job = strict.install.wait_for_job(strict.install.heuristic_import("civitai:70"), timeout=60)
    assert job.errored and "refused: private address 127.0.0.2" in (job.error or "")
    _untouched(inner)


def test_plain_url_on_a_trusted_mirror_cannot_redirect_inward(tmp_path: Path, hub: FakeHub, inner: FakeHub) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "l.safetensors")
    good = hub.add_file("mirror/good.safetensors", lora)
    bad = hub.add_redirect("mirror/bad.safetensors", f"{inner.url}/secret/model.safetensors")
    with ModelManager.open(home=tmp_path / "d", trusted_hosts=[f"127.0.0.1:{hub.port}"]) as mm:
        job = mm.install.wait_for_job(mm.install.heuristic_import(good), timeout=60)
        assert job.complete, job.error  # the mirror itself is trusted
        job = mm.install.wait_for_job(mm.install.heuristic_import(bad), timeout=60)
        assert job.errored and "refused: private address 127.0.0.2" in (job.error or "")
        with pytest.raises(BlockedAddressError, match=REFUSED):
            mm.install.download_and_cache(bad, timeout=60)
        # Trust is per host: the mirror's neighbour on another port is not trusted either.
        with pytest.raises(BlockedAddressError, match=REFUSED):
            mm.install.heuristic_import(f"{inner.url}/secret/model.safetensors")
    _untouched(inner)


def test_metadata_api_redirect_to_a_private_host_is_refused(strict: ModelManager, hub: FakeHub, inner: FakeHub) -> None:
    hub.add_redirect("api/models/acme/evil", f"{inner.url}/api/models/acme/evil")
    hub.add_redirect("api/v1/model-versions/71", f"{inner.url}/api/v1/model-versions/71")
    for source in ("acme/evil", "civitai:71"):
        job = strict.install.wait_for_job(strict.install.heuristic_import(source), timeout=60)
        assert job.errored and "refused: private address 127.0.0.2" in (job.error or ""), (source, job.error)
    _untouched(inner)
