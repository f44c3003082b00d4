"""`modeldepot reference list | show | download | validate` against a test reference served by fakehub."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldepot.testing.factories import write_esrgan
from modeldepot.testing.fakehub import FakeHub

Run = Callable[..., Any]


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_esrgan(tmp_path_factory.mktemp("esrgan") / "up.pth", nf=8, gc=4, num_blocks=1).read_bytes()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


@pytest.fixture
def reference(tmp_path: Path, hub: FakeHub, upscaler: bytes, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An esrgan reference: one good entry (download_all), one whose sha256 is wrong."""
    monkeypatch.setenv("MODELDEPOT_ALLOW_PRIVATE_URLS", "true")  # fakehub is on 127.0.0.1
    url = hub.add_file("files/up.pth", upscaler)
    good = hashlib.sha256(upscaler).hexdigest().upper()  # digests compare in any case
    data = {
        "tiny_up": {
            "name": "Tiny upscaler",
            "type": "realesrgan",
            "description": "a 4x test upscaler",
            "size_on_disk_bytes": len(upscaler),
            "download_all": True,
            "config": {
                "files": [{"path": "tiny_up.pth", "sha256sum": good}],
                "download": [{"file_name": "tiny_up.pth", "file_path": "", "file_url": url}],
            },
        },
        "bad_sha": {
            "name": "bad_sha",
            "type": "realesrgan",
            "config": {
                "files": [{"path": "bad.pth", "sha256sum": "0" * 64}],
                "download": [{"file_name": "bad.pth", "file_url": url}],
            },
        },
    }
    path = tmp_path / "esrgan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def _esrgan(reference: str) -> tuple[str, ...]:
    return ("--service", "esrgan", "--reference", reference)


def _nataili(tmp_path: Path) -> Path:
    return tmp_path / "xdg-cache" / "nataili" / "esrgan"  # the autouse fixture's XDG_CACHE_HOME


def test_list_shows_the_reference_with_computed_availability(run: Run, reference: str, upscaler: bytes) -> None:
    r = run("reference", "list", *_esrgan(reference), "--json")
    assert r.code == 0, r.err
    rows = {row["key"]: row for row in r.json()}
    assert set(rows) == {"tiny_up", "bad_sha"}
    assert rows["tiny_up"]["service"] == "esrgan" and rows["tiny_up"]["available"] is False
    assert rows["tiny_up"]["record_key"] is None and rows["tiny_up"]["size_on_disk_bytes"] > 0
    table = run("reference", "list", *_esrgan(reference))
    assert table.code == 0
    assert "tiny_up" in table.out and f"{len(upscaler) / 1024:.1f} KiB" in table.out and "Tiny upscaler" in table.out
    assert run("reference", "list", *_esrgan(reference), "--available", "--json").json() == []


def test_download_records_links_and_makes_it_available(
    run: Run, reference: str, tmp_path: Path, upscaler: bytes
) -> None:
    r = run("reference", "download", "tiny_up", *_esrgan(reference))
    assert r.code == 0, r.err
    view = _nataili(tmp_path) / "tiny_up.pth"
    assert view.read_bytes() == upscaler
    assert str(view) in r.out
    rows = run("reference", "list", *_esrgan(reference), "--available", "--json").json()
    assert [row["key"] for row in rows] == ["tiny_up"] and rows[0]["available"] is True
    records = run("list", "--tag", "reference:tiny_up", "--json").json()
    assert [m["key"] for m in records] == [rows[0]["record_key"]]
    assert {"nataili", "service:esrgan"} <= set(records[0]["tags"])
    again = run("reference", "download", "tiny_up", *_esrgan(reference))
    assert again.code == 0 and "already available" in again.out


def test_a_wrong_sha256_is_one_error_line_and_stays_unavailable(run: Run, reference: str) -> None:
    r = run("reference", "download", "bad_sha", *_esrgan(reference))
    assert r.code == 1
    errors = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "bad_sha" in errors[0] and "0" * 64 in errors[0], r.err
    assert "Traceback" not in r.err
    rows = run("reference", "list", *_esrgan(reference), "--available", "--json").json()
    assert rows == []


def test_download_all_takes_only_the_marked_entries(run: Run, reference: str, tmp_path: Path) -> None:
    r = run("reference", "download", "--all", *_esrgan(reference))
    assert r.code == 0, r.err
    assert (_nataili(tmp_path) / "tiny_up.pth").is_file()
    assert not (_nataili(tmp_path) / "bad.pth").exists()


def test_show_lists_files_digests_locations_and_record(run: Run, reference: str, tmp_path: Path) -> None:
    before = run("reference", "show", "tiny_up", *_esrgan(reference), "--json").json()
    assert before["available"] is False and before["record_key"] is None
    assert before["name"] == "Tiny upscaler" and before["download_all"] is True
    [f] = before["files"]
    assert f["path"] == "tiny_up.pth" and f["present"] is False and len(f["sha256sum"]) == 64
    assert f["location"] == str(_nataili(tmp_path) / "tiny_up.pth")
    assert run("reference", "download", "tiny_up", *_esrgan(reference)).code == 0
    after = run("reference", "show", "tiny_up", *_esrgan(reference), "--json").json()
    assert after["available"] is True and after["record_key"] and after["files"][0]["present"] is True
    text = run("reference", "show", "tiny_up", *_esrgan(reference))
    assert text.code == 0 and f["sha256sum"] in text.out and "present at" in text.out


def test_validate_reports_a_changed_file(run: Run, reference: str, tmp_path: Path) -> None:
    nothing = run("reference", "validate", *_esrgan(reference))
    assert nothing.code == 0 and "no reference model is downloaded" in nothing.out
    assert run("reference", "download", "tiny_up", *_esrgan(reference)).code == 0
    ok = run("reference", "validate", *_esrgan(reference))
    assert ok.code == 0 and "ok tiny_up (esrgan)" in ok.out
    view = _nataili(tmp_path) / "tiny_up.pth"
    view.unlink()  # a link into the depot: replaced, not written through
    view.write_bytes(b"not the upscaler")
    bad = run("reference", "validate", *_esrgan(reference))
    assert bad.code == 1
    [line] = bad.err.strip().splitlines()
    assert line.startswith("error: tiny_up (esrgan) is not valid") and "sha256" in line
    missing = run("reference", "validate", "bad_sha", *_esrgan(reference))
    assert missing.code == 1 and "missing" in missing.err


def test_user_errors_are_one_line_and_non_zero(run: Run, reference: str) -> None:
    shared = run("reference", "download", "stable_diffusion_inpainting")  # shipped in compvis and diffusers
    assert shared.code == 2 and "compvis, diffusers" in shared.err and "--service" in shared.err
    assert run("reference", "show", "stable_diffusion_inpainting", "--service", "diffusers").code == 0
    cases = [
        (("reference", "show", "no_such_model"), 1, "no_such_model"),
        (("reference", "show", "no_such_model", *_esrgan(reference)), 1, "no_such_model"),
        (("reference", "list", "--service", "nope"), 2, "nope"),
        (("reference", "list", "--reference", reference), 2, "--service"),
        (("reference", "download"), 2, "--all"),
        (("reference", "download", "tiny_up", "--all", *_esrgan(reference)), 2, "--all"),
        (("reference", "list", "--service", "esrgan", "--reference", "/no/such/file.json"), 1, "file.json"),
    ]
    for args, code, word in cases:
        r = run(*args)
        lines = r.err.strip().splitlines()
        assert r.code == code and len(lines) == 1 and word in lines[0], (args, r.code, r.err)
