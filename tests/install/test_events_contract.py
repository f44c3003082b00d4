"""Install event payloads carry seed 002's keys ("Monitoring the install job process", lines 621-710)
with the documented meanings, beside the keys modeldepot had before (id, status, speed, eta...)."""

from __future__ import annotations

import threading
from pathlib import Path

from modeldepot.events import Event, EventRecorder
from modeldepot.manager import ModelManager
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_remote_install_events_carry_the_documented_keys(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    files = tree(factories.write_diffusers_pipeline(tmp_path / "pipe"))
    hub.add_hf_repo("acme/tiny-sd", files)
    rec = EventRecorder(mm.events)
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/tiny-sd"), timeout=60)
    assert job.complete, job.error
    assert job.config_out is not None
    events = [e for e in rec.events if e.payload.get("id") == job.id]
    names = [e.name for e in events]
    # Downloading events come before the running event, and completed is last.
    assert names.index("model_install_running") > max(
        i for i, n in enumerate(names) if n == "model_install_downloading"
    )
    assert names[-1] == "model_install_completed"

    downloading = [e.payload for e in events if e.name == "model_install_downloading"]
    staging = mm.config.tmp_dir / "install"
    for p in downloading:
        assert p["source"] == "acme/tiny-sd"
        assert isinstance(p["local_path"], str) and staging in Path(p["local_path"]).parents
        assert isinstance(p["bytes"], int) and isinstance(p["total_bytes"], int)
        assert isinstance(p["parts"], list)
        # Kept from before: the display keys of each part.
        assert all({"path", "status"} <= set(part) for part in p["parts"])
    last = downloading[-1]
    assert last["parts"], "the files of the model are listed"
    weights = {k: v for k, v in files.items() if k.endswith((".safetensors", ".json", ".txt"))}
    assert last["total_bytes"] == sum(len(v) for v in weights.values())
    for part in last["parts"]:
        assert set(part) >= {"source", "local_path", "bytes", "total_bytes"}
        assert part["source"].startswith("http") and "/acme/tiny-sd/" in part["source"]
        assert Path(last["local_path"]) in Path(part["local_path"]).parents
        rel = Path(part["local_path"]).relative_to(last["local_path"]).as_posix()
        assert rel in files and part["total_bytes"] == len(files[rel])
    assert sum(part["bytes"] for part in last["parts"]) == last["bytes"]

    running = next(e.payload for e in events if e.name == "model_install_running")
    assert running["source"] == "acme/tiny-sd"
    completed = events[-1].payload
    assert completed["source"] == "acme/tiny-sd"
    assert completed["key"] == job.config_out.key
    assert completed["total_bytes"] == last["total_bytes"]


def test_local_install_has_no_downloading_event(mm: ModelManager, tmp_path: Path) -> None:
    lora = factories.write_lora(tmp_path / "style.safetensors")
    rec = EventRecorder(mm.events)
    job = mm.install.wait_for_job(mm.install.heuristic_import(str(lora)), timeout=60)
    assert job.complete, job.error
    names = [e.name for e in rec.events if e.payload.get("id") == job.id]
    assert "model_install_downloading" not in names
    assert names[-2:] == ["model_install_running", "model_install_completed"]
    completed = rec.events[-1].payload
    assert completed["source"] == str(lora) and completed["key"] == job.config_out.key  # type: ignore[union-attr]


def test_error_event_has_source_error_type_and_error(mm: ModelManager, tmp_path: Path) -> None:
    readme = tmp_path / "readme.txt"
    readme.write_text("# not a model\n")
    rec = EventRecorder(mm.events, {"model_install_error"})
    job = mm.install.wait_for_job(mm.install.heuristic_import(str(readme)), timeout=60)
    assert job.errored
    (event,) = rec.events
    p = event.payload
    assert p["source"] == str(readme)
    assert p["error_type"] == "InvalidSourceError" == job.error_type
    assert "is not a model file" in p["error"]
    # Seed 002's "long traceback to help debug" (``error`` stays the message people see).
    assert p["traceback"].startswith("Traceback") and "InvalidSourceError" in p["traceback"]
    assert job.traceback == p["traceback"]


def test_cancelled_event_has_source(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    data = factories.write_vae(tmp_path / "vae.safetensors").read_bytes() * 4
    url = hub.add_file("files/slow/big-vae.safetensors", data)
    hub.faults("/files/slow/*", speed_limit_bps=max(1, len(data) // 20))  # stays downloading
    downloading = threading.Event()
    cancelled: list[Event] = []

    def on_event(event: Event) -> None:
        if event.name == "model_install_downloading":
            downloading.set()
        elif event.name == "model_install_cancelled":
            cancelled.append(event)

    mm.events.subscribe(on_event)
    job = mm.install.heuristic_import(url)
    assert downloading.wait(60)
    mm.install.cancel_job(job)
    mm.install.wait_for_job(job, timeout=60)
    assert job.cancelled
    assert [e.payload["source"] for e in cancelled] == [url]
