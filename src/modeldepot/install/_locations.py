"""Extra locations: other copies of a registered model's content, remembered by path.

Registering a copy of a model already registered makes no second record; the copy's path is
remembered here (with its size and mtime), so ``scan`` knows it on the next run without hashing it
again, and says which model it duplicates. A location whose file changed or vanished is forgotten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from modeldepot.install._schema import ensure_schema

if TYPE_CHECKING:
    from modeldepot._db import Database


@dataclass(frozen=True)
class ExtraLocation:
    path: str
    model_key: str


def _fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if path.is_dir():
        # A folder's own mtime does not change when a file inside is rewritten: use the newest file.
        newest, total = st.st_mtime_ns, 0
        for p in path.rglob("*"):
            try:
                pst = p.stat()
            except OSError:
                continue
            if p.is_file():
                newest, total = max(newest, pst.st_mtime_ns), total + pst.st_size
        return total, newest
    return st.st_size, st.st_mtime_ns


def _ensure(db: Database) -> None:
    ensure_schema(db)


def record_location(db: Database, path: Path, model_key: str) -> None:
    """Remember ``path`` as another copy of model ``model_key``."""
    fp = _fingerprint(path)
    if fp is None:
        return
    _ensure(db)
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM install_locations WHERE path = :p"), {"p": str(path)})
        conn.execute(
            sa.text(
                "INSERT INTO install_locations (path, model_key, size, mtime_ns, recorded_at)"
                " VALUES (:p, :k, :s, :m, :t)"
            ),
            {"p": str(path), "k": model_key, "s": fp[0], "m": fp[1], "t": time.time()},
        )


def known_location(db: Database, path: Path) -> ExtraLocation | None:
    """The model ``path`` is a known copy of, if its file is unchanged since it was recorded."""
    _ensure(db)
    with db.connect() as conn:
        row = conn.execute(
            sa.text("SELECT model_key, size, mtime_ns FROM install_locations WHERE path = :p"), {"p": str(path)}
        ).first()
    if row is None:
        return None
    if _fingerprint(path) != (int(row[1]), int(row[2])):
        forget_location(db, path)  # changed or gone: it may not be that model any more
        return None
    return ExtraLocation(str(path), str(row[0]))


def forget_location(db: Database, path: Path) -> None:
    _ensure(db)
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM install_locations WHERE path = :p"), {"p": str(path)})


def forget_model_locations(db: Database, model_key: str) -> None:
    """A model was removed: its copies are no longer copies of anything registered."""
    _ensure(db)
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM install_locations WHERE model_key = :k"), {"k": model_key})


def locations_of(db: Database, model_key: str) -> list[str]:
    _ensure(db)
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT path FROM install_locations WHERE model_key = :k ORDER BY path"), {"k": model_key}
        )
        return [str(r[0]) for r in rows]
