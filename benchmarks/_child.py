"""Run a benchmark script again as a child process and read the JSON line it prints last.

Shared by the benchmarks that measure each implementation in a fresh interpreter (``bench_api``,
``bench_search``); ``pythonpath`` points the child at another checkout's ``src`` for side-by-side runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def run_child(script: str, args: list[str], pythonpath: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
