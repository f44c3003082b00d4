"""One entry of a model reference: document 000's schema plus the AI Horde legacy fields.

Entries are validated one by one so that a bad entry is an error naming its key and field;
fields this module does not know are kept (``extra="allow"``) and written back unchanged.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modeldepot.errors import InvalidReferenceError

_HEX = re.compile(r"[0-9a-fA-F]+")
#: horde-model-reference's sentinel for "hash unknown": accepted without verifying.
UNKNOWN_HASH = "FIXME"
#: Config files named in ``files[]`` (``v1-inference.yaml``) ship with the package and are never
#: downloaded or validated, as in Nataili.
CONFIG_SUFFIXES = (".yaml", ".yml")


def _relative(value: str, what: str) -> str:
    """``value`` as a relative POSIX path inside the service folder (no ``..``, not absolute)."""
    text = value.replace("\\", "/")
    path = PurePosixPath(text)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", text) or ".." in path.parts:
        raise ValueError(f"{what} {value!r} must be a relative path inside the service folder")
    return "" if text in ("", ".") else path.as_posix()


def _digest(value: Any, length: int, name: str) -> str | None:
    if value is None or value == "" or value == UNKNOWN_HASH:
        return None
    if not isinstance(value, str) or len(value) != length or not _HEX.fullmatch(value):
        raise ValueError(f"not a {name} ({length} hex digits): {str(value)[:80]!r}")
    return value  # the case is kept as written; comparisons are case-insensitive


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FileRecord(_Record):
    """A file the model needs, relative to the service folder, with its expected digests."""

    path: str
    sha256sum: str | None = None
    md5sum: str | None = None
    file_type: str | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("path is empty")
        # A trailing "/" names a folder (a Hugging Face cache tree in the open_clip entries): kept.
        return _relative(v, "path") + ("/" if v.replace("\\", "/").endswith("/") else "")

    @property
    def is_folder(self) -> bool:
        return self.path.endswith("/")

    @field_validator("sha256sum", mode="before")
    @classmethod
    def _sha(cls, v: Any) -> str | None:
        return _digest(v, 64, "sha256")

    @field_validator("md5sum", mode="before")
    @classmethod
    def _md5(cls, v: Any) -> str | None:
        return _digest(v, 32, "md5")

    @property
    def is_config(self) -> bool:
        """A shipped config file (``.yaml``): never downloaded, never validated."""
        return self.path.lower().endswith(CONFIG_SUFFIXES)

    @property
    def expected(self) -> tuple[str, str] | None:
        """``(algorithm, lowercase hex)`` to check the file with: sha256 first, else md5."""
        if self.sha256sum:
            return "sha256", self.sha256sum.lower()
        if self.md5sum:
            return "md5", self.md5sum.lower()
        return None


class DownloadRecord(_Record):
    """How to get one file: from ``file_url``, or a Nataili extension (``file_content``, ``manual``)."""

    file_name: str
    file_path: str = ""
    file_url: str | None = None
    file_content: str | None = None
    manual: bool = False
    #: Nataili: make ``file_path/file_name`` a symbolic link to this path (relative to the service folder).
    symlink: str | None = None

    @field_validator("file_name")
    @classmethod
    def _name(cls, v: str) -> str:
        name = _relative(v, "file_name")
        if not name:
            raise ValueError("file_name is empty")
        return name

    @field_validator("file_path")
    @classmethod
    def _folder(cls, v: str) -> str:
        return _relative(v or "", "file_path")

    @field_validator("file_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError(f"file_url {v[:80]!r} is not an http(s) URL")
        return v

    @field_validator("symlink")
    @classmethod
    def _link(cls, v: str | None) -> str | None:
        return None if v is None else _relative(v, "symlink")

    @model_validator(mode="after")
    def _one_way(self) -> DownloadRecord:
        if self.file_url is None and self.file_content is None and self.symlink is None and not self.manual:
            raise ValueError("needs file_url, file_content, symlink or manual")
        return self

    @property
    def relpath(self) -> str:
        """Where the file goes, relative to the service folder."""
        return str(PurePosixPath(self.file_path) / self.file_name) if self.file_path else self.file_name


class EntryConfig(_Record):
    files: list[FileRecord] = Field(default_factory=list)
    download: list[DownloadRecord] = Field(default_factory=list)


class ReferenceEntry(_Record):
    """One model of a reference. ``available`` in the JSON is ignored: managers compute it."""

    name: str
    type: str
    config: EntryConfig = Field(default_factory=EntryConfig)
    available: bool | None = None
    description: str | None = None
    # AI Horde legacy fields (image model reference):
    baseline: str | None = None
    inpainting: bool | None = None
    version: str | None = None
    style: str | None = None
    nsfw: bool | None = None
    download_all: bool = False
    tags: list[str] | None = None
    trigger: list[str] | None = None
    homepage: str | None = None
    size_on_disk_bytes: int | None = Field(default=None, ge=0)
    requirements: dict[str, Any] | None = None
    showcases: list[str] | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @property
    def files(self) -> list[FileRecord]:
        """The files that make the model (config ``.yaml`` entries left out)."""
        return [f for f in self.config.files if not f.is_config]

    def file_for(self, download: DownloadRecord, index: int) -> FileRecord | None:
        """The ``files[]`` record a download fills: same path, else (Nataili) the same position."""
        for f in self.config.files:
            if f.path == download.relpath:
                return f
        if not download.file_path and index < len(self.config.files):
            candidate = self.config.files[index]
            if not candidate.is_config and PurePosixPath(candidate.path).name == download.file_name:
                return candidate
        return None

    def file_record(self, relpath: str) -> FileRecord | None:
        """The ``files[]`` record of ``relpath`` (None: a file the reference gives no digest for)."""
        return next((f for f in self.config.files if f.path == relpath), None)

    def dump(self) -> dict[str, Any]:
        """The entry as JSON-ready data, unknown fields included, ``available`` as computed by the caller."""
        return self.model_dump(mode="json", exclude_none=True)


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(entry)"


def parse_entry(key: str, data: Any, origin: str) -> ReferenceEntry:
    """Validate one entry; errors name the reference, the key and the first bad field."""
    if not isinstance(data, dict):
        raise InvalidReferenceError(
            f"reference {origin}: entry {key!r} is {type(data).__name__}, not an object", key=key, field=None
        )
    try:
        entry = ReferenceEntry.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _field_path(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise InvalidReferenceError(
            f"reference {origin}: entry {key!r}: field {where!r}: {msg}", key=key, field=where
        ) from None
    if not entry.files and not entry.config.download:
        raise InvalidReferenceError(
            f"reference {origin}: entry {key!r}: field 'config': lists no files", key=key, field="config"
        )
    return entry


__all__ = ["CONFIG_SUFFIXES", "DownloadRecord", "EntryConfig", "FileRecord", "ReferenceEntry", "parse_entry"]
