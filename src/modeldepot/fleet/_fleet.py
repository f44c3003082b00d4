"""``Fleet``: this worker's local store as a cache of the fleet's bucket.

Records, manifests and jobs are in the database the workers share; the bucket holds every blob
once, under its digest. A worker pushes the blobs it ingests before their record exists (so a
record in the fleet always names blobs the bucket holds), pulls the blobs of a model it lacks
before materialising it, and evicts the least recently used models beyond ``local_cache_gb``.
The bucket copy is never touched by anything local; only ``fleet gc`` removes bucket objects.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from modeldepot._fs import atomic_write_text, human_size, remove_any
from modeldepot.errors import BlobCorruptError, FleetError
from modeldepot.fleet._schema import migrate
from modeldepot.storage._blobs import TMP_PREFIX, is_digest

if TYPE_CHECKING:
    from modeldepot._db import Database
    from modeldepot.config import DepotConfig
    from modeldepot.fleet._s3 import S3BlobTier
    from modeldepot.storage import ContentStore
    from modeldepot.storage.base import ManifestEntry, ModelManifest

log = logging.getLogger(__name__)
WORKER_FILE = "fleet-worker"
#: A load touches a model's last-used time at most this often (a database write per load is waste).
TOUCH_EVERY = 60.0
#: A local blob no local model uses is a leftover only once it is this old (seconds).
STRAY_AGE = 600.0


def worker_id(home: Path) -> str:
    """This home's name in the fleet (``host-xxxxxxxx``), made once and kept in the home."""
    path = home / WORKER_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    made = f"{socket.gethostname()}-{secrets.token_hex(4)}"
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process of this home made it first
        return path.read_text(encoding="utf-8").strip() or worker_id(home)
    os.close(fd)
    atomic_write_text(path, made + "\n")
    return made


@dataclass(frozen=True)
class PullResult:
    key: str
    blobs: int  # fetched from the bucket
    bytes: int
    already_local: bool

    @property
    def message(self) -> str:
        if self.already_local:
            return f"{self.key} is already local"
        return f"pulled {self.key}: {self.blobs} blob(s), {human_size(self.bytes)} from the bucket"


@dataclass(frozen=True)
class EvictResult:
    key: str
    blobs: int  # removed from the local store
    bytes: int


class Fleet:
    """The fleet side of one worker's home. Built by the composition root when ``blob_remote`` is set."""

    def __init__(self, config: DepotConfig, db: Database, storage: ContentStore, tier: S3BlobTier) -> None:
        self.config = config
        self.db = db
        self.storage = storage
        self.tier = tier
        migrate(db)
        self.worker = worker_id(config.home)
        self._touched: dict[str, float] = {}
        self._checked = False
        storage.mirror = self
        self.heartbeat()
        self.prune_deleted()

    def __repr__(self) -> str:
        return f"Fleet(worker={self.worker}, bucket={self.tier.url})"

    def check(self) -> None:
        """The bucket exists and our credentials may use it (asked once per process)."""
        if not self._checked:
            self.tier.check()
            self._checked = True

    # Locks: one per digest across the fleet on PostgreSQL; SQLite (one machine) needs just one.

    def _lock(self, kind: str, digest: str) -> str:
        return kind if self.db.is_sqlite else f"{kind}:{digest}"

    # BlobMirror (called by ContentStore) ---------------------------------------------------

    def push(self, entries: tuple[ManifestEntry, ...]) -> None:
        """Send the staged blobs the bucket lacks; each digest once across the fleet."""
        for digest, size in _distinct(entries).items():
            self._upload(digest, size)

    def _upload(self, digest: str, size: int) -> bool:
        # The same lock as the bucket gc's sweep of this digest: an object found present here is
        # not deleted before our record (or pending row) references it.
        with self.db.exclusive(self._lock("fleet-blob", digest)):
            sent = self.tier.upload(digest, self.storage.blobs.path_for(digest))
        if sent:
            with self.db.begin() as conn:
                conn.execute(sa.text("DELETE FROM fleet_uploads WHERE digest = :d"), {"d": digest})
                conn.execute(
                    sa.text("INSERT INTO fleet_uploads (digest, size, worker_id, uploaded_at) VALUES (:d, :s, :w, :t)"),
                    {"d": digest, "s": size, "w": self.worker, "t": time.time()},
                )
            log.info("sent blob %s (%s) to %s", digest[:12], human_size(size), self.tier.url)
        return sent

    def fetch(self, entries: tuple[ManifestEntry, ...]) -> None:
        """Bring the blobs this home lacks from the bucket (verified) into the local store."""
        for digest, size in _distinct(entries).items():
            self._download(digest, size)

    def _download(self, digest: str, size: int) -> int:
        blobs = self.storage.blobs
        with self.db.exclusive(self._lock(f"fleet-fetch-{self.worker}", digest)):
            if blobs.has(digest):
                return 0  # another process of this home fetched it meanwhile
            tmp = blobs.tmp / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            try:
                try:
                    known = self.tier.download(digest, tmp, size=size)
                except FleetError as exc:
                    if self.tier.size_of(digest) is not None:
                        raise
                    raise FleetError(
                        f"blob {digest} is not in {self.tier.url}: the worker that stored its model has not"
                        " pushed it (run `modeldepot push` there)",
                        url=self.tier.url,
                    ) from exc
                info = blobs.add_file(tmp, move=True, known=known)
            finally:
                tmp.unlink(missing_ok=True)
            if info.digest != digest:
                raise BlobCorruptError(f"bucket object for {digest} holds {info.digest}", path=tmp)
        return size

    def materialised(self, key: str, dest: Path) -> None:
        now = time.time()
        with self.db.begin() as conn:
            self._forget_local(conn, key)
            conn.execute(
                sa.text(
                    "INSERT INTO fleet_local (worker_id, model_key, path, pulled_at, last_used)"
                    " VALUES (:w, :k, :p, :t, :t)"
                ),
                {"w": self.worker, "k": key, "p": str(dest), "t": now},
            )
        self._touched[key] = now
        self.enforce_budget(keep={key})

    # Worker ------------------------------------------------------------------------------

    def heartbeat(self) -> None:
        now = time.time()
        with self.db.begin() as conn:
            updated = conn.execute(
                sa.text("UPDATE fleet_workers SET last_seen = :t, host = :h, home = :home WHERE worker_id = :w"),
                {"t": now, "h": socket.gethostname(), "home": str(self.config.home), "w": self.worker},
            ).rowcount
            if not updated:
                conn.execute(
                    sa.text(
                        "INSERT INTO fleet_workers (worker_id, host, home, started_at, last_seen)"
                        " VALUES (:w, :h, :home, :t, :t)"
                    ),
                    {"w": self.worker, "h": socket.gethostname(), "home": str(self.config.home), "t": now},
                )

    def prune_deleted(self) -> list[str]:
        """Remove this worker's folders of models another worker deleted from the fleet (the
        record and manifest are gone; only our ``fleet_local`` row remembers where they were)."""
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT l.model_key, l.path FROM fleet_local l WHERE l.worker_id = :w AND NOT EXISTS"
                    " (SELECT 1 FROM storage_models s WHERE s.model_key = l.model_key)"
                ),
                {"w": self.worker},
            ).all()
        root = self.config.models_path.resolve()
        removed = []
        for key, path in rows:
            p = Path(str(path))
            if p.is_relative_to(root) and p != root and (p.exists() or p.is_symlink()):
                remove_any(p)
                removed.append(str(key))
            with self.db.begin() as conn:
                self._forget_local(conn, str(key))
        if removed:
            log.info("removed %d local model folder(s) deleted from the fleet elsewhere", len(removed))
        return removed

    def _forget_local(self, conn: sa.Connection, key: str) -> None:
        conn.execute(
            sa.text("DELETE FROM fleet_local WHERE worker_id = :w AND model_key = :k"), {"w": self.worker, "k": key}
        )

    # Local copies ------------------------------------------------------------------------

    def is_local(self, key: str) -> bool:
        """The model's files are materialised here and its blobs are in the local store."""
        return self._holds(self.storage.manifest(key))

    def _holds(self, man: ModelManifest) -> bool:
        if man.inplace:
            return man.dest is not None and man.dest.exists()
        return (
            man.dest is not None
            and (man.dest.exists() or man.dest.is_symlink())
            and all(self.storage.blobs.has(e.digest) for e in man.entries)
        )

    def _stored(self) -> list[ModelManifest]:
        """The manifest of every model of the fleet that lives in the store (not in place)."""
        keys = self.storage.keys()  # a list of model keys (not a dict: ruff's SIM118 misreads it)
        return [m for m in map(self.storage.manifest, keys) if not m.inplace]

    def stored_keys(self) -> list[str]:
        return [m.key for m in self._stored()]

    def _local(self) -> list[ModelManifest]:
        return [m for m in self._stored() if self._holds(m)]

    def local_keys(self) -> list[str]:
        return [m.key for m in self._local()]

    def pull(self, key: str) -> PullResult:
        """Make model ``key`` local: its missing blobs from the bucket, then its folder."""
        man = self.storage.manifest(key)
        if man.inplace:
            raise FleetError(
                f"model {key} is registered in place at {man.dest} on the machine that registered it;"
                " its files are not in the bucket (install it instead of registering it to share it)",
                url=self.tier.url,
            )
        self.heartbeat()
        if self._holds(man):
            self.touch(key, force=True)
            return PullResult(key, 0, 0, already_local=True)
        missing = [e for e in man.entries if not self.storage.blobs.has(e.digest)]
        self.storage.materialise(key)  # fetches the missing blobs through push/fetch above
        sizes = _distinct(missing)
        return PullResult(key, len(sizes), sum(sizes.values()), already_local=False)

    def push_local(self, keys: Iterable[str] | None = None) -> tuple[int, int]:
        """Send the blobs of local models (all, or ``keys``) the bucket lacks: a home that held
        models before it joined the fleet. Returns (blobs sent, bytes sent)."""
        self.heartbeat()
        sent = sent_bytes = 0
        manifests = self._stored() if keys is None else [self.storage.manifest(k) for k in keys]
        for man in manifests:
            if man.inplace:
                continue
            for digest, size in _distinct(man.entries).items():
                if self.storage.blobs.has(digest) and self._upload(digest, size):
                    sent, sent_bytes = sent + 1, sent_bytes + size
        return sent, sent_bytes

    def evict(self, key: str) -> EvictResult:
        """Drop model ``key``'s local files and the blobs no other local model uses; its record and
        the bucket copy stay (``pull`` brings it back). A blob the bucket lacks is sent first."""
        man = self.storage.manifest(key)
        if man.inplace:
            raise FleetError(f"model {key} is registered in place at {man.dest}; evict only drops stored models")
        self.heartbeat()
        others: set[str] = set()
        for other in self._local():
            if other.key != key:
                others.update(e.digest for e in other.entries)
        removed = freed = 0
        blobs = self.storage.blobs
        with blobs.locked():
            for digest, size in _distinct(man.entries).items():
                if digest in others or not blobs.has(digest):
                    continue
                if self.tier.size_of(digest) != size:
                    self._upload(digest, size)  # never drop the fleet's only copy
                freed += blobs.remove(digest)
                removed += 1
            if man.dest is not None:
                remove_any(man.dest)
        with self.db.begin() as conn:
            self._forget_local(conn, key)
        self._touched.pop(key, None)
        log.info("evicted %s: %d blob(s), %s freed locally", key, removed, human_size(freed))
        return EvictResult(key, removed, freed)

    def touch(self, key: str, *, force: bool = False) -> None:
        """Note that model ``key`` was used now (the LRU order of ``local_cache_gb``)."""
        now = time.time()
        if not force and now - self._touched.get(key, 0.0) < TOUCH_EVERY:
            return
        self._touched[key] = now
        with self.db.begin() as conn:
            conn.execute(
                sa.text("UPDATE fleet_local SET last_used = :t WHERE worker_id = :w AND model_key = :k"),
                {"t": now, "w": self.worker, "k": key},
            )

    def ensure_local(self, key: str, path: str | Path) -> None:
        """Before a load: pull a fleet model this worker does not hold yet, else note the use."""
        if Path(path).exists():
            self.touch(key)
            return
        if self.storage.has_model(key) and not self.storage.manifest(key).inplace:
            self.pull(key)

    def local_bytes(self) -> int:
        """Bytes of the blobs in this home's store."""
        total = 0
        for p in self.storage.blobs.iter_files():
            try:
                total += p.stat().st_size
            except OSError:
                continue
        return total

    def enforce_budget(self, keep: set[str] | None = None) -> list[EvictResult]:
        """Evict least recently used local models until the local blobs fit ``local_cache_gb``."""
        if self.config.local_cache_gb is None:
            return []
        budget = int(self.config.local_cache_gb * (1 << 30))
        used = self.local_bytes()
        if used <= budget:
            return []
        used -= self._drop_strays()
        with self.db.connect() as conn:
            last = {
                str(r[0]): float(r[1])
                for r in conn.execute(
                    sa.text("SELECT model_key, last_used FROM fleet_local WHERE worker_id = :w"), {"w": self.worker}
                )
            }
        order = sorted((k for k in self.local_keys() if k not in (keep or set())), key=lambda k: last.get(k, 0.0))
        done = []
        for key in order:
            if used <= budget:
                break
            result = self.evict(key)
            used -= result.bytes
            done.append(result)
        if used > budget:
            log.warning(
                "local blobs use %s, over local_cache_gb (%s): the models in use need it",
                human_size(used),
                human_size(budget),
            )
        return done

    def _drop_strays(self, min_age: float = STRAY_AGE) -> int:
        """Remove local blobs no local model uses that the bucket holds (a pull that died before
        its model was built); young ones may belong to a pull in progress and stay."""
        used: set[str] = set()
        for man in self._local():
            used.update(e.digest for e in man.entries)
        with self.db.connect() as conn:  # an ingest in progress holds its blobs
            used.update(str(r[0]) for r in conn.execute(sa.text("SELECT digest FROM storage_pending")))
        in_bucket = {b.digest: b.size for b in self.tier.list()}
        freed = 0
        now = time.time()
        blobs = self.storage.blobs
        with blobs.locked():
            for path in blobs.iter_files():
                digest = path.name
                if not is_digest(digest) or digest in used or digest not in in_bucket or not path.is_file():
                    continue
                st = path.stat()
                if now - st.st_ctime < min_age or st.st_size != in_bucket[digest]:
                    continue
                freed += blobs.remove(digest)
        return freed


def _distinct(entries: Iterable[ManifestEntry]) -> dict[str, int]:
    return {e.digest: e.size for e in entries}
