"""Load-service benchmarks (issue 7). Run: python benchmarks/bench_load.py [--gib 2] [--hits 20000]

1. Warm-page-cache load of a safetensors state dict (``modeldepot.load.loaders._common.load_safetensors``)
   against reading the same file with large buffers into fresh memory, in the same run (target >= 0.7).
   ``safetensors.torch.load_file`` is shown for reference.
2. Cache-hit latency of ``ModelLoadService.load_model`` for a cached model (target p50/p99 < 100 us).
3. 100 switches among three models that fit the RAM budget: disk bytes read after the first round
   (target 0), from /proc/self/io (rchar, read_bytes) and an audit-hook count of file opens.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from modeldepot.config import DepotConfig
from modeldepot.configs import parse_config
from modeldepot.load import ModelCache, ModelLoadService
from modeldepot.load.loaders._common import load_safetensors

ROOT = Path("/tmp/modeldepot-bench-load")
CHUNK = 64 * 1024 * 1024


def _make_file(path: Path, total: int, n_tensors: int = 64) -> None:
    per = total // n_tensors // 2  # float16 elements per tensor
    g = torch.Generator().manual_seed(0)
    save_file({f"layer.{i}.weight": torch.randn(per, generator=g).half() for i in range(n_tensors)}, str(path))


def _read_large_buffers(path: Path) -> int:
    size = path.stat().st_size
    buf = np.empty(size, dtype=np.uint8)  # fresh memory, like any loader needs
    view = memoryview(buf)
    pos = 0
    with open(path, "rb", buffering=0) as f:
        while pos < size:
            n = f.readinto(view[pos : pos + CHUNK])
            if not n:
                break
            pos += n
    return pos


def _touch(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for t in sd.values():
        t.view(-1).view(torch.uint8)[::4096].sum()  # one byte per page: forces the page-in
    return sd


def _best(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        gc.collect()
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        del result
    return min(times)


def bench_throughput(gib: float, runs: int) -> list[tuple[str, str, str]]:
    path = ROOT / "state.safetensors"
    _make_file(path, int(gib * 1024**3))
    size = path.stat().st_size
    _read_large_buffers(path)  # warm the page cache
    # Interleaved, best of ``runs``: the machine is shared, so the minimum is the honest figure.
    fns = {
        "raw": lambda: _read_large_buffers(path),
        "ours": lambda: load_safetensors(path),
        "ref": lambda: load_file(str(path)),
        "ref_touch": lambda: _touch(load_file(str(path))),
    }
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(runs):
        for name, fn in fns.items():
            best[name] = min(best[name], _best(fn, 1))
    raw, ours, ref, ref_touch = best["raw"], best["ours"], best["ref"], best["ref_touch"]
    gbs = lambda s: f"{size / s / 1e9:.2f} GB/s"  # noqa: E731
    path.unlink()
    return [
        ("read same file, 64 MiB buffers (baseline)", f"{raw:.3f} s ({gbs(raw)})", "1.00"),
        ("modeldepot load_safetensors -> state dict", f"{ours:.3f} s ({gbs(ours)})", f"{raw / ours:.2f}"),
        ("safetensors.torch.load_file, lazy mmap (bytes not read yet)", f"{ref:.3f} s", "-"),
        (
            "safetensors.torch.load_file + touch every page",
            f"{ref_touch:.3f} s ({gbs(ref_touch)})",
            f"{raw / ref_touch:.2f}",
        ),
    ]


def _service(home: Path, ram_bytes: int) -> ModelLoadService:
    return ModelLoadService(DepotConfig(home=home, device="cpu"), cache=ModelCache(ram_budget_bytes=ram_bytes))


def _cfg(path: Path, name: str):  # type: ignore[no-untyped-def]
    return parse_config({"name": name, "type": "lora", "format": "lycoris", "base": "sd-1", "path": str(path)})


def bench_hits(hits: int) -> list[tuple[str, str, str]]:
    path = ROOT / "hit.safetensors"
    save_file({"a": torch.zeros(1024), "b.alpha": torch.tensor(1.0)}, str(path))
    svc = _service(ROOT / "home-hit", 1 << 30)
    cfg = _cfg(path, "hit")
    svc.load_model(cfg)
    samples = []
    perf = time.perf_counter_ns
    for _ in range(hits):
        t = perf()
        svc.load_model(cfg)
        samples.append(perf() - t)
    lock_samples = []
    loaded = svc.load_model(cfg)
    for _ in range(hits):
        t = perf()
        with loaded:
            pass
        lock_samples.append(perf() - t)
    q = lambda xs, p: sorted(xs)[int(len(xs) * p)] / 1000  # noqa: E731
    hit = f"p50 {q(samples, 0.5):.1f} us, p99 {q(samples, 0.99):.1f} us"
    lock = f"p50 {q(lock_samples, 0.5):.1f} us, p99 {q(lock_samples, 0.99):.1f} us"
    return [
        ("load_model() cache hit", hit, f"{100 / q(samples, 0.99):.0f}x under 100 us (p99)"),
        ("with loaded: (lock + unlock, CPU device)", lock, "-"),
    ]


def _io() -> dict[str, int]:
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v)
    return out


def bench_switching(mib: int, switches: int) -> list[tuple[str, str, str]]:
    opened: list[str] = []
    watch = str(ROOT)
    sys.addaudithook(
        lambda ev, args: opened.append(str(args[0])) if ev == "open" and str(args[0]).startswith(watch) else None
    )
    cfgs = []
    for i in range(3):
        path = ROOT / f"switch{i}.safetensors"
        save_file({f"w{j}": torch.full((mib * 1024 * 1024 // 4 // 4,), float(i)) for j in range(4)}, str(path))
        cfgs.append(_cfg(path, f"m{i}"))
    svc = _service(ROOT / "home-switch", 4 * mib * 1024 * 1024)  # all three fit
    t = time.perf_counter()
    for c in cfgs:
        with svc.load_model(c):
            pass
    first = time.perf_counter() - t
    a, b = _io(), _io()
    overhead = b["rchar"] - a["rchar"]  # reading /proc/self/io itself
    before, n_open = _io(), len(opened)
    t = time.perf_counter()
    for s in range(switches):
        with svc.load_model(cfgs[s % 3]) as sd:
            assert float(sd["w0"][0]) == s % 3
    elapsed = time.perf_counter() - t
    after = _io()
    rchar, read_bytes = after["rchar"] - before["rchar"] - overhead, after["read_bytes"] - before["read_bytes"]
    return [
        (f"first round: 3 models x {mib} MiB from disk", f"{first:.3f} s", "-"),
        (f"{switches} switches after the first round", f"{elapsed * 1000:.2f} ms total", "-"),
        ("  bytes read (rchar / read_bytes)", f"{rchar} / {read_bytes}", "target 0"),
        ("  model files opened", f"{len(opened) - n_open}", "target 0"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hits", type=int, default=20000)
    ap.add_argument("--switch-mib", type=int, default=64)
    ap.add_argument("--switches", type=int, default=100)
    args = ap.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(ROOT)
    try:
        rows = bench_throughput(args.gib, args.runs)
        rows += bench_hits(args.hits)
        rows += bench_switching(args.switch_mib, args.switches)
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, python {sys.version.split()[0]}")
    print(f"file: {args.gib} GiB safetensors (64 float16 tensors), warm page cache, best of {args.runs}\n")
    print("| measurement | result | ratio / target |")
    print("|---|---|---|")
    for name, result, ratio in rows:
        print(f"| {name} | {result} | {ratio} |")


if __name__ == "__main__":
    main()
