"""``modeldepot demo``: a fake Hugging Face / Civitai with tiny models, and the server pointed at it.

Everything stays on 127.0.0.1: a newcomer can try installs end to end with no internet.
"""

from __future__ import annotations

import errno
import shlex
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from modeldepot.config import SETTINGS_FILE, DepotConfig
from modeldepot.errors import ConfigurationError

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
    #: The settings file as it was before ``save_settings`` (None: there was none).
    _previous_settings: str | None = field(default=None, repr=False)
    _saved: bool = field(default=False, repr=False)

    @property
    def settings(self) -> dict[str, str]:
        """The environment that points the CLI (or anything else) at this demo's depot and hub."""
        return {
            "MODELDEPOT_HOME": str(self.config.home),
            "MODELDEPOT_HF_ENDPOINT": self.hub.url,
            "MODELDEPOT_CIVITAI_ENDPOINT": self.hub.url,
            "MODELDEPOT_ALLOW_PRIVATE_URLS": "true",
        }

    def export_line(self) -> str:
        """``export MODELDEPOT_HOME=... ...``, quoted for a POSIX shell."""
        return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in self.settings.items())

    def save_settings(self) -> Path:
        """Write the hub settings into the home's ``modeldepot.yaml`` (other settings there are kept).

        Then ``MODELDEPOT_HOME=<home> modeldepot install <source>`` reaches the demo hub from any
        terminal while the demo runs.
        """
        from modeldepot._fs import atomic_write_text

        path = self.config.home / SETTINGS_FILE
        data: dict[str, Any] = {}
        previous = None
        if path.is_file():
            try:
                previous = path.read_text(encoding="utf-8")
                loaded = yaml.safe_load(previous)
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise ConfigurationError(f"settings file {path} is not valid YAML: {exc}") from exc
            if isinstance(loaded, dict):
                data = loaded
        data.update(hf_endpoint=self.hub.url, civitai_endpoint=self.hub.url, allow_private_urls=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=True))
        if not self._saved:
            self._previous_settings, self._saved = previous, True
        return path

    def restore_settings(self) -> None:
        """Put the settings file back as it was before ``save_settings`` (the hub is gone)."""
        from modeldepot._fs import atomic_write_text

        if not self._saved:
            return
        path = self.config.home / SETTINGS_FILE
        if self._previous_settings is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_text(path, self._previous_settings)
        self._saved = False

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


def start_demo(
    home: str | Path,
    *,
    work_dir: str | Path | None = None,
    speed_limit_bps: int | None = None,
    hub_port: int = 0,
) -> Demo:
    """Generate the demo models, publish them on a started FakeHub, and build settings for ``home``.

    ``speed_limit_bps`` slows the hub's file transfers so progress is visible (default: 2 MB/s).
    ``hub_port`` is the fake hub's port on 127.0.0.1 (0: any free port).

    Raises:
        ConfigurationError: the hub cannot listen on ``hub_port`` (in use, or not allowed).
    """
    from modeldepot.testing.factories import write_diffusers_pipeline, write_esrgan, write_sdxl_lora, write_vae
    from modeldepot.testing.fakehub import FakeHub

    work = Path(work_dir) if work_dir is not None else Path(home) / "demo-sources"
    work.mkdir(parents=True, exist_ok=True)
    pipeline = write_diffusers_pipeline(work / "tiny-sd15", base="sd-1")
    lora = write_sdxl_lora(work / "tiny-sdxl-lora.safetensors")
    vae = write_vae(work / "tiny-sdxl-vae.safetensors", base="sdxl", with_metadata=True)
    upscaler = write_esrgan(work / "tiny-4x-esrgan.safetensors")

    try:
        hub = FakeHub(port=hub_port).start()
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise ConfigurationError(f"the demo hub cannot listen on 127.0.0.1:{hub_port}: {exc.strerror or exc}") from exc
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


def run_demo(host: str = "127.0.0.1", port: int = 9090, home: str | Path | None = None, *, hub_port: int = 0) -> None:
    """Start the fake hub and serve the app against it until interrupted.

    ``home`` defaults to a new temporary folder, so a real depot is never touched. The hub
    settings are printed (as an ``export`` line) and saved in the home's ``modeldepot.yaml``, so
    the CLI can install from the demo hub in another terminal.
    """
    from modeldepot.api.serve import build_app, make_server

    temp: tempfile.TemporaryDirectory[str] | None = None
    if home is None:
        temp = tempfile.TemporaryDirectory(prefix="modeldepot-demo-")
        home = temp.name
    demo = start_demo(home, hub_port=hub_port)
    try:
        app: Any = build_app(demo.config, host)
        saved = demo.save_settings()
        shown = "localhost" if host in ("127.0.0.1", "::1", "0.0.0.0") else host
        print(f"modeldepot demo: fake Hugging Face + Civitai at {demo.hub.url}, depot in {demo.config.home}")
        print(f"To use the CLI with the demo hub from another terminal (these settings are saved in {saved}):")
        print(f"  {demo.export_line()}")
        print(f"  modeldepot install {demo.sources[0].source}")
        print(f"Open http://{shown}:{port}/ and install one of these sources:")
        width = max(len(s.source) for s in demo.sources)
        for s in demo.sources:
            print(f"  {s.source:<{width}}  {s.what}")
        print("Ctrl-C stops the demo.", flush=True)
        make_server(app, host, port).run()
    finally:
        demo.restore_settings()
        demo.close()
        if temp is not None:
            temp.cleanup()
