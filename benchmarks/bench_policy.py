"""What the connection policy costs a single-stream download: before/after/curl in the same rounds.

    python benchmarks/bench_policy.py [--size-mib 1024] [--rounds 9] [--before 4da5770] [--dest /dev/shm]

"before" is the engine at ``--before`` (the last commit without the policy), checked out in a git
worktree; "after" is this checkout, downloading through a policy that resolves the host once,
checks it (trusted: the hub is a configured mirror on loopback) and pins the connection to the
checked address. Each download runs in a fresh process (timed inside it, from submit to done; no
fsync, like curl) into ``--dest`` (RAM by default: disk writeback on this shared VM would swamp a
difference the size of one DNS lookup); one untimed warm-up run each, then rounds interleaved
with a rotating order so machine load hits all alike.
The per-hop price of the full private-address check (what a public host pays) is measured
separately in-process, since loopback cannot be a public host.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_download import RemoteHub, clean, make_file

from modeldepot.download import ConnectPolicy

MiB = 1024 * 1024
ROOT = Path("/tmp/modeldepot-bench-policy")
REPO = Path(__file__).resolve().parent.parent

_CHILD = """
import inspect, sys, time
from modeldepot.download import DownloadLimits, DownloadQueueService
limits = DownloadLimits(max_connections=1, multi_connection_threshold=1 << 50, fsync=False)
kw = {}
if "policy" in inspect.signature(DownloadQueueService.__init__).parameters:
    from modeldepot.download import ConnectPolicy
    kw["policy"] = ConnectPolicy.of([sys.argv[1]])  # the hub as a trusted mirror
q = DownloadQueueService(1, limits=limits, **kw)
q.start()
t = time.perf_counter()
job = q.wait_for_job(q.download(sys.argv[1], sys.argv[2]))
elapsed = time.perf_counter() - t
q.stop()
assert job.complete, job.error
print(elapsed)
"""


def run_engine(src: Path, url: str, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", _CHILD, url, str(out)], env=env, check=True, capture_output=True)
    return float(done.stdout.decode().strip().splitlines()[-1])


def run_curl(url: str, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["curl", "-s", "-o", str(out), url], check=True)
    return time.perf_counter() - t


def worktree(rev: str) -> Path:
    path = ROOT / f"before-{rev}"
    if not (path / "src").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], check=True)
    return path / "src"


def check_cost(calls: int = 20000) -> tuple[float, float]:
    """Median µs of one full check of a public literal address, and of a trusted host (no check)."""
    strict, trusted = ConnectPolicy(), ConnectPolicy.of(["93.184.216.34"])
    out = []
    for policy in (strict, trusted):
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(calls):
                policy.resolve("93.184.216.34", 443, "https://93.184.216.34/x")
            samples.append((time.perf_counter() - t) / calls * 1e6)
        out.append(statistics.median(samples))
    return out[0], out[1]


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} s ({min(xs):.3f}-{max(xs):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--dest", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else ROOT)
    ap.add_argument("--before", default="4da5770")
    args = ap.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    before_src = worktree(args.before)
    after_src = REPO / "src"
    size = args.size_mib * MiB
    src = ROOT / "file.bin"
    make_file(src, size, seed=3)
    hub = RemoteHub()
    try:
        url = hub.call("add_file", "files/model.bin", src)
        out = args.dest / "modeldepot-bench-policy-out.bin"
        runners = {
            "before": lambda: run_engine(before_src, url, out),
            "after": lambda: run_engine(after_src, url, out),
            "curl": lambda: run_curl(url, out),
        }
        names = list(runners)
        times: dict[str, list[float]] = {n: [] for n in names}
        ratios: list[float] = []
        for name in names:  # warm-up: page cache, .pyc files of the worktree
            clean(out)
            runners[name]()
        for r in range(args.rounds):
            order = names[r % 3 :] + names[: r % 3]
            for name in order:
                clean(out)
                times[name].append(runners[name]())
            ratios.append(times["before"][-1] / times["after"][-1])
            print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in names), file=sys.stderr)
        clean(out)
    finally:
        hub.close()
        src.unlink(missing_ok=True)
    strict_us, trusted_us = check_cost()
    gib = size / 2**30
    head = "before ÷ after time, per round (< 0.98: costs > 2 %)"
    print(f"| {args.size_mib} MiB, one stream, no fsync | median (min-max) | GiB/s | {head} |")
    print("|---|---|---|---|")
    for n in names:
        print(f"| {n} | {fmt(times[n])} | {gib / statistics.median(times[n]):.2f} |", end="")
        print(" - |" if n != "after" else f" {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}) |")
    vs_curl = statistics.median(times["curl"]) / statistics.median(times["after"])
    print(f"\nafter vs curl (medians): {vs_curl:.2f}x")
    print(f"policy.resolve of a public literal, full check: {strict_us:.1f} µs; trusted: {trusted_us:.1f} µs")


if __name__ == "__main__":
    main()
