"""``PredictorMLP``: the CLIP+MLP score predictor, in the layout of LAION's "improved aesthetic predictor".

The module tree is the released one (``layers.0`` ... ``layers.7``, dropouts at 1, 3 and 5), so the
published files (``sac+logos+ava1-l14-linearMSE.pth``: ``layers.0.weight [1024, 768]`` ...
``layers.7.weight [1, 16]``) load into it key for key. It maps one L2-normalised CLIP image
embedding of width ``input_size`` to one score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class PredictorMLP(nn.Module):
    """Five linear layers ``input_size -> 1024 -> 128 -> 64 -> 16 -> 1`` with dropout between the first four.

    Args:
        input_size: the width of the CLIP image embeddings it scores (768 for ViT-L/14).
    """

    def __init__(self, input_size: int) -> None:
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise ValueError(f"input_size must be a positive integer, not {input_size!r}")
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    @classmethod
    def input_size_of(cls, state_dict: Mapping[str, Any]) -> int:
        """The embedding width a state dict was made for (from ``layers.0.weight``).

        Raises:
            KeyError: the state dict has no 2-D ``layers.0.weight``.
        """
        first = state_dict.get("layers.0.weight")
        if first is None or len(first.shape) != 2:
            raise KeyError("layers.0.weight")
        return int(first.shape[1])

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scores ``[n, 1]`` of embeddings ``[n, input_size]``.

        In training mode with a ``generator``, the dropout masks are drawn from it rather than from
        torch's global generator, so a seeded run repeats exactly and leaves the global state alone.
        """
        if not (self.training and generator is not None):
            out: torch.Tensor = self.layers(x)
            return out
        for layer in self.layers:
            if isinstance(layer, nn.Dropout):
                keep = 1.0 - layer.p
                mask = torch.rand(x.shape, generator=generator, device=x.device) < keep
                x = x * mask.to(x.dtype) / keep
            else:
                x = layer(x)
        return x

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """torch's default ``nn.Linear`` initialisation, drawn from ``generator``."""
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    @classmethod
    def seeded(cls, input_size: int, generator: torch.Generator) -> PredictorMLP:
        """A fresh predictor initialised from ``generator`` only: it is built on the meta device, so
        building it does not advance torch's global generator either."""
        with torch.device("meta"):
            model = cls(input_size)
        model = model.to_empty(device="cpu")
        model.reset_parameters(generator)
        return model

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}"


__all__ = ["PredictorMLP"]
