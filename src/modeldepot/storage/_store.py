"""``ContentStore``: the one place where model bytes live (DESIGN.md §3)."""

# os.* on purpose: errno-level fallthrough, fd-based I/O, and fault injection in tests.
# ruff: noqa: PTH104

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from sqlalchemy.engine import Connection

from modeldepot._db import Database
from modeldepot._fs import fsync_dir, join_inside, remove_any, safe_relpath
from modeldepot.config import DepotConfig
from modeldepot.errors import ModelDepotError, NotAllowedError, StorageError, UnknownModelException
from modeldepot.events import EventBus
from modeldepot.records._paths import ModelPaths
from modeldepot.storage import _gc, _manifests, _nm_schema, _partdb, _verify
from modeldepot.storage._blobs import BlobStore, KnownDigest, Tap
from modeldepot.storage._links import place
from modeldepot.storage._parts import Part
from modeldepot.storage._schema import migrate, q
from modeldepot.storage.base import (
    BlobInfo,
    BlobMirror,
    DuReport,
    GcReport,
    ManifestEntry,
    MaterialiseResult,
    ModelManifest,
    StagedModel,
    VerifyReport,
    crashpoint,
)

log = logging.getLogger(__name__)
BUILD_MARK = ".mdbuild-"
TRASH_MARK = ".mdtrash-"


class ContentStore:
    """Content-addressed blobs + per-model manifests + materialised folders under ``models/``.

    Materialised files are read-only. A hardlinked file shares the blob's inode and mode, so a
    user who chmods and edits it edits the blob itself: :meth:`verify` then reports the blob as
    corrupt (and every model using it) and ``repair`` restores it from a good copy if one exists.

    Typical install (the installer owns the record)::

        staged = store.stage(src, move=False)
        with db.begin() as conn:
            store.commit(conn, key, staged, dest=dest)
            records.add_model(cfg, conn=conn)
        store.release_sources(staged)  # move mode only: the sources go once the commit is durable
        store.materialise(key)
    """

    def __init__(self, config: DepotConfig, db: Database, events: EventBus | None = None) -> None:
        self.config = config
        self.db = db
        self.events = events
        migrate(db)
        _nm_schema.migrate(db)  # part rows live and die with manifests
        self.blobs = BlobStore(config.blobs_dir)
        # Destinations under the models folder are stored relative to it: in a fleet every worker
        # reads the same manifest and materialises it under its own home.
        self.paths = ModelPaths.of(config.models_path)
        #: The fleet's bucket (``modeldepot.fleet``), set by the composition root when configured.
        self.mirror: BlobMirror | None = None
        self._modes_logged: set[str] = set()

    def __repr__(self) -> str:
        return f"ContentStore(blobs={self.config.blobs_dir}, models={self.config.models_path})"

    def _emit(self, name: str, **payload: object) -> None:
        if self.events is not None:
            self.events.emit(name, **payload)

    # Ingest ---------------------------------------------------------------------------------

    def _pending(self, stage_id: str) -> Callable[[str, int], None]:
        def register(digest: str, size: int) -> None:
            with self.db.begin() as conn:
                conn.execute(
                    q(
                        "INSERT INTO storage_pending (stage_id, digest, created_at) VALUES (:s, :d, :t)"
                        " ON CONFLICT DO NOTHING"
                    ),
                    {"s": stage_id, "d": digest, "t": time.time()},
                )

        return register

    def add_file(self, path: str | Path, move: bool = False) -> BlobInfo:
        """Store one file as a blob (protected from gc for the grace period only)."""
        p = Path(path)
        _manifests.walk_source(p)  # clear errors for missing paths / folders
        if p.is_dir():
            raise StorageError(f"{p} is a folder; use stage() for folders", path=p)
        info = self.blobs.add_file(
            p, move=move, register=self._pending(f"add-{uuid.uuid4().hex}"), distrust=self.is_known_bad
        )
        if info.healed:
            self._after_heal([info.digest])
        return info

    def stage(
        self,
        src: str | Path,
        move: bool = False,
        taps: Mapping[str, Tap] | None = None,
        known: Mapping[str, KnownDigest] | None = None,
    ) -> StagedModel:
        """Ingest every file of ``src`` into blobs; nothing is owned by a model until :meth:`commit`.

        ``taps`` (relpath -> tap) see the bytes of those files in the same read (the part hashes).
        ``known`` (relpath -> the blake3 a download took while writing the file): a file moved in
        whose ``stat`` is unchanged since is not read again.

        A blob a verify found damaged is replaced by the ingested content and every model using it
        is rebuilt (``StagedModel.healed``). If ingesting fails (a full disk), the blobs this
        stage created and nobody else uses are removed again: nothing half-done stays behind.
        """
        src = Path(src)
        kind, files = _manifests.walk_source(src)
        stage_id = f"stage-{uuid.uuid4().hex}"
        register = self._pending(stage_id)
        entries: list[ManifestEntry] = []
        healed: list[str] = []
        try:
            for rel, path in files:
                mode = path.stat().st_mode & 0o777
                info = self.blobs.add_file(
                    path,
                    move=move,
                    register=register,
                    keep_source=True,
                    distrust=self.is_known_bad,
                    tap=(taps or {}).get(rel),
                    known=(known or {}).get(rel),
                )
                entries.append(ManifestEntry(rel, info.digest, info.size, mode))
                if info.healed:
                    healed.append(info.digest)
        except BaseException:
            self._abort_stage(stage_id)
            raise
        crashpoint("staged")
        if healed:
            self._after_heal(healed)
        if self.mirror is not None:
            # Before any record exists: a fleet's record always names blobs the bucket holds.
            try:
                self.mirror.push(tuple(entries))
            except BaseException:
                self._abort_stage(stage_id)
                raise
        return StagedModel(
            stage_id=stage_id,
            kind="file" if kind == "file" else "folder",
            entries=tuple(entries),
            source=src,
            move=move,
            healed=tuple(healed),
        )

    def _abort_stage(self, stage_id: str) -> None:
        """Drop a failed stage's pending rows and the blobs only it had (no manifest, no other stage)."""
        with self.db.connect() as c:
            digests = [
                str(r[0])
                for r in c.execute(q("SELECT digest FROM storage_pending WHERE stage_id = :s"), {"s": stage_id})
            ]
        self._drop_unused(stage_id, digests)

    def abandon(self, staged: StagedModel) -> None:
        """A stage whose install failed after ingest: forget it and remove the blobs no one else uses.

        Unlike :meth:`discard` (the content is kept, e.g. a duplicate), nothing of it stays on disk.
        """
        self._drop_unused(staged.stage_id, [e.digest for e in staged.entries])

    def _drop_unused(self, stage_id: str, digests: list[str]) -> None:
        with self.blobs.locked(), self.db.begin() as conn:
            conn.execute(q("DELETE FROM storage_pending WHERE stage_id = :s"), {"s": stage_id})
            for digest in dict.fromkeys(digests):
                used = conn.execute(
                    q(
                        "SELECT 1 FROM storage_manifest WHERE digest = :d"
                        " UNION ALL SELECT 1 FROM storage_pending WHERE digest = :d"
                    ),
                    {"d": digest},
                ).first()
                if used is None:
                    self.blobs.remove(digest)

    # Damaged blobs ---------------------------------------------------------------------------

    def is_known_bad(self, digest: str) -> bool:
        """True if a verify found this blob corrupt or missing (and no ingest has healed it since)."""
        with self.db.connect() as c:
            row = c.execute(q("SELECT 1 FROM storage_bad_blobs WHERE digest = :d"), {"d": digest}).first()
        return row is not None

    def known_bad(self) -> dict[str, str]:
        """digest -> "corrupt" | "missing", as the last verify of each blob found it."""
        with self.db.connect() as c:
            return {str(r[0]): str(r[1]) for r in c.execute(q("SELECT digest, state FROM storage_bad_blobs"))}

    def mark_blobs(self, bad: dict[str, str], good: set[str]) -> None:
        """Remember what a verify found, so a later ingest of the same content replaces a bad blob."""
        with self.db.begin() as conn:
            for digest in good:
                conn.execute(q("DELETE FROM storage_bad_blobs WHERE digest = :d"), {"d": digest})
            for digest, state in bad.items():
                conn.execute(q("DELETE FROM storage_bad_blobs WHERE digest = :d"), {"d": digest})
                conn.execute(
                    q("INSERT INTO storage_bad_blobs (digest, state, found_at) VALUES (:d, :s, :t)"),
                    {"d": digest, "s": state, "t": time.time()},
                )

    def models_using(self, digests: list[str] | set[str]) -> list[str]:
        """Keys of store-owned models with a file whose content is one of ``digests``."""
        wanted = sorted(set(digests))
        if not wanted:
            return []
        keys: set[str] = set()
        with self.db.connect() as c:
            for digest in wanted:
                rows = c.execute(
                    q(
                        "SELECT DISTINCT m.model_key FROM storage_manifest m"
                        " JOIN storage_models s ON s.model_key = m.model_key"
                        " WHERE m.digest = :d AND s.inplace = 0"
                    ),
                    {"d": digest},
                )
                keys.update(str(r[0]) for r in rows)
        return sorted(keys)

    def _after_heal(self, digests: list[str]) -> None:
        """A damaged blob was replaced: forget the mark, rebuild the models whose files were linked
        to the old (damaged) inode."""
        self.mark_blobs({}, set(digests))
        for key in self.models_using(digests):
            man = self.manifest(key)
            if man.dest is None:
                continue
            try:
                self.materialise(key)
            except ModelDepotError as exc:
                log.error("could not rebuild model %s after healing its blobs: %s", key, exc)
                continue
            log.info("rebuilt model %s from its healed blobs", key)
            self._emit("storage_healed", key=key, digests=list(digests))

    def commit(self, conn: Connection, key: str, staged: StagedModel, dest: str | Path | None = None) -> None:
        """Write the manifest of ``key`` inside the caller's transaction and release the pending rows."""
        for e in staged.entries:
            safe_relpath(e.relpath)
            if not self.blobs.has(e.digest):
                raise StorageError(f"blob {e.digest} of {e.relpath} vanished before commit", path=e.relpath)
        target = self._check_dest(Path(dest)) if dest is not None else None
        stored = self.paths.stored(str(target)) if target is not None else None
        _manifests.insert_model(conn, key, staged.kind, staged.entries, inplace=False, dest=stored, now=time.time())
        conn.execute(q("DELETE FROM storage_pending WHERE stage_id = :s"), {"s": staged.stage_id})

    def release_sources(self, staged: StagedModel) -> None:
        """After a move-mode commit: remove the sources (their bytes now live in blobs).

        Done only after commit so a crash at any earlier point loses nothing of the user's.
        """
        if not staged.move or not (staged.source.exists() or staged.source.is_symlink()):
            return
        if staged.kind == "file":
            staged.source.unlink()
        else:
            for _rel, path in _manifests.walk_source(staged.source)[1]:
                path.unlink(missing_ok=True)
            _remove_tree(staged.source)

    def record_parts(self, conn: Connection, key: str, parts: Iterable[Part]) -> None:
        """Record model ``key``'s parts (``storage._parts``) in the caller's transaction."""
        _partdb.record_parts(conn, key, parts)

    def discard(self, staged: StagedModel) -> None:
        """Forget a stage that will not be committed (its blobs become gc-able)."""
        with self.db.begin() as conn:
            conn.execute(q("DELETE FROM storage_pending WHERE stage_id = :s"), {"s": staged.stage_id})

    def register_inplace(
        self, conn: Connection, key: str, path: str | Path, entries: list[ManifestEntry] | None = None
    ) -> None:
        """A manifest of hashes with no blobs: the user's files are never moved, copied or deleted.

        Hashing big files inside the caller's transaction holds the write lock; callers may pass
        ``entries`` computed beforehand with :func:`hash_tree`.
        """
        p = Path(path).expanduser().resolve()
        if entries is None:
            kind, entries = _manifests.hash_tree(p)
        else:
            kind = "file" if p.is_file() else "folder"
        _manifests.insert_model(conn, key, kind, entries, inplace=True, dest=str(p), now=time.time())

    def import_files(
        self,
        src: str | Path,
        key: str,
        dest: str | Path,
        *,
        move: bool = False,
        in_transaction: Callable[[Connection], object] | None = None,
    ) -> MaterialiseResult:
        """stage + commit (with ``in_transaction(conn)``, e.g. writing the record) + materialise."""
        staged = self.stage(src, move=move)
        try:
            with self.db.begin() as conn:
                self.commit(conn, key, staged, dest=dest)
                if in_transaction is not None:
                    in_transaction(conn)
        except BaseException:
            self.discard(staged)
            raise
        crashpoint("committed")
        self.release_sources(staged)
        return self.materialise(key)

    # Queries --------------------------------------------------------------------------------

    def manifest(self, key: str, conn: Connection | None = None) -> ModelManifest:
        if conn is not None:
            return _manifests.load_manifest(conn, key, self.paths)
        with self.db.connect() as c:
            return _manifests.load_manifest(c, key, self.paths)

    def has_model(self, key: str) -> bool:
        with self.db.connect() as c:
            return c.execute(q("SELECT 1 FROM storage_models WHERE model_key = :k"), {"k": key}).first() is not None

    def keys(self) -> list[str]:
        with self.db.connect() as c:
            return _manifests.all_keys(c)

    def refcounts(self) -> dict[str, int]:
        """digest -> number of manifest entries of store-owned models pointing at it."""
        with self.db.connect() as c:
            return {str(r[0]): int(r[1]) for r in c.execute(q("SELECT digest, refcount FROM storage_refcounts"))}

    def rebuild_refcounts(self) -> dict[str, int]:
        """Refcounts are a view over the manifests, so they are always rebuilt from them."""
        return self.refcounts()

    # Materialisation ------------------------------------------------------------------------

    def _check_dest(self, dest: Path) -> Path:
        root = self.config.models_path.resolve()
        target = dest.expanduser().absolute()
        # Resolve the parent (symlinks, "..") but not the name itself: it may be a link we replace.
        target = target.parent.resolve() / target.name
        if not target.is_absolute() or not target.is_relative_to(root) or target == root:
            raise NotAllowedError(f"refusing to materialise at {dest}: it is not inside {root}")
        return target

    def materialise(self, key: str, dest: str | Path | None = None) -> MaterialiseResult:
        """Build the model's file or folder at ``dest`` (default: its recorded place) from its blobs.

        Built in a hidden sibling and renamed into place: a half model is never visible.
        """
        man = self.manifest(key)
        if man.inplace:
            raise StorageError(f"model {key} is registered in place at {man.dest}; nothing to materialise")
        if dest is None and man.dest is None:
            raise StorageError(f"model {key} has no destination; pass dest")
        target = self._check_dest(Path(dest) if dest is not None else man.dest)  # type: ignore[arg-type]
        if (target.exists() or target.is_symlink()) and (man.dest is None or target != man.dest):
            raise StorageError(f"{target} already exists and is not model {key}'s folder", path=target)
        missing = tuple(e for e in man.entries if not self.blobs.has(e.digest))
        if missing and self.mirror is not None:
            self.mirror.fetch(missing)  # a fleet model this worker has not held yet: from the bucket
        target.parent.mkdir(parents=True, exist_ok=True)
        build = target.parent / f"{BUILD_MARK}{target.name}.{uuid.uuid4().hex[:8]}"
        modes = list(self.config.link_modes)
        used: list[str] = []
        try:
            if man.kind == "file":
                e = man.entries[0]
                used.append(modes[place(self.blobs, e.digest, build, target, modes)])
            else:
                build.mkdir()
                for e in man.entries:
                    out = join_inside(build, e.relpath)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    final = join_inside(target, e.relpath)
                    used.append(modes[place(self.blobs, e.digest, out, final, modes)])
            crashpoint("materialise-built")
            _swap_into_place(build, target)
        except BaseException:
            remove_any(build)
            raise
        fsync_dir(target.parent)
        if man.dest is not None and man.dest != target and (man.dest.exists() or man.dest.is_symlink()):
            remove_any(man.dest)  # moved: the old materialisation must not linger unowned
        mode_used = "+".join(m for m in modes if m in used) or modes[0]
        with self.db.begin() as conn:
            _manifests.set_materialised(conn, key, self.paths.stored(str(target)), mode_used)
        if mode_used not in self._modes_logged:
            self._modes_logged.add(mode_used)
            log.info("materialising models with %s (configured order: %s)", mode_used, ",".join(modes))
        self._emit("storage_materialised", key=key, path=str(target), mode=mode_used)
        if self.mirror is not None:
            self.mirror.materialised(key, target)
        return MaterialiseResult(target, mode_used)

    def rematerialise(self, key: str) -> MaterialiseResult:
        """Rebuild a model's folder from its blobs (after a user damaged it)."""
        return self.materialise(key)

    def delete_model(
        self,
        key: str,
        conn: Connection | None = None,
        *,
        delete_files: bool = True,
        unconditionally: bool = False,
    ) -> bool:
        """Remove a manifest (its blobs become gc-able) and the materialised files; False if unknown.

        An in-place model's files are the user's: removed only with ``unconditionally=True``.
        Files are removed right away; if the caller's transaction rolls back, :meth:`recover`
        rebuilds them from the still-referenced blobs.
        """
        if conn is None:
            with self.db.begin() as c:
                return self.delete_model(key, c, delete_files=delete_files, unconditionally=unconditionally)
        try:
            man = _manifests.load_manifest(conn, key, self.paths)
        except UnknownModelException:
            return False
        conn.execute(q("DELETE FROM storage_manifest WHERE model_key = :k"), {"k": key})
        conn.execute(q("DELETE FROM storage_models WHERE model_key = :k"), {"k": key})
        for part_key in _partdb.forget_model(conn, key):  # a part's own copy goes with its last user
            self.delete_model(part_key, conn)
        remove = unconditionally if man.inplace else delete_files
        if remove and man.dest is not None:
            remove_any(man.dest)
        return True

    # Maintenance ----------------------------------------------------------------------------

    def recover(self, pending_grace_seconds: float = 24 * 3600, tmp_age_seconds: float = 600) -> dict[str, list[str]]:
        """At start: drop temp leftovers, finish materialisations, drop stale pending rows."""
        done: dict[str, list[str]] = {"tmp_removed": [], "materialised": [], "pending_dropped": []}
        done["tmp_removed"] = [str(p) for p in self.blobs.clean_tmp(tmp_age_seconds)]
        with self.db.connect() as c:
            found = c.execute(q("SELECT model_key, dest FROM storage_models WHERE inplace = 0")).all()
        rows = [(str(k), self.paths.readable(str(d)) if d else None) for k, d in found]
        parents = {Path(r[1]).parent for r in rows if r[1]}
        for parent in parents:
            if parent.is_dir():
                for p in parent.iterdir():
                    # Only old leftovers: another process sharing the home may be building one now.
                    if p.name.startswith((BUILD_MARK, TRASH_MARK)) and _older_than(p, tmp_age_seconds):
                        remove_any(p)
                        done["tmp_removed"].append(str(p))
        for key, dest in rows:
            if dest and not (Path(dest).exists() or Path(dest).is_symlink()):
                if self.mirror is not None and not all(self.blobs.has(e.digest) for e in self.manifest(key).entries):
                    continue  # a fleet model this worker does not hold: `pull` brings it
                self.materialise(key)
                done["materialised"].append(str(key))
        cutoff = time.time() - pending_grace_seconds
        with self.db.begin() as conn:
            stale = conn.execute(
                q("SELECT DISTINCT stage_id FROM storage_pending WHERE created_at < :c"), {"c": cutoff}
            )
            done["pending_dropped"] = [str(r[0]) for r in stale]
            conn.execute(q("DELETE FROM storage_pending WHERE created_at < :c"), {"c": cutoff})
        return done

    def gc(self, dry_run: bool = False, grace_seconds: float = 3600) -> GcReport:
        return _gc.collect(self, dry_run=dry_run, grace_seconds=grace_seconds)

    def verify(self, key: str | None = None, repair: bool = False) -> VerifyReport:
        return _verify.verify(self, key=key, repair=repair)

    def du(self) -> DuReport:
        return _gc.disk_usage(self)


def _swap_into_place(build: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        trash = target.parent / f"{TRASH_MARK}{target.name}.{uuid.uuid4().hex[:8]}"
        os.rename(target, trash)
        os.rename(build, target)
        remove_any(trash)
    else:
        os.rename(build, target)


def _older_than(p: Path, seconds: float) -> bool:
    try:
        return time.time() - p.lstat().st_mtime > seconds
    except OSError:
        return False


def _remove_tree(src: Path) -> None:
    """Remove what is left of a moved source folder (empty folders and internal symlinks)."""
    for dirpath, dirnames, filenames in os.walk(src, topdown=False):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            if p.is_symlink():
                p.unlink()
            elif p.is_dir():
                try:
                    p.rmdir()
                except OSError:
                    pass
    try:
        src.rmdir()
    except OSError:
        log.warning("%s was not empty after moving its files into the store; left in place", src)
