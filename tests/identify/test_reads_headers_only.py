"""Identification reads headers / key tables only: cost does not grow with the tensor data."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import modeldepot.identify as ident_pkg
from modeldepot.identify import identify, read_safetensors_header
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelType
from modeldepot.testing import factories as F


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_two_gib_sparse_checkpoint_reads_only_the_header(tmp_path: Path) -> None:
    small = F.write_sdxl_checkpoint(tmp_path / "small.safetensors")
    header = read_safetensors_header(small)
    raw = small.read_bytes()[: header.data_offset]
    extra = 2 * 1024**3
    doc = json.loads(raw[8:])
    doc["ballast"] = {
        "dtype": "U8",
        "shape": [extra],
        "data_offsets": [header.file_size - header.data_offset, header.file_size - header.data_offset + extra],
    }
    new = json.dumps(doc).encode()
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:
        f.write(struct.pack("<Q", len(new)) + new)
        f.truncate(8 + len(new) + header.file_size - header.data_offset + extra)
    assert big.stat().st_size > 2 * 1024**3
    before = _rchar()
    result = identify(big)
    read = _rchar() - before
    assert (result.type, result.base) == (ModelType.Main, B.StableDiffusionXL)
    assert read < header.data_offset + 64 * 1024, f"read {read} bytes of a {header.data_offset}-byte header"


def test_pickle_checkpoint_does_not_read_storages(tmp_path: Path) -> None:
    path = F.write_torch_pickle(
        tmp_path / "big.ckpt",
        {"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3), "big": (16 * 1024 * 1024,)}},
    )
    assert path.stat().st_size > 32 * 1024 * 1024
    with zipfile.ZipFile(path) as zf:
        assert any(n.endswith("/data/1") for n in zf.namelist())
    before = _rchar()
    keys = ident_pkg.read_pickle_keys(path)
    assert _rchar() - before < 256 * 1024
    assert keys["state_dict.big"] == (16 * 1024 * 1024,)


def test_identify_imports_neither_torch_nor_numpy(tmp_path: Path) -> None:
    path = F.write_sd1_checkpoint(tmp_path / "sd1.ckpt")
    code = (
        "import sys; from modeldepot.identify import identify; "
        f"r = identify({str(path)!r}); assert r.base.value == 'sd-1'; "
        "bad = [m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names() -> None:
    for name in ident_pkg.__all__:
        assert getattr(ident_pkg, name) is not None
    assert {"identify", "explain", "read_pickle_keys", "scan_pickle", "Identification", "Candidate"} <= set(
        ident_pkg.__all__
    )
