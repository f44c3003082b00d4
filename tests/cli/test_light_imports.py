"""`modeldepot list` and `modeldepot reference list` must stay light: no torch, diffusers,
transformers or fastapi, and no boto3 even on a fleet worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "diffusers", "transformers", "fastapi", "uvicorn", "safetensors.torch", "boto3", "botocore")

PROBE = """
import sys, runpy
sys.argv = ["modeldepot", *{argv!r}]
code = None
try:
    from modeldepot.cli import main
    main()
except SystemExit as e:
    code = e.code
import json
heavy = [m for m in {heavy!r} if m in sys.modules]
print("CODE=" + str(code))
print("HEAVY=" + json.dumps(heavy))
"""


@pytest.mark.parametrize(
    ("argv", "settings"),
    [
        (["list", "--json"], {}),
        (["reference", "list", "--json"], {}),
        (["list", "--json"], {"MODELDEPOT_BLOB_REMOTE": "s3://fleet-bucket/team"}),
        (["list"], {"MODELDEPOT_BLOB_REMOTE": "s3://fleet-bucket/team"}),
    ],
    ids=["list", "reference list", "list on a fleet worker", "list table on a fleet worker"],
)
def test_list_does_not_import_heavy_modules(tmp_path: Path, argv: list[str], settings: dict[str, str]) -> None:
    env = {
        **os.environ,
        **settings,
        "MODELDEPOT_HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "NATAILI_CACHE_HOME": str(tmp_path / "nataili"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, argv=argv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line, proc.stdout + proc.stderr
    assert "CODE=0" in proc.stdout, proc.stdout + proc.stderr
    assert json.loads(line[0][6:]) == []
