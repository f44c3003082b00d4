"""The S3 blob tier against a real S3-compatible server over HTTP (moto on 127.0.0.1): the bucket
mirrors blobs/ by digest, big objects go up multipart and come down as parallel ranged GETs, every
download is verified, and every failure is a FleetError that names the fault without a secret."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fleet.conftest import isolate_aws_env

from modeldepot.errors import BlobCorruptError, ConfigurationError, FleetError
from modeldepot.fleet._s3 import BucketURL, RemoteBlob, S3BlobTier
from modeldepot.storage._blobs import hash_path
from modeldepot.testing.s3server import LocalS3

pytestmark = pytest.mark.slow
MiB = 1 << 20
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def _blob(tmp_path: Path, size: int, name: str = "blob", seed: bytes | None = None) -> tuple[str, Path]:
    path = tmp_path / name
    path.write_bytes(os.urandom(size) if seed is None else (seed * (size // len(seed) + 1))[:size])
    return hash_path(path), path


def _calls(tier: S3BlobTier, *operations: str) -> list[tuple[str, dict[str, Any], int]]:
    """Records (operation, parameters, thread) of every call of ``operations`` the client makes."""
    seen: list[tuple[str, dict[str, Any], int]] = []
    for op in operations:

        def hook(params: dict[str, Any], op: str = op, **_: Any) -> None:
            seen.append((op, dict(params), threading.get_ident()))

        tier.client.meta.events.register(f"provide-client-params.s3.{op}", hook)
    return seen


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# BucketURL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "text"),
    [
        ("s3://models", "models", "", "s3://models"),
        ("s3://models/", "models", "", "s3://models"),
        ("s3://my.models-01/team/sd", "my.models-01", "team/sd", "s3://my.models-01/team/sd"),
        ("  s3://models//team//sd/  ", "models", "team/sd", "s3://models/team/sd"),
    ],
)
def test_bucket_url_parses(url: str, bucket: str, prefix: str, text: str) -> None:
    parsed = BucketURL.parse(url)
    assert (parsed.bucket, parsed.prefix, str(parsed)) == (bucket, prefix, text)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://models/x", "s3://"),
        ("models/x", "s3://"),
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        (f"s3://AKIAEXAMPLE:{SECRET}@models/x", "credentials"),
        (f"s3://{SECRET}@models", "credentials"),
        (f"s3://models/x?X-Amz-Signature={SECRET}", "query"),
        (f"s3://models/x#{SECRET}", "fragment"),
        ("s3://Models/x", "not a valid S3 bucket name"),
        ("s3://ab/x", "not a valid S3 bucket name"),
        ("s3://a..b/x", "not a valid S3 bucket name"),
        ("s3://192.168.1.10/x", "not a valid S3 bucket name"),
        ("s3://models:9000/x", "not a valid S3 bucket name"),
        ("s3://models/a/../b", "not a plain folder path"),
    ],
)
def test_bucket_url_refusals_name_the_setting_and_no_secret(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match="blob_remote") as caught:
        BucketURL.parse(url)
    assert says in str(caught.value)
    assert SECRET not in str(caught.value) and "AKIAEXAMPLE" not in str(caught.value)


def test_tier_refuses_a_bad_url_before_touching_the_network() -> None:
    with pytest.raises(ConfigurationError, match="credentials"):
        S3BlobTier(f"s3://key:{SECRET}@models", endpoint="http://127.0.0.1:9")


def test_key_layout_mirrors_the_blob_store() -> None:
    digest = "ab" + "0" * 62
    assert BucketURL.parse("s3://models/team/sd").key_for(digest) == f"team/sd/blobs/ab/{digest}"
    assert BucketURL.parse("s3://models").key_for(digest) == f"blobs/ab/{digest}"
    with pytest.raises(ValueError, match="digest"):
        BucketURL.parse("s3://models").key_for("../../etc/passwd")


# Round trips -------------------------------------------------------------------------------


@pytest.fixture
def tier(bucket_url: str) -> S3BlobTier:
    return S3BlobTier(bucket_url, part_size=5 * MiB, concurrency=4)


def test_upload_then_size_of_and_list(tier: S3BlobTier, tmp_path: Path) -> None:
    digest, path = _blob(tmp_path, 300_000)
    empty_digest, empty = _blob(tmp_path, 0, name="empty")
    assert tier.size_of(digest) is None
    assert tier.upload(digest, path) is True
    assert tier.upload(empty_digest, empty) is True
    assert tier.size_of(digest) == 300_000
    assert tier.size_of(empty_digest) == 0
    head = tier.client.head_object(Bucket=tier.bucket.bucket, Key=f"fleet-test/blobs/{digest[:2]}/{digest}")
    assert head["ContentLength"] == 300_000

    # Keys that are not <prefix>/blobs/<2 hex>/<digest> are not blobs.
    other = "cd" + "1" * 62
    for junk in (
        f"fleet-test/blobs/{digest[:2]}/{digest}.part",
        f"fleet-test/blobs/zz/{digest}",
        f"fleet-test/blobs/{other[:2]}/{digest}",  # shard does not match the digest
        f"fleet-test/blobs/{digest}",
        "fleet-test/notes.txt",
        f"fleet-test2/blobs/{other[:2]}/{other}",  # a neighbouring prefix
        f"blobs/{other[:2]}/{other}",
    ):
        tier.client.put_object(Bucket=tier.bucket.bucket, Key=junk, Body=b"junk")
    listed = {b.digest: b for b in tier.list()}
    assert set(listed) == {digest, empty_digest}
    assert isinstance(listed[digest], RemoteBlob)
    assert listed[digest].size == 300_000
    assert abs(listed[digest].modified - os.path.getmtime(path)) < 600


def test_list_pages_through_many_objects(tier: S3BlobTier, tmp_path: Path) -> None:
    digests = set()
    for i in range(7):
        digest = f"{i:064x}"
        tier.client.put_object(Bucket=tier.bucket.bucket, Key=tier.bucket.key_for(digest), Body=b"")
        digests.add(digest)
    calls = _calls(tier, "ListObjectsV2")

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params["MaxKeys"] = 3  # what a bucket of thousands of blobs does at 1000 keys a page

    tier.client.meta.events.register("provide-client-params.s3.ListObjectsV2", small_pages)
    assert {b.digest for b in tier.list()} == digests
    assert len(calls) == 3


def test_upload_of_content_already_there_sends_nothing(tier: S3BlobTier, tmp_path: Path) -> None:
    digest, path = _blob(tmp_path, 100_000)
    assert tier.upload(digest, path)
    calls = _calls(tier, "PutObject", "CreateMultipartUpload", "UploadPart")
    assert tier.upload(digest, path) is False
    assert calls == []
    # An object of another size under the digest (a torn upload elsewhere) is replaced.
    tier.client.put_object(Bucket=tier.bucket.bucket, Key=tier.bucket.key_for(digest), Body=b"short")
    calls.clear()
    assert tier.upload(digest, path) is True
    assert [c[0] for c in calls] == ["PutObject"]
    assert tier.size_of(digest) == 100_000


def test_big_blob_goes_up_multipart_and_comes_down_in_parallel_ranges(tier: S3BlobTier, tmp_path: Path) -> None:
    digest, path = _blob(tmp_path, 12 * MiB)
    calls = _calls(tier, "PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "GetObject")
    assert tier.upload(digest, path)
    ops = [c[0] for c in calls]
    assert ops.count("CreateMultipartUpload") == 1 and ops.count("CompleteMultipartUpload") == 1
    assert ops.count("UploadPart") == 3 and "PutObject" not in ops
    assert tier.size_of(digest) == 12 * MiB

    calls.clear()
    seen: list[int] = []
    lock = threading.Lock()

    def progress(n: int) -> None:
        with lock:
            seen.append(n)

    dest = tmp_path / "incoming-big"
    known = tier.download(digest, dest, size=12 * MiB, progress=progress)
    gets = [c for c in calls if c[0] == "GetObject"]
    ranges = sorted(str(c[1].get("Range")) for c in gets)
    # No more ranges than streams (concurrency 4 here), none under part_size, on MiB boundaries.
    assert ranges == ["bytes=0-4194303", "bytes=4194304-8388607", "bytes=8388608-12582911"]
    assert len({c[2] for c in gets}) >= 2, "the ranged GETs ran in one thread"
    assert threading.get_ident() not in {c[2] for c in gets}
    assert sum(seen) == 12 * MiB
    assert dest.read_bytes() == path.read_bytes()
    st = dest.stat()
    assert known.digest == digest and known.holds_for(st)


def test_ranges_are_no_more_than_the_streams(tier: S3BlobTier) -> None:
    tier.concurrency, tier.part_size = 5, 64 * MiB
    ranges = tier._ranges(1024 * MiB)
    assert len(ranges) == 5 and ranges[0] == (0, 205 * MiB) and ranges[-1][1] == 1024 * MiB
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert tier._ranges(100 * MiB) == [(0, 50 * MiB), (50 * MiB, 100 * MiB)]
    assert tier._ranges(10 * MiB) == [(0, 10 * MiB)]


def test_a_connection_broken_mid_body_is_resumed_from_the_byte_reached(tier: S3BlobTier, tmp_path: Path) -> None:
    from urllib3.exceptions import ProtocolError

    digest, path = _blob(tmp_path, 12 * MiB)
    assert tier.upload(digest, path)
    real_get = tier.client.get_object
    asked: list[str] = []

    class Breaks:
        """The first answer's body breaks off after 1 MiB, as a dropped connection does."""

        def __init__(self, body: Any) -> None:
            self.body, self.sent = body, 0

        def read(self, n: int) -> bytes:
            if self.sent >= MiB:
                raise ProtocolError("Connection broken: IncompleteRead")
            chunk: bytes = self.body.read(min(n, MiB - self.sent))
            self.sent += len(chunk)
            return chunk

        def close(self) -> None:
            self.body.close()

    def get_object(**kwargs: Any) -> Any:
        answer = real_get(**kwargs)
        asked.append(str(kwargs.get("Range")))
        if len(asked) == 1:
            answer["Body"] = Breaks(answer["Body"])
        return answer

    tier.client.get_object = get_object
    tier.concurrency = 1  # one stream: the order of the GETs is known
    dest = tmp_path / "incoming-resumed"
    tier.download(digest, dest, size=12 * MiB)
    assert dest.read_bytes() == path.read_bytes()
    # One stream: the whole object in one GET, then the rest from the byte the first one reached.
    assert asked == ["None", f"bytes={MiB}-{12 * MiB - 1}"]


def test_small_blob_comes_down_in_one_get_and_size_is_looked_up(tier: S3BlobTier, tmp_path: Path) -> None:
    digest, path = _blob(tmp_path, 3 * MiB)
    assert tier.upload(digest, path)
    calls = _calls(tier, "GetObject", "HeadObject")
    dest = tmp_path / "incoming-small"
    known = tier.download(digest, dest)  # no size: HEAD first
    assert [(c[0], c[1].get("Range")) for c in calls] == [("HeadObject", None), ("GetObject", None)]
    assert dest.read_bytes() == path.read_bytes()
    assert known.holds_for(dest.stat())


@pytest.mark.parametrize("size", [200_000, 6 * MiB + 1], ids=["one-get", "ranged"])
@pytest.mark.parametrize("evil", ["same-size", "shorter", "longer"])
def test_tampered_object_is_refused_and_leaves_no_file(tier: S3BlobTier, tmp_path: Path, size: int, evil: str) -> None:
    digest, path = _blob(tmp_path, size)
    assert tier.upload(digest, path)
    key = tier.bucket.key_for(digest)
    other = {"same-size": size, "shorter": size - 1000, "longer": size + 1000}[evil]
    _, bad = _blob(tmp_path, other, name="evil", seed=b"evil")
    tier.client.upload_file(str(bad), tier.bucket.bucket, key)
    folder = tmp_path / "tmp"
    folder.mkdir()
    dest = folder / "incoming-evil"
    with pytest.raises(BlobCorruptError) as caught:
        tier.download(digest, dest, size=size)
    assert key in str(caught.value)
    assert os.listdir(folder) == []


def test_download_of_a_missing_object_is_a_fleet_error(tier: S3BlobTier, tmp_path: Path) -> None:
    digest = "ef" * 32
    dest = tmp_path / "incoming"
    with pytest.raises(FleetError, match="does not exist"):
        tier.download(digest, dest)
    with pytest.raises(FleetError, match="no such object"):
        tier.download(digest, dest, size=10)
    assert not dest.exists()


def test_download_never_overwrites_an_existing_file(tier: S3BlobTier, tmp_path: Path) -> None:
    digest, path = _blob(tmp_path, 1000)
    assert tier.upload(digest, path)
    dest = tmp_path / "taken"
    dest.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        tier.download(digest, dest)
    assert dest.read_bytes() == b"mine"


def test_stale_multipart_uploads_are_aborted(tier: S3BlobTier) -> None:
    """A worker killed mid-upload leaves parts the bucket keeps; the gc aborts old ones only."""
    digest = "cd" * 32
    key = tier.bucket.key_for(digest)
    started = tier.client.create_multipart_upload(Bucket=tier.bucket.bucket, Key=key)
    initiated = tier.client.list_multipart_uploads(Bucket=tier.bucket.bucket)["Uploads"][0]["Initiated"].timestamp()
    # (moto says every upload began on 2010-11-10: the cutoffs are taken around what it reports)
    assert tier.abort_stale_uploads(older_than=time.time() - initiated + 3600) == 0
    assert tier.abort_stale_uploads(older_than=time.time() - initiated - 60) == 1
    listed = tier.client.list_multipart_uploads(Bucket=tier.bucket.bucket).get("Uploads", [])
    assert started["UploadId"] not in {u["UploadId"] for u in listed}


def test_delete_removes(tier: S3BlobTier, tmp_path: Path) -> None:
    digest, path = _blob(tmp_path, 1000)
    assert tier.upload(digest, path)
    tier.delete(digest)
    assert tier.size_of(digest) is None
    assert list(tier.list()) == []
    tier.delete(digest)  # already gone is fine


def test_endpoint_from_the_environment_uses_path_style(s3: LocalS3, bucket_url: str, monkeypatch: Any) -> None:
    # "localhost" would be addressed as <bucket>.localhost virtual-host style, which no local server answers.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint.replace("127.0.0.1", "localhost"))
    tier = S3BlobTier(bucket_url)
    assert tier.endpoint == s3.endpoint.replace("127.0.0.1", "localhost")
    tier.check()
    assert tier.url == bucket_url and repr(tier).startswith("S3BlobTier('s3://")


# Failures ----------------------------------------------------------------------------------


def test_missing_bucket(s3: LocalS3, bucket_url: str, tmp_path: Path) -> None:
    tier = S3BlobTier("s3://no-such-bucket-here/x", endpoint=s3.endpoint)
    with pytest.raises(FleetError, match=f"bucket no-such-bucket-here does not exist at {s3.endpoint}") as caught:
        tier.check()
    assert caught.value.url == "s3://no-such-bucket-here/x"
    digest, path = _blob(tmp_path, 1000)
    with pytest.raises(FleetError, match="does not exist"):
        tier.upload(digest, path)
    with pytest.raises(FleetError, match="does not exist"):
        list(tier.list())


def test_unreachable_endpoint(bucket_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    tier = S3BlobTier(bucket_url, endpoint=endpoint)
    assert tier.endpoint == endpoint
    with pytest.raises(FleetError, match=f"cannot reach the S3 endpoint {endpoint}"):
        tier.check()
    with pytest.raises(FleetError, match="cannot reach"):
        tier.download("ab" * 32, tmp_path / "incoming", size=10)
    assert not (tmp_path / "incoming").exists()


def test_no_credentials(s3: LocalS3, bucket_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_env(monkeypatch, tmp_path)
    tier = S3BlobTier(bucket_url, endpoint=s3.endpoint, region="us-east-1")
    with pytest.raises(FleetError, match="AWS_ACCESS_KEY_ID") as caught:
        tier.check()
    assert "AWS_PROFILE" in str(caught.value) and bucket_url in str(caught.value)


def test_access_denied_names_the_bucket_not_the_secret(
    s3: LocalS3, bucket_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRET + "-token")
    tier = S3BlobTier(bucket_url)

    def reset_auth(count: str) -> None:
        headers = {"Content-Type": "text/plain"}
        urllib.request.urlopen(urllib.request.Request(f"{s3.endpoint}/moto-api/reset-auth", count.encode(), headers))

    reset_auth("0")  # moto checks signatures and keys from now on
    try:
        with pytest.raises(FleetError, match=f"access denied to {bucket_url}") as caught:
            tier.check()
    finally:
        reset_auth("inf")
    text = f"{caught.value} {caught.value.url}"
    assert SECRET not in text and "Signature" not in text


def test_wire_logs_stay_quiet_under_a_debug_root_logger(
    bucket_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("botocore", "boto3", "s3transfer", "urllib3"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    tier = S3BlobTier(bucket_url)
    digest, path = _blob(tmp_path, 1000)
    tier.upload(digest, path)
    assert logging.getLogger("botocore").level == logging.WARNING
    assert SECRET not in caplog.text and "Authorization" not in caplog.text


def test_module_import_does_not_import_boto3() -> None:
    code = (
        "import sys, modeldepot.fleet._s3\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer', 'moto')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# The server as a process -------------------------------------------------------------------


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modeldepot.testing.s3server", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_server_module_serves_until_sigterm(
    server_process: Callable[..., subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proc = server_process("--bucket", "from-cli")
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    assert line.startswith("endpoint http://127.0.0.1:"), line + proc.stderr.read()
    endpoint = line.split()[1]
    isolate_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    tier = S3BlobTier("s3://from-cli/p", endpoint=endpoint, region="us-east-1")
    tier.check()
    digest, path = _blob(tmp_path, 5000)
    assert tier.upload(digest, path)
    assert [b.digest for b in tier.list()] == [digest]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out == "" and "HTTP/1.1" not in err, (out, err)  # no request log
