"""API benchmark: list latency with 10,000 models, and event-stream delivery latency.

    python benchmarks/bench_api.py [--models 10000] [--requests 200] [--events 50]
    python benchmarks/bench_api.py --models 100000 --requests 30 --rounds 3 --before /tmp/before/src

Runs a real uvicorn server on 127.0.0.1 (a thread) over a fresh depot in
/tmp/modeldepot-bench-api/ (deleted at the end). Records are inserted straight into the record
store with fake paths. Prints a markdown table.

With ``--rounds`` (and ``--before``, the src folder of the code before a change), the list
requests only: each depot is filled once, then every round serves each depot from a fresh
process in turn (interleaved) and the table shows the median p50 over rounds with the min-max.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _child import run_child  # benchmarks/ is the script's folder: first on sys.path

from modeldepot.api.app import create_app
from modeldepot.api.serve import make_server
from modeldepot.manager import ModelManager

WORK = Path("/tmp/modeldepot-bench-api")
TYPES = [("lora", "lycoris"), ("vae", "checkpoint"), ("main", "diffusers"), ("embedding", "embedding_file")]
BASES = ["sd-1", "sd-2", "sdxl", "flux"]


def _ms(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    return statistics.median(xs) * 1000, xs[int(0.95 * (len(xs) - 1))] * 1000, xs[-1] * 1000


def populate(mm: ModelManager, n: int) -> None:
    records = []
    for i in range(n):
        type_, fmt = TYPES[i % len(TYPES)]
        base = BASES[(i // len(TYPES)) % len(BASES)]
        records.append(
            {
                "name": f"model-{i:05d}",
                "type": type_,
                "format": fmt,
                "base": base,
                "path": f"/fake/{base}/{type_}/model-{i:05d}",
                "tags": ["style"] if i % 3 == 0 else ["character"],
                "description": f"benchmark record {i}",
                "source": f"org/repo-{i}",
                "file_size": 1000 + i,
            }
        )
    mm.store.add_models(records)


class Server:
    def __init__(self, mm: ModelManager) -> None:
        self.server = make_server(create_app(mm), "127.0.0.1", 0, log_level="warning")
        self.server.config.access_log = False
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def bench_list(url: str, requests: int) -> dict[str, tuple[float, float, float]]:
    queries = {
        "filtered page of 50 (type=lora, base=sdxl)": {"type": "lora", "base": "sdxl", "limit": 50, "offset": 50},
        "text search q=, page of 50": {"q": "record 12", "limit": 50},
        "tag filter, page of 50": {"tag": "style", "limit": 50, "offset": 500},
        "unfiltered page of 50 (baseline)": {"limit": 50, "offset": 5000},
        "get one model (baseline)": None,
    }
    out = {}
    with httpx.Client(base_url=url) as c:
        key = c.get("/api/v2/models/", params={"limit": 1}).json()["models"][0]["key"]
        for label, params in queries.items():
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                r = c.get(f"/api/v2/models/i/{key}") if params is None else c.get("/api/v2/models/", params=params)
                r.raise_for_status()
                times.append(time.perf_counter() - t)
            out[label] = _ms(times)
    return out


def bench_events(url: str, mm: ModelManager, count: int) -> tuple[float, float, float]:
    got: dict[int, float] = {}
    cond = threading.Condition()
    ready = threading.Event()

    def read() -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(5, read=None)) as c,
            c.stream("GET", f"{url}/api/v2/events?names=bench_progress") as r,
        ):
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    ready.set()
                if line.startswith("data:"):
                    seq = json.loads(line[5:])["seq"]
                    with cond:
                        got[seq] = time.perf_counter()
                        cond.notify_all()
                    if seq == count - 1:
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(10)
    sent: dict[int, float] = {}
    for seq in range(count):
        # Shaped like a download progress event; emitted from this (non-loop) thread as the queue does.
        sent[seq] = time.perf_counter()
        mm.events.emit("bench_progress", seq=seq, id=1, bytes=seq * 1000, total_bytes=count * 1000, speed=1e6)
        with cond:
            cond.wait_for(lambda s=seq: s in got, timeout=5)  # type: ignore[misc]
        time.sleep(0.01)
    reader.join(timeout=5)
    return _ms([got[s] - sent[s] for s in range(count) if s in got])


def _child(args: list[str], pythonpath: str | None) -> dict[str, Any]:
    return run_child(__file__, args, pythonpath)


def compare(args: argparse.Namespace) -> None:
    """Fill one depot per implementation once, then interleave fresh server processes per round."""
    impls = [("after", None)] + ([("before", args.before)] if args.before else [])
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    runs: dict[str, list[dict[str, list[float]]]] = {impl: [] for impl, _ in impls}
    fills: dict[str, float] = {}
    try:
        for impl, path in impls:
            child = ["--child", "populate", "--home", str(WORK / impl), "--models", str(args.models)]
            fills[impl] = _child(child, path)["fill_s"]
        for _ in range(args.rounds):
            for impl, path in impls:
                child = ["--child", "lists", "--home", str(WORK / impl), "--requests", str(args.requests)]
                runs[impl].append(_child(child, path))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    fill = ", ".join(f"{impl} {s:.0f} s" for impl, s in fills.items())
    print(
        f"## API list requests: {args.models:,} models (insert: {fill}), {args.requests} requests per row per "
        f"round, {args.rounds} interleaved rounds, a fresh server process each, real HTTP\n"
    )
    print("p50 ms: median of the rounds' p50 (min-max).\n")
    print("| request | " + " | ".join(f"{impl} p50 ms" for impl in runs) + " | after / before |")
    print("|---|" + "---:|" * (len(runs) + 1))
    for label in runs["after"][0]:
        cells = []
        for impl in runs:
            xs = [r[label][0] for r in runs[impl]]
            cells.append(f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})")
        if "before" in runs:
            ratios = [a[label][0] / b[label][0] for a, b in zip(runs["after"], runs["before"], strict=True)]
            cells.append(f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
        else:
            cells.append("-")
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--events", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=0, help="list requests only, interleaved rounds")
    ap.add_argument("--before", help="src folder of the code to compare with (PYTHONPATH)")
    ap.add_argument("--child", choices=["populate", "lists"], help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "populate":
        with ModelManager.open(home=Path(args.home)) as mm:
            t = time.perf_counter()
            populate(mm, args.models)
            print(json.dumps({"fill_s": time.perf_counter() - t}))
        return
    if args.child == "lists":
        with ModelManager.open(home=Path(args.home)) as mm, Server(mm) as url:
            print(json.dumps(bench_list(url, args.requests)))
        return
    if args.rounds or args.before:
        compare(args)
        return
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        with ModelManager.open(home=WORK / "depot") as mm:
            t = time.perf_counter()
            populate(mm, args.models)
            fill = time.perf_counter() - t
            with Server(mm) as url:
                lists = bench_list(url, args.requests)
                events = bench_events(url, mm, args.events)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    base = lists["get one model (baseline)"][0]
    print(f"## API: {args.models:,} models ({fill:.1f} s to insert), {args.requests} requests each, real HTTP\n")
    print("| request | p50 ms | p95 ms | max ms | p50 / get-one |")
    print("|---|---:|---:|---:|---:|")
    for label, (p50, p95, mx) in lists.items():
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {mx:.1f} | {p50 / base:.1f}x |")
    p50, p95, mx = events
    print(f"\n| SSE: emit on the bus -> arrival at a client ({args.events} events) | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    print(f"| event delivery | {p50:.2f} | {p95:.2f} | {mx:.2f} |")
    print(f"\nTargets: filtered page of 50 p50 < 50 ms; event delivered within 250 ms (max {mx:.1f} ms).")


if __name__ == "__main__":
    main()
