"""Model sources: what a user can name, parsed into typed values with a canonical string form.

Accepted forms (``parse_source``):

- an existing local file or folder (``~`` expanded; an existing path always wins), or ``file://PATH``;
- ``REPO[@REVISION][:VARIANT][:SUBPATH]`` for Hugging Face, e.g. ``org/name``, ``org/name:fp16``,
  ``org/name:fp16:vae``, ``org/name:onnx:vae``, ``org/name::vae``, ``org/name::path/file.safetensors``;
  a SUBPATH ending in a weight extension names one file, anything else a subfolder (several joined
  with ``+``); a leading ``/`` (``org/name::/checkpoints/x.safetensors``) means the same path from the
  repo root. Without a VARIANT the fp16 files are preferred when the repo has them (see ``plan``);
- ``https://huggingface.co/org/name`` (or ``hf.co``), ``.../tree/REV[/SUB]``, ``.../resolve/REV/PATH``,
  ``.../blob/REV/PATH``; the configured ``hf_endpoint`` host is treated the same way;
- Civitai: ``https://civitai.com/models/ID[/slug][?modelVersionId=V]``, ``.../api/download/models/V``,
  ``civitai.com/api/v1/model-versions/V``, ``.../api/v1/models/ID``, ``civitai:V``, ``civitai:model/ID``
  and AIR URNs ``urn:air:BASE:TYPE:civitai:ID@V``; the configured ``civitai_endpoint`` host likewise;
- any other ``http(s)://`` URL: a plain file download.

``str(source)`` is canonical: two spellings of the same thing give the same string, and
``parse_source(str(s))`` gives ``s`` back (without the token). Tokens never appear in it: a plain
URL's secret query parameters (``?token=``, ``X-Amz-Signature=``...) are left out of ``str()``, so
what is stored or shown cannot leak them; the ``url`` field keeps them for the download itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from modeldepot._fs import safe_relpath
from modeldepot.download._redact import redact_url, strip_secrets
from modeldepot.errors import InvalidSourceError, UnsafePathError, UnsafeSourcePathError
from modeldepot.taxonomy import ANY_WEIGHT_SUFFIXES, ModelRepoVariant, ModelSourceType, has_suffix

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig


def _names_weights(text: str) -> bool:
    """Whether a SUBPATH (or a bare source) ends like a weights file, so names one file, not a folder."""
    return has_suffix(text, ANY_WEIGHT_SUFFIXES)


HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
CIVITAI_HOSTS = frozenset({"civitai.com", "www.civitai.com"})

ACCEPTED_FORMS = (
    "a local file or folder path",
    "an http(s) URL of a model file",
    "a Hugging Face repo id: org/name, org/name:fp16, org/name:fp16:vae, org/name:onnx:vae, org/name::vae, "
    "org/name::path/file.safetensors (or ::/path/from/the/repo/root), org/name@revision",
    "a Hugging Face URL: https://huggingface.co/org/name[/tree/REV/SUB | /resolve/REV/PATH | /blob/REV/PATH]",
    "a Civitai URL: https://civitai.com/models/ID[?modelVersionId=V], https://civitai.com/api/download/models/V",
    "civitai:VERSION_ID or civitai:model/MODEL_ID",
)


class _SourceBase(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __str__(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def token_value(self) -> str | None:
        """The plain token, for building request headers only."""
        token: SecretStr | None = getattr(self, "access_token", None)
        return token.get_secret_value() if token is not None else None


class LocalModelSource(_SourceBase):
    """A file or folder on this machine."""

    path: Path
    inplace: bool = False
    type: Literal[ModelSourceType.Path] = ModelSourceType.Path

    def __str__(self) -> str:
        return Path(self.path).as_posix()


class URLModelSource(_SourceBase):
    """A plain file download. ``url`` is the real URL, with any query token: fetch it, never show it."""

    url: str
    access_token: SecretStr | None = Field(default=None, exclude=True, repr=False)
    type: Literal[ModelSourceType.Url] = ModelSourceType.Url

    def __str__(self) -> str:
        # This string is what jobs, records, events and the API keep and show.
        return strip_secrets(self.url)

    def __repr__(self) -> str:
        return f"URLModelSource(url={redact_url(self.url)!r})"


class HFModelSource(_SourceBase):
    """A Hugging Face repo, optionally narrowed to a variant, a subfolder or a single file.

    ``variant=None`` is the seed's default (fp16): the plan takes the repo's fp16 files when it has
    them, else the unqualified ones (fp32 instead when the settings ask for ``precision: float32``);
    ``ModelRepoVariant.Default`` always means the unqualified files. ``subfolder`` may be a ``Path``.
    """

    repo_id: str
    variant: ModelRepoVariant | None = None
    subfolder: str | None = None
    file: str | None = None
    revision: str | None = None
    access_token: SecretStr | None = Field(default=None, exclude=True, repr=False)
    type: Literal[ModelSourceType.HFRepoID] = ModelSourceType.HFRepoID

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # Sources also arrive as JSON (API, job files), not only through parse_source.
        if not is_valid_repo_id(self.repo_id):
            raise InvalidSourceError(f"{self.repo_id!r} is not a valid Hugging Face repo id (expected org/name)")
        for sub in [*(self.subfolder or "").split("+"), self.file or ""]:
            if sub:
                _check_subpath(sub, f"subfolder or file {sub!r} of {self.repo_id}")

    @field_validator("subfolder", "file", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        # The seed documents ``subfolder`` as a Path; it is kept as POSIX text (a repo path).
        if isinstance(value, os.PathLike):
            text = Path(value).as_posix()
            return None if text == "." else text
        return value

    @property
    def subpath(self) -> str | None:
        return self.file or self.subfolder

    def __str__(self) -> str:
        out = self.repo_id
        if self.revision:
            out += f"@{self.revision}"
        sub = self.subpath
        if self.variant is not None or sub:
            out += f":{self.variant.value if self.variant is not None else ''}"
        if sub:
            out += f":{sub}"
        return out


class CivitaiModelSource(_SourceBase):
    """A Civitai model version (or a model, meaning its newest version), optionally one named file."""

    version_id: int | None = None
    model_id: int | None = None
    file_name: str | None = None
    access_token: SecretStr | None = Field(default=None, exclude=True, repr=False)
    type: Literal[ModelSourceType.Civitai] = ModelSourceType.Civitai

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # Checked here, not in a validator, so callers get our error type rather than pydantic's.
        if self.version_id is None and self.model_id is None:
            raise InvalidSourceError("a Civitai source needs a version id or a model id")
        if self.file_name is not None:
            _check_subpath(self.file_name, f"civitai file name {self.file_name!r}")

    def __str__(self) -> str:
        # A version id is globally unique, so the model id adds nothing to identity.
        out = f"civitai:{self.version_id}" if self.version_id is not None else f"civitai:model/{self.model_id}"
        if self.file_name:
            out += "?" + urlencode({"file": self.file_name})
        return out


ModelSource = Annotated[
    Union[LocalModelSource, URLModelSource, HFModelSource, CivitaiModelSource],  # noqa: UP007
    Field(discriminator="type"),
]
AnyModelSource = LocalModelSource | URLModelSource | HFModelSource | CivitaiModelSource


# -- parsing ------------------------------------------------------------------------------------

_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REPO_ID_RE = re.compile(f"{_REPO_PART}/{_REPO_PART}")
_HF_ID_RE = re.compile(rf"^(?P<repo>{_REPO_PART}/{_REPO_PART})(?:@(?P<rev>[^:@\s]+))?(?::(?P<rest>.*))?$")
_CIVITAI_SHORT_RE = re.compile(
    r"^civitai:(?:(?P<v>\d+)|model/(?P<m>\d+)|(?P<m2>\d+)@(?P<v2>\d+))(?:\?(?P<q>.*))?$", re.I
)
_AIR_RE = re.compile(r"^urn:air:[^:]+:[^:]+:civitai:(?P<m>\d+)(?:@(?P<v>\d+))?$", re.I)


def invalid_source(source: str, why: str | None = None) -> InvalidSourceError:
    lines = "\n".join(f"  - {form}" for form in ACCEPTED_FORMS)
    reason = f": {why}" if why else " is not a model source I recognise"
    return InvalidSourceError(f"{source!r}{reason}. Accepted forms:\n{lines}")


def _check_subpath(sub: str, what: str) -> str:
    try:
        safe_relpath(sub)
    except UnsafePathError as exc:
        raise UnsafeSourcePathError(f"{what} is unsafe: it must be a relative path inside the repo", sub) from exc
    return sub


def _repo_id_ok(repo_id: str) -> bool:
    return ".." not in repo_id and "--" not in repo_id


def is_valid_repo_id(repo_id: str) -> bool:
    """``org/name`` with the characters the Hub allows, and no ``..`` / ``--``."""
    return bool(_REPO_ID_RE.fullmatch(repo_id)) and _repo_id_ok(repo_id)


def _hf_from_parts(
    source: str,
    repo_id: str,
    revision: str | None,
    variant: str | None,
    sub: str | None,
    *,
    force_file: bool = False,
    token: str | None = None,
) -> HFModelSource:
    if not _repo_id_ok(repo_id):
        raise invalid_source(source, f"{repo_id!r} is not a valid Hugging Face repo id")
    var: ModelRepoVariant | None = None
    if variant:
        try:
            var = ModelRepoVariant(variant.lower())
        except ValueError:
            known = ", ".join(v.value for v in ModelRepoVariant)
            raise invalid_source(
                source, f"unknown variant {variant!r} (known: {known}); for a subfolder write {repo_id}::{variant}"
            ) from None
    subfolder = file = None
    if sub:
        # A leading "/" means "from the repo root" (the seed's ``repo::/checkpoints/x.safetensors``);
        # it is the same place as the relative spelling, so the canonical string drops it.
        sub = "+".join(part.removeprefix("/") for part in sub.rstrip("/").split("+"))
        for part in sub.split("+"):
            _check_subpath(part, f"subfolder or file {part!r} of {repo_id}")
        if force_file or (("+" not in sub) and _names_weights(sub)):
            file = sub
        else:
            subfolder = sub
    return HFModelSource(
        repo_id=repo_id,
        revision=revision or None,
        variant=var,
        subfolder=subfolder,
        file=file,
        access_token=SecretStr(token) if token else None,
    )


def _parse_hf_id(source: str) -> HFModelSource | None:
    m = _HF_ID_RE.match(source)
    if m is None:
        return None
    rest = m.group("rest")
    variant = sub = None
    if rest is not None:
        variant, _, sub = rest.partition(":")
        if ":" in sub:
            raise invalid_source(source, "too many ':' (write org/name:VARIANT:SUBFOLDER)")
    return _hf_from_parts(source, m.group("repo"), m.group("rev"), variant, sub or None)


def _endpoint(url: str | None) -> tuple[str, str] | None:
    """(netloc, path prefix) of a configured endpoint."""
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.netloc.lower(), parts.path.rstrip("/")


def _strip_prefix(path: str, prefix: str) -> str | None:
    if not prefix:
        return path
    if path == prefix or path.startswith(prefix + "/"):
        return path[len(prefix) :]
    return None


def _civitai_from_path(source: str, path: str, query: dict[str, str]) -> CivitaiModelSource | None:
    seg = [s for s in path.split("/") if s]
    token = query.get("token")
    version: int | None = None
    model: int | None = None
    if len(seg) >= 2 and seg[0] == "models" and seg[1].isdigit():
        model = int(seg[1])
        mv = query.get("modelVersionId", "")
        if mv:
            if not mv.isdigit():
                raise invalid_source(source, f"modelVersionId {mv!r} is not a number")
            version = int(mv)
    elif (
        len(seg) == 4
        and seg[3].isdigit()
        and seg[:3] in (["api", "download", "models"], ["api", "v1", "model-versions"])
    ):
        version = int(seg[3])
    elif len(seg) == 4 and seg[:3] == ["api", "v1", "models"] and seg[3].isdigit():
        model = int(seg[3])
    else:
        return None
    return CivitaiModelSource(
        version_id=version,
        model_id=model,
        file_name=query.get("file") or None,
        access_token=SecretStr(token) if token else None,
    )


def _hf_from_path(source: str, path: str) -> HFModelSource | None:
    seg = [unquote(s) for s in path.split("/") if s]
    if len(seg) < 2 or seg[0] in ("datasets", "spaces", "api", "docs", "models", "settings"):
        return None
    repo_id = f"{seg[0]}/{seg[1]}"
    if not _REPO_ID_RE.fullmatch(repo_id):
        return None
    if len(seg) == 2:
        # On a shared test host (fakehub also serves plain files) "/files/x.bin" is a file, not a repo.
        return None if _names_weights(seg[1]) else _hf_from_parts(source, repo_id, None, None, None)
    kind = seg[2]
    if kind in ("tree", "resolve", "blob") and len(seg) >= 4:
        rev = seg[3]
        sub = "/".join(seg[4:]) or None
        if kind == "tree":
            if sub is not None:
                _check_subpath(sub, f"subfolder {sub!r} of {repo_id}")
            return HFModelSource(repo_id=repo_id, revision=rev, subfolder=sub)
        if sub is None:
            raise invalid_source(source, "a resolve/blob URL must name a file")
        return _hf_from_parts(source, repo_id, rev, None, sub, force_file=True)
    return None


def _parse_url(source: str, config: DepotConfig | None) -> AnyModelSource:
    parts = urlsplit(source)
    if not parts.hostname:
        raise invalid_source(source, "the URL has no host")
    if parts.username or parts.password:
        raise invalid_source(source, "credentials inside URLs are not supported (they would be stored); pass a token")
    netloc = parts.netloc.lower()
    host = parts.hostname.lower()
    # A raw path keeps %2F in revisions like refs%2Fpr%2F1 until the segments are split.
    raw_path = parts.path
    query = dict(parse_qsl(parts.query, keep_blank_values=True))

    civ_prefixes: list[str] = []
    hf_prefixes: list[str] = []
    if host in CIVITAI_HOSTS:
        civ_prefixes.append("")
    if host in HF_HOSTS:
        hf_prefixes.append("")
    if config is not None:
        civ = _endpoint(config.civitai_endpoint)
        hf = _endpoint(config.hf_endpoint)
        if civ and civ[0] == netloc:
            civ_prefixes.append(civ[1])
        if hf and hf[0] == netloc:
            hf_prefixes.append(hf[1])

    # Civitai first: its paths are numeric and cannot be HF repo ids on a shared test host.
    for prefix in civ_prefixes:
        rest = _strip_prefix(unquote(raw_path), prefix)
        if rest is not None:
            civ_src = _civitai_from_path(source, rest, query)
            if civ_src is not None:
                return civ_src
    for prefix in hf_prefixes:
        rest = _strip_prefix(raw_path, prefix)
        if rest is not None:
            hf_src = _hf_from_path(source, rest)
            if hf_src is not None:
                return hf_src
    if host in CIVITAI_HOSTS:
        raise invalid_source(source, "this Civitai URL names no model or model version")
    if host in HF_HOSTS:
        raise invalid_source(source, "this Hugging Face URL names no model repo or file")
    if parts.scheme not in ("http", "https"):
        raise invalid_source(source, f"URL scheme {parts.scheme!r} is not supported (use http or https)")
    clean = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))
    return URLModelSource(url=clean)


def _absolute(path: Path) -> Path:
    # normpath, not resolve(): a symlinked model folder keeps the name the user gave.
    return Path(os.path.normpath(path.absolute()))


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~", ".\\", "\\"))
        or (len(source) > 2 and source[1] == ":" and source[2] in "/\\")
        or (_names_weights(source) and ":" not in source)
    )


def parse_source(
    source: str | os.PathLike[str],
    config: DepotConfig | None = None,
    access_token: str | None = None,
) -> AnyModelSource:
    """Turn a user's source string into a typed source.

    Args:
        source: a path, URL, Hugging Face repo id or Civitai reference (see the module docstring).
        config: settings whose ``hf_endpoint`` / ``civitai_endpoint`` hosts are also recognised.
        access_token: a token to attach to remote sources (kept secret, never in ``str()``).

    Raises:
        InvalidSourceError: the string matches no accepted form; the message lists them.
        UnsafeSourcePathError: a subfolder or file name escapes the repo (``..``, absolute).
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    raw = source
    source = source.strip()
    if not source:
        raise invalid_source(raw, "it is empty")
    parsed = _parse_unchecked(source, config)
    if access_token and not isinstance(parsed, LocalModelSource):
        parsed.access_token = SecretStr(access_token)
    return parsed


def _parse_unchecked(source: str, config: DepotConfig | None) -> AnyModelSource:
    if source.lower().startswith("file://"):
        local = Path(unquote(urlsplit(source).path))
        if not local.exists():
            raise invalid_source(source, f"no such file or folder {local}")
        return LocalModelSource(path=_absolute(local))

    if "://" not in source:
        expanded = Path(source).expanduser()
        try:
            exists = expanded.exists()
        except OSError:  # e.g. a name too long for the file system: not a path, try the other forms
            exists = False
        if exists:
            return LocalModelSource(path=_absolute(expanded))

    m = _CIVITAI_SHORT_RE.match(source)
    if m:
        query = dict(parse_qsl(m.group("q") or "", keep_blank_values=True))
        version = m.group("v") or m.group("v2")
        model = m.group("m") or m.group("m2")
        token = query.get("token")
        return CivitaiModelSource(
            version_id=int(version) if version else None,
            model_id=int(model) if model else None,
            file_name=query.get("file") or None,
            access_token=SecretStr(token) if token else None,
        )
    if source.lower().startswith("civitai:"):
        raise invalid_source(source, "write civitai:VERSION_ID or civitai:model/MODEL_ID")
    m = _AIR_RE.match(source)
    if m:
        v = m.group("v")
        return CivitaiModelSource(version_id=int(v) if v else None, model_id=int(m.group("m")))

    lowered = source.lower()
    if lowered.startswith(("http://", "https://")) or "://" in source:
        return _parse_url(source, config)
    # Scheme-less host forms people paste: civitai.com/models/1, huggingface.co/org/name.
    host = lowered.split("/", 1)[0]
    if host in CIVITAI_HOSTS or host in HF_HOSTS:
        return _parse_url(f"https://{source}", config)

    if _looks_like_path(source):
        raise invalid_source(source, f"no such file or folder {Path(source).expanduser()}")
    hf = _parse_hf_id(source.rstrip("/") if source.count(":") == 0 else source)
    if hf is not None:
        return hf
    raise invalid_source(source)


__all__ = [
    "ACCEPTED_FORMS",
    "AnyModelSource",
    "CivitaiModelSource",
    "HFModelSource",
    "LocalModelSource",
    "ModelSource",
    "URLModelSource",
    "UnsafeSourcePathError",
    "is_valid_repo_id",
    "parse_source",
]
