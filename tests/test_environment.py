"""The test environment is reproducible: the README command installs from a constraints file that
pins every dependency, and the project's ranges admit the pinned versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[_norm(name)] = version
    return pins


def _requirements() -> list[str]:
    project = PYPROJECT["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.extend(extra)
    return reqs


def _name(req: str) -> str:
    match = re.match(r"[A-Za-z0-9_.\-]+", req)
    assert match, req
    return _norm(match.group(0))


def test_readme_command_installs_with_the_constraints() -> None:
    block = README.split("<!-- test-command -->", 1)[1].split("```", 2)[1]
    assert "-c constraints.txt" in block
    assert "pytest" in block and "-m slow" in block  # CI runs the slow tests too


def test_every_dependency_is_pinned() -> None:
    pins = _pins()
    missing = sorted({_name(r) for r in _requirements()} - set(pins))
    assert not missing, f"constraints.txt lacks pins for: {missing}"


def test_pins_satisfy_the_declared_ranges() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    pins = _pins()
    for req in _requirements():
        parsed = Requirement(req)
        pinned = Version(pins[_norm(parsed.name)])
        assert parsed.specifier.contains(pinned, prereleases=True), f"{req} does not admit the pinned {pinned}"


def test_every_dependency_has_an_upper_bound() -> None:
    # A new major release must not reach a fresh machine untested.
    from packaging.requirements import Requirement

    unbounded = [
        r for r in _requirements() if not any(s.operator in ("<", "<=", "==") for s in Requirement(r).specifier)
    ]
    assert unbounded == [], f"no upper bound: {unbounded}"
