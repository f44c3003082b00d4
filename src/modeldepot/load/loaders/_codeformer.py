"""CodeFormer (Zhou et al. 2022, blind face restoration), built from a state dict.

No importable basicsr / codeformer package works next to this torch (both pull in torchvision),
so the network is written here, keyed like the released ``codeformer.pth`` (weights under
``params_ema``):

* ``encoder.blocks.N`` / ``generator.blocks.N``: the VQGAN encoder and decoder, a flat list of
  convs, residual blocks (``conv1``), attention blocks (``q``/``k``/``v``), down/upsamplers
  (``conv``) and group norms;
* ``quantize.embedding.weight``: the codebook (``codebook_size x emb_dim``);
* ``position_emb``, ``feat_emb``, ``ft_layers.N`` and ``idx_pred_layer``: the transformer that
  predicts a codebook index per latent position;
* ``fuse_convs_dict.<resolution>``: the controllable feature transformation (SFT) blocks that mix
  encoder features into the decoder, weighted by the fidelity weight ``w``.

Every hyperparameter is read from shapes (see :func:`infer_codeformer_config`), so the released
model (512x512, ch_mult 1,2,2,4,4,8) and tiny test models build through the same code.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modeldepot.errors import InvalidImageError
from modeldepot.load._errors import ModelLoadError
from modeldepot.load.loaders._strict import unwrap_params

_WRAPPERS = ("params_ema", "params")
_BLOCK = re.compile(r"^(encoder|generator)\.blocks\.(\d+)\.(.+)$")
_WHAT = "a CodeFormer face restorer"


@dataclass(frozen=True)
class CodeFormerConfig:
    """The shape of a CodeFormer; the released model is ``CodeFormerConfig.released()``."""

    nf: int
    ch_mult: tuple[int, ...]
    res_blocks: int
    attn_resolutions: tuple[int, ...]
    emb_dim: int
    codebook_size: int
    dim_embd: int
    dim_mlp: int
    n_layers: int
    n_head: int
    latent_side: int
    connect_list: tuple[str, ...]
    in_channels: int = 3
    out_channels: int = 3

    @property
    def out_size(self) -> int:
        """Side of the (square) images the model takes and returns."""
        return self.latent_side << (len(self.ch_mult) - 1)

    def level_of(self, resolution: int) -> int:
        """Index in ``ch_mult`` of the level working at ``resolution`` (0 = full size)."""
        ratio = self.out_size // resolution if resolution > 0 else 0
        if resolution <= 0 or ratio * resolution != self.out_size or ratio & (ratio - 1):
            raise ValueError(f"resolution {resolution} is not a level of a {self.out_size}px CodeFormer")
        level = ratio.bit_length() - 1
        if level >= len(self.ch_mult):
            raise ValueError(f"resolution {resolution} is below the {self.latent_side}px latent")
        return level

    @classmethod
    def released(cls) -> CodeFormerConfig:
        """The hyperparameters of sczhou's released ``codeformer.pth`` (v0.1.0)."""
        return cls(
            nf=64,
            ch_mult=(1, 2, 2, 4, 4, 8),
            res_blocks=2,
            attn_resolutions=(16,),
            emb_dim=256,
            codebook_size=1024,
            dim_embd=512,
            dim_mlp=1024,
            n_layers=9,
            n_head=8,
            latent_side=16,
            connect_list=("32", "64", "128", "256"),
        )


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in (v.shape if hasattr(v, "shape") else v))


def looks_like_codeformer(keys: Iterable[str]) -> bool:
    """True for CodeFormer weights (any wrapper): a VQGAN plus the code-prediction transformer."""
    seen = set()
    for key in keys:
        for wrapper in _WRAPPERS:
            if key.startswith(wrapper + "."):
                key = key[len(wrapper) + 1 :]
                break
        seen.add(key.split(".", 1)[0])
    # A bare VQGAN (VQAutoEncoder) has encoder/generator/quantize but no transformer.
    return {"encoder", "generator", "quantize"} <= seen and bool({"ft_layers", "position_emb", "idx_pred_layer"} & seen)


def _heads(dim: int) -> int:
    # Head count leaves no trace in the weights (in_proj packs all heads into one matrix); the
    # released model uses 8, so take 8 when it divides dim_embd, else the largest divisor below it.
    return next(h for h in range(8, 0, -1) if dim % h == 0)


def _need(shapes: Mapping[str, tuple[int, ...]], key: str, ndim: int) -> tuple[int, ...]:
    if key not in shapes:
        raise KeyError(key)
    shape = shapes[key]
    if len(shape) != ndim:
        raise ValueError(f"{key} has shape {list(shape)}, expected {ndim} dimensions")
    return shape


def _encoder_kinds(shapes: Mapping[str, tuple[int, ...]]) -> list[tuple[str, int]]:
    """The encoder's blocks in order, as (kind, output channels)."""
    subkeys: dict[int, set[str]] = {}
    for key in shapes:
        m = _BLOCK.match(key)
        if m and m[1] == "encoder":
            subkeys.setdefault(int(m[2]), set()).add(m[3])
    if not subkeys:
        raise KeyError("encoder.blocks.0.weight")
    kinds: list[tuple[str, int]] = []
    for i in range(max(subkeys) + 1):
        names = subkeys.get(i)
        if names is None:
            raise KeyError(f"encoder.blocks.{i}.weight")
        if "conv1.weight" in names:
            kinds.append(("res", _shape(shapes[f"encoder.blocks.{i}.conv1.weight"])[0]))
        elif "q.weight" in names:
            kinds.append(("attn", _shape(shapes[f"encoder.blocks.{i}.q.weight"])[0]))
        elif "conv.weight" in names:
            kinds.append(("down", _shape(shapes[f"encoder.blocks.{i}.conv.weight"])[0]))
        elif "weight" in names:
            w = _shape(shapes[f"encoder.blocks.{i}.weight"])
            kinds.append(("conv" if len(w) == 4 else "norm", w[0]))
        else:
            raise ValueError(f"encoder.blocks.{i} is neither a conv, a norm nor a known block")
    return kinds


def infer_codeformer_config(sd: Mapping[str, Any]) -> CodeFormerConfig:
    """Hyperparameters from a state dict's shapes (values: tensors or shape tuples; any wrapper).

    Raises ``KeyError`` naming a key the inference needs and ``ValueError`` for a block layout
    that is not a CodeFormer's.
    """
    shapes = {k: _shape(v) for k, v in unwrap_params(sd).items()}
    nf = _need(shapes, "encoder.blocks.0.weight", 4)[0]
    codebook_size, emb_dim = _need(shapes, "quantize.embedding.weight", 2)
    latent_size, dim_embd = _need(shapes, "position_emb", 2)
    latent_side = math.isqrt(latent_size)
    if latent_side * latent_side != latent_size:
        raise ValueError(f"position_emb has {latent_size} positions, not a square latent")
    dim_mlp = _need(shapes, "ft_layers.0.linear1.weight", 2)[0]
    n_layers = len({k.split(".")[1] for k in shapes if k.startswith("ft_layers.")})

    kinds = _encoder_kinds(shapes)
    tail = [k for k, _ in kinds[-5:]]
    if len(kinds) < 7 or kinds[0][0] != "conv" or tail != ["res", "attn", "res", "norm", "conv"]:
        raise ValueError("the encoder blocks are not laid out as a VQGAN encoder")
    levels: list[list[tuple[str, int]]] = [[]]
    for kind, ch in kinds[1:-5]:
        if kind == "down":
            levels.append([])
        elif kind in ("res", "attn"):
            levels[-1].append((kind, ch))
        else:
            raise ValueError(f"unexpected {kind} block inside the encoder's levels")
    res_counts = {sum(k == "res" for k, _ in level) for level in levels}
    if len(res_counts) != 1 or 0 in res_counts:
        raise ValueError("the encoder's levels have different numbers of residual blocks")
    res_blocks = res_counts.pop()
    ch_mult: list[int] = []
    for level in levels:
        out_ch = [ch for k, ch in level if k == "res"][-1]
        if out_ch % nf:
            raise ValueError(f"encoder channels {out_ch} are not a multiple of nf={nf}")
        ch_mult.append(out_ch // nf)
    out_size = latent_side << (len(levels) - 1)
    attn = tuple(sorted(out_size >> i for i, level in enumerate(levels) if any(k == "attn" for k, _ in level)))
    connect = sorted({k.split(".")[1] for k in shapes if k.startswith("fuse_convs_dict.")}, key=int)
    return CodeFormerConfig(
        nf=nf,
        ch_mult=tuple(ch_mult),
        res_blocks=res_blocks,
        attn_resolutions=attn,
        emb_dim=emb_dim,
        codebook_size=codebook_size,
        dim_embd=dim_embd,
        dim_mlp=dim_mlp,
        n_layers=n_layers,
        n_head=_heads(dim_embd),
        latent_side=latent_side,
        connect_list=tuple(connect),
        in_channels=shapes["encoder.blocks.0.weight"][1],
        # The generator mirrors the encoder: its last conv sits where the encoder's does (extra
        # generator keys are then reported as unexpected instead of misread).
        out_channels=_need(shapes, f"generator.blocks.{len(kinds) - 1}.weight", 4)[0],
    )


@functools.cache
def _classes() -> Any:
    """The torch modules, made on first use so importing this file does not import torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    def norm(ch: int) -> Any:
        return nn.GroupNorm(num_groups=32, num_channels=ch, eps=1e-6, affine=True)

    def conv3(cin: int, cout: int) -> Any:
        return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)

    def conv1(ch: int) -> Any:
        return nn.Conv2d(ch, ch, kernel_size=1)

    class ResBlock(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.norm1, self.conv1 = norm(cin), conv3(cin, cout)
            self.norm2, self.conv2 = norm(cout), conv3(cout, cout)
            # a 1x1 projection only where the width changes (the released keys have none otherwise)
            self.conv_out = nn.Conv2d(cin, cout, kernel_size=1) if cin != cout else None

        def forward(self, x: Any) -> Any:
            h = self.conv1(F.silu(self.norm1(x)))
            h = self.conv2(F.silu(self.norm2(h)))
            return h + (x if self.conv_out is None else self.conv_out(x))

    class AttnBlock(nn.Module):
        """Single-head spatial self-attention over all positions of the feature map."""

        def __init__(self, ch: int) -> None:
            super().__init__()
            self.norm = norm(ch)
            self.q, self.k, self.v, self.proj_out = conv1(ch), conv1(ch), conv1(ch), conv1(ch)

        def forward(self, x: Any) -> Any:
            b, c, hgt, wid = x.shape
            h = self.norm(x)
            q = self.q(h).flatten(2).transpose(1, 2)  # b, hw, c
            k = self.k(h).flatten(2)  # b, c, hw
            v = self.v(h).flatten(2)  # b, c, hw
            attn = torch.softmax(torch.bmm(q, k) * (int(c) ** -0.5), dim=2)  # b, query, key
            out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, hgt, wid)
            return x + self.proj_out(out)

    class Downsample(nn.Module):
        def __init__(self, ch: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=0)

        def forward(self, x: Any) -> Any:
            # asymmetric padding (right/bottom only), as the VQGAN was trained with
            return self.conv(F.pad(x, (0, 1, 0, 1)))

    class Upsample(nn.Module):
        def __init__(self, ch: int) -> None:
            super().__init__()
            self.conv = conv3(ch, ch)

        def forward(self, x: Any) -> Any:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

    class Blocks(nn.Module):
        """Holds ``blocks`` so the keys read ``encoder.blocks.N`` / ``generator.blocks.N``."""

        def __init__(self, blocks: list[Any]) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(blocks)

    class Codebook(nn.Module):
        def __init__(self, size: int, dim: int) -> None:
            super().__init__()
            self.embedding = nn.Embedding(size, dim)

    class TransformerLayer(nn.Module):
        """Pre-norm self-attention + GELU MLP; the position embedding is added to queries and keys only."""

        def __init__(self, dim: int, heads: int, dim_mlp: int) -> None:
            super().__init__()
            self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0)
            self.linear1, self.linear2 = nn.Linear(dim, dim_mlp), nn.Linear(dim_mlp, dim)
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

        def forward(self, x: Any, pos: Any) -> Any:
            h = self.norm1(x)
            qk = h + pos
            x = x + self.self_attn(qk, qk, value=h, need_weights=False)[0]
            return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))

    class FuseSFT(nn.Module):
        """Controllable feature transformation: decoder + w * (decoder * scale + shift)."""

        def __init__(self, ch: int) -> None:
            super().__init__()
            self.encode_enc = ResBlock(2 * ch, ch)
            self.scale = nn.Sequential(conv3(ch, ch), nn.LeakyReLU(0.2, True), conv3(ch, ch))
            self.shift = nn.Sequential(conv3(ch, ch), nn.LeakyReLU(0.2, True), conv3(ch, ch))

        def forward(self, enc: Any, dec: Any, w: float) -> Any:
            h = self.encode_enc(torch.cat([enc, dec], dim=1))
            return dec + w * (dec * self.scale(h) + self.shift(h))

    def match_stats(content: Any, style: Any, eps: float = 1e-5) -> Any:
        """``content`` renormalised to ``style``'s per-channel mean and std (colour/illumination)."""

        def stats(t: Any) -> tuple[Any, Any]:
            flat = t.flatten(2)
            return flat.mean(dim=2)[..., None, None], (flat.var(dim=2) + eps).sqrt()[..., None, None]

        c_mean, c_std = stats(content)
        s_mean, s_std = stats(style)
        return (content - c_mean) / c_std * s_std + s_mean

    class CodeFormer(nn.Module):
        """512x512 aligned face in [-1, 1] -> (restored face in [-1, 1], code logits, encoder latent)."""

        arch = "CodeFormer"
        scale = 1

        def __init__(self, cfg: CodeFormerConfig) -> None:
            super().__init__()
            self.config = cfg
            self.out_size = cfg.out_size
            last = len(cfg.ch_mult) - 1
            levels = {name: cfg.level_of(int(name)) for name in cfg.connect_list}

            ch = cfg.nf
            enc: list[Any] = [conv3(cfg.in_channels, ch)]
            enc_taps: dict[int, int] = {}
            for lvl, mult in enumerate(cfg.ch_mult):
                attn = (cfg.out_size >> lvl) in cfg.attn_resolutions
                for _ in range(cfg.res_blocks):
                    enc.append(ResBlock(ch, cfg.nf * mult))
                    ch = cfg.nf * mult
                    enc_taps[lvl] = len(enc) - 1  # encoder features are taken after the level's last res block
                    if attn:
                        enc.append(AttnBlock(ch))
                if lvl != last:
                    enc.append(Downsample(ch))
            enc += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch), norm(ch)]
            enc.append(nn.Conv2d(ch, cfg.emb_dim, kernel_size=3, padding=1))

            gen: list[Any] = [conv3(cfg.emb_dim, ch), ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]
            gen_taps: dict[int, int] = {}
            for lvl in reversed(range(len(cfg.ch_mult))):
                attn = (cfg.out_size >> lvl) in cfg.attn_resolutions
                res_ids = []
                for _ in range(cfg.res_blocks):
                    gen.append(ResBlock(ch, cfg.nf * cfg.ch_mult[lvl]))
                    ch = cfg.nf * cfg.ch_mult[lvl]
                    res_ids.append(len(gen) - 1)
                    if attn:
                        gen.append(AttnBlock(ch))
                # Where the original fuses: after the first res block, or before the last attention
                # on levels that have attention.
                gen_taps[lvl] = res_ids[-1] if attn else res_ids[0]
                if lvl:
                    gen.append(Upsample(ch))
            gen += [norm(ch), conv3(ch, cfg.out_channels)]

            self.encoder = Blocks(enc)
            self.quantize = Codebook(cfg.codebook_size, cfg.emb_dim)
            self.generator = Blocks(gen)
            self.position_emb = nn.Parameter(torch.zeros(cfg.latent_side**2, cfg.dim_embd))
            self.feat_emb = nn.Linear(cfg.emb_dim, cfg.dim_embd)
            self.ft_layers = nn.Sequential(
                *[TransformerLayer(cfg.dim_embd, cfg.n_head, cfg.dim_mlp) for _ in range(cfg.n_layers)]
            )
            self.idx_pred_layer = nn.Sequential(
                nn.LayerNorm(cfg.dim_embd), nn.Linear(cfg.dim_embd, cfg.codebook_size, bias=False)
            )
            self.fuse_convs_dict = nn.ModuleDict(
                {name: FuseSFT(cfg.nf * cfg.ch_mult[lvl]) for name, lvl in levels.items()}
            )
            self._enc_taps = {enc_taps[lvl]: name for name, lvl in levels.items()}
            self._gen_taps = {gen_taps[lvl]: name for name, lvl in levels.items()}

        def forward(
            self, x: Any, w: float = 0.5, *, adain: bool = False, code_only: bool = False
        ) -> tuple[Any, Any, Any] | tuple[Any, Any]:
            """``w`` is the fidelity weight: 0 takes the face from the codebook alone, 1 keeps the
            most of the input; ``adain=True`` (what CodeFormer's inference script passes) matches
            the codebook features' colour statistics to the input's."""
            cfg = self.config
            if x.ndim != 4 or x.shape[1] != cfg.in_channels or tuple(x.shape[2:]) != (cfg.out_size,) * 2:
                raise InvalidImageError(
                    f"CodeFormer takes (batch, {cfg.in_channels}, {cfg.out_size}, {cfg.out_size}) images, "
                    f"got {list(x.shape)}"
                )
            feats: dict[str, Any] = {}
            for i, block in enumerate(self.encoder.blocks):
                x = block(x)
                if i in self._enc_taps:
                    feats[self._enc_taps[i]] = x
            lq_feat = x
            batch = x.shape[0]
            pos = self.position_emb.unsqueeze(1).expand(-1, batch, -1)
            query = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))  # (hw, b, c) as MultiheadAttention wants
            for layer in self.ft_layers:
                query = layer(query, pos)
            logits = self.idx_pred_layer(query).permute(1, 0, 2)  # b, hw, codebook_size
            if code_only:
                return logits, lq_feat
            codes = logits.argmax(dim=2)
            quant = self.quantize.embedding.weight[codes]  # b, hw, emb_dim
            quant = quant.view(batch, cfg.latent_side, cfg.latent_side, cfg.emb_dim).permute(0, 3, 1, 2)
            if adain:
                quant = match_stats(quant, lq_feat)
            x = quant.contiguous()
            for i, block in enumerate(self.generator.blocks):
                x = block(x)
                if w > 0 and i in self._gen_taps:
                    name = self._gen_taps[i]
                    x = self.fuse_convs_dict[name](feats[name], x, w)
            return x, logits, lq_feat

    return CodeFormer


def build_codeformer(sd: dict[str, Any], name: str = "state dict", *, partial: bool = False) -> Any:
    """A CodeFormer (float32, eval mode) with ``sd``'s weights, exactly unless ``partial``.

    ``sd`` may be wrapped in ``params_ema`` / ``params`` (nested or flattened). Raises
    ``ValueError`` when ``sd`` is no CodeFormer at all, :class:`ModelLoadError` naming the keys
    when it is one with weights missing, extra or of other shapes.
    """
    import torch

    from modeldepot.load.loaders._strict import assign_exact

    weights = unwrap_params(sd)
    if not looks_like_codeformer(weights):
        raise ValueError("not a CodeFormer state dict (no encoder/generator/quantize + transformer weights)")
    try:
        cfg = infer_codeformer_config(weights)
    except KeyError as exc:
        raise ModelLoadError(f"{name}: the weights do not match {_WHAT}: missing key {exc.args[0]}", path=name) from exc
    except ValueError as exc:
        raise ModelLoadError(f"{name}: the weights do not match {_WHAT}: {exc}", path=name) from exc
    model_cls = _classes()
    try:
        # The released model is 94 M parameters: built on the meta device, no random init is wasted.
        return assign_exact(lambda: model_cls(cfg), weights, _WHAT, name, dtype=torch.float32, partial=partial)
    except ValueError as exc:  # e.g. GroupNorm(32) over a width that is no multiple of 32
        raise ModelLoadError(f"{name}: cannot build {_WHAT}: {exc}", path=name) from exc


def codeformer_from_config(cfg: CodeFormerConfig) -> Any:
    """An untrained CodeFormer of this shape (random weights; build inside ``init_empty_weights``
    or on the meta device to only look at its keys)."""
    return _classes()(cfg)


__all__ = [
    "CodeFormerConfig",
    "build_codeformer",
    "codeformer_from_config",
    "infer_codeformer_config",
    "looks_like_codeformer",
]
