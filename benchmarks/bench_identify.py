"""Identification benchmark (issues 3 and 18): identify() of an SDXL checkpoint against its peers.

    python benchmarks/bench_identify.py [--before OLD_SRC] [--rounds 5] [--runs 100] [--split] [--profile]

Writes two SDXL-shaped all-in-one checkpoints with the same 2,367 real SDXL key names (UNet in SGM
layout, VAE, CLIP-L and OpenCLIP-bigG text encoders): a 2 GiB one (sparse; ``--allocate`` gives it
real blocks with posix_fallocate) and a 2 MiB one. Real shapes are kept on as many tensors as fit
the size budget; the rest keep their trailing dimensions (which carry the widths identification
reads) with a leading dimension of 1.

Each round starts one fresh process per side ("after" = this checkout's ``src``; "before" = the
code at ``--before``, e.g. ``git archive HEAD src | tar -x -C /tmp/before``), in alternating order.
A process times, interleaved run by run so background load hits them alike: ``identify()`` of each
file; ``json.loads`` of the big file's header bytes alone (the floor: any reader must decode it);
and ``safetensors.safe_open`` + ``keys()`` on the big file (the reference Rust reader). Every
ratio is taken inside one process, then summarised as the median over rounds with min-max.
``--split`` adds a per-stage wall-clock split (read, count, JSON decode, validate, rules) and
``--profile`` a cProfile summary, both on the big file.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def write_checkpoint(path: Path, shapes: dict[str, Shape], *, allocate: bool = False) -> int:
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
        if allocate:
            os.posix_fallocate(f.fileno(), 8 + len(raw), offset)
        else:
            f.truncate(8 + len(raw) + offset)
    os.replace(tmp, path)
    return len(raw)


# -- one side, in its own process -----------------------------------------------------------------------
def _header_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n)


def _interleaved(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, dict[str, float]]:
    """Median wall and thread-CPU ms per function, the functions interleaved run by run."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # imports, first-touch caches
    for _ in range(runs):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.thread_time()
            fn()
            cpu[name].append(time.thread_time() - c)
            wall[name].append(time.perf_counter() - t)
    return {k: {"wall": statistics.median(wall[k]) * 1e3, "cpu": statistics.median(cpu[k]) * 1e3} for k in fns}


def _split(big: Path, runs: int) -> dict[str, dict[str, float]]:
    """Wall-clock split of one identify() into its stages, each stage run as identify runs it."""
    from modeldepot.identify import _core
    from modeldepot.identify import safetensors as reader
    from modeldepot.identify._assemble import finish
    from modeldepot.identify._declared import read_declared

    # The new reader pauses the collector around decode + validate; the old one does not.
    paused = hasattr(reader, "_collector_paused")
    size = big.stat().st_size
    raw = _header_bytes(big)
    text = raw.decode()
    view = _core.load_view(big)

    def validate() -> float:
        doc = json.loads(text)  # a fresh document each run, outside the timed part
        t = time.perf_counter()
        reader._validate(big, len(raw), size, doc)
        return time.perf_counter() - t

    def rules() -> None:
        fresh = _core.KeyView.build(big, dict(view.shapes), metadata=view.metadata, source=view.source)
        finish([r(fresh) for r in _core.FILE_RULES], read_declared(view.metadata), extra={}, unknown_reason="")

    stages: dict[str, Callable[[], object]] = {
        "read header bytes": lambda: _header_bytes(big),
        "count braces/commas": lambda: reader._check_counts(big, raw),
        "JSON decode": lambda: json.loads(text),
        "validate": validate,
        "view + 13 rules + assembly": rules,
        "identify (whole)": lambda: _core.identify(big),
    }
    wall: dict[str, list[float]] = {k: [] for k in stages}
    for _ in range(runs):
        for name, fn in stages.items():
            pause = paused and name in ("JSON decode", "validate")
            if pause:
                gc.disable()
            t = time.perf_counter()
            own = fn()  # dropped below, before the collector runs again: it must not walk this
            took = time.perf_counter() - t
            wall[name].append(own if isinstance(own, float) else took)
            del own
            if pause:
                gc.enable()
    return {k: {"wall": statistics.median(v) * 1e3} for k, v in wall.items()}


def worker(args: argparse.Namespace) -> None:
    from modeldepot.identify import identify

    small, big = Path(args.small), Path(args.big)
    for path in (small, big):
        ident = identify(path)
        assert (ident.type.value, ident.base.value) == ("main", "sdxl"), ident.reasons
    raw = _header_bytes(big)
    fns: dict[str, Callable[[], object]] = {
        "identify 2 MiB": lambda: identify(small),
        "identify 2 GiB": lambda: identify(big),
        "json.loads of the header": lambda: json.loads(raw),
    }
    try:
        from safetensors import safe_open

        def reference() -> object:
            with safe_open(str(big), "np") as f:
                return f.keys()

        fns["safe_open + keys()"] = reference
    except ImportError:
        pass
    out: dict[str, Any] = {"times": _interleaved(fns, args.runs)}
    if args.split:
        out["split"] = _split(big, args.runs)
    if args.profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.runs):
            identify(big)
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
        out["profile"] = text.getvalue()
    print(json.dumps(out))


# -- the driver --------------------------------------------------------------------------------------
def _run_side(src: Path, files: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", "--small", str(files["small"]), "--big", str(files["big"])]
    cmd += ["--runs", str(args.runs)] + ["--split"] * args.split + ["--profile"] * args.profile
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--big-mib", type=int, default=2048)
    ap.add_argument("--small-mib", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100, help="timed calls of each function per process")
    ap.add_argument("--before", type=Path, help="a src/ folder holding the code to compare against")
    ap.add_argument("--allocate", action="store_true", help="give the 2 GiB file real blocks (not sparse)")
    ap.add_argument("--split", action="store_true", help="also time identify's stages")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile summary per side")
    ap.add_argument("--keep", action="store_true", help="keep the files in " + str(BENCH_DIR))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--small", help=argparse.SUPPRESS)
    ap.add_argument("--big", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    sides = {"after": Path(__file__).resolve().parents[1] / "src"}
    if args.before:
        sides = {"before": args.before.resolve(), **sides}
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    keys = sdxl_keys()
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        files: dict[str, Path] = {}
        sizes: dict[str, tuple[int, int, int]] = {}
        for label, mib in (("small", args.small_mib), ("big", args.big_mib)):
            path = BENCH_DIR / f"sdxl-{label}.safetensors"
            # The header (~0.3 MB of JSON) counts towards the file size: the data gets the rest.
            hlen = write_checkpoint(path, fit(keys, max(mib * 1024 * 1024 - 340_000, 0)), allocate=args.allocate)
            files[label] = path
            sizes[label] = (path.stat().st_size, path.stat().st_blocks * 512, hlen)
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            rounds.append({side: _run_side(sides[side], files, args) for side in order})
    finally:
        if not args.keep:
            shutil.rmtree(BENCH_DIR, ignore_errors=True)
    _report(args, sides, sizes, len(keys), rounds)


def _report(
    args: argparse.Namespace,
    sides: dict[str, Path],
    sizes: dict[str, tuple[int, int, int]],
    n_keys: int,
    rounds: list[dict[str, dict[str, Any]]],
) -> None:
    print(f"## identify() of an SDXL checkpoint ({n_keys} keys): {args.rounds} rounds x {args.runs} runs\n")
    print(f"{os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f} at the end. ", end="")
    print("Figures: median over rounds of each process's median (min-max over rounds).\n")
    for label, (size, blocks, hlen) in sizes.items():
        print(f"- {label}: {size:,} bytes, {blocks:,} allocated, header {hlen:,} bytes")
    measures = list(rounds[0][next(iter(sides))]["times"])
    print("\n| ms (wall) | " + " | ".join(sides) + " |")
    print("|---|" + "---:|" * len(sides))
    for m in measures:
        cells = [_summary([rd[s]["times"][m]["wall"] for rd in rounds]) for s in sides]
        print(f"| {m} | " + " | ".join(cells) + " |")
    print("\n| ratio (inside one process, then over rounds) | " + " | ".join(sides) + " |")
    print("|---|" + "---:|" * len(sides))

    def ratio(a: str, b: str, side: str) -> list[float]:
        return [rd[side]["times"][a]["wall"] / rd[side]["times"][b]["wall"] for rd in rounds]

    rows = [("identify 2 GiB / json.loads of its header", "identify 2 GiB", "json.loads of the header")]
    if "safe_open + keys()" in measures:
        rows.append(("identify 2 GiB / safe_open + keys()", "identify 2 GiB", "safe_open + keys()"))
    rows.append(("identify 2 GiB / identify 2 MiB (size independence, ~1)", "identify 2 GiB", "identify 2 MiB"))
    for title, a, b in rows:
        print(f"| {title} | " + " | ".join(_summary(ratio(a, b, s)) for s in sides) + " |")
    if "before" in sides:
        print("\n| after / before, same round (paired) | ratio |")
        print("|---|---:|")
        for m in ("identify 2 GiB", "identify 2 MiB"):
            paired = [rd["after"]["times"][m]["wall"] / rd["before"]["times"][m]["wall"] for rd in rounds]
            print(f"| {m} | {_summary(paired)} |")
        # Normalised by the peer measured in the same process: removes most of the load drift.
        norm = [
            (rd["after"]["times"]["identify 2 GiB"]["wall"] / rd["after"]["times"]["json.loads of the header"]["wall"])
            / (
                rd["before"]["times"]["identify 2 GiB"]["wall"]
                / rd["before"]["times"]["json.loads of the header"]["wall"]
            )
            for rd in rounds
        ]
        print(f"| identify 2 GiB, each side over its own json.loads | {_summary(norm)} |")
    if args.split:
        print("\n| stage (2 GiB file), ms wall | " + " | ".join(sides) + " |")
        print("|---|" + "---:|" * len(sides))
        for stage in rounds[0][next(iter(sides))]["split"]:
            cells = [_summary([rd[s]["split"][stage]["wall"] for rd in rounds]) for s in sides]
            print(f"| {stage} | " + " | ".join(cells) + " |")
    if args.profile:
        for side in sides:
            print(f"\n### cProfile, {side} ({args.runs} calls on the 2 GiB file, last round)\n")
            print("```\n" + rounds[-1][side]["profile"].strip() + "\n```")


if __name__ == "__main__":
    main()
