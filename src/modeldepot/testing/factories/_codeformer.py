"""CodeFormer face-restoration weights with the released key names, tiny by default, written without torch.

The layout is that of sczhou's ``codeformer.pth``: a VQGAN encoder and generator as flat
``blocks.N`` lists, the codebook, a transformer predicting codes, and SFT fusion blocks per
resolution in ``fuse_convs_dict``. :func:`codeformer_shapes` with no arguments gives the released
model's full key set (names and shapes), for header-only tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modeldepot.testing.factories._writers import Shape, write_weights

#: Hyperparameters of the released ``codeformer.pth`` (v0.1.0).
RELEASED: dict[str, object] = {
    "nf": 64,
    "ch_mult": (1, 2, 2, 4, 4, 8),
    "res_blocks": 2,
    "attn_resolutions": (16,),
    "emb_dim": 256,
    "codebook_size": 1024,
    "dim_embd": 512,
    "n_layers": 9,
    "latent_side": 16,
    "connect_list": ("32", "64", "128", "256"),
}


class _Keys:
    def __init__(self) -> None:
        self.shapes: dict[str, Shape] = {}

    def conv(self, name: str, cin: int, cout: int, k: int = 3, bias: bool = True) -> None:
        self.shapes[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            self.shapes[f"{name}.bias"] = (cout,)

    def affine(self, name: str, ch: int) -> None:  # GroupNorm / LayerNorm
        self.shapes[f"{name}.weight"] = (ch,)
        self.shapes[f"{name}.bias"] = (ch,)

    def linear(self, name: str, cin: int, cout: int, bias: bool = True) -> None:
        self.shapes[f"{name}.weight"] = (cout, cin)
        if bias:
            self.shapes[f"{name}.bias"] = (cout,)

    def res(self, name: str, cin: int, cout: int) -> None:
        self.affine(f"{name}.norm1", cin)
        self.conv(f"{name}.conv1", cin, cout)
        self.affine(f"{name}.norm2", cout)
        self.conv(f"{name}.conv2", cout, cout)
        if cin != cout:
            self.conv(f"{name}.conv_out", cin, cout, k=1)

    def attn(self, name: str, ch: int) -> None:
        self.affine(f"{name}.norm", ch)
        for part in ("q", "k", "v", "proj_out"):
            self.conv(f"{name}.{part}", ch, ch, k=1)


def codeformer_shapes(
    *,
    nf: int = 64,
    ch_mult: Sequence[int] = (1, 2, 2, 4, 4, 8),
    res_blocks: int = 2,
    attn_resolutions: Sequence[int] = (16,),
    emb_dim: int = 256,
    codebook_size: int = 1024,
    dim_embd: int = 512,
    n_layers: int = 9,
    latent_side: int = 16,
    connect_list: Sequence[str] = ("32", "64", "128", "256"),
) -> dict[str, Shape]:
    """Names and shapes of a CodeFormer state dict (defaults: the released model)."""
    keys = _Keys()
    size = latent_side * 2 ** (len(ch_mult) - 1)
    widths = [nf * m for m in ch_mult]

    # encoder: conv, then per level res blocks (+ attention at attn_resolutions), downsampling between
    i = 0
    keys.conv(f"encoder.blocks.{i}", 3, nf)
    ch = nf
    for level, width in enumerate(widths):
        for _ in range(res_blocks):
            i += 1
            keys.res(f"encoder.blocks.{i}", ch, width)
            ch = width
            if size >> level in attn_resolutions:
                i += 1
                keys.attn(f"encoder.blocks.{i}", ch)
        if level < len(widths) - 1:
            i += 1
            keys.conv(f"encoder.blocks.{i}.conv", ch, ch)
    for kind in ("res", "attn", "res"):
        i += 1
        keys.res(f"encoder.blocks.{i}", ch, ch) if kind == "res" else keys.attn(f"encoder.blocks.{i}", ch)
    keys.affine(f"encoder.blocks.{i + 1}", ch)
    keys.conv(f"encoder.blocks.{i + 2}", ch, emb_dim)

    keys.shapes["quantize.embedding.weight"] = (codebook_size, emb_dim)

    # generator: the mirror image, upsampling between levels
    keys.conv("generator.blocks.0", emb_dim, ch)
    keys.res("generator.blocks.1", ch, ch)
    keys.attn("generator.blocks.2", ch)
    keys.res("generator.blocks.3", ch, ch)
    i = 3
    for level in reversed(range(len(widths))):
        for _ in range(res_blocks):
            i += 1
            keys.res(f"generator.blocks.{i}", ch, widths[level])
            ch = widths[level]
            if size >> level in attn_resolutions:
                i += 1
                keys.attn(f"generator.blocks.{i}", ch)
        if level:
            i += 1
            keys.conv(f"generator.blocks.{i}.conv", ch, ch)
    keys.affine(f"generator.blocks.{i + 1}", ch)
    keys.conv(f"generator.blocks.{i + 2}", ch, 3)

    # transformer predicting one code per latent position
    keys.shapes["position_emb"] = (latent_side * latent_side, dim_embd)
    keys.linear("feat_emb", emb_dim, dim_embd)
    for n in range(n_layers):
        layer = f"ft_layers.{n}"
        keys.shapes[f"{layer}.self_attn.in_proj_weight"] = (3 * dim_embd, dim_embd)
        keys.shapes[f"{layer}.self_attn.in_proj_bias"] = (3 * dim_embd,)
        keys.linear(f"{layer}.self_attn.out_proj", dim_embd, dim_embd)
        keys.linear(f"{layer}.linear1", dim_embd, 2 * dim_embd)
        keys.linear(f"{layer}.linear2", 2 * dim_embd, dim_embd)
        keys.affine(f"{layer}.norm1", dim_embd)
        keys.affine(f"{layer}.norm2", dim_embd)
    keys.affine("idx_pred_layer.0", dim_embd)
    keys.linear("idx_pred_layer.1", dim_embd, codebook_size, bias=False)

    # SFT fusion of encoder features into the generator, one block per connected resolution
    for name in connect_list:
        width = widths[(size // int(name)).bit_length() - 1]
        keys.res(f"fuse_convs_dict.{name}.encode_enc", 2 * width, width)
        for branch in ("scale", "shift"):
            keys.conv(f"fuse_convs_dict.{name}.{branch}.0", width, width)
            keys.conv(f"fuse_convs_dict.{name}.{branch}.2", width, width)
    return keys.shapes


#: ``write_codeformer``'s defaults (8 px faces), for ``codeformer_shapes(**TINY_CODEFORMER)``.
TINY_CODEFORMER: dict[str, Any] = {
    "nf": 32,
    "ch_mult": (1, 2),
    "res_blocks": 1,
    "attn_resolutions": (4,),
    "emb_dim": 16,
    "codebook_size": 16,
    "dim_embd": 32,
    "n_layers": 2,
    "latent_side": 4,
    "connect_list": ("8",),
}


def write_codeformer(
    path: str | Path,
    *,
    seed: int | None = None,
    nf: int = 32,
    ch_mult: Sequence[int] = (1, 2),
    res_blocks: int = 1,
    attn_resolutions: Sequence[int] = (4,),
    emb_dim: int = 16,
    codebook_size: int = 16,
    dim_embd: int = 32,
    n_layers: int = 2,
    latent_side: int = 4,
    connect_list: Sequence[str] = ("8",),
    wrap: str | None = "params_ema",
) -> Path:
    """A complete CodeFormer (tiny by default: 8x8 images, 4x4 latent). A ``.pth`` path gets a torch
    pickle with the weights under ``wrap`` like the released file; other paths get safetensors
    (``seed`` varies their bytes). Widths (``nf * ch_mult``) must be multiples of 32 (GroupNorm)."""
    shapes = codeformer_shapes(
        nf=nf,
        ch_mult=ch_mult,
        res_blocks=res_blocks,
        attn_resolutions=attn_resolutions,
        emb_dim=emb_dim,
        codebook_size=codebook_size,
        dim_embd=dim_embd,
        n_layers=n_layers,
        latent_side=latent_side,
        connect_list=connect_list,
    )
    return write_weights(path, shapes, seed=seed, wrap=wrap)


__all__ = ["RELEASED", "TINY_CODEFORMER", "codeformer_shapes", "write_codeformer"]
