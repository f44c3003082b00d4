"""Request and response bodies of the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType


class ModelList(BaseModel):
    models: list[dict[str, Any]]
    total: int
    offset: int
    limit: int | None


class ModelUpdate(BaseModel):
    """Fields a user may change on a record (everything optional)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=100_000)
    tags: list[str] | None = None
    trigger_phrases: list[str] | None = None
    base: BaseModelType | None = None
    type: ModelType | None = None
    format: ModelFormat | None = None
    compatible_bases: list[BaseModelType] | None = None
    variant: str | None = None
    prediction_type: str | None = None
    thumbnail_url: str | None = Field(default=None, max_length=2000)
    author: str | None = None
    license: str | None = None


class IdentifyRequest(BaseModel):
    path: str = Field(min_length=1, max_length=4096)


class InstallOverrides(BaseModel):
    """Optional config overrides sent with an install."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = None
    base: BaseModelType | None = None
    type: ModelType | None = None
    format: ModelFormat | None = None
    variant: str | None = None
    tags: list[str] | None = None
    trigger_phrases: list[str] | None = None


class ScanEntry(BaseModel):
    path: str
    is_installed: bool
    key: str | None = None
