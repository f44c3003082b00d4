"""Identification benchmark: identify() cost must not grow with file size.

    python benchmarks/bench_identify.py [--big-mib 2048] [--small-mib 2] [--runs 200] [--keep]

Writes two SDXL-shaped all-in-one checkpoints with the same ~2,500 real SDXL key names (UNet in
SGM layout, VAE, CLIP-L and OpenCLIP-bigG text encoders): a 2 GiB one whose data region is real
allocated zeros (posix_fallocate, not a sparse file) and a 2 MiB one. Real shapes are kept on as
many tensors as fit the size budget; the rest keep their trailing dimensions (which carry the
widths identification reads) with a leading dimension of 1. Then times ``identify()`` on each.

Baselines measured in the same run: the 2 MiB file (the headline ratio big / small should be ~1);
the reference ``safetensors`` library reading the same header (``safe_open`` + every key's shape);
and, for scale, one sequential read of the whole 2 GiB file (what an identifier that loads the
state dict, as InvokeAI's HEAD does, must at least pay).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import struct
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from modeldepot.identify import identify

BENCH_DIR = Path("/tmp/modeldepot-bench-identify")
#: Keys whose trailing dimensions identification reads; shrunk tensors keep those dimensions.
DECIDING = (
    "input_blocks.0.0.weight",
    "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
    "label_emb.0.0.weight",
    "decoder.conv_in.weight",
)
Shape = tuple[int, ...]


# -- an SDXL key table with real shapes ---------------------------------------------------------------
def _res(keys: dict[str, Shape], p: str, cin: int, cout: int) -> None:
    keys |= {
        f"{p}in_layers.0.weight": (cin,), f"{p}in_layers.0.bias": (cin,),
        f"{p}in_layers.2.weight": (cout, cin, 3, 3), f"{p}in_layers.2.bias": (cout,),
        f"{p}emb_layers.1.weight": (cout, 1280), f"{p}emb_layers.1.bias": (cout,),
        f"{p}out_layers.0.weight": (cout,), f"{p}out_layers.0.bias": (cout,),
        f"{p}out_layers.3.weight": (cout, cout, 3, 3), f"{p}out_layers.3.bias": (cout,),
    }  # fmt: skip
    if cin != cout:
        keys |= {f"{p}skip_connection.weight": (cout, cin, 1, 1), f"{p}skip_connection.bias": (cout,)}


def _transformer(keys: dict[str, Shape], p: str, ch: int, depth: int, ctx: int = 2048) -> None:
    keys |= {
        f"{p}norm.weight": (ch,),
        f"{p}norm.bias": (ch,),
        f"{p}proj_in.weight": (ch, ch),
        f"{p}proj_in.bias": (ch,),
    }
    for b in range(depth):
        t = f"{p}transformer_blocks.{b}."
        for a, kv in (("attn1", ch), ("attn2", ctx)):
            keys |= {
                f"{t}{a}.to_q.weight": (ch, ch), f"{t}{a}.to_k.weight": (ch, kv), f"{t}{a}.to_v.weight": (ch, kv),
                f"{t}{a}.to_out.0.weight": (ch, ch), f"{t}{a}.to_out.0.bias": (ch,),
            }  # fmt: skip
        keys |= {
            f"{t}ff.net.0.proj.weight": (ch * 8, ch), f"{t}ff.net.0.proj.bias": (ch * 8,),
            f"{t}ff.net.2.weight": (ch, ch * 4), f"{t}ff.net.2.bias": (ch,),
        }  # fmt: skip
        for n in (1, 2, 3):
            keys |= {f"{t}norm{n}.weight": (ch,), f"{t}norm{n}.bias": (ch,)}
    keys |= {f"{p}proj_out.weight": (ch, ch), f"{p}proj_out.bias": (ch,)}


def sdxl_keys() -> dict[str, Shape]:
    u = "model.diffusion_model."
    k: dict[str, Shape] = {
        f"{u}time_embed.0.weight": (1280, 320), f"{u}time_embed.0.bias": (1280,),
        f"{u}time_embed.2.weight": (1280, 1280), f"{u}time_embed.2.bias": (1280,),
        f"{u}label_emb.0.0.weight": (1280, 2816), f"{u}label_emb.0.0.bias": (1280,),
        f"{u}label_emb.0.2.weight": (1280, 1280), f"{u}label_emb.0.2.bias": (1280,),
        f"{u}input_blocks.0.0.weight": (320, 4, 3, 3), f"{u}input_blocks.0.0.bias": (320,),
    }  # fmt: skip
    plan = [
        (1, 320, 320, 0),
        (2, 320, 320, 0),
        (4, 320, 640, 2),
        (5, 640, 640, 2),
        (7, 640, 1280, 10),
        (8, 1280, 1280, 10),
    ]
    for i, cin, cout, depth in plan:
        _res(k, f"{u}input_blocks.{i}.0.", cin, cout)
        if depth:
            _transformer(k, f"{u}input_blocks.{i}.1.", cout, depth)
    for i, ch in ((3, 320), (6, 640)):
        k |= {f"{u}input_blocks.{i}.0.op.weight": (ch, ch, 3, 3), f"{u}input_blocks.{i}.0.op.bias": (ch,)}
    _res(k, f"{u}middle_block.0.", 1280, 1280)
    _transformer(k, f"{u}middle_block.1.", 1280, 10)
    _res(k, f"{u}middle_block.2.", 1280, 1280)
    outs = [(0, 2560, 1280, 10), (1, 2560, 1280, 10), (2, 1920, 1280, 10), (3, 1920, 640, 2), (4, 1280, 640, 2)]
    outs += [(5, 960, 640, 2), (6, 960, 320, 0), (7, 640, 320, 0), (8, 640, 320, 0)]
    for i, cin, cout, depth in outs:
        _res(k, f"{u}output_blocks.{i}.0.", cin, cout)
        if depth:
            _transformer(k, f"{u}output_blocks.{i}.1.", cout, depth)
    for i, ch in ((2, 1280), (5, 640)):
        k |= {f"{u}output_blocks.{i}.2.conv.weight": (ch, ch, 3, 3), f"{u}output_blocks.{i}.2.conv.bias": (ch,)}
    k |= {
        f"{u}out.0.weight": (320,),
        f"{u}out.0.bias": (320,),
        f"{u}out.2.weight": (4, 320, 3, 3),
        f"{u}out.2.bias": (4,),
    }
    v = "first_stage_model."
    k |= {f"{v}encoder.conv_in.weight": (128, 3, 3, 3), f"{v}decoder.conv_in.weight": (512, 4, 3, 3)}
    for side in ("encoder.down", "decoder.up"):
        for lvl, ch in enumerate((128, 256, 512, 512)):
            for blk in range(2 if side == "encoder.down" else 3):
                p = f"{v}{side}.{lvl}.block.{blk}."
                k |= {f"{p}norm1.weight": (ch,), f"{p}conv1.weight": (ch, ch, 3, 3), f"{p}norm2.weight": (ch,)}
                k |= {f"{p}conv2.weight": (ch, ch, 3, 3), f"{p}conv1.bias": (ch,), f"{p}conv2.bias": (ch,)}
    k |= {f"{v}encoder.conv_out.weight": (8, 512, 3, 3), f"{v}quant_conv.weight": (8, 8, 1, 1)}
    k |= {f"{v}post_quant_conv.weight": (4, 4, 1, 1), f"{v}decoder.conv_out.weight": (3, 128, 3, 3)}
    t = "conditioner.embedders.0.transformer.text_model."
    k |= {f"{t}embeddings.token_embedding.weight": (49408, 768), f"{t}embeddings.position_embedding.weight": (77, 768)}
    for i in range(12):
        p = f"{t}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            k |= {f"{p}self_attn.{proj}.weight": (768, 768), f"{p}self_attn.{proj}.bias": (768,)}
        k |= {f"{p}mlp.fc1.weight": (3072, 768), f"{p}mlp.fc1.bias": (3072,), f"{p}mlp.fc2.weight": (768, 3072)}
        k |= {f"{p}layer_norm1.weight": (768,), f"{p}layer_norm2.weight": (768,), f"{p}mlp.fc2.bias": (768,)}
    k |= {f"{t}final_layer_norm.weight": (768,), f"{t}final_layer_norm.bias": (768,)}
    g = "conditioner.embedders.1.model."
    k |= {f"{g}token_embedding.weight": (49408, 1280), f"{g}positional_embedding": (77, 1280)}
    for i in range(32):
        p = f"{g}transformer.resblocks.{i}."
        k |= {f"{p}attn.in_proj_weight": (3840, 1280), f"{p}attn.in_proj_bias": (3840,)}
        k |= {f"{p}attn.out_proj.weight": (1280, 1280), f"{p}attn.out_proj.bias": (1280,)}
        k |= {
            f"{p}ln_1.weight": (1280,),
            f"{p}ln_1.bias": (1280,),
            f"{p}ln_2.weight": (1280,),
            f"{p}ln_2.bias": (1280,),
        }
        k |= {f"{p}mlp.c_fc.weight": (5120, 1280), f"{p}mlp.c_fc.bias": (5120,)}
        k |= {f"{p}mlp.c_proj.weight": (1280, 5120), f"{p}mlp.c_proj.bias": (1280,)}
    k |= {f"{g}ln_final.weight": (1280,), f"{g}ln_final.bias": (1280,), f"{g}text_projection": (1280, 1280)}
    return k


def fit(keys: dict[str, Shape], budget: int, itemsize: int = 2) -> dict[str, Shape]:
    """Keep real shapes while they fit ``budget`` bytes; shrink the rest to a leading dimension of 1."""
    small = {k: (1, *s[1:]) if s and k.endswith(DECIDING) else (1,) * len(s) for k, s in keys.items()}
    used = sum(math.prod(s) for s in small.values()) * itemsize
    out = dict(small)
    for k, s in keys.items():
        extra = (math.prod(s) - math.prod(small[k])) * itemsize
        if used + extra <= budget:
            out[k] = s
            used += extra
    return out


def write_checkpoint(path: Path, shapes: dict[str, Shape]) -> int:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        n = math.prod(shape) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.flush()
        # Real allocated blocks, not a sparse hole: the headline figure must be a genuine 2 GiB file.
        os.posix_fallocate(f.fileno(), 8 + len(raw), offset)
    os.replace(tmp, path)
    return len(raw)


def timed(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, dict[str, float]]:
    """Per function: first-call wall time, then min / median / p95 wall and median thread CPU time (ms).

    The functions are interleaved run by run, so load from other processes hits them alike."""
    out: dict[str, dict[str, float]] = {}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        out[name] = {"first": (time.perf_counter() - start) * 1e3}
    for _ in range(runs):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.thread_time()
            fn()
            cpu[name].append(time.thread_time() - c)
            wall[name].append(time.perf_counter() - t)
    for name in fns:
        w = sorted(wall[name])
        out[name] |= {
            "min": w[0] * 1e3,
            "median": statistics.median(w) * 1e3,
            "p95": w[int(len(w) * 0.95) - 1] * 1e3,
            "cpu": statistics.median(cpu[name]) * 1e3,
        }
    return out


def read_all(path: Path) -> int:
    total = 0
    buf = bytearray(16 * 1024 * 1024)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--big-mib", type=int, default=2048)
    ap.add_argument("--small-mib", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the files in " + str(BENCH_DIR))
    args = ap.parse_args()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    keys = sdxl_keys()
    try:
        files = {}
        for label, mib in (("small", args.small_mib), ("big", args.big_mib)):
            path = BENCH_DIR / f"sdxl-{label}.safetensors"
            # The header (~0.3 MB of JSON) counts towards the file size: the data gets the rest.
            hlen = write_checkpoint(path, fit(keys, max(mib * 1024 * 1024 - 340_000, 0)))
            files[label] = (path, hlen)
        rows = []
        first: dict[str, float] = {}
        for label, (path, hlen) in files.items():
            t = time.perf_counter()
            ident = identify(path)
            first[label] = (time.perf_counter() - t) * 1e3  # the very first call (imports, cold caches)
            assert (ident.type.value, ident.base.value) == ("main", "sdxl"), ident.reasons
            rows.append((label, path.stat().st_size, os.stat(path).st_blocks * 512, hlen))
        fns: dict[str, Callable[[], object]] = {label: partial(identify, path) for label, (path, _) in files.items()}
        try:
            from safetensors import safe_open

            def reference(p: Path = files["big"][0]) -> None:
                with safe_open(str(p), "np") as f:
                    for k in f.keys():  # noqa: SIM118 - safe_open handles are not mappings
                        f.get_slice(k).get_shape()

            fns["reference"] = reference
        except ImportError:
            pass
        results = timed(fns, args.runs)
        for label, ms in first.items():
            results[label]["first"] = ms
        nan = {"first": math.nan, "min": math.nan, "median": math.nan, "p95": math.nan, "cpu": math.nan}
        ref = results.get("reference", nan)
        t = time.perf_counter()
        read_all(files["big"][0])
        full = (time.perf_counter() - t) * 1e3
    finally:
        if not args.keep:
            shutil.rmtree(BENCH_DIR, ignore_errors=True)
    big, small = results["big"], results["small"]
    load = os.getloadavg()[0]
    print(f"## identify() on SDXL-shaped checkpoints ({len(keys)} keys, {args.runs} runs each)\n")
    print(f"Machine: {os.cpu_count()} CPUs, 1-min load average {load:.1f} during the run.\n")
    print("| file | size (bytes) | allocated | header | first call | best | median | p95 | median CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, size, blocks, hlen in rows:
        r = results[label]
        print(
            f"| {label} | {size:,} | {blocks:,} | {hlen:,} B | {r['first']:.2f} ms | {r['min']:.2f} ms "
            f"| {r['median']:.2f} ms | {r['p95']:.2f} ms | {r['cpu']:.2f} ms |"
        )
    print("\n| comparison | ratio |")
    print("|---|---:|")
    print(f"| identify best wall, 2 GiB / 2 MiB (target ~1) | {big['min'] / small['min']:.2f} |")
    print(f"| identify median wall, 2 GiB / 2 MiB | {big['median'] / small['median']:.2f} |")
    print(f"| identify median CPU, 2 GiB / 2 MiB | {big['cpu'] / small['cpu']:.2f} |")
    print(
        f"| identify / reference safetensors header read (safe_open + every shape: {ref['median']:.2f} ms wall, "
        f"{ref['cpu']:.2f} ms CPU), 2 GiB, CPU | {big['cpu'] / ref['cpu']:.2f} |"
    )
    print(f"| one full read of the 2 GiB file ({full:.0f} ms) / identify median wall | {full / big['median']:,.0f} |")


if __name__ == "__main__":
    main()
