"""``strip_secrets`` (sources fit to store) and secret names however they are percent-encoded."""

from __future__ import annotations

import pytest

from modeldepot.download import strip_secrets
from modeldepot.download._redact import is_secret_name, redact_url
from modeldepot.remote import parse_source


@pytest.mark.parametrize(
    ("source", "stored"),
    [
        (
            "https://civitai.com/api/download/models/1?type=Model&token=abc&format=SafeTensor",
            "https://civitai.com/api/download/models/1?type=Model&format=SafeTensor",
        ),
        (
            "https://s3.example/b/m.safetensors?X-Amz-Credential=a&X-Amz-Signature=b&x-id=GetObject&Expires=9",
            "https://s3.example/b/m.safetensors?x-id=GetObject&Expires=9",
        ),
        ("https://h.example/m?sig=a&Signature=b&X-Goog-Signature=c&v=1", "https://h.example/m?v=1"),
        # Encoded names are secrets too; other parameters keep their exact spelling.
        ("https://h.example/m?api%5Fkey=a&q=b%20c", "https://h.example/m?q=b%20c"),
        ("https://h.example/m?%74oken=a&%2574oken=b&rev=main", "https://h.example/m?rev=main"),
        ("https://user:pw@h.example/m#access_token=a", "https://h.example/m"),
        ("https://TOKEN@h.example/m", "https://h.example/m"),
        ("civitai:12?file=a.safetensors&token=x", "civitai:12?file=a.safetensors"),
        # Not URLs, or nothing secret: unchanged, byte for byte.
        ("http://h.example/plain?rev=main&b=%2F", "http://h.example/plain?rev=main&b=%2F"),
        ("org/name:fp16:vae", "org/name:fp16:vae"),
        ("/models/a?token=b.safetensors", "/models/a?token=b.safetensors"),
        ("C:\\models\\x.safetensors", "C:\\models\\x.safetensors"),
        ("urn:air:sdxl:lora:civitai:1@2", "urn:air:sdxl:lora:civitai:1@2"),
    ],
)
def test_strip_secrets(source: str, stored: str) -> None:
    assert strip_secrets(source) == stored


@pytest.mark.parametrize(
    "name", ["token", "api_key", "api%5Fkey", "%61pi_key", "%74oken", "%2574oken", "X-Amz-Signature"]
)
def test_secret_names_are_decoded_before_matching(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["type", "format", "rev", "modelVersionId", "file", "x-id"])
def test_ordinary_names_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_url_masks_encoded_names() -> None:
    assert "abc" not in redact_url("https://h.example/m?api%5Fkey=abc&v=1")


def test_a_url_source_shows_no_secret_but_keeps_it_for_the_download() -> None:
    url = "https://h.example/m.safetensors?v=2&token=abc123"
    source = parse_source(url)
    assert source.url == url  # type: ignore[union-attr]
    assert str(source) == "https://h.example/m.safetensors?v=2"
    assert "abc123" not in repr(source)
    assert str(parse_source(str(source))) == str(source)
