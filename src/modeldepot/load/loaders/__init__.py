"""Built-in loaders. Importing this package registers them; none of the modules imports torch at import time."""

from modeldepot.load.loaders import (
    captioners,
    components,
    diffusers_pipeline,
    encoders,
    predictor,
    sdxl_refiner,
    single_file,
    single_file_dit,
    single_file_encoders,
    state_dicts,
    upscalers,
)
from modeldepot.load.loaders.captioners import CaptionerLoader, SafetyCheckerLoader
from modeldepot.load.loaders.components import (
    CheckpointComponentLoader,
    DiffusersComponentLoader,
    IPAdapterLoader,
    T2IAdapterCheckpointLoader,
)
from modeldepot.load.loaders.diffusers_pipeline import DiffusersPipelineLoader
from modeldepot.load.loaders.encoders import TransformersEncoderLoader
from modeldepot.load.loaders.predictor import ClipPredictorLoader
from modeldepot.load.loaders.sdxl_refiner import SDXLRefinerCheckpointLoader
from modeldepot.load.loaders.single_file import SingleFileCheckpointLoader
from modeldepot.load.loaders.single_file_dit import DiTCheckpointLoader
from modeldepot.load.loaders.single_file_encoders import (
    CLIPTextSingleFileLoader,
    CLIPVisionSingleFileLoader,
    T5EncoderSingleFileLoader,
)
from modeldepot.load.loaders.state_dicts import LoRALoader, TextualInversionLoader
from modeldepot.load.loaders.upscalers import UpscalerLoader

__all__ = [
    "CLIPTextSingleFileLoader",
    "CLIPVisionSingleFileLoader",
    "CaptionerLoader",
    "CheckpointComponentLoader",
    "ClipPredictorLoader",
    "DiTCheckpointLoader",
    "DiffusersComponentLoader",
    "DiffusersPipelineLoader",
    "IPAdapterLoader",
    "LoRALoader",
    "SDXLRefinerCheckpointLoader",
    "SafetyCheckerLoader",
    "SingleFileCheckpointLoader",
    "T2IAdapterCheckpointLoader",
    "T5EncoderSingleFileLoader",
    "TextualInversionLoader",
    "TransformersEncoderLoader",
    "UpscalerLoader",
    "captioners",
    "components",
    "diffusers_pipeline",
    "encoders",
    "predictor",
    "sdxl_refiner",
    "single_file",
    "single_file_dit",
    "single_file_encoders",
    "state_dicts",
    "upscalers",
]
