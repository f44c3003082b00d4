"""What a rule sees: a file's normalised key -> shape table and metadata, and what a rule says back."""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType, SchedulerPredictionType

#: Wrapper prefixes removed when they enclose the whole state dict (training-script containers).
_WRAPPERS = ("state_dict.", "module.", "params_ema.", "params.", "model_state_dict.")

_REVERSED = operator.itemgetter(slice(None, None, -1))

#: Token (cross-attention / text-encoder) width -> base, for the UNet families.
WIDTH_TO_BASE: dict[int, BaseModelType] = {
    768: BaseModelType.StableDiffusion1,
    1024: BaseModelType.StableDiffusion2,
    2048: BaseModelType.StableDiffusionXL,
    1280: BaseModelType.StableDiffusionXLRefiner,
}


@dataclass
class KeyView:
    """Normalised key table of one weights file. Shapes are ``None`` for non-tensor pickle leaves."""

    path: Path
    shapes: dict[str, tuple[int, ...] | None]
    metadata: dict[str, str] = field(default_factory=dict)
    values: dict[str, int | float | str | bool] = field(default_factory=dict)
    source: str = "safetensors header"
    unwrapped: str | None = None  # the wrapper prefix that was removed, if any

    @classmethod
    def build(
        cls,
        path: Path,
        shapes: dict[str, tuple[int, ...] | None],
        *,
        metadata: dict[str, str] | None = None,
        values: dict[str, int | float | str | bool] | None = None,
        source: str,
    ) -> KeyView:
        values = dict(values or {})
        unwrapped = None
        # A wrapper encloses every tensor, so it must prefix the first one: test only those.
        first = next((k for k, v in shapes.items() if v is not None), "")
        for wrapper in (w for w in _WRAPPERS if first.startswith(w)):
            inner = {k[len(wrapper) :]: v for k, v in shapes.items() if k.startswith(wrapper)}
            tensors_inside = sum(1 for v in inner.values() if v is not None)
            tensors_total = sum(1 for v in shapes.values() if v is not None)
            # A wrapper when every tensor sits under it (scalars like global_step may sit beside it).
            if inner and tensors_inside == tensors_total:
                unwrapped = wrapper
                shapes = inner
                break
        return cls(path, shapes, dict(metadata or {}), values, source, unwrapped)

    # -- lookups -------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.shapes

    def shape(self, key: str) -> tuple[int, ...] | None:
        return self.shapes.get(key)

    def dim(self, key: str, index: int) -> int | None:
        shape = self.shapes.get(key)
        if not shape:
            return None
        try:
            return shape[index]
        except IndexError:
            return None

    # Sorted key lists (built on first use) turn prefix / suffix tests over thousands of keys into
    # binary searches; suffixes are searched among the reversed keys.
    @cached_property
    def _sorted(self) -> list[str]:
        return sorted(self.shapes)

    @cached_property
    def _rsorted(self) -> list[str]:
        return sorted(map(_REVERSED, self.shapes))  # C-level slicing: thousands of keys

    @cached_property
    def _joined(self) -> str:
        return "\n".join(self.shapes)

    @staticmethod
    def _has_prefix(keys: list[str], prefix: str) -> bool:
        i = bisect.bisect_left(keys, prefix)
        return i < len(keys) and keys[i].startswith(prefix)

    def any_startswith(self, *prefixes: str) -> bool:
        return any(self._has_prefix(self._sorted, p) for p in prefixes)

    def keys_startswith(self, prefix: str) -> list[str]:
        keys = self._sorted
        i = bisect.bisect_left(keys, prefix)
        out = []
        while i < len(keys) and keys[i].startswith(prefix):
            out.append(keys[i])
            i += 1
        return out

    def any_endswith(self, *suffixes: str) -> bool:
        return any(self._has_prefix(self._rsorted, x[::-1]) for x in suffixes)

    def any_contains(self, *parts: str) -> bool:
        return any(p in self._joined for p in parts)

    def first(self, candidates: Iterable[str]) -> str | None:
        return next((k for k in candidates if k in self.shapes), None)

    def find_prefix(self, marker: str, prefixes: Iterable[str]) -> str | None:
        """The first prefix ``p`` for which ``p + marker`` is a key."""
        return next((p for p in prefixes if p + marker in self.shapes), None)

    def max_index(self, prefix: str) -> int | None:
        """Largest ``N`` among keys ``prefix + N + ...`` (block / layer counting)."""
        best: int | None = None
        for k in self.shapes:
            if k.startswith(prefix):
                head = k[len(prefix) :].split(".", 1)[0].split("_", 1)[0]
                if head.isdigit():
                    best = max(best or 0, int(head))
        return best

    def __len__(self) -> int:
        return len(self.shapes)


@dataclass
class Verdict:
    """One rule's answer. ``reasons`` lines read ``"<field>: <value> (<why>)"``."""

    rule: str
    matched: bool
    type: ModelType | None = None
    format: ModelFormat | None = None
    base: BaseModelType | None = None
    _: KW_ONLY
    compatible_bases: set[BaseModelType] = field(default_factory=set)
    variant: str | None = None
    prediction_type: SchedulerPredictionType | None = None
    confidence: float = 0.0
    reasons: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def why(self, line: str) -> Verdict:
        self.reasons.append(line)
        return self


def no_match(rule: str, why: str) -> Verdict:
    return Verdict(rule=rule, matched=False, reasons=[why])


def fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]" if shape is not None else "[?]"
