"""Hypothesis strategies for model files that are always malformed, shared by the fuzz tests.

Every case is a set of files plus the file or folder to hand to ``identify`` / ``register_path``.
Each is built so that no reader can accept it: a corrupted safetensors header, a pickle opcode
stream without a STOP (or importing a forbidden global), non-model bytes under a weights
extension, or a broken JSON file that the folder rules must read. So the one right answer is a
``ModelDepotError`` naming the file at fault.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from modeldepot.identify.safetensors import DTYPE_SIZES


@dataclass(frozen=True)
class HostileCase:
    kind: str
    files: dict[str, bytes]  # relative path -> content
    target: str  # relative path to identify ("" = the case folder itself)

    def write(self, root: Path) -> Path:
        for rel, data in self.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return root / self.target if self.target else root


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30)


def _frame(header: bytes, data_len: int, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + b"\0" * data_len


@st.composite
def _good_header(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A valid header (entries + data length) that the corruption step then breaks."""
    doc: dict[str, Any] = {}
    offset = 0
    for name in draw(st.lists(names.filter(lambda n: n != "__metadata__"), min_size=1, max_size=4, unique=True)):
        dtype = draw(st.sampled_from(["F16", "F32", "BF16", "I8", "U8", "F64"]))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = int(DTYPE_SIZES[dtype])
        for d in shape:
            size *= d
        doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if draw(st.booleans()):
        doc["__metadata__"] = draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
    return doc, offset


def _not_nonneg_int_list(v: Any) -> bool:
    return not (isinstance(v, list) and all(type(d) is int and d >= 0 for d in v))


@st.composite
def malformed_safetensors(draw: st.DrawFn) -> HostileCase:
    doc, data_len = draw(_good_header())
    first = next(k for k in doc if k != "__metadata__")
    entry = doc[first]
    how = draw(
        st.sampled_from(
            [
                "dtype", "shape", "huge_shape", "offsets", "offsets_past_end", "size_mismatch", "metadata",
                "entry", "top", "deep", "bigint", "length_past_end", "cut_json", "garbage", "overlap",
            ]
        )
    )  # fmt: skip
    header: bytes | None = None
    length: int | None = None
    if how == "dtype":
        entry["dtype"] = draw(json_values.filter(lambda v: not (isinstance(v, str) and v in DTYPE_SIZES)))
    elif how == "shape":
        entry["shape"] = draw(json_values.filter(_not_nonneg_int_list))
    elif how == "huge_shape":
        entry["shape"] = [10 ** draw(st.integers(19, 300)), *draw(st.lists(st.integers(1, 10**30), max_size=3))]
    elif how == "offsets":
        entry["data_offsets"] = draw(
            json_values.filter(lambda v: not (isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)))
        )
    elif how == "offsets_past_end":
        entry["data_offsets"] = [data_len + 1, data_len + 1 + draw(st.integers(0, 2**80))]
    elif how == "size_mismatch":
        begin, end = entry["data_offsets"]
        entry["data_offsets"] = [begin, end + 1]
        data_len += 1
    elif how == "metadata":
        doc["__metadata__"] = draw(json_values.filter(lambda v: bool(v) and not isinstance(v, dict)))
    elif how == "entry":
        doc[first] = draw(json_values.filter(lambda v: not isinstance(v, dict)))
    elif how == "top":
        header = json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    elif how == "deep":
        depth = draw(st.integers(1_000, 50_000))
        entry["shape"] = "@DEEP@"
        header = json.dumps(doc).encode().replace(b'"@DEEP@"', b"[" * depth + b"]" * depth)
    elif how == "bigint":
        entry["shape"] = "@BIG@"
        digits = b"9" * draw(st.integers(4_400, 6_000))
        header = json.dumps(doc).encode().replace(b'"@BIG@"', b"[" + digits + b"]")
    elif how == "length_past_end":
        length = draw(st.integers(1, 2**64 - 1))
        header = json.dumps(doc).encode()
        length = max(length, len(header) + data_len + 1)
    elif how == "cut_json":
        full = json.dumps(doc).encode()
        header = full[: draw(st.integers(1, len(full) - 1))]
    elif how == "garbage":
        header = b"\xff" + draw(st.binary(max_size=64))
    elif how == "overlap":
        doc["@overlap"] = {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}
        doc["@overlap2"] = {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}
        data_len = max(data_len, 3)
    if header is None:
        header = json.dumps(doc).encode()
    suffix = draw(st.sampled_from([".safetensors", ".sft"]))
    return HostileCase(f"safetensors:{how}", {f"model{suffix}": _frame(header, data_len, length)}, f"model{suffix}")


# A pickle opcode stream with no STOP can never load; the args keep each opcode well formed
# (or over-declare a length), so the stream cannot re-synchronise onto a stray STOP byte.
_ALLOWED_GLOBALS = [
    b"collections\nOrderedDict\n",
    b"torch._utils\n_rebuild_tensor_v2\n",
    b"torch\nHalfStorage\n",
    b"builtins\nset\n",
    b"os\nsystem\n",
    b"numpy\ndtype\n",
]


def _opcode() -> st.SearchStrategy[bytes]:
    simple = st.sampled_from(
        [b"(", b"}", b"]", b")", b"t", b"\x85", b"\x86", b"\x87", b"l", b"d", b"a", b"e", b"s", b"u", b"R", b"b",
         b"\x81", b"Q", b"N", b"\x88", b"\x89", b"0", b"1", b"2", b"\x90", b"\x91", b"\x8f", b"\x94", b"\x93"]
    )  # fmt: skip
    return st.one_of(
        simple,
        st.binary(min_size=1, max_size=1).map(lambda b: b"K" + b),
        st.binary(min_size=4, max_size=4).map(lambda b: b"J" + b),
        st.binary(min_size=1, max_size=1).map(lambda b: b"q" + b),
        st.binary(min_size=1, max_size=1).map(lambda b: b"h" + b),
        st.integers(0, 2**32 - 1).map(lambda i: b"r" + struct.pack("<I", i)),
        st.integers(0, 2**32 - 1).map(lambda i: b"j" + struct.pack("<I", i)),
        st.text(max_size=8).map(lambda s: b"X" + struct.pack("<I", len(s.encode())) + s.encode()),
        st.binary(max_size=12).map(lambda b: b"\x8a" + bytes([len(b)]) + b),
        st.binary(min_size=8, max_size=8).map(lambda b: b"G" + b),
        st.sampled_from(_ALLOWED_GLOBALS).map(lambda g: b"c" + g),
        # Declared sizes beyond the end of the file (the C unpickler allocated them).
        st.sampled_from([b"\x8e", b"\x96", b"\x8d", b"\x95"]).flatmap(
            lambda op: st.integers(2**20, 2**63 - 1).map(lambda n: op + struct.pack("<Q", n))
        ),
        st.integers(2**20, 2**31 - 1).map(lambda n: b"\x8b" + struct.pack("<I", n)),
        # Deep tuple chains: the C unpickler hashed them recursively.
        st.integers(65, 5_000).map(lambda n: b"K\x01" + b"\x85" * n),
    )


@st.composite
def malformed_pickles(draw: st.DrawFn) -> HostileCase:
    how = draw(st.sampled_from(["soup", "zip_soup", "zip_without_data_pkl", "not_a_model", "text", "empty"]))
    suffix = draw(st.sampled_from([".bin", ".ckpt", ".pt", ".pth"]))
    proto = b"\x80" + bytes([draw(st.integers(2, 5))])
    soup = proto + b"".join(draw(st.lists(_opcode(), max_size=30)))
    if how == "soup":
        data = soup
    elif how in ("zip_soup", "zip_without_data_pkl"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("archive/data.pkl" if how == "zip_soup" else "archive/other.pkl", soup)
            zf.writestr("archive/version", "3\n")
        data = buf.getvalue()
    elif how == "not_a_model":
        first = draw(st.integers(0, 255).filter(lambda b: b not in (0x80, ord("P"), ord("G"))))
        data = bytes([first]) + draw(st.binary(max_size=64))
        data = data if data[8:9] != b"{" else data[:8]
    elif how == "text":
        data = draw(
            st.sampled_from([b"<!DOCTYPE html><title>404</title>", b"version https://git-lfs.github.com/spec/v1\n"])
        )
    else:
        data = b""
    return HostileCase(f"pickle:{how}", {f"model{suffix}": data}, f"model{suffix}")


@st.composite
def _broken_json(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["syntax", "deep", "too_deep", "bigint", "not_object", "not_utf8"]))
    if how == "syntax":
        return ("{" + draw(st.text(max_size=40)) + ",").encode()
    if how == "deep":
        depth = draw(st.integers(1_000, 50_000))
        return b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    if how == "too_deep":
        depth = draw(st.integers(65, 900))
        return b'{"_class_name":' + b"[" * depth + b"]" * depth + b"}"
    if how == "bigint":
        return b'{"_class_name":"AutoencoderKL","latent_channels":' + b"7" * draw(st.integers(4_400, 6_000)) + b"}"
    if how == "not_object":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    return b'{"_class_name": "\xff\xfe"}'


@st.composite
def malformed_folders(draw: st.DrawFn) -> HostileCase:
    where = draw(
        st.sampled_from(
            [
                "model_index.json",
                "unet/config.json",
                "transformer/config.json",
                "scheduler/scheduler_config.json",
                "config.json",
                "text_encoder_2/config.json",
            ]
        )
    )
    files: dict[str, bytes] = {where: draw(_broken_json())}
    pipeline_parts = ("unet/", "transformer/", "scheduler/")
    if where.startswith(pipeline_parts):
        index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
        index.update(draw(st.dictionaries(st.sampled_from(["vae", "text_encoder", "_x"]), json_values, max_size=2)))
        files["model_index.json"] = json.dumps(index).encode()
    files.setdefault("README.md", b"a model folder\n")
    return HostileCase(f"folder:{where}", files, "")


hostile_cases = st.one_of(malformed_safetensors(), malformed_pickles(), malformed_folders())

#: Configs with every value possibly of the wrong type: identify must answer or raise clearly.
config_templates: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [
        {"_class_name": "AutoencoderKL", "latent_channels": 4, "scaling_factor": 0.18215},
        {"_class_name": "ControlNetModel", "cross_attention_dim": 768},
        {"_class_name": "T2IAdapter", "adapter_type": "full_adapter"},
        {"_class_name": "CLIPVisionModelWithProjection", "hidden_size": 1280, "vision_config": {"hidden_size": 1}},
        {"_class_name": "CLIPTextModel", "hidden_size": 768},
        {"architectures": ["T5EncoderModel"], "d_model": 4096},
    ]
)


@st.composite
def odd_config_folders(draw: st.DrawFn) -> HostileCase:
    cfg = dict(draw(config_templates))
    for key in sorted(set(cfg) | {"vision_config"}):
        if key != "_class_name" and draw(st.booleans()):
            cfg[key] = draw(json_values)
    files = {"config.json": json.dumps(cfg).encode()}
    if draw(st.booleans()):
        index: dict[str, Any] = {"_class_name": draw(json_values), "unet": draw(json_values)}
        unet = {k: draw(json_values) for k in ("cross_attention_dim", "in_channels", "sample_size", "upcast_attention")}
        sched = {"_class_name": draw(json_values), "prediction_type": draw(json_values)}
        files = {
            "model_index.json": json.dumps(index).encode(),
            "unet/config.json": json.dumps(unet).encode(),
            "scheduler/scheduler_config.json": json.dumps(sched).encode(),
        }
    return HostileCase("odd_config", files, "")
