"""The tiny-model factories: valid files (checked by the reference safetensors reader), deterministic,
atomic, torch-free, and faithful on the keys that decide what a model is."""

from __future__ import annotations

import json
import pickletools
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from modeldepot.testing import factories as F

SINGLE_FILES: dict[str, Callable[[Path], Path]] = {
    "sd1.safetensors": lambda p: F.write_sd1_checkpoint(p, with_metadata=True),
    "sd2.safetensors": lambda p: F.write_sd2_checkpoint(p, variant="depth"),
    "sdxl.safetensors": lambda p: F.write_sdxl_checkpoint(p, v_pred=True, edm_vpred=True, merged_lora=True),
    "refiner.safetensors": F.write_sdxl_refiner_checkpoint,
    "sd3.safetensors": F.write_sd3_checkpoint,
    "flux.safetensors": F.write_flux_checkpoint,
    "lora.safetensors": lambda p: F.write_lora(p, with_metadata=True, modelspec=True),
    "loha.safetensors": lambda p: F.write_lora(p, style="loha"),
    "lokr.safetensors": lambda p: F.write_lora(p, style="lokr", base="sdxl"),
    "flux_lora.safetensors": F.write_flux_lora,
    "vae.safetensors": F.write_vae,
    "cn.safetensors": F.write_controlnet,
    "ip.safetensors": F.write_ip_adapter,
    "t2i.safetensors": F.write_t2i_adapter,
    "ti.safetensors": lambda p: F.write_textual_inversion(p, base="sdxl"),
    "clip_vision.safetensors": F.write_clip_vision,
    "clip_l.safetensors": F.write_clip_text_encoder,
    "t5.safetensors": F.write_t5_encoder,
    "esrgan.safetensors": F.write_esrgan,
}


@pytest.mark.parametrize("name", sorted(SINGLE_FILES))
def test_safetensors_files_load_with_the_reference_reader(tmp_path: Path, name: str) -> None:
    path = SINGLE_FILES[name](tmp_path / name)
    tensors = load_file(path)
    assert tensors
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_deciding_shapes_are_real(tmp_path: Path) -> None:
    tensors = load_file(F.write_sdxl_checkpoint(tmp_path / "xl.safetensors"))
    # context and label_emb input widths are SDXL's; the channel widths are the tiny UNet's (32/64)
    assert tensors["model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"].shape == (64, 2048)
    assert tensors["model.diffusion_model.label_emb.0.0.weight"].shape == (128, 2816)
    assert tensors["first_stage_model.decoder.conv_in.weight"].shape == (64, 4, 3, 3)


def test_seeded_writes_are_deterministic_and_distinct(tmp_path: Path) -> None:
    a = F.write_sd1_checkpoint(tmp_path / "a.safetensors", seed=1).read_bytes()
    b = F.write_sd1_checkpoint(tmp_path / "b.safetensors", seed=1).read_bytes()
    c = F.write_sd1_checkpoint(tmp_path / "c.safetensors", seed=2).read_bytes()
    assert a == b and a != c


def test_metadata_is_written(tmp_path: Path) -> None:
    from safetensors import safe_open

    with safe_open(F.write_sdxl_lora(tmp_path / "l.safetensors", with_metadata=True), "np") as f:
        meta = f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_network_module"] == "networks.lora"


def test_torch_zip_checkpoint_layout(tmp_path: Path) -> None:
    path = F.write_sd1_checkpoint(tmp_path / "sd1.ckpt")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert {"sd1/data.pkl", "sd1/version", "sd1/byteorder"} <= set(names)
        data = [n for n in names if n.startswith("sd1/data/")]
        ops = list(pickletools.genops(zf.read("sd1/data.pkl")))
        assert zf.getinfo("sd1/data/0").file_size == 32 * 2  # input_blocks.0.0.bias: 32 fp16 values
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert globals_ == {"torch._utils _rebuild_tensor_v2", "torch HalfStorage", "collections OrderedDict"}
    assert sum(op.name == "BINPERSID" for op, _, _ in ops) == len(data)


def test_malicious_pickle_really_is_malicious(tmp_path: Path) -> None:
    """The fixture must be a real attack, or the refusal tests prove nothing (inspected, never loaded)."""
    path = F.write_malicious_pickle(tmp_path / "evil.pt", "echo hi", zip_format=False)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(path.read_bytes())]
    assert ("GLOBAL", "os system") in ops and ("BINUNICODE", "echo hi") in ops and ("REDUCE", None) in ops


@pytest.mark.parametrize("kind", F.BAD_SAFETENSORS_KINDS)
def test_bad_safetensors_are_rejected_by_the_reference_reader(tmp_path: Path, kind: str) -> None:
    path = F.write_bad_safetensors(tmp_path / f"{kind}.safetensors", kind)
    with pytest.raises(Exception):  # noqa: B017 - any error: the reference reader agrees it is broken
        load_file(path)


def test_bad_kind_name_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        F.write_bad_safetensors(tmp_path / "x", "wobbly")


def test_pipeline_configs_look_real(tmp_path: Path) -> None:
    root = F.write_diffusers_pipeline(tmp_path / "p", "sdxl", fp16=True)
    index = json.loads((root / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["unet"] == [
        "diffusers",
        "UNet2DConditionModel",
    ]
    unet = json.loads((root / "unet" / "config.json").read_text())
    assert unet["cross_attention_dim"] == 2048 and unet["in_channels"] == 4
    assert (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    assert (root / "tokenizer" / "vocab.json").exists() and (root / "tokenizer_2" / "merges.txt").exists()
    assert json.loads((root / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"
    for weights in root.rglob("*.safetensors"):
        load_file(weights)


def test_pipeline_family_shares_components_byte_for_byte(tmp_path: Path) -> None:
    roots = F.write_sd_pipeline_family(tmp_path, n=4)
    files = sorted(p.relative_to(roots[0]).as_posix() for p in roots[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(roots[1]).as_posix() for p in roots[1].rglob("*") if p.is_file())
    differing = {f for f in files if len({(r / f).read_bytes() for r in roots}) > 1}
    assert differing == {"unet/diffusion_pytorch_model.safetensors"}


def test_factories_do_not_import_torch() -> None:
    code = "import sys, modeldepot.testing.factories; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names() -> None:
    assert all(callable(getattr(F, n)) for n in F.__all__ if n.startswith("write_"))


def test_tiny_shape_table_is_what_the_libraries_build() -> None:
    """The torch-free writers' tensor table matches diffusers / transformers exactly (names and shapes):
    after a library upgrade renames a tensor, regenerate it with ``_tiny.write_table()``."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from modeldepot.testing.factories import _tiny

    assert json.loads(_tiny._TABLE.read_text()) == _tiny.generate_shapes()


def test_clip_tokenizer_folder_tokenizes(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    root = F.write_tokenizer(tmp_path / "tokenizer")
    tok = transformers.CLIPTokenizer.from_pretrained(str(root))
    ids = tok("a photo of a cat").input_ids
    vocab = json.loads((root / "vocab.json").read_text())
    assert ids[0] == vocab["<|startoftext|>"] and ids[-1] == vocab["<|endoftext|>"] and len(ids) > 4
    text_config = json.loads((F.write_diffusers_clip_text(tmp_path / "te") / "config.json").read_text())
    assert text_config["vocab_size"] == len(vocab)


@pytest.mark.parametrize("base", ["sd-1", "sdxl"])
def test_pipeline_weights_are_complete(tmp_path: Path, base: str) -> None:
    """Every tensor of every part, with the deciding widths kept (cross-attention, text widths)."""
    from modeldepot.testing.factories import _tiny

    root = F.write_diffusers_pipeline(tmp_path / "p", base)
    unet = load_file(root / "unet" / "diffusion_pytorch_model.safetensors")
    assert {k: tuple(v.shape) for k, v in unet.items()} == _tiny.shapes(f"unet/{base}")
    ctx = json.loads((root / "unet" / "config.json").read_text())["cross_attention_dim"]
    to_k = next(v for k, v in unet.items() if k.endswith("attn2.to_k.weight"))
    assert to_k.shape[1] == ctx == {"sd-1": 768, "sdxl": 2048}[base]
    te = load_file(root / "text_encoder" / "model.safetensors")
    assert te["text_model.final_layer_norm.weight"].shape == (768,)
