"""``FakeHub``: one threaded HTTP/1.1 server on 127.0.0.1 for HF repos, Civitai versions and plain files."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from modeldepot.errors import ConfigurationError

from ._blobs import Spool, materialise
from ._civitai import CivitaiService
from ._faults import FaultPlan, Faults, FaultTable
from ._hf import HFService
from ._http import Entity, Reply, Request, error_reply, send_reply
from ._stats import RequestRecord, Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _PlainFile:
    source: Path
    content_disposition: str | None
    send_content_length: bool
    chunked: bool
    etag: str | None
    generation: int

    def current_etag(self) -> str:
        if self.etag is not None:
            return self.etag
        # Derived from what the file is now, so a replaced or rewritten file gets a new ETag.
        st = self.source.stat()
        token = f"{self.generation}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        return '"' + hashlib.sha1(token.encode(), usedforsecurity=False).hexdigest()[:32] + '"'


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], hub: FakeHub) -> None:
        self.hub = hub
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request (killed downloaders, dropped faults) are normal here.
        log.debug("fakehub: connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakehub/1"
    timeout = 60  # an idle keep-alive connection does not hold a thread forever
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.hub._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, False)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Never the request line as sent: its query may hold a token (?token=...).
        log.debug("fakehub: %s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fakehub: " + format, *args)

    def do_GET(self) -> None:
        self.server.hub._serve(self)

    def do_HEAD(self) -> None:
        self.server.hub._serve(self)

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.server.hub._serve(self)

    def do_PUT(self) -> None:
        self.do_POST()

    def do_DELETE(self) -> None:
        self.do_POST()


class FakeHub:
    """A local stand-in for huggingface.co, civitai.com and plain download hosts.

    ``url`` is the HF endpoint and the Civitai endpoint at once. Use as a context manager, or
    ``start()`` / ``stop()``. ``cdn_host`` (e.g. ``"localhost"``) puts redirect targets on another
    origin, so clients treat them as a foreign CDN (and drop ``Authorization``, as with the real hub);
    a full base URL there (``"http://127.0.0.2:8001"``) sends them to another server altogether.
    """

    def __init__(
        self, root: Path | None = None, host: str = "127.0.0.1", port: int = 0, *, cdn_host: str | None = None
    ) -> None:
        self.host = host
        self._port = port
        self.cdn_host = cdn_host
        self.stats = Stats()
        self._faults = FaultTable()
        self._spool = Spool()
        self._finalizer = weakref.finalize(self, self._spool.cleanup)
        self._secret = secrets.token_bytes(32)
        self._files: dict[str, _PlainFile] = {}
        self._redirects: dict[str, tuple[int, str]] = {}
        self._files_lock = threading.Lock()
        self._generation = 0
        self.hf = HFService(self._spool, self._secret, self._cdn_base)
        self.civitai = CivitaiService(self._spool, self._secret, self._cdn_base)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if root is not None:
            from ._layout import load_root

            load_root(self, Path(root))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakehub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalled and paced transfers are cut at once, so this returns promptly."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        """Stop and delete the spooled copies of ``bytes`` data."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        if self._server is None and self._port == 0:
            raise RuntimeError("fakehub: start() the hub before asking for its url")
        return f"http://{self.host}:{self._port}"

    def _cdn_base(self, req: Request) -> str:
        if self.cdn_host is not None and "://" in self.cdn_host:
            return self.cdn_host.rstrip("/")
        if self.cdn_host is not None:
            return f"http://{self.cdn_host}:{self._port}"
        return req.base_url

    # -- content --------------------------------------------------------------------------------

    def add_hf_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        revision: str = "main",
        gated_token: str | None = None,
        tags: list[str] | None = None,
        card_data: dict[str, Any] | None = None,
        author: str | None = None,
        private: bool = False,
    ) -> str:
        """Add (or update) one revision of a model repo; returns its commit sha (40 hex)."""
        return self.hf.add_repo(
            repo_id,
            files,
            revision=revision,
            gated_token=gated_token,
            tags=tags,
            card_data=card_data,
            author=author,
            private=private,
        )

    def add_civitai_model(self, model: dict[str, Any]) -> None:
        """Add a Civitai-shaped model; hashes, sizes and download URLs are filled in by the hub."""
        self.civitai.add_model(model)

    def add_file(
        self,
        path: str,
        data: bytes | Path,
        *,
        content_disposition: str | None = None,
        send_content_length: bool = True,
        etag: str | None = None,
        chunked: bool = False,
    ) -> str:
        """Serve ``data`` at ``path``; returns the full URL.

        ``content_disposition`` is a header value, or just a file name (then ``attachment; filename="..."``).
        Without ``send_content_length`` the body is close-delimited, or chunked when ``chunked``;
        such files ignore Range, like the dynamic servers that omit the length.
        """
        key = "/" + "/".join(quote(p) for p in path.strip("/").split("/"))
        if key == "/":
            raise ConfigurationError("fakehub: add_file needs a non-empty path")
        if content_disposition is not None and "filename" not in content_disposition.lower():
            content_disposition = f'attachment; filename="{content_disposition}"'
        if etag is not None and not (etag.startswith('"') or etag.startswith('W/"')):
            etag = f'"{etag}"'
        source = materialise(self._spool, data)
        with self._files_lock:
            self._generation += 1
            self._files[key] = _PlainFile(
                source=source,
                content_disposition=content_disposition,
                send_content_length=send_content_length,
                chunked=chunked and not send_content_length,
                etag=etag,
                generation=self._generation,
            )
        return self._public_url(key)

    replace_file = add_file

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer requests for ``path`` with ``status`` and ``Location: location``; returns the URL."""
        key = "/" + "/".join(quote(p) for p in path.strip("/").split("/"))
        with self._files_lock:
            self._redirects[key] = (status, location)
        return self._public_url(key)

    def remove_file(self, path: str) -> None:
        key = "/" + "/".join(quote(p) for p in path.strip("/").split("/"))
        with self._files_lock:
            self._files.pop(key, None)

    def url_for(self, path: str) -> str:
        return self._public_url("/" + "/".join(quote(p) for p in path.strip("/").split("/")))

    def _public_url(self, key: str) -> str:
        return f"http://{self.host}:{self._port}{key}" if self._port else key

    # -- faults ---------------------------------------------------------------------------------

    def faults(self, path_glob: str = "*", spec: Faults | None = None, **faults: Any) -> None:
        """Inject faults into requests whose path (no query) matches ``path_glob`` (fnmatch)."""
        unknown = set(faults) - set(Faults.names())
        if unknown:
            raise ConfigurationError(f"fakehub: unknown fault(s): {', '.join(sorted(unknown))}")
        self._faults.add(path_glob, spec if spec is not None else Faults(**faults))

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- serving --------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, opened: bool) -> None:
        with self._conns_lock:
            if opened:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)
        self.stats._connection(1 if opened else -1)

    def _serve(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        path = split.path or "/"
        host = handler.headers.get("Host") or f"{self.host}:{self._port}"
        req = Request(
            method=handler.command,
            path=path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=handler.headers,
            base_url=f"http://{host}",
        )
        self.stats._request_started()
        plan = self._faults.plan(path, req.method)
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            recorded = True
            self.stats._record(RequestRecord(req.method, path, req.headers.get("Range"), status))
            if req.headers.get("Authorization"):
                self.stats._authorized(path)

        try:
            reply = self._reply_for(req, plan)
            body_faults = plan.body if reply.status == 200 else None
            send_reply(handler, req, reply, body_faults, self.stats, self._stopping, path, record)
        except OSError:
            log.debug("fakehub: client went away during %s %s", req.method, path, exc_info=True)
            handler.close_connection = True
        except Exception as exc:
            log.exception("fakehub: error while answering %s %s", req.method, path)
            handler.close_connection = True
            if not recorded:  # nothing went out yet: say what broke instead of hanging up
                oops = error_reply(500, f"fakehub internal error: {exc!r}")
                try:
                    send_reply(handler, req, oops, None, self.stats, self._stopping, path, record)
                except OSError:
                    pass
        finally:
            plan.release()
            self.stats._request_finished()

    def _reply_for(self, req: Request, plan: FaultPlan) -> Reply:
        if plan.reject_status is not None:
            headers = []
            if plan.retry_after is not None:
                ra = plan.retry_after
                headers.append(("Retry-After", str(int(ra)) if float(ra).is_integer() else str(ra)))
            return error_reply(plan.reject_status, f"fakehub: {plan.reason}", headers)
        with self._files_lock:
            plain = self._files.get(req.path)
            redirect = self._redirects.get(req.path)
        if redirect is not None:
            return Reply(status=redirect[0], headers=[("Location", redirect[1])], body=b"")
        if plain is not None:
            return self._plain_reply(plain)
        for service in (self.hf, self.civitai):
            reply = service.handle(req)
            if reply is not None:
                return reply
        return error_reply(404, f"Not Found: {req.path}")

    def _plain_reply(self, f: _PlainFile) -> Reply:
        headers = [("Content-Type", "application/octet-stream")]
        if f.content_disposition is not None:
            headers.append(("Content-Disposition", f.content_disposition))
        entity = Entity(f.source, f.source.stat().st_size, f.current_etag())
        # Without a length the body is close-delimited or chunked, and Range is not offered.
        return Reply(headers=headers, entity=entity, send_length=f.send_content_length, chunked=f.chunked)


def serve(root: Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the folder layout under ``root`` until interrupted (``modeldepot fakehub --root DIR``)."""
    hub = FakeHub(Path(root), host=host, port=port)
    hub.start()
    print(f"fakehub serving {os.fspath(root)} at {hub.url} (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.close()
