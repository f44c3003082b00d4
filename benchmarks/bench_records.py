"""Record-store benchmark: 100,000 records on SQLite and on PostgreSQL.

    python benchmarks/bench_records.py [--records 100000] [--pg-single 5000] [--no-pg]

Measures ``add_model`` throughput (single calls, each its own transaction) and the batch
``add_models``, ``get_model`` p50/p99, ``search_by_attr(base=, type=)`` p50, a paginated
``search_models`` page, ``count_models``, ``all_models()`` and the query plans.

Baseline, measured in the same run on the same rows: InvokeAI's ``get_model`` recipe, i.e. one
``SELECT config FROM models WHERE key = ?`` on a dedicated driver connection (sqlite3 / psycopg)
followed by the union ``TypeAdapter.validate_json``. Ratios are ours / baseline (lower is better).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from modeldepot.configs import AnyModelConfig, parse_config
from modeldepot.records import ModelRecordServiceSQL, RecordFilter

BENCH_DIR = Path("/tmp/modeldepot-bench-records")
PG_ADMIN_URL = os.environ.get("MODELDEPOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
KINDS = [
    ("main", "diffusers"),
    ("main", "checkpoint"),
    ("lora", "lycoris"),
    ("lora", "lycoris"),
    ("lora", "lycoris"),
    ("vae", "checkpoint"),
    ("controlnet", "diffusers"),
    ("embedding", "embedding_file"),
    ("ip_adapter", "invokeai"),
    ("t5_encoder", "t5_encoder"),
]
BASES = ["sd-1", "sd-2", "sdxl", "sd-3", "flux"]
TAGS = ["photo", "anime", "style", "character", "detail", "favourite", "nsfw", "landscape"]


def make_records(n: int, seed: int = 42) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        t, f = KINDS[i % len(KINDS)]
        base = BASES[rnd.randrange(len(BASES))]
        compat = ["sd-2"] if base == "sd-1" and t in ("vae", "embedding") else []
        out.append(
            {
                "key": uuid.UUID(int=rnd.getrandbits(128)).hex,
                "name": f"{t}-{i:06d}",
                "type": t,
                "format": f,
                "base": base,
                "compatible_bases": compat,
                "path": f"/models/{base}/{t}/{t}-{i:06d}.safetensors",
                "hash": f"blake3:{rnd.getrandbits(256):064x}",
                "file_size": rnd.randrange(10_000_000, 7_000_000_000),
                "description": f"Benchmark model number {i}",
                "source": f"https://civitai.com/models/{i}",
                "tags": rnd.sample(TAGS, 2),
            }
        )
    return out


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def baseline_get(store: ModelRecordServiceSQL, keys: list[str], n: int) -> list[float]:
    """InvokeAI's recipe on a dedicated driver connection."""
    adapter: TypeAdapter[Any] = TypeAdapter(AnyModelConfig)
    if store.db.is_sqlite:
        import sqlite3

        conn: Any = sqlite3.connect(store.db.url, isolation_level=None)
        sql = "SELECT config FROM models WHERE key = ?"
    else:
        import psycopg

        conn = psycopg.connect(str(store.db.engine.url.set(drivername="postgresql")), autocommit=True)
        sql = "SELECT config FROM models WHERE key = %s"
    rnd = random.Random(7)

    def one() -> None:
        row = conn.execute(sql, (keys[rnd.randrange(len(keys))],)).fetchone()
        adapter.validate_json(row[0])

    try:
        return timed(one, n)
    finally:
        conn.close()


def run(store: ModelRecordServiceSQL, label: str, records: list[dict[str, Any]], single: int) -> dict[str, Any]:
    res: dict[str, Any] = {"label": label}
    configs = [parse_config(r) for r in records]
    single = min(single, len(configs))
    t0 = time.perf_counter()
    for c in configs[:single]:
        store.add_model(c)
    dt = time.perf_counter() - t0
    res["single_n"], res["single_rps"] = single, single / dt
    t0 = time.perf_counter()
    rest = configs[single:]
    for i in range(0, len(rest), 1000):
        store.add_models(rest[i : i + 1000])
    dt = time.perf_counter() - t0
    res["batch_n"], res["batch_rps"] = len(rest), (len(rest) / dt if rest else float("nan"))
    if store.db.is_sqlite:
        with store.db.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with store.db.begin() as conn:
            conn.exec_driver_sql("ANALYZE models; ANALYZE model_bases; ANALYZE model_tags")

    keys = [c.key for c in configs]
    rnd = random.Random(3)
    store.get_model(keys[0])  # warm the pool
    get = timed(lambda: store.get_model(keys[rnd.randrange(len(keys))]), 5000)
    res["get_p50"], res["get_p99"] = pct(get, 0.5), pct(get, 0.99)
    base_get = baseline_get(store, keys, 5000)
    res["base_get_p50"], res["base_get_p99"] = pct(base_get, 0.5), pct(base_get, 0.99)

    combos = [(b, t) for b in BASES for t in ("main", "vae", "controlnet", "ip_adapter")]
    counts: list[int] = []

    def search() -> None:
        b, t = combos[rnd.randrange(len(combos))]
        counts.append(len(store.search_by_attr(base=b, type=t)))

    res["search_p50"] = pct(timed(search, 60), 0.5)
    res["search_rows"] = statistics.mean(counts)

    def pick() -> Any:
        return configs[rnd.randrange(len(configs))]

    res["name_p50"] = pct(timed(lambda: store.search_by_attr(name=pick().name), 500), 0.5)
    res["hash_p50"] = pct(timed(lambda: store.search_by_hash(pick().hash or ""), 500), 0.5)
    res["page_p50"] = pct(timed(lambda: store.search_models(base="sdxl", type="lora", offset=100, limit=50), 100), 0.5)
    res["count_p50"] = pct(timed(lambda: store.count_models(base="sdxl", type="lora"), 100), 0.5)
    res["q_p50"] = pct(timed(lambda: store.search_models(q="number 4242", limit=50), 20), 0.5)
    all_times = timed(lambda: store.all_models(), 3)
    res["all_s"] = statistics.median(all_times)
    res["all_n"] = len(store.all_models())
    res["plans"] = {
        "get_model(key)": store.explain(key=keys[0]),
        "search_by_attr(name=)": store.explain(RecordFilter.build(name="x")),
        "search_by_attr(base=sdxl, type=lora)": store.explain(RecordFilter.build(base="sdxl", type="lora")),
        "search_by_attr(base=sd-2)": store.explain(RecordFilter.build(base="sd-2")),
        "search_by_attr(format=checkpoint)": store.explain(RecordFilter.build(format="checkpoint")),
        "search_by_hash": store.explain(RecordFilter(hash="blake3:00")),
        "search_by_path": store.explain(RecordFilter(path="/m/x")),
        "search_by_tag([photo, anime])": store.explain(RecordFilter(tags=("photo", "anime"))),
        "search_models(tag=photo, limit=50)": store.explain(RecordFilter(tags=("photo",)), limit=50),
        "search_models(q=number 4242, limit=50)": store.explain(RecordFilter.build(q="number 4242"), limit=50),
        "search_models(q=model, limit=50)": store.explain(RecordFilter.build(q="model"), limit=50),
        "all_models()": store.explain(RecordFilter()),
    }
    return res


def report(results: list[dict[str, Any]], n: int) -> str:
    ms = 1000.0
    lines = [
        f"### Record store, {n:,} records",
        "",
        "| measure | " + " | ".join(r["label"] for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]

    def row(name: str, fmt: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {name} | " + " | ".join(fmt(r) for r in results) + " |")

    row("add_model, single calls (records/s)", lambda r: f"{r['single_rps']:,.0f} (over {r['single_n']:,})")
    row(
        "add_models, batches of 1000 (records/s)",
        lambda r: f"{r['batch_rps']:,.0f} (over {r['batch_n']:,})" if r["batch_n"] else "- (all added singly)",
    )
    row("get_model p50 / p99 (ms)", lambda r: f"{r['get_p50'] * ms:.3f} / {r['get_p99'] * ms:.3f}")
    row(
        "baseline get p50 / p99 (ms): raw driver + union validate_json",
        lambda r: f"{r['base_get_p50'] * ms:.3f} / {r['base_get_p99'] * ms:.3f}",
    )
    row("get_model p50 ratio vs baseline", lambda r: f"{r['get_p50'] / r['base_get_p50']:.2f}x")
    row("get_model p50 vs 0.2 ms target", lambda r: f"{r['get_p50'] * ms / 0.2:.2f} of target")
    row(
        "search_by_attr(base, type) p50 (ms)",
        lambda r: f"{r['search_p50'] * ms:.1f} ({r['search_rows']:,.0f} rows avg)",
    )
    row("search_by_attr(name=) p50 (ms)", lambda r: f"{r['name_p50'] * ms:.3f}")
    row("search_by_hash p50 (ms)", lambda r: f"{r['hash_p50'] * ms:.3f}")
    row("search_models(base, type, offset=100, limit=50) p50 (ms)", lambda r: f"{r['page_p50'] * ms:.2f}")
    row("count_models(base, type) p50 (ms)", lambda r: f"{r['count_p50'] * ms:.2f}")
    row("search_models(q=substring, limit=50) p50 (ms)", lambda r: f"{r['q_p50'] * ms:.1f}")
    row("all_models() (s)", lambda r: f"{r['all_s']:.2f} ({r['all_n']:,} records)")
    for r in results:
        lines += ["", f"Query plans, {r['label']}:", "", "```"]
        for what, plan in r["plans"].items():
            lines.append(f"{what}:")
            lines += [f"    {step}" for step in plan]
        lines.append("```")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--sqlite-single", type=int, default=100_000, help="records added by single add_model calls")
    ap.add_argument("--pg-single", type=int, default=10_000, help="records added by single add_model calls")
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()

    records = make_records(args.records)
    results = []
    shutil.rmtree(BENCH_DIR, ignore_errors=True)
    BENCH_DIR.mkdir(parents=True)
    try:
        store = ModelRecordServiceSQL.from_db_file(BENCH_DIR / "records.db")
        try:
            results.append(run(store, "SQLite", records, args.sqlite_single))
        finally:
            store.close()
        print(f"SQLite done; db {os.path.getsize(BENCH_DIR / 'records.db') / 1e6:.0f} MB", file=sys.stderr)
        if not args.no_pg:
            results.append(run_pg(records, args.pg_single))
    finally:
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    print(report(results, args.records))
    return 0


def run_pg(records: list[dict[str, Any]], single: int) -> dict[str, Any]:
    import psycopg

    name = f"modeldepot_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        store = ModelRecordServiceSQL.from_url(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}")
        try:
            return run(store, "PostgreSQL", records, single)
        finally:
            store.close()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
