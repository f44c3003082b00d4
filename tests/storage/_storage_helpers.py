"""Helpers: a store over a home folder, and tiny diffusers-like pipelines made of random bytes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from modeldepot._db import Database
from modeldepot.config import DepotConfig
from modeldepot.storage import ContentStore


def make_store(home: Path, **settings: object) -> tuple[ContentStore, Database]:
    cfg = DepotConfig(home=home, **settings)  # type: ignore[arg-type]
    db = Database.open(cfg.db_url)
    return ContentStore(cfg, db), db


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def pipeline(root: Path, unet_seed: int, shared: bytes = b"shared-vae-and-text-encoder") -> Path:
    """A tiny diffusers-layout pipeline: unique unet, vae and text_encoder identical across seeds."""
    write(root / "model_index.json", json.dumps({"_class_name": "StableDiffusionPipeline"}).encode())
    write(root / "unet" / "config.json", json.dumps({"seed": unet_seed}).encode())
    write(root / "unet" / "diffusion_pytorch_model.safetensors", os.urandom(4096) + bytes([unet_seed]))
    write(root / "vae" / "config.json", b'{"_class_name": "AutoencoderKL"}')
    write(root / "vae" / "diffusion_pytorch_model.safetensors", hashlib.sha512(shared).digest() * 64)
    write(root / "text_encoder" / "config.json", b'{"_class_name": "CLIPTextModel"}')
    write(root / "text_encoder" / "model.safetensors", hashlib.sha512(shared + b"te").digest() * 96)
    write(root / "tokenizer" / "vocab.json", b'{"a": 1}')
    return root


def tree_sha256(root: Path) -> dict[str, str]:
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    out = {}
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return dict(sorted(out.items()))
