"""Single-file CLIP text, CLIP vision and T5 encoders (ComfyUI ``text_encoders/`` / ``clip_vision/``
files such as ``clip_l.safetensors``, ``clip_g.safetensors``, ``t5xxl_fp16.safetensors``) into
transformers classes, with no network.

The architecture is read from the safetensors header before any tensor data: widths, depths,
vocabulary, positions, projection and feed-forward sizes come from the tensor shapes, so tiny and
fine-tuned encoders build exactly. What shapes cannot tell (activation, head count of the real
towers, token ids, epsilons) comes from the shipped config of the family (``configs/clip-l``,
``clip-h``, ``clip-g``, ``clip-vision-{l,h,g}``, ``t5-xxl``); a width no shipped config has gets
64-wide heads, the CLIP/T5 convention. The model is built on the meta device (no random init),
then only the encoder's own tensors are read (a full CLIP file's other tower, a full T5's decoder
are skipped) and assigned in the configured precision.

Accepted key layouts: CLIP text under ``text_model.`` with an optional ``transformer.`` / ``model.``
wrapper (+ ``text_projection.weight``), CLIP vision under ``vision_model.`` with an optional
``clip_vision_model.`` / ``model.`` wrapper (+ ``visual_projection.weight``), T5 ``encoder.*`` +
``shared.weight`` with an optional ``transformer.`` / ``t5xxl.transformer.`` wrapper.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from modeldepot.load._errors import InvalidSubmodelError, ModelLoadError
from modeldepot.load.loaders._common import PickleConversionMixin, load_safetensors, read_json
from modeldepot.load.loaders._strict import assign_exact
from modeldepot.load.loaders.single_file import write_clip_vocab
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ClipVariantType, ModelFormat, ModelRepoVariant, ModelType
from modeldepot.taxonomy import SubModelType as S

_Any = BaseModelType.Any
Shapes = Mapping[str, tuple[int, ...]]

CLIP_TEXT_WRAPPERS = ("", "transformer.", "model.", "cond_stage_model.transformer.")
CLIP_VISION_WRAPPERS = ("", "clip_vision_model.", "model.")
T5_WRAPPERS = ("", "transformer.", "t5xxl.transformer.", "text_encoders.t5xxl.transformer.")
#: shipped family config per CLIP text width and per CLIP vision width.
_CLIP_TEXT_FAMILY = {768: "clip-l", 1024: "clip-h", 1280: "clip-g"}
_CLIP_TEXT_BY_VARIANT = {ClipVariantType.L: "clip-l", ClipVariantType.H: "clip-h", ClipVariantType.G: "clip-g"}
_CLIP_VISION_FAMILY = {1024: "clip-vision-l", 1280: "clip-vision-h", 1664: "clip-vision-g"}
_CLIP_VISION_BY_VARIANT = {
    ClipVariantType.L: "clip-vision-l",
    ClipVariantType.H: "clip-vision-h",
    ClipVariantType.G: "clip-vision-g",
}
_HEAD_DIM = 64
#: OpenAI CLIP pads with its EOS token, OpenCLIP (ViT-H / bigG) with "!" (id 0).
_PAD_TOKEN = {"clip-l": "<|endoftext|>", "clip-h": "!", "clip-g": "!"}


def shipped_encoder_config(family: str) -> dict[str, Any]:
    """The shipped transformers config of an encoder family (``clip-l``, ``t5-xxl``, ...), without
    ``model_type`` (a class attribute of the config classes, not a keyword)."""
    cfg = read_json(Path(str(resources.files("modeldepot.load") / "configs" / family / "config.json")))
    cfg.pop("model_type", None)
    return cfg


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the safetensors header (no tensor data read)."""
    from modeldepot.identify.safetensors import read_safetensors_header

    return {name: tuple(int(d) for d in info.shape) for name, info in read_safetensors_header(path).tensors.items()}


def find_wrapper(shapes: Shapes, marker: str, wrappers: Iterable[str]) -> str | None:
    """The prefix (one of ``wrappers``) under which ``marker`` is stored, if any."""
    for w in wrappers:
        if w + marker in shapes:
            return w
    return None


def _layer_count(shapes: Shapes, stem: str) -> int:
    ids = {int(k[len(stem) :].split(".", 1)[0]) for k in shapes if k.startswith(stem) and k[len(stem) :][:1].isdigit()}
    return max(ids) + 1 if ids else 0


def _heads(width: int, family: dict[str, Any]) -> int:
    """Head count: not in any shape, so the family's when the width is the family's, else 64-wide heads."""
    if int(family["hidden_size"]) == width:
        return int(family["num_attention_heads"])
    n = width // _HEAD_DIM
    return n if n > 0 and width % n == 0 else 1


def _need(shapes: Shapes, key: str, path: Path, what: str) -> tuple[int, ...]:
    shape = shapes.get(key)
    if shape is None:
        raise ModelLoadError(f"{path}: not a {what} file (no tensor {key!r})", path=str(path))
    return shape


# ----- configs derived from shapes -------------------------------------------------------------
def clip_text_config(shapes: Shapes, p: str, path: Path, variant: ClipVariantType | None = None) -> dict[str, Any]:
    """A ``CLIPTextConfig`` dict for the CLIP text tower stored under ``p + "text_model."``."""
    t = p + "text_model."
    vocab, width = _need(shapes, t + "embeddings.token_embedding.weight", path, "CLIP text encoder")
    name = _CLIP_TEXT_FAMILY.get(width) or _CLIP_TEXT_BY_VARIANT.get(variant or ClipVariantType.L, "clip-l")
    cfg = shipped_encoder_config(name)
    cfg.update(
        vocab_size=vocab,
        hidden_size=width,
        max_position_embeddings=_need(shapes, t + "embeddings.position_embedding.weight", path, "CLIP")[0],
        num_hidden_layers=_layer_count(shapes, t + "encoder.layers."),
        intermediate_size=_need(shapes, t + "encoder.layers.0.mlp.fc1.weight", path, "CLIP text encoder")[0],
        num_attention_heads=_heads(width, cfg),
    )
    proj = shapes.get(p + "text_projection.weight")
    if proj is not None:
        cfg["projection_dim"] = proj[0]
    cfg["_family"] = name
    return cfg


def clip_vision_config(shapes: Shapes, p: str, path: Path, variant: ClipVariantType | None = None) -> dict[str, Any]:
    """A ``CLIPVisionConfig`` dict for the CLIP image tower stored under ``p + "vision_model."``."""
    v = p + "vision_model."
    width, channels, patch, _ = _need(shapes, v + "embeddings.patch_embedding.weight", path, "CLIP vision encoder")
    name = _CLIP_VISION_FAMILY.get(width) or _CLIP_VISION_BY_VARIANT.get(variant or ClipVariantType.L, "clip-vision-l")
    cfg = shipped_encoder_config(name)
    positions = _need(shapes, v + "embeddings.position_embedding.weight", path, "CLIP vision encoder")[0]
    side = round((positions - 1) ** 0.5)
    if side * side != positions - 1:
        raise ModelLoadError(f"{path}: {positions} vision positions is not a square grid + class token", path=str(path))
    cfg.update(
        hidden_size=width,
        num_channels=channels,
        patch_size=patch,
        image_size=side * patch,
        num_hidden_layers=_layer_count(shapes, v + "encoder.layers."),
        intermediate_size=_need(shapes, v + "encoder.layers.0.mlp.fc1.weight", path, "CLIP vision encoder")[0],
        num_attention_heads=_heads(width, cfg),
    )
    proj = shapes.get(p + "visual_projection.weight")
    if proj is not None:
        cfg["projection_dim"] = proj[0]
    cfg["_family"] = name
    return cfg


def t5_encoder_config(shapes: Shapes, p: str, path: Path) -> dict[str, Any]:
    """A ``T5Config`` dict for the T5 encoder stored under ``p``; the defaults are T5-XXL v1.1's."""
    cfg = shipped_encoder_config("t5-xxl")
    b0 = p + "encoder.block.0.layer."
    inner, d_model = _need(shapes, b0 + "0.SelfAttention.q.weight", path, "T5 encoder")
    buckets, heads = _need(shapes, b0 + "0.SelfAttention.relative_attention_bias.weight", path, "T5 encoder")
    emb = shapes.get(p + "shared.weight") or _need(shapes, p + "encoder.embed_tokens.weight", path, "T5 encoder")
    gated = b0 + "1.DenseReluDense.wi_0.weight" in shapes
    ff = _need(shapes, b0 + ("1.DenseReluDense.wi_0.weight" if gated else "1.DenseReluDense.wi.weight"), path, "T5")
    layers = _layer_count(shapes, p + "encoder.block.")
    cfg.update(
        vocab_size=emb[0],
        d_model=d_model,
        num_heads=heads,
        d_kv=inner // heads,
        d_ff=ff[0],
        num_layers=layers,
        num_decoder_layers=layers,
        relative_attention_num_buckets=buckets,
        # T5 v1.1 / FLAN are gated-GELU; the original T5 is plain ReLU (no wi_0/wi_1 pair).
        feed_forward_proj="gated-gelu" if gated else "relu",
    )
    if not gated:
        cfg.pop("dense_act_fn", None)
        cfg.pop("is_gated_act", None)
    return cfg


# ----- building ----------------------------------------------------------------------------------
def build_from_state_dict(
    cls: Any, config: Any, sd: dict[str, Any], dtype: Any, path: Path, *, partial: bool = False
) -> Any:
    """``cls(config)`` on the meta device, then ``sd`` assigned in ``dtype``; every weight must be set
    and every tensor of ``sd`` used (``partial`` relaxes both; see :func:`assign_exact`).

    ``sd`` holds canonical keys (``text_model.*``, ``vision_model.*``, ``encoder.*``); they are
    matched to the model's own names (transformers >= 5.6 flattens ``CLIPTextModel``: no
    ``text_model.`` level). Position ids (persistent in old transformers) are not weights.
    """
    from accelerate import init_empty_weights

    with init_empty_weights():
        probe = cls(config)
    expected = set(probe.state_dict())
    aligned: dict[str, Any] = {}
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        for cand in (key, rest, f"{head}.{key}"):
            if cand in expected:
                aligned[cand] = value
                break
        else:
            if not key.endswith("position_ids"):
                aligned[key] = value  # reported as unexpected
    # T5: encoder.embed_tokens is tied to shared.weight; a file stores one of them.
    for a, b in (("encoder.embed_tokens.weight", "shared.weight"), ("shared.weight", "encoder.embed_tokens.weight")):
        if a in expected and a not in aligned and b in aligned:
            aligned[a] = aligned[b]
    return assign_exact(lambda: cls(config), aligned, cls.__name__, path, dtype=dtype, partial=partial)


def _reject_scaled_fp8(shapes: Shapes, path: Path) -> None:
    # ComfyUI "scaled fp8" files store per-tensor scales the transformers classes cannot apply.
    if "scaled_fp8" in shapes or any(k.endswith(".scale_weight") for k in shapes):
        raise ModelLoadError(
            f"{path}: a ComfyUI scaled-fp8 encoder (scaled_fp8 / *.scale_weight tensors) is not supported;"
            " use the fp16 or plain fp8 file",
            path=str(path),
        )


class _SingleFileEncoderLoader(PickleConversionMixin, ModelLoader):
    """Shared flow: submodel check, header shapes, derived config, only the needed tensors."""

    _what = "encoder"

    def _check_submodel(self, submodel_type: S | None, allowed: tuple[S, ...]) -> None:
        cfg = self.config
        assert cfg is not None
        if submodel_type is not None and submodel_type not in allowed:
            raise InvalidSubmodelError(
                f"model {cfg.name!r} ({cfg.type.value}, single file) has no submodel {submodel_type.value!r};"
                f" it has: {', '.join(s.value for s in allowed)}",
                key=cfg.key,
                submodel=submodel_type.value,
            )

    def _shapes(self, path: Path) -> dict[str, tuple[int, ...]]:
        shapes = header_shapes(path)
        _reject_scaled_fp8(shapes, path)
        return shapes

    def _read(self, path: Path, p: str, wanted: tuple[str, ...]) -> dict[str, Any]:
        """Tensors under ``p + wanted[i]`` with ``p`` removed (a file's other parts are never read)."""
        keep = tuple(p + w for w in wanted)
        return load_safetensors(path, lambda n: n.startswith(keep), lambda n: n[len(p) :])


@ModelLoaderRegistry.register(base=_Any, type=ModelType.CLIPEmbed, format=ModelFormat.Checkpoint)
class CLIPTextSingleFileLoader(_SingleFileEncoderLoader):
    """``clip_l.safetensors`` -> ``CLIPTextModel``; ``clip_g`` (and ViT-H) with a projection ->
    ``CLIPTextModelWithProjection``. ``tokenizer`` gives the CLIP tokenizer from the shipped BPE."""

    def _load_model(self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: S | None = None) -> Any:
        import transformers

        cfg = self.config
        assert cfg is not None
        self._check_submodel(submodel_type, (S.TextEncoder, S.TextEncoder2, S.Tokenizer, S.Tokenizer2))
        shapes = self._shapes(path)
        p = find_wrapper(shapes, "text_model.embeddings.token_embedding.weight", CLIP_TEXT_WRAPPERS)
        if p is None:
            raise ModelLoadError(
                f"{path}: no CLIP text weights (text_model.embeddings.token_embedding.weight)",
                key=cfg.key,
                path=str(path),
            )
        conf = clip_text_config(shapes, p, path, getattr(cfg, "clip_variant", None))
        family = str(conf.pop("_family"))
        if submodel_type in (S.Tokenizer, S.Tokenizer2):
            return self._tokenizer(family, int(conf["max_position_embeddings"]))
        # OpenAI CLIP-L is used without its projection (FLUX/SD take the pooled output); the
        # OpenCLIP towers (SDXL/SD3 clip_g) are used with it.
        projected = family != "clip-l" and p + "text_projection.weight" in shapes
        cls_name = "CLIPTextModelWithProjection" if projected else "CLIPTextModel"
        conf["architectures"] = [cls_name]
        config = transformers.CLIPTextConfig(**conf)
        wanted = ("text_model.", "text_projection.weight") if projected else ("text_model.",)
        sd = self._read(path, p, wanted)
        return build_from_state_dict(
            getattr(transformers, cls_name), config, sd, self.torch_dtype, path, partial=self.partial
        )

    def _tokenizer(self, family: str, max_length: int) -> Any:
        from transformers import CLIPTokenizer

        vocab_dir = self.convert_cache.get("clip-bpe-49408")
        if vocab_dir is None or not (vocab_dir / "merges.txt").is_file():
            vocab_dir = self.convert_cache.put("clip-bpe-49408", write_clip_vocab)
        return CLIPTokenizer.from_pretrained(
            str(vocab_dir), local_files_only=True, pad_token=_PAD_TOKEN[family], model_max_length=max_length
        )


@ModelLoaderRegistry.register(base=_Any, type=ModelType.CLIPVision, format=ModelFormat.Checkpoint)
class CLIPVisionSingleFileLoader(_SingleFileEncoderLoader):
    """A CLIP image encoder file -> ``CLIPVisionModelWithProjection`` (``CLIPVisionModel`` when the
    file has no ``visual_projection``)."""

    def _load_model(self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: S | None = None) -> Any:
        import transformers

        cfg = self.config
        assert cfg is not None
        self._check_submodel(submodel_type, (S.ImageEncoder,))
        shapes = self._shapes(path)
        p = find_wrapper(shapes, "vision_model.embeddings.patch_embedding.weight", CLIP_VISION_WRAPPERS)
        if p is None:
            raise ModelLoadError(
                f"{path}: no CLIP vision weights (vision_model.embeddings.patch_embedding.weight)",
                key=cfg.key,
                path=str(path),
            )
        conf = clip_vision_config(shapes, p, path, getattr(cfg, "clip_variant", None))
        conf.pop("_family")
        projected = p + "visual_projection.weight" in shapes
        cls_name = "CLIPVisionModelWithProjection" if projected else "CLIPVisionModel"
        conf["architectures"] = [cls_name]
        config = transformers.CLIPVisionConfig(**conf)
        wanted = ("vision_model.", "visual_projection.weight") if projected else ("vision_model.",)
        sd = self._read(path, p, wanted)
        return build_from_state_dict(
            getattr(transformers, cls_name), config, sd, self.torch_dtype, path, partial=self.partial
        )


@ModelLoaderRegistry.register(base=_Any, type=ModelType.T5Encoder, format=ModelFormat.Checkpoint)
class T5EncoderSingleFileLoader(_SingleFileEncoderLoader):
    """``t5xxl_fp16.safetensors`` (or any T5 / FLAN-T5 encoder file) -> ``T5EncoderModel``.

    No tokenizer ships with these files (the SentencePiece model is not in the package): asking for
    one raises; use a ``t5_encoder``-format folder for that.
    """

    def _load_model(self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: S | None = None) -> Any:
        import transformers

        cfg = self.config
        assert cfg is not None
        self._check_submodel(submodel_type, (S.TextEncoder, S.TextEncoder2, S.TextEncoder3))
        shapes = self._shapes(path)
        p = find_wrapper(shapes, "encoder.block.0.layer.0.SelfAttention.q.weight", T5_WRAPPERS)
        if p is None:
            raise ModelLoadError(
                f"{path}: no T5 encoder weights (encoder.block.0.layer.0.SelfAttention.q.weight)",
                key=cfg.key,
                path=str(path),
            )
        config = transformers.T5Config(**t5_encoder_config(shapes, p, path))
        sd = self._read(path, p, ("encoder.", "shared.weight"))
        return build_from_state_dict(
            transformers.T5EncoderModel, config, sd, self.torch_dtype, path, partial=self.partial
        )


__all__ = [
    "CLIPTextSingleFileLoader",
    "CLIPVisionSingleFileLoader",
    "T5EncoderSingleFileLoader",
    "build_from_state_dict",
    "clip_text_config",
    "clip_vision_config",
    "find_wrapper",
    "header_shapes",
    "shipped_encoder_config",
    "t5_encoder_config",
]
