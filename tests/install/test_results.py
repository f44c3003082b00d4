"""Issue 13: results say what happened (known content, not-a-model files, healing, full disks)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from modeldepot.errors import InsufficientSpaceError, InvalidSourceError
from modeldepot.install import cancel_persisted_job
from modeldepot.manager import ModelManager
from modeldepot.storage import _blobs as blobs_module
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub


def _corrupt_blobs_of(mm: ModelManager, key: str) -> list[str]:
    digests = [e.digest for e in mm.storage.manifest(key).entries]
    for digest in digests:
        blob = mm.storage.blobs.path_for(digest)
        blob.chmod(0o644)
        with blob.open("r+b") as f:
            f.seek(-1, os.SEEK_END)
            f.write(b"\xff")
    return digests


def test_register_copy_of_registered_content_says_so_and_records_the_location(mm: ModelManager, tmp_path: Path) -> None:
    original = factories.write_textual_inversion(tmp_path / "easynegative.safetensors")
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(original.read_bytes())
    first = mm.install.register_path_result(original, {"name": "easynegative"})
    assert first.created and first.outcome == "registered"
    second = mm.install.register_path_result(copy, {"name": "X"})
    assert second.key == first.key and not second.created
    assert second.outcome == "already_registered"
    assert "already registered as 'easynegative'" in second.message and first.key in second.message
    assert [m.name for m in mm.store.all_models()] == ["easynegative"]
    # The path is remembered: a scan knows it without registering it again.
    entries = {Path(e["path"]).name: e for e in mm.install.scan_folder(tmp_path)}
    assert entries["copy.safetensors"]["duplicate_of"] == first.key


def test_scan_reports_a_copy_as_duplicate_then_known_never_registered(mm: ModelManager, tmp_path: Path) -> None:
    root = tmp_path / "models"
    original = factories.write_sdxl_lora(root / "a" / "style.safetensors")
    (root / "b").mkdir()
    (root / "b" / "style-copy.safetensors").write_bytes(original.read_bytes())
    mm.install.register_path(original)
    first = {Path(r["path"]).name: r["status"] for r in mm.install.scan_and_register(root)}
    assert first == {"style.safetensors": "present", "style-copy.safetensors": "duplicate"}
    second = {Path(r["path"]).name: r["status"] for r in mm.install.scan_and_register(root)}
    assert second == {"style.safetensors": "present", "style-copy.safetensors": "known"}
    assert len(mm.store.all_models()) == 1


def test_a_known_copy_that_changed_is_looked_at_again(mm: ModelManager, tmp_path: Path) -> None:
    original = factories.write_sdxl_lora(tmp_path / "m" / "a.safetensors")
    copy = tmp_path / "m" / "b.safetensors"
    copy.write_bytes(original.read_bytes())
    mm.install.register_path(original)
    mm.install.register_path(copy)  # remembered as a copy
    factories.write_vae(copy)  # the user replaces the copy with a different model
    statuses = {Path(r["path"]).name: r["status"] for r in mm.install.scan_and_register(tmp_path / "m")}
    assert statuses["b.safetensors"] == "registered"


@pytest.mark.parametrize("name", ["readme.txt", "script.py"])
def test_register_and_install_refuse_files_that_are_not_models(mm: ModelManager, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("print('hello')\n" if name.endswith(".py") else "# My models\n")
    with pytest.raises(InvalidSourceError, match=rf"^{name} is not a model file: .*--force"):
        mm.install.register_path(path)
    with pytest.raises(InvalidSourceError, match="is not a model file"):
        mm.install.install_path(path)
    job = mm.install.wait_for_job(mm.install.heuristic_import(str(path)), timeout=60)
    assert job.errored and "is not a model file" in (job.error or "")
    assert mm.store.all_models() == []
    assert list(mm.storage.blobs.iter_files()) == []
    key = mm.install.register_path(path, force=True)
    assert mm.store.get_model(key).inplace


def test_folders_without_weights_are_not_models_but_unknown_weights_are(mm: ModelManager, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "config.json").write_text("{}")
    (notes / "todo.md").write_text("- nothing")
    with pytest.raises(InvalidSourceError, match="notes is not a model folder"):
        mm.install.register_path(notes)
    odd = factories.write_safetensors(tmp_path / "odd.safetensors", {"some.tensor": (2, 2)})
    assert mm.install.register_path_result(odd).created  # a weights file of a type we cannot name


def test_scan_lists_non_models_as_skipped(mm: ModelManager, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    factories.write_vae(root / "vae.safetensors")
    (root / "not-a-model").mkdir(parents=True)
    (root / "not-a-model" / "config.json").write_text("{}")
    result = {Path(r["path"]).name: r for r in mm.install.scan_and_register(root)}
    assert result["vae.safetensors"]["status"] == "registered"
    assert result["not-a-model"]["status"] == "skipped"
    assert "not a model folder" in result["not-a-model"]["detail"]
    assert len(mm.store.all_models()) == 1


def test_reinstall_replaces_a_corrupt_blob_found_without_a_prior_verify(mm: ModelManager, tmp_path: Path) -> None:
    src = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    key = mm.install.install_path(src)
    _corrupt_blobs_of(mm, key)
    assert not mm.storage.verify().ok
    result = mm.install.install_path_result(src)
    assert result.key == key and result.outcome == "already_installed"
    assert result.repaired and "repaired" in result.message
    assert mm.storage.verify().ok
    assert Path(mm.store.get_model(key).path).read_bytes() == src.read_bytes()


def test_rm_then_install_after_verify_does_not_relink_the_corrupt_blob(mm: ModelManager, tmp_path: Path) -> None:
    src = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    key = mm.install.install_path(src)
    _corrupt_blobs_of(mm, key)
    src.rename(tmp_path / "away")
    assert not mm.install.repair_storage().healthy  # no good copy, source gone: still damaged
    (tmp_path / "away").rename(src)
    mm.install.delete(key)
    new_key = mm.install.install_path(src)
    assert mm.storage.verify().ok
    assert Path(mm.store.get_model(new_key).path).read_bytes() == src.read_bytes()


def test_repair_storage_refetches_from_a_local_source(mm: ModelManager, tmp_path: Path) -> None:
    src = factories.write_vae(tmp_path / "vae.safetensors")
    key = mm.install.install_path(src)
    _corrupt_blobs_of(mm, key)
    report = mm.install.repair_storage()
    assert not report.ok and report.healthy and report.remaining == []
    assert any("re-read from" in item for item in report.repaired)
    assert mm.storage.verify().ok


def test_reinstalling_a_damaged_remote_model_downloads_it_again(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    vae = factories.write_vae(tmp_path / "v.safetensors")
    url = hub.add_file("files/vae.safetensors", vae.read_bytes())
    job = mm.install.wait_for_job(mm.install.heuristic_import(url), timeout=60)
    assert job.complete, job.error
    key = job.config_out.key if job.config_out else ""
    _corrupt_blobs_of(mm, key)
    again = mm.install.wait_for_job(mm.install.heuristic_import(url), timeout=60)
    assert again.complete, again.error
    assert any("re-downloading" in n for n in again.notes)
    assert again.config_out is not None and again.config_out.key == key
    assert mm.storage.verify().ok
    # Damaged again: verify --repair fetches it from its recorded source on its own.
    _corrupt_blobs_of(mm, key)
    report = mm.install.repair_storage()
    assert report.healthy and any("downloaded again" in item for item in report.repaired)
    assert Path(mm.store.get_model(key).path).read_bytes() == vae.read_bytes()


def test_install_of_the_same_url_when_sound_downloads_nothing_and_says_so(
    mm: ModelManager, hub: FakeHub, tmp_path: Path
) -> None:
    vae = factories.write_vae(tmp_path / "v.safetensors")
    url = hub.add_file("files/vae2.safetensors", vae.read_bytes())
    assert mm.install.wait_for_job(mm.install.heuristic_import(url), timeout=60).complete
    again = mm.install.wait_for_job(mm.install.heuristic_import(url), timeout=60)
    assert again.complete and again.outcome == "already_installed"


def test_local_install_on_a_full_disk_leaves_nothing(
    mm: ModelManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = factories.write_sd1_checkpoint(tmp_path / "dream.safetensors")
    size = src.stat().st_size
    real_write = os.write
    written = [0]

    def full_after_a_bit(fd: int, data: bytes) -> int:
        if written[0] >= 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(memoryview(data)[:1024]))
        written[0] += n
        return n

    monkeypatch.setattr(blobs_module.os, "write", full_after_a_bit)
    with pytest.raises(InsufficientSpaceError, match=rf"^no space left on .*: need {size} bytes, have \d+"):
        mm.install.install_path(src)
    monkeypatch.undo()
    assert mm.store.all_models() == []
    assert list(mm.storage.blobs.iter_files()) == []
    assert list(mm.storage.blobs.tmp.glob("incoming-*")) == []
    assert not (mm.config.models_path / "sd-1").exists()
    assert src.exists()


def test_cancel_of_an_ended_job_changes_nothing_and_says_so(mm: ModelManager, tmp_path: Path) -> None:
    src = factories.write_vae(tmp_path / "vae.safetensors")
    job = mm.install.wait_for_job(mm.install.heuristic_import(str(src)), timeout=60)
    assert job.complete
    assert cancel_persisted_job(mm.db, mm.config, job.id) == "completed"
    assert mm.install.cancel_persisted(job.id) == "completed"
    assert mm.install.get_job_by_id(job.id).complete


def test_copy_mode_install_on_a_disk_that_fills_while_materialising_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = factories.write_vae(tmp_path / "vae.safetensors")
    with ModelManager.open(home=tmp_path / "depot", link_modes=["copy"]) as mm:
        models = str(mm.config.models_path)
        real_write = os.write

        def full_under_models(fd: int, data: bytes) -> int:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(models):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(blobs_module.os, "write", full_under_models)
        with pytest.raises(InsufficientSpaceError, match="no space left on"):
            mm.install.install_path(src)
        monkeypatch.undo()
        assert mm.store.all_models() == []
        assert mm.storage.keys() == []
        assert list(mm.storage.blobs.iter_files()) == []
        assert [p for p in Path(models).rglob("*") if p.is_file()] == []
        assert src.exists()


def test_a_config_only_folder_is_refused_naming_the_folder(mm: ModelManager, tmp_path: Path) -> None:
    import json

    from modeldepot.errors import ModelDepotError

    folder = tmp_path / "vae-config-only"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 4, "block_out_channels": [128, 256]})
    )
    with pytest.raises(ModelDepotError, match="vae-config-only"):
        mm.install.install_path(folder)
    assert mm.store.all_models() == []
