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


def test_load_model_by_attr_on_two_matches_is_a_value_error(tmp_path: Path) -> None:
    from modeldepot.errors import DuplicateModelException, ModelDepotError
    from modeldepot.manager import AmbiguousModelException

    with ModelManager.open(home=tmp_path / "home") as mm:
        for seed in (1, 2):
            mm.install.register_path(
                factories.write_lora(tmp_path / f"style-{seed}.safetensors", seed=seed), {"name": "style"}
            )
        with pytest.raises(ValueError, match="more than one model named 'style'") as info:
            mm.load_model_by_attr("style", "sd-1", "lora")
        # Seed 002 documents ValueError; code that caught the earlier DuplicateModelException still does.
        assert isinstance(info.value, AmbiguousModelException)
        assert isinstance(info.value, DuplicateModelException) and isinstance(info.value, ModelDepotError)


def test_loading_registered_local_and_remote_models(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from modeldepot.testing.fakehub import FakeHub

    lora = factories.write_lora(tmp_path / "style.safetensors", seed=3)
    with FakeHub() as hub, ModelManager.open(home=tmp_path / "home", allow_private_urls=True) as mm:
        key = mm.install.register_path(lora, {"name": "style"})
        by_key = mm.load_model_by_key(key)
        assert mm.load.get_model_by_key(key).model is by_key.model  # the facade's loader knows the store
        assert by_key.location == str(lora) and by_key.precision == "float32"

        local = mm.load_local_model(tmp_path / "style.safetensors")
        assert local.config.key != key and set(local.model) == set(by_key.model)
        seen: list[Path] = []
        mine = mm.load_local_model(lora, loader=lambda p: seen.append(p) or {"w": torch.ones(1)})
        assert seen == [lora] and torch.equal(mine.model["w"], torch.ones(1))

        url = hub.add_file("files/loras/style.safetensors", lora)
        remote = mm.load_remote_model(url)
        assert remote.config.type == "lora" and set(remote.model) == set(by_key.model)
        assert Path(remote.location) == mm.download_and_cache_model(url)
        hub.stats.reset()
        assert mm.load_remote_model(url).model is remote.model  # cached file, cached model
        assert hub.stats.requests == []
        assert [m.key for m in mm.store.all_models()] == [key]  # nothing else was registered
