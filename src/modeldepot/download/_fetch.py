"""Fetch one URL into one file: ranged, multi-connection, resumable, verified.

One ``FileFetcher`` runs in the job's thread (the coordinator) and spawns connection threads. The
first request asks for the first part with ``Range``; its answer tells everything else:

- ``206`` + ``Content-Range``: ranges work. A ``.part`` file of the full size is preallocated and
  the remaining holes are fetched by up to ``max_connections`` threads (files under the
  threshold: one thread, open-ended ranges), each writing in place with ``os.pwrite``.
- ``200``: the server ignores Range (or the remote changed under ``If-Range``): one stream. A cut
  one starts over (the retry's Range is answered 200 again); without Content-Length only a clean
  end of the body completes it, a cut is an error.
- anything else is an error (``_open``), also for every later request.

Written ranges are persisted in ``<name>.part.json`` (see ``_parts``), so a pause, a crash or a new
process resumes with ``If-Range``; after an error the part is kept only if it can resume that way
(ranged, with a validator). The final file appears only by rename after verification.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
from pathlib import Path

from modeldepot._fs import fsync_dir, join_inside
from modeldepot.download._digests import DigestPass
from modeldepot.download._http import Response
from modeldepot.download._parts import (
    PartState,
    name_from_url,
    part_path,
    remove_partial,
    sanitize_filename,
    state_path,
)
from modeldepot.download._transfer import Stopped, Transfer, _Item, _Restart
from modeldepot.errors import DownloadError, InsufficientSpaceError, IntegrityError

_HASH_BLOCK = 4 * 1024 * 1024

__all__ = ["FileFetcher", "Stopped", "sha256_file"]


def sha256_file(path: Path, upto: int | None = None) -> hashlib._Hash:
    """sha256 of ``path`` (or its first ``upto`` bytes), read in large blocks."""
    h = hashlib.sha256()
    buf = bytearray(_HASH_BLOCK)
    mv = memoryview(buf)
    left = upto
    with open(path, "rb", buffering=0) as f:
        while left is None or left > 0:
            n = f.readinto(mv if left is None else mv[: min(len(mv), left)])
            if not n:
                break
            h.update(mv[:n])
            if left is not None:
                left -= n
    return h


class FileFetcher(Transfer):
    """Downloads ``job`` once (``run``); raises ``Stopped`` on pause/cancel."""

    def run(self) -> Path:
        restarts = 0
        refetched = False
        while True:
            try:
                return self._attempt()
            except _Restart as exc:
                restarts += 1
                if self._final is not None:
                    remove_partial(self._final)
                if restarts > self.limits.max_restarts:
                    raise DownloadError(
                        f"{self._shown}: gave up after starting over {restarts} times (last: {exc})",
                        url=self._shown,
                    ) from exc
                self._note(logging.INFO, "%s: %s; restarting from zero", self._shown, exc)
            except IntegrityError:
                if refetched or self.stop_requested():
                    raise
                refetched = True
                self._note(logging.WARNING, "%s: sha256 mismatch; fetching the file once more", self._shown)

    # -- one attempt ----------------------------------------------------------------------------
    def _attempt(self) -> Path:
        job, lim = self.job, self.limits
        self._abort.clear()
        self._error = None
        self._items.clear()
        self._digests = None
        self._direct = None  # a new attempt follows the URL's redirects afresh
        self._ranged = True
        self._skip = False
        self._state, self._final, self._written, self._unsaved = None, None, 0, 0
        self._total = None
        final: Path | None = None if job.dest.is_dir() else job.dest
        self._final = final  # known before the first answer, so a ``_Restart`` there clears the right part
        state = PartState.load(final, self._shown) if final is not None else None
        if final is not None and state is not None and state.complete:
            self._final, self._state, self._written = final, state, state.size
            job.total_bytes = job.bytes = state.size
            self._open_part(final, fresh=False)
            try:
                self._on_started()
                return self._finish(final, state.size)
            finally:
                self._close_part()
        if state is not None:
            a, b = state.holes()[0]
            multi = state.size >= lim.multi_connection_threshold and lim.max_connections > 1
            first = _Item(a, min(b, a + lim.part_size) if multi else b)
        else:
            first = _Item(0, lim.part_size)
        resp = self._open(first.start, first.end, validator=state.if_range() if state else None, probe=True)
        try:
            try:
                if final is None:
                    name = sanitize_filename(resp.filename) or name_from_url(job.url) or "download"
                    final = join_inside(job.dest, name)
                    state = PartState.load(final, self._shown)
                self._final = final
                job.download_path = final
                job.content_type = resp.content_type
                total = self._plan(resp, first, final, state)
            except BaseException:
                resp.close()
                raise
            self._total = total
            job.total_bytes = total or 0
            job.bytes = self._written
            self._on_started()
            self._run_workers()
            if self._error is not None:
                raise self._error
            if self.stop_requested() or self._abort.is_set():
                raise Stopped()
            if self._skip:
                return final
            return self._finish(final, total)
        except Stopped:
            if self._state is not None:
                self._save_state(durable=True)
            raise
        except (_Restart, IntegrityError):
            raise  # ``run`` starts over; ``_finish`` already removed a corrupt part
        except Exception:
            if self._fd >= 0 and final is not None:
                if not self._resumable():
                    remove_partial(final)  # opened by this attempt, and useless for a later one
                else:
                    with contextlib.suppress(OSError):  # a full disk may refuse this too: keep the last save
                        self._save_state()
            raise
        finally:
            for item in self._items:
                if item.resp is not None:
                    item.resp.close()
            self._close_part()

    def _resumable(self) -> bool:
        """Whether the part file can be continued later: ranges work and a validator names the version.

        Anything else (a stream without ranges, a remote without ETag or Last-Modified) would be
        fetched from zero anyway, or could mix two versions of the file; it is not worth keeping.
        """
        return self._ranged and self._state is not None and self._state.if_range() is not None

    def _plan(self, resp: Response, first: _Item, final: Path, state: PartState | None) -> int | None:
        """Reconcile the first answer (200 or 206, see ``_open``) with saved state; queue the work items.

        Returns the size, or None when the server does not say (no Content-Length).
        """
        lim = self.limits
        if resp.status == 206:
            cr = resp.content_range
            if cr is None or cr[2] is None or cr[0] != first.start:
                raise _Restart("the server answered 206 without a usable Content-Range")
            start, last, total_opt = cr
            total = int(total_opt) if total_opt is not None else 0
            if state is not None and not state.matches(resp.etag, total):
                remove_partial(final)
                state = None
                if start != 0:
                    raise _Restart("the remote file changed since the partial download")
            if state is None:
                if self._already_there(final, total):
                    resp.close()
                    self._written = total
                    self._skip = True
                    return total
                self._check_space(final, total)
                state = PartState(url=self._shown, size=total, etag=resp.etag, last_modified=resp.last_modified)
                self._open_part(final, fresh=True, size=total)
                state.save(final)
            else:
                self._open_part(final, fresh=False)
            self._state = state
            self._written = state.done_bytes
            first_end = last + 1
            holes = state.holes()
            rest: list[tuple[int, int]] = []
            for a, b in holes:
                if a <= start < b:
                    if first_end < b:
                        rest.append((first_end, b))
                else:
                    rest.append((a, b))
            multi = total >= lim.multi_connection_threshold and lim.max_connections > 1
            self._items.append(_Item(start, first_end, resp))
            for a, b in rest:
                if multi:
                    for s in range(a, b, lim.part_size):
                        self._items.append(_Item(s, min(b, s + lim.part_size)))
                else:
                    self._items.append(_Item(a, b))
            # The job thread hashes the finished prefix while the rest streams in (parts are handed
            # out in order), so little is left at the end; a resumed file's old bytes come first.
            self._digests = self._digest_pass(final, total)
            return total
        # 200: Range ignored, or If-Range said the remote changed. One stream from byte 0.
        if state is not None:
            remove_partial(final)
        self._state = None
        self._ranged = False
        total_or_none = resp.content_length
        if total_or_none is not None and self._already_there(final, total_or_none):
            resp.close()
            self._written = total_or_none
            self._skip = True
            return total_or_none
        if state is not None and (resp.header("Accept-Ranges") or "").lower() == "bytes":
            raise _Restart("the remote file changed since the partial download")
        if total_or_none is not None:
            self._check_space(final, total_or_none)
        self._open_part(final, fresh=True, size=total_or_none)
        with contextlib.suppress(FileNotFoundError):
            state_path(final).unlink()
        self._written = 0
        self._items.append(_Item(0, total_or_none, resp))
        self._digests = self._digest_pass(final, total_or_none)
        return total_or_none

    def _digest_pass(self, final: Path, total: int | None) -> DigestPass | None:
        job = self.job
        if not (job.expected_sha256 or job.compute_blake3 or job._tap_factory is not None):
            return None
        return DigestPass(
            part_path(final),
            total,
            sha256=bool(job.expected_sha256),
            blake3_=job.compute_blake3,
            tap=job._tap_factory,
        )

    def _already_there(self, final: Path, total: int) -> bool:
        """A finished file with the expected sha256 is not fetched again."""
        exp = self.job.expected_sha256
        if not exp or not final.is_file() or final.stat().st_size != total:
            return False
        if sha256_file(final).hexdigest() != exp.lower():
            return False
        self.job.sha256 = exp.lower()
        return True

    def _check_space(self, final: Path, total: int) -> None:
        probe = final.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if total > free:
            raise InsufficientSpaceError(
                f"{self._shown}: needs {total:,} bytes but only {free:,} are free on {probe}", url=self._shown
            )

    def _open_part(self, final: Path, fresh: bool, size: int | None = None) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        part = part_path(final)
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DownloadError(f"{part} is being written by another download", url=self._shown) from None
        self._fd = fd
        if fresh:
            os.ftruncate(fd, 0)
            if size and not self.limits.preallocate:
                os.ftruncate(fd, size)
            elif size:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as exc:
                    if exc.errno == 28:  # ENOSPC
                        raise InsufficientSpaceError(f"{self._shown}: no space for {size:,} bytes at {part}") from exc
                    os.ftruncate(fd, size)  # filesystem without fallocate: a sparse file

    def _close_part(self) -> None:
        self._close_state_file()  # the next attempt may have removed and recreated the state file
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _finish(self, final: Path, total: int | None) -> Path:
        part = part_path(final)
        got = self._state.done_bytes if self._state is not None else self._written
        if total is not None and got != total:
            raise DownloadError(
                f"{self._shown}: got {got:,} of {total:,} bytes; the server closed early", url=self._shown
            )
        exp = self.job.expected_sha256
        digests = self._digests or self._digest_pass(final, got)
        if digests is not None:
            digests.feed(self._fd, got)  # what the job thread had not reached yet
        if self.limits.fsync:
            os.fsync(self._fd)
        if digests is not None and exp:
            digest = digests.sha256 or ""
            self.job.sha256 = digest
            if digest != exp.lower():
                remove_partial(final)
                raise IntegrityError(
                    f"{self._shown}: sha256 {digest} does not match the expected {exp.lower()}", url=self._shown
                )
        part.replace(final)
        remove_partial(final, keep_data=True)
        if digests is not None and digests.blake3 is not None:
            st = final.stat()
            self.job.blake3 = digests.blake3
            self.job._identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self.limits.fsync:
            fsync_dir(final.parent)
        return final
