"""Memory behaviour with real tensors: no second read of a cached model, flat RSS over swaps,
device locks under threads, instant RAM-copy unloads."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from modeldepot.config import DepotConfig  # noqa: E402
from modeldepot.load import BudgetedFakeDevice, ModelCache, ModelLoadService, TorchDevice  # noqa: E402

pytestmark = pytest.mark.torch

_opened: list[str] = []
_watch: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _watch and isinstance(args[0], str | Path):
        path = str(args[0])
        if any(path.startswith(w) for w in _watch):
            _opened.append(path)


sys.addaudithook(_audit)


def _count_opens(root: Path, fn: Any) -> int:
    _opened.clear()
    _watch[:] = [str(root)]
    try:
        fn()
    finally:
        _watch.clear()
    return len(_opened)


@pytest.mark.parametrize("which", ["pipeline", "checkpoint"])
def test_no_second_disk_read(depot_config: DepotConfig, tiny: dict[str, Any], mkcfg: Any, which: str) -> None:
    svc = ModelLoadService(depot_config, cache=ModelCache(ram_budget_bytes=1 << 30))
    if which == "pipeline":
        root = tiny["pipeline"]
        cfg = mkcfg(root, type="main", format="diffusers")
    else:
        ck = tiny["checkpoint"]
        root = ck.path.parent
        cfg = mkcfg(ck.path, type="main", format="checkpoint", config_path=str(ck.config_dir))
    assert _count_opens(root, lambda: svc.load_model(cfg, "unet")) > 0  # the counter sees real loads
    for _ in range(3):
        assert _count_opens(root, lambda: svc.load_model(cfg, "unet")) == 0
    svc.cache.clear()
    assert _count_opens(root, lambda: svc.load_model(cfg, "unet")) > 0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_rss_flat_over_swaps(depot_config: DepotConfig, tmp_path: Path, mkcfg: Any) -> None:
    from safetensors.torch import save_file

    size = 24 * 1024 * 1024
    cfgs = []
    for i in range(3):
        path = tmp_path / f"lora{i}.safetensors"
        save_file({f"w{j}": torch.full((size // 4 // 6,), float(i)) for j in range(6)}, str(path))
        cfgs.append(mkcfg(path, type="lora", format="lycoris", name=f"l{i}"))
    budget = int(size * 2.5)  # two fit, three do not
    svc = ModelLoadService(depot_config, cache=ModelCache(ram_budget_bytes=budget))
    marks = {}
    for swap in range(1, 51):
        loaded = svc.load_model(cfgs[swap % 3])
        assert float(loaded.model["w0"][0]) == swap % 3
        del loaded
        if swap in (10, 50):
            marks[swap] = _rss()
    stats = svc.cache.stats()
    assert stats.evictions >= 45 and stats.ram_high_water <= budget
    # 40 more loads of 24 MiB each: a leak of even one in ten would add ~100 MiB.
    assert marks[50] - marks[10] < 16 * 1024 * 1024, marks


def test_device_locks_under_threads(depot_config: DepotConfig, tiny: dict[str, Any], mkcfg: Any) -> None:
    ck = tiny["checkpoint"]
    pipe = mkcfg(tiny["pipeline"], type="main", format="diffusers")
    single = mkcfg(ck.path, type="main", format="checkpoint", config_path=str(ck.config_dir))
    svc = ModelLoadService(depot_config, cache=ModelCache(ram_budget_bytes=1 << 30, device=BudgetedFakeDevice(1)))
    models = [svc.load_model(pipe, "unet"), svc.load_model(single, "unet"), svc.load_model(pipe, "vae")]
    biggest_two = sum(sorted(m.size for m in models)[-2:])
    device = BudgetedFakeDevice(biggest_two)  # any two fit, never all three
    svc.cache.device = device
    svc.cache.budget = type(svc.cache.budget)(ram_bytes=1 << 30, vram_bytes=biggest_two)
    errors: list[BaseException] = []
    x = torch.randn(1, 4, 8, 8)
    ctx = torch.randn(1, 3, 16)

    def worker(offset: int) -> None:
        try:
            for i in range(12):
                loaded = models[(i + offset) % 3]
                with loaded as m, torch.no_grad():
                    if loaded.submodel_type.value == "unet":
                        assert m(x, 5, encoder_hidden_states=ctx).sample.shape == x.shape
                    else:
                        assert m.decode(x).sample.shape == (1, 3, 16, 16)
                    assert loaded.locked and svc.cache._entries[loaded._record.key].on_device
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert device.peak <= biggest_two and svc.cache.stats().vram_high_water <= biggest_two
    assert device.loads > 3 and all(not m.locked for m in models)


def test_ram_copy_makes_unload_free(depot_config: DepotConfig, tiny: dict[str, Any], mkcfg: Any) -> None:
    # "meta" is a real torch device with its own memory: moves are real, data is not kept there.
    cache = ModelCache(ram_budget_bytes=1 << 30, vram_budget_bytes=1 << 30, device=TorchDevice("meta"))
    svc = ModelLoadService(depot_config, cache=cache)
    loaded = svc.load_model(mkcfg(tiny["pipeline"], type="main", format="diffusers"), "unet")
    before = {k: (v.data_ptr(), v.clone()) for k, v in loaded.model.state_dict().items()}
    with loaded.model_on_device() as (cpu_sd, model):
        assert next(model.parameters()).device.type == "meta"
        assert set(cpu_sd) == set(before)
        assert all(cpu_sd[k].device.type == "cpu" and torch.equal(cpu_sd[k], before[k][1]) for k in before)
    assert next(loaded.model.parameters()).device.type == "meta"  # stays until room is needed
    cache.make_room_on_device(2 << 30)
    after = loaded.model.state_dict()
    assert all(after[k].data_ptr() == before[k][0] for k in before)  # same storage: no copy back
    torch.manual_seed(0)
    out = loaded.model(torch.randn(1, 4, 8, 8), 3, encoder_hidden_states=torch.randn(1, 3, 16)).sample
    assert out.device.type == "cpu" and torch.isfinite(out).all()


def test_precision_rule() -> None:
    assert TorchDevice("cpu").resolve_precision("auto") == "float32"
    assert TorchDevice("cpu").resolve_precision("float32") == "float32"
    assert TorchDevice("cpu").resolve_precision("bfloat16") == "bfloat16"  # CPU kernels exist
    assert TorchDevice("cuda:0").resolve_precision("auto") == "float16"
