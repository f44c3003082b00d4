"""Fit the CLIP+MLP predictor on prepared embeddings and install it into the depot.

Training is MSE regression with Adam, as LAION trained the aesthetic predictor. Everything random
(the train/validation split, the initial weights, the batch order, the dropout masks) comes from one
``torch.Generator`` seeded with ``seed``: a seed gives the same weights every time, and torch's
global generator is neither used nor advanced.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from modeldepot._fs import safe_dir_name
from modeldepot.errors import TrainingDataError, TrainingError
from modeldepot.taxonomy import ModelSourceType
from modeldepot.train._files import now_iso, save_tensors
from modeldepot.train._progress import step_bar
from modeldepot.train.predictor import _files
from modeldepot.train.predictor.mlp import PredictorMLP
from modeldepot.train.predictor.prepare import PreparedScores

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.manager import ModelManager

#: ``(epoch, epochs, train_loss, val_loss)`` after each epoch (epochs count from 1).
ProgressCallback = Callable[[int, int, float, float | None], None]

_MIN_ROWS_FOR_VALIDATION = 5


def _check_args(epochs: int, lr: float, batch_size: int, val_fraction: float, seed: int) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(epochs) or epochs < 1:
        raise TrainingError(f"epochs must be a positive integer, not {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise TrainingError(f"lr must be a positive number, not {lr!r}")
    if not is_int(batch_size) or batch_size < 1:
        raise TrainingError(f"batch_size must be a positive integer, not {batch_size!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0 <= val_fraction < 1:
        raise TrainingError(f"val_fraction must be a number in [0, 1), not {val_fraction!r}")
    if not is_int(seed) or not 0 <= seed < 2**63:
        raise TrainingError(f"seed must be an integer in [0, 2**63), not {seed!r}")


def validation_size(count: int, val_fraction: float) -> int:
    """Rows held out: ``val_fraction`` of them, at least 1 from 5 rows up, none below (one row
    would leave too few to fit), and always at least one row left to train on."""
    if count < _MIN_ROWS_FOR_VALIDATION or val_fraction <= 0:
        return 0
    return min(max(1, round(count * val_fraction)), count - 1)


def fit(
    embeddings: torch.Tensor,
    scores: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    val_fraction: float,
    seed: int,
    progress: ProgressCallback | None = None,
) -> tuple[PredictorMLP, list[float], list[float]]:
    """Train a :class:`PredictorMLP` on ``embeddings [n, d]`` -> ``scores [n]``; returns the model (in
    eval mode) and the per-epoch train and validation losses (the latter empty without a hold-out).

    Raises:
        TrainingError: the loss stopped being a finite number (a learning rate too high).
    """
    generator = torch.Generator().manual_seed(seed)
    count = int(embeddings.shape[0])
    order = torch.randperm(count, generator=generator)
    n_val = validation_size(count, val_fraction)
    x_val, y_val = embeddings[order[:n_val]], scores[order[:n_val]]
    x_train, y_train = embeddings[order[n_val:]], scores[order[n_val:]]
    model = PredictorMLP.seeded(int(embeddings.shape[1]), generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    mse = torch.nn.MSELoss()
    train_history: list[float] = []
    val_history: list[float] = []
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        shuffled = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(x_train), batch_size):
            idx = shuffled[start : start + batch_size]
            loss = mse(model(x_train[idx], generator=generator).squeeze(1), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(idx)
        train_loss = total / len(x_train)
        if not math.isfinite(train_loss):
            raise TrainingError(f"the training loss is {train_loss} at epoch {epoch}: lower lr (now {lr})")
        train_history.append(train_loss)
        val_loss: float | None = None
        if n_val:
            model.eval()
            with torch.no_grad():
                val_loss = float(mse(model(x_val).squeeze(1), y_val).item())
            val_history.append(val_loss)
        if progress is not None:
            progress(epoch, epochs, train_loss, val_loss)
    model.eval()
    return model, train_history, val_history


def train_predictor(
    depot: ModelManager,
    *,
    data: PreparedScores | str | Path,
    output_name: str | None = None,
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool | ProgressCallback = False,
) -> ModelConfigBase:
    """Train a CLIP+MLP predictor on prepared scores and install it into ``depot``.

    Args:
        depot: the depot to install the predictor into.
        data: what :func:`~modeldepot.train.predictor.prepare` returned, or the path of its file.
        output_name: the model's name (default ``<clip name>-predictor``; the depot makes it unique).
        epochs: passes over the training rows.
        lr: Adam's learning rate.
        batch_size: rows per optimisation step.
        val_fraction: share of the rows held out to measure the validation loss (at least one row
            from 5 rows up, none below).
        seed: seeds the split, the initial weights, the batch order and the dropout.
        progress: a progress bar (epochs, loss) when True; a callable gets ``(epoch, epochs, train_loss, val_loss)``.

    Returns:
        The installed model's record (type ``clip_predictor``, base ``any``). Its safetensors file
        carries ModelSpec title and date, the CLIP it was prepared with, and the loss history.

    Raises:
        TrainingDataError: ``data`` is not a prepared-scores file, or has fewer than 2 rows.
        TrainingError: an argument out of range, or a loss that is not finite.
    """
    _check_args(epochs, lr, batch_size, val_fraction, seed)
    prepared = data if isinstance(data, PreparedScores) else PreparedScores.open(data)
    if prepared.count < 2:
        raise TrainingDataError(f"{prepared.path}: {prepared.count} rows; a predictor needs at least 2", prepared.path)
    embeddings, scores = prepared.load()
    with step_bar(f"train predictor {output_name or ''}".rstrip(), not callable(progress) and progress) as bar:
        report: ProgressCallback | None = progress if callable(progress) else None
        if bar is not None:

            def report(epoch: int, total: int, train_loss: float, val_loss: float | None) -> None:
                bar(epoch, total, train_loss)

        model, train_losses, val_losses = fit(
            embeddings,
            scores,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            val_fraction=val_fraction,
            seed=seed,
            progress=report,
        )
    clip_name = prepared.clip_name or prepared.clip_key
    name = output_name or f"{clip_name}-predictor"
    metadata = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.title": name,
        "modelspec.date": now_iso(),
        "modelspec.description": f"CLIP+MLP score predictor on {clip_name} image embeddings",
        _files.CLIP_KEY: prepared.clip_key,
        _files.CLIP_NAME: prepared.clip_name,
        _files.CLIP_HASH: prepared.clip_hash,
        _files.EMBEDDING_DIM: str(prepared.dim),
        "predictor.epochs": str(epochs),
        "predictor.lr": repr(float(lr)),
        "predictor.batch_size": str(batch_size),
        "predictor.seed": str(seed),
        "predictor.train_rows": str(prepared.count - validation_size(prepared.count, val_fraction)),
        "predictor.val_rows": str(validation_size(prepared.count, val_fraction)),
        "predictor.train_loss": repr(train_losses[-1]),
        "predictor.loss_history": _files.dumps({"train": train_losses, "val": val_losses}),
    }
    if val_losses:
        metadata["predictor.val_loss"] = repr(val_losses[-1])
    description = (
        f"CLIP+MLP score predictor on {clip_name} embeddings, trained on {prepared.count} scored images "
        f"for {epochs} epochs (final train loss {train_losses[-1]:.4g}"
        + (f", validation loss {val_losses[-1]:.4g})" if val_losses else ")")
    )
    tmp_root = depot.config.tmp_dir
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="train-predictor-") as tmp:
        file = Path(tmp) / f"{safe_dir_name(name)}.safetensors"
        save_tensors(file, dict(model.state_dict()), metadata)
        key = depot.install.install_path(
            file,
            {"name": name, "description": description},
            move=True,
            source=f"train:predictor:{prepared.path}",
            source_type=ModelSourceType.External,
        )
    return depot.store.get_model(key)


__all__ = ["ProgressCallback", "fit", "train_predictor", "validation_size"]
