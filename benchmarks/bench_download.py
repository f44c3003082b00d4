"""Download benchmark: modeldepot vs curl and huggingface_hub against one fakehub (same run).

    python benchmarks/bench_download.py [--size-mib 1024] [--repo-mib 2048] [--kills 10]

The fakehub runs in a child process (so client and server do not share a GIL); every client
downloads the same bytes from it. Figures are printed as a markdown table; temp files live under
/tmp/modeldepot-bench-download/ and are deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from modeldepot.download import ConnectPolicy, DownloadLimits, DownloadQueueService, RemoteFile

MiB = 1024 * 1024
ROOT = Path("/tmp/modeldepot-bench-download")
#: The hub listens on loopback, which the default policy refuses.
LOOPBACK = ConnectPolicy(allow_private=True)


# -- fakehub in a child process -----------------------------------------------------------------
def _hub_main(conn: Connection) -> None:
    from modeldepot.testing.fakehub import FakeHub

    hub = FakeHub().start()
    conn.send(hub.url)
    while True:
        cmd, args, kwargs = conn.recv()
        if cmd == "quit":
            hub.close()
            conn.send(None)
            return
        if cmd == "bytes":
            conn.send(hub.stats.bytes_sent_total)
            continue
        if cmd == "reset":
            hub.stats.reset()
            conn.send(None)
            continue
        conn.send(getattr(hub, cmd)(*args, **kwargs))


class RemoteHub:
    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_hub_main, args=(child,), daemon=True)
        self._proc.start()
        self.url: str = self._conn.recv()

    def call(self, cmd: str, *args: Any, **kwargs: Any) -> Any:
        self._conn.send((cmd, args, kwargs))
        return self._conn.recv()

    def close(self) -> None:
        self.call("quit")
        self._proc.join(10)


# -- helpers --------------------------------------------------------------------------------------
def make_file(path: Path, size: int, seed: int) -> str:
    """Random content written in 64 MiB blocks; returns its sha256."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(64 * MiB, left))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 * MiB):
            h.update(block)
    return h.hexdigest()


def clean(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
        for suffix in (".part", ".part.json"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def timed_md(url: str, dest: Path, limits: DownloadLimits, sha: str | None = None) -> tuple[float, int]:
    q = DownloadQueueService(1, limits=limits, policy=LOOPBACK)
    q.start()
    t = time.perf_counter()
    job = q.download(url, dest, expected_sha256=sha)
    q.wait_for_job(job)
    elapsed = time.perf_counter() - t
    q.stop()
    assert job.complete, job.error
    return elapsed, job.connections


def best(times: list[float]) -> float:
    return min(times)


def gibps(size: int, seconds: float) -> str:
    return f"{size / seconds / 2**30:.2f} GiB/s"


# -- the four measurements --------------------------------------------------------------------------
def bench_single_file(hub: RemoteHub, size: int, rounds: int) -> list[str]:
    src = ROOT / "file.bin"
    make_file(src, size, seed=1)
    url = hub.call("add_file", "files/model.bin", src)
    out = ROOT / "out.bin"
    variants = {
        "modeldepot, 1 stream": DownloadLimits(max_connections=1),
        "modeldepot, 1 stream, no fsync": DownloadLimits(max_connections=1, fsync=False),
        "modeldepot, default (adaptive, up to 8 connections)": DownloadLimits(),
        "modeldepot, 8 connections forced": DownloadLimits(fast_stream_bps=None),
        "modeldepot, 8 connections forced, no fsync": DownloadLimits(fast_stream_bps=None, fsync=False),
    }
    times: dict[str, list[float]] = {"curl": [], **{k: [] for k in variants}}
    used: dict[str, int] = {}
    for _ in range(rounds):  # interleaved, so load changes on the machine hit every client alike
        clean(out)
        t = time.perf_counter()
        subprocess.run(["curl", "-s", "-o", str(out), url], check=True)
        times["curl"].append(time.perf_counter() - t)
        for name, lim in variants.items():
            clean(out)
            elapsed, used[name] = timed_md(url, out, lim)
            times[name].append(elapsed)
    clean(out)
    src.unlink()
    c = best(times["curl"])
    rows = [f"| 1 file, {size // MiB} MiB | curl -s -o | {c:.2f} s | {gibps(size, c)} | 1.00x |"]
    for name in variants:
        t = best(times[name])
        rows.append(f"| | {name} [used {used[name]}] | {t:.2f} s | {gibps(size, t)} | {c / t:.2f}x |")
    print(f"single file (s): { {k: [round(x, 2) for x in v] for k, v in times.items()} }", file=sys.stderr)
    return rows


def bench_repo(hub: RemoteHub, total: int, rounds: int) -> list[str]:
    from huggingface_hub import snapshot_download

    repo_dir = ROOT / "repo-src"
    repo_dir.mkdir(exist_ok=True)
    # 5 files, uneven like a diffusers repo: one big, some medium, one small.
    shares = [0.5, 0.2, 0.15, 0.1, 0.05]
    names = [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "safety_checker/model.safetensors",
    ]
    files: dict[str, Path] = {}
    shas: dict[str, str] = {}
    for i, (name, share) in enumerate(zip(names, shares, strict=True)):
        p = repo_dir / f"f{i}.bin"
        shas[name] = make_file(p, int(total * share) // 4096 * 4096, seed=10 + i)
        files[name] = p
    hub.call("add_hf_repo", "org/big", files)
    size = sum(p.stat().st_size for p in files.values())
    hf: list[float] = []
    md: list[float] = []
    md_nosha: list[float] = []

    def run_md(with_sha: bool) -> float:
        dest = ROOT / "md-repo"
        clean(dest)
        parts = [
            RemoteFile(
                f"{hub.url}/org/big/resolve/main/{n}",
                n,
                size=files[n].stat().st_size,
                sha256=shas[n] if with_sha else None,
            )
            for n in names
        ]
        q = DownloadQueueService(5, limits=DownloadLimits(), policy=LOOPBACK)
        q.start()
        t = time.perf_counter()
        job = q.multifile_download(parts, dest)
        q.wait_for_job(job)
        elapsed = time.perf_counter() - t
        q.stop()
        assert job.complete, job.error
        clean(dest)
        return elapsed

    os.environ["HF_HUB_DISABLE_XET"] = "1"
    for _ in range(rounds):
        cache = ROOT / "hf-cache"
        clean(cache)
        t = time.perf_counter()
        snapshot_download("org/big", cache_dir=cache, endpoint=hub.url)
        hf.append(time.perf_counter() - t)
        clean(cache)
        md.append(run_md(True))
        md_nosha.append(run_md(False))
    shutil.rmtree(repo_dir)
    h = best(hf)
    print(f"repo (s): hf {hf}, md {md}, md without sha256 {md_nosha}", file=sys.stderr)
    return [
        f"| 5-file repo, {size // MiB} MiB | huggingface_hub.snapshot_download (size check only) | {h:.2f} s | "
        f"{gibps(size, h)} | 1.00x |",
        f"| | modeldepot multifile, sha256 verified | {best(md):.2f} s | {gibps(size, best(md))} | "
        f"{h / best(md):.2f}x |",
        f"| | modeldepot multifile, no sha256 | {best(md_nosha):.2f} s | {gibps(size, best(md_nosha))} | "
        f"{h / best(md_nosha):.2f}x |",
    ]


def bench_capped(hub: RemoteHub, size: int, cap: int) -> list[str]:
    src = ROOT / "capped.bin"
    make_file(src, size, seed=3)
    url = hub.call("add_file", "capped/model.bin", src)
    hub.call("faults", "/capped/*", speed_limit_bps=cap)
    out = ROOT / "capped-out.bin"
    rows: list[str] = []
    base = 0.0
    cases = [(n, f"{n} connection(s)", dict(max_connections=n, fast_stream_bps=None)) for n in (1, 2, 4, 8)]
    cases.append((8, "default: probe 1 connection, then up to 8", {}))
    for n, label, kw in cases:
        clean(out)
        lim = DownloadLimits(multi_connection_threshold=0, part_size=max(MiB, size // 16), **kw)  # type: ignore[arg-type]
        elapsed, used = timed_md(url, out, lim)
        base = base or elapsed
        rows.append(
            f"| capped {cap // MiB} MiB/s per connection, {size // MiB} MiB | modeldepot, {label} [used {used}] | "
            f"{elapsed:.2f} s | {size / elapsed / MiB:.1f} MiB/s | {base / elapsed:.2f}x (ideal {n}x) |"
        )
    hub.call("clear_faults")
    clean(out)
    src.unlink()
    return rows


_KILL_CHILD = """
import sys
from modeldepot.download import ConnectPolicy, DownloadLimits, DownloadQueueService
import os
kw = {k: int(v) for k, v in (x.split("=") for x in os.environ.get("MD_LIMITS", "").split(",") if x)}
n = int(sys.argv[3])
q = DownloadQueueService(1, limits=DownloadLimits(max_connections=n, fast_stream_bps=None, **kw),
                         policy=ConnectPolicy(allow_private=True))
q.start()
job = q.download(sys.argv[1], sys.argv[2], expected_sha256=sys.argv[4])
q.wait_for_job(job)
sys.exit(0 if job.complete else 1)
"""


def bench_kill(hub: RemoteHub, size: int, kills: int, connections: int) -> list[str]:
    src = ROOT / "kill.bin"
    sha = make_file(src, size, seed=4)
    url = hub.call("add_file", "kill/model.bin", src)
    # fakehub's sendfile path counts a whole <=64 MiB block as sent even when the client dies
    # mid-block; its paced path counts each 1 MiB write, so the byte count is exact. The cap is
    # far above what loopback reaches, so it does not slow the transfer.
    hub.call("faults", "/kill/*", speed_limit_bps=10**12)
    dest = ROOT / "kill-out.bin"
    clean(dest)
    state = Path(str(dest) + ".part.json")
    hub.call("reset")
    rng = random.Random(42)
    # Kill points: 10 random fractions of the file, increasing, so every run makes some progress.
    points = sorted(rng.uniform(0.03, 0.97) for _ in range(kills))
    done_at_kill: list[int] = []
    for frac in points:
        proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, url, str(dest), str(connections), sha])
        target = int(frac * size)
        on_disk = 0
        while on_disk < target and proc.poll() is None:
            try:
                on_disk = sum(b - a for a, b in json.loads(state.read_text())["done"])
            except (OSError, ValueError, KeyError):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_at_kill.append(on_disk)
    rc = subprocess.run([sys.executable, "-c", _KILL_CHILD, url, str(dest), str(connections), sha]).returncode
    fetched = hub.call("bytes")
    hub.call("clear_faults")
    ok = rc == 0 and dest.is_file() and sha256_of(dest) == sha
    clean(dest)
    src.unlink()
    ratio = fetched / size
    print(f"kill x{kills} ({connections} conn): on disk at kills {done_at_kill}, ratio {ratio:.4f}", file=sys.stderr)
    return [
        f"| kill -9 x{kills} during {size // MiB} MiB, {connections} connection(s), then resume | "
        f"bytes fetched / size | {ratio:.3f} | sha256 {'correct' if ok else 'WRONG'} | target < 1.05 |"
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repo-mib", type=int, default=2048)
    ap.add_argument("--capped-mib", type=int, default=256)
    ap.add_argument("--cap-mibps", type=int, default=32)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(ROOT)
    hub = RemoteHub()
    rows: list[str] = []
    try:
        rows += bench_single_file(hub, args.size_mib * MiB, args.rounds)
        rows += bench_repo(hub, args.repo_mib * MiB, max(1, args.rounds - 1))
        rows += bench_capped(hub, args.capped_mib * MiB, args.cap_mibps * MiB)
        kill_rows = bench_kill(hub, args.size_mib * MiB, args.kills, 8)
        kill_rows += bench_kill(hub, args.size_mib * MiB, args.kills, 1)
    finally:
        hub.close()
        shutil.rmtree(ROOT, ignore_errors=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, fakehub in a child process, loopback\n")
    print("| case | client | time | throughput | vs baseline |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| case | measure | value | check | target |")
    print("|---|---|---|---|---|")
    print("\n".join(kill_rows))


if __name__ == "__main__":
    main()
