"""``Upscaler``: an ESRGAN-family network (RRDBNet) run over an image in feathered tiles.

A 4k image through a 4x network at once needs gigabytes of activations; tiled, the network only
ever sees one tile plus its context, so activation memory is bounded by ``tile`` while the float
output buffer (the only image-sized tensor besides the input) is accumulated on the CPU.

Tiling, in input pixels: the (padded) image is cut into a grid of cores of at most ``tile`` px;
each core is run with ``overlap`` px of context on every side (clamped at the image edge, where the
tile sees exactly what the whole image would: no padding artefacts). Neighbouring outputs are
blended with linear ramps over the central half of their shared context, ``overlap / 2`` px either
side of the core boundary, so the weights reach zero ``overlap / 2`` px before a tile's own
context edge, where zero padding corrupts it. The ramps of each axis are normalised to sum to one,
so the blend is exact: when ``overlap >= 2 x`` the network's receptive radius, every blended
output pixel equals the untiled one up to float error.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch.nn import functional as F  # noqa: N812

from modeldepot.errors import ServiceInputError, WrongModelTypeError
from modeldepot.services._images import check_image, module_device, module_dtype, to_image, to_tensor
from modeldepot.services.base import Service
from modeldepot.taxonomy import ModelType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase

#: Architectures of ``spandrel_image_to_image`` records that restore faces rather than upscale.
FACE_ARCHITECTURES = ("GFPGAN", "CodeFormer")
#: Side of the probe image fed once to a bare module that does not say its scale.
_PROBE = 16


def _is_face_restorer(module: Any) -> bool:
    return getattr(module, "arch", None) in FACE_ARCHITECTURES


def _probe_scale(module: torch.nn.Module, multiple: int, label: str) -> int:
    """The upscale factor of a module without a ``.scale``, measured with one tiny forward."""
    side = _PROBE * multiple
    probe = torch.zeros(1, 3, side, side, device=module_device(module), dtype=module_dtype(module))
    try:
        with torch.inference_mode():
            out = module(probe)
    except Exception as exc:  # any failure means it is no image-to-image network
        raise WrongModelTypeError(
            f"Upscaler cannot use {label}: it failed on a 1x3x{side}x{side} image ({type(exc).__name__}: {exc}); "
            "it takes ESRGAN-family (RRDBNet) image-to-image networks",
            expected=(ModelType.SpandrelImageToImage.value,),
        ) from exc
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape is None or len(shape) != 4 or shape[:2] != (1, 3) or shape[2] != shape[3] or shape[2] % side:
        got = f"shape {shape}" if shape is not None else type(out).__name__
        raise WrongModelTypeError(
            f"Upscaler cannot use {label}: a 1x3x{side}x{side} image gave {got}, not an RGB image "
            "a whole number of times larger; it takes ESRGAN-family (RRDBNet) image-to-image networks",
            expected=(ModelType.SpandrelImageToImage.value,),
        )
    return shape[2] // side


def _ramps(length: int, cores: list[tuple[int, int]], half: float, scale: int) -> list[torch.Tensor]:
    """One weight vector per core along one axis, in output pixels, summing to one everywhere.

    Core ``[a, b)`` (input px) ramps up across ``[a - half, a + half)`` and down across
    ``[b - half, b + half)``; sides on the image edge do not ramp. ``half == 0`` is a hard cut.
    """
    pos = torch.arange(length * scale, dtype=torch.float64) + 0.5
    raw: list[torch.Tensor] = []
    for a, b in cores:
        w = torch.ones_like(pos)
        if a > 0:
            w *= ((pos - (a - half) * scale) / (2 * half * scale)).clamp(0, 1) if half else (pos >= a * scale).double()
        if b < length:
            w *= (((b + half) * scale - pos) / (2 * half * scale)).clamp(0, 1) if half else (pos < b * scale).double()
        raw.append(w)
    total = torch.stack(raw).sum(0)
    return [(w / total).float() for w in raw]


def _cores(length: int, tile: int, multiple: int) -> list[tuple[int, int]]:
    """``length`` cut into the fewest cores of at most ``tile`` px, as even as whole ``multiple`` blocks allow."""
    if tile <= 0 or length <= tile:
        return [(0, length)]
    n = math.ceil(length / tile)
    blocks = length // multiple
    edges = [round(k * blocks / n) * multiple for k in range(n + 1)]
    edges[-1] = length
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def upscale_tensor(
    net: Any, x: torch.Tensor, *, scale: int, tile: int, overlap: int, multiple: int = 1, blend: bool = True
) -> torch.Tensor:
    """``x`` (``[1, 3, H, W]`` in [0, 1]) through ``net`` in tiles: ``[1, 3, H*scale, W*scale]`` float32 on
    the CPU, not clamped. ``multiple``: the side every tile must be a multiple of (a pixel-unshuffling
    network's factor). ``blend=False`` cuts tiles at their core boundary instead of feathering (to
    measure what feathering buys). Run inside ``torch.inference_mode()`` with ``net`` on its device.
    """
    _, _, h, w = x.shape
    # Pad once to whole unshuffle blocks (edge pixels repeated), so every tile is whole blocks too.
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    hp, wp = h + ph, w + pw
    if tile:
        tile = max(multiple, tile // multiple * multiple)
        overlap = -(-overlap // multiple) * multiple
    half = overlap / 2 if blend else 0.0
    rows, cols = _cores(hp, tile, multiple), _cores(wp, tile, multiple)
    row_w, col_w = _ramps(hp, rows, half, scale), _ramps(wp, cols, half, scale)
    device, dtype = module_device(net), module_dtype(net)
    out = torch.zeros(1, 3, hp * scale, wp * scale, dtype=torch.float32)
    for (y0, y1), wy in zip(rows, row_w, strict=True):
        cy0, cy1 = max(0, y0 - overlap), min(hp, y1 + overlap)
        for (x0, x1), wx in zip(cols, col_w, strict=True):
            cx0, cx1 = max(0, x0 - overlap), min(wp, x1 + overlap)
            piece = net(x[:, :, cy0:cy1, cx0:cx1].to(device=device, dtype=dtype))
            want = (1, 3, (cy1 - cy0) * scale, (cx1 - cx0) * scale)
            if not isinstance(piece, torch.Tensor) or tuple(piece.shape) != want:
                got = tuple(piece.shape) if isinstance(piece, torch.Tensor) else type(piece).__name__
                raise WrongModelTypeError(
                    f"the upscaler returned {got} for a {cy1 - cy0}x{cx1 - cx0} tile; expected {want} (x{scale})"
                )
            sy, sx = slice(cy0 * scale, cy1 * scale), slice(cx0 * scale, cx1 * scale)
            weight = wy[sy, None] * wx[None, sx]
            out[:, :, sy, sx] += piece.float().cpu() * weight
    return out[:, :, : h * scale, : w * scale]


class Upscaler(Service):
    """An ESRGAN-family upscaler (RRDBNet: ESRGAN, Real-ESRGAN, most community x2/x4 models).

    ``Upscaler(model)(image, tile=512, overlap=32, outscale=None)`` returns the image ``scale`` times
    larger (or ``outscale`` times, resized with Lanczos as Real-ESRGAN's ``--outscale``). ``model`` is a
    ``LoadedModel`` (``ModelManager.load_model_by_key``), a ``ManagedModel``
    (``EsrganModelManager().load(key)``) or the bare module. See the module docstring for the tiling.
    """

    model_types = (ModelType.SpandrelImageToImage,)

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        net = self.bound.model
        label = self.bound.label
        if _is_face_restorer(net):
            raise WrongModelTypeError(
                f"Upscaler cannot use {label}: it is a {net.arch} face restorer; use FaceRestorer",
                key=self.bound.key,
                expected=("ESRGAN",),
            )
        if not isinstance(net, torch.nn.Module):
            raise WrongModelTypeError(
                f"Upscaler cannot use {label}: it is a {type(net).__name__}, not a torch image-to-image network "
                "(ESRGAN-family upscaler)",
                key=self.bound.key,
                expected=(ModelType.SpandrelImageToImage.value,),
            )
        #: Tiles and images are padded to whole blocks of this side (pixel-unshuffling x1/x2 models).
        self.multiple = int(getattr(net, "unshuffle", 1) or 1)
        declared = getattr(net, "scale", None)
        if isinstance(declared, int) and not isinstance(declared, bool) and declared >= 1:
            self.scale = declared
        else:
            with self.bound.running() as running:
                self.scale = _probe_scale(running, self.multiple, label)

    @classmethod
    def check_config(cls, config: ModelConfigBase) -> None:
        """Refuse records of other types, and face restorers, which share the upscalers' type."""
        super().check_config(config)
        arch = getattr(config, "architecture", None)
        if arch in FACE_ARCHITECTURES:
            raise WrongModelTypeError(
                f"Upscaler cannot use model {config.name!r}: it is a {arch} face restorer; use FaceRestorer",
                key=config.key,
                expected=("ESRGAN",),
            )

    @property
    def min_size(self) -> int:
        """The smallest image side the network takes (a pixel-unshuffling model needs a whole block)."""
        return self.multiple

    def _check(self, image: Any, tile: int, overlap: int) -> Image.Image:
        for name, value in (("tile", tile), ("overlap", overlap)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ServiceInputError(f"{name} must be an integer >= 0 (pixels), not {value!r}")
        if tile and overlap * 2 >= tile:
            raise ServiceInputError(
                f"overlap ({overlap}) must be less than half the tile ({tile}): each tile's context would "
                "cover its neighbours' cores"
            )
        return check_image(image, min_size=self.min_size)

    def upscale_tensor(self, image: Image.Image, *, tile: int = 512, overlap: int = 32) -> torch.Tensor:
        """The network's output for ``image`` at its own scale, ``[1, 3, H*scale, W*scale]`` float32 on
        the CPU, not clamped (what ``__call__`` rounds into an image)."""
        return self._run(self._check(image, tile, overlap), tile, overlap)

    def _run(self, rgb: Image.Image, tile: int, overlap: int) -> torch.Tensor:
        with self.bound.running() as net, torch.inference_mode():
            return upscale_tensor(
                net, to_tensor(rgb), scale=self.scale, tile=tile, overlap=overlap, multiple=self.multiple
            )

    def __call__(
        self, image: Image.Image, *, tile: int = 512, overlap: int = 32, outscale: float | None = None
    ) -> Image.Image:
        """``image`` upscaled: ``tile`` input px per tile (0: the whole image at once) with ``overlap`` px of
        context each side; ``outscale`` (default: the model's scale) sets the final size,
        ``round(input size x outscale)``, by a Lanczos resize of the model's output."""
        if outscale is not None and (
            not isinstance(outscale, int | float) or isinstance(outscale, bool) or not 0 < outscale < math.inf
        ):
            raise ServiceInputError(f"outscale must be a number > 0, not {outscale!r}")
        rgb = self._check(image, tile, overlap)
        result = to_image(self._run(rgb, tile, overlap))
        if outscale is None or outscale == self.scale:
            return result
        # Half up, not Python's round-half-to-even: 37 px x 1.5 is 56 px.
        size = (max(1, math.floor(rgb.width * outscale + 0.5)), max(1, math.floor(rgb.height * outscale + 0.5)))
        return result if size == result.size else result.resize(size, Image.Resampling.LANCZOS)


__all__ = ["FACE_ARCHITECTURES", "Upscaler", "upscale_tensor"]
