"""Jobs across restarts, the download cache, doctor, Civitai lookup by hash, and the job commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modeldepot.cli import main
from modeldepot.manager import ModelManager
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub


def _open(home: Path, hub: FakeHub) -> ModelManager:
    return ModelManager.open(
        home=home,
        hf_endpoint=hub.url,
        civitai_endpoint=hub.url,
        allow_private_urls=True,
        link_modes=["hardlink", "copy"],
    )


def test_unfinished_install_resumes_in_a_new_process(hub: FakeHub, tmp_path: Path) -> None:
    vae = factories.write_vae(tmp_path / "v.safetensors")
    big = vae.read_bytes() + b"\0" * 0  # the real file
    url = hub.add_file("files/x/vae.safetensors", big)
    home = tmp_path / "depot"
    hub.faults("*", speed_limit_bps=20_000)  # slow: the first manager stops mid-download
    mm = _open(home, hub)
    job = mm.install.heuristic_import(url)
    import threading

    got = threading.Event()
    mm.events.subscribe(lambda e: got.set() if e.payload.get("bytes", 0) > 0 else None, {"model_install_downloading"})
    assert got.wait(30)
    mm.close()  # like a restart: the job is unfinished, its partial file stays
    assert not job.in_terminal_state or job.status.value != "completed"
    hub.clear_faults()
    hub.stats.reset()
    with _open(home, hub) as mm2:
        assert mm2.install.list_jobs() == []  # reading takes over nothing
        mm2.install.start()  # starting does: the job no live process runs resumes here
        resumed = [j for j in mm2.install.list_jobs() if j.source == job.source]
        assert len(resumed) == 1 and resumed[0].id == job.id
        done = mm2.install.wait_for_job(resumed[0], timeout=60)
        assert done.complete, done.error
        assert Path(done.config_out.path).read_bytes() == big  # type: ignore[union-attr]
    # Only the missing bytes were fetched again.
    assert hub.stats.bytes_sent_total < len(big)


def test_download_and_cache(mm: ModelManager, hub: FakeHub) -> None:
    url = hub.add_file("files/cfg/thing.yaml", b"model: tiny\n")
    path = mm.install.download_and_cache(url, timeout=30)
    assert path.read_bytes() == b"model: tiny\n" and mm.config.home in path.parents
    hub.stats.reset()
    assert mm.install.download_and_cache(url, timeout=30) == path
    assert hub.stats.bytes_sent_total == 0
    assert mm.store.all_models() == []  # not registered


def test_doctor_reports_and_prunes_missing(mm: ModelManager, tmp_path: Path) -> None:
    f = factories.write_lora(tmp_path / "gone.safetensors")
    key = mm.install.register_path(f)
    f.unlink()
    report = mm.install.sync_to_config()
    assert [m["key"] for m in report["missing"]] == [key]
    assert mm.store.exists(key)
    mm.install.sync_to_config(prune_missing=True)
    assert not mm.store.exists(key)


def test_civitai_lookup_fills_metadata(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "mystery.safetensors")
    hub.add_civitai_model(
        {
            "id": 9,
            "name": "Mystery Style",
            "type": "LORA",
            "tags": ["style"],
            "creator": {"username": "artist"},
            "modelVersions": [
                {
                    "id": 90,
                    "name": "v1",
                    "baseModel": "Pony",
                    "trainedWords": ["mystyle"],
                    "images": [{"url": f"{hub.url}/thumb.png"}],
                    "files": [{"name": "mystery.safetensors", "type": "Model", "primary": True, "data": lora}],
                }
            ],
        }
    )
    key = mm.install.register_path(lora)
    result = mm.install.civitai_lookup(key)
    assert result["civitai_version"] == 90
    rec = mm.store.get_model(key)
    assert rec.trigger_phrases == {"mystyle"} and rec.author == "artist"
    assert "lineage:pony" in rec.tags and rec.thumbnail_url == f"{hub.url}/thumb.png"
    assert str(rec.base) == "sdxl"  # the header decides the base, Civitai's lineage is a tag
    assert hashlib.sha256(lora.read_bytes()).hexdigest()  # file untouched


def test_jobs_and_cancel_commands(hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "depot"
    url = hub.add_file("files/y/slow.safetensors", factories.write_vae(tmp_path / "s.safetensors").read_bytes())
    hub.faults("*", speed_limit_bps=10_000)
    mm = _open(home, hub)
    job = mm.install.heuristic_import(url)
    mm.close()

    def cli(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            main([*args, "--home", str(home)])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().out

    code, out = cli("jobs", "--json")
    assert code == 0 and any(j["id"] == job.id and j["status"] != "completed" for j in __import__("json").loads(out))
    code, _ = cli("cancel", str(job.id))
    assert code == 0
    code, out = cli("jobs", "--json")
    assert [j["status"] for j in __import__("json").loads(out) if j["id"] == job.id] == ["cancelled"]
    code, _ = cli("cancel", "9999")
    assert code == 1


def test_start_removes_orphan_staging(tmp_path: Path, hub: FakeHub) -> None:
    home = tmp_path / "depot"
    with _open(home, hub) as mm:
        orphan = mm.config.tmp_dir / "install" / "777"
        orphan.mkdir(parents=True)
        (orphan / "half.safetensors.part").write_bytes(b"x")
    with _open(home, hub) as mm:
        mm.install.start()  # starting the service cleans up
        assert not orphan.exists()


def test_start_reports_vanished_files(tmp_path: Path, hub: FakeHub, caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "depot"
    f = factories.write_lora(tmp_path / "lost.safetensors")
    with _open(home, hub) as mm:
        mm.install.register_path(f)
    f.unlink()
    with caplog.at_level("WARNING", logger="modeldepot.install.service"), _open(home, hub) as mm:
        mm.install.start()
        assert mm.store.all_models()  # reported, not forgotten
    assert any("no files any more" in r.getMessage() and "doctor --fix" in r.getMessage() for r in caplog.records)
