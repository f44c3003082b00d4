"""A Hugging Face Hub client for what installs need: repo info, file listings, resolve URLs.

It speaks the Hub's HTTP API directly (``/api/models/...``) with httpx, so the endpoint can be the
real hub, a mirror, or ``modeldepot.testing.fakehub``. Errors are translated in ``_raise_for_status``
only (service words here, the status -> class table in ``modeldepot._http``). Tokens are looked up
per request by ``modeldepot._tokens.resolve_token`` (explicit > ``remote_api_tokens`` >
huggingface_hub's cached login) and never appear in logs, reprs or messages.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from modeldepot._fs import safe_relpath
from modeldepot._http import REDIRECT_STATUSES, redact_url, status_error
from modeldepot._tokens import cached_login_token, resolve_token
from modeldepot.download._policy import ConnectPolicy
from modeldepot.errors import DownloadError, InvalidSourceError, RemoteNotFoundError
from modeldepot.remote._http import RemoteHTTP, error_detail
from modeldepot.remote.sources import is_valid_repo_id
from modeldepot.taxonomy import ModelRepoVariant

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig
    from modeldepot.remote.hf_select import Selection

HOW_TO_GIVE_A_TOKEN = "pass --token, set remote_api_tokens in modeldepot.yaml, or log in with `huggingface-cli login`"


class HFFile(BaseModel):
    """One file of a repo listing."""

    model_config = ConfigDict(frozen=True)

    path: str
    size: int | None = None
    sha256: str | None = Field(default=None, description="LFS sha256 (lowercase hex); None for small git files")
    blob_id: str | None = Field(default=None, description="Git object id")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def folder(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


class HFRepoInfo(BaseModel):
    """What ``GET /api/models/{repo}`` says about one revision of a repo."""

    model_config = ConfigDict(frozen=True)

    repo_id: str
    revision: str | None = None
    sha: str | None = None
    siblings: list[HFFile] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    card_data: dict[str, Any] = Field(default_factory=dict)
    author: str | None = None
    license: str | None = None
    last_modified: datetime | None = None
    gated: bool | str = False
    private: bool = False
    library_name: str | None = None
    pipeline_tag: str | None = None
    #: The hub this came from (None when read back from a stored answer).
    endpoint: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def is_gated(self) -> bool:
        return bool(self.gated)

    def raw_json(self) -> str:
        return json.dumps(self.raw, sort_keys=True, default=str)


def _license(card: dict[str, Any], tags: list[str]) -> str | None:
    lic = card.get("license")
    if isinstance(lic, list):
        lic = lic[0] if lic else None
    if isinstance(lic, str) and lic:
        if lic == "other" and isinstance(card.get("license_name"), str):
            return str(card["license_name"])
        return lic
    for tag in tags:
        if tag.startswith("license:"):
            return tag.removeprefix("license:")
    return None


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time from a remote's JSON (``...Z`` included); None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _file_from_sibling(entry: dict[str, Any]) -> HFFile:
    lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
    sha = (lfs or {}).get("sha256") or (lfs or {}).get("oid")
    size = entry.get("size", (lfs or {}).get("size"))
    return HFFile(
        path=str(entry.get("rfilename") or entry.get("path")),
        size=int(size) if isinstance(size, int) else None,
        sha256=str(sha).lower() if sha else None,
        blob_id=entry.get("blobId") or entry.get("oid"),
    )


def _check_repo_id(repo_id: str) -> None:
    if not is_valid_repo_id(repo_id):
        raise InvalidSourceError(f"{repo_id!r} is not a valid Hugging Face repo id (expected org/name)")


def resolve_url(endpoint: str, repo_id: str, revision: str | None, path: str) -> str:
    """The download URL of a repo file on ``endpoint`` (``{endpoint}/{repo}/resolve/{rev}/{path}``)."""
    _check_repo_id(repo_id)
    safe_relpath(path)
    rev = quote(revision or "main", safe="")
    return f"{endpoint.rstrip('/')}/{repo_id}/resolve/{rev}/{quote(path)}"


def repo_info_from_api(
    data: dict[str, Any], repo_id: str | None = None, revision: str | None = None, *, endpoint: str | None = None
) -> HFRepoInfo:
    """An ``HFRepoInfo`` from the Hub's ``/api/models/{repo}`` answer (live, or as stored in a record)."""
    repo = str(data.get("id") or data.get("modelId") or repo_id or "")
    card = data.get("cardData") if isinstance(data.get("cardData"), dict) else {}
    tags = [str(t) for t in data.get("tags") or []]
    siblings = [_file_from_sibling(s) for s in data.get("siblings") or [] if isinstance(s, dict)]
    return HFRepoInfo(
        repo_id=repo,
        revision=revision,
        sha=data.get("sha"),
        siblings=siblings,
        tags=tags,
        card_data=card or {},
        author=data.get("author") or (repo.split("/")[0] if "/" in repo else None),
        license=_license(card or {}, tags),
        last_modified=parse_time(data.get("lastModified")),
        gated=data.get("gated") or False,
        private=bool(data.get("private")),
        library_name=data.get("library_name"),
        pipeline_tag=data.get("pipeline_tag"),
        endpoint=endpoint.rstrip("/") if endpoint else None,
        raw=data,
    )


def resolve_hf_token(url: str, token: str | None = None, config: DepotConfig | None = None) -> str | None:
    """explicit > ``config.token_for(url)`` > huggingface_hub's cached login (for the hub's own host only).

    A thin name for :func:`modeldepot._tokens.resolve_token`, kept because it is public.
    """
    return resolve_token(url, explicit=token, config=config)


class HuggingFaceClient:
    """Metadata client for a Hugging Face Hub endpoint.

    Args:
        endpoint: e.g. ``https://huggingface.co`` or a fakehub URL.
        token: an explicit token; else ``config.token_for(url)``; else the cached login
            (disable that with ``use_cached_login=False``).
    """

    def __init__(
        self,
        endpoint: str = "https://huggingface.co",
        token: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        *,
        config: DepotConfig | None = None,
        use_cached_login: bool = True,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        policy: ConnectPolicy | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._config = config
        self._use_cached_login = use_cached_login
        if policy is None:
            # The endpoint itself is chosen by the user, so it is trusted even on a LAN address.
            policy = (
                ConnectPolicy.from_config(config).trusting(self.endpoint) if config else ConnectPolicy.of([endpoint])
            )
        self._http = RemoteHTTP("Hugging Face", self.endpoint, self.token_for, timeout, retries, transport, policy)

    @classmethod
    def from_config(cls, config: DepotConfig, token: str | None = None, **kwargs: Any) -> HuggingFaceClient:
        return cls(config.hf_endpoint, token, config=config, **kwargs)

    def __repr__(self) -> str:
        return f"HuggingFaceClient(endpoint={self.endpoint!r}, token={'***' if self._token else None})"

    def __enter__(self) -> HuggingFaceClient:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def token_for(self, url: str) -> str | None:
        """The token for ``url``: the explicit one or the cached login go to the endpoint's host only;
        ``remote_api_tokens`` entries to their own hosts."""
        return resolve_token(
            url,
            explicit=self._token,
            config=self._config,
            explicit_for=self.endpoint,
            hf_endpoint=self.endpoint,
            cached_login=self._use_cached_login,
        )

    def download_headers(self, url: str | None = None) -> dict[str, str]:
        """Headers a downloader should send for this repo's files (the bearer token, if any)."""
        return self._http.auth_headers(url or self.endpoint)

    # -- URLs ------------------------------------------------------------------------------------

    def _api(self, repo_id: str, *rest: str) -> str:
        _check_repo_id(repo_id)
        return "/".join([f"{self.endpoint}/api/models/{repo_id}", *rest])

    def resolve_url(self, repo_id: str, revision: str | None, path: str) -> str:
        return resolve_url(self.endpoint, repo_id, revision, path)

    # -- errors ----------------------------------------------------------------------------------

    def _raise_for_status(
        self, response: httpx.Response, repo_id: str, revision: str | None = None, path: str | None = None
    ) -> None:
        """The one place Hugging Face answers become ``ModelDepotError``s.

        The Hub's ``X-Error-Code`` is more precise than the status, so it is read first; the rest
        goes through the shared status table with Hugging Face's words.
        """
        if response.is_success:
            return
        status = response.status_code
        code = response.headers.get("X-Error-Code", "")
        url = redact_url(response.request.url)
        detail = error_detail(response)
        has_token = "Authorization" in response.request.headers
        if code == "RevisionNotFound":
            raise RemoteNotFoundError(f"Hugging Face repo {repo_id!r} has no revision {revision!r}", url=url)
        if code == "EntryNotFound":
            raise RemoteNotFoundError(
                f"Hugging Face repo {repo_id!r} has no file {path!r} at revision {revision or 'main'!r}", url=url
            )
        # The Hub answers 401 for a repo that is missing or private to this caller: its code decides.
        as_status = {"RepoNotFound": 404, "GatedRepo": 403}.get(code, status)
        if has_token:
            why = "the token given is not allowed to read it (accept the license on its page with that account)"
        else:
            why = f"it is gated or private and needs a token: {HOW_TO_GIVE_A_TOKEN}"
        hint = "check the spelling; private repos need a token" + ("" if has_token else f": {HOW_TO_GIVE_A_TOKEN}")
        extra = f": {detail}" if detail else ""
        raise status_error(
            as_status,
            url,
            detail=detail,
            retry_after=response.headers.get("Retry-After"),
            access=f"cannot access Hugging Face repo {repo_id!r}: {why}",
            not_found=f"Hugging Face repo {repo_id!r} not found ({hint})",
            other=f"Hugging Face answered {status} for repo {repo_id!r}{extra}",
        )

    def _get_json(
        self,
        url: str,
        repo_id: str,
        revision: str | None = None,
        path: str | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[httpx.Response, Any]:
        response, data = self._http.get_json(url, params)
        self._raise_for_status(response, repo_id, revision, path)
        return response, data

    # -- API -------------------------------------------------------------------------------------

    def model_info(self, repo_id: str, revision: str | None = None) -> HFRepoInfo:
        """Repo metadata with file sizes and LFS sha256 (``?blobs=true``)."""
        url = self._api(repo_id, "revision", quote(revision, safe="")) if revision else self._api(repo_id)
        _, data = self._get_json(url, repo_id, revision, params={"blobs": "true"})
        if not isinstance(data, dict):
            raise DownloadError(f"Hugging Face sent an unexpected answer for repo {repo_id!r}", url=redact_url(url))
        return repo_info_from_api(data, repo_id, revision, endpoint=self.endpoint)

    def list_files(self, repo_id: str, revision: str | None = None, path: str | None = None) -> list[HFFile]:
        """Every file of a revision (recursive tree listing, following ``Link: rel="next"`` pages)."""
        rev = revision or "main"
        parts = ["tree", quote(rev, safe="")]
        if path:
            safe_relpath(path)
            parts.append(quote(path.strip("/")))
        url: str | None = self._api(repo_id, *parts)
        params: dict[str, str] | None = {"recursive": "true", "expand": "false"}
        files: list[HFFile] = []
        pages = 0
        while url is not None:
            response, data = self._get_json(url, repo_id, rev, path, params)
            if not isinstance(data, list):
                what = f"Hugging Face sent an unexpected tree listing for {repo_id!r}"
                raise DownloadError(what, url=redact_url(url))
            files.extend(_file_from_sibling(e) for e in data if isinstance(e, dict) and e.get("type") == "file")
            next_link = response.links.get("next", {}).get("url")
            url, params = (str(response.url.join(next_link)), None) if next_link else (None, None)
            pages += 1
            if pages > 10_000:  # a server that loops its cursor must not hang an install
                raise DownloadError(f"Hugging Face tree listing of {repo_id!r} does not end", url=self.endpoint)
        return files

    def branch_exists(self, repo_id: str, revision: str) -> bool:
        """True if ``revision`` names a branch, tag or commit; raises if the repo itself is missing."""
        url = self._api(repo_id, "revision", quote(revision, safe=""))
        response = self._http.request("GET", url)
        if response.is_success:
            return True
        if response.status_code == 404 and response.headers.get("X-Error-Code") == "RevisionNotFound":
            return False
        self._raise_for_status(response, repo_id)
        return False  # pragma: no cover - _raise_for_status always raises here

    def revision_for_variant(self, repo_id: str, variant: ModelRepoVariant | None) -> str | None:
        """The variant's branch (``fp16``) when the repo has one, else None (the default branch)."""
        if variant is None or variant == ModelRepoVariant.Default:
            return None
        return variant.value if self.branch_exists(repo_id, variant.value) else None

    def fetch_json(self, repo_id: str, revision: str | None, path: str) -> Any:
        """A small JSON file of the repo (``model_index.json``), read through ``resolve``."""
        url = self.resolve_url(repo_id, revision, path)
        response = self._http.request("GET", url)
        self._raise_for_status(response, repo_id, revision, path)
        try:
            return response.json()
        except ValueError as exc:
            what = f"{path} in Hugging Face repo {repo_id!r} is not valid JSON"
            raise DownloadError(what, url=redact_url(url)) from exc

    def check_file_access(self, repo_id: str, revision: str | None, path: str) -> None:
        """Raise ``RemoteAccessError`` / ``RemoteNotFoundError`` now if a file cannot be downloaded.

        Gated repos show their metadata to everyone and refuse only the files, so call this before
        queueing downloads to fail early with a message that says how to give a token.
        """
        url = self.resolve_url(repo_id, revision, path)
        response = self._http.request("HEAD", url, follow_redirects=False)
        if response.status_code in REDIRECT_STATUSES:
            return
        self._raise_for_status(response, repo_id, revision, path)

    def _listing(
        self, repo_id: str, revision: str | None, subfolder: str | None
    ) -> tuple[HFRepoInfo, list[HFFile], dict[str, Any] | None]:
        """A revision's info, its files with sizes, and its parsed ``model_index.json`` (whole repos only)."""
        info = self.model_info(repo_id, revision)
        files = info.siblings if all(f.size is not None for f in info.siblings) else self.list_files(repo_id, revision)
        model_index = None
        if subfolder is None and any(f.path == "model_index.json" for f in files):
            data = self.fetch_json(repo_id, info.sha or revision, "model_index.json")
            model_index = data if isinstance(data, dict) else None
        return info, files, model_index

    def select_files(
        self,
        repo_id: str,
        variant: ModelRepoVariant | None = None,
        subfolder: str | None = None,
        revision: str | None = None,
    ) -> tuple[HFRepoInfo, Selection]:
        """List a revision and choose the files a model needs (fetching ``model_index.json`` if present).

        When no revision is given and a variant branch (``fp16``) exists, that branch is listed.
        ``variant=None`` (none asked for) prefers fp16: the fp16-labelled files of the revision, else
        an ``fp16`` branch, else the unlabelled files; ``ModelRepoVariant.Default`` always means the
        unlabelled files. ``Selection.variant_reason`` says which was chosen.
        """
        from modeldepot.remote.hf_select import select_hf_files, select_preferred

        if variant is None:
            info, files, model_index = self._listing(repo_id, revision, subfolder)
            selection = select_preferred(files, subfolder, model_index=model_index)
            single = bool(subfolder) and len(selection.files) == 1 and selection.files[0].path == subfolder
            if selection.variant_used == ModelRepoVariant.FP16 or single or revision is not None:
                return info, selection
            if not self.branch_exists(repo_id, ModelRepoVariant.FP16.value):
                return info, selection
            chosen, reason = ModelRepoVariant.FP16, "variant fp16 (default: the repo has an 'fp16' branch)"
            revision, on_branch = ModelRepoVariant.FP16.value, True
        else:
            chosen, reason, on_branch = variant, None, False
            if revision is None:
                revision = self.revision_for_variant(repo_id, chosen)
                on_branch = revision is not None
        info, files, model_index = self._listing(repo_id, revision, subfolder)
        # A variant branch (the old diffusers convention) holds that variant under the plain names.
        selection = select_hf_files(files, chosen, subfolder, model_index=model_index, variant_branch=on_branch)
        notes = [f"using the {revision!r} branch", *selection.notes] if on_branch else selection.notes
        selection = dataclasses.replace(selection, notes=notes, variant_reason=reason or selection.variant_reason)
        return info, selection


def hf_metadata_for_record(info: HFRepoInfo) -> dict[str, Any]:
    """Record fields from repo metadata; empty values are left out so they never overwrite others."""
    out: dict[str, Any] = {
        "author": info.author,
        "license": info.license,
        "tags": [t for t in info.tags if not t.startswith(("license:", "region:", "endpoints_compatible"))],
        "source_api_response": info.raw_json(),
    }
    desc = info.card_data.get("description") if isinstance(info.card_data.get("description"), str) else None
    if desc:
        out["description"] = desc
    return {k: v for k, v in out.items() if v not in (None, "", [])}


__all__ = [
    "HOW_TO_GIVE_A_TOKEN",
    "HFFile",
    "HFRepoInfo",
    "HuggingFaceClient",
    "cached_login_token",
    "hf_metadata_for_record",
    "repo_info_from_api",
    "resolve_hf_token",
    "resolve_url",
]
