"""Splitting single-file checkpoints into component files and joining them back byte for byte."""

from __future__ import annotations

import base64
import errno
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from modeldepot.errors import InsufficientSpaceError, ModelDepotError, StorageError
from modeldepot.storage import _split
from modeldepot.storage._split import (
    COMPONENT_PREFIXES,
    SPLIT_MANIFEST,
    component_of,
    is_split_dir,
    join_checkpoint,
    read_split_manifest,
    split_checkpoint,
)
from modeldepot.testing.factories import (
    BAD_SAFETENSORS_KINDS,
    write_bad_safetensors,
    write_sd1_checkpoint,
    write_sd2_checkpoint,
    write_sdxl_checkpoint,
)


def _b3(path: Path) -> str:
    return blake3.blake3(path.read_bytes()).hexdigest()


def _keys(path: Path) -> set[str]:
    with safe_open(str(path), framework="numpy") as f:
        return set(f.keys())


def _frame(header: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def test_component_table_follows_the_ldm_layout() -> None:
    assert COMPONENT_PREFIXES["model.diffusion_model."] == "unet"
    assert component_of("model.diffusion_model.input_blocks.0.0.weight") == "unet"
    assert component_of("first_stage_model.decoder.conv_in.weight") == "vae"
    assert component_of("cond_stage_model.transformer.text_model.final_layer_norm.weight") == "text_encoder"  # SD-1
    assert component_of("cond_stage_model.model.ln_final.weight") == "text_encoder"  # SD-2
    assert component_of("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight") == "text_encoder"
    assert component_of("conditioner.embedders.1.model.ln_final.weight") == "text_encoder_2"
    assert component_of("model_ema.decay") == "rest"
    assert component_of("denoiser.sigmas") == "rest"


CHECKPOINTS: dict[str, tuple[Callable[..., Path], dict[str, Any], set[str]]] = {
    "sd-1": (write_sd1_checkpoint, {"seed": 1}, {"unet", "vae", "text_encoder"}),
    "sd-1-metadata": (write_sd1_checkpoint, {"seed": 2, "with_metadata": True}, {"unet", "vae", "text_encoder"}),
    "sd-2-depth": (write_sd2_checkpoint, {"seed": 3, "variant": "depth"}, {"unet", "vae", "text_encoder", "rest"}),
    "sdxl": (write_sdxl_checkpoint, {"seed": 4}, {"unet", "vae", "text_encoder", "text_encoder_2"}),
    "sdxl-leftovers": (
        write_sdxl_checkpoint,
        {"seed": 5, "v_pred": True, "merged_lora": True, "with_metadata": True},
        {"unet", "vae", "text_encoder", "text_encoder_2", "rest"},
    ),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_split_and_join_round_trip_is_byte_identical(tmp_path: Path, name: str) -> None:
    """The rebuilt file is the original; each part is a safetensors file holding exactly its keys."""
    writer, kwargs, components = CHECKPOINTS[name]
    src = writer(tmp_path / f"{name}.safetensors", **kwargs)
    before = _b3(src)
    manifest = split_checkpoint(src, tmp_path / "split")
    assert set(manifest.components) == components
    assert is_split_dir(tmp_path / "split") and not is_split_dir(src)
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == sorted(manifest.file_names())
    n = join_checkpoint(tmp_path / "split", tmp_path / "out" / "rebuilt.safetensors")
    assert n == src.stat().st_size
    assert _b3(tmp_path / "out" / "rebuilt.safetensors") == before == _b3(src)  # the source is untouched
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "rebuilt.safetensors"]  # no temp left
    original = load_file(str(src))
    for component in manifest.components:
        part = tmp_path / "split" / f"{component}.safetensors"
        assert _keys(part) == {k for k in original if component_of(k) == component}
        with safe_open(str(part), framework="numpy") as f:
            assert f.metadata() is None
            for key in f.keys():  # noqa: SIM118 - safe_open handles are not containers
                got = f.get_tensor(key)
                assert got.dtype == original[key].dtype and got.shape == original[key].shape
                assert got.tobytes() == original[key].tobytes(), key  # bytes: random data holds NaNs
    if "metadata" in name:
        with safe_open(str(src), framework="numpy") as f:
            assert manifest.metadata == f.metadata()


def test_shared_vae_gives_byte_identical_parts(tmp_path: Path) -> None:
    """Two fine-tunes with the same VAE, written by different tools (different key order, metadata,
    file layout): their VAE parts are the same bytes, so the content store keeps one."""
    a = write_sd1_checkpoint(tmp_path / "a.safetensors", seed=7)
    tensors = load_file(str(a))
    unet_key = next(k for k in tensors if k.startswith("model.diffusion_model."))
    tensors[unet_key] = tensors[unet_key] + np.float16(1)  # a different fine-tune of the UNet
    b = tmp_path / "b.safetensors"
    save_file(tensors, str(b), metadata={"ss_output_name": "my-finetune"})
    assert a.read_bytes()[:200] != b.read_bytes()[:200]
    split_checkpoint(a, tmp_path / "sa")
    split_checkpoint(b, tmp_path / "sb")
    for part in ("vae", "text_encoder"):
        assert (tmp_path / "sa" / f"{part}.safetensors").read_bytes() == (
            tmp_path / "sb" / f"{part}.safetensors"
        ).read_bytes()
    assert (tmp_path / "sa" / "unet.safetensors").read_bytes() != (tmp_path / "sb" / "unet.safetensors").read_bytes()
    join_checkpoint(tmp_path / "sb", tmp_path / "b2.safetensors")
    assert _b3(tmp_path / "b2.safetensors") == _b3(b)


def test_parts_are_canonical(tmp_path: Path) -> None:
    src = write_sd2_checkpoint(tmp_path / "sd2.safetensors", seed=9, variant="depth")
    split_checkpoint(src, tmp_path / "one")
    split_checkpoint(src, tmp_path / "two")
    for f in (tmp_path / "one").iterdir():
        assert f.read_bytes() == (tmp_path / "two" / f.name).read_bytes(), f.name
    raw = (tmp_path / "one" / "vae.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    text = raw[8 : 8 + n].decode()
    header = json.loads(text)
    assert text.rstrip(" ") == json.dumps(header, sort_keys=True, separators=(",", ":"))
    assert "__metadata__" not in header
    pos = 0
    for key in sorted(header):  # sorted keys, packed in that order without gaps
        begin, end = header[key]["data_offsets"]
        assert begin == pos
        pos = end
    assert len(raw) == 8 + n + pos


def test_gaps_trailing_bytes_and_odd_headers_are_kept(tmp_path: Path) -> None:
    """A hand-written file: unsorted keys, pretty-printed JSON, odd padding, bytes between tensors,
    a zero-size tensor, trailing bytes and keys that match no component."""
    entries = {
        "__metadata__": {"format": "pt", "note": "hand made"},
        "model.diffusion_model.out.2.bias": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
        "first_stage_model.quant_conv.weight": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
        "model_ema.num_updates": {"dtype": "I64", "shape": [0], "data_offsets": [24, 24]},
        "cond_stage_model.transformer.text_model.x": {"dtype": "F16", "shape": [2], "data_offsets": [40, 44]},
        "alphas_cumprod": {"dtype": "BF16", "shape": [1], "data_offsets": [44, 46]},
    }
    header = json.dumps(entries, indent=2).encode() + b"     "
    data = bytes(range(1, 47)) + b"trailer"
    src = tmp_path / "odd.safetensors"
    src.write_bytes(_frame(header, data))
    manifest = split_checkpoint(src, tmp_path / "split")
    assert [(g.begin, g.data) for g in manifest.gaps] == [(3, data[3:16]), (24, data[24:40]), (46, b"trailer")]
    assert manifest.header == header
    assert set(manifest.components) == {"unet", "vae", "text_encoder", "rest"}
    assert _keys(tmp_path / "split" / "rest.safetensors") == {"model_ema.num_updates", "alphas_cumprod"}
    doc = json.loads((tmp_path / "split" / SPLIT_MANIFEST).read_bytes())
    assert base64.b64decode(doc["header"]) == header and doc["size"] == src.stat().st_size
    assert [t["name"] for t in doc["tensors"]][1:3] == ["model.diffusion_model.out.2.bias", "model_ema.num_updates"]
    join_checkpoint(tmp_path / "split", tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == src.read_bytes()


def test_checkpoint_of_unknown_keys_only_goes_to_rest(tmp_path: Path) -> None:
    src = tmp_path / "other.safetensors"
    save_file({"a.weight": np.arange(6, dtype=np.float32), "b": np.ones((2, 2), np.float16)}, str(src))
    manifest = split_checkpoint(src, tmp_path / "split")
    assert manifest.components == ("rest",)
    join_checkpoint(tmp_path / "split", tmp_path / "back.safetensors")
    assert _b3(tmp_path / "back.safetensors") == _b3(src)


def test_resplit_into_the_same_folder_drops_stale_parts(tmp_path: Path) -> None:
    split_checkpoint(write_sd2_checkpoint(tmp_path / "sd2.safetensors", variant="depth"), tmp_path / "split")
    assert (tmp_path / "split" / "rest.safetensors").exists()
    src = write_sd1_checkpoint(tmp_path / "sd1.safetensors", seed=3)
    split_checkpoint(src, tmp_path / "split")
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == [
        "split.json",
        "text_encoder.safetensors",
        "unet.safetensors",
        "vae.safetensors",
    ]
    join_checkpoint(tmp_path / "split", tmp_path / "back.safetensors")
    assert _b3(tmp_path / "back.safetensors") == _b3(src)


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", BAD_SAFETENSORS_KINDS)
def test_malformed_files_are_refused(tmp_path: Path, kind: str) -> None:
    bad = write_bad_safetensors(tmp_path / f"{kind}.safetensors", kind)
    with pytest.raises(StorageError, match=rf"cannot split .*{kind}\.safetensors"):
        split_checkpoint(bad, tmp_path / "split")
    assert not is_split_dir(tmp_path / "split")


@pytest.mark.parametrize(
    ("entries", "data", "why"),
    [
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            bytes(12),
            "overlap",
        ),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8), "outside the data section"),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, bytes(8), "needs 16"),
    ],
    ids=["overlapping", "past-the-end", "size-mismatch"],
)
def test_overlapping_and_truncated_tensors_are_refused(tmp_path: Path, entries: Any, data: bytes, why: str) -> None:
    src = tmp_path / "bad.safetensors"
    src.write_bytes(_frame(json.dumps(entries).encode(), data))
    with pytest.raises(StorageError, match=why):
        split_checkpoint(src, tmp_path / "split")


def test_truncated_checkpoint_and_missing_file_are_refused(tmp_path: Path) -> None:
    src = write_sd1_checkpoint(tmp_path / "ck.safetensors", seed=1)
    raw = src.read_bytes()
    src.write_bytes(raw[:-100])
    with pytest.raises(StorageError, match="outside the data section"):
        split_checkpoint(src, tmp_path / "split")
    with pytest.raises(StorageError, match=r"missing\.safetensors"):
        split_checkpoint(tmp_path / "missing.safetensors", tmp_path / "split")


def test_too_many_bytes_outside_tensors_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_split, "MAX_INLINE_BYTES", 10)
    src = tmp_path / "padded.safetensors"
    src.write_bytes(
        _frame(json.dumps({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}).encode(), bytes(40))
    )
    with pytest.raises(StorageError, match="38 bytes of its data section belong to no tensor"):
        split_checkpoint(src, tmp_path / "split")


@pytest.fixture
def split_sd1(tmp_path: Path) -> Path:
    split_checkpoint(write_sd1_checkpoint(tmp_path / "ck.safetensors", seed=11), tmp_path / "split")
    return tmp_path / "split"


def _assert_refused(split_dir: Path, dest: Path, match: str) -> None:
    with pytest.raises(StorageError, match=match):
        join_checkpoint(split_dir, dest)
    assert not dest.exists()
    assert not list(dest.parent.glob(f".{dest.name}.*"))


def test_join_refuses_a_part_whose_bytes_changed(split_sd1: Path, tmp_path: Path) -> None:
    part = split_sd1 / "vae.safetensors"
    raw = bytearray(part.read_bytes())
    raw[-1] ^= 0xFF
    part.write_bytes(bytes(raw))
    _assert_refused(split_sd1, tmp_path / "out.safetensors", r"vae\.safetensors.*changed since the split")


def test_join_refuses_a_part_from_another_split(split_sd1: Path, tmp_path: Path) -> None:
    other = write_sd2_checkpoint(tmp_path / "sd2.safetensors", seed=1)
    split_checkpoint(other, tmp_path / "other")
    (split_sd1 / "unet.safetensors").write_bytes((tmp_path / "other" / "unet.safetensors").read_bytes())
    _assert_refused(split_sd1, tmp_path / "out.safetensors", r"unet\.safetensors: part does not match split\.json")


def test_join_refuses_a_missing_part(split_sd1: Path, tmp_path: Path) -> None:
    (split_sd1 / "text_encoder.safetensors").unlink()
    _assert_refused(split_sd1, tmp_path / "out.safetensors", r"part text_encoder\.safetensors is missing")


def test_join_refuses_an_altered_or_foreign_manifest(split_sd1: Path, tmp_path: Path) -> None:
    manifest = split_sd1 / SPLIT_MANIFEST
    doc = json.loads(manifest.read_bytes())
    doc["tensors"][0]["shape"] = [1]
    manifest.write_text(json.dumps(doc))
    _assert_refused(split_sd1, tmp_path / "out.safetensors", "does not match the tensor list")
    doc["tensors"][0]["end"] += 2
    manifest.write_text(json.dumps(doc))
    _assert_refused(split_sd1, tmp_path / "out.safetensors", "covered twice or never")
    manifest.write_text("{not json")
    _assert_refused(split_sd1, tmp_path / "out.safetensors", "not a valid split manifest")
    manifest.unlink()
    with pytest.raises(ModelDepotError, match="not a split checkpoint folder"):
        read_split_manifest(split_sd1)


def test_disk_full_while_splitting_is_reported_and_leaves_no_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_sd1_checkpoint(tmp_path / "ck.safetensors", seed=1)

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_split.os, "fsync", full)
    with pytest.raises(InsufficientSpaceError, match="no space left"):
        split_checkpoint(src, tmp_path / "split")
    assert not is_split_dir(tmp_path / "split")
    assert not [p for p in (tmp_path / "split").iterdir() if p.name.endswith(".tmp")]
