"""One mapping from an identification to a record (issue 12).

The same bytes registered in place, installed into the store, or found by a scan must make the
same record, apart from the fields that say where and how the model arrived; and re-identifying
an installed model must change none of the fields identification decides.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modeldepot.configs import ModelConfigBase
from modeldepot.identify import identify, record_fields
from modeldepot.manager import ModelManager
from modeldepot.testing import factories

#: Fields about where or how a model was installed: the only ones allowed to differ.
LOCATION_FIELDS = frozenset(
    {"key", "path", "inplace", "source", "source_type", "created_at", "updated_at", "last_modified"}
)
#: Fields a re-identification may touch without changing what the model is.
TIMESTAMPS = frozenset({"updated_at", "last_modified"})

Writer = Callable[[Path], Path]

KINDS: dict[str, Writer] = {
    "diffusers-sd1": lambda d: factories.write_diffusers_pipeline(d / "tiny-sd", "sd-1"),
    "diffusers-sdxl": lambda d: factories.write_diffusers_pipeline(d / "tiny-xl", "sdxl"),
    "checkpoint-sd1": lambda d: factories.write_sd1_checkpoint(d / "tiny-ckpt.safetensors"),
    "lora-sd1": lambda d: factories.write_lora(d / "tiny-lora.safetensors"),
}
DIFFUSERS = ("diffusers-sd1", "diffusers-sdxl")


@dataclass
class Arrival:
    """One model as one of the three ways recorded it, in its own home."""

    how: str
    mm: ModelManager
    key: str
    source_path: Path

    def record(self) -> ModelConfigBase:
        return self.mm.store.get_model(self.key)


def _copy(src: Path, dest_parent: Path) -> Path:
    dest_parent.mkdir(parents=True, exist_ok=True)
    dest = dest_parent / src.name
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)
    return dest


def _dump(record: ModelConfigBase) -> dict[str, Any]:
    return record.model_dump(mode="json")


def _differences(a: dict[str, Any], b: dict[str, Any], ignore: frozenset[str]) -> dict[str, tuple[Any, Any]]:
    missing = object()
    return {
        k: (a.get(k, "<absent>"), b.get(k, "<absent>"))
        for k in sorted((set(a) | set(b)) - ignore)
        if a.get(k, missing) != b.get(k, missing)
    }


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _arrive(kind: str, tmp_path: Path, stack: ExitStack) -> dict[str, Arrival]:
    """The same model registered in place, installed, and scanned-and-registered, in three homes."""
    original = KINDS[kind](tmp_path / "original")

    def open_home(name: str) -> ModelManager:
        return stack.enter_context(ModelManager.open(home=tmp_path / f"home-{name}", link_modes=["hardlink", "copy"]))

    out: dict[str, Arrival] = {}

    mm = open_home("register")
    path = _copy(original, tmp_path / "register-src")
    out["register"] = Arrival("register", mm, mm.install.register_path(path), path)

    mm = open_home("install")
    path = _copy(original, tmp_path / "install-src")
    out["install"] = Arrival("install", mm, mm.install.install_path(path), path)

    mm = open_home("scan")
    parent = tmp_path / "scan-src"
    path = _copy(original, parent)
    results = mm.install.scan_and_register(parent)
    assert [r["status"] for r in results] == ["registered"], results
    out["scan"] = Arrival("scan", mm, results[0]["key"], path)
    return out


@pytest.fixture(scope="module")
def arrived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], dict[str, Arrival]]]:
    """Each kind's arrivals, made once per module: the tests only read the records (re-identifying
    touches no identified field, which is what one of them checks)."""
    made: dict[str, dict[str, Arrival]] = {}
    with ExitStack() as stack:

        def get(kind: str) -> dict[str, Arrival]:
            if kind not in made:
                made[kind] = _arrive(kind, tmp_path_factory.mktemp(kind), stack)
            return made[kind]

        yield get


@pytest.fixture
def arrivals(kind: str, arrived: Callable[[str], dict[str, Arrival]]) -> dict[str, Arrival]:
    return arrived(kind)


def test_register_install_and_scan_make_the_same_record(kind: str, arrivals: dict[str, Arrival]) -> None:
    records = {how: _dump(a.record()) for how, a in arrivals.items()}
    base = records["install"]
    for how in ("register", "scan"):
        diff = _differences(base, records[how], LOCATION_FIELDS)
        assert not diff, f"{kind}: install_path and {how} disagree on {sorted(diff)}: {diff}"
    # The location fields say what they should (so the comparison above left out the right ones).
    assert records["register"]["inplace"] is True and records["scan"]["inplace"] is True
    assert records["install"]["inplace"] is False


@pytest.mark.parametrize("how", ["register", "install", "scan"])
def test_record_holds_what_identification_decides(kind: str, arrivals: dict[str, Arrival], how: str) -> None:
    """Each way fills every field ``record_fields`` (the identification -> record mapping) decides."""
    arrival = arrivals[how]
    record = arrival.record()
    decided = record_fields(identify(arrival.source_path))
    # Apply the mapping's fields on top of the record: a record that already holds them is unchanged.
    remapped = type(record).model_validate({**record.model_dump(), **decided})
    diff = _differences(_dump(record), _dump(remapped), frozenset())
    assert not diff, f"{kind} via {how}: record differs from what identification decides on {sorted(diff)}: {diff}"


@pytest.mark.parametrize("how", ["register", "install", "scan"])
@pytest.mark.parametrize("kind", DIFFUSERS)
def test_diffusers_records_have_submodels_and_default_size(kind: str, arrivals: dict[str, Arrival], how: str) -> None:
    record = _dump(arrivals[how].record())
    assert record["submodels"], f"{how}: submodels is {record['submodels']!r}"
    assert {"unet", "vae", "text_encoder"} <= set(record["submodels"]), record["submodels"]
    size = 1024 if kind == "diffusers-sdxl" else 512
    assert (record["default_width"], record["default_height"]) == (size, size), (
        f"{how}: default size {record['default_width']!r}x{record['default_height']!r}"
    )


@pytest.mark.parametrize("how", ["register", "install", "scan"])
def test_reidentify_changes_no_identified_field(kind: str, arrivals: dict[str, Arrival], how: str) -> None:
    arrival = arrivals[how]
    before = _dump(arrival.record())
    returned = _dump(arrival.mm.install.reidentify(arrival.key))
    stored = _dump(arrival.record())
    diff = _differences(before, returned, TIMESTAMPS)
    assert not diff, f"{kind} via {how}: reidentify changed {sorted(diff)}: {diff}"
    assert _differences(returned, stored, frozenset()) == {}, "reidentify returned a record other than the stored one"
