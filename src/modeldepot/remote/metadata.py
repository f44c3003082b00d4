"""Model metadata from Hugging Face and Civitai: the seed's ``metadata`` API over our own clients.

    fetch = HuggingFaceMetadataFetch(config=config)      # endpoints from config, else the settings
    meta = fetch.from_id("org/name")                      # or .from_url("https://huggingface.co/org/name")
    again = ModelMetadataFetchBase.from_json(meta.model_dump_json())   # == meta

Installs keep the remote's own answer in the record's ``source_api_response`` and add this
metadata under one extra key (``METADATA_KEY``), so the stored text is still the remote's JSON and
``ModelMetadataFetchBase.from_json(record.source_api_response)`` gives the metadata back. Answers
stored before that key existed are read too (Hugging Face file URLs then point at huggingface.co).

A fetcher's ``session`` may be a ``requests.Session`` (as in the seed), an ``httpx.Client`` or an
httpx transport; it carries every request (see ``_session``). Anything else is refused.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modeldepot.config import DepotConfig
from modeldepot.errors import InvalidSourceError, RemoteNotFoundError
from modeldepot.remote._metadata_types import (
    AnyModelRepoMetadata,
    AnyModelRepoMetadataValidator,
    CivitaiMetadata,
    CommercialUsage,
    HuggingFaceMetadata,
    InvalidMetadataError,
    LicenseRestrictions,
    ModelMetadataBase,
    RemoteModelFile,
    UnknownMetadataException,
)
from modeldepot.remote._session import session_transport
from modeldepot.remote.civitai import CivitaiClient, CivitaiVersion, display_name, plain_text, version_from_api
from modeldepot.remote.hf import HFRepoInfo, HuggingFaceClient, parse_time, repo_info_from_api, resolve_url
from modeldepot.remote.sources import CivitaiModelSource, HFModelSource, is_valid_repo_id, parse_source
from modeldepot.taxonomy import ModelRepoVariant

#: The key under which a record's ``source_api_response`` carries the metadata next to the raw answer.
METADATA_KEY = "modeldepot_metadata"
_HF_DEFAULT = "https://huggingface.co"
_CIVITAI_DEFAULT = "https://civitai.com"


# -- building metadata from the clients' answers ---------------------------------------------------


def hf_metadata(info: HFRepoInfo, endpoint: str | None = None) -> HuggingFaceMetadata:
    """Metadata from a repo's info; file URLs are resolve URLs at the commit, on the hub it came from."""
    hub = endpoint or info.endpoint or _HF_DEFAULT
    rev = info.sha or info.revision
    desc = info.card_data.get("description")
    return HuggingFaceMetadata(
        id=info.repo_id,
        name=info.repo_id.split("/")[-1],
        author=info.author,
        tags=set(info.tags),
        license=info.license,
        description=desc if isinstance(desc, str) and desc else None,
        files=[
            RemoteModelFile(
                url=resolve_url(hub, info.repo_id, rev, f.path), path=Path(f.path), size=f.size, sha256=f.sha256
            )
            for f in info.siblings
        ],
        last_modified=info.last_modified,
        tag_dict=dict(info.card_data),
        sha=info.sha,
        revision=info.revision,
        gated=info.is_gated,
        private=info.private,
        library_name=info.library_name,
        pipeline_tag=info.pipeline_tag,
    )


def _restrictions(model: dict[str, Any]) -> LicenseRestrictions:
    uses = model.get("allowCommercialUse")
    # Civitai has sent this as one string and as a list over the years.
    names = uses if isinstance(uses, list) else [uses] if isinstance(uses, str) else []
    known = {u.value for u in CommercialUsage}
    return LicenseRestrictions(
        AllowNoCredit=bool(model.get("allowNoCredit")),
        AllowDerivatives=bool(model.get("allowDerivatives")),
        AllowDifferentLicense=bool(model.get("allowDifferentLicense")),
        AllowCommercialUse={CommercialUsage(u) for u in names if u in known},
    )


def civitai_metadata(version: CivitaiVersion) -> CivitaiMetadata:
    """Metadata from a version and (when fetched) its model."""
    model = version.model
    model_raw = model.raw if model is not None else {}
    raw = version.raw
    updated = parse_time(raw.get("updatedAt"))
    published = parse_time(raw.get("publishedAt"))
    created = parse_time(raw.get("createdAt"))
    return CivitaiMetadata(
        id=version.model_id,
        version_id=version.id,
        name=(model.name if model is not None and model.name else None) or display_name(version),
        author=model.author if model is not None else None,
        tags=set(model.tags) if model is not None else set(),
        description=plain_text(model.description if model is not None else None),
        version_name=version.name,
        version_description=plain_text(version.description),
        model_type=model.type if model is not None else None,
        base_model=version.base_model,
        trained_words=set(version.trained_words),
        download_url=version.download_url or next((f.download_url for f in version.files if f.primary), None),
        thumbnail_url=version.image_urls[0] if version.image_urls else None,
        nsfw=bool(model.nsfw) if model is not None else False,
        files=[
            RemoteModelFile(url=f.download_url, path=Path(f.name), size=f.size, sha256=f.sha256) for f in version.files
        ],
        created=created,
        updated=updated,
        published=published,
        last_modified=updated or published or created,
        restrictions=_restrictions(model_raw),
    )


# -- JSON ------------------------------------------------------------------------------------------


def _looks_like_hf(data: dict[str, Any]) -> bool:
    repo = data.get("id") or data.get("modelId")
    return isinstance(repo, str) and "/" in repo and ("siblings" in data or "sha" in data)


def _looks_like_civitai(data: dict[str, Any]) -> bool:
    return isinstance(data.get("id"), int) and ("files" in data or "baseModel" in data or "modelId" in data)


def metadata_from_json(text: str | bytes | dict[str, Any]) -> AnyModelRepoMetadata:
    """Metadata from its JSON, or from a stored ``source_api_response`` (see the module docstring).

    Raises:
        InvalidMetadataError: not JSON, or JSON that is none of those.
    """
    if isinstance(text, dict):
        data: Any = text
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidMetadataError(f"model metadata must be JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidMetadataError(f"model metadata must be a JSON object, not {type(data).__name__}")
    if isinstance(data.get(METADATA_KEY), dict):
        data = data[METADATA_KEY]
    if "type" in data and isinstance(data["type"], str) and data["type"] in ("huggingface", "civitai"):
        try:
            return AnyModelRepoMetadataValidator.validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            # The union's first location is the discriminator's value; the field is what helps.
            loc = first["loc"][1:] if first["loc"][:1] == (data["type"],) else first["loc"]
            where = ".".join(str(p) for p in loc)
            raise InvalidMetadataError(f"invalid {data['type']} metadata: {where}: {first['msg']}") from exc
    if _looks_like_hf(data):
        return hf_metadata(repo_info_from_api(data))
    if _looks_like_civitai(data):
        return civitai_metadata(version_from_api(data, _CIVITAI_DEFAULT))
    raise InvalidMetadataError(
        "this JSON is not model metadata: it has no 'type' of 'huggingface' or 'civitai' and is not a "
        "Hugging Face or Civitai answer"
    )


def metadata_json_for_record(source_api_response: str, metadata: ModelMetadataBase) -> str:
    """The record's ``source_api_response``: the remote's answer plus ``metadata`` under ``METADATA_KEY``."""
    try:
        raw = json.loads(source_api_response) if source_api_response else {}
    except ValueError:
        raw = {}
    if not isinstance(raw, dict):
        raw = {"response": raw}
    raw[METADATA_KEY] = metadata.model_dump(mode="json")
    return json.dumps(raw, sort_keys=True, default=str)


# -- fetchers --------------------------------------------------------------------------------------


@contextmanager
def _unknown() -> Iterator[None]:
    """A missing repo / model / version becomes ``UnknownMetadataException`` (still a RemoteNotFoundError),
    the seed's name for it; the client's message already names the thing."""
    try:
        yield
    except UnknownMetadataException:
        raise
    except RemoteNotFoundError as exc:
        raise UnknownMetadataException(str(exc), url=exc.url) from exc


class ModelMetadataFetchBase(ABC):
    """Fetches ``AnyModelRepoMetadata`` from one remote.

    Args:
        session: a ``requests.Session``, ``httpx.Client`` or httpx transport to send requests through.
        config: the settings whose ``hf_endpoint`` / ``civitai_endpoint`` and tokens are used;
            None reads them the usual way (``DepotConfig()``: environment, then modeldepot.yaml).
        token: an access token for this remote (else the configured ones).

    Raises:
        ConfigurationError: ``session`` is of a kind that cannot be honoured.
    """

    def __init__(self, session: Any = None, config: DepotConfig | None = None, *, token: str | None = None) -> None:
        self.config = config if config is not None else DepotConfig()
        self._transport = session_transport(session)
        self._token = token

    @abstractmethod
    def from_url(self, url: str) -> AnyModelRepoMetadata:
        """Metadata for a model page URL, as users paste it."""

    @abstractmethod
    def from_id(self, id: str) -> AnyModelRepoMetadata:
        """Metadata for the remote's own id of a model."""

    @classmethod
    def from_json(cls, json: str | bytes) -> AnyModelRepoMetadata:
        """Validate metadata JSON (or a record's ``source_api_response``) into the right class."""
        return metadata_from_json(json)


class HuggingFaceMetadataFetch(ModelMetadataFetchBase):
    """Metadata of Hugging Face repos, from the configured ``hf_endpoint``."""

    def _client(self) -> HuggingFaceClient:
        return HuggingFaceClient.from_config(self.config, self._token, transport=self._transport)

    def from_id(self, id: str, variant: ModelRepoVariant | None = None) -> HuggingFaceMetadata:
        """Metadata for ``org/name`` (``org/name@revision`` also works).

        With a ``variant`` whose branch exists (``fp16``), that branch's files are listed.

        Raises:
            InvalidSourceError: ``id`` is not a repo id.
            UnknownMetadataException: the repo (or revision) does not exist or is private to this caller.
        """
        repo_id, revision = id, None
        if not is_valid_repo_id(id):
            src = parse_source(id, self.config) if "/" in id and not id.startswith(("/", ".")) else None
            if not isinstance(src, HFModelSource):
                raise InvalidSourceError(f"{id!r} is not a Hugging Face repo id (expected org/name)")
            repo_id, revision = src.repo_id, src.revision
        return self._fetch(repo_id, revision, variant)

    def from_url(self, url: str) -> HuggingFaceMetadata:
        """Metadata for ``https://huggingface.co/org/name[/tree/REV/...]`` (or the configured endpoint's URLs).

        Raises:
            InvalidSourceError: the URL is not a Hugging Face model URL.
            UnknownMetadataException: the repo does not exist.
        """
        src = parse_source(str(url), self.config)
        if not isinstance(src, HFModelSource):
            raise InvalidSourceError(f"{str(url)!r} is not a Hugging Face model URL")
        return self._fetch(src.repo_id, src.revision, src.variant)

    def _fetch(self, repo_id: str, revision: str | None, variant: ModelRepoVariant | None) -> HuggingFaceMetadata:
        with _unknown(), self._client() as client:
            if revision is None and variant is not None:
                revision = client.revision_for_variant(repo_id, variant)
            return hf_metadata(client.model_info(repo_id, revision))

    @classmethod
    def from_json(cls, json: str | bytes) -> HuggingFaceMetadata:
        """Like the base class, but only Hugging Face metadata is accepted."""
        meta = metadata_from_json(json)
        if not isinstance(meta, HuggingFaceMetadata):
            raise InvalidMetadataError(f"this is {meta.type} metadata, not Hugging Face metadata")
        return meta


class CivitaiMetadataFetch(ModelMetadataFetchBase):
    """Metadata of Civitai model versions, from the configured ``civitai_endpoint``."""

    def _client(self) -> CivitaiClient:
        return CivitaiClient.from_config(self.config, self._token, transport=self._transport)

    def from_id(self, id: str | int) -> CivitaiMetadata:
        """Metadata for a model version id (``130072``), or any Civitai reference (``civitai:model/4201``).

        Raises:
            InvalidSourceError: ``id`` is not a version id or Civitai reference.
            UnknownMetadataException: no such version (or model).
        """
        text = str(id).strip()
        if text.isdigit():
            return self.from_civitai_versionid(int(text))
        src = parse_source(text, self.config) if ":" in text else None
        if not isinstance(src, CivitaiModelSource):
            raise InvalidSourceError(f"{text!r} is not a Civitai model version id (a number) or civitai: reference")
        return self._resolve(src)

    def from_url(self, url: str) -> CivitaiMetadata:
        """Metadata for ``https://civitai.com/models/ID[?modelVersionId=V]`` or a download URL.

        Raises:
            InvalidSourceError: the URL is not a Civitai model URL.
            UnknownMetadataException: no such model or version.
        """
        src = parse_source(str(url), self.config)
        if not isinstance(src, CivitaiModelSource):
            raise InvalidSourceError(f"{str(url)!r} is not a Civitai model URL")
        return self._resolve(src)

    def from_civitai_versionid(self, version_id: int) -> CivitaiMetadata:
        return self._resolve(CivitaiModelSource(version_id=int(version_id)))

    def from_civitai_modelid(self, model_id: int) -> CivitaiMetadata:
        """The newest version of a model."""
        return self._resolve(CivitaiModelSource(model_id=int(model_id)))

    def _resolve(self, source: CivitaiModelSource) -> CivitaiMetadata:
        with _unknown(), self._client() as client:
            return civitai_metadata(client.resolve(source))

    @classmethod
    def from_json(cls, json: str | bytes) -> CivitaiMetadata:
        """Like the base class, but only Civitai metadata is accepted."""
        meta = metadata_from_json(json)
        if not isinstance(meta, CivitaiMetadata):
            raise InvalidMetadataError(f"this is {meta.type} metadata, not Civitai metadata")
        return meta


__all__ = [
    "METADATA_KEY",
    "AnyModelRepoMetadata",
    "AnyModelRepoMetadataValidator",
    "CivitaiMetadata",
    "CivitaiMetadataFetch",
    "CommercialUsage",
    "HuggingFaceMetadata",
    "HuggingFaceMetadataFetch",
    "InvalidMetadataError",
    "LicenseRestrictions",
    "ModelMetadataBase",
    "ModelMetadataFetchBase",
    "RemoteModelFile",
    "UnknownMetadataException",
    "civitai_metadata",
    "hf_metadata",
    "metadata_from_json",
    "metadata_json_for_record",
]
