"""``modeldepot demo``: a fake Hugging Face / Civitai with tiny models, and the server pointed at it.

Everything stays on 127.0.0.1: a newcomer can try installs end to end with no internet.
"""

from __future__ import annotations

import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.config import DepotConfig

if TYPE_CHECKING:
    from modeldepot.testing.fakehub import FakeHub


@dataclass(frozen=True)
class DemoSource:
    source: str
    what: str


@dataclass
class Demo:
    """A running fake hub, the settings that point at it, and the source strings to try."""

    hub: FakeHub
    config: DepotConfig
    sources: list[DemoSource] = field(default_factory=list)

    def close(self) -> None:
        self.hub.close()


def _folder_files(root: Path) -> dict[str, bytes | Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _png(width: int = 96, height: int = 96) -> bytes:
    """A small gradient PNG (a thumbnail for the demo's Civitai model), written without Pillow."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (40 + x, 90 + y // 2, 200 - x // 2)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def start_demo(home: str | Path, *, work_dir: str | Path | None = None, speed_limit_bps: int | None = None) -> Demo:
    """Generate the demo models, publish them on a started FakeHub, and build settings for ``home``.

    ``speed_limit_bps`` slows the hub's file transfers so progress is visible (default: 2 MB/s).
    """
    from modeldepot.testing.factories import write_diffusers_pipeline, write_esrgan, write_sdxl_lora, write_vae
    from modeldepot.testing.fakehub import FakeHub

    work = Path(work_dir) if work_dir is not None else Path(home) / "demo-sources"
    work.mkdir(parents=True, exist_ok=True)
    pipeline = write_diffusers_pipeline(work / "tiny-sd15", base="sd-1")
    lora = write_sdxl_lora(work / "tiny-sdxl-lora.safetensors")
    vae = write_vae(work / "tiny-sdxl-vae.safetensors", base="sdxl", with_metadata=True)
    upscaler = write_esrgan(work / "tiny-4x-esrgan.safetensors")

    hub = FakeHub().start()
    try:
        hub.add_hf_repo("demo/tiny-sd15", _folder_files(pipeline), tags=["diffusers", "text-to-image"], author="demo")
        hub.add_hf_repo("demo/tiny-sdxl-lora", {"tiny-sdxl-lora.safetensors": lora}, tags=["lora"], author="demo")
        hub.add_hf_repo("demo/tiny-sdxl-vae", {"diffusion_pytorch_model.safetensors": vae}, author="demo")
        thumbnail = hub.add_file("images/tiny-4x-esrgan.png", _png())
        hub.add_civitai_model(
            {
                "id": 4001,
                "name": "Tiny 4x upscaler",
                "type": "Upscaler",
                "tags": ["upscaler"],
                "modelVersions": [
                    {
                        "id": 4101,
                        "name": "v1",
                        "baseModel": "Other",
                        "files": [{"name": upscaler.name, "data": upscaler}],
                        "images": [{"url": thumbnail}],
                    }
                ],
            }
        )
        hub.faults("/cdn/*", speed_limit_bps=speed_limit_bps or 2_000_000)
        hub.faults("/civitai-cdn/*", speed_limit_bps=speed_limit_bps or 2_000_000)
        config = DepotConfig.load(
            home=Path(home), hf_endpoint=hub.url, civitai_endpoint=hub.url, allow_private_urls=True
        )
    except BaseException:
        hub.close()
        raise
    sources = [
        DemoSource("demo/tiny-sd15", "a Stable Diffusion 1.5 diffusers pipeline (Hugging Face repo)"),
        DemoSource("demo/tiny-sdxl-lora::tiny-sdxl-lora.safetensors", "an SDXL LoRA (one file of a Hugging Face repo)"),
        DemoSource(
            "demo/tiny-sdxl-vae::diffusion_pytorch_model.safetensors", "an SDXL VAE (one file of a Hugging Face repo)"
        ),
        DemoSource("civitai:4101", "a 4x ESRGAN upscaler (Civitai model version)"),
    ]
    return Demo(hub=hub, config=config, sources=sources)


def run_demo(host: str = "127.0.0.1", port: int = 9090, home: str | Path | None = None) -> None:
    """Start the fake hub and serve the app against it until interrupted.

    ``home`` defaults to a new temporary folder, so a real depot is never touched.
    """
    from modeldepot.api.serve import build_app, make_server

    temp: tempfile.TemporaryDirectory[str] | None = None
    if home is None:
        temp = tempfile.TemporaryDirectory(prefix="modeldepot-demo-")
        home = temp.name
    demo = start_demo(home)
    try:
        app: Any = build_app(demo.config, host)
        shown = "localhost" if host in ("127.0.0.1", "::1", "0.0.0.0") else host
        print(f"modeldepot demo: fake Hugging Face + Civitai at {demo.hub.url}, depot in {demo.config.home}")
        print(f"Open http://{shown}:{port}/ and install one of these sources:")
        width = max(len(s.source) for s in demo.sources)
        for s in demo.sources:
            print(f"  {s.source:<{width}}  {s.what}")
        print("Ctrl-C stops the demo.", flush=True)
        make_server(app, host, port).run()
    finally:
        demo.close()
        if temp is not None:
            temp.cleanup()
