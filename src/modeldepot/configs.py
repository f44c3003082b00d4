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
    type: ModelType = Field(validation_alias=AliasChoices("type", "model_type"))
    format: ModelFormat = Field(validation_alias=AliasChoices("format", "model_format"))
    base: BaseModelType = Field(validation_alias=AliasChoices("base", "base_model"))
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
    config_path: str | None = Field(default=None, description="Legacy config file for the checkpoint")


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
    type: Literal[ModelType.Main] = Field(default=ModelType.Main, validation_alias=AliasChoices("type", "model_type"))
    format: Literal[ModelFormat.Diffusers] = Field(
        default=ModelFormat.Diffusers, validation_alias=AliasChoices("format", "model_format")
    )


class MainCheckpointConfig(_CheckpointMixin, _MainMixin, ModelConfigBase):
    type: Literal[ModelType.Main] = Field(default=ModelType.Main, validation_alias=AliasChoices("type", "model_type"))
    format: Literal[ModelFormat.Checkpoint] = Field(
        default=ModelFormat.Checkpoint, validation_alias=AliasChoices("format", "model_format")
    )


class VAEDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.VAE] = Field(default=ModelType.VAE, validation_alias=AliasChoices("type", "model_type"))
    format: Literal[ModelFormat.Diffusers] = Field(
        default=ModelFormat.Diffusers, validation_alias=AliasChoices("format", "model_format")
    )


class VAECheckpointConfig(_CheckpointMixin, ModelConfigBase):
    type: Literal[ModelType.VAE] = Field(default=ModelType.VAE, validation_alias=AliasChoices("type", "model_type"))
    format: Literal[ModelFormat.Checkpoint] = Field(
        default=ModelFormat.Checkpoint, validation_alias=AliasChoices("format", "model_format")
    )


class LoRALyCORISConfig(ModelConfigBase):
    """A single-file LoRA: kohya, LyCORIS (LoHa/LoKr) or PEFT keys."""

    type: Literal[ModelType.LoRA] = Field(default=ModelType.LoRA, validation_alias=AliasChoices("type", "model_type"))
    format: Literal[ModelFormat.LyCORIS] = Field(
        default=ModelFormat.LyCORIS, validation_alias=AliasChoices("format", "model_format")
    )


class LoRADiffusersConfig(ModelConfigBase):
    type: Literal[ModelType.LoRA] = Field(default=ModelType.LoRA, validation_alias=AliasChoices("type", "model_type"))
    format: Literal[ModelFormat.Diffusers] = Field(
        default=ModelFormat.Diffusers, validation_alias=AliasChoices("format", "model_format")
    )


class ControlNetDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.ControlNet] = Field(
        default=ModelType.ControlNet, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Diffusers] = Field(
        default=ModelFormat.Diffusers, validation_alias=AliasChoices("format", "model_format")
    )


class ControlNetCheckpointConfig(_CheckpointMixin, ModelConfigBase):
    type: Literal[ModelType.ControlNet] = Field(
        default=ModelType.ControlNet, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Checkpoint] = Field(
        default=ModelFormat.Checkpoint, validation_alias=AliasChoices("format", "model_format")
    )


class TextualInversionFileConfig(ModelConfigBase):
    type: Literal[ModelType.TextualInversion] = Field(
        default=ModelType.TextualInversion, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.EmbeddingFile] = Field(
        default=ModelFormat.EmbeddingFile, validation_alias=AliasChoices("format", "model_format")
    )


class TextualInversionFolderConfig(ModelConfigBase):
    type: Literal[ModelType.TextualInversion] = Field(
        default=ModelType.TextualInversion, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.EmbeddingFolder] = Field(
        default=ModelFormat.EmbeddingFolder, validation_alias=AliasChoices("format", "model_format")
    )


class IPAdapterInvokeAIConfig(ModelConfigBase):
    type: Literal[ModelType.IPAdapter] = Field(
        default=ModelType.IPAdapter, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.InvokeAI] = Field(
        default=ModelFormat.InvokeAI, validation_alias=AliasChoices("format", "model_format")
    )
    image_encoder_model_id: str | None = None


class IPAdapterCheckpointConfig(ModelConfigBase):
    type: Literal[ModelType.IPAdapter] = Field(
        default=ModelType.IPAdapter, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Checkpoint] = Field(
        default=ModelFormat.Checkpoint, validation_alias=AliasChoices("format", "model_format")
    )


class T2IAdapterConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.T2IAdapter] = Field(
        default=ModelType.T2IAdapter, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Diffusers] = Field(
        default=ModelFormat.Diffusers, validation_alias=AliasChoices("format", "model_format")
    )


class T2IAdapterCheckpointConfig(_CheckpointMixin, ModelConfigBase):
    """A single-file T2I-Adapter (the original TencentARC layout)."""

    type: Literal[ModelType.T2IAdapter] = Field(
        default=ModelType.T2IAdapter, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Checkpoint] = Field(
        default=ModelFormat.Checkpoint, validation_alias=AliasChoices("format", "model_format")
    )


class CLIPVisionDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.CLIPVision] = Field(
        default=ModelType.CLIPVision, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Diffusers] = Field(
        default=ModelFormat.Diffusers, validation_alias=AliasChoices("format", "model_format")
    )
    clip_variant: ClipVariantType | None = None


class CLIPVisionCheckpointConfig(ModelConfigBase):
    type: Literal[ModelType.CLIPVision] = Field(
        default=ModelType.CLIPVision, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Checkpoint] = Field(
        default=ModelFormat.Checkpoint, validation_alias=AliasChoices("format", "model_format")
    )
    clip_variant: ClipVariantType | None = None


class CLIPEmbedDiffusersConfig(_DiffusersMixin, ModelConfigBase):
    type: Literal[ModelType.CLIPEmbed] = Field(
        default=ModelType.CLIPEmbed, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Diffusers] = Field(
        default=ModelFormat.Diffusers, validation_alias=AliasChoices("format", "model_format")
    )
    clip_variant: ClipVariantType | None = None


class CLIPEmbedCheckpointConfig(ModelConfigBase):
    type: Literal[ModelType.CLIPEmbed] = Field(
        default=ModelType.CLIPEmbed, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Checkpoint] = Field(
        default=ModelFormat.Checkpoint, validation_alias=AliasChoices("format", "model_format")
    )
    clip_variant: ClipVariantType | None = None


class T5EncoderConfig(ModelConfigBase):
    type: Literal[ModelType.T5Encoder] = Field(
        default=ModelType.T5Encoder, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.T5Encoder] = Field(
        default=ModelFormat.T5Encoder, validation_alias=AliasChoices("format", "model_format")
    )


class T5EncoderCheckpointConfig(ModelConfigBase):
    type: Literal[ModelType.T5Encoder] = Field(
        default=ModelType.T5Encoder, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Checkpoint] = Field(
        default=ModelFormat.Checkpoint, validation_alias=AliasChoices("format", "model_format")
    )


class SpandrelImageToImageConfig(ModelConfigBase):
    """An upscaler or restorer loadable by spandrel (ESRGAN family, SwinIR...)."""

    type: Literal[ModelType.SpandrelImageToImage] = Field(
        default=ModelType.SpandrelImageToImage, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Checkpoint] = Field(
        default=ModelFormat.Checkpoint, validation_alias=AliasChoices("format", "model_format")
    )
    architecture: str | None = None


class UnknownModelConfig(ModelConfigBase):
    """A file we could not identify, kept with the reasons so the user can override."""

    type: Literal[ModelType.Unknown] = Field(
        default=ModelType.Unknown, validation_alias=AliasChoices("type", "model_type")
    )
    format: Literal[ModelFormat.Unknown] = Field(
        default=ModelFormat.Unknown, validation_alias=AliasChoices("format", "model_format")
    )


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
    UnknownModelConfig,
)


def _tag_of(cls: type[ModelConfigBase]) -> str:
    return f"{cls.model_fields['type'].default.value}.{cls.model_fields['format'].default.value}"


#: "type.format" -> record class
CONFIG_CLASSES: dict[str, type[ModelConfigBase]] = {_tag_of(c): c for c in _CLASSES}


def _as_value(v: Any) -> str | None:
    if v is None:
        return None
    return str(getattr(v, "value", v))


def config_tag(value: Any) -> str | None:
    """The discriminator: ``"<type>.<format>"`` from a dict (any alias) or a record."""
    if isinstance(value, dict):
        t = value.get("type", value.get("model_type"))
        f = value.get("format", value.get("model_format"))
    else:
        t = getattr(value, "type", None)
        f = getattr(value, "format", None)
    if t is None or f is None:
        return None
    return f"{_as_value(t)}.{_as_value(f)}"


if TYPE_CHECKING:
    AnyModelConfig = ModelConfigBase
else:
    AnyModelConfig = Annotated[
        Union[tuple(Annotated[c, Tag(t)] for t, c in CONFIG_CLASSES.items())],  # noqa: UP007
        Discriminator(config_tag),
    ]
"""The union of every record class, discriminated by ``type`` and ``format``."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyModelConfig)


def class_for(type: ModelType | str, format: ModelFormat | str) -> type[ModelConfigBase]:
    """The record class for a (type, format) pair, or a clear error listing what exists."""
    tag = f"{_as_value(type)}.{_as_value(format)}"
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
    "ControlNetCheckpointConfig",
    "ControlNetDiffusersConfig",
    "IPAdapterCheckpointConfig",
    "IPAdapterInvokeAIConfig",
    "LoRADiffusersConfig",
    "LoRALyCORISConfig",
    "MainCheckpointConfig",
    "MainDiffusersConfig",
    "ModelConfigBase",
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
]
