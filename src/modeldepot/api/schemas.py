"""Request and response bodies of the API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

#: No NUL characters in text a record stores: PostgreSQL text cannot hold them, and no name needs one.
NO_NUL = r"^[^\x00]*$"
Tag = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]


class ModelList(BaseModel):
    """One page of records; ``total`` counts every match, ignoring ``offset`` / ``limit``, up to
    ``COUNT_LIMIT``: past it, counting stops and ``total_exact`` is false (``total`` is then a lower
    bound: "more than 10,000"), so a page of a common word among a million records stays fast."""

    models: list[dict[str, Any]]
    total: int
    total_exact: bool = True
    offset: int
    limit: int | None


#: Matches counted at most for a page's ``total``.
COUNT_LIMIT = 10_000


class ModelUpdate(BaseModel):
    """Fields a user may change on a record (all optional; only the ones sent change)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, pattern=NO_NUL, max_length=500)
    description: str | None = Field(default=None, pattern=NO_NUL, max_length=100_000)
    tags: list[Tag] | None = Field(default=None, max_length=200)
    trigger_phrases: list[Tag] | None = Field(default=None, max_length=200)
    base: BaseModelType | None = None
    type: ModelType | None = None
    format: ModelFormat | None = None
    compatible_bases: list[BaseModelType] | None = None
    variant: str | None = Field(default=None, pattern=NO_NUL, max_length=100)
    prediction_type: str | None = Field(default=None, pattern=NO_NUL, max_length=100)
    thumbnail_url: str | None = Field(default=None, pattern=NO_NUL, max_length=2000)
    author: str | None = Field(default=None, pattern=NO_NUL, max_length=500)
    license: str | None = Field(default=None, pattern=NO_NUL, max_length=2000)


class IdentifyRequest(BaseModel):
    path: str = Field(min_length=1, max_length=4096, description="A file or folder on the server's disk")


class InstallOverrides(BaseModel):
    """Optional record fields for an install; they win over identification."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, pattern=NO_NUL, max_length=500)
    description: str | None = Field(default=None, pattern=NO_NUL, max_length=100_000)
    base: BaseModelType | None = None
    type: ModelType | None = None
    format: ModelFormat | None = None
    variant: str | None = Field(default=None, pattern=NO_NUL, max_length=100)
    tags: list[Tag] | None = Field(default=None, max_length=200)
    trigger_phrases: list[Tag] | None = Field(default=None, max_length=200)


class ScanEntry(BaseModel):
    path: str
    is_installed: bool
    key: str | None = None


class ModelFile(BaseModel):
    """One file of a model: its path inside the model, size, and where its bytes live."""

    path: str
    size: int
    location: str
    blob: str | None = Field(default=None, description="Content-addressed blob holding the bytes")
    digest: str | None = None


class ModelFiles(BaseModel):
    key: str
    path: str
    inplace: bool
    link_mode: str | None
    files: list[ModelFile]


class Deleted(BaseModel):
    deleted: str
    name: str
    files_removed: bool


class ReferenceDownload(BaseModel):
    """A reference entry's download through this server: ``idle`` until one is started here."""

    status: Literal["idle", "running", "completed", "error"]
    bytes: int = 0
    total_bytes: int = 0
    error: str | None = None


class ReferenceItem(BaseModel):
    """One model of a service's reference; ``available`` is computed (files present and valid)."""

    service: str
    key: str
    name: str
    type: str
    description: str | None = None
    baseline: str | None = None
    nsfw: bool | None = None
    size_on_disk_bytes: int | None = None
    available: bool
    record_key: str | None = Field(default=None, description="The depot record of the entry's files, once downloaded")
    download: ReferenceDownload


class ReferenceFile(BaseModel):
    path: str
    location: str = Field(description="Where the file is (or goes) in the Nataili folder")
    present: bool
    sha256sum: str | None = None
    md5sum: str | None = None


class ReferenceDetail(ReferenceItem):
    folder: str = Field(description="The service's Nataili folder")
    files: list[ReferenceFile]
    entry: dict[str, Any] = Field(description="Every field of the entry as the reference has it")
