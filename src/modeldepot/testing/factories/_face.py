"""GFPGAN face-restorer files, written without torch: the released key names, tiny or full widths.

``gfpgan_shapes`` lays out the "clean" GFPGANv1 architecture of GFPGAN v1.2-v1.4 (U-Net encoder,
SFT condition branches, StyleGAN2 decoder with its stored noise maps); ``write_gfpgan`` writes it.
``gfpgan_shapes(512, channels=GFPGAN_RELEASE_CHANNELS, num_style_feat=512)`` is the key set of the
released ``GFPGANv1.3.pth`` / ``GFPGANv1.4.pth`` (285 tensors, 87,143,276 values).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from modeldepot.taxonomy import PICKLE_SUFFIXES, has_suffix
from modeldepot.testing.factories._writers import Shape, write_safetensors, write_weights

#: Decoder width per resolution of the released models (channel_multiplier 2); the U-Net is half as wide.
GFPGAN_RELEASE_CHANNELS: dict[int, int] = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64}


def _decoder_widths(resolutions: list[int], channels: int | Mapping[int, int]) -> dict[int, int]:
    if isinstance(channels, Mapping):
        return {r: int(channels[r]) for r in resolutions}
    # Like the released models, narrower at high resolutions: full width up to 16 px, then halving.
    return {r: max(channels // max(r // 16, 1), 2) for r in resolutions}


def gfpgan_shapes(
    out_size: int = 32,
    *,
    channels: int | Mapping[int, int] = 8,
    num_style_feat: int = 16,
    num_mlp: int = 8,
    sft_half: bool = True,
    different_w: bool = True,
) -> dict[str, Shape]:
    """Key -> shape of a complete GFPGANv1 (clean) state dict.

    ``channels``: the decoder width (even) per resolution, or one width used up to 16 px and halved
    at every doubling above; the encoder is half as wide.
    """
    log = out_size.bit_length() - 1
    if out_size < 8 or out_size != 2**log:
        raise ValueError(f"GFPGAN out_size must be a power of two >= 8, not {out_size}")
    res = [2**j for j in range(2, log + 1)]
    dec = _decoder_widths(res, channels)
    enc = {r: max(w // 2, 1) for r, w in dec.items()}
    keys: dict[str, Shape] = {}

    def conv(name: str, cout: int, cin: int, k: int, *, bias: bool = True) -> None:
        keys[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            keys[f"{name}.bias"] = (cout,)

    def linear(name: str, cout: int, cin: int) -> None:
        keys[f"{name}.weight"] = (cout, cin)
        keys[f"{name}.bias"] = (cout,)

    def resblock(name: str, cin: int, cout: int) -> None:
        conv(f"{name}.conv1", cin, cin, 3)
        conv(f"{name}.conv2", cout, cin, 3)
        conv(f"{name}.skip", cout, cin, 1, bias=False)

    def modconv(name: str, cout: int, cin: int, k: int) -> None:
        keys[f"{name}.modulated_conv.weight"] = (1, cout, cin, k, k)
        linear(f"{name}.modulated_conv.modulation", cin, num_style_feat)

    def style_conv(name: str, cin: int, cout: int) -> None:
        keys[f"{name}.weight"] = (1,)  # noise strength
        keys[f"{name}.bias"] = (1, cout, 1, 1)
        modconv(name, cout, cin, 3)

    def to_rgb(name: str, cin: int) -> None:
        keys[f"{name}.bias"] = (1, 3, 1, 1)
        modconv(name, 3, cin, 1)

    # U-Net encoder: down to 4 px, then back up, with an RGB head per resolution.
    conv("conv_body_first", enc[out_size], 3, 1)
    for i, r in enumerate(reversed(res[1:])):
        resblock(f"conv_body_down.{i}", enc[r], enc[r // 2])
    conv("final_conv", enc[4], enc[4], 3)
    for i, r in enumerate(res[1:]):
        resblock(f"conv_body_up.{i}", enc[r // 2], enc[r])
    for i, r in enumerate(res[1:]):
        conv(f"toRGB.{i}", 3, enc[r], 1)
    num_latent = 2 * log - 2
    linear("final_linear", num_style_feat * (num_latent if different_w else 1), enc[4] * 16)
    # StyleGAN2 decoder.
    d = "stylegan_decoder."
    for i in range(num_mlp):
        linear(f"{d}style_mlp.{2 * i + 1}", num_style_feat, num_style_feat)
    keys[f"{d}constant_input.weight"] = (1, dec[4], 4, 4)
    style_conv(f"{d}style_conv1", dec[4], dec[4])
    to_rgb(f"{d}to_rgb1", dec[4])
    for i, r in enumerate(res[1:]):
        style_conv(f"{d}style_convs.{2 * i}", dec[r // 2], dec[r])
        style_conv(f"{d}style_convs.{2 * i + 1}", dec[r], dec[r])
    for i, r in enumerate(res[1:]):
        to_rgb(f"{d}to_rgbs.{i}", dec[r])
    for i in range(2 * (log - 2) + 1):
        side = 2 ** ((i + 5) // 2)
        keys[f"{d}noises.noise{i}"] = (1, 1, side, side)
    # SFT scale / shift branches, one per resolution above 4 px.
    for branch in ("condition_scale", "condition_shift"):
        for i, r in enumerate(res[1:]):
            conv(f"{branch}.{i}.0", enc[r], enc[r], 3)
            conv(f"{branch}.{i}.2", dec[r] // 2 if sft_half else dec[r], enc[r], 3)
    return keys


def write_gfpgan(
    path: str | Path,
    *,
    out_size: int = 32,
    channels: int | Mapping[int, int] = 8,
    num_style_feat: int = 16,
    num_mlp: int = 8,
    sft_half: bool = True,
    different_w: bool = True,
    seed: int | None = None,
) -> Path:
    """A complete tiny GFPGAN (see :func:`gfpgan_shapes`): a ``.pth``/``.pt``/``.ckpt``/``.bin`` path gets
    a torch pickle wrapped in ``params_ema`` like the released files, anything else safetensors
    (``seed``: a few seeded bytes per tensor, for distinct file contents; zeros otherwise)."""
    keys = gfpgan_shapes(
        out_size,
        channels=channels,
        num_style_feat=num_style_feat,
        num_mlp=num_mlp,
        sft_half=sft_half,
        different_w=different_w,
    )
    path = Path(path)
    if has_suffix(path.name, PICKLE_SUFFIXES):
        return write_weights(path, keys, wrap="params_ema")
    return write_safetensors(path, keys, seed=seed)


__all__ = ["GFPGAN_RELEASE_CHANNELS", "gfpgan_shapes", "write_gfpgan"]
