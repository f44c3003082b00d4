"""Training checkpoints: the adapters, the optimizer's state and the step, enough to continue bit for bit.

A checkpoint is a folder ``<run>/checkpoints/step-000050/`` holding ``adapters.safetensors`` (PEFT keys
under ``<part>/``), ``optimizer.safetensors`` (AdamW's moments by parameter index) and ``state.json``
(step, the run's options, the optimizer's hyper-parameters). No pickle: a checkpoint from elsewhere is
data, never code. It is written under a temporary name and renamed, so a crash leaves either the whole
checkpoint or none. Nothing else needs saving: the data order and every random draw are derived from
(seed, step), so a resumed run repeats exactly what the uninterrupted one would have done.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from modeldepot._fs import fsync_dir
from modeldepot.errors import TrainingError

_ADAPTERS = "adapters.safetensors"
_OPTIMIZER = "optimizer.safetensors"
_STATE = "state.json"


@dataclass(frozen=True)
class Checkpoint:
    """A saved training state. ``options`` are the run's settings that must match to continue it."""

    path: Path
    step: int
    options: dict[str, Any]
    adapters: dict[str, dict[str, torch.Tensor]]
    optimizer: dict[str, Any]


def save_checkpoint(
    run_dir: Path,
    step: int,
    options: Mapping[str, Any],
    adapters: Mapping[str, Mapping[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
) -> Path:
    """Write the checkpoint of ``step`` under ``run_dir/checkpoints`` and return its folder."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        flat = {
            f"{part}/{k}": v.detach().to("cpu").contiguous() for part, sd in adapters.items() for k, v in sd.items()
        }
        save_file(flat, tmp / _ADAPTERS)
        state = optimizer.state_dict()
        moments = {
            f"{index}/{name}": value.detach().to("cpu").contiguous()
            for index, slots in state["state"].items()
            for name, value in slots.items()
            if isinstance(value, torch.Tensor)
        }
        save_file(moments, tmp / _OPTIMIZER)
        document = {"step": step, "options": dict(options), "param_groups": state["param_groups"]}
        (tmp / _STATE).write_text(json.dumps(document, indent=1, sort_keys=True), encoding="utf-8")
        for name in (_ADAPTERS, _OPTIMIZER, _STATE):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        if final.exists():  # the same step saved again (a Ctrl-C right after a scheduled save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The highest-step checkpoint folder of a run, or None."""
    root = run_dir / "checkpoints"
    found = sorted(p for p in root.glob("step-*") if (p / _STATE).is_file()) if root.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint folder (or its ``state.json``); TrainingError when it is not one."""
    folder = path.parent if path.name == _STATE else path
    try:
        document = json.loads((folder / _STATE).read_text(encoding="utf-8"))
        flat = load_file(folder / _ADAPTERS)
        moments = load_file(folder / _OPTIMIZER)
        step = int(document["step"])
        options = dict(document["options"])
        groups = list(document["param_groups"])
    except FileNotFoundError as exc:
        raise TrainingError(
            f"{folder} is not a training checkpoint (no {Path(exc.filename or '').name}): pass a folder such as "
            "<run>/checkpoints/step-000050"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise TrainingError(f"cannot read the checkpoint {folder}: {exc}") from exc
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        part, _, name = key.partition("/")
        adapters.setdefault(part, {})[name] = tensor
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in moments.items():
        index, _, name = key.partition("/")
        slots.setdefault(int(index), {})[name] = tensor
    return Checkpoint(folder, step, options, adapters, {"state": slots, "param_groups": groups})


def check_compatible(checkpoint: Checkpoint, options: Mapping[str, Any]) -> None:
    """TrainingError naming the first setting that differs between the checkpoint's run and this one."""
    for name, saved in checkpoint.options.items():
        if name in options and _jsonable(options[name]) != saved:
            raise TrainingError(
                f"the checkpoint {checkpoint.path} was saved by a run with {name}={saved!r}, this run has "
                f"{name}={options[name]!r}: resume with the same {name} (or start a new run)"
            )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))
