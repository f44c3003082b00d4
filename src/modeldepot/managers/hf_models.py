"""Managers of Hugging Face transformers models: CLIP (``clip``, ``open_clip``, ``coca``), BLIP
captioners and the Stable Diffusion safety checker (document 001's ``clip.py``, ``blip.py``,
``safety_checker.py``). Each loaded model comes with its processor (``loaded["processor"]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modeldepot.errors import LoaderNotFoundError
from modeldepot.managers.base import BaseModelManager, ManagedModel
from modeldepot.taxonomy import ModelFormat, ModelType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.reference import ReferenceEntry

_CLIP_TYPES = (ModelType.CLIPVision, ModelType.CLIPEmbed)


class _WithProcessor(BaseModelManager):
    #: Record types this service's Hugging Face folders are identified as.
    record_types: tuple[ModelType, ...] = ()
    #: What to tell a user whose file is not such a folder.
    hint = ""

    def load_model(
        self, key: str, entry: ReferenceEntry, record: ModelConfigBase, *, device: str, dtype: str
    ) -> ManagedModel:
        if record.type not in self.record_types or record.format != ModelFormat.Diffusers:
            raise LoaderNotFoundError(
                f"model {key!r}: {record.path} is {record.type.value}/{record.format.value}, not a Hugging Face "
                f"{'/'.join(t.value for t in self.record_types)} folder; {self.hint}"
            )
        model = self.load_part(record, None, device, dtype)
        processor = self.load_part(record, "feature_extractor", device, dtype)
        extras: dict[str, Any] = {"processor": processor.model, "preprocess": processor.model}
        return ManagedModel(
            key,
            self.service,
            model.model,
            device,
            model.precision,
            record,
            {"model": model, "processor": processor},
            extras,
        )


class ClipModelManager(_WithProcessor):
    """CLIP models. ``clip`` entries in the Hugging Face layout load as ``transformers.CLIPModel``
    with a ``CLIPProcessor``; ``open_clip`` and ``coca`` entries are OpenCLIP checkpoints and load
    through the ``open_clip`` package when it is installed (it needs torchvision), else are refused
    with that reason. OpenAI's original ``.pt`` files are TorchScript archives, which would run code
    from the file: refused, pointing at the Hugging Face conversion."""

    service = "clip"
    model_types = ("clip", "open_clip", "coca")
    record_types = _CLIP_TYPES
    hint = (
        "OpenAI's TorchScript .pt archives are not loaded (they execute code); "
        "use the Hugging Face layout, e.g. openai/clip-vit-large-patch14"
    )

    def load_model(
        self, key: str, entry: ReferenceEntry, record: ModelConfigBase, *, device: str, dtype: str
    ) -> ManagedModel:
        if entry.type in ("open_clip", "coca"):
            return self._load_open_clip(key, entry, record, device=device, dtype=dtype)
        return super().load_model(key, entry, record, device=device, dtype=dtype)

    def _load_open_clip(
        self, key: str, entry: ReferenceEntry, record: ModelConfigBase, *, device: str, dtype: str
    ) -> ManagedModel:
        try:
            import open_clip  # type: ignore[import-not-found]
        except ImportError:
            raise LoaderNotFoundError(
                f"model {key!r} is an OpenCLIP {entry.type} checkpoint: loading it needs the open_clip_torch "
                "package (and torchvision), which is not installed"
            ) from None
        weights = sorted(p for p in self._weight_files(record) if p.suffix in (".bin", ".pt", ".safetensors"))
        if not weights:
            raise LoaderNotFoundError(f"model {key!r}: no OpenCLIP weights under {record.path}")
        arch = entry.model_extra.get("pretrained_name") if entry.model_extra else None
        arch = arch if isinstance(arch, str) else key.removeprefix("coca_") if entry.type == "coca" else key
        name = f"coca_{arch}" if entry.type == "coca" and not arch.startswith("coca_") else arch
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(weights[0]), device=device)
        model.eval()
        return ManagedModel(key, self.service, model, device, dtype, record, {}, {"preprocess": preprocess})

    @staticmethod
    def _weight_files(record: ModelConfigBase) -> list[Any]:
        from pathlib import Path

        path = Path(record.path)
        return [path] if path.is_file() else [p.resolve() for p in path.rglob("*") if p.is_file()]


class BlipModelManager(_WithProcessor):
    """BLIP captioners in the Hugging Face layout (``BlipForConditionalGeneration`` + ``BlipProcessor``)."""

    service = "blip"
    record_types = (ModelType.Captioner,)
    hint = (
        "Salesforce's original BLIP .pth checkpoints are not converted here; "
        "use the Hugging Face layout, e.g. Salesforce/blip-image-captioning-base"
    )


class SafetyCheckerModelManager(_WithProcessor):
    """The Stable Diffusion safety checker (``StableDiffusionSafetyChecker`` + ``CLIPImageProcessor``)."""

    service = "safety_checker"
    record_types = (ModelType.SafetyChecker,)
    hint = "the safety checker is a folder with config.json, weights and preprocessor_config.json"


__all__ = ["BlipModelManager", "ClipModelManager", "SafetyCheckerModelManager"]
