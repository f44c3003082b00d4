"""The verdict of identification: what a model is, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from modeldepot.taxonomy import (
    BaseModelType,
    ModelFormat,
    ModelRepoVariant,
    ModelType,
    SchedulerPredictionType,
    SubModelType,
)


@dataclass
class Candidate:
    """One rule's verdict, kept so ``--explain`` can show why the others lost."""

    rule: str
    matched: bool
    type: ModelType | None = None
    format: ModelFormat | None = None
    base: BaseModelType | None = None
    reasons: list[str] = field(default_factory=list)
    confidence: float = 0.0  # 0..1, this rule's own certainty
    lost_to: str | None = None  # the winning rule, when this one matched but ranked lower


@dataclass
class Identification:
    type: ModelType
    format: ModelFormat
    base: BaseModelType
    compatible_bases: set[BaseModelType] = field(default_factory=set)
    variant: str | None = None  # ModelVariantType / FluxVariantType / ClipVariantType value
    prediction_type: SchedulerPredictionType | None = None
    repo_variant: ModelRepoVariant | None = None
    submodels: dict[SubModelType, str] = field(default_factory=dict)  # submodel -> relative path
    confidence: float = 0.0  # 0..1
    reasons: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"architecture": "ESRGAN"}
    overridden: set[str] = field(default_factory=set)  # fields set by the user

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compatible_bases"] = sorted(str(b) for b in self.compatible_bases)
        d["submodels"] = {str(k): v for k, v in self.submodels.items()}
        d["overridden"] = sorted(self.overridden)
        result: dict[str, Any] = _jsonable(d)
        return result


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(getattr(k, "value", k)): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set):
        return [_jsonable(x) for x in v]
    return getattr(v, "value", v)
