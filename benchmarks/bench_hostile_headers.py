"""Hostile-header benchmark: identify() on safetensors headers at the 100 MB header limit.

    python benchmarks/bench_hostile_headers.py [--rounds 3] [--before-src PATH]

Issue 13: a valid header at the 100 MB limit took 9 s and 720 MB to identify. This writes two
files whose headers are just under the limit and whose data regions are tiny (every tensor is a
zero-length ``[0]`` F16 slice, which the format allows):

- ``many``: 720,000 tensors (refused by the tensor-count cap);
- ``wide``: 99,990 tensors (under the cap) with ~940-byte names.

Names are padded so both headers are just under 100 MB.

Each measurement runs in a fresh subprocess (wall time and peak RSS from ``getrusage``), rounds
interleaved. Baselines in the same round: ``json.loads`` of the header bytes alone (the least any
parser must pay) and the reference ``safetensors`` library (``safe_open`` + ``keys()``).
``--before-src`` adds the same measurement against another checkout's ``src`` (e.g. a worktree
of the commit before the fix), for a before/after in one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path("/tmp/modeldepot-bench-hostile")
LIMIT = 100_000_000

OURS = """
import resource, sys, time
from modeldepot.errors import ModelDepotError
from modeldepot.identify import identify
t = time.perf_counter()
try:
    identify(sys.argv[1]); outcome = "identified"
except ModelDepotError as exc:
    outcome = "refused"
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, outcome)
"""
JSON_ONLY = """
import json, resource, struct, sys, time
t = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(header))
"""
SAFETENSORS = """
import resource, sys, time
from safetensors import safe_open
t = time.perf_counter()
try:
    with safe_open(sys.argv[1], "np") as f:
        outcome = len(list(f.keys()))
except Exception as exc:
    outcome = type(exc).__name__
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, outcome)
"""


def write_header_file(path: Path, count: int) -> int:
    """A safetensors file with ``count`` zero-length tensors, names padded to fill the header
    to just under the 100 MB limit."""
    per_entry = len('"000000000000":{"dtype":"F16","shape":[0],"data_offsets":[0,0]},')
    pad = "x" * max(0, (LIMIT - 1000) // count - per_entry)
    entries = [f'"{pad}{i:012d}":{{"dtype":"F16","shape":[0],"data_offsets":[0,0]}}' for i in range(count)]
    header = ("{" + ",".join(entries) + "}").encode()
    assert len(header) <= LIMIT, len(header)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
    return len(header)


def run(script: str, path: Path, src: str | None = None) -> tuple[float, float, str]:
    env = None
    if src is not None:
        import os

        env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return float(out[0]), int(out[1]) / 1024, out[2]  # seconds, MiB, outcome


def fmt(values: list[float], unit: str) -> str:
    return f"{statistics.median(values):.2f} {unit} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-src", default=None, help="another checkout's src/ to time as 'before'")
    args = parser.parse_args()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    files = {"many": 720_000, "wide": 99_990}
    paths = {}
    for name, count in files.items():
        paths[name] = BENCH_DIR / f"{name}.safetensors"
        size = write_header_file(paths[name], count)
        print(f"{name}: {count} tensors, header {size / 1e6:.1f} MB")

    runners = {"ours": (OURS, None), "json.loads": (JSON_ONLY, None), "safetensors": (SAFETENSORS, None)}
    if args.before_src:
        runners["before"] = (OURS, args.before_src)
    results: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    for _ in range(args.rounds):
        for name, path in paths.items():
            for label, (script, src) in runners.items():
                results.setdefault((name, label), []).append(run(script, path, src))

    print("\n| header | measure | time, median (min-max) | peak RSS | outcome | time / json.loads |")
    print("|---|---|---|---|---|---|")
    for name in paths:
        base = statistics.median(r[0] for r in results[(name, "json.loads")])
        for label in runners:
            rows = results[(name, label)]
            secs, rss = [r[0] for r in rows], [r[1] for r in rows]
            ratio = statistics.median(secs) / base
            print(f"| {name} | {label} | {fmt(secs, 's')} | {fmt(rss, 'MiB')} | {rows[0][2]} | {ratio:.2f} |")
    json.dump({f"{k[0]}/{k[1]}": v for k, v in results.items()}, (BENCH_DIR / "results.json").open("w"))


if __name__ == "__main__":
    main()
