"""GFPGAN face restoration (the "clean" GFPGANv1 architecture of GFPGAN v1.2-v1.4), built from a state dict.

No importable gfpgan / basicsr / spandrel works here (they import torchvision), so the network is
written out below with the released files' key names: a U-Net encoder (``conv_body_first``,
``conv_body_down.N``, ``final_conv``, ``conv_body_up.N``, ``toRGB.N``) whose bottleneck becomes the
style code (``final_linear``) and whose up path yields per-resolution SFT scale and shift maps
(``condition_scale.N`` / ``condition_shift.N``), and a StyleGAN2 decoder (``stylegan_decoder.*``)
modulated by both.

Everything is read from the shapes, so the released 512 px models and tiny test models both build:
the output size (number of up blocks), the encoder and decoder width at every resolution,
``num_style_feat``, the number of style-MLP layers, ``sft_half`` (SFT on half of the decoder
channels, as in every released model) and ``different_w`` (one style vector per decoder layer).
``input_is_latent`` cannot be seen in the weights; it defaults to ``True`` like GFPGAN's own
``GFPGANer`` for the released models.

This module imports torch at import time: import it only when loading.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from modeldepot.errors import InvalidImageError
from modeldepot.load._errors import ModelLoadError
from modeldepot.load.loaders._strict import check_against, unwrap_params

ARCH = "GFPGAN"
_WRAPPERS = ("params_ema", "params")
#: Keys only a GFPGAN (clean) state dict has together: the U-Net head, the SFT branch, the decoder.
_MARKERS = (
    "conv_body_first.weight",
    "toRGB.0.weight",
    "condition_scale.0.0.weight",
    "stylegan_decoder.constant_input.weight",
)
_SLOPE = 0.2


def looks_like_gfpgan(keys: Iterable[str]) -> bool:
    """Whether these state-dict keys (wrapped in ``params_ema.`` / ``params.`` or not) are a GFPGAN's."""
    names = set(keys)
    return any(all(p + m in names for m in _MARKERS) for p in ("", *(w + "." for w in _WRAPPERS)))


@dataclass(frozen=True)
class GfpganShape:
    """Hyperparameters of one GFPGAN; widths are indexed by ``log2(resolution) - 2`` (4 px first)."""

    out_size: int
    enc_widths: tuple[int, ...]
    dec_widths: tuple[int, ...]
    num_style_feat: int = 512
    num_mlp: int = 8
    sft_half: bool = True
    different_w: bool = True

    @property
    def log_size(self) -> int:
        return int(math.log2(self.out_size))

    @property
    def num_latent(self) -> int:
        return 2 * self.log_size - 2

    @classmethod
    def released(cls, out_size: int = 512, channel_multiplier: int = 2, narrow: float = 1.0) -> GfpganShape:
        """The widths GFPGAN's ``GFPGANv1Clean`` derives from ``channel_multiplier`` and ``narrow``."""
        base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier}
        base |= {256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
        res = [2**j for j in range(2, int(math.log2(out_size)) + 1)]
        return cls(
            out_size,
            enc_widths=tuple(int(base[r] * narrow * 0.5) for r in res),  # the U-Net is half as wide
            dec_widths=tuple(int(base[r] * narrow) for r in res),
        )


# -- building blocks -------------------------------------------------------------------------------
def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, _SLOPE)


class _ResampleBlock(nn.Module):
    """Residual conv block that halves (``factor`` 0.5) or doubles (2) the resolution (bilinear)."""

    def __init__(self, cin: int, cout: int, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def _resize(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        h = _lrelu(self.conv2(self._resize(_lrelu(self.conv1(x)))))
        skip: Tensor = self.skip(self._resize(x))
        return h + skip


class _PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class _ModConv(nn.Module):
    """StyleGAN2 modulated convolution (no bias); weight shape ``(1, out, in, k, k)`` as in the files.

    Scaling the input channels by the style and the output channels by the demodulation factor is
    the same computation as convolving with a per-sample modulated kernel, without a grouped conv.
    """

    def __init__(self, cin: int, cout: int, kernel: int, style_dim: int, *, demodulate: bool, upsample: bool) -> None:
        super().__init__()
        self.demodulate = demodulate
        self.upsample = upsample
        self.modulation = nn.Linear(style_dim, cin)
        self.weight = nn.Parameter(torch.randn(1, cout, cin, kernel, kernel) / math.sqrt(cin * kernel * kernel))

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        s = self.modulation(style)  # (b, in)
        w = self.weight[0]  # (out, in, k, k)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(x * s[:, :, None, None], w, padding=w.shape[-1] // 2)
        if self.demodulate:
            # sum over in, k, k of (w * s)^2 = s^2 @ sum_k w^2
            demod = torch.rsqrt(s.pow(2) @ w.pow(2).sum(dim=(2, 3)).t() + 1e-8)  # (b, out)
            out = out * demod[:, :, None, None]
        return out


class _StyleConv(nn.Module):
    def __init__(self, cin: int, cout: int, style_dim: int, *, upsample: bool) -> None:
        super().__init__()
        self.modulated_conv = _ModConv(cin, cout, 3, style_dim, demodulate=True, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None) -> Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2)  # the gain of the leaky ReLU
        if noise is None:
            noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        return _lrelu(out + self.weight * noise + self.bias)


class _ToRGB(nn.Module):
    def __init__(self, cin: int, style_dim: int, *, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = _ModConv(cin, 3, 1, style_dim, demodulate=False, upsample=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out: Tensor = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class _ConstantInput(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class _StyleDecoder(nn.Module):
    """StyleGAN2 generator whose first conv of every resolution is followed by the SFT conditions."""

    def __init__(self, shape: GfpganShape) -> None:
        super().__init__()
        dim, widths = shape.num_style_feat, shape.dec_widths
        self.sft_half = shape.sft_half
        self.num_latent = shape.num_latent
        mlp: list[nn.Module] = [_PixelNorm()]
        for _ in range(shape.num_mlp):
            mlp += [nn.Linear(dim, dim), nn.LeakyReLU(_SLOPE)]
        self.style_mlp = nn.Sequential(*mlp)  # indices 1, 3, 5...: the file's style_mlp.N keys
        self.constant_input = _ConstantInput(widths[0])
        self.style_conv1 = _StyleConv(widths[0], widths[0], dim, upsample=False)
        self.to_rgb1 = _ToRGB(widths[0], dim, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for cin, cout in itertools.pairwise(widths):
            self.style_convs.append(_StyleConv(cin, cout, dim, upsample=True))
            self.style_convs.append(_StyleConv(cout, cout, dim, upsample=False))
            self.to_rgbs.append(_ToRGB(cout, dim, upsample=True))
        self.num_layers = 2 * (shape.log_size - 2) + 1
        # Fixed noise maps (persistent buffers in the released files) make a run reproducible.
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, res, res))

    def forward(
        self, style: Tensor, conditions: list[Tensor], *, input_is_latent: bool, randomize_noise: bool
    ) -> Tensor:
        if not input_is_latent:
            style = self.style_mlp(style)
        latent = style if style.ndim == 3 else style.unsqueeze(1).expand(-1, self.num_latent, -1)
        noise: list[Tensor | None] = (
            [None] * self.num_layers
            if randomize_noise
            else [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]
        )
        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        rgb: Tensor = self.to_rgb1(out, latent[:, 1])
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1
            out = self.style_convs[i - 1](out, latent[:, i], noise[i])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:
                    keep, mod = out.split(out.shape[1] // 2, dim=1)
                    out = torch.cat([keep, mod * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = self.style_convs[i](out, latent[:, i + 1], noise[i + 1])
            rgb = to_rgb(out, latent[:, i + 2], rgb)
        return rgb


def _sft_branch(width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(_SLOPE), nn.Conv2d(width, out, 3, 1, 1))


class GFPGAN(nn.Module):
    """GFPGANv1 (clean): an aligned ``out_size`` x ``out_size`` face in [-1, 1] -> the restored face.

    ``model(x)`` returns the restored image tensor ``(b, 3, out_size, out_size)``. Code written for
    GFPGAN's own class passes ``return_rgb=``: then the answer is GFPGAN's tuple ``(image, rgbs)``
    (``rgbs``: the encoder's intermediate RGB images when ``return_rgb=True``, else empty).
    ``randomize_noise=False`` (the default here; GFPGAN draws fresh noise) uses the noise maps stored
    in the file, so a restoration is reproducible. ``weight`` is accepted and ignored, like GFPGAN.
    """

    arch = ARCH
    scale = 1

    def __init__(self, shape: GfpganShape, *, input_is_latent: bool = True) -> None:
        super().__init__()
        self.hparams = shape
        self.out_size = shape.out_size
        self.input_is_latent = input_is_latent
        enc, dec = shape.enc_widths, shape.dec_widths
        self.conv_body_first = nn.Conv2d(3, enc[-1], 1)
        self.conv_body_down = nn.ModuleList(
            _ResampleBlock(cin, cout, 0.5) for cin, cout in zip(enc[::-1], enc[-2::-1], strict=False)
        )
        self.final_conv = nn.Conv2d(enc[0], enc[0], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(_ResampleBlock(cin, cout, 2) for cin, cout in itertools.pairwise(enc))
        self.toRGB = nn.ModuleList(nn.Conv2d(w, 3, 1) for w in enc[1:])  # the file's key name
        styles = shape.num_latent if shape.different_w else 1
        self.final_linear = nn.Linear(enc[0] * 16, styles * shape.num_style_feat)
        self.stylegan_decoder = _StyleDecoder(shape)
        sft = [d // 2 if shape.sft_half else d for d in dec[1:]]
        self.condition_scale = nn.ModuleList(_sft_branch(w, o) for w, o in zip(enc[1:], sft, strict=True))
        self.condition_shift = nn.ModuleList(_sft_branch(w, o) for w, o in zip(enc[1:], sft, strict=True))

    def forward(
        self,
        x: Tensor,
        return_rgb: bool | None = None,
        randomize_noise: bool = False,
        weight: float | None = None,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.out_size, self.out_size):
            raise InvalidImageError(
                f"GFPGAN expects aligned faces of shape (batch, 3, {self.out_size}, {self.out_size}), "
                f"got {tuple(x.shape)}"
            )
        feat = _lrelu(self.conv_body_first(x))
        skips: list[Tensor] = []
        for down in self.conv_body_down:
            feat = down(feat)
            skips.append(feat)
        feat = _lrelu(self.final_conv(feat))
        style = self.final_linear(feat.flatten(1))
        if self.hparams.different_w:
            style = style.view(style.shape[0], -1, self.hparams.num_style_feat)
        conditions: list[Tensor] = []
        rgbs: list[Tensor] = []
        for i, up in enumerate(self.conv_body_up):
            feat = up(feat + skips[-1 - i])  # deepest skip first
            conditions += [self.condition_scale[i](feat), self.condition_shift[i](feat)]
            if return_rgb:
                rgbs.append(self.toRGB[i](feat))
        image: Tensor = self.stylegan_decoder(
            style, conditions, input_is_latent=self.input_is_latent, randomize_noise=randomize_noise
        )
        return image if return_rgb is None else (image, rgbs)


# -- hyperparameters from shapes -------------------------------------------------------------------
class _Shapes:
    """Shape lookups that name the key (and the file) when it is missing."""

    def __init__(self, sd: Mapping[str, Any], path: str) -> None:
        self.sd, self.path = sd, path

    def dim(self, key: str, index: int) -> int:
        if key not in self.sd:
            raise ModelLoadError(
                f"{self.path}: the weights do not match a GFPGAN face restorer: missing key {key} "
                "(needed to infer its shape)",
                path=self.path,
            )
        return int(self.sd[key].shape[index])

    def count(self, prefix: str, suffix: str = "") -> int:
        heads = (k[len(prefix) :].split(".")[0] for k in self.sd if k.startswith(prefix) and k.endswith(suffix))
        found = {int(h) for h in heads if h.isdigit()}
        return max(found) + 1 if found else 0


def infer_shape(sd: Mapping[str, Any], path: str = "state dict") -> GfpganShape:
    """The :class:`GfpganShape` of an unwrapped GFPGAN state dict."""
    s = _Shapes(sd, path)
    levels = s.count("conv_body_up.")  # one up block per resolution above 4 px
    if levels < 1:
        raise ModelLoadError(f"{path}: a GFPGAN state dict without conv_body_up blocks", path=path)
    dec = "stylegan_decoder."
    enc_widths = (s.dim("final_conv.weight", 0), *(s.dim(f"conv_body_up.{i}.conv2.weight", 0) for i in range(levels)))
    dec_widths = (
        s.dim(dec + "constant_input.weight", 1),
        *(s.dim(f"{dec}style_convs.{2 * i}.modulated_conv.weight", 1) for i in range(levels)),
    )
    num_style_feat = s.dim(dec + "to_rgb1.modulated_conv.modulation.weight", 1)
    sft_out = s.dim("condition_scale.0.2.weight", 0)
    if sft_out == dec_widths[1]:
        sft_half = False
    elif 2 * sft_out == dec_widths[1]:
        sft_half = True
    else:
        raise ModelLoadError(
            f"{path}: GFPGAN condition_scale.0.2.weight has {sft_out} channels, neither the decoder width "
            f"{dec_widths[1]} nor half of it",
            path=path,
        )
    shape = GfpganShape(
        out_size=2 ** (levels + 2),
        enc_widths=enc_widths,
        dec_widths=dec_widths,
        num_style_feat=num_style_feat,
        num_mlp=s.count(dec + "style_mlp.", ".weight") // 2,
        sft_half=sft_half,
        different_w=s.dim("final_linear.weight", 0) != num_style_feat,
    )
    if shape.different_w and s.dim("final_linear.weight", 0) != shape.num_latent * num_style_feat:
        raise ModelLoadError(
            f"{path}: GFPGAN final_linear.weight gives {s.dim('final_linear.weight', 0)} style features, "
            f"expected {num_style_feat} or {shape.num_latent} x {num_style_feat}",
            path=path,
        )
    return shape


def build_gfpgan(
    sd: dict[str, Any], name: str = "state dict", *, partial: bool = False, input_is_latent: bool = True
) -> GFPGAN:
    """A float32 :class:`GFPGAN` (eval mode, no grad) with ``sd``'s weights, exactly unless ``partial``.

    ``sd`` may be wrapped in ``params_ema`` / ``params``. Raises ``ValueError`` when it is not a
    GFPGAN at all, :class:`ModelLoadError` naming the keys when it is one whose weights are missing,
    extra or of other shapes (a ``partial`` load keeps the random init for missing ones).
    """
    sd = unwrap_params(sd)
    if not looks_like_gfpgan(sd):
        missing = [m for m in _MARKERS if m not in sd]
        raise ValueError(f"not a GFPGAN state dict (no {', '.join(missing)})")
    shape = infer_shape(sd, name)
    if partial:
        model = GFPGAN(shape, input_is_latent=input_is_latent)
    else:
        with torch.device("meta"):  # every tensor comes from the file: skip the random init
            model = GFPGAN(shape, input_is_latent=input_is_latent)
    expected = model.state_dict()
    check_against("a GFPGAN face restorer", name, sd, expected, partial=partial)
    weights = {k: v.to(torch.float32) for k, v in sd.items() if k in expected}
    model.load_state_dict(weights, strict=not partial, assign=not partial)
    model.eval()
    model.requires_grad_(False)
    return model


__all__ = ["GFPGAN", "GfpganShape", "build_gfpgan", "infer_shape", "looks_like_gfpgan"]
