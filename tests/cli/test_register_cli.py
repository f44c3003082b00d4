"""``modeldepot register`` says what happened: a new record, known content, or not a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldepot.testing import factories


def test_register_copy_of_registered_content_never_claims_a_registration(
    home: Path, tmp_path: Path, run: Callable[..., Any]
) -> None:
    original = factories.write_textual_inversion(tmp_path / "easynegative.safetensors")
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(original.read_bytes())
    first = run("register", str(original), "--name", "easynegative")
    assert first.code == 0 and first.out.startswith("registered easynegative"), first.out + first.err
    key = run("list", "--json").json()[0]["key"]
    second = run("register", str(copy), "--name", "X")
    assert second.code == 0, second.err
    text = " ".join(second.out.split())  # rich wraps long lines
    assert "registered X" not in text and not text.startswith("registered")
    assert f"already registered as 'easynegative' (key {key}); path recorded as an extra location" in text
    assert [m["name"] for m in run("list", "--json").json()] == ["easynegative"]
    as_json = run("register", str(copy), "--json").json()
    assert (as_json["key"], as_json["outcome"]) == (key, "already_registered")


def test_register_refuses_files_that_are_not_models_unless_forced(
    home: Path, tmp_path: Path, run: Callable[..., Any]
) -> None:
    readme = tmp_path / "readme.txt"
    readme.write_text("# my models\n")
    script = tmp_path / "script.py"
    script.write_text("print('hi')\n")
    for path in (readme, script):
        r = run("register", str(path))
        assert r.code == 1
        assert r.err.startswith(f"error: {path.name} is not a model file:"), r.err
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert run("list", "--json").json() == []
    forced = run("register", str(readme), "--force")
    assert forced.code == 0, forced.err
    assert [m["type"] for m in run("list", "--json").json()] == ["unknown"]
