"""Models of the first normalized view (its own namespace) move into the record store when the
view opens: one namespace, no byte stored twice, nothing dropped before its record exists."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from _storage_helpers import tree_sha256

from modeldepot import ModelManager
from modeldepot._db import Database
from modeldepot.config import DepotConfig
from modeldepot.storage import ContentStore
from modeldepot.storage._nm_schema import migrate
from modeldepot.storage._schema import q
from modeldepot.testing import factories as F


def _v1_import(store: ContentStore, db: Database, src: Path, name: str) -> str:
    """What the first normalized view wrote for a pipeline: one store key per part folder, one for
    the top-level files, and rows in nm_model_name / nm_model_base / nm_pipeline(_parts)."""
    migrate(db)
    key = uuid.uuid4().hex
    with db.begin() as conn:
        conn.execute(
            q(
                "INSERT INTO nm_model_name (model_id, name, type, format, part_digest, created_at)"
                " VALUES (:k, :n, 'main', 'diffusers', NULL, :t)"
            ),
            {"k": key, "n": name, "t": time.time()},
        )
        conn.execute(q("INSERT INTO nm_model_base (model_id, base, is_primary) VALUES (:k, 'sd-1', 1)"), {"k": key})
    top = store.config.tmp_dir / f"top-{key}"
    top.mkdir(parents=True)
    (top / "model_index.json").write_bytes((src / "model_index.json").read_bytes())
    store.import_files(top, f"nm-pipe-{key}", store.config.models_path / "_pipelines" / key)
    with db.begin() as conn:
        conn.execute(
            q("INSERT INTO nm_pipeline (model_id, top_key, path) VALUES (:k, :t, :p)"),
            {"k": key, "t": f"nm-pipe-{key}", "p": str(store.config.models_path / "_pipelines" / key)},
        )
    for folder in sorted(p.name for p in src.iterdir() if p.is_dir()):
        digest = uuid.uuid4().hex + uuid.uuid4().hex
        skey = f"nm-part-{digest}"
        dest = store.config.models_path / "_parts" / digest[:2] / digest
        store.import_files(src / folder, skey, dest)
        with db.begin() as conn:
            conn.execute(
                q(
                    "INSERT INTO nm_model_path (part_digest, store_key, kind, path, size)"
                    " VALUES (:p, :k, 'folder', :d, 1)"
                ),
                {"p": digest, "k": skey, "d": str(dest)},
            )
            conn.execute(
                q("INSERT INTO nm_pipeline_parts (model_id, submodel, folder, part_digest) VALUES (:m, :f, :f, :p)"),
                {"m": key, "f": folder, "p": digest},
            )
    return key


def test_first_version_models_become_records(tmp_path: Path) -> None:
    src = F.write_sd_pipeline_family(tmp_path / "fam", 1)[0]
    home = tmp_path / "home"
    cfg = DepotConfig(home=home)
    db = Database.open(cfg.db_url)
    old = _v1_import(ContentStore(cfg, db), db, src, "legacy")
    db.close()
    with ModelManager.open(home=home) as mm:
        vae = mm.normalized.get_pipeline_by_name("legacy", "sd-1", "vae")  # opening the view moved it
        records = mm.store.all_models()
        assert [r.name for r in records] == ["legacy"] and records[0].key != old
        assert tree_sha256(Path(records[0].path)) == tree_sha256(src)
        assert vae.path == Path(records[0].path) / "vae"
        with mm.db.connect() as c:
            assert c.execute(q("SELECT COUNT(*) FROM nm_model_name")).one()[0] == 0
        assert not (mm.config.models_path / "_pipelines" / old).exists()
        assert list(mm.storage.refcounts().values()) and all(n == 1 for n in mm.storage.refcounts().values())
        assert not [k for k in mm.storage.keys() if k.startswith("nm-")]  # noqa: SIM118 - a method, not a dict
