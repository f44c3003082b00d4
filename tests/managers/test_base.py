"""BaseModelManager end to end over fakehub, with the ESRGAN manager (the smallest real model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tests.managers.conftest import entry, sha256

from modeldepot.errors import IntegrityError, ModelNotFoundException, UnknownModelException
from modeldepot.manager import ModelManager
from modeldepot.managers import EsrganModelManager, ManagedModel, nataili_home
from modeldepot.testing.fakehub import FakeHub


@pytest.fixture
def esrgan(esrgan_reference: Path, depot: ModelManager, nataili: Path) -> EsrganModelManager:
    return EsrganModelManager(esrgan_reference, depot, cache_home=nataili)


def test_load_downloads_validates_records_and_links(esrgan: EsrganModelManager, hub: FakeHub, nataili: Path) -> None:
    assert esrgan.available_models == []  # "available": false in the JSON, and nothing on disk
    loaded = esrgan.load("tiny_x4")
    assert isinstance(loaded, ManagedModel)
    assert type(loaded.model).__name__ == "RRDBNet"
    assert loaded["model"] is loaded.model and loaded["device"] == "cpu"
    assert esrgan.loaded_models["tiny_x4"] is loaded
    assert esrgan.is_available("tiny_x4") and "tiny_x4" in esrgan.available_models
    assert len(hub.stats.requests_for("/releases/tiny_x4.pth", "GET")) >= 1

    record = esrgan.record_for("tiny_x4")
    assert record is not None
    assert {"nataili", "service:esrgan", "reference:tiny_x4"} <= set(record.tags)
    assert record.name == "tiny_x4" and record.type.value == "spandrel_image_to_image"
    view = nataili / "esrgan" / "tiny_x4.pth"
    assert view.is_file() and view.samefile(record.path)  # the Nataili path is the depot's file


def test_second_load_is_the_same_object_and_sends_nothing(esrgan: EsrganModelManager, hub: FakeHub) -> None:
    first = esrgan.load("tiny_x4")
    sent = hub.stats.bytes_sent_total
    assert esrgan.load("tiny_x4") is first
    fresh = EsrganModelManager(esrgan.models, esrgan.depot, cache_home=esrgan.cache_home)
    again = fresh.load("tiny_x4")  # another manager: available already, loaded from the cache
    assert again.model is first.model
    assert hub.stats.bytes_sent_total == sent


def test_unload_frees_the_model_and_its_cache_entry(esrgan: EsrganModelManager) -> None:
    loaded = esrgan.load("tiny_x4")
    cache = esrgan.depot.load.cache
    assert cache.peek(loaded.record.key) is not None
    assert esrgan.unload_model("tiny_x4") is True
    assert "tiny_x4" not in esrgan.loaded_models
    assert cache.peek(loaded.record.key) is None
    assert esrgan.unload_model("tiny_x4") is False
    assert esrgan.load("tiny_x4") is not loaded  # built again from disk


def test_wrong_sha256_is_a_clear_error_and_stays_unavailable(esrgan: EsrganModelManager, nataili: Path) -> None:
    with pytest.raises(IntegrityError, match="wrong_sum"):
        esrgan.load("wrong_sum")
    assert not esrgan.is_available("wrong_sum")
    assert esrgan.record_for("wrong_sum") is None  # records only after verified files
    assert not (nataili / "esrgan" / "wrong.pth").exists()
    assert "wrong_sum" not in esrgan.loaded_models


def test_unknown_key_names_the_key_and_what_is_known(esrgan: EsrganModelManager) -> None:
    with pytest.raises(UnknownModelException, match=r"'nope'.*known: .*tiny_x4"):
        esrgan.load("nope")
    with pytest.raises(KeyError):
        esrgan.download_model("nope")


def test_half_precision_on_cpu_gives_float32(esrgan: EsrganModelManager) -> None:
    loaded = esrgan.load("tiny_x4", half_precision=True, gpu_id=3)
    assert loaded.device == "cpu" and loaded.dtype == "float32"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    assert not loaded.half_precision


def test_deleted_file_is_unavailable_and_restored_from_the_depot(
    esrgan: EsrganModelManager, hub: FakeHub, nataili: Path
) -> None:
    esrgan.download_model("tiny_x4")
    view = nataili / "esrgan" / "tiny_x4.pth"
    view.unlink()
    assert not esrgan.is_available("tiny_x4")
    sent = hub.stats.bytes_sent_total
    esrgan.load("tiny_x4")
    assert view.is_file() and esrgan.is_available("tiny_x4")
    assert hub.stats.bytes_sent_total == sent  # the depot still had the verified bytes


def test_deleted_everywhere_downloads_again(esrgan: EsrganModelManager, hub: FakeHub, nataili: Path) -> None:
    esrgan.download_model("tiny_x4")
    record = esrgan.record_for("tiny_x4")
    assert record is not None
    esrgan.depot.install.delete(record.key)
    (nataili / "esrgan" / "tiny_x4.pth").unlink()
    sent = hub.stats.bytes_sent_total
    esrgan.load("tiny_x4")
    assert hub.stats.bytes_sent_total > sent
    assert esrgan.is_available("tiny_x4")


def test_taint_makes_unavailable_and_the_next_load_fetches_again(esrgan: EsrganModelManager, hub: FakeHub) -> None:
    esrgan.download_model("tiny_x4")
    esrgan.taint_model("tiny_x4")
    assert esrgan.tainted_models == ["tiny_x4"] and not esrgan.is_available("tiny_x4")
    sent = hub.stats.bytes_sent_total
    esrgan.load("tiny_x4")
    assert hub.stats.bytes_sent_total > sent
    assert esrgan.tainted_models == [] and esrgan.is_available("tiny_x4")
    assert len(esrgan.depot.store.search_by_tag("reference:tiny_x4")) == 1  # deduplicated, not recorded twice


def test_a_users_file_in_the_folder_is_adopted_in_place(
    esrgan: EsrganModelManager, esrgan_bytes: bytes, hub: FakeHub, nataili: Path
) -> None:
    mine = nataili / "esrgan" / "tiny_x4.pth"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(esrgan_bytes)
    # A file the user has had for a while (a file written this very moment is never cached as
    # hashed: it may still be changing, see HashCache's racy window).
    os.utime(mine, (1_700_000_000, 1_700_000_000))
    assert not esrgan.is_available("tiny_x4")  # present but not validated yet
    assert esrgan.validate_model("tiny_x4")
    assert esrgan.is_available("tiny_x4")
    sent = hub.stats.bytes_sent_total
    esrgan.load("tiny_x4")
    assert hub.stats.bytes_sent_total == sent
    record = esrgan.record_for("tiny_x4")
    assert record is not None and Path(record.path) == mine and record.inplace
    assert mine.read_bytes() == esrgan_bytes


def test_validate_model_reports_a_changed_file(esrgan: EsrganModelManager, nataili: Path) -> None:
    esrgan.download_model("tiny_x4")
    assert esrgan.validate_model("tiny_x4")
    view = nataili / "esrgan" / "tiny_x4.pth"
    view.unlink()  # a hard link to the read-only blob: replace it, never write through it
    view.write_bytes(b"not the model")
    assert not esrgan.validate_model("tiny_x4")
    assert not esrgan.is_available("tiny_x4")
    assert esrgan.validate_model("tiny_x4", skip_checksum=True)


def test_entries_without_a_digest_and_shared_content(esrgan: EsrganModelManager) -> None:
    esrgan.download_model("tiny_x4")
    esrgan.download_model("no_sum")  # the same bytes: recorded once, tagged for both
    records = esrgan.depot.store.search_by_tag("service:esrgan")
    assert len(records) == 1
    assert {"reference:tiny_x4", "reference:no_sum"} <= set(records[0].tags)
    assert esrgan.is_available("no_sum")


def test_download_all_takes_the_marked_entries(esrgan: EsrganModelManager) -> None:
    assert esrgan.download_all() == ["tiny_x4"]
    assert esrgan.available_models == ["tiny_x4"]


def test_manual_and_file_content_downloads(
    depot: ModelManager, hub: FakeHub, nataili: Path, write_reference, esrgan_bytes: bytes
) -> None:
    url = hub.add_file("m/x.pth", esrgan_bytes)
    ref = write_reference(
        {
            "manual": {
                "name": "manual",
                "type": "realesrgan",
                "homepage": "https://example.org/model",
                "config": {"files": [{"path": "hand.pth"}], "download": [{"file_name": "hand.pth", "manual": True}]},
            },
            "with_note": {
                "name": "with note",
                "type": "realesrgan",
                "config": {
                    "files": [{"path": "pack/x.pth", "sha256sum": sha256(esrgan_bytes)}, {"path": "pack/NOTE.txt"}],
                    "download": [
                        {"file_name": "x.pth", "file_path": "pack", "file_url": url},
                        {"file_name": "NOTE.txt", "file_path": "pack", "file_content": "hello"},
                    ],
                },
            },
        }
    )
    m = EsrganModelManager(ref, depot, cache_home=nataili)
    with pytest.raises(ModelNotFoundException, match=r"by hand from https://example.org/model .*hand\.pth"):
        m.download_model("manual")
    m.download_model("with_note")
    assert (nataili / "esrgan" / "pack" / "NOTE.txt").read_text() == "hello"
    assert (nataili / "esrgan" / "pack" / "x.pth").read_bytes() == esrgan_bytes
    assert m.is_available("with_note")


def test_nataili_home_follows_document_000(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert nataili_home({"NATAILI_CACHE_HOME": "/a", "XDG_CACHE_HOME": "/b"}) == Path("/a/nataili")
    assert nataili_home({"XDG_CACHE_HOME": "/b"}) == Path("/b/nataili")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert nataili_home({}) == tmp_path / ".cache" / "nataili"


def test_default_cache_home_reads_the_environment(
    esrgan_reference: Path, depot: ModelManager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NATAILI_CACHE_HOME", str(tmp_path / "nc"))
    assert EsrganModelManager(esrgan_reference, depot).path == tmp_path / "nc" / "nataili" / "esrgan"


def test_available_in_the_json_is_never_trusted(
    depot: ModelManager, nataili: Path, write_reference, hub: FakeHub, esrgan_bytes: bytes
) -> None:
    url = hub.add_file("t.pth", esrgan_bytes)
    data = {"t": {**entry([("t.pth", sha256(esrgan_bytes), url)]), "available": True}}
    m = EsrganModelManager(write_reference(data), depot, cache_home=nataili)
    assert m.available_models == []
    assert json.loads(json.dumps(m.models.to_json()))["t"]["available"] is False
