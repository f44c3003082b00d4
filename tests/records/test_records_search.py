"""Free text and tag searches on every store: the answers are the reference semantics
(``RecordFilter.matches`` in listing order), whatever plan the store picks.

SQLite answers ``q`` through its FTS5 trigram index when the hits are few and by walking the
listing order when they are many; PostgreSQL through its planner (``pg_trgm`` or a scan).
Each plan must give the ``LIKE`` answer, including for text a user types that FTS5 would read
as syntax (``AND``, ``"``, ``*``, ``NEAR``) and for ``LIKE``'s own wildcards.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from _records_helpers import rec

from modeldepot.configs import parse_config
from modeldepot.records import ModelRecordServiceBase, ModelRecordServiceSQL, RecordFilter
from modeldepot.records._query import sort_key
from modeldepot.records._search import dense_hits, fts_phrase

# Text chosen to trip a trigram index or a query parser: non-ASCII (case pairs that Python and
# SQLite fold differently, combining marks, CJK, emoji), LIKE wildcards, quotes, FTS5 operators.
TEXTS = [
    "Émile's Portrait",
    "émile portrait v2",
    "100% real_photo",
    "100 percent realphoto",
    'the "best" model',
    "it's a 'quoted' name",
    "cats AND dogs",
    "cats and dogs NEAR(x y)",
    "prefix* star",
    "a OR b NOT c",
    "caret ^start -minus +plus",
    "col:value (paren) {brace}",
    "STRASSE straße",
    "ſtyle (long s)",  # noqa: RUF001 - the long s is the point
    "µ micro and μ mu",
    "Ǆ dz digraph",
    "日本語のモデル",
    "emoji 😀 face",
    "back\\slash path",
    "tab\tand\nnewline",
    "aaaaaa",
    "ab",
]
QUERIES = [
    "émile",
    "ÉMILE",
    "mile",
    "100%",
    "100%_",
    "l_p",
    "%",
    "_",
    "real_photo",
    '"best"',
    '"',
    "'",
    "it's",
    "'quoted'",
    "AND",
    "cats AND dogs",
    "and dogs",
    "NEAR",
    "NEAR(x y)",
    "near(",
    "*",
    "prefix*",
    "fix* st",
    "a or b",
    "^start",
    "-minus",
    "+plus",
    "col:value",
    ":",
    "(paren)",
    "{brace}",
    "straße",
    "strasse",
    "ss",
    "style",
    "ſty",  # noqa: RUF001
    "µ",
    "μ mu",
    "ǆ",
    "dz",
    "日本",
    "のモデル",
    "😀",
    "oji 😀 f",
    "\\",
    "back\\s",
    "\tand",
    "\n",
    "aaa",
    "aaaa",
    "ab",
    "a",
    "zzz",
    "portrait v2",
    "model",
    "del",
]


def _records() -> list[dict[str, Any]]:
    out = []
    for i, text in enumerate(TEXTS):
        # The text lands in each searched field in turn: name, description, tag, source.
        where = i % 4
        fields: dict[str, Any] = {"description": f"plain description {i}"}
        if where == 1:
            fields["description"] = text
        elif where == 2:
            fields["tags"] = [text, "common"]
        elif where == 3:
            fields["source"] = text
        name = text if where == 0 else f"model {i:02d}"
        out.append(rec(name, base=("sd-1", "sdxl")[i % 2], path=f"/m/{i}.safetensors", **fields))
    return out


def _expected(records: list[dict[str, Any]], **filters: Any) -> list[str]:
    flt = RecordFilter.build(**filters)
    cfgs = [parse_config(r) for r in records]
    return [c.name for c in sorted((c for c in cfgs if flt.matches(c)), key=sort_key)]


@pytest.mark.parametrize("dense", [False, True], ids=["few-hits", "dense-walk"])
def test_free_text_is_a_literal_substring(store: ModelRecordServiceBase, dense: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if dense:  # every query counts as "many hits": SQLite walks the listing order instead
        monkeypatch.setattr("modeldepot.records.sql.dense_hits", lambda records, depth: 1)
    records = _records()
    store.add_models(records)
    for q in QUERIES:
        want = _expected(records, q=q)
        assert [m.name for m in store.search_models(q=q)] == want, q
        assert store.count_models(q=q) == len(want), q
        assert store.count_models(q=q, at_most=2) == min(len(want), 2), q
        assert [m.name for m in store.search_models(q=q, offset=1, limit=2)] == want[1:3], q
        want_sdxl = _expected(records, q=q, base="sdxl")
        assert [m.name for m in store.search_models(q=q, base="sdxl")] == want_sdxl, q
        assert store.count_models(q=q, base="sdxl") == len(want_sdxl), q
        want_tag = _expected(records, q=q, tag="COMMON")
        assert [m.name for m in store.search_models(q=q, tag="common")] == want_tag, q
        assert store.count_models(q=q, tag="common") == len(want_tag), q


def test_free_text_follows_updates_and_deletes(store: ModelRecordServiceBase) -> None:
    a = store.add_model(rec("alpha", description="first words"))
    b = store.add_model(rec("beta", description="other words"))
    assert [m.name for m in store.search_models(q="first")] == ["alpha"]
    store.update_model(a.key, {"description": "changed text"})
    assert store.search_models(q="first") == []
    assert [m.name for m in store.search_models(q="changed")] == ["alpha"]
    store.rename_model(b.key, "gamma-renamed")
    assert [m.name for m in store.search_models(q="renamed")] == ["gamma-renamed"]
    store.update_model(a.key, {"tags": ["NewTag"]})
    assert [m.name for m in store.search_models(q="newtag")] == ["alpha"]
    store.del_model(a.key)
    assert store.search_models(q="changed") == []
    assert store.count_models(q="words") == 1


FILTERS: list[dict[str, Any]] = [
    {"tag": "t0"},
    {"tag": "T1"},
    {"tag": ["t0", "t1"]},
    {"tag": ["t2", "t0", "t3"]},
    {"tag": "t0", "type": "lora"},
    {"tag": "t1", "type": "vae"},
    {"tag": "t0", "base": "sd-2"},  # through compatible_bases too
    {"tag": "t2", "base": "sdxl", "type": "main"},
    {"tag": "t0", "format": "checkpoint"},
    {"tag": "t3", "name": "n-007"},
    {"tag": "t1", "q": "desc 1"},
    {"tag": "t0", "q": "n-01"},
    {"tag": "nope"},
    {"q": "n-0"},
    {"q": "desc 3", "type": "lora"},
    {"q": "n-", "base": "sd-2"},
    {"type": "lora", "base": "sd-1"},
]


def _random_records(n: int) -> list[dict[str, Any]]:
    rnd = random.Random(5)
    kinds = [("lora", "lycoris"), ("main", "checkpoint"), ("vae", "checkpoint"), ("main", "diffusers")]
    out = []
    for i in range(n):
        t, f = kinds[rnd.randrange(len(kinds))]
        base = rnd.choice(["sd-1", "sdxl", "sd-2"])
        compat = ["sd-2"] if base == "sd-1" and t == "vae" else []
        tags = rnd.sample(["t0", "T1", "t2", "t3"], rnd.randrange(4))
        out.append(
            rec(
                f"n-{i % 40:03d}",
                t,
                f,
                base,
                compatible_bases=compat,
                tags=tags,
                path=f"/m/{i}",
                description=f"desc {i}",
            )
        )
    return out


def test_tag_and_filter_pages_match_the_reference(store: ModelRecordServiceBase) -> None:
    records = _random_records(160)  # names repeat across bases and types: the key breaks ties
    cfgs = store.add_models(records)
    for filters in FILTERS:
        flt = RecordFilter.build(**filters)
        want = [c.key for c in sorted((c for c in cfgs if flt.matches(c)), key=sort_key)]
        assert [m.key for m in store.search_models(**filters)] == want, filters
        assert store.count_models(**filters) == len(want), filters
        for cap in (1, 3, len(want), len(want) + 1):  # counting stops at the cap, never short of it
            assert store.count_models(**filters, at_most=cap) == min(len(want), cap), (filters, cap)
        for offset, limit in ((0, 5), (3, 7), (len(want) - 1, 5)):
            page = store.search_models(**filters, offset=max(offset, 0), limit=limit)
            assert [m.key for m in page] == want[max(offset, 0) : max(offset, 0) + limit], (filters, offset)


def test_tag_copies_follow_base_type_and_name(store: ModelRecordServiceBase) -> None:
    a = store.add_model(rec("zeta", tags=["x"]))
    store.add_model(rec("beta", tags=["x"], path="/m/beta"))
    assert [m.name for m in store.search_models(tag="x")] == ["beta", "zeta"]
    store.rename_model(a.key, "alpha")
    assert [m.name for m in store.search_models(tag="x")] == ["alpha", "beta"]
    store.update_model(a.key, {"base": "sdxl"})
    assert [m.name for m in store.search_models(tag="x", base="sdxl")] == ["alpha"]
    assert [m.name for m in store.search_models(tag="x")] == ["beta", "alpha"]  # sd-1 sorts before sdxl


# ---- SQLite plans --------------------------------------------------------------------------------


def _sqlite_store(tmp_path: Any, n: int = 600) -> ModelRecordServiceSQL:
    store = ModelRecordServiceSQL.from_db_file(tmp_path / "records.db")
    store.add_models(
        rec(
            f"m{i:04d}",
            ("lora", "vae")[i % 2],
            "lycoris" if i % 2 == 0 else "checkpoint",
            ("sd-1", "sdxl")[i % 3 > 0],
            tags=["common", f"rare{i % 100}"],
            description=f"number {i}",
            path=f"/m/{i}",
        )
        for i in range(n)
    )
    return store


@pytest.mark.parametrize("analyze", [False, True], ids=["no-stats", "analyzed"])
def test_sqlite_tag_pages_walk_an_ordered_index(tmp_path, analyze: bool) -> None:  # type: ignore[no-untyped-def]
    store = _sqlite_store(tmp_path)
    try:
        if analyze:
            with store.db.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        for filters in (
            {"tag": "common"},
            {"tag": "common", "type": "lora"},
            {"tag": ["common", "rare1"]},
            {"tag": "common", "base": "sdxl"},
        ):
            plan = store.explain(RecordFilter.build(**filters))
            assert "TEMP B-TREE" not in "\n".join(plan), (filters, plan)
            assert plan[0].startswith("SEARCH model_tags USING COVERING INDEX ix_model_tags_order"), (filters, plan)
    finally:
        store.close()


def test_sqlite_free_text_plans(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("modeldepot.records.sql.dense_hits", lambda records, depth: 100)  # "number" is dense
    store = _sqlite_store(tmp_path)
    try:
        # Few hits: the trigram index drives, whatever else is filtered (no walk of a range).
        for filters in (
            {"q": "number 12"},
            {"q": "number 12", "base": "sdxl"},
            {"q": "number 12", "tag": "common"},
            {"q": "number 12", "type": "lora"},
        ):
            plan = store.explain(RecordFilter.build(**filters))
            assert plan[0] == "SEARCH models USING INTEGER PRIMARY KEY (rowid=?)", (filters, plan)
            assert any("models_fts VIRTUAL TABLE" in line for line in plan), (filters, plan)
        # Many hits, or too short for trigrams: walk the listing order, no sort.
        for q in ("number", "1"):
            assert store.explain(RecordFilter.build(q=q)) == ["SCAN models USING INDEX ix_models_base_type_name"]
    finally:
        store.close()


def test_sqlite_dense_threshold_is_counted_in_the_index(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store = _sqlite_store(tmp_path, n=50)
    try:
        monkeypatch.setattr("modeldepot.records.sql.dense_hits", lambda records, depth: 11)
        # "number 1" is in 11 records (1, 10-19): at the threshold, so the walk.
        assert store.explain(RecordFilter.build(q="number 1"))[0].startswith("SCAN models")
        assert store.explain(RecordFilter.build(q="number 49"))[0].startswith("SEARCH models USING INTEGER")
        got = store.search_models(q="number 1")
        assert sorted(m.description or "" for m in got) == sorted(f"number {i}" for i in (1, *range(10, 20)))
        assert store.count_models(q="number 1") == 11
    finally:
        store.close()


def test_dense_threshold_grows_with_page_depth_and_size() -> None:
    assert 3000 < dense_hits(1_000_000, 50) < 5000
    assert 1000 < dense_hits(100_000, 50) < 1500
    assert dense_hits(100_000, 550) > dense_hits(100_000, 50)  # a deeper page walks further
    assert dense_hits(1_000_000, None) == 300_000  # all of them: walk everything or sort all hits
    assert dense_hits(0, 50) == dense_hits(0, None) == 1


def test_fts_phrase_is_one_literal_string() -> None:
    assert fts_phrase("a AND b") == '"a AND b"'
    assert fts_phrase('say "hi"') == '"say ""hi"""'
