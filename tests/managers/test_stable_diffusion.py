"""CompVis (single-file) and diffusers (multi-file) managers: a pipeline made of the cache's parts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.managers.conftest import entry, sha256

from modeldepot.manager import ModelManager
from modeldepot.managers import CompVisModelManager, ControlNetModelManager, DiffusersModelManager
from modeldepot.testing.factories import write_controlnet, write_diffusers_pipeline, write_sd1_checkpoint
from modeldepot.testing.fakehub import FakeHub


def _serve_folder(hub: FakeHub, folder: Path, prefix: str) -> list[tuple[str, str | None, str]]:
    files = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = f"{prefix}/{p.relative_to(folder).as_posix()}"
            data = p.read_bytes()
            files.append((rel, sha256(data), hub.add_file(f"repo/{rel}", data)))
    return files


def test_compvis_checkpoint_loads_as_a_pipeline_of_cached_parts(
    hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Callable[[dict[str, Any]], Path]
) -> None:
    ckpt = write_sd1_checkpoint(tmp_path / "tiny.safetensors", seed=1).read_bytes()
    url = hub.add_file("ckpt/tiny.safetensors", ckpt)
    data = entry([("tiny_sd1.safetensors", sha256(ckpt), url)], type="ckpt", baseline="stable diffusion 1")
    data["config"]["files"].append({"path": "v1-inference.yaml"})  # shipped config: never fetched
    m = CompVisModelManager(write_reference({"tiny sd": data}), depot, cache_home=nataili)
    loaded = m.load("tiny sd")
    pipe = loaded.model
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(loaded.parts)
    record = loaded.record
    # The pipeline's modules are the cache's objects, not copies.
    assert pipe.unet is loaded.parts["unet"].model is depot.load_model_by_key(record.key, "unet").model
    assert pipe.vae is depot.load_model_by_key(record.key, "vae").model
    assert (nataili / "compvis" / "tiny_sd1.safetensors").samefile(record.path)
    before = len(depot.load.cache)
    assert m.unload_model("tiny sd")
    assert len(depot.load.cache) < before
    assert depot.load_model_by_key(record.key, "unet").model is not pipe.unet


def test_diffusers_folder_downloads_every_file_and_loads(
    hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Callable[[dict[str, Any]], Path]
) -> None:
    folder = write_diffusers_pipeline(tmp_path / "src" / "inpaint", variant="inpaint")
    files = _serve_folder(hub, folder, "tiny-inpainting")
    m = DiffusersModelManager(
        write_reference({"tiny inpaint": entry(files, type="diffusers")}), depot, cache_home=nataili
    )
    loaded = m.load("tiny inpaint")
    assert type(loaded.model).__name__ == "StableDiffusionInpaintPipeline"
    for rel, _, _ in files:
        got = nataili / "diffusers" / rel
        assert got.is_file() and got.read_bytes() == (folder / Path(rel).relative_to("tiny-inpainting")).read_bytes()
        assert len(hub.stats.requests_for(f"/repo/{rel}", "GET")) == 1
    record = loaded.record
    assert record.format.value == "diffusers" and Path(record.path).is_dir()
    assert len(depot.store.search_by_tag("service:diffusers")) == 1  # one folder model, not one per file


def test_controlnet_manager(
    hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Callable[[dict[str, Any]], Path]
) -> None:
    data = write_controlnet(tmp_path / "cn.safetensors").read_bytes()
    url = hub.add_file("cn.safetensors", data)
    ref = {
        "control_tiny": entry(
            [("control_tiny.safetensors", sha256(data), url), ("cldm_v15.yaml", None, url)], type="control_canny"
        )
    }
    ref["control_tiny"]["config"]["download"].pop()  # the .yaml is listed, never downloaded
    m = ControlNetModelManager(write_reference(ref), depot, cache_home=nataili)
    assert type(m.load("control_tiny").model).__name__ == "ControlNetModel"


def test_compvis_refuses_a_file_that_is_not_a_main_model(
    hub: FakeHub, depot: ModelManager, nataili: Path, tmp_path: Path, write_reference: Callable[[dict[str, Any]], Path]
) -> None:
    data = write_controlnet(tmp_path / "cn.safetensors").read_bytes()
    url = hub.add_file("cn2.safetensors", data)
    m = CompVisModelManager(
        write_reference({"x": entry([("x.safetensors", sha256(data), url)], type="ckpt")}), depot, cache_home=nataili
    )
    with pytest.raises(Exception, match="identified as controlnet, not a main model"):
        m.load("x")
