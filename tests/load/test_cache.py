"""ModelCache logic with plain objects and explicit sizes: runs without torch."""

from __future__ import annotations

import logging
import random
import threading

import pytest

from modeldepot.load import BudgetedFakeDevice, DeviceOutOfMemoryError, ModelCache, TorchDevice
from modeldepot.load.devices import GiB, default_ram_budget


class Obj:
    """A stand-in model: the cache only needs an object and a size."""

    def __init__(self, name: str) -> None:
        self.name = name


def _put(cache: ModelCache, key: str, size: int, sub: str | None = None) -> Obj:
    obj = Obj(key)
    cache.put(key, obj, submodel=sub, size=size)
    return obj


def test_lru_eviction_order() -> None:
    cache = ModelCache(ram_budget_bytes=300)
    for k in "abc":
        _put(cache, k, 100)
    assert cache.get("a") is not None  # a becomes most recently used
    _put(cache, "d", 100)  # evicts b (least recently used)
    assert [k for k, _ in cache.cached_keys()] == ["c", "a", "d"]
    _put(cache, "e", 150)  # needs 150: evicts c then a
    assert [k for k, _ in cache.cached_keys()] == ["d", "e"]
    s = cache.stats()
    assert (s.evictions, s.ram_bytes, s.entries) == (3, 250, 2)


def test_locked_model_is_never_evicted() -> None:
    cache = ModelCache(ram_budget_bytes=200)
    _put(cache, "a", 100)
    rec_a = cache.get("a")
    assert rec_a is not None
    cache.lock(rec_a)
    _put(cache, "b", 100)
    _put(cache, "c", 100)  # a is LRU but locked: b goes
    assert ("a", None) in cache and ("b", None) not in cache
    cache.unlock(rec_a)
    _put(cache, "d", 100)  # now a can go
    assert ("a", None) not in cache
    with pytest.raises(RuntimeError, match="not locked"):
        cache.unlock(rec_a)


def test_oversized_model_loads_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    cache = ModelCache(ram_budget_bytes=100)
    _put(cache, "small", 60)
    with caplog.at_level(logging.WARNING):
        _put(cache, "huge", 500)
    assert "does not fit the RAM cache budget" in caplog.text
    assert [k for k, _ in cache.cached_keys()] == ["huge"]  # everything unlocked made way
    assert cache.stats().oversized == 1
    _put(cache, "next", 50)  # the oversized one is evicted as soon as something else comes
    assert [k for k, _ in cache.cached_keys()] == ["next"]


def test_budget_never_exceeded_by_random_workload() -> None:
    rng = random.Random(7)
    budget = 1000
    cache = ModelCache(ram_budget_bytes=budget)
    for _ in range(500):
        key = f"m{rng.randrange(30)}"
        if cache.get(key) is None:
            _put(cache, key, rng.randrange(50, 400))
        assert cache.stats().ram_bytes <= budget
    assert cache.stats().ram_high_water <= budget
    assert cache.stats().evictions > 0


def test_submodels_are_separate_entries() -> None:
    cache = ModelCache(ram_budget_bytes=1000)
    unet = _put(cache, "k", 10, "unet")
    vae = _put(cache, "k", 10, "vae")
    assert cache.get("k", "unet").model is unet  # type: ignore[union-attr]
    assert cache.get("k", "vae").model is vae  # type: ignore[union-attr]
    assert cache.get("k") is None
    assert cache.drop_model("k") == 2 and len(cache) == 0


def test_stale_fingerprint_is_a_miss() -> None:
    cache = ModelCache(ram_budget_bytes=1000)
    cache.put("k", Obj("old"), size=10, fingerprint=("/a", "h1"))
    assert cache.get("k", fingerprint=("/a", "h1")) is not None
    assert cache.get("k", fingerprint=("/a", "h2")) is None
    assert len(cache) == 0


def test_clear_and_make_room_skip_locked() -> None:
    cache = ModelCache(ram_budget_bytes=1000)
    for k in "abc":
        _put(cache, k, 100)
    rec = cache.get("b")
    assert rec is not None
    cache.lock(rec)
    assert cache.make_room(950) == 200  # a and c; b is locked
    assert cache.clear() == 0 and len(cache) == 1
    cache.unlock(rec)
    assert cache.clear() == 1 and len(cache) == 0


def test_relock_after_eviction_readmits() -> None:
    cache = ModelCache(ram_budget_bytes=100)
    obj = _put(cache, "a", 100)
    rec = cache.get("a")
    assert rec is not None
    _put(cache, "b", 100)  # a evicted between "load" and "use"
    assert cache.lock(rec) is obj
    assert ("a", None) in cache and ("b", None) not in cache
    cache.unlock(rec)


# ----- the VRAM tier against a budgeted stand-in device ----------------------------------------
def _vram_cache(capacity: int = 300) -> tuple[ModelCache, BudgetedFakeDevice]:
    dev = BudgetedFakeDevice(capacity)
    return ModelCache(ram_budget_bytes=10_000, device=dev), dev


def test_lock_moves_to_device_and_offloads_lru_unlocked() -> None:
    cache, dev = _vram_cache(300)
    recs = {}
    for k in "abcd":
        _put(cache, k, 100)
        recs[k] = cache.get(k)
    for k in "abc":
        cache.lock(recs[k])
        cache.unlock(recs[k])
    assert dev.used == 300 and all(recs[k].on_device for k in "abc")
    cache.lock(recs["b"])  # b pinned
    cache.lock(recs["d"])  # needs room: a is LRU unlocked -> offloaded; b locked stays
    assert not recs["a"].on_device and recs["b"].on_device and recs["c"].on_device and recs["d"].on_device
    assert dev.used == 300 and dev.peak <= 300
    s = cache.stats()
    assert (s.vram_bytes, s.vram_offloads, s.vram_high_water) == (300, 1, 300)
    cache.unlock(recs["b"])
    cache.unlock(recs["d"])


def test_device_full_of_locked_models_raises() -> None:
    cache, _dev = _vram_cache(200)
    _a, _b, c = (_put(cache, k, 100) for k in "abc")
    ra, rb, rc = (cache.get(k) for k in "abc")
    cache.lock(ra)
    cache.lock(rb)
    with pytest.raises(DeviceOutOfMemoryError):
        cache.lock(rc)
    assert rc is not None and rc.lock_count == 0  # a failed lock leaves no lock behind
    cache.unlock(ra)
    assert cache.lock(rc) is c  # now a can be offloaded


def test_ram_eviction_unloads_from_device() -> None:
    dev = BudgetedFakeDevice(1000)
    cache = ModelCache(ram_budget_bytes=200, device=dev)
    _put(cache, "a", 100)
    ra = cache.get("a")
    cache.lock(ra)
    cache.unlock(ra)
    assert dev.used == 100
    _put(cache, "b", 100)
    _put(cache, "c", 100)  # evicts a from RAM, which must also leave the device
    assert dev.used == 0 and dev.unloads == 1


def test_nested_and_threaded_locks_are_counted() -> None:
    cache, dev = _vram_cache(100)
    _put(cache, "a", 100)
    _put(cache, "b", 100)
    ra, rb = cache.get("a"), cache.get("b")
    assert ra is not None and rb is not None
    start = threading.Barrier(8)
    inside = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def user() -> None:
        try:
            start.wait(timeout=10)
            cache.lock(ra)
            cache.lock(ra)  # nested
            inside.set()
            release.wait(timeout=10)
            cache.unlock(ra)
            cache.unlock(ra)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=user) for _ in range(8)]
    for t in threads:
        t.start()
    assert inside.wait(timeout=10)
    # While any user holds a, b cannot take its place on the full device.
    with pytest.raises(DeviceOutOfMemoryError):
        cache.lock(rb)
    release.set()
    for t in threads:
        t.join(timeout=10)
    assert not errors and ra.lock_count == 0
    cache.lock(rb)  # a is unlocked now: offloaded to make room
    assert not ra.on_device and rb.on_device and dev.peak <= 100
    cache.unlock(rb)


def test_budget_defaults() -> None:
    assert default_ram_budget(32 * GiB) == 16 * GiB
    assert default_ram_budget(6 * GiB) == 2 * GiB  # leaves 4 GiB
    assert default_ram_budget(4 * GiB) == 1 * GiB  # floor: a quarter
    cpu = ModelCache(device=TorchDevice("cpu"))
    assert cpu.budget.vram_bytes == 0 and cpu.budget.ram_bytes == default_ram_budget()
    assert ModelCache(device=BudgetedFakeDevice(123)).budget.vram_bytes == 123


def test_stats_counts_hits_and_misses() -> None:
    cache = ModelCache(ram_budget_bytes=100)
    assert cache.get("x") is None
    _put(cache, "x", 10)
    assert cache.get("x") is not None
    s = cache.stats()
    assert (s.hits, s.misses, s.puts) == (1, 1, 1)
    assert s.to_dict()["ram_bytes"] == 10


def test_stale_locked_record_lives_until_unlocked() -> None:
    dev = BudgetedFakeDevice(1000)
    cache = ModelCache(ram_budget_bytes=1000, device=dev)
    old = Obj("v1")
    cache.put("k", old, size=100, fingerprint="v1")
    rec = cache.get("k", fingerprint="v1")
    assert rec is not None
    assert cache.lock(rec) is old
    assert cache.get("k", fingerprint="v2") is None  # the record changed while v1 is in use
    new = Obj("v2")
    cache.put("k", new, size=100, fingerprint="v2")
    assert cache.stats().ram_bytes == 200 and dev.used == 100  # v1 still held and resident
    assert cache.lock(rec) is old  # nested use of the old version still works
    cache.unlock(rec)
    cache.unlock(rec)  # last unlock: v1 leaves RAM and the device
    assert cache.stats().ram_bytes == 100 and dev.used == 0
    assert cache.get("k", fingerprint="v2").model is new  # type: ignore[union-attr]
