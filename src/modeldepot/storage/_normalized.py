"""The seed's normalized model manager (document 004) as a view over the one namespace.

MODEL_NAME is the record store, PIPELINE its diffusers main records, and every installed model's
parts are recorded at install (``storage._parts``: a content hash over each component's tensors,
taken in the install's single read pass). So a pipeline installed with ``modeldepot install`` is
found by :meth:`NormalizedStore.get_pipeline_by_name`, a model imported here is a record that
``modeldepot list`` shows, and identical parts across models — a checkpoint's embedded VAE and a
diffusers pipeline's ``vae/`` with the same weights — are one part with a refcount above one.

A single file's embedded part gets its own diffusers folder the first time someone asks for it
(``part_builder``, which converts with the configs the package ships); that copy is stored as its
own blobs and goes when the last model using the part goes.

Importing, removing and converting need the install and load layers, which sit above storage: the
composition root passes them in as ``importer``, ``remover`` and ``part_builder``.
"""

# os.* on purpose: errno-level rename and chmod of the export.
# ruff: noqa: PTH104

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from modeldepot._db import Database
from modeldepot._fs import fsync_dir, join_inside, remove_any, safe_dir_name
from modeldepot.errors import AmbiguousModelException, DuplicateModelException, StorageError, UnknownModelException
from modeldepot.storage import _partdb
from modeldepot.storage._blobs import hash_path
from modeldepot.storage._manifests import hash_tree
from modeldepot.storage._nm_schema import migrate
from modeldepot.storage._nm_v1 import adopt_v1
from modeldepot.storage._parts import parts_of, taps_for
from modeldepot.storage._schema import q
from modeldepot.storage._split import is_split_dir, join_checkpoint
from modeldepot.storage._store import ContentStore
from modeldepot.storage.base import ManifestEntry

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.records import ModelRecordServiceBase

log = logging.getLogger(__name__)

#: ``importer(path, config, move=False) -> key``: install a file or folder as a record.
Importer = Callable[..., str]
#: ``part_builder(record, submodel, out_dir)``: write the diffusers folder of an embedded part.
PartBuilder = Callable[["ModelConfigBase", str, Path], None]


@dataclass(frozen=True)
class PartInfo:
    """One part; ``path`` is a folder a diffusers loader can open (an embedded part not built yet:
    the single file holding it). ``digest`` is the part id (a content hash over its tensors)."""

    digest: str
    submodel: str | None
    path: Path
    size: int
    refcount: int
    files: tuple[str, ...] = ()
    bases: tuple[str, ...] = ()
    embedded: bool = False

    @property
    def part_id(self) -> str:
        return self.digest


@dataclass(frozen=True)
class ModelInfo:
    """A model as the document's MODEL_NAME row shows it, with its parts (folder -> part)."""

    key: str
    name: str
    type: str
    format: str
    base: str
    compatible_bases: tuple[str, ...]
    path: Path
    parts: dict[str, PartInfo] = field(default_factory=dict)
    is_pipeline: bool = False
    description: str | None = None
    source: str | None = None


def _value(v: Any) -> str:
    return str(getattr(v, "value", v))


def is_pipeline(record: ModelConfigBase) -> bool:
    return _value(record.type) == "main" and _value(record.format) == "diffusers"


class NormalizedStore:
    """``import_model`` / ``get_model_by_name`` / ``get_pipeline_by_name`` / ``export`` over the
    record store and the content store (one namespace)."""

    def __init__(
        self,
        store: ContentStore,
        db: Database | None = None,
        *,
        records: ModelRecordServiceBase,
        importer: Importer | None = None,
        remover: Callable[[str], None] | None = None,
        part_builder: PartBuilder | None = None,
    ) -> None:
        self.store = store
        self.db = db or store.db
        self.records = records
        self._importer = importer
        self._remover = remover
        self._part_builder = part_builder
        migrate(self.db)
        self.parts_root = store.config.models_path / "_parts"
        if importer is not None:
            with self.db.connect() as c:
                first_version = c.execute(q("SELECT 1 FROM nm_model_name")).first() is not None
            if first_version:
                adopt_v1(store, importer)

    # Import / delete --------------------------------------------------------------------------

    def import_model(
        self,
        path: str | Path,
        name: str | None = None,
        base: str | None = None,
        type: str | None = None,
        format: str | None = None,
        description: str | None = None,
        source: str | None = None,
    ) -> str:
        """Install a diffusers folder or a single file as a record; returns its key.

        ``type``/``base``/``format`` default to identification's verdict. A name the same type and
        base already holds is refused (the document's MODEL_NAME is unique by name and type).
        """
        if self._importer is None:
            raise StorageError("this normalized view was built without an importer; use ModelManager.normalized")
        if name is not None:
            for other in self.records.search_by_attr(name=name, type=type) if type is not None else ():
                if base is None or _value(other.base) == _value(base):
                    raise DuplicateModelException(
                        f"a {_value(type)} model named {name!r} is already registered (key {other.key})", key=other.key
                    )
        given = {"name": name, "base": base, "type": type, "format": format, "description": description}
        config = {k: _value(v) for k, v in given.items() if v is not None}
        if source is not None:
            config["source"] = source
        return self._importer(Path(path).expanduser(), config)

    def delete(self, key: str) -> None:
        """Remove a model (its record, files and the parts nobody else uses)."""
        if self._remover is None:
            raise StorageError("this normalized view was built without a remover; use ModelManager.normalized")
        self._remover(key)

    # Queries ----------------------------------------------------------------------------------

    def _parts_of(self, record: ModelConfigBase) -> list[tuple[str, str, str, bool]]:
        with self.db.connect() as c:
            rows = _partdb.model_parts(c, record.key)
        return rows or self._backfill(record)

    def _backfill(self, record: ModelConfigBase) -> list[tuple[str, str, str, bool]]:
        """Parts of a model installed before parts were recorded: read its files once, now."""
        path = Path(record.path)
        if not path.exists():
            return []
        type_, fmt, base = _value(record.type), _value(record.format), _value(record.base)
        taps = taps_for(path, type_, fmt)
        kind, entries = hash_tree(path, {rel: tap.feed for rel, tap in taps.items()})
        parts = parts_of(kind, entries, taps, type_, fmt, base)
        with self.db.begin() as conn:
            if not _partdb.model_parts(conn, record.key):
                _partdb.record_parts(conn, record.key, parts)
            return _partdb.model_parts(conn, record.key)

    def _part_info(self, record: ModelConfigBase, folder: str, submodel: str, part_id: str, embedded: bool) -> PartInfo:
        with self.db.connect() as c:
            row = _partdb.part_row(c, part_id)
            files: tuple[str, ...] = ()
            if row.store_key is not None:
                files = tuple(e.relpath for e in self.store.manifest(row.store_key, c).entries)
        if embedded:
            path = row.path if row.path is not None else Path(record.path)
        else:
            path = Path(record.path) / folder if folder else Path(record.path)
            if not files and path.is_dir():
                files = tuple(sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()))
            elif not files:
                files = (path.name,)
        return PartInfo(part_id, submodel, path, row.size, row.refcount, files, row.bases, embedded)

    def _info(self, record: ModelConfigBase) -> ModelInfo:
        parts = {
            folder: self._part_info(record, folder, sub, pid, emb) for folder, sub, pid, emb in self._parts_of(record)
        }
        bases = [_value(record.base), *sorted({_value(b) for b in record.compatible_bases} - {_value(record.base)})]
        return ModelInfo(
            key=record.key,
            name=record.name,
            type=_value(record.type),
            format=_value(record.format),
            base=_value(record.base),
            compatible_bases=tuple(b for b in bases if b != "unknown" or len(bases) == 1),
            path=Path(record.path),
            parts=parts,
            is_pipeline=is_pipeline(record),
            description=record.description,
            source=record.source,
        )

    @staticmethod
    def _fits(record: ModelConfigBase, base: Any) -> bool:
        b = _value(base)
        return _value(record.base) == b or b in {_value(x) for x in record.compatible_bases}

    def get_model_by_name(self, name: str, type: Any, base: Any = None) -> ModelInfo:
        """The model ``name`` of ``type`` (``base`` picks one when several bases share the name)."""
        found = [r for r in self.records.search_by_attr(name=name, type=_value(type)) if r.name == name]
        if base is not None:
            found = [r for r in found if self._fits(r, base)]
        if not found:
            where = f" for base {_value(base)!r}" if base is not None else ""
            raise UnknownModelException(f"no {_value(type)} model named {name!r}{where}")
        if len(found) > 1:
            bases = ", ".join(sorted(_value(r.base) for r in found))
            raise AmbiguousModelException(
                f"{len(found)} {_value(type)} models are named {name!r} (bases {bases}); pass base=",
                keys=tuple(r.key for r in found),
            )
        return self._info(found[0])

    def get_pipeline_by_name(self, name: str, base: Any, submodel: Any) -> PartInfo:
        """The part ``submodel`` (e.g. ``vae``) of main model ``name``; its ``path`` opens with diffusers.

        The pipeline is found by its own bases or, failing that, by the part's (an SD-1 VAE part
        serves sd-2). A single file's embedded part is converted to a diffusers folder on first
        request and kept, as its own blobs, for the next one.
        """
        sub = _value(submodel)
        mains = [r for r in self.records.search_by_attr(name=name, type="main") if r.name == name]
        ranked = [r for r in mains if self._fits(r, base)] + [r for r in mains if not self._fits(r, base)]
        for record in ranked:
            for folder, part_sub, pid, embedded in self._parts_of(record):
                if sub not in (part_sub, folder) or not (folder or embedded):
                    continue
                info = self._part_info(record, folder, part_sub, pid, embedded)
                if not self._fits(record, base) and _value(base) not in info.bases:
                    continue
                if embedded and info.path == Path(record.path):
                    return self._build_part(record, info)
                return info
        if not mains:
            raise UnknownModelException(f"no main model named {name!r}")
        raise UnknownModelException(f"main model {name!r} has no submodel {sub!r} for base {_value(base)!r}")

    def _build_part(self, record: ModelConfigBase, info: PartInfo) -> PartInfo:
        """Give an embedded part its own diffusers folder (converted once, stored as blobs)."""
        if self._part_builder is None:
            raise StorageError(
                "this normalized view cannot convert parts (no part_builder); use ModelManager.normalized"
            )
        store_key = f"nm-part-{info.digest}"
        dest = self.parts_root / info.digest[:2] / info.digest
        with self.db.exclusive(store_key):
            with self.db.connect() as c:
                row = _partdb.part_row(c, info.digest)
            if row.path is None:
                self.store.config.tmp_dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=self.store.config.tmp_dir, prefix="part-") as tmp:
                    out = Path(tmp) / "part"
                    self._part_builder(record, str(info.submodel), out)
                    staged = self.store.stage(out, move=True)
                    try:
                        with self.db.begin() as conn:
                            self.store.commit(conn, store_key, staged, dest=dest)
                            _partdb.set_part_copy(conn, info.digest, store_key, dest)
                    except BaseException:
                        self.store.discard(staged)
                        raise
                    self.store.release_sources(staged)
                self.store.materialise(store_key)
                log.info("converted part %s of %s to %s", info.submodel, record.name, dest)
        return self._part_info(record, str(info.submodel), str(info.submodel), info.digest, True)

    def part_identity(self, record: ModelConfigBase, submodel: str) -> tuple[str, str] | None:
        """(part id, load recipe) of a submodel whose weights are a tensors part, for the load
        cache: two models may share one loaded copy only when both match — the same tensors,
        built the same way (the part folder's ``config.json``, or for a part embedded in a single
        file the record fields its loader reads). None: no recorded part (not shared)."""
        with self.db.connect() as c:
            rows = _partdb.model_parts(c, record.key)
            match = next(((f, pid, emb) for f, sub, pid, emb in rows if submodel in (sub, f) and (f or emb)), None)
            if match is None or _partdb.part_row(c, match[1]).kind != "tensors":
                return None
        folder, part_id, embedded = match
        recipe: dict[str, Any] = {
            field: _value(getattr(record, field, None))
            for field in ("base", "type", "format", "variant", "repo_variant", "prediction_type", "upcast_attention")
        }
        if embedded:
            recipe["config_path"] = str(getattr(record, "config_path", None) or "")
        else:
            config = Path(record.path) / folder / "config.json"
            recipe["config"] = json.loads(config.read_text()) if config.is_file() else None
        digest = blake3.blake3(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()
        return part_id, str(digest)

    def list_models(self) -> list[ModelInfo]:
        return [self._info(r) for r in self.records.all_models()]

    def part_refcounts(self) -> dict[str, int]:
        with self.db.connect() as c:
            return _partdb.part_refcounts(c)

    # Export -----------------------------------------------------------------------------------

    def export(self, name: str, base: Any, destination: str | Path, type: Any = None) -> Path:
        """Write model ``name`` into the folder ``destination`` in its native layout, byte-identical
        to what was installed: ``destination/<name>`` for a folder, ``destination/<file name>`` for
        a single file (which keeps its name and extension). Every byte is re-hashed on the way out.
        A pipeline is preferred when several types share the name; ``type`` picks one.
        """
        found = [
            r
            for r in self.records.search_by_attr(name=name, type=_value(type) if type is not None else None)
            if r.name == name and self._fits(r, base)
        ]
        if not found:
            raise UnknownModelException(f"no model named {name!r} compatible with base {_value(base)!r}")
        found.sort(key=lambda r: (not is_pipeline(r), _value(r.type) != "main"))
        return self.export_record(found[0], destination)

    def export_record(self, record: ModelConfigBase, destination: str | Path) -> Path:
        """:meth:`export` of one record (``modeldepot export``)."""
        folder = Path(destination).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        man = self.store.manifest(record.key)
        if is_split_dir(Path(record.path)):
            return self._export_split(record, folder / f"{safe_dir_name(record.name)}.safetensors")
        dest = folder / (Path(record.path).name if man.kind == "file" else safe_dir_name(record.name))
        if dest.exists() or dest.is_symlink():
            raise StorageError(f"export destination {dest} already exists", path=dest)
        build = folder / f".{dest.name}.export-{uuid.uuid4().hex[:8]}"
        try:
            if man.kind == "file":
                self._write(man.entries[0], build, man.inplace, Path(record.path))
            else:
                build.mkdir()
                for e in man.entries:
                    out = join_inside(build, e.relpath)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    self._write(e, out, man.inplace, join_inside(Path(record.path), e.relpath))
            os.rename(build, dest)
        except BaseException:
            remove_any(build)
            raise
        fsync_dir(folder)
        return dest

    @staticmethod
    def _export_split(record: ModelConfigBase, dest: Path) -> Path:
        """A checkpoint stored as parts (``split_single_files``): rebuild the original file."""
        if dest.exists() or dest.is_symlink():
            raise StorageError(f"export destination {dest} already exists", path=dest)
        join_checkpoint(Path(record.path), dest)
        algorithm, _, digest = (record.hash or "").partition(":")
        if algorithm in ("blake3", "blake3_single") and hash_path(dest) != digest:
            dest.unlink()
            raise StorageError(
                f"rebuilding {record.name!r} gave other bytes than were installed; run verify", path=dest
            )
        return dest

    def _write(self, e: ManifestEntry, out: Path, inplace: bool, src: Path) -> None:
        if not inplace:
            self.store.blobs.write_to(e.digest, out, e.mode or 0o644)
            return
        # Registered in place: no blobs; copy the user's file and check it still matches.
        shutil.copyfile(src, out)
        if hash_path(out) != e.digest:
            raise StorageError(f"{src} changed since it was registered; re-register it", path=src)
        os.chmod(out, e.mode or 0o644)

    def recover(self) -> list[str]:
        """Nothing of its own to rebuild: models and part copies are ContentStore manifests."""
        return []
