"""Fetch a URL job through a caller's ``requests.Session`` (seed 002's ``requests_session``).

Seed 002 lets a queue stream remote files through a given ``requests`` Session, "for use in the
module's unit tests to simulate a remote web server" (an adapter mounted on the session answers
instead of the network). modeldepot honours it rather than refusing it, because that is exactly
what code ported from InvokeAI passes, and the session is then the whole transport:

- one GET per attempt, streamed into ``<name>.part`` and renamed into place when complete;
  a paused job continues with ``Range: bytes=N-`` when the answer is 206 from byte N;
- no multi-connection ranges and no retries of its own (mount an ``HTTPAdapter`` with a
  ``Retry`` on the session for those);
- the queue's ``ConnectPolicy`` (private-address refusal, pinned connections) is **not** applied:
  the session decides where its connections go, so only pass one you trust.

``requests`` is never imported here: the session is used through its ``get`` method and the
response through ``status_code``, ``headers``, ``iter_content`` and ``close``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldepot._fs import NO_SPACE_ERRNOS, free_bytes, fsync_dir, join_inside, no_space_text
from modeldepot._http import USER_AGENT, status_error
from modeldepot.download._fetch import sha256_file
from modeldepot.download._http import filename_from_content_disposition
from modeldepot.download._parts import name_from_url, part_path, remove_partial, sanitize_filename, state_path
from modeldepot.download._redact import redact_text
from modeldepot.download._transfer import Stopped
from modeldepot.download.base import DownloadJobRemoteSource, DownloadLimits
from modeldepot.errors import ConfigurationError, DownloadError, InsufficientSpaceError, IntegrityError, ModelDepotError

__all__ = ["SessionFetcher", "check_session"]

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


def check_session(session: object) -> Any:
    """``session`` when it can stream like ``requests.Session``; else a ConfigurationError."""
    if not callable(getattr(session, "get", None)):
        raise ConfigurationError(
            f"requests_session must be a requests.Session (or an object with its get() method), "
            f"got {type(session).__name__}; leave it out to use modeldepot's own HTTP engine"
        )
    return session


class SessionFetcher:
    """Downloads one job through ``session`` (``run``); raises ``Stopped`` on pause or cancel."""

    def __init__(
        self,
        session: Any,
        job: DownloadJobRemoteSource,
        limits: DownloadLimits,
        token: str | None,
        stop: Callable[[], bool],
        started: Callable[[], None],
        tick: Callable[[], None],
    ) -> None:
        self.session = session
        self.job = job
        self.limits = limits
        self._token = token
        self._stop = stop
        self._started = started
        self._tick = tick
        self._shown = job.source  # already redacted
        self.written = 0

    def run(self) -> Path:
        job = self.job
        final = None if job.dest.is_dir() else job.dest
        offset = self._resumable(final)
        if offset and final is None:
            final = job.download_path
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if offset:
            headers["Range"] = f"bytes={offset}-"
        resp = self._get(headers)
        try:
            status = int(resp.status_code)
            if status >= 400:
                raise status_error(status, self._shown, reason=str(getattr(resp, "reason", "") or ""))
            if final is None:
                name = _filename(resp) or name_from_url(job.url) or "download"
                final = join_inside(job.dest, name)
            job.download_path = final
            job.content_type = _header(resp, "Content-Type")
            start, total = self._plan(resp, status, offset)
            job.total_bytes = total or 0
            final.parent.mkdir(parents=True, exist_ok=True)
            self._check_space(final, total, start)
            hasher = self._hasher(final, start)
            self.written = job.bytes = start
            self._started()
            self._stream(resp, final, start, hasher)
        finally:
            with contextlib.suppress(Exception):
                resp.close()
        if total is not None and self.written != total:
            raise DownloadError(
                f"{self._shown}: got {self.written:,} of {total:,} bytes; the server closed early", url=self._shown
            )
        return self._finish(final, hasher)

    def _resumable(self, final: Path | None) -> int:
        """Bytes to keep from this job's own paused part file (its size still matches), else 0.

        Only the part this job wrote and paused is continued: the engine's preallocated parts
        (with a ``.part.json``) have holes, and a stranger's part may hold another version.
        """
        job = self.job
        target = final
        if target is None and job.download_path is not None and job.download_path.parent == job.dest:
            target = job.download_path
        if target is None or job.bytes <= 0 or state_path(target).exists():
            return 0
        return job.bytes if _part_size(target) == job.bytes else 0

    def _get(self, headers: dict[str, str]) -> Any:
        try:
            return self.session.get(self.job.url, headers=headers, stream=True, timeout=self.limits.stall_timeout)
        except ModelDepotError:
            raise
        except Exception as exc:  # requests' own errors: the one place they become ours
            raise DownloadError(f"{self._shown}: {self._clean(exc)}", url=self._shown) from exc

    def _plan(self, resp: Any, status: int, offset: int) -> tuple[int, int | None]:
        """(first byte written now, total size or None); a 200 to a Range request starts over."""
        length = _int(_header(resp, "Content-Length"))
        if status == 206 and offset:
            m = _CONTENT_RANGE.match(_header(resp, "Content-Range") or "")
            if m and int(m.group(1)) == offset:
                return offset, _int(m.group(3))
            raise DownloadError(f"{self._shown}: the server answered 206 without a usable Content-Range")
        return 0, length

    def _hasher(self, final: Path, start: int) -> Any:
        if not self.job.expected_sha256:
            return None
        return sha256_file(part_path(final), upto=start) if start else hashlib.sha256()

    def _check_space(self, final: Path, total: int | None, start: int) -> None:
        free = free_bytes(final.parent)
        if total is not None and free is not None and total - start > free:
            raise InsufficientSpaceError(
                f"{self._shown}: needs {total - start:,} bytes but only {free:,} are free on {final.parent}",
                url=self._shown,
            )

    def _stream(self, resp: Any, final: Path, start: int, hasher: Any) -> None:
        part = part_path(final)
        try:
            with open(part, "r+b" if start else "wb") as f:
                f.seek(start)
                f.truncate()
                for chunk in resp.iter_content(chunk_size=self.limits.buffer_size):
                    if self._stop():
                        raise Stopped()
                    if not chunk:
                        continue
                    f.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    self.written += len(chunk)
                    self.job.bytes = self.written
                    self._tick()
                f.flush()
                if self.limits.fsync:
                    os.fsync(f.fileno())
        except (Stopped, ModelDepotError):
            raise
        except OSError as exc:
            if exc.errno in NO_SPACE_ERRNOS:
                text = no_space_text(final.parent, self.job.total_bytes)
                raise InsufficientSpaceError(text, url=self._shown) from exc
            raise DownloadError(f"{self._shown}: {self._clean(exc)}", url=self._shown) from exc
        except Exception as exc:  # a broken stream from the session's transport
            raise DownloadError(f"{self._shown}: {self._clean(exc)}", url=self._shown) from exc

    def _finish(self, final: Path, hasher: Any) -> Path:
        part = part_path(final)
        expected = self.job.expected_sha256
        if hasher is not None:
            digest = hasher.hexdigest()
            self.job.sha256 = digest
            if expected and digest != expected.lower():
                remove_partial(final)
                raise IntegrityError(
                    f"{self._shown}: sha256 {digest} does not match the expected {expected.lower()}", url=self._shown
                )
        part.replace(final)
        remove_partial(final, keep_data=True)
        if self.limits.fsync:
            fsync_dir(final.parent)
        return final

    def _clean(self, exc: BaseException) -> str:
        text = (str(exc) or type(exc).__name__).replace(self.job.url, self._shown)
        return redact_text(text, self._token).replace("\n", " ")


def _part_size(final: Path) -> int:
    try:
        return part_path(final).stat().st_size
    except OSError:
        return 0


def _header(resp: Any, name: str) -> str | None:
    headers = getattr(resp, "headers", None) or {}
    value = headers.get(name)
    return None if value is None else str(value)


def _filename(resp: Any) -> str | None:
    return sanitize_filename(filename_from_content_disposition(_header(resp, "Content-Disposition")))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
