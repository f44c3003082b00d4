"""Write one submodel of a model as a diffusers/transformers folder (the normalized view's part
copies). It is loaded exactly, in the dtype its tensors have in the source file, by a load service
of its own (not the shared cache, whose copy may be upcast for this device), and saved as
safetensors — so the copy holds the very tensor bytes of the part it was cut from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modeldepot.identify import read_safetensors_header
from modeldepot.load._errors import ModelLoadError
from modeldepot.storage._split import COMPONENT_PREFIXES

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig
    from modeldepot.configs import ModelConfigBase

_PRECISIONS = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}


def source_precision(record: ModelConfigBase, submodel: str) -> str:
    """The precision most of the submodel's tensors have in a single safetensors file (else float32)."""
    path = Path(record.path)
    if not (path.is_file() and path.suffix == ".safetensors"):
        return "float32"
    prefixes = tuple(p for p, component in COMPONENT_PREFIXES.items() if component == submodel)
    counts: dict[str, int] = {}
    for name, t in read_safetensors_header(path).tensors.items():
        if name.startswith(prefixes):
            counts[t.dtype] = counts.get(t.dtype, 0) + t.nbytes
    return _PRECISIONS.get(max(counts, key=counts.__getitem__), "float32") if counts else "float32"


def save_part(config: DepotConfig, record: ModelConfigBase, submodel: str, out_dir: Path) -> None:
    """Save ``record``'s ``submodel`` into the new folder ``out_dir`` (``save_pretrained``)."""
    from modeldepot.load.base import ModelLoadService

    service = ModelLoadService(config.model_copy(update={"precision": source_precision(record, submodel)}))
    with service.load_model(record, submodel) as model:
        if not hasattr(model, "save_pretrained"):
            raise ModelLoadError(f"{submodel} of {record.name!r} ({type(model).__name__}) cannot be saved as a folder")
        model.save_pretrained(str(out_dir), safe_serialization=True)
