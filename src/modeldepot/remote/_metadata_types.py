"""The metadata value classes (seed 002, "This Meta be Good"): what a remote says about a model.

Metadata is descriptive (name, author, tags, license, files); what a model *is* (type, base,
format) belongs to its record. The classes are pydantic models joined by a ``type`` discriminator,
so ``AnyModelRepoMetadataValidator.validate_json(m.model_dump_json()) == m``.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from modeldepot.errors import InvalidMetadataError, UnknownMetadataException
from modeldepot.remote.hf import HFFile
from modeldepot.remote.hf_select import select_hf_files, select_preferred
from modeldepot.taxonomy import ModelRepoVariant


class RemoteModelFile(BaseModel):
    """A downloadable file of a model: where to get it, where it goes, and how to check it."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(description="The URL to download this file from")
    path: Path = Field(description="The file's path relative to the model (repo) root")
    size: int | None = Field(default=None, description="Size in bytes, when the remote says")
    sha256: str | None = Field(default=None, description="Lowercase hex sha256, when the remote says")


class ModelMetadataBase(BaseModel):
    """What every remote says about a model. The record's own ``name`` may be edited; this one is not."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="The remote's name for the model")
    author: str | None = Field(default=None, description="The model's author")
    tags: set[str] = Field(default_factory=set, description="The remote's tags")
    license: str | None = Field(default=None, description="License id or name, when known")
    description: str | None = Field(default=None, description="Plain-text description")
    files: list[RemoteModelFile] = Field(default_factory=list, description="The model's downloadable files")
    last_modified: datetime | None = Field(default=None, description="When the remote last changed the model")

    def download_urls(
        self, variant: ModelRepoVariant | None = None, subfolder: str | Path | None = None
    ) -> list[RemoteModelFile]:
        """The files needed for the model; remotes without variants return them all."""
        return list(self.files)


class HuggingFaceMetadata(ModelMetadataBase):
    """A Hugging Face repo's metadata (``GET /api/models/{repo_id}``)."""

    type: Literal["huggingface"] = "huggingface"
    id: str = Field(description="The repo id, org/name")
    tag_dict: dict[str, Any] = Field(default_factory=dict, description="The model card's metadata block")
    sha: str | None = Field(default=None, description="The commit the files are from")
    revision: str | None = Field(default=None, description="The branch or tag asked for (None: main)")
    gated: bool = False
    private: bool = False
    library_name: str | None = None
    pipeline_tag: str | None = None

    def download_urls(
        self, variant: ModelRepoVariant | None = None, subfolder: str | Path | None = None
    ) -> list[RemoteModelFile]:
        """The files an install would fetch for ``variant`` and ``subfolder`` (the same rules as installs;
        without ``model_index.json``'s contents, every folder that has a config is kept)."""
        listing = [HFFile(path=f.path.as_posix(), size=f.size, sha256=f.sha256) for f in self.files]
        sub = Path(subfolder).as_posix().strip("/") if subfolder is not None else None
        selection = (
            select_preferred(listing, sub or None)
            if variant is None
            else select_hf_files(listing, ModelRepoVariant(variant), sub or None)
        )
        wanted = set(selection.paths)
        return [f for f in self.files if f.path.as_posix() in wanted]


class CommercialUsage(str, Enum):
    """Civitai's kinds of commercial use a model's license allows."""

    No = "None"
    Image = "Image"
    Rent = "Rent"
    RentCivit = "RentCivit"
    Sell = "Sell"


class LicenseRestrictions(BaseModel):
    """Civitai's license switches (the ``allow*`` fields of a model)."""

    AllowNoCredit: bool = False
    AllowDerivatives: bool = False
    AllowDifferentLicense: bool = False
    AllowCommercialUse: set[CommercialUsage] = Field(default_factory=set)


class CivitaiMetadata(ModelMetadataBase):
    """A Civitai model version's metadata (with its model's name, author, tags and license switches)."""

    type: Literal["civitai"] = "civitai"
    id: int | None = Field(default=None, description="The Civitai model id")
    version_id: int = Field(description="The Civitai model version id")
    version_name: str = ""
    version_description: str | None = None
    model_type: str | None = Field(default=None, description="Civitai's model type, e.g. LORA, Checkpoint")
    base_model: str | None = Field(default=None, description="Civitai's base model, e.g. 'SDXL 1.0', 'Pony'")
    trained_words: set[str] = Field(default_factory=set, description="Trigger words")
    download_url: str | None = None
    thumbnail_url: str | None = None
    nsfw: bool = False
    created: datetime | None = None
    updated: datetime | None = None
    published: datetime | None = None
    restrictions: LicenseRestrictions = Field(default_factory=LicenseRestrictions)

    @property
    def base_model_trained_on(self) -> str | None:
        """InvokeAI's name for ``base_model``."""
        return self.base_model

    @property
    def credit_required(self) -> bool:
        return not self.restrictions.AllowNoCredit

    @property
    def allow_commercial_use(self) -> bool:
        return bool(self.restrictions.AllowCommercialUse - {CommercialUsage.No})

    @property
    def allow_derivatives(self) -> bool:
        return self.restrictions.AllowDerivatives

    @property
    def allow_different_license(self) -> bool:
        return self.restrictions.AllowDifferentLicense


AnyModelRepoMetadata = Annotated[
    Union[HuggingFaceMetadata, CivitaiMetadata],  # noqa: UP007 - a discriminated union needs Union here
    Field(discriminator="type"),
]
AnyModelRepoMetadataValidator: TypeAdapter[HuggingFaceMetadata | CivitaiMetadata] = TypeAdapter(AnyModelRepoMetadata)

__all__ = [
    "AnyModelRepoMetadata",
    "AnyModelRepoMetadataValidator",
    "CivitaiMetadata",
    "CommercialUsage",
    "HuggingFaceMetadata",
    "InvalidMetadataError",
    "LicenseRestrictions",
    "ModelMetadataBase",
    "RemoteModelFile",
    "UnknownMetadataException",
]
