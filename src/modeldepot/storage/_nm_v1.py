"""Moving models of the first normalized view (a namespace of its own, tables ``nm_model_name``...)
into the record store, once, when the view opens.

Each model is written out from its blobs into a scratch folder and installed from there (in move
mode, so its bytes are linked back into the same blobs, not stored twice); then its old rows and
its old part manifests go. A model that fails to move is left as it was and logged: nothing is
dropped before its record exists.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from modeldepot._fs import join_inside, remove_any
from modeldepot.errors import ModelDepotError
from modeldepot.storage._schema import q
from modeldepot.storage._store import ContentStore

log = logging.getLogger(__name__)


def _v1_models(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(q("SELECT model_id, name, type, format, part_digest FROM nm_model_name ORDER BY created_at"))
    out = []
    for key, name, type_, fmt, own in rows.all():
        base = conn.execute(
            q("SELECT base FROM nm_model_base WHERE model_id = :k ORDER BY is_primary DESC, base"), {"k": key}
        ).first()
        top = conn.execute(q("SELECT top_key, path FROM nm_pipeline WHERE model_id = :k"), {"k": key}).first()
        parts = [
            (str(f), str(k))
            for f, k in conn.execute(
                q(
                    "SELECT pp.folder, p.store_key FROM nm_pipeline_parts pp JOIN nm_model_path p"
                    " ON p.part_digest = pp.part_digest WHERE pp.model_id = :k"
                ),
                {"k": key},
            )
        ]
        if own:
            skey = conn.execute(q("SELECT store_key FROM nm_model_path WHERE part_digest = :p"), {"p": own}).one()[0]
            parts = [("", skey)]
        out.append(
            {
                "key": str(key),
                "config": {"name": str(name), "type": str(type_), "format": str(fmt), "base": str(base[0])}
                if base
                else {"name": str(name), "type": str(type_), "format": str(fmt)},
                "top": (str(top[0]) if top and top[0] else None, str(top[1]) if top and top[1] else None),
                "parts": [(str(f), str(k)) for f, k in parts],
            }
        )
    return out


def _write_out(store: ContentStore, model: dict[str, Any], scratch: Path) -> Path:
    """The model's files, from its blobs, under ``scratch`` (a folder, or one file)."""
    top_key, _ = model["top"]
    plan: list[tuple[str, str, int]] = []
    if top_key:
        plan += [(e.relpath, e.digest, e.mode) for e in store.manifest(top_key).entries]
    single = False
    for folder, skey in model["parts"]:
        man = store.manifest(skey)
        single = single or (folder == "" and man.kind == "file")
        plan += [(f"{folder}/{e.relpath}" if folder else e.relpath, e.digest, e.mode) for e in man.entries]
    root = scratch / "model"
    if single:
        root.mkdir()
        out = root / plan[0][0]
    else:
        out = root
    for rel, digest, mode in plan:
        path = join_inside(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        store.blobs.write_to(digest, path, mode or 0o644)
    return out


def _drop(conn: Connection, store: ContentStore, model: dict[str, Any]) -> list[Path]:
    """Remove a moved model's v1 rows and the part manifests only it used; returns folders to delete."""
    key = model["key"]
    digests = {
        str(r[0]) for r in conn.execute(q("SELECT part_digest FROM nm_pipeline_parts WHERE model_id = :k"), {"k": key})
    }
    own = conn.execute(q("SELECT part_digest FROM nm_model_name WHERE model_id = :k"), {"k": key}).one()[0]
    if own:
        digests.add(str(own))
    for table in ("nm_pipeline_parts", "nm_pipeline", "nm_model_base", "nm_model_name"):
        conn.execute(q(f"DELETE FROM {table} WHERE model_id = :k"), {"k": key})
    top_key, top_path = model["top"]
    if top_key:
        store.delete_model(top_key, conn)
    gone = [Path(top_path)] if top_path else []
    for pd in digests:
        users = conn.execute(q("SELECT refcount FROM nm_part_refcounts WHERE part_digest = :p"), {"p": pd}).one()[0]
        if int(users) == 0:
            skey = conn.execute(q("SELECT store_key FROM nm_model_path WHERE part_digest = :p"), {"p": pd}).one()[0]
            conn.execute(q("DELETE FROM nm_model_path WHERE part_digest = :p"), {"p": pd})
            store.delete_model(str(skey), conn)
    return gone


def adopt_v1(store: ContentStore, importer: Callable[..., str]) -> list[str]:
    """Move every first-version normalized model into the record store; returns the new keys."""
    with store.db.connect() as c:
        models = _v1_models(c)
    keys: list[str] = []
    for model in models:
        store.config.tmp_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="nm-v1-", dir=store.config.tmp_dir))
        try:
            keys.append(importer(_write_out(store, model, scratch), model["config"], move=True))
            with store.db.begin() as conn:
                gone = _drop(conn, store, model)
            for path in gone:
                remove_any(path)
            log.info("moved normalized model %s (%s) into the record store", model["config"]["name"], model["key"])
        except ModelDepotError as exc:
            log.warning("could not move normalized model %s into the record store: %s", model["config"]["name"], exc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return keys
