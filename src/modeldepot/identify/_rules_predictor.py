"""The CLIP+MLP score predictor: LAION's "improved aesthetic predictor" and the ones trained here.

Its state dict is five linear layers at ``layers.0/2/4/6/7`` (dropouts between them hold no
weights): ``D -> 1024 -> 128 -> 64 -> 16 -> 1``, where ``D`` is the width of the CLIP image
embedding it scores (768 for ViT-L/14, 1024 for ViT-H/14). A small MLP is a common shape, so the
rule asks for exactly these tensors with exactly these shapes and nothing else.
"""

from __future__ import annotations

from modeldepot.identify._view import KeyView, Verdict, fmt_shape, no_match
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

#: Output widths of the linear layers and their indices in ``layers`` (``nn.Sequential``).
_WIDTHS = (1024, 128, 64, 16, 1)
_INDICES = (0, 2, 4, 6, 7)
_SHOWN = 3


def predictor_shapes(input_size: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of a predictor over ``input_size``-wide embeddings, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    fan_in = input_size
    for index, width in zip(_INDICES, _WIDTHS, strict=True):
        shapes[f"layers.{index}.weight"] = (width, fan_in)
        shapes[f"layers.{index}.bias"] = (width,)
        fan_in = width
    return shapes


def _listed(keys: list[str]) -> str:
    more = f" (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def clip_predictor(view: KeyView) -> Verdict:
    rule = "clip_predictor"
    first = view.shape("layers.0.weight")
    if first is None:
        return no_match(rule, "no layers.0.weight key (CLIP+MLP predictor layout)")
    if len(first) != 2 or first[1] < 1:
        return no_match(rule, f"layers.0.weight is {fmt_shape(first)}, not a linear layer [1024, D]")
    dim = first[1]
    expected = predictor_shapes(dim)
    tensors = {k: s for k, s in view.shapes.items() if s is not None}
    other = sorted(set(tensors) - set(expected))
    if other:
        return no_match(rule, f"layers.0.weight with {len(other)} other tensors: {_listed(other)}")
    missing = [k for k in expected if k not in tensors]
    if missing:
        return no_match(rule, f"layers.* keys without {_listed(missing)}: not the predictor's five linear layers")
    wrong = [f"{k} {fmt_shape(tensors[k])} (predictor: {fmt_shape(s)})" for k, s in expected.items() if tensors[k] != s]
    if wrong:
        return no_match(rule, f"layers.* shapes are not the predictor's D-1024-128-64-16-1 MLP: {_listed(wrong)}")
    v = Verdict(
        rule,
        True,
        ModelType.ClipPredictor,
        ModelFormat.Checkpoint,
        BaseModelType.Any,
        compatible_bases={BaseModelType.Any},
        confidence=0.9,
    )
    v.why(
        "type: clip_predictor (layers.0/2/4/6/7 weight+bias and nothing else: the LAION CLIP+MLP "
        "aesthetic-predictor layout)"
    )
    v.why("format: checkpoint (single file)")
    v.why("base: any (it scores CLIP image embeddings of images from any model)")
    v.reasons.append(
        f"architecture: CLIP+MLP predictor ({dim}-wide CLIP image embedding -> 1024 -> 128 -> 64 -> 16 -> 1 score)"
    )
    v.extra.update({"architecture": "CLIP+MLP predictor", "embedding_dim": dim})
    return v


__all__ = ["clip_predictor", "predictor_shapes"]
