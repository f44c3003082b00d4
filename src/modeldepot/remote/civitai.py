"""A Civitai REST client: versions, models, lookup by hash, file choice and record metadata.

Tokens go in ``Authorization: Bearer`` only. The ``?token=`` query form that Civitai also accepts
is never used, because URLs end up in job records, logs and events; download URLs returned here
are clean, and a downloader gets the header from ``download_headers()``.
"""

from __future__ import annotations

import html
import json
import re
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from modeldepot._fs import safe_relpath
from modeldepot._http import REDIRECT_STATUSES, redact_url, status_error
from modeldepot._tokens import resolve_token
from modeldepot.download._policy import ConnectPolicy
from modeldepot.errors import DownloadError, InvalidSourceError, RemoteNotFoundError
from modeldepot.remote._http import RemoteHTTP, error_detail
from modeldepot.remote.civitai_map import map_civitai_base, map_civitai_type
from modeldepot.remote.sources import CivitaiModelSource, UnsafeSourcePathError

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig

HOW_TO_GIVE_A_TOKEN = "pass a Civitai API token with --token, or set remote_api_tokens with host 'civitai.com'"
_HASH_RE = re.compile(r"^[0-9a-fA-F]{8,64}$")
_MAX_DESCRIPTION = 4000


class CivitaiFile(BaseModel):
    """One downloadable file of a version. ``size`` comes from ``sizeKB`` and may be off by a few bytes."""

    model_config = ConfigDict(frozen=True)

    id: int | None = None
    name: str
    download_url: str
    size: int | None = None
    sha256: str | None = Field(default=None, description="Lowercase hex, as reported by Civitai")
    primary: bool = False
    type: str = "Model"
    hashes: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class CivitaiModelSummary(BaseModel):
    """The model a version belongs to (from ``/models/{id}``, or the short form inside a version)."""

    model_config = ConfigDict(frozen=True)

    id: int | None = None
    name: str | None = None
    type: str | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    author: str | None = None
    nsfw: bool = False
    version_ids: list[int] = Field(default_factory=list)
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class CivitaiVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    model_id: int | None = None
    name: str = ""
    base_model: str | None = None
    trained_words: list[str] = Field(default_factory=list)
    description: str | None = None
    files: list[CivitaiFile] = Field(default_factory=list)
    image_urls: list[str] = Field(default_factory=list)
    download_url: str | None = None
    model: CivitaiModelSummary | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    def file_by_hash(self, value: str) -> CivitaiFile | None:
        """The file whose any hash (SHA256, AutoV2, AutoV3, ...) equals ``value``, case-insensitively."""
        wanted = normalise_hash(value)
        for f in self.files:
            if any(h.upper() == wanted for h in f.hashes.values() if isinstance(h, str)):
                return f
        return None


class CivitaiModel(CivitaiModelSummary):
    versions: list[CivitaiVersion] = Field(default_factory=list)


def normalise_hash(value: str) -> str:
    """``sha256:ABC...`` / ``abc...`` -> ``ABC...``; raises for anything that is not 8-64 hex digits."""
    text = value.strip()
    if ":" in text:
        text = text.split(":", 1)[1]
    if not _HASH_RE.match(text):
        raise InvalidSourceError(f"{value!r} is not a hash Civitai knows (8 to 64 hex digits: SHA256, AutoV2...)")
    return text.upper()


def _str_list(value: Any) -> list[str]:
    return [str(v) for v in value if isinstance(v, str | int) and str(v).strip()] if isinstance(value, list) else []


def _tags(value: Any) -> list[str]:
    # The API has sent both ["tag"] and [{"name": "tag"}] over the years.
    out: list[str] = []
    for t in value if isinstance(value, list) else []:
        name = t.get("name") if isinstance(t, dict) else t
        if isinstance(name, str) and name.strip():
            out.append(name.strip())
    return out


def _file(entry: dict[str, Any], endpoint: str) -> CivitaiFile:
    hashes = {str(k): str(v) for k, v in (entry.get("hashes") or {}).items() if v}
    sha = next((v for k, v in hashes.items() if k.upper() == "SHA256"), None)
    size_kb = entry.get("sizeKB")
    url = entry.get("downloadUrl") or (f"{endpoint}/api/download/models/{entry.get('versionId')}")
    return CivitaiFile(
        id=entry.get("id") if isinstance(entry.get("id"), int) else None,
        name=str(entry.get("name") or ""),
        download_url=str(url),
        size=round(float(size_kb) * 1024) if isinstance(size_kb, int | float) else None,
        sha256=sha.lower() if sha else None,
        primary=bool(entry.get("primary")),
        type=str(entry.get("type") or "Model"),
        hashes=hashes,
        metadata=dict(entry.get("metadata") or {}),
    )


def _summary(data: dict[str, Any]) -> CivitaiModelSummary:
    creator = data.get("creator") if isinstance(data.get("creator"), dict) else {}
    versions: list[Any] = data["modelVersions"] if isinstance(data.get("modelVersions"), list) else []
    return CivitaiModelSummary(
        id=data.get("id") if isinstance(data.get("id"), int) else None,
        name=data.get("name"),
        type=data.get("type"),
        description=data.get("description"),
        tags=_tags(data.get("tags")),
        author=(creator or {}).get("username"),
        nsfw=bool(data.get("nsfw")),
        version_ids=[int(v["id"]) for v in versions if isinstance(v, dict) and isinstance(v.get("id"), int)],
        raw={k: v for k, v in data.items() if k != "modelVersions"},
    )


def _version(data: dict[str, Any], endpoint: str, model: CivitaiModelSummary | None = None) -> CivitaiVersion:
    if model is None and isinstance(data.get("model"), dict):
        model = _summary({**data["model"], "id": data.get("modelId")})
    raw_images = data.get("images") if isinstance(data.get("images"), list) else []
    images = [str(i["url"]) for i in raw_images or [] if isinstance(i, dict) and i.get("url")]
    return CivitaiVersion(
        id=int(data["id"]),
        model_id=data.get("modelId") if isinstance(data.get("modelId"), int) else (model.id if model else None),
        name=str(data.get("name") or ""),
        base_model=data.get("baseModel"),
        trained_words=_str_list(data.get("trainedWords")),
        description=data.get("description"),
        files=[_file({**f, "versionId": data["id"]}, endpoint) for f in data.get("files") or [] if isinstance(f, dict)],
        image_urls=images,
        download_url=data.get("downloadUrl"),
        model=model,
        raw=data,
    )


def version_from_api(data: dict[str, Any], endpoint: str = "https://civitai.com") -> CivitaiVersion:
    """A version from Civitai's ``model-versions`` answer (live, or as a record stores it, whose
    ``"model"`` may be the full model answer)."""
    return _version(data, endpoint.rstrip("/"))


def plain_text(text: str | None) -> str | None:
    """Civitai descriptions are HTML; records hold plain text."""
    if not text:
        return None
    text = re.sub(r"<\s*(br|/p|/div|/li|/h\d)\s*/?>", "\n", text, flags=re.I)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
    return text[:_MAX_DESCRIPTION] or None


def choose_file(version: CivitaiVersion, file_name: str | None = None) -> CivitaiFile:
    """The file to install: the one asked for by name, else the primary Model file.

    Raises:
        RemoteNotFoundError: no such name, or no file to choose; the message lists the names.
        UnsafeSourcePathError: the server's file name is not a plain file name.
    """
    names = ", ".join(f"{f.name} ({f.type})" for f in version.files) or "none"
    chosen: CivitaiFile | None = None
    if file_name:
        chosen = next((f for f in version.files if f.name == file_name), None) or next(
            (f for f in version.files if f.name.lower() == file_name.lower()), None
        )
        if chosen is None:
            raise RemoteNotFoundError(
                f"Civitai model version {version.id} has no file {file_name!r}; its files: {names}",
                url=version.download_url,
            )
    else:
        models = [f for f in version.files if f.type.lower() in ("model", "pruned model")]
        chosen = (
            next((f for f in models if f.primary), None)
            or next((f for f in version.files if f.primary), None)
            or (models[0] if len(models) == 1 else None)
            or (version.files[0] if len(version.files) == 1 else None)
        )
        if chosen is None:
            raise RemoteNotFoundError(
                f"Civitai model version {version.id} has no primary file; pick one of: {names}",
                url=version.download_url,
            )
    try:
        rel = safe_relpath(chosen.name)
    except Exception as exc:
        raise UnsafeSourcePathError(f"Civitai file name {chosen.name!r} is not a plain file name", chosen.name) from exc
    if len(rel.parts) != 1:
        raise UnsafeSourcePathError(f"Civitai file name {chosen.name!r} is not a plain file name", chosen.name)
    return chosen


def display_name(version: CivitaiVersion) -> str:
    """The model's name; plus the version's when the model has several versions.

    A single-version model is simply its name; "Cool LoRA v2" tells versions of one model apart.
    The version name is not added when the model name already contains it.
    """
    model_name = (version.model.name if version.model else None) or ""
    model_name = model_name.strip()
    several = version.model is not None and len(version.model.version_ids) > 1
    vname = version.name.strip()
    if not model_name:
        return vname or f"civitai-{version.id}"
    if several and vname and vname.lower() not in model_name.lower():
        return f"{model_name} {vname}"
    return model_name


def metadata_for_record(version: CivitaiVersion) -> dict[str, Any]:
    """Record fields from a version (and its model, when fetched): only the ones Civitai knows.

    Keys: ``name`` (see ``display_name``), ``base`` and ``type`` (mapped; None when unknown),
    ``trigger_phrases``, ``tags`` (model tags + ``lineage:*`` / ``civitai_base:*``), ``author``,
    ``thumbnail_url`` (first image), ``description`` (plain text), ``source_api_response`` (the
    version JSON, with the full model JSON under ``"model"`` when it was fetched).

    Hints that only some record classes hold (v-prediction for "SD 2.1 768", the FLUX variant) are
    on ``map_civitai_base(version.base_model)``, not here, so this dict applies to any record.
    """
    model = version.model
    mapping = map_civitai_base(version.base_model)
    mtype = map_civitai_type(model.type if model else None)
    tags = [*(model.tags if model else []), *mapping.tags]
    raw = dict(version.raw)
    if model is not None and model.raw:
        raw["model"] = model.raw
    out: dict[str, Any] = {
        "name": display_name(version),
        "base": mapping.base,
        "type": mtype,
        "trigger_phrases": set(version.trained_words) or None,
        "tags": list(dict.fromkeys(tags)),
        "author": model.author if model else None,
        "thumbnail_url": version.image_urls[0] if version.image_urls else None,
        "description": plain_text((model.description if model else None) or version.description),
        "source_api_response": json.dumps(raw, sort_keys=True, default=str),
    }
    # base and type are always present (None when unknown); other empty values are left out so
    # they never overwrite what a record already has.
    return {k: v for k, v in out.items() if k in ("base", "type") or v not in (None, "", [], set())}


def _deadline(response: httpx.Response) -> str:
    """`` until <date>`` from an early-access answer's JSON body, or nothing."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return f" until {body['deadline']}" if isinstance(body, dict) and body.get("deadline") else ""


class CivitaiClient:
    """Metadata client for a Civitai endpoint (``https://civitai.com`` or a fakehub URL)."""

    def __init__(
        self,
        endpoint: str = "https://civitai.com",
        token: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        *,
        config: DepotConfig | None = None,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        policy: ConnectPolicy | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._config = config
        if policy is None:
            # The endpoint itself is chosen by the user, so it is trusted even on a LAN address.
            policy = (
                ConnectPolicy.from_config(config).trusting(self.endpoint) if config else ConnectPolicy.of([endpoint])
            )
        self._http = RemoteHTTP("Civitai", self.endpoint, self.token_for, timeout, retries, transport, policy)

    @classmethod
    def from_config(cls, config: DepotConfig, token: str | None = None, **kwargs: Any) -> CivitaiClient:
        return cls(config.civitai_endpoint, token, config=config, **kwargs)

    def __repr__(self) -> str:
        return f"CivitaiClient(endpoint={self.endpoint!r}, token={'***' if self._token else None})"

    def __enter__(self) -> CivitaiClient:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def token_for(self, url: str) -> str | None:
        """The token for ``url``: the explicit one goes to the endpoint's host only, ``remote_api_tokens``
        entries to their own hosts (a ``downloadUrl`` on another host gets neither by accident)."""
        # Never huggingface_hub's login: it is a Hugging Face credential, even on a shared host.
        return resolve_token(
            url, explicit=self._token, config=self._config, explicit_for=self.endpoint, cached_login=False
        )

    def download_headers(self, url: str | None = None) -> dict[str, str]:
        """The ``Authorization: Bearer`` header a downloader sends with a file's download URL."""
        return self._http.auth_headers(url or self.endpoint)

    # -- errors ----------------------------------------------------------------------------------

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        """The one place Civitai answers become ``ModelDepotError``s (classes from ``_http.status_error``).

        Civitai refuses a download by redirecting to its sign-in page with ``reason=download-auth``
        (needs a login) or ``reason=early-access``; those read as the 401 / 403 they stand for.
        """
        if response.is_success:
            return
        status = response.status_code
        url = redact_url(response.request.url)
        detail = error_detail(response)
        location = response.headers.get("Location", "")
        if "reason=download-auth" in location:
            status = 401
        elif "reason=early-access" in location:
            status = 403
        access = None
        if status == 401:
            if "Authorization" in response.request.headers:
                access = f"Civitai refused the token for {what} (check it is current)"
            else:
                access = f"Civitai {what} needs a logged-in account: {HOW_TO_GIVE_A_TOKEN}"
        elif status == 403:
            why = (
                f"is in early access{_deadline(response)}"
                if "early" in (detail + location).lower()
                else "is not allowed"
            )
            access = f"Civitai {what} {why} for this account ({HOW_TO_GIVE_A_TOKEN})"
        extra = f": {detail}" if detail else ""
        raise status_error(
            status,
            url,
            detail=detail,
            retry_after=response.headers.get("Retry-After"),
            access=access,
            not_found=f"Civitai {what} not found",
            other=f"Civitai answered {response.status_code} for {what}{extra}",
        )

    def _get(self, path: str, what: str) -> Any:
        url = f"{self.endpoint}/api/v1/{path}"
        response, data = self._http.get_json(url)
        self._raise_for_status(response, what)
        if not isinstance(data, dict):
            raise DownloadError(f"Civitai sent an unexpected answer for {what}", url=redact_url(url))
        return data

    # -- API -------------------------------------------------------------------------------------

    def get_model(self, model_id: int) -> CivitaiModel:
        data = self._get(f"models/{int(model_id)}", f"model {model_id}")
        summary = _summary(data)
        versions = [
            _version({**v, "modelId": v.get("modelId", summary.id)}, self.endpoint, summary)
            for v in data.get("modelVersions") or []
            if isinstance(v, dict) and "id" in v
        ]
        return CivitaiModel(**summary.model_dump(), versions=versions)

    def _with_model(self, data: dict[str, Any], with_model: bool) -> CivitaiVersion:
        model: CivitaiModelSummary | None = None
        if with_model and isinstance(data.get("modelId"), int):
            try:
                model = _summary(self._get(f"models/{data['modelId']}", f"model {data['modelId']}"))
            except RemoteNotFoundError:
                model = None  # a hidden model page: the version's short form still names it
        return _version(data, self.endpoint, model)

    def get_version(self, version_id: int, with_model: bool = True) -> CivitaiVersion:
        """A model version; ``with_model`` also fetches its model (tags, creator, description)."""
        data = self._get(f"model-versions/{int(version_id)}", f"model version {version_id}")
        return self._with_model(data, with_model)

    def get_version_by_hash(self, value: str, with_model: bool = True) -> CivitaiVersion:
        """The version owning a file with this hash (SHA256, AutoV2, AutoV3, BLAKE3...; any case)."""
        wanted = normalise_hash(value)
        data = self._get(f"model-versions/by-hash/{wanted}", f"model version with a file of hash {wanted}")
        return self._with_model(data, with_model)

    def resolve(self, source: CivitaiModelSource, with_model: bool = True) -> CivitaiVersion:
        """The version a source means: its version id, else the model's newest version."""
        if source.version_id is not None:
            return self.get_version(source.version_id, with_model)
        assert source.model_id is not None
        model = self.get_model(source.model_id)
        if not model.versions:
            raise RemoteNotFoundError(f"Civitai model {source.model_id} has no published version")
        summary = CivitaiModelSummary(**model.model_dump(exclude={"versions"}))
        # The model listing's versions lack nothing we use; refetching would only cost a request.
        return model.versions[0].model_copy(update={"model": summary})

    @staticmethod
    def choose_file(version: CivitaiVersion, file_name: str | None = None) -> CivitaiFile:
        """See the module function ``choose_file``."""
        return choose_file(version, file_name)

    @staticmethod
    def metadata_for_record(version: CivitaiVersion) -> dict[str, Any]:
        """See the module function ``metadata_for_record``."""
        return metadata_for_record(version)

    def check_access(self, target: CivitaiVersion | CivitaiFile, file_name: str | None = None) -> None:
        """Raise ``RemoteAccessError`` now if the download needs a login or is early access.

        Civitai shows version metadata to everyone and refuses only the download, so this asks the
        download route (without following its redirect to storage). ``target`` is a version (its
        chosen file is checked) or one file.
        """
        if isinstance(target, CivitaiVersion):
            file = choose_file(target, file_name)
            what = f"model version {target.id} ({file.name})"
        else:
            file, what = target, f"file {target.name!r}"
        response = self._http.request("GET", file.download_url, follow_redirects=False)
        try:
            redirect = response.status_code in REDIRECT_STATUSES
            if redirect and "reason=" not in response.headers.get("Location", ""):
                return
            self._raise_for_status(response, what)
        finally:
            response.close()


__all__ = [
    "HOW_TO_GIVE_A_TOKEN",
    "CivitaiClient",
    "CivitaiFile",
    "CivitaiModel",
    "CivitaiModelSummary",
    "CivitaiVersion",
    "choose_file",
    "display_name",
    "metadata_for_record",
    "normalise_hash",
    "plain_text",
    "version_from_api",
]
