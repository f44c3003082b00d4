"""The seed's normalized model manager: pipelines made of shared, refcounted parts.

A *part* is a set of blobs that a loader opens as one unit (a diffusers ``unet/`` or ``vae/``
folder, a tokenizer, a single checkpoint file), identified by its part digest: blake3 over its
sorted ``(relpath, blob digest)`` list. Two pipelines shipping a byte-identical VAE share one part
(one row in ``nm_model_path``, refcount 2), which is itself stored once in the content store
(key ``nm-part-<digest>``) and materialised once under ``models/_parts/<dd>/<digest>``.
"""

# os.* on purpose: errno-level fallthrough, fd-based I/O, and fault injection in tests.
# ruff: noqa: PTH104, PTH211

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from modeldepot._db import Database
from modeldepot._fs import fsync_dir, join_inside
from modeldepot.errors import DuplicateModelException, StorageError, UnknownModelException
from modeldepot.storage._blobs import new_hasher
from modeldepot.storage._links import place
from modeldepot.storage._manifests import walk_source
from modeldepot.storage._nm_schema import migrate
from modeldepot.storage._schema import q
from modeldepot.storage._store import BUILD_MARK, ContentStore, _remove_any, _swap_into_place
from modeldepot.storage.base import ManifestEntry, StagedModel


@dataclass(frozen=True)
class PartInfo:
    """One part; ``path`` is a folder a diffusers loader can open (or the file of a single-file part)."""

    digest: str
    submodel: str | None
    path: Path
    size: int
    refcount: int
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    key: str
    name: str
    type: str
    format: str
    base: str
    compatible_bases: tuple[str, ...]
    path: Path
    parts: dict[str, PartInfo] = field(default_factory=dict)  # folder name ("" for a whole-model part)
    is_pipeline: bool = False


def part_digest(kind: str, entries: tuple[ManifestEntry, ...]) -> str:
    h = new_hasher()
    h.update(f"{kind}\n".encode())
    for e in sorted(entries, key=lambda e: e.relpath):
        h.update(f"{e.relpath}\0{e.digest}\n".encode())
    return str(h.hexdigest())


def _value(v: Any) -> str:
    return str(getattr(v, "value", v))


class NormalizedStore:
    """``import_model`` / ``get_model_by_name`` / ``get_pipeline_by_name`` / ``export`` over a ContentStore."""

    def __init__(self, store: ContentStore, db: Database | None = None) -> None:
        self.store = store
        self.db = db or store.db
        migrate(self.db)
        self.parts_root = store.config.models_path / "_parts"
        self.pipelines_root = store.config.models_path / "_pipelines"

    # Import -----------------------------------------------------------------------------------

    def _stage(self, files: list[tuple[str, Path]], kind: str, source: Path) -> StagedModel:
        stage_id = f"nm-{uuid.uuid4().hex}"
        register = self.store._pending(stage_id)
        entries = []
        for rel, p in files:
            info = self.store.blobs.add_file(p, register=register)
            entries.append(ManifestEntry(rel, info.digest, info.size, p.stat().st_mode & 0o777))
        return StagedModel(stage_id, "file" if kind == "file" else "folder", tuple(entries), source)

    def import_model(
        self,
        path: str | Path,
        name: str | None = None,
        base: str | None = None,
        type: str | None = None,
        format: str | None = None,
    ) -> str:
        """Import a diffusers folder or a single file; returns the new model's key.

        ``type``/``base`` default to :func:`modeldepot.identify.identify`'s verdict.
        """
        src = Path(path).expanduser()
        kind, files = walk_source(src)
        ident = None
        if type is None or base is None or format is None:
            from modeldepot.identify import identify

            ident = identify(src)
        mtype = _value(type if type is not None else ident.type)  # type: ignore[union-attr]
        mbase = _value(base if base is not None else ident.base)  # type: ignore[union-attr]
        if format is not None:
            fmt = _value(format)
        elif ident is not None:
            fmt = _value(ident.format)
        else:
            fmt = "diffusers" if kind == "folder" else "checkpoint"
        bases = [mbase, *sorted({_value(b) for b in (ident.compatible_bases if ident else ())} - {mbase})]
        name = name or (src.stem if kind == "file" else src.name)
        submodels = {v.split("/", 1)[0]: _value(k) for k, v in (ident.submodels.items() if ident else ())}
        is_pipeline = kind == "folder" and mtype == "main" and any("/" in rel for rel, _ in files)

        groups: dict[str, list[tuple[str, Path]]] = defaultdict(list)
        top: list[tuple[str, Path]] = []
        if is_pipeline:
            for rel, p in files:
                if "/" in rel:
                    folder, rest = rel.split("/", 1)
                    groups[folder].append((rest, p))
                else:
                    top.append((rel, p))
        else:
            groups[""] = files
        staged = {folder: self._stage(fl, kind if folder == "" else "folder", src) for folder, fl in groups.items()}
        staged_top = self._stage(top, "folder", src) if top else None

        key = uuid.uuid4().hex
        new_parts: list[str] = []
        all_stages = list(staged.values()) + ([staged_top] if staged_top else [])
        try:
            with self.db.begin() as conn:
                if conn.execute(
                    q("SELECT model_id FROM nm_model_name WHERE name = :n AND type = :t"), {"n": name, "t": mtype}
                ).first():
                    raise DuplicateModelException(f"a {mtype} model named {name!r} is already imported")
                digests: dict[str, str] = {}
                for folder, st in staged.items():
                    pd = part_digest(st.kind, st.entries)
                    digests[folder] = pd
                    if conn.execute(q("SELECT 1 FROM nm_model_path WHERE part_digest = :p"), {"p": pd}).first():
                        continue  # an identical part exists: share it
                    dest = self.parts_root / pd[:2] / pd
                    if st.kind == "file":
                        dest = dest / st.entries[0].relpath
                    skey = f"nm-part-{pd}"
                    self.store.commit(conn, skey, st, dest=dest)
                    conn.execute(
                        q(
                            "INSERT INTO nm_model_path (part_digest, store_key, kind, path, size)"
                            " VALUES (:p, :k, :kind, :path, :s)"
                        ),
                        {"p": pd, "k": skey, "kind": st.kind, "path": str(dest), "s": st.size},
                    )
                    new_parts.append(skey)
                conn.execute(
                    q(
                        "INSERT INTO nm_model_name (model_id, name, type, format, part_digest, created_at)"
                        " VALUES (:k, :n, :t, :f, :p, :now)"
                    ),
                    {
                        "k": key,
                        "n": name,
                        "t": mtype,
                        "f": fmt,
                        "p": None if is_pipeline else digests[""],
                        "now": time.time(),
                    },
                )
                conn.execute(
                    q("INSERT INTO nm_model_base (model_id, base, is_primary) VALUES (:k, :b, :p)"),
                    [{"k": key, "b": b, "p": int(b == mbase)} for b in bases],
                )
                if is_pipeline:
                    top_key = None
                    if staged_top is not None:
                        top_key = f"nm-pipe-{key}"
                        self.store.commit(conn, top_key, staged_top)
                    conn.execute(
                        q("INSERT INTO nm_pipeline (model_id, top_key, path) VALUES (:k, :t, :p)"),
                        {"k": key, "t": top_key, "p": str(self.pipelines_root / key)},
                    )
                    conn.execute(
                        q(
                            "INSERT INTO nm_pipeline_parts (model_id, submodel, folder, part_digest)"
                            " VALUES (:k, :s, :f, :p)"
                        ),
                        [{"k": key, "s": submodels.get(f, f), "f": f, "p": pd} for f, pd in digests.items()],
                    )
                for st in all_stages:  # shared parts: their new blobs are duplicates, let gc have them
                    conn.execute(q("DELETE FROM storage_pending WHERE stage_id = :s"), {"s": st.stage_id})
        except BaseException:
            for st in all_stages:
                self.store.discard(st)
            raise
        for skey in new_parts:
            self.store.materialise(skey)
        if is_pipeline:
            self._build_pipeline_folder(key)
        return key

    def _build_pipeline_folder(self, key: str) -> Path:
        """``models/_pipelines/<key>``: top-level files linked from blobs, part folders as symlinks."""
        with self.db.connect() as c:
            top_key, path = c.execute(q("SELECT top_key, path FROM nm_pipeline WHERE model_id = :k"), {"k": key}).one()
            parts = c.execute(
                q(
                    "SELECT pp.folder, p.path FROM nm_pipeline_parts pp JOIN nm_model_path p"
                    " ON p.part_digest = pp.part_digest WHERE pp.model_id = :k"
                ),
                {"k": key},
            ).all()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        build = target.parent / f"{BUILD_MARK}{target.name}.{uuid.uuid4().hex[:8]}"
        build.mkdir()
        try:
            if top_key:
                modes = list(self.store.config.link_modes)
                for e in self.store.manifest(top_key).entries:
                    out = join_inside(build, e.relpath)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    place(self.store.blobs, e.digest, out, join_inside(target, e.relpath), modes)
            for folder, part_path in parts:
                os.symlink(os.path.relpath(part_path, target), join_inside(build, folder))
            _swap_into_place(build, target)
        except BaseException:
            _remove_any(build)
            raise
        fsync_dir(target.parent)
        return target

    # Queries ----------------------------------------------------------------------------------

    def _part(self, c: Connection, pd: str, submodel: str | None) -> PartInfo:
        row = c.execute(
            q(
                "SELECT p.store_key, p.path, p.size, r.refcount FROM nm_model_path p"
                " JOIN nm_part_refcounts r ON r.part_digest = p.part_digest WHERE p.part_digest = :p"
            ),
            {"p": pd},
        ).one()
        files = c.execute(
            q("SELECT relpath FROM storage_manifest WHERE model_key = :k ORDER BY relpath"), {"k": row[0]}
        ).all()
        return PartInfo(pd, submodel, Path(row[1]), int(row[2]), int(row[3]), tuple(str(f[0]) for f in files))

    def _info(self, c: Connection, key: str) -> ModelInfo:
        row = c.execute(
            q("SELECT name, type, format, part_digest FROM nm_model_name WHERE model_id = :k"), {"k": key}
        ).one()
        bases = c.execute(
            q("SELECT base, is_primary FROM nm_model_base WHERE model_id = :k ORDER BY is_primary DESC, base"),
            {"k": key},
        ).all()
        pipe = c.execute(q("SELECT path FROM nm_pipeline WHERE model_id = :k"), {"k": key}).first()
        if pipe is not None:
            rows = c.execute(
                q("SELECT folder, submodel, part_digest FROM nm_pipeline_parts WHERE model_id = :k ORDER BY folder"),
                {"k": key},
            ).all()
            parts = {str(f): self._part(c, str(pd), str(s)) for f, s, pd in rows}
            path = Path(pipe[0])
        else:
            part = self._part(c, str(row[3]), None)
            parts = {"": part}
            path = part.path
        return ModelInfo(
            key=key,
            name=str(row[0]),
            type=str(row[1]),
            format=str(row[2]),
            base=str(bases[0][0]) if bases else "any",
            compatible_bases=tuple(str(b[0]) for b in bases),
            path=path,
            parts=parts,
            is_pipeline=pipe is not None,
        )

    def get_model_by_name(self, name: str, type: Any) -> ModelInfo:
        with self.db.connect() as c:
            row = c.execute(
                q("SELECT model_id FROM nm_model_name WHERE name = :n AND type = :t"), {"n": name, "t": _value(type)}
            ).first()
            if row is None:
                raise UnknownModelException(f"no {_value(type)} model named {name!r}")
            return self._info(c, str(row[0]))

    def _find(self, c: Connection, name: str, base: Any, pipeline_only: bool = False) -> str:
        rows = c.execute(
            q(
                "SELECT n.model_id FROM nm_model_name n JOIN nm_model_base b ON b.model_id = n.model_id"
                " WHERE n.name = :n AND b.base = :b ORDER BY n.created_at"
            ),
            {"n": name, "b": _value(base)},
        ).all()
        keys = [str(r[0]) for r in rows]
        if pipeline_only:
            pipes = {str(r[0]) for r in c.execute(q("SELECT model_id FROM nm_pipeline"))}
            keys = [k for k in keys if k in pipes]
        if not keys:
            what = "pipeline" if pipeline_only else "model"
            raise UnknownModelException(f"no {what} named {name!r} compatible with base {_value(base)!r}")
        return keys[0]

    def get_pipeline_by_name(self, name: str, base: Any, submodel: Any) -> PartInfo:
        """The part ``submodel`` (e.g. ``vae``) of pipeline ``name``; its ``path`` opens with diffusers."""
        sub = _value(submodel)
        with self.db.connect() as c:
            key = self._find(c, name, base, pipeline_only=True)
            row = c.execute(
                q(
                    "SELECT part_digest, submodel FROM nm_pipeline_parts WHERE model_id = :k"
                    " AND (submodel = :s OR folder = :s) ORDER BY folder"
                ),
                {"k": key, "s": sub},
            ).first()
            if row is None:
                raise UnknownModelException(f"pipeline {name!r} has no submodel {sub!r}")
            return self._part(c, str(row[0]), str(row[1]))

    def list_models(self) -> list[ModelInfo]:
        with self.db.connect() as c:
            keys = [str(r[0]) for r in c.execute(q("SELECT model_id FROM nm_model_name ORDER BY name"))]
            return [self._info(c, k) for k in keys]

    def part_refcounts(self) -> dict[str, int]:
        with self.db.connect() as c:
            return {str(r[0]): int(r[1]) for r in c.execute(q("SELECT part_digest, refcount FROM nm_part_refcounts"))}

    # Export / delete --------------------------------------------------------------------------

    def export(self, name: str, base: Any, destination: str | Path) -> Path:
        """Write the model back in its native layout, byte-identical to what was imported.

        A pipeline becomes the folder ``destination`` (which must not exist); a single file goes
        to ``destination`` itself, or under its original name when ``destination`` is a folder.
        Every byte is re-hashed on the way out.
        """
        dest = Path(destination).expanduser()
        with self.db.connect() as c:
            info = self._info(c, self._find(c, name, base))
            top_key = c.execute(q("SELECT top_key FROM nm_pipeline WHERE model_id = :k"), {"k": info.key}).first()
            keys = {
                folder: str(
                    c.execute(q("SELECT store_key FROM nm_model_path WHERE part_digest = :p"), {"p": p.digest}).one()[0]
                )
                for folder, p in info.parts.items()
            }
        plan: list[tuple[str, ManifestEntry]] = []
        if top_key is not None and top_key[0]:
            plan += [(e.relpath, e) for e in self.store.manifest(str(top_key[0])).entries]
        single = not info.is_pipeline and self.store.manifest(keys[""]).kind == "file"
        for folder, skey in keys.items():
            for e in self.store.manifest(skey).entries:
                plan.append((f"{folder}/{e.relpath}" if folder else e.relpath, e))
        if single and dest.is_dir():
            dest = dest / plan[0][0]
        if dest.exists() or dest.is_symlink():
            raise StorageError(f"export destination {dest} already exists", path=dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        build = dest.parent / f".{dest.name}.export-{uuid.uuid4().hex[:8]}"
        try:
            if single:
                self._write(plan[0][1], build)
            else:
                build.mkdir()
                for rel, e in plan:
                    out = join_inside(build, rel)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    self._write(e, out)
            os.rename(build, dest)
        except BaseException:
            _remove_any(build)
            raise
        fsync_dir(dest.parent)
        return dest

    def _write(self, e: ManifestEntry, out: Path) -> None:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self.store.blobs.copy_out(e.digest, fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(out, e.mode or 0o644)

    def delete(self, key: str) -> None:
        """Remove a model; parts no other model uses are removed from the store too."""
        with self.db.begin() as conn:
            if not conn.execute(q("SELECT 1 FROM nm_model_name WHERE model_id = :k"), {"k": key}).first():
                raise UnknownModelException(f"no normalized model with key {key!r}", key=key)
            pds = {
                str(r[0])
                for r in conn.execute(q("SELECT part_digest FROM nm_pipeline_parts WHERE model_id = :k"), {"k": key})
            }
            own = conn.execute(q("SELECT part_digest FROM nm_model_name WHERE model_id = :k"), {"k": key}).one()[0]
            if own:
                pds.add(str(own))
            pipe = conn.execute(q("SELECT top_key, path FROM nm_pipeline WHERE model_id = :k"), {"k": key}).first()
            conn.execute(q("DELETE FROM nm_pipeline_parts WHERE model_id = :k"), {"k": key})
            conn.execute(q("DELETE FROM nm_pipeline WHERE model_id = :k"), {"k": key})
            conn.execute(q("DELETE FROM nm_model_base WHERE model_id = :k"), {"k": key})
            conn.execute(q("DELETE FROM nm_model_name WHERE model_id = :k"), {"k": key})
            if pipe is not None and pipe[0]:
                self.store.delete_model(str(pipe[0]), conn)
            for pd in pds:
                ref = conn.execute(q("SELECT refcount FROM nm_part_refcounts WHERE part_digest = :p"), {"p": pd}).one()[
                    0
                ]
                if int(ref) == 0:
                    skey = conn.execute(
                        q("SELECT store_key FROM nm_model_path WHERE part_digest = :p"), {"p": pd}
                    ).one()[0]
                    conn.execute(q("DELETE FROM nm_model_path WHERE part_digest = :p"), {"p": pd})
                    self.store.delete_model(str(skey), conn)
        if pipe is not None and pipe[1]:
            _remove_any(Path(pipe[1]))
        for pd in pds:  # a single-file part leaves its empty <digest>/ folder behind
            folder = self.parts_root / pd[:2] / pd
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def recover(self) -> list[str]:
        """Rebuild missing pipeline folders (after a crash); parts are rebuilt by ContentStore.recover."""
        with self.db.connect() as c:
            rows = c.execute(q("SELECT model_id, path FROM nm_pipeline")).all()
        if self.pipelines_root.is_dir():
            for leftover in self.pipelines_root.glob(f"{BUILD_MARK}*"):
                _remove_any(leftover)
        rebuilt = []
        for key, path in rows:
            if path and not Path(path).exists():
                self._build_pipeline_folder(str(key))
                rebuilt.append(str(key))
        return rebuilt
