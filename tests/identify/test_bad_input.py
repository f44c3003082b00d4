"""Malformed input: a specific error (or unknown), fast, and without reading the file through."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from modeldepot.errors import IdentificationError, InvalidSafetensorsError, ModelDepotError, ModelNotFoundException
from modeldepot.identify import identify
from modeldepot.taxonomy import ModelType
from modeldepot.testing import factories as F

MESSAGES = {
    "empty": "truncated",
    "truncated_length": "truncated",
    "header_longer_than_file": "larger than the file",
    "huge_header_length": "exceeds",
    "not_json": "not UTF-8 JSON",
    "not_object": "JSON object",
    "unknown_dtype": "unknown dtype 'F12'",
    "overlapping": "overlap",
    "truncated_data": "outside the data section",
}


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_malformed_safetensors(tmp_path: Path, kind: str) -> None:
    path = F.write_bad_safetensors(tmp_path / f"{kind}.safetensors", kind)
    with pytest.raises(InvalidSafetensorsError, match=MESSAGES[kind]) as info:
        identify(path)
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert isinstance(info.value, ModelDepotError) and isinstance(info.value, ValueError)


def test_four_gigabyte_header_length_is_refused_without_reading(tmp_path: Path) -> None:
    """A 5 GiB sparse file claiming a 4 GiB header: refused before any of it is read."""
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 4 * 1024**3) + b"{")
        f.truncate(5 * 1024**3)
    before = _rchar()
    with pytest.raises(InvalidSafetensorsError, match="exceeds"):
        identify(path)
    assert _rchar() - before < 1024 * 1024


def test_truncated_tensor_data_names_the_tensor(tmp_path: Path) -> None:
    path = F.write_sdxl_checkpoint(tmp_path / "xl.safetensors")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(InvalidSafetensorsError, match="outside the data section"):
        identify(path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundException) as info:
        identify(tmp_path / "nope.safetensors")
    assert isinstance(info.value, FileNotFoundError) and "nope.safetensors" in str(info.value)


def test_garbage_pickle_is_an_identification_error(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(IdentificationError, match=r"x\.ckpt"):
        identify(path)


def test_truncated_zip_checkpoint(tmp_path: Path) -> None:
    path = F.write_sd1_checkpoint(tmp_path / "sd1.ckpt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IdentificationError, match=r"sd1\.ckpt"):
        identify(path)


def test_well_formed_unrecognised_file_is_unknown(tmp_path: Path) -> None:
    path = F.write_safetensors(tmp_path / "thing.safetensors", {"foo.bar": (3, 3), "baz": (7,)})
    ident = identify(path)
    assert ident.type == ModelType.Unknown and ident.confidence == 0.0
    assert ident.reasons[0].startswith("type: unknown (no rule matched 2 keys")
    assert len(ident.candidates) == 14 and not any(c.matched for c in ident.candidates)


def test_safetensors_without_tensors_is_unknown(tmp_path: Path) -> None:
    path = F.write_safetensors(tmp_path / "empty.safetensors", {}, metadata={"a": "b"})
    ident = identify(path)
    assert ident.type == ModelType.Unknown
    assert "no tensors" in ident.reasons[0]


def test_non_model_file_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "readme.txt"
    path.write_text("hello")
    assert identify(path).type == ModelType.Unknown


def test_gguf_is_unknown_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    ident = identify(path)
    assert ident.type == ModelType.Unknown and "GGUF" in ident.reasons[0]


def test_sniffs_safetensors_without_extension(tmp_path: Path) -> None:
    path = F.write_lora(tmp_path / "l.safetensors")
    other = tmp_path / "lora-no-ext"
    os.rename(path, other)
    assert identify(other).type == ModelType.LoRA


def test_header_json_with_bad_metadata_type(tmp_path: Path) -> None:
    raw = json.dumps({"__metadata__": [1], "a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0")
    with pytest.raises(InvalidSafetensorsError, match="__metadata__"):
        identify(path)


def test_unreadable_file_is_an_identification_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked"
    path.write_bytes(b"x" * 32)
    real_open = Path.open

    def deny(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(IdentificationError, match="cannot read: Permission denied"):
        identify(path)
