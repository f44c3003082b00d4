"""Search benchmark (issue 18): free text, tags and name uniqueness at 100k and 1M records.

    python benchmarks/bench_search.py [--sizes 100000 1000000] [--rounds 3]
        [--before /tmp/before-records/src] [--pg] [--keep]

Each size is built once with ``add_models`` (batches of 5,000) into a SQLite file under
``/dev/shm/modeldepot-bench-search/`` (``--keep`` leaves the files for the next run, which
reuses them) and, with ``--before``, a second file built by the code in that folder (the
``git archive`` of the commit before the change). Each round then measures every database in a
fresh process, one after the other (interleaved), and each process reports the median of its
repetitions; the table shows the median over rounds with the min-max.

Measured per database: ``search_models(q=..., limit=50)`` and ``count_models(q=...)`` for a
common word, a tag word, a medium one (about 3,000 hits), a rare one, a 3-character one and a
2-character one; ``search_models(tag=, limit=50, offset=500)`` and its count; and the install's
``unique_name`` check. Peer, same process and database: the raw FTS5 trigram query
(``SELECT rowid FROM models_fts WHERE models_fts MATCH ? LIMIT 50`` on a bare ``sqlite3``
connection), i.e. the cost of the index lookup without the listing order or record parsing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _child import run_child  # benchmarks/ is the script's folder: first on sys.path

HERE = Path(__file__).resolve().parent
WORK = Path("/dev/shm/modeldepot-bench-search")
PG_ADMIN_URL = os.environ.get("MODELDEPOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# label -> query. bench_records.make_records writes names "<type>-<i:06d>", descriptions
# "Benchmark model number <i>", two of eight tags and a civitai.com source per record.
QUERIES = {
    "common word (every record)": "model",
    "tag word (1 in 4)": "anime",
    "medium (~3,000 hits)": "lora-00",
    "clustered (every vae, last in each base)": "vae-",
    "rare": "number 4242",
    "3 characters": "424",
    "2 characters (no trigram)": "42",
}
TAG = "anime"


def _timed(fn: Any, min_reps: int = 5, budget_s: float = 0.5, max_reps: int = 25) -> float:
    fn()  # warm caches and the connection pool
    out: list[float] = []
    start = time.perf_counter()
    while len(out) < min_reps or (time.perf_counter() - start < budget_s and len(out) < max_reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def child_build(target: str, n: int) -> None:
    sys.path.insert(0, str(HERE))
    from bench_records import make_records

    from modeldepot.configs import parse_config
    from modeldepot.records import ModelRecordServiceSQL

    t0 = time.perf_counter()
    store = ModelRecordServiceSQL.from_url(target)
    records = make_records(n)
    for i in range(0, n, 5000):
        store.add_models([parse_config(r) for r in records[i : i + 5000]])
    if store.db.is_sqlite:
        with store.db.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:  # VACUUM sets the visibility map (index-only scans), outside a transaction
        with store.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    store.close()
    print(json.dumps({"build_s": time.perf_counter() - t0}))


def child_measure(target: str, n: int) -> None:
    from modeldepot.install._store import unique_name
    from modeldepot.records import ModelRecordServiceSQL
    from modeldepot.taxonomy import BaseModelType, ModelType

    store = ModelRecordServiceSQL.from_url(target)
    res: dict[str, Any] = {"q": {}, "q_count": {}, "q_hits": {}}
    for label, q in QUERIES.items():
        res["q"][label] = _timed(lambda q=q: store.search_models(q=q, limit=50))
        res["q_count"][label] = _timed(lambda q=q: store.count_models(q=q))
        res["q_hits"][label] = store.count_models(q=q)
        try:  # what a REST page counts (api.schemas.COUNT_LIMIT); code before it has no at_most
            res.setdefault("q_count_capped", {})[label] = _timed(lambda q=q: store.count_models(q=q, at_most=10_001))
        except TypeError:
            pass
    res["tag_page"] = _timed(lambda: store.search_models(tag=TAG, limit=50, offset=500))
    res["tag_count"] = _timed(lambda: store.count_models(tag=TAG))
    # A name that exists (the check must find the next free one) in a crowded base/type.
    probe = store.search_models(base="sdxl", type="lora", limit=1, offset=n // 200)[0]
    base, type_ = BaseModelType(probe.base), ModelType(probe.type)
    res["unique_name"] = _timed(lambda: unique_name(store, probe.name, base, type_), min_reps=7)
    assert unique_name(store, probe.name, base, type_) == f"{probe.name} (2)"
    if store.db.is_sqlite:
        import sqlite3

        conn = sqlite3.connect(f"file:{store.db.url}?mode=ro", uri=True)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "models_fts" in tables:
            res["peer"] = {}
            for label, q in QUERIES.items():
                if len(q) >= 3:
                    phrase = '"' + q.replace('"', '""') + '"'
                    sql = "SELECT rowid FROM models_fts WHERE models_fts MATCH ? LIMIT 50"
                    res["peer"][label] = _timed(lambda sql=sql, p=phrase: conn.execute(sql, (p,)).fetchall())
        conn.close()
    store.close()
    print(json.dumps(res))


def _run(args: list[str], pythonpath: str | None) -> dict[str, Any]:
    return run_child(__file__, args, pythonpath)


def _pg_create() -> str:
    import psycopg

    name = f"modeldepot_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def _pg_drop(url: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _fmt(xs: list[float], scale: float = 1000.0, digits: int = 2) -> str:
    return f"{statistics.median(xs) * scale:.{digits}f} ({min(xs) * scale:.{digits}f}-{max(xs) * scale:.{digits}f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", help="src folder of the code before the change (PYTHONPATH)")
    ap.add_argument("--pg", action="store_true", help="also PostgreSQL, at the smallest size")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the SQLite files")
    ap.add_argument("--child", choices=["build", "measure"], help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "build":
        child_build(args.target, args.n)
        return 0
    if args.child == "measure":
        child_measure(args.target, args.n)
        return 0

    WORK.mkdir(parents=True, exist_ok=True)
    impls = [("after", None)] + ([("before", args.before)] if args.before else [])
    dbs: list[tuple[str, int, str, str | None]] = []  # (label, n, target, pythonpath)
    pg_urls: list[str] = []
    try:
        for n in args.sizes:
            for impl, path in impls:
                target = str(WORK / f"{impl}-{n}.db")
                if not (args.keep and Path(target).exists()):
                    for suffix in ("", "-wal", "-shm"):
                        Path(target + suffix).unlink(missing_ok=True)
                    built = _run(["--child", "build", "--target", target, "--n", str(n)], path)
                    print(f"built {impl} SQLite {n:,}: {built['build_s']:.0f} s", file=sys.stderr)
                dbs.append((f"SQLite {n:,} {impl}", n, target, path))
        if args.pg:
            n = min(args.sizes)
            for impl, path in impls:
                url = _pg_create()
                pg_urls.append(url)
                built = _run(["--child", "build", "--target", url, "--n", str(n)], path)
                print(f"built {impl} PostgreSQL {n:,}: {built['build_s']:.0f} s", file=sys.stderr)
                dbs.append((f"PostgreSQL {n:,} {impl}", n, url, path))
        results: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in dbs}
        for r in range(args.rounds):
            for label, n, target, path in dbs:
                results[label].append(_run(["--child", "measure", "--target", target, "--n", str(n)], path))
            print(f"round {r + 1} done", file=sys.stderr)
    finally:
        for url in pg_urls:
            _pg_drop(url)
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    print(report(results, args.rounds))
    return 0


def report(results: dict[str, list[dict[str, Any]]], rounds: int) -> str:
    labels = list(results)
    lines = [
        f"Milliseconds, median of {rounds} rounds (min-max); each round a fresh process per database.",
        "",
        "| measure | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]

    def row(name: str, get: Any, digits: int = 2, scale: float = 1000.0) -> None:
        cells = []
        for label in labels:
            try:
                cells.append(_fmt([get(x) for x in results[label]], scale=scale, digits=digits))
            except KeyError:
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    for q in QUERIES:
        row(f"`q` page of 50: {q}", lambda x, q=q: x["q"][q])
    for q in QUERIES:
        row(f"count_models(q): {q}", lambda x, q=q: x["q_count"][q])
    for q in QUERIES:
        row(f"count_models(q, at_most=10,001) (a REST page's total): {q}", lambda x, q=q: x["q_count_capped"][q])
    for q in QUERIES:
        row(f"peer, raw FTS5 LIMIT 50: {q}", lambda x, q=q: x["peer"][q], digits=3)
    for q in QUERIES:
        row(f"page / peer (ratio): {q}", lambda x, q=q: x["q"][q] / x["peer"][q], digits=1, scale=1.0)
    row(f"tag page of 50 (tag={TAG}, offset 500)", lambda x: x["tag_page"])
    row(f"count_models(tag={TAG})", lambda x: x["tag_count"])
    row("unique_name check", lambda x: x["unique_name"], digits=3)
    lines += ["", "Hits per query: " + "; ".join(f"{label}: {results[label][0]['q_hits']}" for label in labels)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
