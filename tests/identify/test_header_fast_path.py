"""The column-at-a-time header check (issue 18) agrees with the tensor-by-tensor one.

``_fast_columns`` may answer None (in doubt) for anything, but when it answers, the per-tensor
``_checked_columns`` must accept the same header and return the same columns: the hostile-input
contract (test_hostile_input, test_bad_input, test_fuzz_inputs) is the per-tensor check's.
"""

from __future__ import annotations

import gc
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldepot.errors import InvalidSafetensorsError
from modeldepot.identify import identify, read_safetensors_header
from modeldepot.identify import safetensors as reader
from modeldepot.identify._rules_adapters import _KOHYA_PREFIXES, _LORA_HINTS, _LORA_MARKERS
from modeldepot.identify.safetensors import DTYPE_SIZES, MAX_DIM, TensorInfo
from modeldepot.taxonomy import BaseModelType, ModelType
from modeldepot.testing import factories as F

PATH = Path("/x.safetensors")
#: Values that break a field in every way JSON allows, next to values that are almost right.
ODD = st.one_of(
    st.sampled_from([True, False, None, 1.0, 2.5, -1, 0, 1, 2, 3, MAX_DIM, MAX_DIM + 1, 2**64, "", "2", "ab", "F16"]),
    st.builds(list),
    st.builds(dict),
    st.lists(st.sampled_from([0, 1, 2, True, 1.0, -2, MAX_DIM + 1]), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 2), max_size=2),
)


@st.composite
def headers(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A header laid out like real ones (back to back, sometimes with gaps or out of order),
    then a few fields replaced by odd values, spans moved, or an entry mangled."""
    doc: dict[str, Any] = {}
    offset = 0
    for i in range(draw(st.integers(1, 6))):
        dtype = draw(st.sampled_from(sorted(DTYPE_SIZES)))
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        numel = 1
        for d in shape:
            numel *= d
        size = (numel * int(DTYPE_SIZES[dtype] * 8) + 7) // 8
        offset += draw(st.sampled_from([0, 0, 0, 1, 3]))  # mostly contiguous
        doc[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    names = list(doc)
    if draw(st.booleans()):  # out of header order
        doc = {k: doc[k] for k in draw(st.permutations(names))}
    for _ in range(draw(st.integers(0, 3))):
        entry = doc[draw(st.sampled_from(names))]
        how = draw(st.sampled_from(["field", "dim", "offset", "move", "drop", "extra", "entry"]))
        if not isinstance(entry, dict):  # mangled by an earlier round
            continue
        if how == "field":
            entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(ODD)
        elif how == "dim" and isinstance(entry.get("shape"), list) and entry["shape"]:
            entry["shape"][draw(st.integers(0, len(entry["shape"]) - 1))] = draw(ODD)
        elif how == "offset" and isinstance(entry.get("data_offsets"), list) and entry["data_offsets"]:
            entry["data_offsets"][draw(st.integers(0, len(entry["data_offsets"]) - 1))] = draw(ODD)
        elif how == "move" and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2:
            b, e = entry["data_offsets"]
            if type(b) is int and type(e) is int:
                shift = draw(st.integers(-3, 3))
                entry["data_offsets"] = [b + shift, e + shift]
        elif how == "drop":
            entry.pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])), None)
        elif how == "extra":
            entry["extra"] = draw(ODD)
        elif how == "entry":
            doc[draw(st.sampled_from(names))] = draw(ODD)
    data_size = offset + draw(st.sampled_from([0, 0, 1, -1]))
    return doc, max(data_size, 0)


def _checked(doc: dict[str, Any], data_size: int) -> reader._Columns | None:
    try:
        return reader._checked_columns(PATH, doc, data_size)
    except InvalidSafetensorsError:
        return None


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(case=headers())
def test_fast_check_accepts_only_what_the_per_tensor_check_accepts(case: tuple[dict[str, Any], int]) -> None:
    doc, data_size = case
    fast = reader._fast_columns(doc, data_size)
    if fast is not None:
        assert fast == _checked(doc, data_size), json.dumps(doc)


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ({"a": {"dtype": "U8", "shape": [True, 2], "data_offsets": [0, 2]}}, "bool dim"),
        ({"a": {"dtype": "U8", "shape": [2.0], "data_offsets": [0, 2]}}, "float dim"),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0.0, 2]}}, "float offset"),
        ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}}, "bool offsets"),
        ({"a": {"dtype": "U8", "shape": [-1, -2], "data_offsets": [0, 2]}}, "negative dims"),
        ({"a": {"dtype": "U8", "shape": [0, MAX_DIM + 1], "data_offsets": [0, 0]}}, "huge dim beside a 0"),
        ({"a": {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}}, "too many dims"),
        (
            {
                "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2, 2]},
                "b": {"dtype": "U8", "shape": [2], "data_offsets": [4]},
            },
            "offsets of 3 and 1",
        ),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 0]}}, "end before begin"),
        (
            {
                "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
            },
            "nested spans",
        ),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [-1, 1]}}, "negative begin"),
        ({"a": {"dtype": "U8", "shape": [9], "data_offsets": [0, 9]}}, "past the data"),
        ({"a": {"dtype": "u8", "shape": [2], "data_offsets": [0, 2]}}, "unknown dtype"),
        ({"a": {"dtype": ["U8"], "shape": [2], "data_offsets": [0, 2]}}, "unhashable dtype"),
        ({"a": {"dtype": "U8", "shape": "ab", "data_offsets": [0, 2]}}, "string shape"),
        ({"a": {"dtype": "U8", "shape": "", "data_offsets": [0, 1]}}, "empty string shape"),
        ({"a": {"dtype": "U8", "shape": {}, "data_offsets": [0, 1]}}, "empty object shape"),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": "ab"}}, "string offsets"),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": {"0": 0, "2": 2}}}, "object offsets"),
        ({"a": [1, 2]}, "list entry"),
        ({"a": {"dtype": "U8", "shape": [2]}}, "missing offsets"),
    ],
)
def test_fast_check_refuses_each_bad_field(entries: dict[str, Any], why: str) -> None:
    assert reader._fast_columns(entries, 8) is None, why
    with pytest.raises(InvalidSafetensorsError):
        reader._checked_columns(PATH, entries, 8)


def _framed(path: Path, doc: dict[str, Any], data: int) -> Path:
    raw = json.dumps(doc).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data)
    return path


def test_fractional_dtypes_take_the_per_tensor_check(tmp_path: Path) -> None:
    doc = {
        "w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]},
        "v": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [2, 5]},
    }
    assert reader._fast_columns(doc, 5) is None
    header = read_safetensors_header(_framed(tmp_path / "f4.safetensors", doc, 5))
    assert header.tensors == {"w": TensorInfo("F4", (3,), 0, 2), "v": TensorInfo("F6_E2M3", (4,), 2, 5)}


def test_empty_tensors_and_gaps_are_accepted_by_the_fast_check(tmp_path: Path) -> None:
    doc = {
        "v": {"dtype": "U8", "shape": [4], "data_offsets": [3, 7]},  # after a 3-byte gap
        "e": {"dtype": "U8", "shape": [0], "data_offsets": [5, 5]},  # empty, inside v's span
        "z": {"dtype": "F32", "shape": [0, 7], "data_offsets": [0, 0]},
        "s": {"dtype": "F16", "shape": [], "data_offsets": [7, 9]},  # a scalar
    }
    assert reader._fast_columns(doc, 9) is not None
    header = read_safetensors_header(_framed(tmp_path / "odd.safetensors", doc, 9))
    assert header.shapes == {"v": (4,), "e": (0,), "z": (0, 7), "s": ()}
    assert header.tensors["e"] == TensorInfo("U8", (0,), 5, 5) and header.tensors["s"].nbytes == 2


def test_sdxl_checkpoint_takes_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = F.write_sdxl_checkpoint(tmp_path / "sdxl.safetensors")

    def per_tensor(*args: object) -> None:
        raise AssertionError("a well-formed checkpoint went through the per-tensor check")

    monkeypatch.setattr(reader, "_checked_columns", per_tensor)
    header = read_safetensors_header(path)
    assert len(header.shapes) > 100
    result = identify(path)
    assert (result.type, result.base) == (ModelType.Main, BaseModelType.StableDiffusionXL)
    # The lazily built TensorInfo table matches the columns, in header order.
    assert list(header.tensors) == list(header.shapes)
    first = next(iter(header.tensors.values()))
    assert (first.dtype, first.shape, first.begin) == (header.dtypes[0], next(iter(header.shapes.values())), 0)


def test_collector_is_paused_only_while_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = F.write_safetensors(tmp_path / "x.safetensors", {"a": (2, 3)})
    seen: list[bool] = []
    real = reader._validate

    def spy(*args: Any) -> reader.SafetensorsHeader:
        seen.append(gc.isenabled())
        return real(*args)

    monkeypatch.setattr(reader, "_validate", spy)
    assert gc.isenabled()
    read_safetensors_header(path)
    assert seen == [False] and gc.isenabled()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 2) + b"[]")
    with pytest.raises(InvalidSafetensorsError):
        read_safetensors_header(bad)
    assert gc.isenabled()
    gc.disable()
    try:
        read_safetensors_header(path)
        assert not gc.isenabled()  # a collector someone else paused stays paused
    finally:
        gc.enable()


def test_lora_hints_cover_every_lora_marker() -> None:
    """The LoRA rule skips its suffix test when no key holds a hint: every marker must hold one."""
    for marker in (*_KOHYA_PREFIXES, *_LORA_MARKERS):
        assert any(hint in marker for hint in _LORA_HINTS), marker
