"""Request bodies are bounded (``api_max_body_bytes``): 413 in the API's JSON error shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _api_helpers import Sources, wait_job
from fastapi.testclient import TestClient
from starlette.types import Message

from modeldepot.api._limits import BodyLimitMiddleware
from modeldepot.api.app import create_app
from modeldepot.manager import ModelManager
from modeldepot.testing.fakehub import FakeHub

MiB = 1024 * 1024
DEFAULT_LIMIT = 4 * MiB


def _huge_overrides(size: int) -> bytes:
    return json.dumps({"description": "x" * size}).encode()


def test_a_declared_body_over_the_limit_is_413(client: TestClient, sources: Sources) -> None:
    r = client.post(
        "/api/v2/models/install",
        params={"source": sources.lora},
        content=_huge_overrides(5 * MiB),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "Request Entity Too Large"
    assert f"at most {DEFAULT_LIMIT} bytes" in body["detail"] and "api_max_body_bytes" in body["detail"]
    assert client.get("/api/v2/models/install").json() == []  # nothing was started


def test_a_chunked_body_over_the_limit_is_413(client: TestClient, sources: Sources) -> None:
    data = _huge_overrides(5 * MiB)
    chunks = (data[i : i + 64 * 1024] for i in range(0, len(data), 64 * 1024))
    r = client.post(
        "/api/v2/models/install",
        params={"source": sources.lora},
        content=chunks,  # no Content-Length: sent chunked, so only counting can catch it
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert f"over {DEFAULT_LIMIT} bytes" in r.json()["detail"]
    assert client.get("/api/v2/models/install").json() == []


def test_normal_install_requests_still_work(client: TestClient, sources: Sources) -> None:
    description = "y" * 90_000  # as long as the schema allows: well within the byte limit
    r = client.post(
        "/api/v2/models/install", params={"source": sources.lora}, json={"name": "fits", "description": description}
    )
    assert r.status_code == 201, r.text[:500]
    job = wait_job(client.get, r.json()["id"])
    assert job["status"] == "completed", job
    assert job["config_out"]["name"] == "fits" and job["config_out"]["description"] == description


def install_with_body(client: TestClient, source: str, body: bytes) -> Any:
    headers = {"Content-Type": "application/json"}
    return client.post("/api/v2/models/install", params={"source": source}, content=body, headers=headers)


@pytest.fixture
def small_limit(tmp_path: Path, hub: FakeHub) -> Iterator[TestClient]:
    with (
        ModelManager.open(
            home=tmp_path / "small",
            hf_endpoint=hub.url,
            allow_private_urls=True,
            api_max_body_bytes=2048,
        ) as m,
        TestClient(create_app(m)) as c,
    ):
        yield c


def test_the_limit_is_a_setting(small_limit: TestClient, sources: Sources) -> None:
    r = install_with_body(small_limit, sources.lora, _huge_overrides(4096))
    assert r.status_code == 413 and "at most 2048 bytes" in r.json()["detail"]
    r = install_with_body(small_limit, sources.lora, json.dumps({"name": "fits"}).encode())
    assert r.status_code == 201, r.text


class _App:
    """An ASGI app that reads the whole body, then answers 200 (and records what it saw)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})


def test_counting_stops_reading_at_the_limit_and_answers_once() -> None:
    pulled: list[int] = []
    sent: list[Message] = []

    async def receive() -> Message:
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # never ends

    async def send(message: Message) -> None:
        sent.append(message)

    app = _App()
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(BodyLimitMiddleware(app, max_bytes=4500)(scope, receive, send))
    assert len(pulled) == 5  # 5000 bytes: the first read past 4500, and no more
    assert app.messages[-1] == {"type": "http.disconnect"}
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [413]  # the app's own 200 was dropped
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert body["error"] == "Request Entity Too Large" and "over 4500 bytes" in body["detail"]


def test_bodies_within_the_limit_pass_untouched() -> None:
    chunks = [b"a" * 100, b"b" * 100]
    sent: list[Message] = []

    async def receive() -> Message:
        body = chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    app = _App()
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"200")]}
    asyncio.run(BodyLimitMiddleware(app, max_bytes=200)(scope, receive, send))
    assert [m.get("body") for m in app.messages] == [b"a" * 100, b"b" * 100]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"read it all"
