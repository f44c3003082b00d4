"""Install jobs: what the user asked for, where it is, and how it ended."""

from __future__ import annotations

import threading
import traceback as _traceback
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

from modeldepot.configs import ModelConfigBase
from modeldepot.download import strip_secrets


class InstallStatus(str, Enum):
    WAITING = "waiting"  # queued, nothing fetched yet
    DOWNLOADING = "downloading"
    DOWNLOADS_DONE = "downloads_done"  # files fetched, waiting for the serial install worker
    PAUSED = "paused"
    RUNNING = "running"  # identifying, storing, registering
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"


TERMINAL = frozenset({InstallStatus.COMPLETED, InstallStatus.ERROR, InstallStatus.CANCELLED})


class ModelInstallJob(BaseModel):
    """One install. Serialisable for the API; the token lives in a private field, never dumped."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: int
    #: Canonical source string, without secrets: it is persisted, listed and sent in events. The
    #: real URL (with any ``?token=``) stays in ``_source_obj`` for the download.
    source: str
    source_type: str
    status: InstallStatus = InstallStatus.WAITING
    config_in: dict[str, Any] = Field(default_factory=dict)
    config_out: ModelConfigBase | None = None
    inplace: bool = False
    local_path: Path | None = None
    bytes: int = 0
    total_bytes: int = 0
    speed: float = 0.0
    parts: list[dict[str, Any]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    #: A Hugging Face install's variant as chosen (fp16 by default when the repo has fp16 files) and why.
    variant: str | None = None
    variant_reason: str | None = None
    #: What the install did once completed: "installed", "registered", "already_installed" or
    #: "already_registered" (the content was known; ``config_out`` is the existing model).
    outcome: str | None = None
    error_type: str | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None

    _access_token: SecretStr | None = PrivateAttr(default=None)
    _source_obj: Any = PrivateAttr(default=None)
    _download: Any = PrivateAttr(default=None)
    _metadata: dict[str, Any] = PrivateAttr(default_factory=dict)
    _handoff: Any = PrivateAttr(default=None)  # ``_handoff.Handoff`` of the running download
    _received: Any = PrivateAttr(default=None)  # what it hashed: {inode: Received}
    _done: threading.Event = PrivateAttr(default_factory=threading.Event)
    _exception: BaseException | None = PrivateAttr(default=None)
    #: Another process runs this job; this one mirrors its row (and takes over if it dies).
    _following: bool = PrivateAttr(default=False)

    @field_validator("source")
    @classmethod
    def _no_secrets(cls, value: str) -> str:
        # str(source) already leaves them out; this holds for any caller that builds a job.
        return strip_secrets(value)

    # The seed's boolean properties.
    @property
    def waiting(self) -> bool:
        return self.status == InstallStatus.WAITING

    @property
    def downloading(self) -> bool:
        return self.status == InstallStatus.DOWNLOADING

    @property
    def downloads_done(self) -> bool:
        return self.status == InstallStatus.DOWNLOADS_DONE

    @property
    def paused(self) -> bool:
        return self.status == InstallStatus.PAUSED

    @property
    def running(self) -> bool:
        return self.status == InstallStatus.RUNNING

    @property
    def complete(self) -> bool:
        return self.status == InstallStatus.COMPLETED

    @property
    def errored(self) -> bool:
        return self.status == InstallStatus.ERROR

    @property
    def cancelled(self) -> bool:
        return self.status == InstallStatus.CANCELLED

    @property
    def in_terminal_state(self) -> bool:
        return self.status in TERMINAL

    @property
    def exception(self) -> BaseException | None:
        return self._exception

    @property
    def traceback(self) -> str | None:
        """The failure's traceback, for debugging. Seed 002 puts it in ``error``; here ``error`` stays
        the one-line message that the API, CLI and web page show, and events carry both."""
        exc = self._exception
        return "".join(_traceback.format_exception(exc)) if exc is not None else None

    @property
    def eta(self) -> float | None:
        if self.speed <= 0 or self.total_bytes <= 0:
            return None
        return max(0.0, (self.total_bytes - self.bytes) / self.speed)

    def to_public(self) -> dict[str, Any]:
        """JSON for the API and events: never the token."""
        data = self.model_dump(mode="json", exclude={"config_out"})
        data["config_out"] = self.config_out.model_dump(mode="json") if self.config_out is not None else None
        if data["config_out"] is not None:
            data["config_out"].pop("source_api_response", None)
        data["eta"] = self.eta
        for flag in ("waiting", "downloading", "running", "complete", "errored", "cancelled", "in_terminal_state"):
            data[flag] = getattr(self, flag)
        return data

    def event_payload(self) -> dict[str, Any]:
        """Every install event's payload: seed 002's keys (``source``, ``local_path`` - the download
        folder while downloading -, ``bytes``, ``total_bytes``, ``parts`` with each file's ``source``,
        ``local_path``, ``bytes`` and ``total_bytes``, ``key``, ``error_type``, ``error``) and more."""
        return {
            "id": self.id,
            "source": self.source,
            "status": self.status.value,
            "bytes": self.bytes,
            "total_bytes": self.total_bytes,
            "speed": self.speed,
            "eta": self.eta,
            "parts": self.parts,
            "local_path": str(self.local_path) if self.local_path else None,
            "key": self.config_out.key if self.config_out else None,
            "error_type": self.error_type,
            "error": self.error,
            "traceback": self.traceback,
        }
