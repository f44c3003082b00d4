"""The vocabulary of model kinds. String values match InvokeAI's so records interoperate."""

from __future__ import annotations

from enum import Enum


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return str(self.value)


class BaseModelType(_StrEnum):
    """The model family a file belongs to (what it can be combined with)."""

    Any = "any"
    StableDiffusion1 = "sd-1"
    StableDiffusion2 = "sd-2"
    StableDiffusionXL = "sdxl"
    StableDiffusionXLRefiner = "sdxl-refiner"
    StableDiffusion3 = "sd-3"
    Flux = "flux"
    Unknown = "unknown"


class ModelType(_StrEnum):
    Main = "main"
    VAE = "vae"
    LoRA = "lora"
    ControlLoRA = "control_lora"
    ControlNet = "controlnet"
    TextualInversion = "embedding"
    IPAdapter = "ip_adapter"
    T2IAdapter = "t2i_adapter"
    CLIPVision = "clip_vision"
    CLIPEmbed = "clip_embed"
    T5Encoder = "t5_encoder"
    SpandrelImageToImage = "spandrel_image_to_image"
    Captioner = "captioner"
    SafetyChecker = "safety_checker"
    ClipPredictor = "clip_predictor"
    Unknown = "unknown"


class ModelFormat(_StrEnum):
    Diffusers = "diffusers"
    Checkpoint = "checkpoint"
    LyCORIS = "lycoris"
    ONNX = "onnx"
    Olive = "olive"
    EmbeddingFile = "embedding_file"
    EmbeddingFolder = "embedding_folder"
    InvokeAI = "invokeai"
    T5Encoder = "t5_encoder"
    BnbQuantizedLlmInt8b = "bnb_quantized_int8b"
    BnbQuantizednf4b = "bnb_quantized_nf4b"
    GGUFQuantized = "gguf_quantized"
    Unknown = "unknown"


class ModelVariantType(_StrEnum):
    Normal = "normal"
    Inpaint = "inpaint"
    Depth = "depth"


class FluxVariantType(_StrEnum):
    Schnell = "schnell"
    Dev = "dev"
    DevFill = "dev_fill"


class ClipVariantType(_StrEnum):
    L = "large"
    H = "huge"
    G = "gigantic"


class SubModelType(_StrEnum):
    UNet = "unet"
    Transformer = "transformer"
    TextEncoder = "text_encoder"
    TextEncoder2 = "text_encoder_2"
    TextEncoder3 = "text_encoder_3"
    Tokenizer = "tokenizer"
    Tokenizer2 = "tokenizer_2"
    Tokenizer3 = "tokenizer_3"
    VAE = "vae"
    VAEDecoder = "vae_decoder"
    VAEEncoder = "vae_encoder"
    Scheduler = "scheduler"
    SafetyChecker = "safety_checker"
    FeatureExtractor = "feature_extractor"
    ImageEncoder = "image_encoder"


class ModelRepoVariant(_StrEnum):
    Default = "default"
    FP16 = "fp16"
    FP32 = "fp32"
    ONNX = "onnx"
    OpenVINO = "openvino"
    Flax = "flax"
    # Document 002's spellings, aliases of the members above.
    DEFAULT = "default"
    OPENVINO = "openvino"
    FLAX = "flax"


class SchedulerPredictionType(_StrEnum):
    Epsilon = "epsilon"
    VPrediction = "v_prediction"
    Sample = "sample"


class ModelSourceType(_StrEnum):
    Path = "path"
    Url = "url"
    HFRepoID = "hf_repo_id"
    Civitai = "civitai"
    External = "external"


#: Bases whose VAEs/encoders are interchangeable: an SD-1 VAE also serves SD-2 (same latent space).
SD_FAMILY_LATENT_BASES = frozenset({BaseModelType.StableDiffusion1, BaseModelType.StableDiffusion2})

# File-name vocabulary: every module that asks "is this a weights file?" asks here, so a scan, the
# install check, the hash filter and source parsing agree (they used to disagree on .onnx and
# .msgpack). Lower-case suffixes with the dot.
SAFETENSORS_SUFFIXES = frozenset({".safetensors", ".sft"})
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})
#: Weights this project identifies, installs, hashes and scans for.
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES | PICKLE_SUFFIXES | frozenset({".gguf", ".onnx"})
#: Weights of other frameworks (Flax, TensorFlow): recognised as weights in a source or a repo
#: listing, never selected for download or loaded.
FOREIGN_WEIGHT_SUFFIXES = frozenset({".msgpack", ".h5", ".tflite", ".pb", ".npz"})
ANY_WEIGHT_SUFFIXES = WEIGHT_SUFFIXES | FOREIGN_WEIGHT_SUFFIXES
#: Config and tokenizer files that make a folder (a diffusers repo) more than one weights file.
CONFIG_SUFFIXES = frozenset({".json", ".yaml", ".yml", ".txt", ".model"})


def has_suffix(name: str, suffixes: frozenset[str]) -> bool:
    """Whether a file name ends with one of ``suffixes`` (case-insensitive)."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in suffixes


__all__ = [
    "ANY_WEIGHT_SUFFIXES",
    "CONFIG_SUFFIXES",
    "FOREIGN_WEIGHT_SUFFIXES",
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIXES",
    "SD_FAMILY_LATENT_BASES",
    "WEIGHT_SUFFIXES",
    "BaseModelType",
    "ClipVariantType",
    "FluxVariantType",
    "ModelFormat",
    "ModelRepoVariant",
    "ModelSourceType",
    "ModelType",
    "ModelVariantType",
    "SchedulerPredictionType",
    "SubModelType",
    "has_suffix",
]
