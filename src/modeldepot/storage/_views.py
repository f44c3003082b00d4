"""Folder trees for other programs (A1111, ComfyUI) made of symlinks to materialised models.

``build_view`` never copies and never touches a file it did not create: the links it made are
listed in ``<dest>/.modeldepot-view.json``, refreshing removes only those that went stale, and a
real file (or a foreign link) of the user in the way is skipped and reported. ``scan_tree`` lists
the models of an existing A1111/ComfyUI tree so the installer can register them in place.
"""

# os.* on purpose: errno-level fallthrough, fd-based I/O, and fault injection in tests.
# ruff: noqa: PTH115, PTH211

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modeldepot._fs import atomic_write_text, join_inside, safe_relpath
from modeldepot.errors import NotAllowedError, StorageError
from modeldepot.storage._split import is_split_dir
from modeldepot.storage.base import ViewReport
from modeldepot.taxonomy import WEIGHT_SUFFIXES, has_suffix

ViewKind = Literal["a1111", "comfyui"]
STATE_FILE = ".modeldepot-view.json"

#: (type, format) -> folder; a format of None matches any format.
_A1111: dict[tuple[str, str | None], str] = {
    ("main", "checkpoint"): "models/Stable-diffusion",
    ("lora", "lycoris"): "models/Lora",
    ("vae", "checkpoint"): "models/VAE",
    ("embedding", None): "embeddings",
    ("spandrel_image_to_image", None): "models/ESRGAN",
    ("controlnet", "checkpoint"): "models/ControlNet",
    ("t2i_adapter", None): "models/ControlNet",
}
_COMFYUI: dict[tuple[str, str | None], str] = {
    ("main", "checkpoint"): "models/checkpoints",
    ("main", "diffusers"): "models/diffusers",
    ("lora", None): "models/loras",
    ("vae", "checkpoint"): "models/vae",
    ("controlnet", None): "models/controlnet",
    ("t2i_adapter", None): "models/controlnet",
    ("spandrel_image_to_image", None): "models/upscale_models",
    ("embedding", None): "models/embeddings",
    ("clip_vision", None): "models/clip_vision",
    ("ip_adapter", None): "models/ipadapter",
    ("t5_encoder", None): "models/text_encoders",
    ("clip_embed", None): "models/text_encoders",
}
_LAYOUTS = {"a1111": _A1111, "comfyui": _COMFYUI}
#: Standalone transformers (FLUX/SD3 main models without text encoders and VAE) go to diffusion_models.
_DIFFUSION_ONLY_BASES = frozenset({"flux", "sd-3"})


def _value(v: Any) -> str:
    return str(getattr(v, "value", v))


def view_folder_for(kind: str, type: Any, format: Any, base: Any = None, submodels: Any = None) -> str | None:
    """The folder (relative to the program root) where a model of this (type, format, base) goes."""
    if kind not in _LAYOUTS:
        raise StorageError(f"unknown view kind {kind!r}; use a1111 or comfyui")
    t, f, b = _value(type), _value(format), _value(base) if base is not None else None
    if kind == "comfyui" and t == "main" and f == "checkpoint" and b in _DIFFUSION_ONLY_BASES and submodels == {}:
        return "models/diffusion_models"
    layout = _LAYOUTS[kind]
    return layout.get((t, f)) or layout.get((t, None))


def _load_state(dest: Path) -> dict[str, str]:
    p = dest / STATE_FILE
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text("utf-8"))
        links = data.get("links", {})
        return {str(k): str(v) for k, v in links.items()} if isinstance(links, dict) else {}
    except (OSError, ValueError) as exc:
        raise StorageError(f"{p} is damaged ({exc}); remove it to rebuild the view", path=p) from exc


def build_view(kind: ViewKind, dest: str | Path, models: Iterable[Any], models_root: Path | None = None) -> ViewReport:
    """Build or refresh ``dest`` as a ``kind`` tree of symlinks to the records' materialised paths.

    ``models`` are record objects (``ModelConfigBase``): their ``path`` (absolute, or relative
    to ``models_root``) is what each link points at.
    """
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and not dest.is_dir():
        raise NotAllowedError(f"view destination {dest} is a file, not a folder")
    if kind not in _LAYOUTS:
        raise StorageError(f"unknown view kind {kind!r}; use a1111 or comfyui")
    report = ViewReport()
    previous = _load_state(dest)
    desired: dict[str, Path] = {}
    for cfg in models:
        key = str(getattr(cfg, "key", "?"))
        sub = getattr(cfg, "submodels", None)
        folder = view_folder_for(kind, cfg.type, cfg.format, getattr(cfg, "base", None), sub)
        if folder is None:
            report.skipped.append((key, f"{kind} has no folder for {_value(cfg.type)}/{_value(cfg.format)}"))
            continue
        target = Path(cfg.path)
        if not target.is_absolute() and models_root is not None:
            target = models_root / target
        if not target.exists():
            report.skipped.append((key, f"its files are missing at {target}"))
            continue
        if is_split_dir(target):
            report.skipped.append(
                (key, f"stored as parts (split_single_files); `modeldepot export` rebuilds a file {kind} reads")
            )
            continue
        name = target.name
        rel = f"{folder}/{name}"
        if rel in desired and desired[rel] != target:
            stem, suffix = (target.stem, target.suffix) if target.is_file() else (name, "")
            rel = f"{folder}/{stem}-{key[:8]}{suffix}"
        safe_relpath(rel)
        desired[rel] = target
    for rel, old_target in previous.items():
        if rel in desired:
            continue
        p = join_inside(dest, rel)
        if p.is_symlink() and os.readlink(p) == old_target:
            p.unlink()
            report.removed.append(p)
    owned: dict[str, str] = {}
    for rel, target in sorted(desired.items()):
        p = join_inside(dest, rel)
        if p.is_symlink():
            current = os.readlink(p)
            if current == str(target):
                report.kept.append(p)
                owned[rel] = str(target)
                continue
            if previous.get(rel) != current:
                report.skipped.append((rel, f"{p} is a link of yours (to {current}); left alone"))
                continue
        elif p.exists():
            report.skipped.append((rel, f"{p} is a real file of yours; refusing to overwrite it"))
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:8]}.link"
        os.symlink(str(target), tmp)
        os.replace(tmp, p)
        report.created.append(p)
        owned[rel] = str(target)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest / STATE_FILE, json.dumps({"kind": kind, "links": owned}, indent=1, sort_keys=True))
    return report


@dataclass(frozen=True)
class ScanEntry:
    """A model found in a program's tree; ``type_hint`` comes from the folder it sits in."""

    path: Path
    folder: str
    type_hint: str | None


def _hints() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for layout in _LAYOUTS.values():
        for (t, _f), folder in layout.items():
            out.setdefault(folder, t)
    out["models/diffusion_models"] = "main"
    out["models/unet"] = "main"
    out["models/clip"] = None
    return out


def scan_tree(root: str | Path) -> list[ScanEntry]:
    """Model files and diffusers folders in the known folders of an A1111 or ComfyUI tree.

    ``root`` is the program folder (holding ``models/``) or its ``models/`` folder itself.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise StorageError(f"{root} is not a folder", path=root)
    if not (root / "models").is_dir() and root.name == "models":
        root = root.parent
    found: list[ScanEntry] = []
    for folder, hint in sorted(_hints().items()):
        base = root / folder
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            d = Path(dirpath)
            if (d / "model_index.json").is_file() or (d != base and (d / "config.json").is_file()):
                found.append(ScanEntry(d, folder, hint))
                dirnames[:] = []
                continue
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for name in sorted(filenames):
                if has_suffix(name, WEIGHT_SUFFIXES) and not name.startswith("."):
                    found.append(ScanEntry(d / name, folder, hint))
    return found
