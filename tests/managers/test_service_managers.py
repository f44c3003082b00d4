"""Each service's manager loads its kind of model to the expected class (tiny models over fakehub)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.managers.conftest import entry, sha256

from modeldepot.errors import LoaderNotFoundError, UnknownModelException
from modeldepot.manager import ModelManager
from modeldepot.managers import (
    BlipModelManager,
    ClipModelManager,
    CodeFormerModelManager,
    EsrganModelManager,
    GfpganModelManager,
    SafetyCheckerModelManager,
    SuperModelManager,
)
from modeldepot.managers.new import NewModelManager
from modeldepot.testing.factories import (
    write_blip_folder,
    write_clip_model_folder,
    write_codeformer,
    write_esrgan,
    write_gfpgan,
    write_safety_checker_folder,
    write_weights,
)
from modeldepot.testing.fakehub import FakeHub

Writer = Callable[[dict[str, Any]], Path]


def _serve(hub: FakeHub, folder: Path, prefix: str) -> list[tuple[str, str | None, str]]:
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = f"{prefix}/{p.relative_to(folder).as_posix()}" if prefix else p.relative_to(folder).as_posix()
            data = p.read_bytes()
            out.append((rel, sha256(data), hub.add_file(f"hf/{prefix or 'root'}/{rel}", data)))
    return out


def _file(hub: FakeHub, path: Path, name: str) -> tuple[str, str, str]:
    data = path.read_bytes()
    return (name, sha256(data), hub.add_file(f"files/{name}", data))


def test_clip_loads_clipmodel_with_its_processor(
    hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Writer
) -> None:
    files = _serve(hub, write_clip_model_folder(tmp_path / "clip"), "clip-vit-tiny")
    esr = _file(hub, write_esrgan(tmp_path / "e.pt", nf=8, gc=4, num_blocks=1), "ViT-L-14.pt")
    m = ClipModelManager(
        write_reference(
            {
                "tiny clip": entry(files, type="clip"),
                "ViT-L/14": entry([esr], type="clip"),
                "coca_tiny": entry([_file(hub, tmp_path / "e.pt", "coca.pt")], type="coca"),
                "a vae": entry([esr], type="vae"),
            }
        ),
        depot,
        cache_home=nataili,
    )
    loaded = m.load("tiny clip")
    assert type(loaded.model).__name__ == "CLIPModel"
    assert type(loaded["processor"]).__name__ == "CLIPProcessor"
    assert loaded.record.type.value == "clip_vision" and Path(loaded.record.path).is_dir()
    # OpenAI's TorchScript archives and OpenCLIP checkpoints: downloaded, but refused clearly.
    with pytest.raises(LoaderNotFoundError, match="not a Hugging Face clip_vision/clip_embed folder"):
        m.load("ViT-L/14")
    with pytest.raises(LoaderNotFoundError, match="open_clip_torch"):
        m.load("coca_tiny")
    assert m.is_available("coca_tiny")
    with pytest.raises(UnknownModelException, match="type 'vae'; ClipModelManager loads clip, open_clip, coca"):
        m.load("a vae")


def test_blip_loads_the_captioner_and_its_processor(
    hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Writer
) -> None:
    files = _serve(hub, write_blip_folder(tmp_path / "blip"), "blip-tiny")
    m = BlipModelManager(write_reference({"BLIP": entry(files, type="blip")}), depot, cache_home=nataili)
    loaded = m.load("BLIP")
    assert type(loaded.model).__name__ == "BlipForConditionalGeneration"
    assert type(loaded["processor"]).__name__ == "BlipProcessor"


def test_safety_checker_spread_over_the_service_folder(
    hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Writer
) -> None:
    # As the real reference: config.json, weights and preprocessor_config.json at the folder's root.
    files = _serve(hub, write_safety_checker_folder(tmp_path / "sc"), "")
    m = SafetyCheckerModelManager(
        write_reference({"safety_checker": entry(files, type="safety_checker")}), depot, cache_home=nataili
    )
    loaded = m.load("safety_checker")
    assert type(loaded.model).__name__ == "StableDiffusionSafetyChecker"
    assert type(loaded["processor"]).__name__.startswith("CLIPImageProcessor")
    for rel, _, _ in files:
        assert (nataili / "safety_checker" / rel).is_file()
    assert len(depot.store.search_by_tag("service:safety_checker")) == 1  # one folder model


def test_gfpgan_and_its_helper_files(
    hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Writer
) -> None:
    main = _file(hub, write_gfpgan(tmp_path / "g.pth", seed=1), "GFPGANv1.4.pth")
    helper = _file(
        hub, write_weights(tmp_path / "det.pth", {"body.conv1.weight": (4, 3, 3, 3)}), "detection_Resnet50_Final.pth"
    )
    m = GfpganModelManager(write_reference({"GFPGAN": entry([main, helper], type="gfpgan")}), depot, cache_home=nataili)
    loaded = m.load("GFPGAN")
    assert type(loaded.model).__name__ == "GFPGAN" and loaded.model.arch == "GFPGAN"
    records = depot.store.search_by_tag("reference:GFPGAN")
    assert len(records) == 2  # the face detector is a model of its own, not part of GFPGAN's record
    assert loaded.record.path.endswith(".pth") and (nataili / "gfpgan" / "detection_Resnet50_Final.pth").is_file()


def test_codeformer(hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Writer) -> None:
    f = _file(hub, write_codeformer(tmp_path / "c.pth", seed=2), "CodeFormers.pth")
    m = CodeFormerModelManager(
        write_reference({"CodeFormers": entry([f], type="CodeFormers")}), depot, cache_home=nataili
    )
    assert type(m.load("CodeFormers").model).__name__ == "CodeFormer"


def test_super_manager_routes_to_the_owner(
    hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Writer, esrgan_reference: Path
) -> None:
    f = _file(hub, write_codeformer(tmp_path / "c.pth", seed=2), "CodeFormers.pth")
    cf = write_reference({"CodeFormers": entry([f], type="CodeFormers")})
    sm = SuperModelManager(
        esrgan=True, depot=depot, references={"esrgan": esrgan_reference, "codeformer": cf}, cache_home=nataili
    )
    assert set(sm.managers) == {"esrgan", "codeformer"} and sm.esrgan is sm.managers["esrgan"]
    loaded = sm.load("tiny_x4")
    assert sm.esrgan.loaded_models["tiny_x4"] is loaded and sm.loaded_models == {"tiny_x4": loaded}
    assert sm.owner("CodeFormers") is sm.codeformer
    assert sm.validate_model("tiny_x4") and sm.is_available("tiny_x4")
    sm.taint_model("tiny_x4")
    assert sm.tainted_models == ["tiny_x4"] and not sm.is_available("tiny_x4")
    assert sm.unload_model("tiny_x4") and sm.loaded_models == {}
    assert sm.download_model("CodeFormers") and "CodeFormers" in sm.available_models
    with pytest.raises(UnknownModelException, match="no enabled manager knows model 'nope'"):
        sm.load("nope")
    with pytest.raises(AttributeError, match="no enabled manager 'blip'"):
        sm.blip  # noqa: B018


def test_super_manager_defaults_to_the_shipped_references(depot: ModelManager, nataili: Path) -> None:
    sm = SuperModelManager(compvis=True, esrgan=True, depot=depot, cache_home=nataili)
    assert "RealESRGAN_x4plus" in sm.models and "stable_diffusion" in sm.models
    assert sm.owner("stable_diffusion_inpainting") is sm.compvis  # compvis first, as Nataili routes it
    assert sm.available_models == []


def test_the_template_manager_works_as_written(esrgan_reference: Path, depot: ModelManager, nataili: Path) -> None:
    m = NewModelManager(esrgan_reference, depot, cache_home=nataili)
    assert m.path == nataili / "new"
    assert type(m.load("tiny_x4").model).__name__ == "RRDBNet"
    with pytest.raises(UnknownModelException, match="no shipped reference for service 'new'"):
        NewModelManager(None, depot, cache_home=nataili)


def test_manager_opens_its_own_depot_from_the_settings(
    esrgan_reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDEPOT_HOME", str(tmp_path / "own-home"))
    monkeypatch.setenv("MODELDEPOT_ALLOW_PRIVATE_URLS", "true")
    with EsrganModelManager(esrgan_reference, cache_home=tmp_path / "n") as m:
        assert m.depot.config.home == tmp_path / "own-home"
        m.load("tiny_x4")
        assert m.depot.store.search_by_tag("reference:tiny_x4")
