"""Walking a model's source tree into (relpath, file) pairs, and manifest rows in the database."""

# os.* on purpose: errno-level fallthrough, fd-based I/O, and fault injection in tests.
# ruff: noqa: PTH116

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modeldepot._fs import safe_relpath
from modeldepot.errors import ModelNotFoundException, StorageError, UnknownModelException, UnsafePathError
from modeldepot.records._paths import ModelPaths
from modeldepot.storage._blobs import Tap, hash_path
from modeldepot.storage._schema import q
from modeldepot.storage.base import ManifestEntry, ModelManifest


def walk_source(src: Path) -> tuple[str, list[tuple[str, Path]]]:
    """The files of a model: ``("file", [(name, path)])`` or ``("folder", [(relpath, path), ...])``.

    Symlinks inside a folder are followed only when their target stays inside it; a symlink
    loop, a link leaving the folder or a special file (socket, fifo, device) is an error.
    """
    try:
        st = os.stat(src)
    except FileNotFoundError as exc:
        raise ModelNotFoundException(f"{src}: no such file or folder", path=src) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"{src} is a symlink loop", path=src) from exc
        raise StorageError(f"cannot read {src}: {exc}", path=src) from exc
    if stat.S_ISREG(st.st_mode):
        safe_relpath(src.name)
        return "file", [(src.name, src)]
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{src} is neither a file nor a folder", path=src)
    root = src.resolve()
    out: list[tuple[str, Path]] = []
    _walk(src, root, "", {root}, out)
    if not out:
        raise StorageError(f"{src} holds no files to store", path=src)
    out.sort(key=lambda item: item[0])
    return "folder", out


def _walk(folder: Path, root: Path, prefix: str, ancestors: set[Path], out: list[tuple[str, Path]]) -> None:
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        safe_relpath(rel)
        path = Path(entry.path)
        if entry.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise StorageError(f"{path}: broken symlink or symlink loop ({exc})", path=path) from exc
            if not target.is_relative_to(root):
                raise UnsafePathError(f"{path} links outside the model folder (to {target})", path=path)
        else:
            target = path
        st = os.stat(target)
        if stat.S_ISDIR(st.st_mode):
            real = target.resolve()
            if real in ancestors:
                raise StorageError(f"{path}: symlink loop (points back to {real})", path=path)
            _walk(path, root, rel + "/", ancestors | {real}, out)
        elif stat.S_ISREG(st.st_mode):
            out.append((rel, path))
        else:
            raise StorageError(f"{path} is a special file (not a regular file or folder)", path=path)


def hash_tree(path: Path, taps: Mapping[str, Tap] | None = None) -> tuple[str, list[ManifestEntry]]:
    """Hash every file of a file or folder without storing anything (in-place models).

    ``taps`` (relpath -> tap) see the bytes of those files in the same read (the part hashes).
    """
    kind, files = walk_source(path)
    entries = [
        ManifestEntry(rel, hash_path(p, (taps or {}).get(rel)), p.stat().st_size, stat.S_IMODE(p.stat().st_mode))
        for rel, p in files
    ]
    return kind, entries


def insert_model(
    conn: Connection,
    key: str,
    kind: str,
    entries: Iterable[ManifestEntry],
    *,
    inplace: bool,
    dest: str | None,
    now: float,
) -> None:
    """``dest``: as stored (``ModelPaths.stored``: relative to the models folder when inside it)."""
    exists = conn.execute(q("SELECT 1 FROM storage_models WHERE model_key = :k"), {"k": key}).first()
    if exists:
        from modeldepot.errors import DuplicateModelException

        raise DuplicateModelException(f"the store already holds a manifest for model {key}", key=key)
    conn.execute(
        q(
            "INSERT INTO storage_models (model_key, kind, inplace, dest, link_mode, created_at)"
            " VALUES (:k, :kind, :inplace, :dest, NULL, :now)"
        ),
        {"k": key, "kind": kind, "inplace": int(inplace), "dest": dest, "now": now},
    )
    rows = []
    for e in entries:
        safe_relpath(e.relpath)
        rows.append({"k": key, "r": e.relpath, "d": e.digest, "s": e.size, "m": e.mode})
    if rows:
        conn.execute(
            q("INSERT INTO storage_manifest (model_key, relpath, digest, size, mode) VALUES (:k, :r, :d, :s, :m)"),
            rows,
        )


def load_manifest(conn: Connection, key: str, paths: ModelPaths) -> ModelManifest:
    row = conn.execute(
        q("SELECT kind, inplace, dest, link_mode FROM storage_models WHERE model_key = :k"), {"k": key}
    ).first()
    if row is None:
        raise UnknownModelException(f"the store holds no manifest for model {key!r}", key=key)
    files = conn.execute(
        q("SELECT relpath, digest, size, mode FROM storage_manifest WHERE model_key = :k ORDER BY relpath"),
        {"k": key},
    ).all()
    entries = []
    for r in files:
        safe_relpath(r[0])  # a tampered manifest must not steer a write outside the model folder
        entries.append(ManifestEntry(str(r[0]), str(r[1]), int(r[2]), int(r[3])))
    return ModelManifest(
        key=key,
        kind="file" if row[0] == "file" else "folder",
        inplace=bool(row[1]),
        dest=Path(paths.readable(str(row[2]))) if row[2] else None,
        link_mode=row[3],
        entries=tuple(entries),
    )


def all_keys(conn: Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute(q("SELECT model_key FROM storage_models ORDER BY model_key"))]


def set_materialised(conn: Connection, key: str, dest: str, mode: str) -> None:
    conn.execute(
        sa.text("UPDATE storage_models SET dest = :d, link_mode = :m WHERE model_key = :k"),
        {"d": dest, "m": mode, "k": key},
    )
