"""The fleet's blob tier: an S3-compatible bucket that mirrors ``blobs/`` by digest.

Objects live at ``<prefix>/blobs/<2 hex>/<blake3 hex>``, the layout of the local store, so the
bucket is content-addressed too: an object is never rewritten, only added or deleted. boto3 is
imported on first use (``modeldepot list`` stays light); every botocore error becomes a
``FleetError`` in ``S3BlobTier._translate``, the one place that knows them.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modeldepot._bucket import parse_bucket_url
from modeldepot._fs import NO_SPACE_ERRNOS, no_space_text
from modeldepot.errors import BlobCorruptError, FleetError, InsufficientSpaceError
from modeldepot.storage._blobs import KnownDigest, hash_path, is_digest

_HEX2 = re.compile(r"^[0-9a-f]{2}$")
_QUERY_RE = re.compile(r"\?[^\s\"'>]*")  # a query string in an error text may be a signature
_READ = 1 << 20
_ALIGN = 1 << 20  # ranges start on MiB boundaries
_ATTEMPTS = 3  # GETs of one range before a download gives up
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BucketURL:
    """``s3://bucket/prefix``: where the fleet's blobs live. Never holds a credential."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> BucketURL:
        return cls(*parse_bucket_url(url))

    def key_for(self, digest: str) -> str:
        if not is_digest(digest):
            raise ValueError(f"not a blob digest: {digest!r}")
        return f"{self.blobs_prefix}{digest[:2]}/{digest}"

    @property
    def blobs_prefix(self) -> str:
        return f"{self.prefix}/blobs/" if self.prefix else "blobs/"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class RemoteBlob:
    digest: str
    size: int
    modified: float  # epoch seconds (the object's LastModified)


def _quiet_wire_logs() -> None:
    # At DEBUG, botocore logs every signed request with its headers (Authorization, and the
    # X-Amz-Security-Token of temporary credentials), s3transfer and urllib3 log URLs: a root
    # logger at DEBUG would write secrets to the log. Only loggers nobody configured are touched.
    for name in ("botocore", "boto3", "s3transfer", "urllib3"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


@functools.cache
def _shared_loader() -> Any:
    # botocore's JSON service models, parsed once per process rather than once per session
    # (0.2 s each): they are package data, the same for every session and credential.
    from botocore.loaders import create_loader

    return create_loader()


def _is_aws(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


class S3BlobTier:
    """The bucket side of the fleet's blob store (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        part_size: int = 64 << 20,
        concurrency: int = 8,
    ) -> None:
        self.bucket = BucketURL.parse(url)
        self.url = str(self.bucket)
        self.part_size = max(int(part_size), 5 << 20)  # S3's smallest multipart part
        self.concurrency = max(1, int(concurrency))
        _quiet_wire_logs()
        import boto3.session
        import botocore.session
        from boto3.exceptions import Boto3Error
        from botocore.config import Config
        from botocore.configprovider import ConfiguredEndpointProvider
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError, Boto3Error)
        try:
            # A session reads the standard AWS environment and ~/.aws files; an endpoint_url of None
            # lets botocore apply AWS_ENDPOINT_URL(_S3) or the profile's endpoint_url itself.
            core = botocore.session.Session()
            core.register_component("data_loader", _shared_loader())
            session = boto3.session.Session(botocore_session=core, region_name=region)
            configured = (
                endpoint or ConfiguredEndpointProvider(core.full_config, core.get_scoped_config(), "s3").provide()
            )
            config = Config(
                retries={"mode": "standard"},  # max attempts: AWS_MAX_ATTEMPTS or the profile, else 3
                max_pool_connections=self.concurrency + 2,
                connect_timeout=10,
                read_timeout=60,
                # MinIO, moto, Ceph: <bucket>.<host> names rarely resolve, so address them path-style.
                s3={"addressing_style": "path"} if configured and not _is_aws(configured) else None,
            )
            client = session.client("s3", endpoint_url=endpoint, config=config)
        except self._errors as exc:
            raise self._translate(exc, "setting up the S3 client", endpoint or "(from the AWS configuration)") from exc
        self.client: Any = client
        self.endpoint: str = str(client.meta.endpoint_url)

    def __repr__(self) -> str:
        return f"S3BlobTier({self.url!r}, endpoint={self.endpoint!r})"

    # Errors --------------------------------------------------------------------------------

    def _translate(self, exc: BaseException, what: str, endpoint: str | None = None) -> FleetError:
        """The one mapping of boto3/botocore errors to ``FleetError``. Texts never carry a
        credential, a signature or a presigned URL: only codes, names and our own words."""
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            CredentialRetrievalError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        where = endpoint or getattr(self, "endpoint", None) or "the S3 endpoint"
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            return FleetError(
                f"no usable AWS credentials for {self.url} ({what}): set AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or AWS_PROFILE naming a"
                " profile in ~/.aws/credentials",
                url=self.url,
            )
        if isinstance(exc, ConnectionError):
            return FleetError(f"cannot reach the S3 endpoint {where} ({what}): {type(exc).__name__}", url=self.url)
        if isinstance(exc, ReadTimeoutError):
            return FleetError(f"the S3 endpoint {where} did not answer in time ({what})", url=self.url)
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "")) or "?"
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (status == 404 and exc.operation_name == "HeadBucket"):
                return FleetError(f"bucket {self.bucket.bucket} does not exist at {where}", url=self.url)
            if code in ("NoSuchKey", "404"):
                return FleetError(f"no such object in {self.url} at {where} ({what})", url=self.url)
            if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return FleetError(f"access denied to {self.url} ({what}): {code}", url=self.url)
            message = _QUERY_RE.sub("?...", str(error.get("Message", "")))[:300]
            return FleetError(f"S3 error {code} from {where} ({what}): {message}".rstrip(": "), url=self.url)
        text = _QUERY_RE.sub("?...", str(exc))[:300]
        return FleetError(f"S3 client error at {where} ({what}): {type(exc).__name__}: {text}", url=self.url)

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise self._translate(exc, what) from exc

    # Operations ----------------------------------------------------------------------------

    def check(self) -> None:
        """The bucket exists and these credentials may use it."""
        with self._mapped("checking the bucket"):
            self.client.head_bucket(Bucket=self.bucket.bucket)

    def size_of(self, digest: str) -> int | None:
        """The object's size, or None when the bucket lacks it."""
        from botocore.exceptions import ClientError

        key = self.bucket.key_for(digest)
        with self._mapped(f"looking up {key}"):
            try:
                head = self.client.head_object(Bucket=self.bucket.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise
        return int(head["ContentLength"])

    def upload(self, digest: str, path: Path) -> bool:
        """Send ``path`` as the object of ``digest``; False (nothing sent) when an object of that
        size is there already: content-addressed, the same size means the same bytes."""
        from s3transfer.manager import TransferConfig, TransferManager

        size = path.stat().st_size
        if self.size_of(digest) == size:
            return False
        key = self.bucket.key_for(digest)
        config = TransferConfig(
            multipart_threshold=self.part_size + 1,  # multipart only for files bigger than a part
            multipart_chunksize=self.part_size,
            max_request_concurrency=self.concurrency,
        )
        with self._mapped(f"uploading {key}"), TransferManager(self.client, config) as manager:
            manager.upload(str(path), self.bucket.bucket, key).result()
        return True

    def download(
        self,
        digest: str,
        dest: Path,
        *,
        size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> KnownDigest:
        """Fetch the object of ``digest`` into the new file ``dest`` and verify it; ranged GETs
        in parallel for objects bigger than a part. On any error nothing is left at ``dest``."""
        key = self.bucket.key_for(digest)
        if size is None:
            size = self.size_of(digest)
            if size is None:
                raise FleetError(f"s3://{self.bucket.bucket}/{key} does not exist", url=self.url)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            try:
                _preallocate(fd, size)
                with self._mapped(f"downloading {key}"):
                    if size <= self.part_size:
                        self._fetch_range(fd, key, 0, size, size, progress=progress)
                    else:
                        self._get_parallel(fd, key, size, progress)
                os.fsync(fd)
            finally:
                os.close(fd)
            got = hash_path(dest)
            if got != digest:
                raise BlobCorruptError(
                    f"s3://{self.bucket.bucket}/{key} holds other bytes (blake3 {got}): the bucket copy is"
                    " damaged; delete it and push the blob again from a worker that has it",
                    path=dest,
                )
            st = dest.stat()
        except BaseException as exc:
            dest.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
                raise InsufficientSpaceError(f"{no_space_text(dest.parent, size)} (fetching {key})") from exc
            raise
        return KnownDigest(digest, (st.st_ino, st.st_size, st.st_mtime_ns))

    def _ranges(self, size: int) -> list[tuple[int, int]]:
        """At most ``concurrency`` ranges of at least ``part_size`` (1 MiB aligned): each GET is
        one stream of its own, and no more requests than streams (servers that read the whole
        object for every range, like moto, pay per request)."""
        count = max(1, min(self.concurrency, -(-size // self.part_size)))
        step = -(-size // count)
        step = -(-step // _ALIGN) * _ALIGN
        return [(start, min(start + step, size)) for start in range(0, size, step)]

    def _get_parallel(self, fd: int, key: str, size: int, progress: Callable[[int], None] | None) -> None:
        stop = threading.Event()

        def piece(start: int, end: int) -> None:
            try:
                self._fetch_range(fd, key, start, end, size, progress=progress, stop=stop)
            except BaseException:
                stop.set()  # the other pieces give up at their next read
                raise

        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-get")
        try:
            futures = [pool.submit(piece, start, end) for start, end in self._ranges(size)]
            for future in futures:
                future.result()
        except BaseException:
            stop.set()  # also on Ctrl-C in this thread: no piece goes on writing into a removed file
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_range(
        self,
        fd: int,
        key: str,
        start: int,
        end: int,
        total: int,
        *,
        progress: Callable[[int], None] | None,
        stop: threading.Event | None = None,
    ) -> None:
        """Bytes ``[start, end)`` into ``fd``; a connection that breaks mid-body is asked again
        from the byte it reached (a few times), not from the start."""
        offset = start
        for _attempt in range(_ATTEMPTS):
            offset = self._get(fd, key, offset, end, total, progress=progress, stop=stop)
            if offset >= end or (stop is not None and stop.is_set()):
                return
            log.info("s3: %s broke off at byte %d of %d; asking again from there", key, offset, total)
        raise FleetError(
            f"the connection to {self.endpoint} broke {_ATTEMPTS} times while fetching"
            f" s3://{self.bucket.bucket}/{key} (at byte {offset} of {total})",
            url=self.url,
        )

    def _get(
        self,
        fd: int,
        key: str,
        start: int,
        end: int,
        total: int,
        *,
        progress: Callable[[int], None] | None,
        stop: threading.Event | None = None,
    ) -> int:
        """Bytes ``[start, end)`` of the object (one GET when that is all of it, else a ranged
        one) written at the same offsets of ``fd``; returns the offset reached (``end``, or less
        when the connection broke off mid-body)."""
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError

        ranged = end - start < total
        kwargs: dict[str, Any] = {"Bucket": self.bucket.bucket, "Key": key}
        if ranged:
            kwargs["Range"] = f"bytes={start}-{end - 1}"
        try:
            answer = self.client.get_object(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            whole = -1  # the object is shorter than the blob
        else:  # the object's size: ContentLength, or "bytes a-b/<size>" in a ranged answer's ContentRange
            size = str(answer.get("ContentRange", "")).rpartition("/")[2] if ranged else str(answer["ContentLength"])
            whole = int(size) if size.isdigit() else -1
        if whole != total:
            if whole >= 0:
                answer["Body"].close()
            raise BlobCorruptError(
                f"s3://{self.bucket.bucket}/{key} is not {total} bytes long like its blob: the bucket copy is damaged"
            )
        body, offset = answer["Body"], start
        try:
            while offset < end:
                if stop is not None and stop.is_set():
                    return offset
                try:
                    chunk = body.read(min(_READ, end - offset))
                except (BotoCoreError, HTTPError, ConnectionError, TimeoutError):
                    return offset  # broke off: the caller asks again from here
                if not chunk:
                    return offset
                view = memoryview(chunk)
                while view:
                    n = os.pwrite(fd, view, offset)
                    view, offset = view[n:], offset + n
                    if progress is not None:
                        progress(n)
        finally:
            body.close()
        return offset

    def abort_stale_uploads(self, older_than: float) -> int:
        """Abort multipart uploads under the blobs prefix begun more than ``older_than`` seconds
        ago (a worker killed mid-upload leaves its parts, which the bucket keeps and bills)."""
        cutoff = time.time() - older_than
        aborted = 0
        with self._mapped(f"listing unfinished uploads in {self.url}"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket.bucket, Prefix=self.bucket.blobs_prefix
            )
            for page in pages:
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"].timestamp() < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
        return aborted

    def delete(self, digest: str) -> None:
        key = self.bucket.key_for(digest)
        with self._mapped(f"deleting {key}"):
            self.client.delete_object(Bucket=self.bucket.bucket, Key=key)

    def list(self) -> Iterator[RemoteBlob]:
        """Every blob in the bucket (keys that are not ``<prefix>/blobs/<2 hex>/<digest>`` skipped)."""
        base = self.bucket.blobs_prefix
        with self._mapped(f"listing {self.url}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket.bucket, Prefix=base)
            for page in pages:
                for obj in page.get("Contents", ()):
                    shard, _, digest = str(obj["Key"])[len(base) :].partition("/")
                    if _HEX2.match(shard) and is_digest(digest) and digest.startswith(shard):
                        yield RemoteBlob(digest, int(obj["Size"]), obj["LastModified"].timestamp())


def _preallocate(fd: int, size: int) -> None:
    """Reserve the file's blocks up front (a full disk fails here, not half-way); a filesystem
    or platform that cannot allocate ahead just gets the size."""
    try:
        os.posix_fallocate(fd, 0, size)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)
