"""ModelManager builds every service from one DepotConfig, on SQLite, PostgreSQL or YAML records."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modeldepot import DepotConfig, ModelManager
from modeldepot.testing import factories


def test_open_is_lazy(tmp_path: Path) -> None:
    threads_before = threading.active_count()
    with ModelManager.open(home=tmp_path / "h") as mm:
        assert mm.store.all_models() == []
        # Nothing but the database and the record store was built for a listing.
        assert not any(mm.services.built(name) for name in ("storage", "downloads", "hash_cache", "load"))
        assert threading.active_count() == threads_before
        assert mm.config.home == (tmp_path / "h").resolve()
    assert (tmp_path / "h" / "databases" / "modeldepot.db").is_file()


@pytest.mark.parametrize("backend", ["sqlite", "yaml", "postgres"])
def test_register_and_search_on_every_backend(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings: dict[str, object] = {}
    if backend == "yaml":
        settings["db"] = str(tmp_path / "models.yaml")
    elif backend == "postgres":
        settings["db"] = request.getfixturevalue("pg_url")
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    ckpt = factories.write_sd1_checkpoint(tmp_path / "base.safetensors")
    with ModelManager(DepotConfig(home=tmp_path / "h", **settings)) as mm:
        k1 = mm.install.register_path(lora, {"name": "style", "tags": ["anime"]})
        k2 = mm.install.install_path(ckpt)
        assert [m.key for m in mm.store.search_by_attr(base="sdxl", type="lora")] == [k1]
        assert mm.store.search_by_tag(["anime"])[0].key == k1
        assert mm.store.get_model(k2).path.startswith(str(mm.config.models_path))
        mm.store.rename_model(k1, "style-v2")
    with ModelManager(DepotConfig(home=tmp_path / "h", **settings)) as mm:
        assert {m.name for m in mm.store.all_models()} == {"style-v2", "base"}
        mm.install.delete(k1)
        mm.install.delete(k2)
        assert mm.store.all_models() == []
    assert lora.exists()


def test_close_stops_worker_threads(tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    mm = ModelManager.open(home=tmp_path / "h")
    _ = mm.install, mm.downloads
    mm.close()
    leftover = {t.name for t in threading.enumerate() if t.is_alive()} - before
    assert not any(n.startswith("modeldepot-install") for n in leftover), leftover


def test_load_by_key_with_an_unknown_submodel_lists_the_parts(tmp_path: Path) -> None:
    from modeldepot.load import InvalidSubmodelError

    pipe = factories.write_diffusers_pipeline(tmp_path / "tiny-sd15")
    with ModelManager.open(home=tmp_path / "home") as mm:
        key = mm.install.register_path(pipe)
        with pytest.raises(InvalidSubmodelError, match="unet"):
            mm.load_model_by_key(key, "nonsense")
