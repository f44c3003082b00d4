"""Load-service benchmarks (issues 7 and 18). Run: python benchmarks/bench_load.py [--gib 1] [--rounds 5]

1. Cast while loading (issue 18): a 1 GiB float16 safetensors file loaded with ``precision=auto`` on
   the CPU (float32), as a state dict (LoRA loader) and as a model (a wide single-file VAE), against
   the peer ``safetensors.torch.load_file(path)`` + ``{k: v.to(float32)}`` and a ``cat``-like raw
   read of the same file. ``--before-src DIR`` adds the same loads run by another source tree (the
   archived HEAD: ``git archive HEAD src | tar -x -C DIR/..``). Every measurement is a fresh process,
   the page cache is warm (each file is read once first), the rounds are interleaved (the order
   rotates each round) and ratios are taken within a round: the median and min-max over the rounds.
2. Warm-page-cache read of a state dict as stored (``load_safetensors``) against reading the same file
   with large buffers into fresh memory (issue 7, target >= 0.7), same method.
3. Cache-hit latency of ``ModelLoadService.load_model`` for a cached model (target p50/p99 < 100 us).
4. 100 switches among three models that fit the RAM budget: disk bytes read after the first round
   (target 0), from /proc/self/io (rchar, read_bytes) and an audit-hook count of file opens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path("/tmp/modeldepot-bench-load")
CHUNK = 64 * 1024 * 1024
CAT_BUFFER = 1024 * 1024


# ----- files ---------------------------------------------------------------------------------------
def make_state_dict_file(path: Path, total: int, n_tensors: int = 64) -> None:
    import torch
    from safetensors.torch import save_file

    per = total // n_tensors // 2  # float16 elements per tensor
    g = torch.Generator().manual_seed(0)
    save_file({f"layer.{i}.weight": torch.randn(per, generator=g).half() for i in range(n_tensors)}, str(path))


def make_vae_file(path: Path, total: int) -> None:
    """A single-file (LDM layout) float16 VAE of about ``total`` bytes: SD's VAE with wider blocks."""
    import diffusers
    import torch
    from accelerate import init_empty_weights
    from safetensors.torch import save_file

    from modeldepot.testing.factories.torch_layouts import vae_to_ldm

    width = 32 * max(1, round(10 * (total / 1.045e9) ** 0.5))  # (320, 640, 1280, 1280): 1.045 GB in fp16
    config = {
        "block_out_channels": [width, 2 * width, 4 * width, 4 * width],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
    }
    with init_empty_weights():
        vae: Any = diffusers.AutoencoderKL(**config)
    g = torch.Generator().manual_seed(1)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.02).half() for k, v in vae.state_dict().items()}
    save_file({k: v.contiguous() for k, v in vae_to_ldm(sd, config).items()}, str(path))


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(CHUNK):
            pass


# ----- one measurement per fresh process -----------------------------------------------------------
def _cat(path: Path) -> Any:
    buf = bytearray(CAT_BUFFER)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return None


def _read_fresh(path: Path) -> Any:
    import numpy as np

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
    return buf


def _peer(path: Path) -> Any:
    import torch
    from safetensors.torch import load_file

    return {k: v.to(torch.float32) for k, v in load_file(str(path)).items()}


def _service_load(path: Path, kind: str) -> Callable[[], Any]:
    from modeldepot.config import DepotConfig
    from modeldepot.configs import parse_config
    from modeldepot.load import ModelCache, ModelLoadService

    home = Path(tempfile.mkdtemp(dir=ROOT))
    svc = ModelLoadService(DepotConfig(home=home, device="cpu"), cache=ModelCache(ram_budget_bytes=8 << 30))
    fields = {"lora": {"type": "lora", "format": "lycoris"}, "vae": {"type": "vae", "format": "checkpoint"}}[kind]
    cfg = parse_config({"name": kind, "base": "sd-1", "path": str(path), **fields})
    assert svc.precision == "float32", svc.precision  # precision auto on a CPU
    # A running app has imported its loaders (0.5 s the first time: modeldepot.storage pulls in
    # sqlalchemy) and diffusers' lazy modules already: that is not load throughput.
    svc.registry.get_implementation(cfg)
    if kind == "vae":
        import accelerate  # noqa: F401
        import diffusers
        from diffusers.loaders import single_file_utils  # noqa: F401

        diffusers.AutoencoderKL  # noqa: B018 - resolves the lazy import
    return lambda: svc.load_model(cfg).model


def _fresh(path: Path) -> Any:
    """The floor of any loader that returns float32: write the result's bytes into fresh memory."""
    import torch

    return torch.empty(path.stat().st_size * 2, dtype=torch.uint8).fill_(1)


def _stored(path: Path) -> Callable[[], Any]:
    from modeldepot.load.loaders._common import load_safetensors  # imported before the clock starts

    return lambda: load_safetensors(path)


def child(mode: str, path: Path) -> None:
    import torch

    # Every mode alike: torch imported and its first parallel kernel run (thread pool start-up, about
    # 0.2 s once per process) before the clock starts, as in a running app.
    torch.ones(1 << 16, dtype=torch.float16).to(torch.float32)

    fns: dict[str, Callable[[], Any]] = {
        "raw": lambda: _cat(path),
        "read_fresh": lambda: _read_fresh(path),
        "peer": lambda: _peer(path),
        "fresh": lambda: _fresh(path),
    }
    if mode in ("ours_lora", "ours_vae"):
        fns[mode] = _service_load(path, mode.removeprefix("ours_"))
    if mode == "stored":
        fns[mode] = _stored(path)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = fns[mode]()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    if isinstance(result, dict):  # the float32 result really is there
        assert all(str(v.dtype) == "torch.float32" for v in result.values()) or mode == "stored"
    elif result is not None and hasattr(result, "dtype") and mode == "ours_vae":
        assert str(result.dtype) == "torch.float32"
    print(json.dumps({"wall": wall, "cpu": user + system, "user": user, "sys": system}))


def run_child(mode: str, path: Path, src: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, __file__, "--child", mode, str(path)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def interleaved(jobs: dict[str, tuple[str, Path, str | None]], rounds: int) -> dict[str, list[dict[str, float]]]:
    """``{label: [per-round result]}``; each round runs every job once, the starting job rotating."""
    labels = list(jobs)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in labels}
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            mode, path, src = jobs[label]
            results[label].append(run_child(mode, path, src))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return results


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def ratio(results: dict[str, list[dict[str, float]]], num: str, den: str, key: str = "wall") -> str:
    """median (min-max) over rounds of results[num] / results[den] (time ratios: den is faster when > 1)."""
    rs = [a[key] / b[key] for a, b in zip(results[num], results[den], strict=True)]
    return f"**{statistics.median(rs):.2f}** ({min(rs):.2f}-{max(rs):.2f})"


def bench_cast(gib: float, rounds: int, before: str | None) -> list[str]:
    sd_path, vae_path = ROOT / "f16-state.safetensors", ROOT / "f16-vae.safetensors"
    make_state_dict_file(sd_path, int(gib * 1024**3))
    make_vae_file(vae_path, int(gib * 1024**3))
    for p in (sd_path, vae_path):
        warm(p)
    jobs: dict[str, tuple[str, Path, str | None]] = {
        "raw": ("raw", sd_path, None),
        "fresh": ("fresh", sd_path, None),
        "peer": ("peer", sd_path, None),
        "ours": ("ours_lora", sd_path, None),
        "peer_vae": ("peer", vae_path, None),
        "ours_vae": ("ours_vae", vae_path, None),
    }
    if before:
        jobs |= {"before": ("ours_lora", sd_path, before), "before_vae": ("ours_vae", vae_path, before)}
    res = interleaved(jobs, rounds)
    sizes = {"sd": sd_path.stat().st_size, "vae": vae_path.stat().st_size}
    gbs = lambda label, n: f"{n / statistics.median(r['wall'] for r in res[label]) / 1e9:.2f} GB/s"  # noqa: E731
    rows = [
        f"State dict: {sizes['sd'] / 2**30:.2f} GiB, 64 float16 tensors; model: a single-file VAE (LDM layout) "
        f"of {sizes['vae'] / 2**30:.2f} GiB float16. {rounds} interleaved rounds, fresh process each, warm page cache.",
        "",
        "| measurement | seconds, median (min-max) | throughput | peer time / ours (>= 0.9 = goal) |",
        "|---|---|---|---|",
        f"| raw read, `cat`-like (1 MiB buffer reused) | {_med([r['wall'] for r in res['raw']])} | "
        f"{gbs('raw', sizes['sd'])} | - |",
        f"| write 2x the file's bytes into fresh memory (the float32 result's floor) | "
        f"{_med([r['wall'] for r in res['fresh']])} | - | - |",
        f"| peer: `load_file` + `.to(float32)`, state dict | {_med([r['wall'] for r in res['peer']])} | "
        f"{gbs('peer', sizes['sd'])} | 1.00 |",
        f"| ours: `load_model` LoRA, precision auto (float32) | {_med([r['wall'] for r in res['ours']])} | "
        f"{gbs('ours', sizes['sd'])} | {ratio(res, 'peer', 'ours')} |",
    ]
    if before:
        rows.append(
            f"| before (HEAD): same `load_model` | {_med([r['wall'] for r in res['before']])} | "
            f"{gbs('before', sizes['sd'])} | {ratio(res, 'peer', 'before')} |"
        )
    rows += [
        f"| peer: `load_file` + `.to(float32)`, VAE file | {_med([r['wall'] for r in res['peer_vae']])} | "
        f"{gbs('peer_vae', sizes['vae'])} | 1.00 |",
        f"| ours: `load_model` single-file VAE -> AutoencoderKL float32 | "
        f"{_med([r['wall'] for r in res['ours_vae']])} | {gbs('ours_vae', sizes['vae'])} | "
        f"{ratio(res, 'peer_vae', 'ours_vae')} |",
    ]
    if before:
        rows.append(
            f"| before (HEAD): same VAE `load_model` | {_med([r['wall'] for r in res['before_vae']])} | "
            f"{gbs('before_vae', sizes['vae'])} | {ratio(res, 'peer_vae', 'before_vae')} |"
        )
    rows += [
        "",
        "| ratio, per round | median (min-max) |",
        "|---|---|",
        f"| ours / raw read (time) | {ratio(res, 'ours', 'raw')} |",
        f"| peer / raw read (time) | {ratio(res, 'peer', 'raw')} |",
        f"| peer CPU time / ours CPU time (user+sys), state dict | {ratio(res, 'peer', 'ours', 'cpu')} |",
        f"| fresh-memory floor / ours (time) | {ratio(res, 'fresh', 'ours')} |",
        "",
        "| CPU seconds, median | user | sys |",
        "|---|---|---|",
        *(
            f"| {label} | {statistics.median(r['user'] for r in res[label]):.2f} | "
            f"{statistics.median(r['sys'] for r in res[label]):.2f} |"
            for label in res
        ),
    ]
    if before:
        rows += [
            f"| before / after, state dict (time) | {ratio(res, 'before', 'ours')} |",
            f"| before / after, VAE model (time) | {ratio(res, 'before_vae', 'ours_vae')} |",
        ]
    for p in (sd_path, vae_path):
        p.unlink()
    return rows


def bench_stored(gib: float, rounds: int, before: str | None) -> list[str]:
    import torch
    from safetensors.torch import save_file

    path = ROOT / "stored.safetensors"
    per = int(gib * 1024**3) // 64 // 4
    g = torch.Generator().manual_seed(2)
    save_file({f"layer.{i}.weight": torch.randn(per, generator=g) for i in range(64)}, str(path))
    warm(path)
    jobs: dict[str, tuple[str, Path, str | None]] = {
        "read": ("read_fresh", path, None),
        "stored": ("stored", path, None),
    }
    if before:
        jobs["before"] = ("stored", path, before)
    res = interleaved(jobs, rounds)
    path.unlink()
    extra = [f"| before (HEAD): same | {_med([r['wall'] for r in res['before']])} | {ratio(res, 'read', 'before')} |"]
    return [
        "| measurement (float32 file read as stored) | seconds, median (min-max) | read time / ours |",
        "|---|---|---|",
        f"| read same file, 64 MiB buffers into fresh memory | {_med([r['wall'] for r in res['read']])} | 1.00 |",
        f"| `load_safetensors` -> state dict | {_med([r['wall'] for r in res['stored']])} | "
        f"{ratio(res, 'read', 'stored')} (target >= 0.7) |",
        *(extra if before else []),
    ]


# ----- in-process: cache hits and switching ------------------------------------------------------
def _service(home: Path, ram_bytes: int) -> Any:
    from modeldepot.config import DepotConfig
    from modeldepot.load import ModelCache, ModelLoadService

    return ModelLoadService(DepotConfig(home=home, device="cpu"), cache=ModelCache(ram_budget_bytes=ram_bytes))


def _cfg(path: Path, name: str) -> Any:
    from modeldepot.configs import parse_config

    return parse_config({"name": name, "type": "lora", "format": "lycoris", "base": "sd-1", "path": str(path)})


def bench_hits(hits: int) -> list[tuple[str, str, str]]:
    import torch
    from safetensors.torch import save_file

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
    import torch
    from safetensors.torch import save_file

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
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before-src", help="another source tree (e.g. the archived HEAD's src) to compare with")
    ap.add_argument("--only-cast", action="store_true", help="run section 1 only")
    ap.add_argument("--hits", type=int, default=20000)
    ap.add_argument("--switch-mib", type=int, default=64)
    ap.add_argument("--switches", type=int, default=100)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    import torch

    ROOT.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(ROOT)
    lines: list[str] = []
    try:
        lines += bench_cast(args.gib, args.rounds, args.before_src)
        if not args.only_cast:
            lines += ["", *bench_stored(args.gib, args.rounds, args.before_src), ""]
            rows = bench_hits(args.hits) + bench_switching(args.switch_mib, args.switches)
            lines += ["| measurement | result | ratio / target |", "|---|---|---|"]
            lines += [f"| {name} | {result} | {r} |" for name, result, r in rows]
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
    caps = torch.backends.cpu.get_cpu_capability()
    print(
        f"machine: {os.cpu_count()} CPUs (torch CPU capability {caps}), load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
