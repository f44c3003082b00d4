"""The fleet commands as a user runs them: two worker homes, one PostgreSQL database, one bucket."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modeldepot.cli import main
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(600)]


@pytest.fixture
def cli(
    tmp_path: Path, pg_url: str, bucket_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``cli(worker, *args)``: run ``modeldepot ARGS --home <worker's home>`` in-process."""
    monkeypatch.setenv("MODELDEPOT_DB", pg_url)
    monkeypatch.setenv("MODELDEPOT_BLOB_REMOTE", bucket_url)
    monkeypatch.setenv("MODELDEPOT_ALLOW_PRIVATE_URLS", "true")
    monkeypatch.setenv("MODELDEPOT_LINK_MODES", "hardlink,copy")

    def run(worker: int, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main([*args, "--home", str(tmp_path / f"worker{worker}")])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _json(result: tuple[int, str, str]) -> Any:
    code, out, err = result
    assert code == 0, f"{out}\n{err}"
    return json.loads(out)


def test_pull_evict_push_status_gc(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    with FakeHub() as hub:
        url = hub.add_file("/files/vae.safetensors", factories.write_vae(tmp_path / "vae.safetensors"))
        code, out, err = cli(1, "install", url)
        assert code == 0, out + err
    [model] = _json(cli(2, "list", "--json"))
    assert model["local"] is False
    code, out, _ = cli(2, "list")
    assert "local" in out and "0 local to this worker" in out

    [pulled] = _json(cli(2, "pull", model["key"], "--json"))
    assert pulled["blobs"] == 1 and not pulled["already_local"]
    assert _json(cli(2, "list", "--json"))[0]["local"] is True
    code, out, _ = cli(2, "pull", "--all")
    assert code == 0 and "already local" in out

    report = _json(cli(1, "fleet", "status", "--json"))
    assert len(report["workers"]) == 2 and all(w["models"] == 1 for w in report["workers"])
    assert report["bucket_objects"] == 1 and report["missing"] == 0
    code, out, _ = cli(1, "fleet", "status")
    assert code == 0 and "(this one)" in out and "no install jobs in flight" in out

    evicted = _json(cli(2, "evict", model["key"], "--json"))
    assert evicted["blobs"] == 1
    assert _json(cli(2, "list", "--json"))[0]["local"] is False
    assert _json(cli(2, "push", "--json"))["blobs"] == 0  # nothing local the bucket lacks

    gc = _json(cli(1, "fleet", "gc", "--grace", "0", "--json"))
    assert gc["removed"] == []  # referenced by the record


def test_usage_and_fleet_off(cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = cli(1, "pull")
    assert code == 2 and "--all" in err
    monkeypatch.delenv("MODELDEPOT_BLOB_REMOTE")
    code, _, err = cli(1, "fleet", "status")
    assert code == 1 and "fleet mode is off" in err and "blob_remote" in err
