"""A real S3-compatible server over HTTP on 127.0.0.1 (moto's server mode), for tests and benchmarks.

    with LocalS3() as s3:
        os.environ.update(s3.env())
        url = s3.make_bucket("fleet")          # "s3://fleet"

or, for other processes: ``python -m modeldepot.testing.s3server [--port N] [--bucket NAME]``
prints ``endpoint http://127.0.0.1:PORT`` and serves until SIGTERM/SIGINT.

moto keeps its buckets in module-level state: every LocalS3 in one process serves the same buckets.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
#: moto accepts any key; these only have to be present for botocore to sign.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


def available() -> str | None:
    """None when the server can run here, else why not (a pytest skip reason)."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        return f"moto[server] and boto3 are needed for a local S3 server (pip install -e '.[dev]'): {exc}"
    return None


class LocalS3:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1, in a daemon thread of this process."""

    def __init__(self, port: int = 0) -> None:
        self.port = port  # 0: a free one, known after start()
        self.endpoint = ""
        self._server: Any = None
        self._client: Any = None

    def start(self) -> str:
        if self._server is not None:
            return self.endpoint
        from moto.server import ThreadedMotoServer

        if self.port:
            # ThreadedMotoServer.start() waits forever when its thread cannot bind: fail here instead.
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((HOST, self.port))
        # werkzeug logs one line per request at INFO (onto stderr when nobody set up logging).
        quiet = logging.getLogger("werkzeug")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        server.start()
        self._server = server
        self.port = int(server.get_host_and_port()[1])
        self.endpoint = f"http://{HOST}:{self.port}"
        return self.endpoint

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        inner = getattr(server, "_server", None)  # stop() leaves the listening socket open
        if inner is not None:
            inner.server_close()

    def __enter__(self) -> LocalS3:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The AWS environment that points boto3 (and modeldepot's fleet) at this server."""
        if not self.endpoint:
            raise RuntimeError("LocalS3.env() before start()")
        return {**CREDENTIALS, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        """A boto3 S3 client of this server (path-style, dummy credentials), made once."""
        import boto3
        from botocore.config import Config

        if self._client is not None and self._client.meta.endpoint_url == self.endpoint:
            return self._client
        self._client = boto3.client(
            "s3",
            endpoint_url=self.env()["AWS_ENDPOINT_URL"],
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )
        return self._client

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (already there is fine); returns ``s3://name``."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return f"s3://{name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeldepot.testing.s3server",
        description="Serve a local S3-compatible endpoint (moto) on 127.0.0.1 until SIGTERM/SIGINT.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket (repeatable)")
    args = parser.parse_args(argv)
    why = available()
    if why:
        print(why, file=sys.stderr)
        return 2
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with LocalS3(args.port) as s3:
        for name in args.bucket:
            s3.make_bucket(name)
        print(f"endpoint {s3.endpoint}", flush=True)
        while not done.wait(3600):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
