"""Hostile model files (issue 13): every one is a clear ``IdentificationError`` naming the file.

Each case here used to escape as a raw ``RecursionError``, ``ValueError``, ``OverflowError``,
``TypeError``, ``MemoryError`` (with an empty message), crash the interpreter, or never finish.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from modeldepot.errors import IdentificationError, InvalidSafetensorsError, ModelDepotError
from modeldepot.identify import identify, read_pickle_keys, scan_pickle
from modeldepot.identify.safetensors import MAX_TENSORS
from modeldepot.taxonomy import ModelType
from modeldepot.testing import factories as F

DEEP = 100_000


def _framed(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def _raises_naming(path: Path, exc: type[ModelDepotError] = IdentificationError, match: str | None = None) -> str:
    with pytest.raises(exc, match=match) as info:
        identify(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert getattr(info.value, "path", None) is not None
    return message


# -- safetensors headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"__metadata__":' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"a":{"dtype":"F16","shape":' + b"[" * DEEP + b"]" * DEEP + b',"data_offsets":[0,2]}}',
    ],
    ids=["top", "metadata", "shape"],
)
def test_deeply_nested_header_json(tmp_path: Path, header: bytes) -> None:
    path = _framed(tmp_path / "deep.safetensors", header, b"\0\0")
    _raises_naming(path, InvalidSafetensorsError, "nests JSON too deeply")


def test_metadata_value_nested_past_the_depth_limit(tmp_path: Path) -> None:
    """Parses (a few hundred levels), but would break json.dumps / repr later."""
    path = _framed(tmp_path / "m.safetensors", b'{"__metadata__":{"x":' + b"[" * 500 + b"]" * 500 + b"}}")
    _raises_naming(path, InvalidSafetensorsError, "levels deep")


def test_five_thousand_digit_integer_in_header(tmp_path: Path) -> None:
    header = b'{"a":{"dtype":"F16","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,2]}}'
    path = _framed(tmp_path / "big.safetensors", header, b"\0\0")
    message = _raises_naming(path, InvalidSafetensorsError, "more than 4300 digits")
    assert len(message) < 300


@pytest.mark.parametrize("dtype", ["F4", "F16", "F6_E2M3"])
def test_astronomical_shape(tmp_path: Path, dtype: str) -> None:
    header = json.dumps({"a": {"dtype": dtype, "shape": [10**200, 10**200], "data_offsets": [0, 2]}}).encode()
    path = _framed(tmp_path / "huge.safetensors", header, b"\0\0")
    message = _raises_naming(path, InvalidSafetensorsError, "invalid shape")
    assert len(message) < 300, "the message shows the shape shortened"


def test_shape_product_larger_than_the_file(tmp_path: Path) -> None:
    header = json.dumps({"a": {"dtype": "F4", "shape": [2**40, 2**40, 2**40], "data_offsets": [0, 2]}}).encode()
    path = _framed(tmp_path / "wide.safetensors", header, b"\0\0")
    _raises_naming(path, InvalidSafetensorsError, "more elements than the file can hold")


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F16", "shape": [1], "data_offsets": [-2, 0]},
        {"dtype": "F16", "shape": [1], "data_offsets": [0, 2**70]},
        {"dtype": "F16", "shape": [-1], "data_offsets": [0, 2]},
        {"dtype": "F16", "shape": [True], "data_offsets": [0, 2]},
        {"dtype": "F16", "shape": [1.0], "data_offsets": [0, 2]},
        {"dtype": ["F16"], "shape": [1], "data_offsets": [0, 2]},
        {"dtype": "F16", "shape": [1] * 65, "data_offsets": [0, 2]},
    ],
)
def test_invalid_entry_fields(tmp_path: Path, entry: dict[str, object]) -> None:
    path = _framed(tmp_path / "bad.safetensors", json.dumps({"a": entry}).encode(), b"\0\0")
    _raises_naming(path, InvalidSafetensorsError)


def test_header_with_more_tensors_than_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    n = MAX_TENSORS + 10
    header = "{" + ",".join(f'"t{i}":{{"dtype":"F16","shape":[0],"data_offsets":[0,0]}}' for i in range(n)) + "}"
    path = _framed(tmp_path / "many.safetensors", header.encode())
    tracemalloc.start()
    try:
        message = _raises_naming(path, InvalidSafetensorsError, f"more than the {MAX_TENSORS} tensors")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "JSON objects" in message
    # Parsing these entries would allocate ~10x the header; refusing costs the header bytes.
    assert peak < 3 * len(header)


def test_header_at_the_tensor_limit_still_identifies(tmp_path: Path) -> None:
    header = (
        "{" + ",".join(f'"t{i}":{{"dtype":"F16","shape":[0],"data_offsets":[0,0]}}' for i in range(MAX_TENSORS)) + "}"
    )
    path = _framed(tmp_path / "many.safetensors", header.encode())
    assert identify(path).type == ModelType.Unknown


def test_long_tensor_name_is_shortened_in_messages(tmp_path: Path) -> None:
    name = "x" * 100_000
    path = _framed(tmp_path / "n.safetensors", json.dumps({name: {"dtype": "Q9"}}).encode())
    assert len(_raises_naming(path, InvalidSafetensorsError, "unknown dtype")) < 400


# -- content before extension ----------------------------------------------------------------------


def test_bin_starting_with_0x96_says_it_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x96" + struct.pack("<Q", 2**40) + bytes(64))
    message = _raises_naming(path, IdentificationError, "not a model file")
    assert "96 00 00 00" in message


def test_pickle_declaring_a_huge_bytearray(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x02\x96" + struct.pack("<Q", 2**40) + bytes(64))
    for reader in (identify, read_pickle_keys):
        with pytest.raises(IdentificationError, match=r"declares a 1099511627776-byte object") as info:
            reader(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x8d", b"\x95", b"B", b"X"])
def test_pickle_declaring_sizes_past_the_end(tmp_path: Path, opcode: bytes) -> None:
    size = struct.pack("<Q", 2**40) if opcode in (b"\x8e", b"\x8d", b"\x95") else struct.pack("<I", 2**31)
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04" + opcode + size + bytes(16))
    _raises_naming(path, IdentificationError, "not a readable PyTorch pickle")


def test_scan_pickle_refuses_a_huge_declared_object(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x02\x8e" + struct.pack("<Q", 2**40) + bytes(64))
    with pytest.raises(IdentificationError, match=r"model\.ckpt"):
        scan_pickle(path)


def test_pickle_with_a_huge_memo_index_is_read(tmp_path: Path) -> None:
    """LONG_BINPUT 2**31-1 made the C unpickler allocate a 16 GB memo table."""
    path = tmp_path / "memo.pt"
    path.write_bytes(b"\x80\x02}r\xff\xff\xff\x7f.")
    assert identify(path).type == ModelType.Unknown


@pytest.mark.timeout(120)
def test_deeply_nested_tuple_key_does_not_crash_the_process(tmp_path: Path) -> None:
    """Hashing a 3-million-deep tuple overflowed the C stack (SIGSEGV): run it in a child."""
    path = tmp_path / "deep.pt"
    depth = 3_000_000
    path.write_bytes(b"\x80\x02}K\x01" + b"\x85" * depth + b"K\x02s.")
    code = textwrap.dedent(
        f"""
        from modeldepot.errors import IdentificationError
        from modeldepot.identify import identify
        try:
            identify({str(path)!r})
        except IdentificationError as exc:
            print("ERROR", exc)
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ERROR") and "tuples nested more than" in run.stdout and str(path) in run.stdout


@pytest.mark.timeout(60)
def test_shared_subtree_pickle_does_not_explode(tmp_path: Path) -> None:
    """Ten keys pointing at the same dict, 15 levels deep: 10**15 paths through six small dicts."""
    tree: dict[str, object] = {"w": 1}
    for _ in range(15):
        tree = {f"k{i}": tree for i in range(10)}
    path = tmp_path / "laughs.pt"
    path.write_bytes(pickle.dumps(tree, protocol=2))
    assert path.stat().st_size < 10_000
    _raises_naming(path, IdentificationError, "keys")


def test_huge_integer_key_and_leaf(tmp_path: Path) -> None:
    """str() of an int past 4300 digits raises ValueError: such keys are shown shortened."""
    path = tmp_path / "int.pt"
    path.write_bytes(pickle.dumps({10**6000: {"w": 1}, "global_step": 10**6000}, protocol=2))
    keys = read_pickle_keys(path)
    assert "<a 19932-bit integer>.w" in keys and keys["global_step"] is None
    ident = identify(path)
    assert ident.type == ModelType.Unknown
    json.dumps(ident.to_dict())


def test_safetensors_named_file_holding_a_pickle(tmp_path: Path) -> None:
    src = F.write_sd1_checkpoint(tmp_path / "sd1.ckpt")
    path = tmp_path / "sd1.safetensors"
    path.write_bytes(src.read_bytes())
    _raises_naming(path, InvalidSafetensorsError, "holds a PyTorch zip checkpoint, not safetensors")


def test_git_lfs_pointer(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    _raises_naming(path, InvalidSafetensorsError, "Git LFS pointer")


def test_html_error_page_saved_as_bin(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    path.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    _raises_naming(path, IdentificationError, "HTML/XML text")


def test_bin_holding_safetensors_is_identified_by_content(tmp_path: Path) -> None:
    src = F.write_lora(tmp_path / "l.safetensors")
    path = tmp_path / "l.bin"
    path.write_bytes(src.read_bytes())
    assert identify(path).type == ModelType.LoRA


def test_empty_ckpt(tmp_path: Path) -> None:
    path = tmp_path / "e.ckpt"
    path.write_bytes(b"")
    _raises_naming(path, IdentificationError, "empty file")


def test_zip_with_huge_data_pkl_claim_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "z.ckpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02\x8e" + struct.pack("<Q", 2**40) + b".")
    _raises_naming(path, IdentificationError, "declares")


# -- folders ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model_index.json", "config.json", "text_encoder_2/config.json"])
def test_deeply_nested_folder_json(tmp_path: Path, name: str) -> None:
    F.write_text(tmp_path / "m" / name, '{"a":' + "[" * DEEP + "]" * DEEP + "}")
    _raises_naming(tmp_path / "m", IdentificationError, "nests JSON too deeply")


def test_folder_json_nested_past_the_depth_limit(tmp_path: Path) -> None:
    F.write_text(tmp_path / "m" / "config.json", '{"_class_name":' + "[" * 500 + "]" * 500 + "}")
    _raises_naming(tmp_path / "m", IdentificationError, "levels deep")


def test_five_thousand_digit_integer_in_config(tmp_path: Path) -> None:
    F.write_text(tmp_path / "m" / "config.json", '{"_class_name":"AutoencoderKL","latent_channels":' + "9" * 5000 + "}")
    _raises_naming(tmp_path / "m", IdentificationError, "digits")


@pytest.mark.parametrize(
    "config",
    [
        {"_class_name": "AutoencoderKL", "scaling_factor": "x", "latent_channels": [16]},
        {"_class_name": "AutoencoderKL", "scaling_factor": 1e308, "latent_channels": 16},
        {"_class_name": "CLIPVisionModelWithProjection", "hidden_size": [1024], "num_hidden_layers": {}},
        {"_class_name": "CLIPVisionModel", "vision_config": {"hidden_size": {"a": 1}}},
        {"_class_name": "CLIPTextModel", "hidden_size": [768]},
        {"_class_name": "T5EncoderModel", "d_model": [4096]},
        {"_class_name": "T2IAdapter", "adapter_type": ["full_adapter"]},
        {"_class_name": "ControlNetModel", "cross_attention_dim": {"x": 768}},
        {"_class_name": ["AutoencoderKL"]},
        {"architectures": [{"x": 1}]},
    ],
)
def test_config_with_wrongly_typed_values(tmp_path: Path, config: dict[str, object]) -> None:
    F.write_json(tmp_path / "m" / "config.json", config)
    ident = identify(tmp_path / "m")
    json.dumps(ident.to_dict())


def test_pipeline_with_wrongly_typed_values(tmp_path: Path) -> None:
    root = tmp_path / "p"
    F.write_json(root / "model_index.json", {"_class_name": 5, "unet": [["diffusers"], {"c": 1}], "vae": [1, 2]})
    unet = {"cross_attention_dim": [768], "in_channels": "4", "sample_size": 10**40}
    F.write_json(root / "unet" / "config.json", unet)
    F.write_json(root / "scheduler" / "scheduler_config.json", {"prediction_type": ["epsilon"]})
    ident = identify(root)
    assert ident.type == ModelType.Main
    assert "default_resolution" not in ident.extra
    json.dumps(ident.to_dict())


def test_image_encoder_txt_that_is_a_folder(tmp_path: Path) -> None:
    root = F.write_ip_adapter_folder(tmp_path / "ip")
    (root / "image_encoder.txt").unlink()
    (root / "image_encoder.txt").mkdir()
    _raises_naming(root, IdentificationError, "image_encoder.txt")
