from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldepot.manager import ModelManager
from modeldepot.testing.factories import write_esrgan
from modeldepot.testing.fakehub import FakeHub


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


@pytest.fixture
def depot(tmp_path: Path, hub: FakeHub) -> Iterator[ModelManager]:
    with ModelManager.open(
        home=tmp_path / "depot", allow_private_urls=True, link_modes=["hardlink", "copy"], hf_endpoint=hub.url
    ) as m:
        yield m


@pytest.fixture
def nataili(tmp_path: Path) -> Path:
    return tmp_path / "nataili"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(files: list[tuple[str, str | None, str]], *, type: str = "realesrgan", **more: Any) -> dict[str, Any]:
    """A reference entry: ``files`` are (relative path, sha256 or None, url)."""
    return {
        "name": more.pop("name", "test model"),
        "type": type,
        "config": {
            "files": [{"path": p, **({"sha256sum": h} if h else {})} for p, h, _ in files],
            "download": [
                {"file_name": Path(p).name, "file_path": str(Path(p).parent) if "/" in p else "", "file_url": u}
                for p, _, u in files
            ],
        },
        "available": False,
        **more,
    }


@pytest.fixture
def write_reference(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(entries: dict[str, Any]) -> Path:
        path = tmp_path / f"reference-{len(list(tmp_path.glob('reference-*')))}.json"
        path.write_text(json.dumps(entries), encoding="utf-8")
        return path

    return write


@pytest.fixture
def esrgan_bytes(tmp_path: Path) -> bytes:
    return write_esrgan(tmp_path / "tiny-esrgan.pth", nf=8, gc=4, num_blocks=1).read_bytes()


@pytest.fixture
def esrgan_reference(hub: FakeHub, esrgan_bytes: bytes, write_reference: Callable[[dict[str, Any]], Path]) -> Path:
    url = hub.add_file("releases/tiny_x4.pth", esrgan_bytes)
    wrong = hub.add_file("releases/wrong.pth", esrgan_bytes + b"")
    return write_reference(
        {
            # Uppercase, as Civitai and 45 of the AI Horde's sums are: compared case-insensitively.
            "tiny_x4": entry([("tiny_x4.pth", sha256(esrgan_bytes).upper(), url)], download_all=True),
            "wrong_sum": entry([("wrong.pth", "0" * 64, wrong)]),
            "no_sum": entry([("nosum.pth", None, url)]),
        }
    )
