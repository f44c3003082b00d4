"""The RAM/VRAM model cache: LRU in both tiers, locked models never evicted, byte budgets.

Every entry lives in RAM; an entry may also be resident on the execution device. Moving to the
device keeps the RAM tensors referenced (:class:`~modeldepot.load.cache._tensors.Placement`) so a
VRAM unload is a pointer swap. Both tiers evict least-recently-used unlocked entries first
(InvokeAI offloads VRAM smallest-first, but says neither policy was ever compared; LRU keeps one
rule that tests can state). A model larger than a whole budget is still admitted, with a warning,
after everything unlocked has been evicted: the budget is exceeded only by that single model.

One re-entrant lock guards all bookkeeping; device moves happen under it, so a model is never
half-moved when another thread looks at it. The hot path (``get`` of a present key) is a dict
lookup, an ``OrderedDict.move_to_end`` and a counter increment.
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from modeldepot.load.cache._stats import CacheBudget, CacheStats
from modeldepot.load.cache._tensors import Placement, cpu_state_dict, model_size, release_memory
from modeldepot.load.devices import ExecutionDevice, Residency, TorchDevice, default_ram_budget

log = logging.getLogger(__name__)
CacheKey = tuple[str, str | None]


def cache_key(key: str, submodel: Any = None) -> CacheKey:
    return (key, None if submodel is None else str(getattr(submodel, "value", submodel)))


class CacheRecord:
    """One cached object. ``lock_count > 0`` pins it in RAM and on the device."""

    __slots__ = ("fingerprint", "key", "lock_count", "model", "residency", "size", "submodel")

    def __init__(self, key: CacheKey, model: Any, size: int, fingerprint: Hashable = None) -> None:
        self.key = key
        self.submodel = key[1]
        self.model = model
        self.size = size
        self.lock_count = 0
        self.residency: Residency | None = None
        self.fingerprint = fingerprint

    @property
    def locked(self) -> bool:
        return self.lock_count > 0

    @property
    def on_device(self) -> bool:
        return self.residency is not None

    def __repr__(self) -> str:
        return f"CacheRecord({self.key!r}, size={self.size}, locks={self.lock_count}, on_device={self.on_device})"


class ModelCache:
    """RAM + VRAM cache of loaded models.

    Args:
        ram_budget_bytes: RAM tier budget; default :func:`~modeldepot.load.devices.default_ram_budget`.
        vram_budget_bytes: device tier budget; default ``device.default_vram_budget()`` (total VRAM
            minus 3 GiB working memory on CUDA, the capacity of a fake device, 0 on CPU).
        device: where locked models run; default CPU (no VRAM tier).
    """

    def __init__(
        self,
        ram_budget_bytes: int | None = None,
        vram_budget_bytes: int | None = None,
        device: ExecutionDevice | None = None,
        *,
        trim_after_eviction: bool = True,
    ) -> None:
        self.device: ExecutionDevice = device if device is not None else TorchDevice("cpu")
        ram = default_ram_budget() if ram_budget_bytes is None else int(ram_budget_bytes)
        vram = self.device.default_vram_budget() if vram_budget_bytes is None else int(vram_budget_bytes)
        self.budget = CacheBudget(ram_bytes=ram, vram_bytes=vram if self.device.has_own_memory else 0)
        self._lock = threading.RLock()
        self._entries: OrderedDict[CacheKey, CacheRecord] = OrderedDict()
        self._ram_used = 0
        self._vram_used = 0
        self._ram_high = 0
        self._vram_high = 0
        self._hits = 0
        self._misses = 0
        self._puts = 0
        self._evictions = 0
        self._vram_loads = 0
        self._vram_offloads = 0
        self._oversized = 0
        self._trim = release_memory() if trim_after_eviction else None
        self._dropped: list[weakref.ref[Any]] = []
        #: Stale or replaced records still locked by a user: counted in RAM until their last unlock.
        self._zombies: set[CacheRecord] = set()

    # ----- lookups -------------------------------------------------------------------------
    def get(self, key: str, submodel: Any = None, fingerprint: Hashable = None) -> CacheRecord | None:
        """The record for (key, submodel), made most recently used; None on a miss.

        A record whose ``fingerprint`` differs from the one given (the model's files or settings
        changed) is dropped and reported as a miss.
        """
        ck = (key, None if submodel is None else str(getattr(submodel, "value", submodel)))
        with self._lock:
            rec = self._entries.get(ck)
            if rec is not None and fingerprint is not None and rec.fingerprint != fingerprint:
                self._retire(rec, reason="stale")
                rec = None
            if rec is None:
                self._misses += 1
                return None
            self._entries.move_to_end(ck)
            self._hits += 1
            return rec

    def peek(self, key: str, submodel: Any = None) -> CacheRecord | None:
        """Like :meth:`get` without touching the LRU order or the counters."""
        with self._lock:
            return self._entries.get(cache_key(key, submodel))

    def __contains__(self, key: object) -> bool:
        ck = key if isinstance(key, tuple) else (key, None)
        with self._lock:
            return ck in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def cached_keys(self) -> list[CacheKey]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._entries)

    # ----- admission -----------------------------------------------------------------------
    def put(
        self, key: str, model: Any, submodel: Any = None, size: int | None = None, fingerprint: Hashable = None
    ) -> CacheRecord:
        """Admit ``model``, evicting LRU unlocked entries to fit. Replaces an unlocked same-key entry."""
        ck = cache_key(key, submodel)
        nbytes = model_size(model) if size is None else int(size)
        with self._lock:
            old = self._entries.get(ck)
            if old is not None:
                if old.model is model:
                    self._entries.move_to_end(ck)
                    return old
                self._retire(old, reason="replaced")
            self._make_room_locked(nbytes)
            if self._ram_used + nbytes > self.budget.ram_bytes:
                self._oversized += 1
                log.warning(
                    "model %s (%d MiB) does not fit the RAM cache budget (%d MiB, %d MiB in use by locked models);"
                    " keeping it anyway",
                    ck,
                    nbytes >> 20,
                    self.budget.ram_bytes >> 20,
                    self._ram_used >> 20,
                )
            rec = CacheRecord(ck, model, nbytes, fingerprint)
            self._entries[ck] = rec
            self._ram_used += nbytes
            self._ram_high = max(self._ram_high, self._ram_used)
            self._puts += 1
            return rec

    def make_room(self, nbytes: int) -> int:
        """Evict LRU unlocked entries until ``nbytes`` more fit the RAM budget; returns bytes freed."""
        with self._lock:
            return self._make_room_locked(nbytes)

    def _make_room_locked(self, nbytes: int) -> int:
        freed = 0
        if self._ram_used + nbytes <= self.budget.ram_bytes:
            return 0
        for rec in list(self._entries.values()):
            if self._ram_used + nbytes <= self.budget.ram_bytes:
                break
            if rec.locked:
                continue
            freed += rec.size
            self._drop(rec, reason="evicted")
            self._evictions += 1
        if freed:
            self._after_free()
        return freed

    def _after_free(self) -> None:
        # A full gc costs tens of milliseconds on a big heap: run it only when a dropped model
        # survived its last reference (a reference cycle, or a caller still holding it).
        survivors = [r for r in self._dropped if r() is not None]
        self._dropped.clear()
        if survivors:
            gc.collect()
        if self._trim is not None:
            self._trim()
        self.device.empty_cache()

    def _retire(self, rec: CacheRecord, reason: str) -> None:
        """Take ``rec`` out of the lookup table; a locked one keeps its bytes until its last unlock."""
        if rec.locked:
            self._entries.pop(rec.key, None)
            self._zombies.add(rec)
            log.debug("cache retire %s (%s, still locked)", rec.key, reason)
        else:
            self._drop(rec, reason)
            self._after_free()

    def _drop(self, rec: CacheRecord, reason: str) -> None:
        if rec.residency is not None:
            self._offload(rec)
        if self._entries.get(rec.key) is rec:
            del self._entries[rec.key]
        self._ram_used -= rec.size
        try:
            self._dropped.append(weakref.ref(rec.model))
        except TypeError:  # dicts and other non-weakrefable objects: freed by refcount
            pass
        log.debug("cache drop %s (%s)", rec.key, reason)

    def drop(self, key: str, submodel: Any = None) -> bool:
        """Remove an unlocked entry now; a locked entry is kept (returns False)."""
        with self._lock:
            rec = self._entries.get(cache_key(key, submodel))
            if rec is None or rec.locked:
                return False
            self._drop(rec, reason="dropped")
            self._after_free()
            return True

    def drop_model(self, key: str) -> int:
        """Drop every unlocked submodel of ``key`` (after a record change or delete)."""
        with self._lock:
            victims = [r for r in self._entries.values() if r.key[0] == key and not r.locked]
            for rec in victims:
                self._drop(rec, reason="dropped")
            if victims:
                self._after_free()
            return len(victims)

    def clear(self) -> int:
        """Drop every unlocked entry; returns how many went."""
        with self._lock:
            victims = [r for r in self._entries.values() if not r.locked]
            for rec in victims:
                self._drop(rec, reason="cleared")
            if victims:
                self._after_free()
            return len(victims)

    # ----- locking and the device tier -----------------------------------------------------
    def lock(self, rec: CacheRecord) -> Any:
        """Pin ``rec`` and make it resident on the device; returns the model. Re-admits an evicted record."""
        with self._lock:
            if rec not in self._zombies and self._entries.get(rec.key) is not rec:
                # Evicted between load and use (InvokeAI #7513): the caller still holds it, take it back.
                existing = self._entries.get(rec.key)
                if existing is not None and not existing.locked:
                    self._drop(existing, reason="replaced")
                if rec.key not in self._entries:
                    self._make_room_locked(rec.size)
                    self._entries[rec.key] = rec
                    self._ram_used += rec.size
                    self._ram_high = max(self._ram_high, self._ram_used)
            rec.lock_count += 1
            try:
                if self._entries.get(rec.key) is rec:
                    self._entries.move_to_end(rec.key)
                if self.device.has_own_memory and rec.residency is None and rec.size > 0:
                    self._load_to_device(rec)
            except BaseException:
                rec.lock_count -= 1
                raise
            return rec.model

    def unlock(self, rec: CacheRecord) -> None:
        """Release one lock; the model stays on the device until room is needed."""
        with self._lock:
            if rec.lock_count <= 0:
                raise RuntimeError(f"unlock of {rec.key} which is not locked")
            rec.lock_count -= 1
            if rec.lock_count == 0 and rec in self._zombies:
                self._zombies.discard(rec)
                self._drop(rec, reason="stale, unlocked")
                self._after_free()

    def _load_to_device(self, rec: CacheRecord) -> None:
        need = rec.size
        if self._vram_used + need > self.budget.vram_bytes:
            self._offload_until(need)
        if self._vram_used + need > self.budget.vram_bytes:
            self._oversized += 1
            log.warning(
                "model %s (%d MiB) does not fit the VRAM budget (%d MiB, %d MiB locked); trying anyway",
                rec.key,
                need >> 20,
                self.budget.vram_bytes >> 20,
                self._vram_used >> 20,
            )
        rec.residency = self.device.load(rec.model, need)
        self._vram_used += need
        self._vram_high = max(self._vram_high, self._vram_used)
        self._vram_loads += 1

    def _offload_until(self, need: int) -> None:
        offloaded = False
        for other in list(self._entries.values()):
            if self._vram_used + need <= self.budget.vram_bytes:
                break
            if other.residency is not None and not other.locked:
                self._offload(other)
                offloaded = True
        if offloaded:
            self.device.empty_cache()

    def _offload(self, rec: CacheRecord) -> None:
        assert rec.residency is not None
        rec.residency.unload()
        rec.residency = None
        self._vram_used -= rec.size
        self._vram_offloads += 1

    def make_room_on_device(self, nbytes: int) -> None:
        """Offload LRU unlocked models until ``nbytes`` more fit the VRAM budget."""
        with self._lock:
            self._offload_until(nbytes)

    def cpu_state_dict(self, rec: CacheRecord) -> dict[str, Any]:
        """The RAM copy of ``rec``'s weights (valid while it is on the device, too)."""
        with self._lock:
            residency = rec.residency
            placement = getattr(residency, "_placement", None)
            if isinstance(placement, Placement):
                return _placement_cpu_dict(placement)
            return cpu_state_dict(rec.model)

    # ----- reporting -----------------------------------------------------------------------
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                puts=self._puts,
                evictions=self._evictions,
                vram_loads=self._vram_loads,
                vram_offloads=self._vram_offloads,
                oversized=self._oversized,
                entries=len(self._entries),
                locked=sum(1 for r in self._entries.values() if r.locked),
                ram_bytes=self._ram_used,
                vram_bytes=self._vram_used,
                ram_budget=self.budget.ram_bytes,
                vram_budget=self.budget.vram_bytes,
                ram_high_water=self._ram_high,
                vram_high_water=self._vram_high,
            )

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"ModelCache(entries={s.entries}, ram={s.ram_bytes}/{s.ram_budget}, "
            f"vram={s.vram_bytes}/{s.vram_budget}, device={self.device.name})"
        )


def _placement_cpu_dict(placement: Placement) -> dict[str, Any]:
    """State-dict names mapped to the RAM tensors a placement holds (the model itself is on device)."""
    if placement._dict_items:
        return {name: v for name, (_, _, v) in zip(placement._dict_names, placement._dict_items, strict=True)}
    slots = {(id(m), n): t for m, n, t in placement._params}
    slots.update({(id(m), n): t for m, n, t in placement._buffers})
    obj = placement.obj
    target = obj if hasattr(obj, "named_modules") else getattr(obj, "model", None)
    out: dict[str, Any] = {}
    if target is None:
        return out
    for mod_name, module in target.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for pname in module._parameters:
            t = slots.get((id(module), pname))
            if t is not None:
                out[prefix + pname] = t.detach()
        for bname in module._buffers:
            t = slots.get((id(module), bname))
            if t is not None and bname not in module._non_persistent_buffers_set:
                out[prefix + bname] = t
    return out


__all__ = ["CacheKey", "CacheRecord", "ModelCache", "cache_key"]
