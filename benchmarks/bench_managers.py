"""Manager overhead (issue 15): ``<Service>ModelManager.load(key)`` of an already-available model
against a direct load-service load of the same depot record. Target: < 1.2x.

Run: python benchmarks/bench_managers.py [--rounds 7]

Models: a full-size RealESRGAN_x4plus-shaped RRDBNet (23 blocks, 64 features: 67 MB, as the
released file) and a tiny SD-1 single-file checkpoint (the CompVis manager assembles a pipeline
from five cached parts; the peer loads the same five parts through the load service).
Both are downloaded once from fakehub and validated before timing.

Two ways, rounds interleaved (the order alternates each round), ratio taken within a round:

* warm process: the cache is emptied before each load (``unload_model`` / ``cache.clear()``); the
  files are in the page cache; the hash cache holds every digest (as after the first validation);
* fresh process: a new Python process opens the depot (and the manager, which parses its
  reference JSON) and loads once; imports included on both sides.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path("/tmp/modeldepot-bench-managers")
CASES = {"esrgan": "RealESRGAN_x4plus", "compvis": "tiny sd1"}


def setup() -> None:
    import shutil

    from modeldepot.managers import CompVisModelManager, EsrganModelManager
    from modeldepot.testing.factories import write_esrgan, write_sd1_checkpoint
    from modeldepot.testing.fakehub import FakeHub

    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    esrgan = write_esrgan(ROOT / "src-esrgan.pth", num_blocks=23, nf=64, gc=32).read_bytes()
    sd1 = write_sd1_checkpoint(ROOT / "src-sd1.safetensors", seed=1).read_bytes()
    with FakeHub() as hub, _depot() as depot:
        refs = {}
        for service, key, name, data in (
            ("esrgan", CASES["esrgan"], "RealESRGAN_x4plus.pth", esrgan),
            ("compvis", CASES["compvis"], "tiny_sd1.safetensors", sd1),
        ):
            url = hub.add_file(name, data)
            entry = {
                "name": key,
                "type": "ckpt",
                "config": {
                    "files": [{"path": name, "sha256sum": hashlib.sha256(data).hexdigest()}],
                    "download": [{"file_name": name, "file_path": "", "file_url": url}],
                },
            }
            refs[service] = ROOT / f"{service}.json"
            refs[service].write_text(json.dumps({key: entry}))
        for service, cls in (("esrgan", EsrganModelManager), ("compvis", CompVisModelManager)):
            m = cls(refs[service], depot, cache_home=ROOT / "nataili")
            m.download_model(CASES[service])
            # Age the files past the hash cache's racy window, then validate once (as a first load does).
            for p in (ROOT / "nataili" / service).iterdir():
                os.utime(p, (time.time() - 60, time.time() - 60), follow_symlinks=False)
            assert m.validate_model(CASES[service]) and m.is_available(CASES[service])


def _depot() -> Any:
    from modeldepot.manager import ModelManager

    return ModelManager.open(home=ROOT / "depot", allow_private_urls=True, link_modes=["hardlink", "copy"])


def _manager(service: str, depot: Any) -> Any:
    from modeldepot.managers import CompVisModelManager, EsrganModelManager

    cls = {"esrgan": EsrganModelManager, "compvis": CompVisModelManager}[service]
    return cls(ROOT / f"{service}.json", depot, cache_home=ROOT / "nataili")


def _direct(depot: Any, service: str, record: Any) -> None:
    if service == "esrgan":
        depot.load_model_by_key(record.key)
        return
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        depot.load_model_by_key(record.key, sub)


def warm(rounds: int) -> dict[str, list[float]]:
    ratios: dict[str, list[float]] = {s: [] for s in CASES}
    times: dict[str, dict[str, list[float]]] = {s: {"manager": [], "direct": []} for s in CASES}
    with _depot() as depot:
        managers = {s: _manager(s, depot) for s in CASES}
        records = {s: managers[s].record_for(CASES[s]) for s in CASES}
        for s in CASES:  # one untimed load of each: imports, first-touch
            managers[s].load(CASES[s])
            managers[s].unload_model(CASES[s])
        for r in range(rounds):
            for s in CASES:
                got: dict[str, float] = {}
                for way in ("manager", "direct") if r % 2 == 0 else ("direct", "manager"):
                    managers[s].unload_model(CASES[s])
                    depot.load.cache.clear()
                    t = time.perf_counter()
                    if way == "manager":
                        managers[s].load(CASES[s])
                    else:
                        _direct(depot, s, records[s])
                    got[way] = time.perf_counter() - t
                    times[s][way].append(got[way])
                ratios[s].append(got["manager"] / got["direct"])
    return {
        **{f"{s} ratio": v for s, v in ratios.items()},
        **{f"{s} {w} s": t for s in CASES for w, t in times[s].items()},
    }


def overhead(runs: int = 200) -> dict[str, list[float]]:
    """The manager's own work, the load itself a cache hit on both sides: ``load(key)`` of a model
    the cache holds but ``loaded_models`` does not (availability from the hash cache, record lookup
    by tags, the checks) against ``load_model_by_key`` of the same record; milliseconds per call."""
    out: dict[str, list[float]] = {}
    with _depot() as depot:
        for s in CASES:
            m = _manager(s, depot)
            record = m.record_for(CASES[s])
            m.load(CASES[s])
            mine, direct = [], []
            for _ in range(runs):
                m.loaded_models.pop(CASES[s])
                t = time.perf_counter()
                m.load(CASES[s])
                mine.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                _direct(depot, s, record)
                direct.append((time.perf_counter() - t) * 1e3)
            out[f"{s} manager ms"] = mine
            out[f"{s} direct ms"] = direct
    return out


_CHILD = """
import sys, time, json
t = time.perf_counter()
sys.path.insert(0, {bench!r})
import bench_managers as b
way, service = sys.argv[1], sys.argv[2]
with b._depot() as depot:
    if way == "manager":
        b._manager(service, depot).load(b.CASES[service])
    else:
        from modeldepot.managers import service_tags
        rec = depot.store.search_by_tag(service_tags(service, b.CASES[service]))[0]
        b._direct(depot, service, rec)
print(json.dumps(time.perf_counter() - t))
"""


def fresh(rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {f"{s} ratio": [] for s in CASES}
    code = _CHILD.format(bench=str(Path(__file__).parent))
    for r in range(rounds):
        for s in CASES:
            got = {}
            for way in ("manager", "direct") if r % 2 == 0 else ("direct", "manager"):
                res = subprocess.run([sys.executable, "-c", code, way, s], capture_output=True, text=True, check=True)
                got[way] = json.loads(res.stdout.strip().splitlines()[-1])
            out[f"{s} ratio"].append(got["manager"] / got["direct"])
            out.setdefault(f"{s} manager s", []).append(got["manager"])
            out.setdefault(f"{s} direct s", []).append(got["direct"])
    return out


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--skip-setup", action="store_true")
    args = ap.parse_args()
    if not args.skip_setup:
        setup()
    for title, result in (
        ("warm process", warm(args.rounds)),
        ("fresh process", fresh(max(3, args.rounds // 2))),
        ("cache hit on both sides", overhead()),
    ):
        print(f"## {title}")
        for name, values in result.items():
            print(f"{name:24} {_summary(values)}")


if __name__ == "__main__":
    main()
