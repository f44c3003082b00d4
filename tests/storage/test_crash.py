"""kill -9 at named points of an import: no visible half model; recover() finishes or rolls back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _storage_helpers import make_store, pipeline, tree_sha256

from modeldepot.storage.base import CRASH_ENV

SCRIPT = """
import sys
from pathlib import Path
from modeldepot._db import Database
from modeldepot.config import DepotConfig
from modeldepot.storage import ContentStore
home, src, dest, move = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
cfg = DepotConfig(home=home)
store = ContentStore(cfg, Database.open(cfg.db_url))
store.import_files(src, "k", dest, move=move)
print("done")
"""

POINTS = [
    ("blob-written", False),
    ("blob-registered", False),
    ("staged", False),
    ("committed", False),
    ("materialise-built", False),
    ("blob-linked", True),
    ("staged", True),
]


@pytest.mark.parametrize(("point", "move"), POINTS)
def test_kill9_during_import(home: Path, tmp_path: Path, point: str, move: bool) -> None:
    src = pipeline((home / "incoming" if move else tmp_path) / "p", 3)
    original = tree_sha256(src)
    store, db = make_store(home)  # creates the schema
    dest = store.config.models_path / "sd-1" / "main" / "p"
    env = {**os.environ, CRASH_ENV: point, "MODELDEPOT_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(home), str(src), str(dest), "1" if move else "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    # No half model is ever visible: the destination is absent or complete.
    if dest.exists():
        assert tree_sha256(dest) == original
    visible = [p.name for p in dest.parent.iterdir()] if dest.parent.exists() else []
    assert all(n == "p" or n.startswith(".") for n in visible)
    # A move that died before its commit leaves the user's source untouched.
    if move:
        assert tree_sha256(src) == original

    done = store.recover(pending_grace_seconds=0, tmp_age_seconds=0)
    assert list(store.blobs.tmp.glob("incoming-*")) == []
    assert [p.name for p in dest.parent.iterdir()] in ([], ["p"]) if dest.parent.exists() else True
    if store.has_model("k"):  # committed: recover finished the materialisation
        assert tree_sha256(dest) == original
        assert store.verify().ok
        if point == "committed":
            assert done["materialised"] == ["k"]
    else:  # rolled back: nothing registered, gc can reclaim every blob
        assert not dest.exists()
        store.gc(grace_seconds=0)
        assert list(store.blobs.iter_files()) == []
    db.close()
