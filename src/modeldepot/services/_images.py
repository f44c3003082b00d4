"""PIL images to and from tensors, seeds, and the checks every service makes on its inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modeldepot.errors import InvalidImageError, ServiceInputError

if TYPE_CHECKING:
    import torch
    from PIL import Image


def check_image(image: Any, *, what: str = "image", min_size: int = 1) -> Image.Image:
    """``image`` as an RGB PIL image; anything else, or a side under ``min_size`` px, is an error."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise InvalidImageError(f"{what} must be a PIL image, not {type(image).__name__}")
    if min(image.size) < min_size:
        w, h = image.size
        raise InvalidImageError(f"{what} is {w}x{h} px; it must be at least {min_size}x{min_size}")
    return image if image.mode == "RGB" else image.convert("RGB")


def to_tensor(image: Image.Image, *, device: Any = "cpu", dtype: Any = None) -> torch.Tensor:
    """An RGB PIL image as a ``[1, 3, H, W]`` float tensor in [0, 1]."""
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)
    return tensor.to(device=device, dtype=dtype or torch.float32).div_(255.0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A ``[1, 3, H, W]`` or ``[3, H, W]`` tensor in [0, 1] as an RGB PIL image (clamped, rounded)."""
    from PIL import Image

    t = tensor.detach()
    if t.dim() == 4:
        t = t[0]
    array = t.float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def generator(seed: int | None, device: Any = "cpu") -> torch.Generator | None:
    """A torch generator seeded with ``seed`` (None: unseeded, nondeterministic). CPU generators make
    a seed give the same result on every machine, as diffusers recommends."""
    import torch

    if seed is None:
        return None
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise ServiceInputError(f"seed must be an integer in [0, 2**64), not {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


def module_device(module: Any) -> torch.device:
    """Where ``module``'s first parameter lives (CPU for a module without parameters)."""
    import torch

    params = getattr(module, "parameters", None)
    if callable(params):
        for p in params():
            device: torch.device = p.device
            return device
    return torch.device("cpu")


def module_dtype(module: Any) -> torch.dtype:
    """The dtype of ``module``'s first floating parameter (float32 if none)."""
    import torch

    params = getattr(module, "parameters", None)
    if callable(params):
        for p in params():
            if p.is_floating_point():
                dtype: torch.dtype = p.dtype
                return dtype
    return torch.float32


__all__ = ["check_image", "generator", "module_device", "module_dtype", "to_image", "to_tensor"]
