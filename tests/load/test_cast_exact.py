"""Casting while reading (issue 18): ``load_safetensors(dtype=)`` casts straight from a mapping of the
file. Every value must be bit for bit ``safetensors.torch.load_file`` + ``.to(dtype)``, the results
must own their memory, and loads through the service stay exact (missing / unexpected keys and shape
mismatches still raise)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from safetensors.torch import load_file, save_file  # noqa: E402

from modeldepot.config import DepotConfig  # noqa: E402
from modeldepot.errors import ModelDepotError  # noqa: E402
from modeldepot.load import ModelCache, ModelLoadError, ModelLoadService  # noqa: E402
from modeldepot.load.loaders._common import load_safetensors, load_weights  # noqa: E402
from modeldepot.load.loaders._mapped import cast_mapped  # noqa: E402

pytestmark = pytest.mark.torch


def _bytes(t: Any) -> bytes:
    return bytes(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())


def _assert_bitwise(ours: dict[str, Any], ref: dict[str, Any]) -> None:
    assert list(ours) == list(ref)
    for k, r in ref.items():
        o = ours[k]
        assert (o.dtype, tuple(o.shape)) == (r.dtype, tuple(r.shape)), k
        assert _bytes(o) == _bytes(r), k


def _reference(path: Path, dtype: Any, keep_dtype: Any = None) -> dict[str, Any]:
    """``load_file`` + ``.to(dtype)`` in file order (load_file's own order is by name)."""
    sd = load_file(str(path))
    order = list(load_safetensors(path))  # file order, read as stored
    return {
        k: (sd[k].to(dtype) if sd[k].is_floating_point() and not (keep_dtype and keep_dtype(k)) else sd[k])
        for k in order
    }


def _every_16_bit_pattern(dtype: Any) -> Any:
    """All 65,536 values of a 16-bit float: normals, subnormals, both zeros, infinities, NaNs."""
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


def _hard_float32() -> Any:
    """Random bit patterns plus the values where rounding to 16 bits is decided: halfway cases (ties
    to even), the largest finite halves and what overflows, subnormals, signed zeros, inf, NaN."""
    g = torch.Generator().manual_seed(18)
    bits = torch.randint(-(2**31), 2**31 - 1, (1 << 16,), generator=g, dtype=torch.int64).to(torch.int32)
    special = [0.0, -0.0, 1.0, 1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8, 65504.0, 65519.0, 65520.0]
    special += [2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-149, -(2.0**-126), 3.0e38, float("inf"), -float("inf")]
    special += [float("nan")]
    return torch.cat([bits.view(torch.float32), torch.tensor(special, dtype=torch.float32)])


def _write(path: Path, tensors: dict[str, Any]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("float16", "float32"),
        ("bfloat16", "float32"),
        ("float32", "float16"),
        ("float32", "bfloat16"),
        ("float16", "bfloat16"),
    ],
)
def test_cast_while_reading_is_bitwise_to(tmp_path: Path, src: str, dst: str) -> None:
    s, d = getattr(torch, src), getattr(torch, dst)
    every = _every_16_bit_pattern(s) if s.itemsize == 2 else _hard_float32()
    g = torch.Generator().manual_seed(1)
    path = _write(
        tmp_path / "w.safetensors",
        {
            "every": every,
            "matrix": (torch.randn(64, 48, generator=g) * 30).to(s),
            "scalar": torch.tensor(0.1, dtype=s),
            "empty": torch.zeros(0, 3, dtype=s),
        },
    )
    ours = load_safetensors(path, dtype=d)
    _assert_bitwise(ours, _reference(path, d))
    assert all(t.dtype == d for t in ours.values())


def test_mixed_dtype_file_casts_floats_only_and_keeps_the_file_order(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(2)
    tensors = {
        "z.half": torch.randn(33, generator=g).half(),
        "a.bf16": torch.randn(7, 5, generator=g).bfloat16(),
        "m.float": torch.randn(9, generator=g),
        "b.double": torch.randn(4, generator=g, dtype=torch.float64),
        "c.fp8": torch.randn(16, generator=g).to(torch.float8_e4m3fn),
        "d.long": torch.arange(5, dtype=torch.int64),
        "e.byte": torch.arange(3, dtype=torch.uint8),
        "f.bool": torch.tensor([True, False, True]),
        "g.alpha": torch.tensor(4.0, dtype=torch.float16),
    }
    path = _write(tmp_path / "mixed.safetensors", tensors)
    alpha = lambda n: n.endswith(".alpha")  # noqa: E731
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        ours = load_safetensors(path, dtype=dtype, keep_dtype=alpha)
        _assert_bitwise(ours, _reference(path, dtype, alpha))
        assert list(ours) == list(load_safetensors(path))  # same order as a read without dtype
        assert ours["g.alpha"].dtype == torch.float16 and ours["d.long"].dtype == torch.int64
    keep, rename = (lambda n: n.startswith(("z.", "d."))), (lambda n: n[2:])
    only = load_safetensors(path, keep, rename, dtype=torch.float32)
    assert list(only) == list(load_safetensors(path, keep, rename)) and sorted(only) == ["half", "long"]
    assert only["half"].dtype == torch.float32 and only["long"].dtype == torch.int64


def _unaligned_file(path: Path) -> tuple[Path, dict[str, Any]]:
    """A valid safetensors file whose data section starts at an odd offset, and whose float16 and
    float32 tensors sit at offsets their element size does not divide."""
    g = torch.Generator().manual_seed(3)
    a, b, c = torch.arange(3, dtype=torch.uint8), torch.randn(5, generator=g).half(), torch.randn(3, generator=g)
    blobs = [("a", "U8", a), ("b", "F16", b), ("c", "F32", c)]
    header: dict[str, Any] = {}
    pos = 0
    for name, code, t in blobs:
        n = t.numel() * t.element_size()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    if (8 + len(raw)) % 2 == 0:
        raw += b" "  # JSON allows trailing blanks: the data section now starts at an odd offset
    data = b"".join(_bytes(t) for _, _, t in blobs)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path, {"a": a, "b": b, "c": c}


def test_unaligned_tensors_cast_exactly(tmp_path: Path) -> None:
    path, tensors = _unaligned_file(tmp_path / "odd.safetensors")
    assert list(load_safetensors(path)) == ["a", "b", "c"]
    for dtype in (torch.float32, torch.float16):
        ours = load_safetensors(path, dtype=dtype)
        expected = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
        _assert_bitwise(ours, expected)


def test_results_own_their_memory_and_the_mapping_is_released(tmp_path: Path) -> None:
    path = _write(tmp_path / "own.safetensors", {"w": torch.ones(1 << 16).half(), "v": torch.zeros(3, 4).half()})
    sd = load_safetensors(path, dtype=torch.float32)
    for t in sd.values():
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()  # no shared slab, no file view
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(path) not in maps.read_text(encoding="utf-8")


def test_a_file_shorter_than_its_header_is_an_error_not_a_crash(tmp_path: Path) -> None:
    from modeldepot.identify.safetensors import read_safetensors_header

    path = _write(tmp_path / "short.safetensors", {"w": torch.ones(4096).half()})
    header = read_safetensors_header(path)
    info = header.tensors["w"]
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(ModelLoadError, match="shorter than its safetensors header"):
        cast_mapped(path, header.data_offset, [("w", info, torch.float16)], torch.float32)
    with pytest.raises(ModelDepotError):  # the header's own check, or ours: never SIGBUS
        load_safetensors(path, dtype=torch.float32)


def test_pickle_weights_cast_like_safetensors(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(4)
    tensors = {"w": torch.randn(10, generator=g).half(), "x.alpha": torch.tensor(2.0).half()}
    torch.save(tensors, tmp_path / "w.pt")
    st = _write(tmp_path / "w.safetensors", tensors)
    alpha = lambda n: n.endswith(".alpha")  # noqa: E731
    from_pickle = load_weights(tmp_path / "w.pt", dtype=torch.float32, keep_dtype=alpha)
    _assert_bitwise(from_pickle, load_weights(st, dtype=torch.float32, keep_dtype=alpha))
    assert from_pickle["x.alpha"].dtype == torch.float16


# ----- through the load service: precision auto on CPU is float32 -----------------------------------
@pytest.fixture
def svc(home: Path) -> ModelLoadService:
    return ModelLoadService(DepotConfig(home=home, device="cpu"), cache=ModelCache(ram_budget_bytes=1 << 30))


def _half_copy(src: Path, dest: Path, drop: str | None = None, add: str | None = None) -> Path:
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
    if drop is not None:
        del sd[drop]
    if add is not None:
        sd[add] = torch.zeros(3, dtype=torch.float16)
    return _write(dest, sd)


def test_auto_precision_on_cpu_loads_float16_lora_as_float32_exactly(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    assert svc.precision == "float32"
    path = _half_copy(tiny["lora"], tmp_path / "lora16.safetensors")
    loaded = svc.load_model(mkcfg(path, type="lora", format="lycoris")).model
    alpha = lambda n: n.endswith(".alpha")  # noqa: E731
    _assert_bitwise(loaded, _reference(path, torch.float32, alpha))
    assert next(v for k, v in loaded.items() if k.endswith(".alpha")).dtype == torch.float16


def _same_model(a: Any, b: Any) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and _bytes(sa[k]) == _bytes(sb[k]), k


def test_float16_checkpoint_models_equal_the_ones_cast_before_saving(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    """Cast while reading == cast the file first, then load it as stored (unet, vae, text encoder,
    and the standalone VAE / IP-Adapter loaders)."""
    ck = tiny["checkpoint"]
    half = _half_copy(ck.path, tmp_path / "ck16.safetensors")
    full = _write(tmp_path / "ck32.safetensors", {k: v.float() for k, v in load_file(str(half)).items()})
    kw = {"type": "main", "format": "checkpoint", "config_path": str(ck.config_dir)}
    a, b = mkcfg(half, name="half", **kw), mkcfg(full, name="full", **kw)
    for sub in ("unet", "vae", "text_encoder"):
        m16, m32 = svc.load_model(a, sub).model, svc.load_model(b, sub).model
        assert next(m16.parameters()).dtype == torch.float32
        _same_model(m16, m32)
    vae16 = _half_copy(tiny["vae_file"], tmp_path / "vae16.safetensors")
    vae32 = _write(tmp_path / "vae32.safetensors", {k: v.float() for k, v in load_file(str(vae16)).items()})
    vkw = {"type": "vae", "format": "checkpoint", "config_path": str(ck.config_dir)}
    _same_model(
        svc.load_model(mkcfg(vae16, name="v16", **vkw)).model, svc.load_model(mkcfg(vae32, name="v32", **vkw)).model
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"drop": "model.diffusion_model.out.2.bias"}, r"1 missing keys: conv_out\.bias"),
        ({"add": "model.diffusion_model.input_blocks.1.9.stowaway"}, r"unexpected keys: .*stowaway"),
    ],
)
def test_float16_checkpoint_cast_while_reading_is_still_strict(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any, edit: dict[str, str], message: str
) -> None:
    ck = tiny["checkpoint"]
    path = _half_copy(ck.path, tmp_path / "ck16.safetensors", **edit)
    cfg = mkcfg(path, type="main", format="checkpoint", config_path=str(ck.config_dir))
    with pytest.raises(ModelLoadError, match=message):
        svc.load_model(cfg, "unet")


def test_float16_checkpoint_shape_mismatch_is_an_error(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    src = _copy_half_vae(tiny, tmp_path)
    sd = load_file(str(src))
    sd["decoder.conv_out.bias"] = torch.zeros(sd["decoder.conv_out.bias"].shape[0] + 1, dtype=torch.float16)
    save_file(sd, str(src))
    cfg = mkcfg(src, type="vae", format="checkpoint", config_path=str(tiny["checkpoint"].config_dir))
    with pytest.raises(ModelLoadError, match=r"shape mismatch"):
        svc.load_model(cfg)
    with pytest.raises(ModelLoadError, match=r"shape mismatch"):
        svc.load_model(cfg, partial=True)


def _copy_half_vae(tiny: dict[str, Any], tmp_path: Path) -> Path:
    path = shutil.copy(tiny["vae_file"], tmp_path / "vae.safetensors")
    return _half_copy(Path(path), tmp_path / "vae16.safetensors")
