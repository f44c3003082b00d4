"""Fixtures: a real S3-compatible server on 127.0.0.1 for the session, a fresh bucket per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.testing.s3server import LocalS3, available


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    """A started ``LocalS3`` (moto's server mode), shared by the session."""
    why = available()
    if why:
        pytest.skip(why)
    with LocalS3() as server:
        yield server


def isolate_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS variable, profile, config file or instance metadata of the machine reaches a test."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def bucket_url(s3: LocalS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A new empty bucket on ``s3`` and the AWS environment pointing at it: ``s3://<bucket>/fleet-test``."""
    name = f"md-{uuid.uuid4().hex[:20]}"
    s3.make_bucket(name)
    isolate_aws_env(monkeypatch, tmp_path)
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return f"s3://{name}/fleet-test"
