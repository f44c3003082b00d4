"""What a generation used, as the A1111 ``parameters`` text other tools read (Civitai, ComfyUI, InvokeAI
import, ``sd-parsers``), and PNG files that carry it in a ``tEXt`` chunk."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modeldepot import __version__

if TYPE_CHECKING:
    from PIL import Image


def _autov2(digest: str | None) -> str | None:
    """A1111's short model hash (the first 10 hex digits of the sha256), when the record has a sha256."""
    if digest and digest.startswith("sha256:"):
        return digest.split(":", 1)[1][:10]
    return None


def _clean(text: str) -> str:
    """One line: the format separates fields with ", " and lines with newlines."""
    return " ".join(str(text).split())


@dataclass
class GenerationParameters:
    prompt: str
    negative_prompt: str = ""
    steps: int = 30
    guidance: float = 7.5
    seed: int = 0
    width: int = 0
    height: int = 0
    sampler: str = ""
    model: str | None = None
    model_hash: str | None = None
    strength: float | None = None
    vae: str | None = None
    #: (name, weight, record hash)
    loras: list[tuple[str, float, str | None]] = field(default_factory=list)
    #: (trigger, record hash)
    embeddings: list[tuple[str, str | None]] = field(default_factory=list)

    def to_text(self) -> str:
        """``prompt\\nNegative prompt: ...\\nSteps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: ...``.

        LoRAs appear in the prompt line as ``<lora:name:weight>`` (where A1111 users write them) and
        with their hashes in ``Lora hashes``, which Civitai reads to link resources."""
        prompt = self.prompt + "".join(f" <lora:{name}:{weight:g}>" for name, weight, _ in self.loras)
        lines = [prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        fields: list[tuple[str, object]] = [
            ("Steps", self.steps),
            ("Sampler", self.sampler),
            ("CFG scale", f"{self.guidance:g}"),
            ("Seed", self.seed),
            ("Size", f"{self.width}x{self.height}"),
        ]
        short = _autov2(self.model_hash)
        if short:
            fields.append(("Model hash", short))
        if self.model:
            fields.append(("Model", _clean(self.model)))
        if self.strength is not None:
            fields.append(("Denoising strength", f"{self.strength:g}"))
        if self.vae:
            fields.append(("VAE", _clean(self.vae)))
        lora_hashes = [f"{_clean(n)}: {_autov2(h)}" for n, _, h in self.loras if _autov2(h)]
        if lora_hashes:
            fields.append(("Lora hashes", '"' + ", ".join(lora_hashes) + '"'))
        ti_hashes = [f"{_clean(n)}: {_autov2(h)}" for n, h in self.embeddings if _autov2(h)]
        if ti_hashes:
            fields.append(("TI hashes", '"' + ", ".join(ti_hashes) + '"'))
        fields.append(("Version", f"modeldepot {__version__}"))
        lines.append(", ".join(f"{k}: {v}" for k, v in fields if v != ""))
        return "\n".join(lines)


def save_png(image: Image.Image, path: str | os.PathLike[str], parameters: str | None = None) -> Path:
    """Write ``image`` as a PNG whose ``parameters`` text chunk holds ``parameters`` (default: the one a
    service put in ``image.info``); written to a temporary name and renamed, so no half file is left."""
    from PIL import PngImagePlugin

    from modeldepot._fs import atomic_write_bytes

    text = parameters if parameters is not None else image.info.get("parameters")
    info = PngImagePlugin.PngInfo()
    if isinstance(text, str) and text:
        info.add_text("parameters", text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    target = Path(path)
    atomic_write_bytes(target, buffer.getvalue())
    return target


__all__ = ["GenerationParameters", "save_png"]
