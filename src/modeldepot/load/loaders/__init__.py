"""Built-in loaders. Importing this package registers them; none of the modules imports torch at import time."""

from modeldepot.load.loaders import components, diffusers_pipeline, encoders, single_file, state_dicts, upscalers
from modeldepot.load.loaders.components import CheckpointComponentLoader, DiffusersComponentLoader, IPAdapterLoader
from modeldepot.load.loaders.diffusers_pipeline import DiffusersPipelineLoader
from modeldepot.load.loaders.encoders import TransformersEncoderLoader
from modeldepot.load.loaders.single_file import SingleFileCheckpointLoader
from modeldepot.load.loaders.state_dicts import LoRALoader, TextualInversionLoader
from modeldepot.load.loaders.upscalers import UpscalerLoader

__all__ = [
    "CheckpointComponentLoader",
    "DiffusersComponentLoader",
    "DiffusersPipelineLoader",
    "IPAdapterLoader",
    "LoRALoader",
    "SingleFileCheckpointLoader",
    "TextualInversionLoader",
    "TransformersEncoderLoader",
    "UpscalerLoader",
    "components",
    "diffusers_pipeline",
    "encoders",
    "single_file",
    "state_dicts",
    "upscalers",
]
