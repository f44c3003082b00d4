"""The connection side of a fetch: worker threads pulling byte ranges into the ``.part`` file.

``Transfer`` owns the sockets, the work queue of ranges, retries with backoff, stall handling and
the ``pwrite`` of each filled buffer; ``FileFetcher`` (``_fetch``) plans and finishes a download.
Network errors are retried from the current byte; write errors (a full disk) never are.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from modeldepot._fs import NO_SPACE_ERRNOS, no_space_text, start_writeback
from modeldepot.download._digests import DigestPass
from modeldepot.download._http import (
    ConnectionCache,
    Response,
    RetryableHTTPError,
    backlogged,
    backoff_delay,
    check_status,
    monotonic,
    open_url,
)
from modeldepot.download._parts import PartState, StateFile, part_path
from modeldepot.download._policy import ConnectPolicy
from modeldepot.download._ramp import Ramp
from modeldepot.download._redact import redact_text
from modeldepot.download.base import DownloadJobRemoteSource, DownloadLimits
from modeldepot.errors import DownloadError, InsufficientSpaceError

log = logging.getLogger("modeldepot.download._fetch")

#: Bytes the job thread hashes per progress tick (it also ticks progress and the ramp).
DIGEST_BUDGET = 128 * 1024 * 1024


class Stopped(Exception):
    """The job was paused or cancelled; partial data is on disk and its state saved."""


class _Restart(Exception):
    """The remote changed (ETag/size/Range answer): start over from zero."""


class _Item:
    __slots__ = ("end", "resp", "start")

    def __init__(self, start: int, end: int | None, resp: Response | None = None) -> None:
        self.start = start
        self.end = end
        self.resp = resp


class Transfer:
    """Shared state of one download and the connection threads that fill its ``.part`` file."""

    #: Log at DEBUG what would be INFO or above (a queue built with ``quiet=True``).
    quiet = False

    def __init__(
        self,
        job: DownloadJobRemoteSource,
        limits: DownloadLimits,
        token: str | None,
        extra_slots: threading.Semaphore,
        on_started: Callable[[], None],
        on_tick: Callable[[], None],
        policy: ConnectPolicy | None = None,
    ) -> None:
        self.job = job
        self.policy = policy or ConnectPolicy()
        self.limits = limits
        self._token = token
        self._slots = extra_slots
        self._on_started = on_started
        self._on_tick = on_tick
        self._shown = job.source  # already redacted
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._items: collections.deque[_Item] = collections.deque()
        self._state: PartState | None = None
        self._final: Path | None = None
        self._total: int | None = None  # size of the remote file; None while unknown (no Content-Length)
        self._fd = -1
        self._ranged = True
        self._digests: DigestPass | None = None  # fed the finished prefix by the job thread
        self._direct: str | None = None  # where the URL last redirected to (requests go there)
        self._written = 0
        self._live = 0  # connection threads running
        self._max_live = 1  # threads beyond this stop at their next part (a ramp taken back)
        self._unsaved = 0
        self._saved_at = 0.0
        self._state_file: StateFile | None = None
        self._skip = False
        self.bytes_fetched = 0  # body bytes received over the network by this fetcher

    # -- public -------------------------------------------------------------------------------
    @property
    def written(self) -> int:
        return self._written

    def _note(self, level: int, msg: str, *args: object) -> None:
        log.log(logging.DEBUG if self.quiet and level >= logging.INFO else level, msg, *args)

    def stop_requested(self) -> bool:
        return self.job._cancel_requested.is_set() or self.job._pause_requested.is_set()

    # -- connection threads ------------------------------------------------------------------------
    def _run_workers(self) -> None:
        """Run the connection threads; the calling (job) thread ticks progress, the connection
        count (``_ramp``: one at first, doubled while it pays) and the digests."""
        lim = self.limits
        want = 1
        state = self._state
        if self._ranged and len(self._items) > 1 and state is not None and state.size >= lim.multi_connection_threshold:
            want = min(lim.max_connections, len(self._items))
        done = threading.Event()
        threads: list[threading.Thread] = []
        extra = 0
        self._live = 0
        self._max_live = want

        def worker() -> None:
            retired = False
            try:
                retired = self._worker()
            finally:
                with self._lock:
                    if not retired:
                        self._live -= 1
                    if self._live == 0:
                        done.set()

        def spawn(n: int) -> None:
            with self._lock:
                self._live += n
            for _ in range(n):
                t = threading.Thread(target=worker, name=f"dl-{self.job.id}-{len(threads)}", daemon=True)
                threads.append(t)
                t.start()
            self.job.connections = len(threads)

        def grow(n: int) -> int:
            """Open up to ``n`` more connections (as the queue's shared slots allow); how many."""
            nonlocal extra
            got = 0
            while got < n and self._slots.acquire(blocking=False):
                got += 1
            extra += got
            spawn(got)
            return got

        try:
            spawn(1)  # the first connection is the job's own: it takes no shared slot
            ramp = Ramp(want, lim, monotonic(), self.bytes_fetched)
            if ramp.at_once:
                ramp.opened(ramp.at_once, grow(ramp.at_once))
            while not done.wait(lim.progress_interval):
                if self.stop_requested() and not self._abort.is_set():
                    self._abort_all()
                target = ramp.tick(monotonic(), self.bytes_fetched)
                if target is not None and target < ramp.conns:
                    with self._lock:
                        self._max_live = target  # the extra connections stop after their part
                    ramp.conns = target
                elif target is not None and not self._abort.is_set():
                    ramp.opened(target - ramp.conns, grow(target - ramp.conns))
                self._on_tick()
                self._save_if_due()
                if self._digests is not None:
                    self._digests.feed(self._fd, self._contiguous(), budget=DIGEST_BUDGET)
            for t in threads:
                t.join()
        finally:
            for _ in range(extra):
                self._slots.release()

    def _contiguous(self) -> int:
        """How many bytes from the start of the part file are written (what may be hashed)."""
        state = self._state
        if state is None:
            with self._lock:
                return self._written  # one stream from byte 0
        with state._lock:
            first = state.done[0] if state.done else None
        return first[1] if first is not None and first[0] == 0 else 0

    def _abort_all(self) -> None:
        self._abort.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _register(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)
        if self._abort.is_set():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _release(self, resp: Response) -> None:
        s = resp.sock
        with self._lock:
            if s is not None:
                self._socks.discard(s)
        resp.close()

    def _worker(self) -> bool:
        """Fetch parts until none is left; True when this connection retired (and counted itself out)."""
        buf = memoryview(bytearray(self.limits.buffer_size))
        cache = ConnectionCache()  # this thread's kept-alive connection: one handshake, not one per part
        try:
            return self._fetch_parts(buf, cache)
        finally:
            cache.close()

    def _fetch_parts(self, buf: memoryview, cache: ConnectionCache) -> bool:
        try:
            while not self._abort.is_set():
                with self._lock:
                    if self._live > self._max_live:
                        self._live -= 1
                        return True
                    item = self._items.popleft() if self._items else None
                if item is None:
                    return False
                self._fetch_item(item, buf, cache)
        except Stopped:
            self._abort.set()
        except BaseException as exc:
            with self._lock:
                if self._error is None:
                    self._error = exc
            self._abort_all()
        return False

    def _fetch_item(self, item: _Item, buf: memoryview, cache: ConnectionCache) -> None:
        try:
            self._fetch_range(item, buf, cache)
        finally:
            if item.resp is not None:
                self._release(item.resp)
                item.resp = None

    def _fetch_range(self, item: _Item, buf: memoryview, cache: ConnectionCache) -> None:
        pos, end, resp = item.start, item.end, item.resp
        failures = 0
        while end is None or pos < end:
            if self._abort.is_set():
                raise Stopped()
            if resp is None:
                resp = self._open(pos, end, validator=self._state.if_range() if self._state else None, cache=cache)
            item.resp = resp
            cursor = [pos]
            exc: BaseException | None = None
            try:
                self._pump(resp, cursor, end, buf)
            except DownloadError:
                raise  # a write error (``_write``): the disk, not the network, so retrying cannot help
            except (OSError, http.client.HTTPException) as e:
                exc = e
            finally:
                self._release(resp)
                resp = item.resp = None
            progressed = cursor[0] > pos
            pos = cursor[0]
            if self._abort.is_set():
                raise Stopped()  # first: a pump stopped by an abort also returns without an error
            if exc is None and (end is None or pos >= end):
                return
            why = f"no data for {self.limits.stall_timeout:g} s" if isinstance(exc, TimeoutError) else exc
            if end is None and pos > 0:
                # No Content-Length: only a clean end (the last chunk, or a close without an error)
                # ends the body. A cut one cannot be continued either: the server offered no ranges.
                if isinstance(exc, http.client.IncompleteRead):
                    why = "closed before the end of the body"  # its own text says "0 bytes read"
                raise DownloadError(
                    f"{self._shown}: the connection broke after {pos:,} bytes of a body of unknown length, "
                    f"which cannot be resumed (the server does not support ranges): {self._clean(why)}",
                    url=self._shown,
                ) from exc
            if not self._ranged and pos > 0:
                # Short of its Content-Length, from a server that ignored our Range: asking it for the
                # rest would only bring the whole body again. Start over (``max_restarts`` bounds it).
                raise _Restart(
                    f"the connection broke after {pos:,} of {end:,} bytes and the server does not support "
                    f"ranges: {self._clean(why)}"
                ) from exc
            if exc is None and progressed:
                failures = 0
                continue  # the server sent a shorter body than asked (capped ranges): ask for the rest
            failures = 1 if progressed else failures + 1
            if failures > self.limits.max_retries:
                raise DownloadError(
                    f"{self._shown}: connection failed {failures} times at byte {pos:,}: {self._clean(why)}",
                    url=self._shown,
                ) from exc
            self._note(logging.INFO, "%s: retrying at byte %d after: %s", self._shown, pos, self._clean(why))
            self._sleep(backoff_delay(failures, self.limits.backoff_base, self.limits.backoff_max, None))

    def _pump(self, resp: Response, cursor: list[int], end: int | None, buf: memoryview) -> None:
        """Copy the body into the part file at ``cursor[0]``; one pwrite per filled buffer."""
        size = len(buf)
        filled = 0
        last = monotonic()
        synced = cursor[0]  # writeback was started for this connection's bytes before this offset
        every = self.limits.writeback_every if self.limits.fsync else 0
        clamp = self.limits.clamp_rcvbuf
        reads = 0
        try:
            while not self._abort.is_set():
                reads += 1
                if clamp and reads % 64 == 8 and backlogged(resp, clamp):
                    clamp = 0
                want = size - filled
                if end is not None:
                    want = min(want, end - cursor[0] - filled)
                    if want <= 0:
                        break
                n = resp.readinto(buf[filled : filled + want])
                if n == 0:
                    break
                filled += n
                if filled == size or monotonic() - last > 0.1:
                    full, filled = filled, 0  # cleared first: a failed write is not tried again below
                    self._write(buf, full, cursor)
                    last = monotonic()
                    if every and cursor[0] - synced >= every:
                        start_writeback(self._fd, synced, cursor[0] - synced)
                        synced = cursor[0]
        finally:
            if filled:
                self._write(buf, filled, cursor)

    def _write(self, buf: memoryview, n: int, cursor: list[int]) -> None:
        pos = cursor[0]
        view = buf[:n]
        off = 0
        try:
            while off < n:
                off += os.pwrite(self._fd, view[off:], pos + off)
        except OSError as exc:
            raise self._disk_error(exc) from exc
        cursor[0] = pos + n
        save = False
        with self._lock:
            self._written += n
            self.bytes_fetched += n
            if self._state is not None:
                self._state.add(pos, pos + n)
                self._unsaved += n
                if self._unsaved >= self.limits.state_interval:
                    self._unsaved = 0
                    save = True
        if save:
            try:
                self._save_state()
            except OSError as exc:
                raise self._disk_error(exc) from exc

    def _disk_error(self, exc: OSError) -> DownloadError:
        """The error for a failed write to the part file (or its state); never retried.

        Raised as a ``DownloadError`` (not an ``OSError``) so ``_fetch_range`` cannot take it for a
        broken connection.
        """
        where = self._final.parent if self._final is not None else Path.cwd()
        if exc.errno in NO_SPACE_ERRNOS:
            need = max(0, self._total - self._written) if self._total is not None else None  # still to come
            return InsufficientSpaceError(f"{self._shown}: {no_space_text(where, need)}", url=self._shown)
        part = part_path(self._final) if self._final is not None else where
        return DownloadError(f"{self._shown}: cannot write {part}: {exc.strerror or exc}", url=self._shown)

    def _save_if_due(self) -> None:
        """A slow link saves at least every ``state_save_seconds`` (the byte interval takes long)."""
        with self._lock:
            due = self._unsaved > 0 and monotonic() - self._saved_at >= self.limits.state_save_seconds
            if due:
                self._unsaved = 0
        if due:
            try:
                self._save_state()
            except OSError as exc:
                raise self._disk_error(exc) from exc

    def _save_state(self, durable: bool = False) -> None:
        if self._state is None or self._final is None:
            return
        if durable and self._fd >= 0:
            os.fsync(self._fd)
        with self._save_lock:
            if self._state_file is None or self._state_file.final != self._final:
                self._close_state_file()
                self._state_file = StateFile(self._final)
            self._state_file.save(self._state, durable=durable)
            self._saved_at = monotonic()

    def _close_state_file(self) -> None:
        if self._state_file is not None:
            self._state_file.close()
            self._state_file = None

    # -- requests ---------------------------------------------------------------------------------
    def _open(
        self,
        pos: int,
        end: int | None,
        validator: str | None,
        probe: bool = False,
        cache: ConnectionCache | None = None,
    ) -> Response:
        """Open a (ranged) GET with retries for connection errors and ``_http.RETRY_STATUSES``.

        Returns only a 200 or (to a Range request) a 206 answer; any other status raises. After the
        first answer, requests go straight to where the URL redirected (a CDN's signed URL: no
        redirect hop per part); when that address stops answering (an expired signature), the
        original URL is asked again.
        """
        failures = 0
        while True:
            direct = self._direct
            if self._abort.is_set():
                raise Stopped()
            headers: dict[str, str] = {}
            if self._ranged or pos > 0:
                headers["Range"] = f"bytes={pos}-" if end is None else f"bytes={pos}-{end - 1}"
                if validator and self._ranged:
                    headers["If-Range"] = validator
            retry_after: float | None = None
            try:
                resp = open_url(
                    direct or self.job.url,
                    token=self._token,
                    headers=headers,
                    timeout=self.limits.stall_timeout,
                    on_socket=self._register,
                    rcvbuf=self.limits.socket_rcvbuf,
                    policy=self.policy,
                    cache=cache,
                    origin=self.job.url,
                )
            except (OSError, http.client.HTTPException) as exc:
                failures += 1
                if failures > self.limits.max_retries:
                    raise DownloadError(
                        f"{self._shown}: cannot connect after {failures} attempts: {self._clean(exc)}", url=self._shown
                    ) from exc
            else:
                if direct is not None and resp.status >= 400:
                    self._release(resp)
                    self._direct = None  # expired or gone: back through the original URL, not a failure
                    continue
                try:
                    if resp.status == 416 and "Range" in headers:
                        if probe and pos == 0:
                            # ``Range: bytes=0-N`` on an empty file is unsatisfiable: ask again
                            # without Range (that answer is checked like any other).
                            self._release(resp)
                            self._ranged = False
                            continue
                        raise _Restart("the server cannot serve the saved range (416): the remote file shrank")
                    check_status(resp, self._shown)
                    if resp.status != 200 and not (resp.status == 206 and "Range" in headers):
                        raise DownloadError(
                            f"{self._shown}: unexpected answer HTTP {resp.status} {resp.reason}".rstrip(),
                            url=self._shown,
                        )
                    if not probe:
                        self._check_answer(resp, pos)
                    if direct is None and resp.url != self.job.url:
                        self._direct = resp.url
                    return resp
                except RetryableHTTPError as exc:
                    self._release(resp)
                    failures += 1
                    retry_after = exc.retry_after
                    if failures > self.limits.max_retries:
                        raise DownloadError(
                            f"{self._shown}: HTTP {exc.status} after {failures} attempts", url=self._shown
                        ) from exc
                except BaseException:
                    self._release(resp)
                    raise
            delay = backoff_delay(failures, self.limits.backoff_base, self.limits.backoff_max, retry_after)
            self._note(logging.INFO, "%s: retry %d in %.1f s", self._shown, failures, delay)
            self._sleep(delay)

    def _check_answer(self, resp: Response, pos: int) -> None:
        """A later request must continue the same remote file at the same offset."""
        if resp.status == 206:
            cr = resp.content_range
            if cr is None or cr[0] != pos:
                raise _Restart("the server answered a different range than asked")
            if self._state is not None and not self._state.matches(resp.etag, cr[2]):
                raise _Restart("the remote file changed (ETag or size)")
            return
        if resp.status == 200 and pos == 0 and not self._ranged:
            return
        raise _Restart(f"the server answered {resp.status} to a Range request")

    def _sleep(self, seconds: float) -> None:
        if self._abort.wait(seconds):
            raise Stopped()

    def _clean(self, what: object) -> str:
        return redact_text(str(what), self._token)
