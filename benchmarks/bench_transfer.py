"""Issue 18's download rows, each against its peer in the same interleaved rounds (medians, min-max).

    python benchmarks/bench_transfer.py [--size-mib 1024] [--repo-mib 2048] [--rounds 5] [--kills 10]
        [--only single,repo,kill] [--before SRC]

- ``single``: one 1 GiB file. Peers: ``curl -s -o`` (and curl followed by an fsync of the file),
  ``hf download`` (huggingface_hub's CLI). Ours: the ``modeldepot download`` command on a pseudo
  terminal (so its progress bar is drawn as a user sees it), and the engine in a fresh process
  (timed inside it, fsync on, as the command uses it). ``--before SRC`` adds the engine of an older
  checkout (its ``src`` folder) to the same rounds.
- ``repo``: a 12-file 2 GiB repo: ``huggingface_hub.snapshot_download`` vs our multi-file queue with
  every sha256 verified, each in a fresh process, timed inside it.
- ``kill``: ``kill -9`` at 10 random points of a 1 GiB download, then a run to the end; bytes the
  server sent / file size. Ours: the ``modeldepot download`` command with default settings; peer:
  ``curl -C -`` killed at the same points.

The fakehub runs in its own process; temp files live under /tmp/modeldepot-bench-transfer/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_download import RemoteHub, make_file, sha256_of

MiB = 1024 * 1024
ROOT = Path("/tmp/modeldepot-bench-transfer")
SRC = Path(__file__).resolve().parents[1] / "src"
HF = str(Path(sys.executable).with_name("hf"))

_ENGINE = """
import json, sys, time
import os
from modeldepot.download import ConnectPolicy, DownloadLimits, DownloadQueueService, RemoteFile
url, dest, mode = sys.argv[1], sys.argv[2], sys.argv[3]
limits = DownloadLimits(**json.loads(os.environ.get("BENCH_LIMITS") or "{}"))
q = DownloadQueueService(4, limits=limits, policy=ConnectPolicy(allow_private=True))
q.start()
t = time.perf_counter()
if mode == "file":
    job = q.download(url, dest)
else:
    files = json.loads(sys.argv[4])
    job = q.multifile_download([RemoteFile(url + "/" + f["path"], f["path"], size=f["size"], sha256=f["sha256"])
                                for f in files], dest)
q.wait_for_job(job)
elapsed = time.perf_counter() - t
q.stop()
assert job.complete, job.error
print(json.dumps({"seconds": elapsed, "connections": getattr(job, "connections", 0)}))
"""

_SNAPSHOT = """
import json, os, sys, time
os.environ["HF_HUB_DISABLE_XET"] = "1"
from huggingface_hub import snapshot_download
t = time.perf_counter()
snapshot_download(sys.argv[2], cache_dir=sys.argv[3], endpoint=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def _env(src: Path | None = None, home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src or SRC)
    env["MODELDEPOT_ALLOW_PRIVATE_URLS"] = "1"
    env["MODELDEPOT_HOME"] = str(home or ROOT / "home")
    env["HF_HUB_DISABLE_XET"] = "1"
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["HF_HOME"] = str(ROOT / "hf-home")
    return env


def _hf_env(endpoint: str) -> dict[str, str]:
    return {**_env(), "HF_ENDPOINT": endpoint}


def clean(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        for p in (path, Path(f"{path}.part"), Path(f"{path}.part.json")):
            p.unlink(missing_ok=True)


def timed(cmd: list[str], env: dict[str, str] | None = None, tty: bool = False) -> float:
    """Wall time of ``cmd``; with ``tty`` its stdout/stderr are a pseudo terminal (drained here)."""
    t = time.perf_counter()
    if not tty:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)

    def drain() -> None:
        with contextlib.suppress(OSError):
            while os.read(master, 65536):
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    rc = proc.wait()
    elapsed = time.perf_counter() - t
    reader.join(5)
    os.close(master)
    if rc:
        raise RuntimeError(f"{cmd[:4]} exited {rc}")
    return elapsed


#: ``--variants``: the engine with one setting changed, in the same rounds (issue 18 asks for the
#: cost of preallocation and of the part-state interval to be measured, not assumed).
VARIANTS: dict[str, dict[str, Any]] = {
    "engine, no preallocation": {"preallocate": False},
    "engine, part state every 1 MiB": {"state_interval": 1 * MiB},
    "engine, part state every 64 MiB": {"state_interval": 64 * MiB},
    "engine, no early writeback": {"writeback_every": 0},
}


def child(code: str, *args: str, src: Path | None = None, limits: dict[str, Any] | None = None) -> dict[str, Any]:
    env = {**_env(src), "BENCH_LIMITS": json.dumps(limits or {})}
    cmd = [sys.executable, "-c", code, *args]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def fsync_file(path: Path) -> float:
    t = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t


def summary(values: list[float]) -> str:
    return f"{median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


# -- one file ---------------------------------------------------------------------------------------
def bench_single(hub: RemoteHub, size: int, rounds: int, before: Path | None, variants: bool = False) -> list[str]:
    src = ROOT / "one.bin"
    make_file(src, size, seed=1)
    hub.call("add_hf_repo", "bench/one", {"model.bin": src})
    url = f"{hub.url}/bench/one/resolve/main/model.bin"
    out = ROOT / "out" / "model.bin"
    out.parent.mkdir(exist_ok=True)
    names = ["curl", "curl+fsync", "hf download", "modeldepot download (tty)", "engine"]
    if before is not None:
        names.append("engine, before")
    if variants:
        names += list(VARIANTS)
    times: dict[str, list[float]] = {n: [] for n in names}
    conns: dict[str, list[int]] = {"engine": [], "engine, before": []}
    order = [n for n in names if n != "curl+fsync"]
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            clean(out.parent)
            out.parent.mkdir(exist_ok=True)
            os.sync()  # no client pays for the writeback of the one before it
            if name == "curl":
                t = timed(["curl", "-s", "-L", "-o", str(out), url])
                times["curl"].append(t)
                times["curl+fsync"].append(t + fsync_file(out))
            elif name == "hf download":
                times[name].append(
                    timed(
                        [HF, "download", "bench/one", "model.bin", "--local-dir", str(out.parent)], env=_hf_env(hub.url)
                    )
                )
            elif name == "modeldepot download (tty)":
                cmd = [sys.executable, "-m", "modeldepot", "download", url, str(out)]
                times[name].append(timed(cmd, env=_env(), tty=True))
            else:
                res = child(
                    _ENGINE,
                    url,
                    str(out),
                    "file",
                    src=before if name.endswith("before") else None,
                    limits=VARIANTS.get(name),
                )
                times[name].append(res["seconds"])
                conns.setdefault(name, []).append(res["connections"])
            assert out.stat().st_size == size, name
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()), file=sys.stderr)
    clean(out.parent)
    src.unlink()
    rows = [
        f"| 1 file, {size // MiB} MiB | measurement | seconds, median (min-max) | ratio per round: peer time / ours |"
    ]
    rows.append("|---|---|---:|---:|")
    for name in names:
        rows.append(f"| | {name} | {summary(times[name])} | |")
    pairs = [
        ("modeldepot download (tty)", "curl", "command vs curl (>= 1.0 is as fast or faster)"),
        ("modeldepot download (tty)", "hf download", "command vs hf download"),
        ("engine", "curl+fsync", "engine (fsync on) vs curl + fsync"),
        ("engine", "curl", "engine (fsync on) vs curl (no fsync)"),
    ]
    if before is not None:
        pairs.append(("engine", "engine, before", "engine vs the engine before"))
    for name in VARIANTS if variants else ():
        pairs.append(("engine", name, f"{name}: its time / the default engine's (> 1: the default is faster)"))
    for ours, peer, label in pairs:
        ratios = [p / o for o, p in zip(times[ours], times[peer], strict=True)]
        rows.append(f"| | {label} | | **{summary(ratios)}** |")
    rows.append(f"| | connections the engine used per round | {conns['engine']} | |")
    return rows


# -- a repo -----------------------------------------------------------------------------------------
def bench_repo(hub: RemoteHub, total: int, rounds: int) -> list[str]:
    shares = [0.30, 0.18, 0.14, 0.10, 0.08, 0.06, 0.05, 0.04, 0.02, 0.015, 0.01, 0.005]
    names = [f"part{i:02d}/model.safetensors" for i in range(len(shares))]
    src_dir = ROOT / "repo-src"
    src_dir.mkdir(exist_ok=True)
    files: dict[str, Path] = {}
    meta: list[dict[str, Any]] = []
    for i, (name, share) in enumerate(zip(names, shares, strict=True)):
        p = src_dir / f"f{i}.bin"
        sha = make_file(p, int(total * share) // 4096 * 4096, seed=20 + i)
        files[name] = p
        meta.append({"path": name, "size": p.stat().st_size, "sha256": sha})
    hub.call("add_hf_repo", "bench/repo12", files)
    base = f"{hub.url}/bench/repo12/resolve/main"
    size = sum(m["size"] for m in meta)
    hf: list[float] = []
    md: list[float] = []
    for r in range(rounds):
        runs = [("hf", hf), ("md", md)]
        for which, out in runs if r % 2 == 0 else runs[::-1]:
            dest = ROOT / f"repo-{which}"
            clean(dest)
            os.sync()
            if which == "hf":
                out.append(child(_SNAPSHOT, hub.url, "bench/repo12", str(dest))["seconds"])
            else:
                out.append(child(_ENGINE, base, str(dest), "repo", json.dumps(meta))["seconds"])
            clean(dest)
        print(f"repo round {r + 1}: hf {hf[-1]:.2f}, md {md[-1]:.2f}", file=sys.stderr)
    shutil.rmtree(src_dir)
    ratios = [h / m for h, m in zip(hf, md, strict=True)]
    return [
        f"| 12-file repo, {size // MiB} MiB | measurement | seconds, median (min-max) | ratio per round |",
        "|---|---|---:|---:|",
        f"| | huggingface_hub.snapshot_download | {summary(hf)} | |",
        f"| | modeldepot queue, every sha256 verified | {summary(md)} | |",
        f"| | snapshot_download time / ours (>= 1.3 is the goal) | | **{summary(ratios)}** |",
    ]


# -- kill -9 ----------------------------------------------------------------------------------------
def _progress_ours(dest: Path) -> int:
    try:
        done = json.loads(Path(f"{dest}.part.json").read_text())["done"]
        return sum(b - a for a, b in done)
    except (OSError, ValueError, KeyError):
        return 0


def _progress_curl(dest: Path) -> int:
    try:
        return dest.stat().st_size
    except OSError:
        return 0


def bench_kill(hub: RemoteHub, size: int, kills: int) -> list[str]:
    src = ROOT / "kill.bin"
    sha = make_file(src, size, seed=4)
    # The paced path of fakehub counts each 1 MiB write, so bytes sent are exact; the cap is far
    # above what loopback reaches.
    url = hub.call("add_file", "kill/model.bin", src)
    hub.call("faults", "/kill/*", speed_limit_bps=10**12)
    points = sorted(random.Random(42).uniform(0.03, 0.97) for _ in range(kills))
    rows = [
        f"| kill -9 x{kills} in {size // MiB} MiB | client | bytes sent / size | file correct |",
        "|---|---|---:|---|",
    ]
    clients = {
        "modeldepot download (defaults)": (
            lambda dest: [sys.executable, "-m", "modeldepot", "download", url, str(dest)],
            _progress_ours,
        ),
        "curl -C -": (lambda dest: ["curl", "-s", "-C", "-", "-o", str(dest), url], _progress_curl),
    }
    for label, (cmd, progress) in clients.items():
        dest = ROOT / "kill-out.bin"
        clean(dest)
        hub.call("reset")
        for frac in points:
            proc = subprocess.Popen(cmd(dest), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while progress(dest) < int(frac * size) and proc.poll() is None:
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        subprocess.run(cmd(dest), env=_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sent = hub.call("bytes")
        ok = sha256_of(dest) == sha
        rows.append(f"| | {label} | **{sent / size:.3f}** | {'yes' if ok else 'NO'} |")
        print(f"kill {label}: {sent / size:.4f}", file=sys.stderr)
        clean(dest)
    hub.call("clear_faults")
    src.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repo-mib", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--only", default="single,repo,kill")
    ap.add_argument("--before", type=Path, help="src/ folder of older code: its engine joins the single-file rounds")
    ap.add_argument("--variants", action="store_true", help="also the engine with single settings changed")
    args = ap.parse_args()
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    hub = RemoteHub()
    rows: list[str] = []
    only = set(args.only.split(","))
    try:
        if "single" in only:
            rows += [*bench_single(hub, args.size_mib * MiB, args.rounds, args.before, args.variants), ""]
        if "repo" in only:
            rows += [*bench_repo(hub, args.repo_mib * MiB, args.rounds), ""]
        if "kill" in only:
            rows += bench_kill(hub, args.size_mib * MiB, args.kills)
    finally:
        hub.close()
        shutil.rmtree(ROOT, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load:.1f}, fakehub in its own process\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
