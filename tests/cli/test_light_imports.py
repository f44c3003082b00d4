"""`modeldepot list` must stay light: no torch, diffusers, transformers or fastapi."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers", "fastapi", "uvicorn", "safetensors.torch")

PROBE = """
import sys, runpy
sys.argv = ["modeldepot", "list", "--json"]
try:
    from modeldepot.cli import main
    main()
except SystemExit as e:
    code = e.code
import json
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY=" + json.dumps(heavy))
"""


def test_list_does_not_import_heavy_modules(tmp_path: Path) -> None:
    env = {**os.environ, "MODELDEPOT_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)], env=env, capture_output=True, text=True, timeout=120
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line, proc.stdout + proc.stderr
    assert json.loads(line[0][6:]) == []
