"""CPU cost of the command line's progress bar (issue 18: under 1 %).

    python benchmarks/bench_progress.py [--size-mib 1024] [--rounds 6]

``download_file`` of one file from fakehub (in its own process), in one process, alternately with
the bar drawn on a virtual terminal (as ``modeldepot download`` draws it) and without any display.
Prints wall and CPU seconds (every thread of this process) per mode, and the CPU difference per
round; the first round also pays for importing and first drawing the bar.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).parent))

import bench_transfer as bt
from bench_download import RemoteHub, make_file
from rich.console import Console

from modeldepot.cli import _progress
from modeldepot.config import DepotConfig
from modeldepot.download import DownloadJobBase, download_file

MiB = 1024 * 1024


def cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def with_bar(url: str, out: Path, cfg: DepotConfig) -> None:
    _progress.err_console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with _progress.transfer_bar() as progress:
        task = progress.add_task("connecting", total=None)

        def update(job: DownloadJobBase) -> None:
            progress.update(task, completed=job.bytes, total=job.total_bytes or None)

        download_file(url, out, cfg, on_progress=update)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    bt.ROOT.mkdir(parents=True, exist_ok=True)
    hub = RemoteHub()
    try:
        src = bt.ROOT / "progress.bin"
        make_file(src, args.size_mib * MiB, seed=3)
        url = hub.call("add_file", "progress/model.bin", src)
        out = bt.ROOT / "progress-out.bin"
        cfg = DepotConfig.load(home=str(bt.ROOT / "home"), allow_private_urls=True)
        res: dict[str, list[tuple[float, float]]] = {"bar": [], "none": []}
        for r in range(args.rounds):
            for mode in ("bar", "none") if r % 2 == 0 else ("none", "bar"):
                bt.clean(out)
                os.sync()
                c0, t0 = cpu_seconds(), time.perf_counter()
                if mode == "bar":
                    with_bar(url, out, cfg)
                else:
                    download_file(url, out, cfg)
                res[mode].append((time.perf_counter() - t0, cpu_seconds() - c0))
        for mode, v in res.items():
            walls, cpus = [x[0] for x in v], [x[1] for x in v]
            per_round = [round(c, 3) for c in cpus]
            print(f"{mode}: wall {median(walls):.3f} s, CPU {median(cpus):.3f} s (per round {per_round})")
        diff = [b[1] - n[1] for b, n in zip(res["bar"], res["none"], strict=True)]
        print(f"CPU(bar) - CPU(none) per round: {[round(d, 3) for d in diff]}; median {median(diff):.3f} s")
    finally:
        hub.close()
        bt.clean(bt.ROOT)


if __name__ == "__main__":
    main()
