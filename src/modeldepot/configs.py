"""Pydantic model records: one class per (type, format), joined in the union ``AnyModelConfig``.

A record says what a model is (type, format, base and the bases it also works with), where its
files are (``path``) and what its content is (``hash``). ``key`` is a random id made at install.
The seed doc's spellings ``model_type``, ``model_format`` and ``base_model`` are accepted as input.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from modeldepot.errors import InvalidModelConfigException
from modeldepot.taxonomy import (
    BaseModelType,
    ClipVariantType,
    FluxVariantType,
    ModelFormat,
    ModelRepoVariant,
    ModelSourceType,
    ModelType,
    ModelVariantType,
    SchedulerPredictionType,
    SubModelType,
)


def new_key() -> str:
    """A random 32-hex model key."""
    return uuid.uuid4().hex


_TYPE_ALIAS = AliasChoices("type", "model_type")
_FORMAT_ALIAS = AliasChoices("format", "model_format")
_BASE_ALIAS = AliasChoices("base", "base_model")


def _pin_type(value: ModelType) -> Any:
    """The ``type`` field of a class that holds one type (the seed's ``model_type`` still accepted)."""
    return Field(default=value, validation_alias=_TYPE_ALIAS)


def _pin_format(value: ModelFormat) -> Any:
    return Field(default=value, validation_alias=_FORMAT_ALIAS)


def _pin_base(value: BaseModelType) -> Any:
    return Field(default=value, validation_alias=_BASE_ALIAS)


class SubmodelDefinition(BaseModel):
    """One part of a pipeline folder (``unet``, ``vae``...), relative to the model path."""

    path_or_prefix: str
    model_type: ModelType
    variant: str | None = None


class ModelConfigBase(BaseModel):
    """Fields every record has. Subclasses pin ``type`` and ``format``."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        use_enum_values=False,
        validate_assignment=True,
        protected_namespaces=(),
    )

    key: str = Field(default_factory=new_key, description="Random 32-hex id made at install")
    name: str = Field(min_length=1, description="Human name, unique per (base, type) by convention")
    type: ModelType = Field(validation_alias=_TYPE_ALIAS)
    format: ModelFormat = Field(validation_alias=_FORMAT_ALIAS)
    base: BaseModelType = Field(validation_alias=_BASE_ALIAS)
    compatible_bases: set[BaseModelType] = Field(
        default_factory=set, description="Every base this model works with; always includes base"
    )
    path: str = Field(min_length=1, description="Model file or folder (materialised or in place)")
    hash: str | None = Field(default=None, description="Content hash '<algo>:<hex>'")
    file_size: int | None = Field(default=None, ge=0)
    description: str | None = None
    source: str | None = None
    source_type: ModelSourceType | None = None
    source_api_response: str | None = Field(default=None, description="Raw JSON from the source")
    author: str | None = None
    license: str | None = None
    thumbnail_url: str | None = None
    tags: list[str] = Field(default_factory=list)
    trigger_phrases: set[str] | None = None
    inplace: bool = Field(default=False, description="Registered in place: never moved or deleted")
    identification: dict[str, Any] | None = Field(
        default=None, description="Identification verdict and reasons, as recorded at install"
    )
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    @model_validator(mode="after")
    def _base_is_compatible(self) -> ModelConfigBase:
        if self.base not in self.compatible_bases:
            # Assigning through the validator would recurse with validate_assignment.
            object.__setattr__(self, "compatible_bases", {*self.compatible_bases, self.base})
        seen: list[str] = []
        for tag in self.tags:
            if tag not in seen:
                seen.append(tag)
        if seen != self.tags:
            object.__setattr__(self, "tags", seen)
        return self

    # InvokeAI-style read aliases, so code written against the seed doc keeps working.
    @property
    def model_type(self) -> ModelType:
        return self.type

    @property
    def model_format(self) -> ModelFormat:
        return self.format

    @property
    def base_model(self) -> BaseModelType:
        return self.base

    def is_compatible_with(self, base: BaseModelType | str) -> bool:
        base = BaseModelType(base)
        return base in self.compatible_bases or BaseModelType.Any in self.compatible_bases


class _CheckpointMixin(BaseModel):
    # The seed doc calls this field ``config``; pydantic reserves ``model_config``, not ``config``,
    # but the stored name stays ``config_path`` so existing records and JSON keep their shape.
    config_path: str | None = Field(
        default=None,
        validation_alias=AliasChoices("config_path", "config"),
        description="Legacy config file for the checkpoint (input alias: config)",
    )

    @property
    def config(self) -> str | None:
        """The seed doc's name for :attr:`config_path`."""
        return self.config_path

    @config.setter
    def config(self, value: str | None) -> None:
        self.config_path = value


class _DiffusersMixin(BaseModel):
    repo_variant: ModelRepoVariant | None = ModelRepoVariant.Default
    submodels: dict[SubModelType, SubmodelDefinition] | None = None


class _MainMixin(BaseModel):
    vae: str | None = Field(default=None, description="Key or path of a VAE to use instead")
    variant: ModelVariantType | FluxVariantType = ModelVariantType.Normal
    prediction_type: SchedulerPredictionType = SchedulerPredictionType.Epsilon
    upcast_attention: bool = False
    default_width: int | None = None
    default_height: int | None = None


class MainDiffusersConfig(_DiffusersMixin, _MainMixin, ModelConfigBase):
    type: Literal[ModelType.Main] = _pin_type(ModelType.Main)
    format: Literal[ModelFormat.Diffusers] = _pin_format(ModelFormat.Diffusers)


class MainCheckpointConfig(_CheckpointMixin, _MainMixin, ModelConfigBase):
    type: Literal[ModelType.Main] = _pin_type(ModelType.Main)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)


class VAEDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.VAE] = _pin_type(ModelType.VAE)
    format: Literal[ModelFormat.Diffusers] = _pin_format(ModelFormat.Diffusers)


class VAECheckpointConfig(_CheckpointMixin, ModelConfigBase):
    type: Literal[ModelType.VAE] = _pin_type(ModelType.VAE)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)


class LoRALyCORISConfig(ModelConfigBase):
    """A single-file LoRA: kohya, LyCORIS (LoHa/LoKr) or PEFT keys."""

    type: Literal[ModelType.LoRA] = _pin_type(ModelType.LoRA)
    format: Literal[ModelFormat.LyCORIS] = _pin_format(ModelFormat.LyCORIS)


class LoRADiffusersConfig(ModelConfigBase):
    type: Literal[ModelType.LoRA] = _pin_type(ModelType.LoRA)
    format: Literal[ModelFormat.Diffusers] = _pin_format(ModelFormat.Diffusers)


class ControlNetDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.ControlNet] = _pin_type(ModelType.ControlNet)
    format: Literal[ModelFormat.Diffusers] = _pin_format(ModelFormat.Diffusers)


class ControlNetCheckpointConfig(_CheckpointMixin, ModelConfigBase):
    type: Literal[ModelType.ControlNet] = _pin_type(ModelType.ControlNet)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)


class TextualInversionFileConfig(ModelConfigBase):
    type: Literal[ModelType.TextualInversion] = _pin_type(ModelType.TextualInversion)
    format: Literal[ModelFormat.EmbeddingFile] = _pin_format(ModelFormat.EmbeddingFile)


class TextualInversionFolderConfig(ModelConfigBase):
    type: Literal[ModelType.TextualInversion] = _pin_type(ModelType.TextualInversion)
    format: Literal[ModelFormat.EmbeddingFolder] = _pin_format(ModelFormat.EmbeddingFolder)


class IPAdapterInvokeAIConfig(ModelConfigBase):
    type: Literal[ModelType.IPAdapter] = _pin_type(ModelType.IPAdapter)
    format: Literal[ModelFormat.InvokeAI] = _pin_format(ModelFormat.InvokeAI)
    image_encoder_model_id: str | None = None


class IPAdapterCheckpointConfig(ModelConfigBase):
    type: Literal[ModelType.IPAdapter] = _pin_type(ModelType.IPAdapter)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)


class T2IAdapterConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.T2IAdapter] = _pin_type(ModelType.T2IAdapter)
    format: Literal[ModelFormat.Diffusers] = _pin_format(ModelFormat.Diffusers)


class T2IAdapterCheckpointConfig(_CheckpointMixin, ModelConfigBase):
    """A single-file T2I-Adapter (the original TencentARC layout)."""

    type: Literal[ModelType.T2IAdapter] = _pin_type(ModelType.T2IAdapter)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)


class CLIPVisionDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.CLIPVision] = _pin_type(ModelType.CLIPVision)
    format: Literal[ModelFormat.Diffusers] = _pin_format(ModelFormat.Diffusers)
    clip_variant: ClipVariantType | None = None


class CLIPVisionCheckpointConfig(ModelConfigBase):
    type: Literal[ModelType.CLIPVision] = _pin_type(ModelType.CLIPVision)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)
    clip_variant: ClipVariantType | None = None


class CLIPEmbedDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.CLIPEmbed] = _pin_type(ModelType.CLIPEmbed)
    format: Literal[ModelFormat.Diffusers] = _pin_format(ModelFormat.Diffusers)
    clip_variant: ClipVariantType | None = None


class CLIPEmbedCheckpointConfig(ModelConfigBase):
    type: Literal[ModelType.CLIPEmbed] = _pin_type(ModelType.CLIPEmbed)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)
    clip_variant: ClipVariantType | None = None


class T5EncoderConfig(ModelConfigBase):
    type: Literal[ModelType.T5Encoder] = _pin_type(ModelType.T5Encoder)
    format: Literal[ModelFormat.T5Encoder] = _pin_format(ModelFormat.T5Encoder)


class T5EncoderCheckpointConfig(ModelConfigBase):
    type: Literal[ModelType.T5Encoder] = _pin_type(ModelType.T5Encoder)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)


class SpandrelImageToImageConfig(ModelConfigBase):
    """An upscaler or restorer loadable by spandrel (ESRGAN family, SwinIR...)."""

    type: Literal[ModelType.SpandrelImageToImage] = _pin_type(ModelType.SpandrelImageToImage)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)
    architecture: str | None = None


class CaptionerDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    """An image captioner as a Hugging Face folder (BLIP: ``config.json``, weights, processor files)."""

    type: Literal[ModelType.Captioner] = _pin_type(ModelType.Captioner)
    format: Literal[ModelFormat.Diffusers] = _pin_format(ModelFormat.Diffusers)
    architecture: str | None = None


class SafetyCheckerDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    """Stable Diffusion's NSFW safety checker folder (a CLIP image tower and concept embeddings)."""

    type: Literal[ModelType.SafetyChecker] = _pin_type(ModelType.SafetyChecker)
    format: Literal[ModelFormat.Diffusers] = _pin_format(ModelFormat.Diffusers)


class ClipPredictorCheckpointConfig(ModelConfigBase):
    """A CLIP+MLP score predictor: one file of MLP weights over a CLIP model's image embeddings."""

    type: Literal[ModelType.ClipPredictor] = _pin_type(ModelType.ClipPredictor)
    format: Literal[ModelFormat.Checkpoint] = _pin_format(ModelFormat.Checkpoint)
    architecture: str | None = None


class _ONNXMainConfig(_DiffusersMixin, _MainMixin, ModelConfigBase):
    """An ONNX export of a diffusers pipeline (``model_index.json``, ``unet/model.onnx``...).

    ONNX folders carry no legacy yaml config, so what the model needs (prediction type, upcast
    attention) lives in the record. modeldepot identifies, stores and serves them; it loads none.
    """

    type: Literal[ModelType.Main] = _pin_type(ModelType.Main)
    format: Literal[ModelFormat.ONNX] = _pin_format(ModelFormat.ONNX)


class ONNXSD1Config(_ONNXMainConfig):
    base: Literal[BaseModelType.StableDiffusion1] = _pin_base(BaseModelType.StableDiffusion1)


class ONNXSD2Config(_ONNXMainConfig):
    """SD-2 defaults as the seed doc has them: v-prediction (the 768-v model) and upcast attention."""

    base: Literal[BaseModelType.StableDiffusion2] = _pin_base(BaseModelType.StableDiffusion2)
    prediction_type: SchedulerPredictionType = SchedulerPredictionType.VPrediction
    upcast_attention: bool = True


class ONNXSDXLConfig(_ONNXMainConfig):
    base: Literal[BaseModelType.StableDiffusionXL] = _pin_base(BaseModelType.StableDiffusionXL)


class ONNXConfig(_ONNXMainConfig):
    """An ONNX pipeline of a base without its own class (an SDXL refiner, an unknown base)."""

    @model_validator(mode="after")
    def _no_dedicated_class(self) -> ONNXConfig:
        dedicated = CONFIG_CLASSES.get(config_tag(self) or "")
        if dedicated is not None and dedicated is not type(self):
            raise ValueError(f"an ONNX {self.base} model is an {dedicated.__name__}")
        return self


class UnknownModelConfig(ModelConfigBase):
    """A file we could not identify, kept with the reasons so the user can override."""

    type: Literal[ModelType.Unknown] = _pin_type(ModelType.Unknown)
    format: Literal[ModelFormat.Unknown] = _pin_format(ModelFormat.Unknown)


_CLASSES: tuple[type[ModelConfigBase], ...] = (
    MainDiffusersConfig,
    MainCheckpointConfig,
    VAEDiffusersConfig,
    VAECheckpointConfig,
    LoRALyCORISConfig,
    LoRADiffusersConfig,
    ControlNetDiffusersConfig,
    ControlNetCheckpointConfig,
    TextualInversionFileConfig,
    TextualInversionFolderConfig,
    IPAdapterInvokeAIConfig,
    IPAdapterCheckpointConfig,
    T2IAdapterConfig,
    T2IAdapterCheckpointConfig,
    CLIPVisionDiffusersConfig,
    CLIPVisionCheckpointConfig,
    CLIPEmbedDiffusersConfig,
    CLIPEmbedCheckpointConfig,
    T5EncoderConfig,
    T5EncoderCheckpointConfig,
    SpandrelImageToImageConfig,
    CaptionerDiffusersConfig,
    SafetyCheckerDiffusersConfig,
    ClipPredictorCheckpointConfig,
    ONNXSD1Config,
    ONNXSD2Config,
    ONNXSDXLConfig,
    ONNXConfig,
    UnknownModelConfig,
)
#: (type, format) pairs whose record class also depends on the base (InvokeAI's ONNXSD1/SD2 split):
#: their tag is "type.format.base" when that base has a class, else "type.format".
_BY_BASE = frozenset({f"{ModelType.Main.value}.{ModelFormat.ONNX.value}"})


def _tag_of(cls: type[ModelConfigBase]) -> str:
    fields = cls.model_fields
    pair = f"{fields['type'].default.value}.{fields['format'].default.value}"
    base = fields["base"].default
    return f"{pair}.{base.value}" if pair in _BY_BASE and isinstance(base, BaseModelType) else pair


#: "type.format" -> record class
CONFIG_CLASSES: dict[str, type[ModelConfigBase]] = {_tag_of(c): c for c in _CLASSES}


def _as_value(v: Any) -> str | None:
    if v is None:
        return None
    return str(getattr(v, "value", v))


def tag_for(type: ModelType | str, format: ModelFormat | str, base: BaseModelType | str | None = None) -> str:
    """The union tag of a record: ``"<type>.<format>"``, or ``"<type>.<format>.<base>"`` for the
    pairs split by base (ONNX main models) when that base has its own class."""
    pair = f"{_as_value(type)}.{_as_value(format)}"
    if pair in _BY_BASE and base is not None:
        specific = f"{pair}.{_as_value(base)}"
        if specific in CONFIG_CLASSES:
            return specific
    return pair


def config_tag(value: Any) -> str | None:
    """The discriminator (:func:`tag_for`) of a dict (any alias) or a record."""
    if isinstance(value, dict):
        t = value.get("type", value.get("model_type"))
        f = value.get("format", value.get("model_format"))
        b = value.get("base", value.get("base_model"))
    else:
        t = getattr(value, "type", None)
        f = getattr(value, "format", None)
        b = getattr(value, "base", None)
    if t is None or f is None:
        return None
    return tag_for(t, f, b)


if TYPE_CHECKING:
    AnyModelConfig = ModelConfigBase
else:
    AnyModelConfig = Annotated[
        Union[tuple(Annotated[c, Tag(t)] for t, c in CONFIG_CLASSES.items())],  # noqa: UP007
        Discriminator(config_tag),
    ]
"""The union of every record class, discriminated by ``type`` and ``format``."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyModelConfig)


def class_for(
    type: ModelType | str, format: ModelFormat | str, base: BaseModelType | str | None = None
) -> type[ModelConfigBase]:
    """The record class for a (type, format[, base]), or a clear error listing what exists.

    Without ``base``, a pair split by base (ONNX) answers its generic class, whose fields are
    those of every class of the pair."""
    tag = tag_for(type, format, base)
    try:
        return CONFIG_CLASSES[tag]
    except KeyError:
        known = ", ".join(sorted(CONFIG_CLASSES))
        raise InvalidModelConfigException(
            f"no record class for type/format {tag!r}; known: {known}", field="format"
        ) from None


def _describe(exc: ValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).endswith(("Config", "Tag")) and "." not in str(p))
    msg = first["msg"]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        known = ", ".join(sorted(CONFIG_CLASSES))
        tag = first.get("ctx", {}).get("tag", "?")
        return f"invalid model record: unknown type/format combination {tag!r}; known: {known}", "type"
    field = loc or None
    return f"invalid model record: field {field!r}: {msg}", field


def parse_config(data: dict[str, Any] | ModelConfigBase) -> ModelConfigBase:
    """Validate a dict (or re-validate a record) into the right record class.

    Raises:
        InvalidModelConfigException: naming the first field that failed.
    """
    if isinstance(data, ModelConfigBase):
        data = data.model_dump()
    if not isinstance(data, dict):
        raise InvalidModelConfigException(f"a model record must be a mapping, not {type(data).__name__}")
    if config_tag(data) is None:
        missing = "type" if data.get("type", data.get("model_type")) is None else "format"
        raise InvalidModelConfigException(f"invalid model record: field {missing!r} is required", field=missing)
    try:
        result: ModelConfigBase = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        message, field = _describe(exc)
        raise InvalidModelConfigException(message, field=field) from exc
    return result


def apply_changes(config: ModelConfigBase, changes: dict[str, Any] | ModelConfigBase) -> ModelConfigBase:
    """Merge a sparse dict (or a whole record) into ``config`` and re-validate.

    When the change moves the record to another class (say type main -> lora), fields the new
    class does not have are dropped, unless the caller named them (then they are an error).
    """
    if isinstance(changes, ModelConfigBase):
        new = changes.model_dump()
        new["key"] = config.key
        return parse_config(new)
    normalized: dict[str, Any] = {}
    for k, v in changes.items():
        k = {"model_type": "type", "model_format": "format", "base_model": "base", "model_name": "name"}.get(k, k)
        normalized[k] = v
    if "key" in normalized and normalized["key"] != config.key:
        raise InvalidModelConfigException("a model's key cannot be changed", field="key")
    merged = config.model_dump()
    merged.update(normalized)
    tag = config_tag(merged)
    target = CONFIG_CLASSES.get(tag or "")
    if target is not None and "config" in normalized and "config_path" in target.model_fields:
        # The seed's name for config_path; the merged dict already holds config_path, which
        # would win over the alias.
        merged["config_path"] = merged.pop("config")
        normalized["config_path"] = normalized.pop("config")
    if target is not None:
        for k in list(merged):
            if k not in target.model_fields and k not in normalized:
                del merged[k]
    merged["updated_at"] = time.time()
    return parse_config(merged)


__all__ = [
    "CONFIG_CLASSES",
    "AnyModelConfig",
    "CLIPEmbedCheckpointConfig",
    "CLIPEmbedDiffusersConfig",
    "CLIPVisionCheckpointConfig",
    "CLIPVisionDiffusersConfig",
    "CaptionerDiffusersConfig",
    "ClipPredictorCheckpointConfig",
    "ControlNetCheckpointConfig",
    "ControlNetDiffusersConfig",
    "IPAdapterCheckpointConfig",
    "IPAdapterInvokeAIConfig",
    "LoRADiffusersConfig",
    "LoRALyCORISConfig",
    "MainCheckpointConfig",
    "MainDiffusersConfig",
    "ModelConfigBase",
    "ONNXConfig",
    "ONNXSD1Config",
    "ONNXSD2Config",
    "ONNXSDXLConfig",
    "SafetyCheckerDiffusersConfig",
    "SpandrelImageToImageConfig",
    "SubmodelDefinition",
    "T2IAdapterCheckpointConfig",
    "T2IAdapterConfig",
    "T5EncoderCheckpointConfig",
    "T5EncoderConfig",
    "TextualInversionFileConfig",
    "TextualInversionFolderConfig",
    "UnknownModelConfig",
    "VAECheckpointConfig",
    "VAEDiffusersConfig",
    "apply_changes",
    "class_for",
    "config_tag",
    "new_key",
    "parse_config",
    "tag_for",
]
