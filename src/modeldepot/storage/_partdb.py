"""Part rows (``nm_part``, ``nm_part_base``, ``nm_model_part``): written with a model's manifest,
removed with it. A part no model uses any more is dropped, with its own materialised component."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Connection

from modeldepot.storage._parts import Part
from modeldepot.storage._schema import q


@dataclass(frozen=True)
class PartRow:
    """A part as stored: ``path``/``store_key`` are set once it has its own materialised copy."""

    part_id: str
    kind: str
    submodel: str
    size: int
    bases: tuple[str, ...]
    refcount: int
    store_key: str | None
    path: Path | None


def record_parts(conn: Connection, key: str, parts: Iterable[Part]) -> None:
    """Record ``key``'s parts (in the caller's transaction, beside its manifest)."""
    for p in parts:
        conn.execute(
            q(
                "INSERT INTO nm_part (part_id, kind, submodel, size) VALUES (:p, :k, :s, :z)"
                " ON CONFLICT (part_id) DO NOTHING"
            ),
            {"p": p.part_id, "k": p.kind, "s": p.submodel, "z": p.size},
        )
        for b in p.bases:
            conn.execute(
                q("INSERT INTO nm_part_base (part_id, base) VALUES (:p, :b) ON CONFLICT DO NOTHING"),
                {"p": p.part_id, "b": b},
            )
        conn.execute(
            q(
                "INSERT INTO nm_model_part (model_key, folder, submodel, part_id, embedded)"
                " VALUES (:m, :f, :s, :p, :e) ON CONFLICT (model_key, folder) DO NOTHING"
            ),
            {"m": key, "f": p.folder, "s": p.submodel, "p": p.part_id, "e": int(p.embedded)},
        )


def forget_model(conn: Connection, key: str) -> list[str]:
    """Drop ``key``'s part rows; returns the store keys of parts nobody uses any more."""
    ids = [str(r[0]) for r in conn.execute(q("SELECT part_id FROM nm_model_part WHERE model_key = :m"), {"m": key})]
    conn.execute(q("DELETE FROM nm_model_part WHERE model_key = :m"), {"m": key})
    orphans: list[str] = []
    for pid in ids:
        if conn.execute(q("SELECT 1 FROM nm_model_part WHERE part_id = :p"), {"p": pid}).first():
            continue
        row = conn.execute(q("SELECT store_key FROM nm_part WHERE part_id = :p"), {"p": pid}).first()
        conn.execute(q("DELETE FROM nm_part_base WHERE part_id = :p"), {"p": pid})
        conn.execute(q("DELETE FROM nm_part WHERE part_id = :p"), {"p": pid})
        if row is not None and row[0]:
            orphans.append(str(row[0]))
    return orphans


def part_row(conn: Connection, part_id: str) -> PartRow:
    row = conn.execute(
        q(
            "SELECT p.kind, p.submodel, p.size, p.store_key, p.path, u.refcount FROM nm_part p"
            " JOIN nm_part_use u ON u.part_id = p.part_id WHERE p.part_id = :p"
        ),
        {"p": part_id},
    ).one()
    bases = tuple(
        str(b[0])
        for b in conn.execute(q("SELECT base FROM nm_part_base WHERE part_id = :p ORDER BY base"), {"p": part_id})
    )
    return PartRow(
        part_id,
        str(row[0]),
        str(row[1]),
        int(row[2]),
        bases,
        int(row[5]),
        str(row[3]) if row[3] else None,
        Path(row[4]) if row[4] else None,
    )


def model_parts(conn: Connection, key: str) -> list[tuple[str, str, str, bool]]:
    """(folder, submodel, part id, embedded) of one model."""
    rows = conn.execute(
        q("SELECT folder, submodel, part_id, embedded FROM nm_model_part WHERE model_key = :m ORDER BY folder"),
        {"m": key},
    ).all()
    return [(str(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in rows]


def set_part_copy(conn: Connection, part_id: str, store_key: str, path: Path) -> None:
    conn.execute(
        q("UPDATE nm_part SET store_key = :k, path = :path WHERE part_id = :p"),
        {"k": store_key, "path": str(path), "p": part_id},
    )


def part_refcounts(conn: Connection) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in conn.execute(q("SELECT part_id, refcount FROM nm_part_use"))}


def embedded_parts(conn: Connection) -> list[tuple[str, int, int, int]]:
    """(part id, size, single files holding it whole, split models holding it) per embedded part.

    A model is "split" when its manifest is a folder of component files (``split_single_files``).
    """
    rows = conn.execute(
        q(
            "SELECT mp.part_id, p.size,"
            " COUNT(DISTINCT CASE WHEN s.kind = 'file' THEN mp.model_key END),"
            " COUNT(DISTINCT CASE WHEN s.kind <> 'file' THEN mp.model_key END)"
            " FROM nm_model_part mp JOIN nm_part p ON p.part_id = mp.part_id"
            " JOIN storage_models s ON s.model_key = mp.model_key AND s.inplace = 0"
            " WHERE mp.embedded = 1 GROUP BY mp.part_id, p.size"
        )
    ).all()
    return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]
