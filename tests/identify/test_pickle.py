"""The restricted pickle reader: key tables without torch, refusal of dangerous globals."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest

from modeldepot.errors import IdentificationError, UnsafePickleError
from modeldepot.identify import identify, read_pickle_keys, read_pickle_table, scan_pickle
from modeldepot.taxonomy import ModelType
from modeldepot.testing import factories as F

TENSOR_GLOBALS = ["collections.OrderedDict", "torch.HalfStorage", "torch._utils._rebuild_tensor_v2"]


def test_zip_checkpoint_key_table(tmp_path: Path) -> None:
    torch_was_loaded = "torch" in sys.modules  # other tests in the same run may load it
    path = F.write_sd1_checkpoint(tmp_path / "sd1.ckpt")
    keys = read_pickle_keys(path)
    assert keys["state_dict.model.diffusion_model.input_blocks.0.0.weight"] == (32, 4, 3, 3)  # tiny, complete
    assert keys["state_dict.first_stage_model.decoder.conv_in.weight"] == (64, 4, 3, 3)
    assert keys["global_step"] is None and keys["epoch"] is None
    table = read_pickle_table(path)
    assert table.layout == "zip" and table.values["global_step"] == 840000
    assert scan_pickle(path) == TENSOR_GLOBALS
    assert ("torch" in sys.modules) == torch_was_loaded, "reading a pickle's key table must not import torch"


def test_nested_dicts_are_flattened(tmp_path: Path) -> None:
    keys = read_pickle_keys(F.write_ip_adapter(tmp_path / "ip.bin"))
    assert keys["image_proj.proj.weight"] == (3072, 1024)
    assert keys["ip_adapter.1.to_k_ip.weight"] == (320, 768)


def test_a1111_embedding_keys(tmp_path: Path) -> None:
    keys = read_pickle_keys(F.write_textual_inversion(tmp_path / "ti.pt", base="sd-2", vectors=3))
    assert keys["string_to_param.*"] == (3, 1024)
    assert keys["string_to_token.*"] is None and keys["name"] is None


def test_legacy_torch_format(tmp_path: Path) -> None:
    tree = {"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}, "global_step": 5}
    path = F.write_torch_pickle(tmp_path / "old.ckpt", tree, legacy=True)
    table = read_pickle_table(path)
    assert table.layout == "legacy"
    assert table.shapes["state_dict.model.diffusion_model.input_blocks.0.0.weight"] == (320, 9, 3, 3)
    assert scan_pickle(path) == TENSOR_GLOBALS


@pytest.mark.parametrize("zip_format", [True, False])
@pytest.mark.parametrize("target", ["os.system", "posix.system", "builtins.eval", "subprocess.Popen"])
def test_dangerous_globals_are_refused_and_never_run(tmp_path: Path, zip_format: bool, target: str) -> None:
    marker = tmp_path / "PWNED"
    path = F.write_malicious_pickle(tmp_path / "evil.ckpt", f"touch {marker}", target=target, zip_format=zip_format)
    for reader in (identify, read_pickle_keys, scan_pickle):
        with pytest.raises(UnsafePickleError) as info:
            reader(path)  # type: ignore[operator]
        assert target in str(info.value) and "evil.ckpt" in str(info.value)
        assert info.value.path == path
    assert not marker.exists()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_protocol_4_stack_global_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}, protocol=4))
    with pytest.raises(UnsafePickleError, match=r"system"):
        scan_pickle(path)
    with pytest.raises(UnsafePickleError, match=r"system"):
        read_pickle_keys(path)
    assert not marker.exists()


def test_unknown_innocuous_global_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(b"\x80\x02cnumpy.random\nseed\nJ\x01\x00\x00\x00\x85R.")
    with pytest.raises(UnsafePickleError, match=r"numpy\.random\.seed"):
        read_pickle_keys(path)


def test_plain_pickle_of_primitives(tmp_path: Path) -> None:
    path = tmp_path / "plain.bin"
    path.write_bytes(pickle.dumps({"a": 1, "b": "two"}, protocol=2))
    assert read_pickle_keys(path) == {"a": None, "b": None}
    assert identify(path).type == ModelType.Unknown


def test_zip_without_data_pkl(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "x.ckpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/other.txt", "x")
    with pytest.raises(IdentificationError, match=r"data\.pkl"):
        read_pickle_keys(path)


def test_numpy_scalars_and_arrays_are_stubbed_not_imported(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "meta.pt"
    path.write_bytes(pickle.dumps({"global_step": np.int64(5), "arr": np.zeros(3), "name": "x"}, protocol=2))
    assert read_pickle_keys(path) == {"global_step": None, "arr": None, "name": None}
    assert "numpy.dtype" in scan_pickle(path)
