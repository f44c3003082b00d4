"""Installing a file or folder that is on this machine: ingest -> record -> materialise.

- **ingest**: identify (header only), refuse what is not a model, stage the bytes into the blob
  store while hashing them (one read), giving a frozen :class:`Ingested`;
- **record**: under a lock every process sharing the database takes, look for the same content,
  pick a unique name and destination, and commit the manifest and the record in one transaction;
- **materialise**: build the model's folder from its blobs in a hidden sibling and rename it into
  place. A crash before the commit leaves only unreferenced blobs (gc removes them); after it,
  ``ContentStore.recover()`` finishes the folder. Move-mode sources are released only after that.

Registering in place is ingest + record without staging: the user's files stay where they are.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot._fs import tree_size
from modeldepot.configs import ModelConfigBase
from modeldepot.errors import DuplicateModelException, HashingError, ModelDepotError, ModelNotFoundException
from modeldepot.hashing import ModelHash, composite_hash, normalize_algorithm
from modeldepot.identify import Identification, identify, read_safetensors_header
from modeldepot.install._checks import check_is_model
from modeldepot.install._handoff import Received, known_for
from modeldepot.install._locations import forget_model_locations, record_location
from modeldepot.install._records import build_record, default_name, identify_overrides, normalise_overrides
from modeldepot.install._result import PathResult
from modeldepot.install._store import destination, record_hash, unique_name, with_fields
from modeldepot.storage import hash_tree, walk_source
from modeldepot.storage._blobs import hash_path
from modeldepot.storage._parts import FedTap, Part, TensorTap, parts_of, splittable, taps_for, whole
from modeldepot.storage._split import REST, split_checkpoint
from modeldepot.storage._verify import problems
from modeldepot.taxonomy import ModelSourceType

if TYPE_CHECKING:
    import sqlalchemy as sa

    from modeldepot._compose import DepotServices
    from modeldepot.storage import ManifestEntry, StagedModel

log = logging.getLogger(__name__)
#: Held (across processes) while a record is chosen and committed, so two installs of the same
#: content, name or destination at once end as one model.
RECORD_LOCK = "install-record"


@dataclass(frozen=True)
class Ingested:
    """A model read and identified; ``staged`` is set when its bytes are in the blob store."""

    path: Path
    ident: Identification
    overrides: dict[str, Any]
    content_hash: str
    size: int
    staged: StagedModel | None = None
    parts: tuple[Part, ...] = ()


def _existing_path(model_path: str | Path) -> Path:
    path = Path(model_path).expanduser()
    if not path.exists():
        raise ModelNotFoundException(f"{path}: no such file or folder", path=path)
    return path.resolve()


class LocalInstaller:
    """Register, install and remove local models over one home's services."""

    def __init__(self, services: DepotServices) -> None:
        self.services = services
        self.config = services.config

    # ingest ------------------------------------------------------------------------------

    def _identify(
        self, path: Path, overrides: dict[str, Any], metadata: dict[str, Any] | None, force: bool
    ) -> Identification:
        ident = identify(path, identify_overrides(overrides))
        if not force:
            check_is_model(path, ident)
        remote_base = (metadata or {}).get("base")
        if remote_base and "base" not in overrides and str(ident.base) in ("unknown", "any"):
            # The header could not tell; the remote's declared base is the next best word.
            ident = identify(path, {**identify_overrides(overrides), "base": remote_base})
        return ident

    def _hash(self, path: Path) -> str:
        return ModelHash(self.config.hashing_algorithm, cache=self.services.hash_cache).hash(path)

    def _hash_inplace(self, path: Path, taps: dict[str, TensorTap]) -> tuple[str, list[ManifestEntry], str]:
        """The manifest entries (blake3 per file, the taps fed on the way) and the record hash.

        With the default blake3 algorithm the record hash is derived from the manifest, so the
        files are read once; other algorithms hash again through ``ModelHash`` and its cache.
        """
        kind, entries = hash_tree(path, {rel: tap.feed for rel, tap in taps.items()})
        name, prefix = normalize_algorithm(self.config.hashing_algorithm)
        if name not in ("blake3", "blake3_single"):
            return kind, entries, self._hash(path)
        if kind == "file":
            return kind, entries, f"{prefix}:{entries[0].digest}"
        try:
            return kind, entries, composite_hash([(e.relpath, e.digest) for e in entries], prefix)
        except ModelDepotError:
            return kind, entries, self._hash(path)  # no weight files: let ModelHash explain

    def _staged_hash(self, staged: StagedModel, path: Path) -> str:
        try:
            return record_hash(staged, self.config.hashing_algorithm) or self._hash(path)
        except HashingError as exc:
            if exc.path is not None:
                raise
            raise HashingError(f"{path}: {exc}", path=path) from exc

    # record ------------------------------------------------------------------------------

    def _existing_by_hash(self, content_hash: str) -> ModelConfigBase | None:
        found = self.services.store.search_by_hash(content_hash)
        return found[0] if found else None

    def _commit(self, record: ModelConfigBase, write_manifest: Callable[[sa.Connection], None]) -> None:
        """The manifest and the record, in one transaction when the record store shares our
        database; else the manifest first and the record after, undoing the manifest on failure."""
        db, storage = self.services.db, self.services.storage
        sql = self.services.shared_sql_store()
        with db.begin() as conn:
            write_manifest(conn)
            if sql is not None:
                sql.add_model(record, conn=conn)
        if sql is None:
            try:
                self.services.store.add_model(record)
            except BaseException:
                storage.delete_model(record.key)
                raise

    def _check_duplicate_allowed(self, existing: ModelConfigBase, path: Path) -> None:
        if self.config.on_duplicate == "error":
            raise DuplicateModelException(
                f"{path} has the same content as the registered model {existing.name!r} (key {existing.key})",
                key=existing.key,
            )
        log.info("%s has the same content as %s; returning the existing record", path, existing.key)

    # register in place -------------------------------------------------------------------

    def register(
        self, model_path: str | Path, config: dict[str, Any] | None = None, *, force: bool = False
    ) -> PathResult:
        """Register a file or folder where it is (never moved, copied or deleted)."""
        path = _existing_path(model_path)
        overrides = normalise_overrides(config)
        store = self.services.store
        existing = store.search_by_path(path)
        if existing:
            raise DuplicateModelException(
                f"{path} is already registered as {existing[0].name!r} (key {existing[0].key})", key=existing[0].key
            )
        ident = self._identify(path, overrides, None, force)
        taps = taps_for(path, str(ident.type), str(ident.format))
        kind, entries, content_hash = self._hash_inplace(path, taps)
        parts = parts_of(kind, entries, taps, str(ident.type), str(ident.format), str(ident.base))
        with self.services.db.exclusive(RECORD_LOCK):
            dup = self._existing_by_hash(content_hash)
            if dup is None:
                record = build_record(
                    ident,
                    path=path,
                    name=overrides.pop("name", None) or default_name(path),
                    content_hash=content_hash,
                    file_size=tree_size(path),
                    overrides=overrides,
                    source=overrides.pop("source", None) or str(path),
                    source_type=ModelSourceType.Path,
                    inplace=True,
                )
                storage = self.services.storage

                def write_manifest(conn: sa.Connection) -> None:
                    storage.register_inplace(conn, record.key, path, entries)
                    storage.record_parts(conn, record.key, parts)

                self._commit(record, write_manifest)
        if dup is not None:
            self._check_duplicate_allowed(dup, path)
            record_location(self.services.db, path, dup.key)
            return PathResult(
                dup.key,
                "already_registered",
                dup.name,
                f"{path.name} is already registered as {dup.name!r} (key {dup.key}); "
                "path recorded as an extra location",
            )
        log.info("registered %s in place as %s (%s)", path, record.name, record.key)
        return PathResult(
            record.key,
            "registered",
            record.name,
            f"registered {record.name} ({record.base}/{record.type}/{record.format}) key {record.key}",
        )

    # install into the store --------------------------------------------------------------

    def install(
        self,
        model_path: str | Path,
        config: dict[str, Any] | None = None,
        *,
        move: bool = False,
        source: str | None = None,
        source_type: ModelSourceType | None = None,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
        received: dict[int, Received] | None = None,
    ) -> PathResult:
        """Install a file or folder into the store (deduplicated, materialised).

        ``received``: what the download of these files already hashed (``_handoff``); such files
        are stored without being read again.
        """
        path = _existing_path(model_path)
        overrides = normalise_overrides(config)
        ident = self._identify(path, overrides, metadata, force)
        storage = self.services.storage
        scratch: Path | None = None
        if self.config.split_single_files and splittable(path, str(ident.type), str(ident.format), str(ident.base)):
            scratch = Path(tempfile.mkdtemp(prefix="split-", dir=self._scratch_dir()))
            staged, parts, content_hash = self._stage_split(path, ident, scratch)
        else:
            # Staging hashes while it copies (one read pass) and the taps hash each part's
            # tensors on the way; content already held costs no space (identical blobs are one).
            # Files the download already hashed are not read at all.
            taps = taps_for(path, str(ident.type), str(ident.format))
            got = known_for(walk_source(path)[1], received) if received else {}
            fed: dict[str, TensorTap | FedTap] = {}
            for rel, tap in taps.items():
                tensors = got[rel].tensors if rel in got else None
                fed[rel] = FedTap(tensors, tap) if tensors is not None else tap
            staged = storage.stage(
                path,
                move=move,
                taps={rel: tap.feed for rel, tap in fed.items() if isinstance(tap, TensorTap)},
                known={rel: r.known for rel, r in got.items()},
            )
            parts = ()
            content_hash = ""
        try:
            if scratch is None:
                parts = tuple(
                    parts_of(staged.kind, staged.entries, fed, str(ident.type), str(ident.format), str(ident.base))
                )
                content_hash = self._staged_hash(staged, path)
            # A split checkpoint's staged parts are not the file: its size is the original's.
            size = path.stat().st_size if scratch is not None else staged.size
            ingested = Ingested(path, ident, overrides, content_hash, size, staged, parts)
            with self.services.db.exclusive(RECORD_LOCK):
                dup = self._existing_by_hash(ingested.content_hash)
                record = None if dup is not None else self._record_stored(ingested, source, source_type, metadata)
            if dup is not None:
                known = self._known(dup, path, staged, move=move)
                if scratch is not None and move:
                    path.unlink(missing_ok=True)  # move mode: the duplicate's source goes, as unsplit
                return known
            assert record is not None
            self._materialise(record, staged)
            if scratch is not None and move:
                path.unlink(missing_ok=True)  # its parts are stored; the whole file is not kept
        except BaseException:
            storage.abandon(staged)  # no-op for blobs a committed model or a duplicate holds
            raise
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        log.info("installed %s as %s (%s) at %s", path, record.name, record.key, record.path)
        return PathResult(
            record.key,
            "installed",
            record.name,
            f"installed {record.name} ({record.base}/{record.type}/{record.format}) key {record.key}",
        )

    def _scratch_dir(self) -> Path:
        self.config.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.config.tmp_dir

    def _stage_split(
        self, path: Path, ident: Identification, scratch: Path
    ) -> tuple[StagedModel, tuple[Part, ...], str]:
        """``split_single_files``: stage the checkpoint's parts (one canonical file per component,
        so checkpoints sharing a VAE or text encoder store it once), not the whole file. The record
        keeps the whole file's hash (Civitai lookups, duplicates), taken in a second read."""
        out = scratch / "parts"
        split_checkpoint(path, out)
        taps = {
            rel: TensorTap(read_safetensors_header(file), whole(rel.removesuffix(".safetensors")))
            for rel, file in walk_source(out)[1]
            if rel.endswith(".safetensors") and not rel.startswith(f"{REST}.")
        }
        storage = self.services.storage
        staged = storage.stage(out, move=True, taps={rel: tap.feed for rel, tap in taps.items()})
        parts = tuple(parts_of("file", staged.entries, taps, "main", "checkpoint", str(ident.base)))
        name, prefix = normalize_algorithm(self.config.hashing_algorithm)
        if name in ("blake3", "blake3_single"):
            return staged, parts, f"{prefix}:{hash_path(path)}"
        return staged, parts, self._hash(path)

    def _record_stored(
        self,
        ingested: Ingested,
        source: str | None,
        source_type: ModelSourceType | None,
        metadata: dict[str, Any] | None,
    ) -> ModelConfigBase:
        """Choose the record (unique name, free destination) and commit it with its manifest."""
        overrides = dict(ingested.overrides)
        path, staged = ingested.path, ingested.staged
        assert staged is not None
        name = overrides.pop("name", None) or (metadata or {}).get("name") or default_name(path)
        meta = {k: v for k, v in (metadata or {}).items() if k not in ("name", "base", "type")}
        store = self.services.store
        record = build_record(
            ingested.ident,
            path=path,  # replaced by the destination below, once the name is final
            name=str(name),
            content_hash=ingested.content_hash,
            file_size=ingested.size,
            overrides={**meta, **overrides},
            source=source or str(path),
            source_type=source_type or ModelSourceType.Path,
            inplace=False,
        )
        record = with_fields(record, name=unique_name(store, record.name, record.base, record.type))
        dest = destination(self.config.models_path, record, staged)
        if dest.exists() or store.search_by_path(dest):
            dest = dest.with_name(f"{dest.stem}-{record.key[:8]}{dest.suffix}")
        record = with_fields(record, path=str(dest))
        storage = self.services.storage

        def write_manifest(conn: sa.Connection) -> None:
            storage.commit(conn, record.key, staged, dest=dest)
            storage.record_parts(conn, record.key, ingested.parts)

        self._commit(record, write_manifest)
        return record

    def _materialise(self, record: ModelConfigBase, staged: StagedModel) -> None:
        storage = self.services.storage
        try:
            storage.materialise(record.key, Path(record.path))
        except BaseException:
            # E.g. a full disk while copying (link mode "copy"): no record without its files,
            # and no blob only this failed install wanted. Move-mode sources are still there.
            self.remove(record.key, delete_files=True)
            raise
        storage.release_sources(staged)  # move mode: the sources go once the model is in place

    def _known(self, dup: ModelConfigBase, path: Path, staged: StagedModel, *, move: bool) -> PathResult:
        """The content is installed already: return that model, healing its stored copy if needed."""
        storage = self.services.storage
        storage.discard(staged)
        try:
            self._check_duplicate_allowed(dup, path)
            repaired = self._heal_duplicate(dup, path, staged, move=move)
        finally:
            if move:
                storage.release_sources(staged)  # its bytes are already held by ``dup``
        message = f"{path.name} is already installed as {dup.name!r} (key {dup.key})"
        if repaired:
            message += f"; repaired its stored copy ({'; '.join(repaired)})"
        return PathResult(dup.key, "already_installed", dup.name, message, tuple(repaired))

    def _heal_duplicate(self, dup: ModelConfigBase, path: Path, staged: StagedModel, *, move: bool) -> list[str]:
        """Installing content that is already installed: make sure the stored copy is sound.

        The installed model is verified (repairing from good copies where possible); blobs that
        still fail are replaced by ingesting ``path`` again (the store now knows they are bad, so
        it does not deduplicate onto them) and the model is rebuilt. Returns what was repaired.
        """
        storage = self.services.storage
        repaired = [f"replaced damaged blob {d}" for d in staged.healed]
        if dup.inplace or not storage.has_model(dup.key):
            return repaired
        report = storage.verify(key=dup.key, repair=True)
        repaired += report.repaired
        if report.healthy:
            return repaired
        again = storage.stage(path, move=move)  # replaces the blobs the verify marked bad
        storage.discard(again)
        repaired += [f"replaced damaged blob {d}" for d in again.healed]
        left = storage.verify(key=dup.key)
        if not left.ok:
            log.error("model %s is still damaged after reinstalling from %s: %s", dup.key, path, problems(left))
        return repaired

    def stored_copy_sound(self, record: ModelConfigBase) -> bool:
        """Whether an installed model's bytes verify (repairing from good copies where possible)."""
        storage = self.services.storage
        if record.inplace or not storage.has_model(record.key):
            return True
        return storage.verify(key=record.key, repair=True).healthy

    # removal -----------------------------------------------------------------------------

    def remove(self, key: str, *, delete_files: bool) -> None:
        """Forget a model's record and manifest; its stored files go with ``delete_files``."""
        db, storage = self.services.db, self.services.storage
        forget_model_locations(db, key)
        sql = self.services.shared_sql_store()
        if sql is not None:
            with db.begin() as conn:
                storage.delete_model(key, conn=conn, delete_files=delete_files)
                sql.del_model(key, conn=conn)
        else:
            storage.delete_model(key, delete_files=delete_files)
            self.services.store.del_model(key)
