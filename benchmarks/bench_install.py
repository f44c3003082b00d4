"""End-to-end install of a multi-file repo from fakehub, against the download alone.

    python benchmarks/bench_install.py [--gib 2] [--files 5] [--rounds 3] [--before WORKTREE/src]

Same fakehub, same files, same machine, one run, each measurement in a fresh process, rounds
interleaved in a rotating order: (1) the download queue fetching the repo's files into a folder
(the baseline), (2) ``install org/repo`` with the code in ``--before`` (e.g. a git worktree of the
previous commit), (3) with this code, then installing the same repo again (no bytes downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from modeldepot.download import ConnectPolicy, DownloadQueueService, RemoteFile
from modeldepot.manager import ModelManager
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

MiB = 1024 * 1024


def make_repo(root: Path, total: int, nfiles: int) -> dict[str, Path]:
    """A diffusers-looking repo: real configs, big weight files made of random blocks."""
    pipe = factories.write_diffusers_pipeline(root / "pipe")
    files = {p.relative_to(pipe).as_posix(): p for p in pipe.rglob("*") if p.is_file()}
    weights = [k for k in files if k.endswith(".safetensors")][:nfiles]
    block = os.urandom(64 * MiB)
    per = total // len(weights)
    for k in weights:
        # Keep the header of the tiny real file (so identification works), pad the data region.
        src = files[k]
        big = root / "big" / k
        big.parent.mkdir(parents=True, exist_ok=True)
        header = src.read_bytes()
        import struct

        n = struct.unpack("<Q", header[:8])[0]
        meta = json.loads(header[8 : 8 + n])
        pad = per - len(header)
        meta["__metadata__"] = {**meta.get("__metadata__", {}), "bench": "x"}
        # A tensor that covers the padding, so the file stays a valid safetensors file.
        data_len = len(header) - 8 - n
        meta["bench.padding"] = {"dtype": "U8", "shape": [pad], "data_offsets": [data_len, data_len + pad]}
        head = json.dumps(meta).encode()
        with big.open("wb") as f:
            f.write(struct.pack("<Q", len(head)) + head + header[8 + n :])
            left = pad
            while left:
                chunk = block[: min(left, len(block))]
                f.write(chunk)
                left -= len(chunk)
        files[k] = big
    return files


def _child(kind: str, hub_url: str, work: Path) -> None:
    """One timed measurement in this (fresh) process; prints JSON."""
    if kind == "download":
        from modeldepot.remote import HuggingFaceClient

        q = DownloadQueueService(policy=ConnectPolicy.of([hub_url]))
        q.start()
        cpu = _cpu()
        t = time.perf_counter()  # listing the repo is part of downloading it (as the install does)
        with HuggingFaceClient(hub_url) as client:
            info, sel = client.select_files("bench/repo")
            parts = [
                RemoteFile(
                    url=client.resolve_url("bench/repo", info.sha, f.path), path=f.path, size=f.size, sha256=f.sha256
                )
                for f in sel.files
            ]
        job = q.multifile_download(parts, work / "dl")
        q.wait_for_job(job)
        elapsed = time.perf_counter() - t
        cpu = _cpu() - cpu
        q.stop()
        assert job.complete, job.error
        print(json.dumps({"seconds": elapsed, "cpu": cpu}))
        return
    if kind == "cli":
        # The command a user types, on a pseudo terminal so its progress bars are drawn; timed from
        # outside, so its start-up (imports) is included.
        from bench_transfer import timed

        env = {
            **os.environ,
            "MODELDEPOT_HOME": str(work / "home"),
            "MODELDEPOT_HF_ENDPOINT": hub_url,
            "MODELDEPOT_ALLOW_PRIVATE_URLS": "1",
        }
        elapsed = timed([sys.executable, "-m", "modeldepot", "install", "bench/repo"], env=env, tty=True)
        print(json.dumps({"seconds": elapsed, "again": 0.0}))
        return
    with ModelManager.open(
        home=work / "home", hf_endpoint=hub_url, allow_private_urls=True, link_modes=["hardlink", "copy"]
    ) as mm:
        cpu = _cpu()
        t = time.perf_counter()
        first = mm.install.wait_for_job(mm.install.heuristic_import("bench/repo"))
        elapsed = time.perf_counter() - t
        cpu = _cpu() - cpu
        assert first.complete, first.error
        t = time.perf_counter()
        second = mm.install.wait_for_job(mm.install.heuristic_import("bench/repo"))
        again = time.perf_counter() - t
        assert second.complete, second.error
    print(json.dumps({"seconds": elapsed, "again": again, "cpu": cpu}))


def _cpu() -> float:
    """CPU seconds of this process so far, every thread (the hashing happens in the job threads)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _run_child(kind: str, hub: FakeHub, work: Path, src: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)  # before: the package from a worktree of the base commit
    scratch = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=work))
    os.sync()  # no run pays for the writeback of the one before it
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--hub", hub.url, "--work", str(scratch)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", type=Path, help="src/ folder of the code to compare against (a git worktree)")
    ap.add_argument("--cli", action="store_true", help="also time the install command")
    ap.add_argument("--cap-mibps", type=int, help="cap each connection of the hub (a link, not the CPU, is the limit)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--hub", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.hub, args.work)
        return
    work = Path(tempfile.mkdtemp(prefix="modeldepot-bench-install-", dir="/tmp"))
    try:
        files = make_repo(work / "src", int(args.gib * 1024**3), args.files)
        total = sum(p.stat().st_size for p in files.values())
        kinds: list[tuple[str, str, Path | None]] = [("download", "download alone (queue)", None)]
        if args.before is not None:
            kinds.append(("install", "install, before", args.before))
        kinds.append(("install", "install, after", None))
        if args.cli:
            kinds.append(("cli", "`modeldepot install` command (tty, start-up included)", None))
        times: dict[str, list[float]] = {label: [] for _k, label, _s in kinds}
        again: dict[str, list[float]] = {label: [] for kind, label, _s in kinds if kind == "install"}
        ratios: dict[str, list[float]] = {label: [] for _k, label, _s in kinds[1:]}
        after_vs_before: list[float] = []
        cpus: dict[str, list[float]] = {}
        with FakeHub() as hub:
            hub.add_hf_repo("bench/repo", dict(files.items()))
            if args.cap_mibps:
                hub.faults("*", speed_limit_bps=args.cap_mibps * MiB)
            _run_child("download", hub, work, None)  # warm-up: page cache, fakehub
            for r in range(args.rounds):
                order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # rotate who goes first
                got: dict[str, float] = {}
                for kind, label, src in order:
                    result = _run_child(kind, hub, work, src)
                    got[label] = result["seconds"]
                    times[label].append(result["seconds"])
                    if "cpu" in result:
                        cpus.setdefault(label, []).append(result["cpu"])
                    if label in again:
                        again[label].append(result["again"])
                for label in ratios:
                    ratios[label].append(got[label] / got["download alone (queue)"])
                if "install, before" in got:
                    after_vs_before.append(got["install, after"] / got["install, before"])
        print(
            f"repo: {len(files)} files, {total / 1024**3:.2f} GiB; "
            f"{args.rounds} interleaved rounds, medians (min-max)\n"
        )
        print("| measurement | seconds | ratio to the download in the same round |")
        print("|---|---:|---:|")
        for _kind, label, _src in kinds:
            t = times[label]
            ratio = ratios.get(label)
            ratio_text = f"{median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f})" if ratio else "1.000"
            print(f"| {label} | {median(t):.2f} ({min(t):.2f}-{max(t):.2f}) | {ratio_text} |")
        for label, t in again.items():
            print(f"| {label}: the same source again | {median(t):.3f} ({min(t):.3f}-{max(t):.3f}) | - |")
        for label, c in cpus.items():
            print(f"| CPU seconds (all threads), {label} | {median(c):.2f} ({min(c):.2f}-{max(c):.2f}) | - |")
        if after_vs_before:
            r = after_vs_before
            print(f"\nafter / before, per round: {median(r):.3f} ({min(r):.3f}-{max(r):.3f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
