"""The plan step of an install: which files of a remote source to fetch, from where, with what
token, and what the remote says about the model (its metadata for the record).

Choosing files is the remote's business (Hugging Face variants and subfolders, a Civitai
version's primary file, a plain URL), so it lives here; the install pipeline only executes plans.
A Hugging Face plan says which variant it chose and why (``chosen_variant``, ``variant_reason``):
without a variant asked for, fp16 is preferred when the repo has fp16 files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.download import RemoteFile
from modeldepot.errors import InvalidSourceError, NoLoadableFilesError
from modeldepot.remote.civitai import CivitaiClient
from modeldepot.remote.hf import HuggingFaceClient, hf_metadata_for_record
from modeldepot.remote.hf_select import Selection, variant_of_file
from modeldepot.remote.metadata import civitai_metadata, hf_metadata, metadata_json_for_record
from modeldepot.remote.sources import AnyModelSource, CivitaiModelSource, HFModelSource, URLModelSource
from modeldepot.taxonomy import CONFIG_SUFFIXES, WEIGHT_SUFFIXES, ModelRepoVariant, has_suffix

_LABELS = {ModelRepoVariant.FP16: "fp16", ModelRepoVariant.FP32: "fp32"}

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig


@dataclass(frozen=True)
class DownloadPlan:
    files: tuple[RemoteFile, ...]
    dest: Path
    #: Where the model is inside ``dest`` once downloaded (a file or subfolder), None = dest itself.
    model_subpath: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: One plain URL whose file name comes from the response (Content-Disposition or URL).
    single_url: bool = False
    #: The token the files' host wants (never stored; the plan lives only in memory).
    token: str | None = field(default=None, repr=False)
    #: Hugging Face: the variant the chosen files are (fp16 is preferred when none was asked for).
    chosen_variant: ModelRepoVariant | None = None
    #: One line saying which variant was chosen and why, e.g. "variant fp16 (default: the repo has fp16 files)".
    variant_reason: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


def plan_download(config: DepotConfig, source: AnyModelSource, dest: Path) -> DownloadPlan:
    if isinstance(source, URLModelSource):
        return DownloadPlan(files=(RemoteFile(url=source.url, path=""),), dest=dest, single_url=True)
    if isinstance(source, HFModelSource):
        return _plan_hf(config, source, dest)
    if isinstance(source, CivitaiModelSource):
        return _plan_civitai(config, source, dest)
    raise InvalidSourceError(f"{source} is not a remote source")


def _plan_hf(config: DepotConfig, source: HFModelSource, dest: Path) -> DownloadPlan:
    chosen: ModelRepoVariant | None
    reason: str | None
    with HuggingFaceClient.from_config(config, token=source.token_value()) as client:
        if source.file:
            info = client.model_info(source.repo_id, source.revision)
            chosen_file, reason = _file_for_variant(source, {f.path for f in info.siblings})
            files = [f for f in info.siblings if f.path == chosen_file]
            notes: list[str] = []
            subpath: str | None = chosen_file
            chosen = variant_of_file(chosen_file) or ModelRepoVariant.Default
        else:
            # The seed: an unset variant is "fp32 if the user has requested full precision, and fp16 otherwise".
            full = source.variant is None and config.precision == "float32"
            variant = ModelRepoVariant.FP32 if full else source.variant
            info, selection = client.select_files(source.repo_id, variant, source.subfolder, source.revision)
            files, notes, subpath = selection.files, list(selection.notes), _model_folder(source, selection)
            chosen, reason = selection.chosen_variant, selection.variant_reason
            if full:
                shown = (chosen or ModelRepoVariant.Default).value
                reason = f"variant {shown} (default: precision is float32 in the settings)"
            lone = _lone_weight_file(files)
            if lone is not None:
                # A repo holding one weight file and no configs (a LoRA, a VAE, a checkpoint)
                # is that file, not a folder.
                files, subpath = [lone], lone.path
        revision = info.sha or source.revision
        weights = [f for f in files if f.sha256]
        client.check_file_access(source.repo_id, revision, (weights or files)[0].path)
        token = client.token_for(client.resolve_url(source.repo_id, revision, files[0].path))
        remote = [
            RemoteFile(
                url=client.resolve_url(source.repo_id, revision, f.path), path=f.path, size=f.size, sha256=f.sha256
            )
            for f in files
        ]
        metadata = hf_metadata_for_record(info)
        metadata["source_api_response"] = metadata_json_for_record(info.raw_json(), hf_metadata(info))
    name = source.repo_id.split("/")[-1]
    if source.subfolder and not source.file:
        name = f"{name} {source.subfolder.replace('/', ' ')}"
    metadata["name"] = name
    return DownloadPlan(
        files=tuple(remote),
        dest=dest,
        model_subpath=subpath,
        metadata=metadata,
        notes=tuple(notes),
        token=token,
        chosen_variant=chosen,
        variant_reason=reason,
    )


def _file_for_variant(source: HFModelSource, listing: set[str]) -> tuple[str, str]:
    """The file a ``REPO:VARIANT:FILE`` source means, and why.

    ``repo::file`` is that exact file. ``repo:fp16:file`` is the fp16 form of it
    (``x.fp16.safetensors`` beside ``x.safetensors``) when the repo has one, as the seed's
    "an individual model file, fp16 variant" says; else the file itself.
    """
    assert source.file is not None
    file = source.file
    label = _LABELS.get(source.variant) if source.variant is not None else None
    if label and variant_of_file(file) is None:
        stem, dot, ext = file.rpartition(".")
        labelled = f"{stem}.{label}.{ext}" if dot else ""
        if labelled in listing:
            return labelled, f"variant {label} (asked for: {labelled})"
        if file in listing:
            return file, f"variant default (asked for {label}, but the repo has no {label} form of {file})"
    if file not in listing:
        raise NoLoadableFilesError(f"Hugging Face repo {source.repo_id!r} has no file {file!r}")
    shown = (variant_of_file(file) or ModelRepoVariant.Default).value
    return file, f"variant {shown} (the file asked for)"


def _model_folder(source: HFModelSource, selection: Selection) -> str | None:
    """Where the model is inside the download: the subfolder asked for, or the folders it stood for."""
    if not source.subfolder:
        return None
    folders = selection.subfolders
    if not folders:  # a file named as a "subfolder" (not a weight name, e.g. unet/config.json)
        return source.subfolder
    if len(folders) == 1:
        return folders[0]
    # Several folders (``text_encoder+tokenizer``, an onnx ``vae``): their common parent holds the model.
    parents = {f.rpartition("/")[0] for f in folders}
    if len(parents) == 1:
        return parents.pop() or None
    return None


def _plan_civitai(config: DepotConfig, source: CivitaiModelSource, dest: Path) -> DownloadPlan:
    with CivitaiClient.from_config(config, token=source.token_value()) as client:
        version = client.resolve(source)
        chosen = client.choose_file(version, source.file_name)
        client.check_access(chosen)
        token = client.token_for(chosen.download_url)
        metadata = client.metadata_for_record(version)
        raw = metadata.get("source_api_response", "")
        metadata["source_api_response"] = metadata_json_for_record(raw, civitai_metadata(version))
    remote = RemoteFile(url=chosen.download_url, path=chosen.name, size=chosen.size, sha256=chosen.sha256)
    return DownloadPlan(files=(remote,), dest=dest, model_subpath=chosen.name, metadata=metadata, token=token)


def _lone_weight_file(files: list[Any]) -> Any:
    """The one weights file of a listing without configs, else None."""
    weights = [f for f in files if has_suffix(f.path, WEIGHT_SUFFIXES)]
    configs = [f for f in files if has_suffix(f.path, CONFIG_SUFFIXES)]
    if len(weights) == 1 and not configs:
        return weights[0]
    return None


__all__ = ["DownloadPlan", "plan_download"]
