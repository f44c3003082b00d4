"""The public surface of modeldepot.remote."""

from __future__ import annotations

import subprocess
import sys

import modeldepot.remote as remote


def test_all_names_exist_and_are_sorted() -> None:
    assert sorted(remote.__all__) == list(remote.__all__)
    for name in remote.__all__:
        assert getattr(remote, name) is not None, name
    public = {n for n in dir(remote) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(remote.__all__)


def test_importing_does_not_import_huggingface_hub() -> None:
    code = "import sys, modeldepot.remote; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
