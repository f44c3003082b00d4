"""The plan step of an install: which files of a remote source to fetch, from where, with what
token, and what the remote says about the model (its metadata for the record).

Choosing files is the remote's business (Hugging Face variants and subfolders, a Civitai
version's primary file, a plain URL), so it lives here; the install pipeline only executes plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.download import RemoteFile
from modeldepot.errors import InvalidSourceError, NoLoadableFilesError
from modeldepot.remote.civitai import CivitaiClient
from modeldepot.remote.hf import HuggingFaceClient, hf_metadata_for_record
from modeldepot.remote.sources import AnyModelSource, CivitaiModelSource, HFModelSource, URLModelSource
from modeldepot.taxonomy import CONFIG_SUFFIXES, WEIGHT_SUFFIXES, has_suffix

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
    with HuggingFaceClient.from_config(config, token=source.token_value()) as client:
        if source.file:
            info = client.model_info(source.repo_id, source.revision)
            match = [f for f in info.siblings if f.path == source.file]
            if not match:
                raise NoLoadableFilesError(f"Hugging Face repo {source.repo_id!r} has no file {source.file!r}")
            files = match
            notes: list[str] = []
            subpath: str | None = source.file
        else:
            info, selection = client.select_files(source.repo_id, source.variant, source.subfolder, source.revision)
            files, notes, subpath = selection.files, list(selection.notes), source.subfolder
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
    name = source.repo_id.split("/")[-1]
    if source.subfolder and not source.file:
        name = f"{name} {source.subfolder.replace('/', ' ')}"
    metadata["name"] = name
    return DownloadPlan(
        files=tuple(remote), dest=dest, model_subpath=subpath, metadata=metadata, notes=tuple(notes), token=token
    )


def _plan_civitai(config: DepotConfig, source: CivitaiModelSource, dest: Path) -> DownloadPlan:
    with CivitaiClient.from_config(config, token=source.token_value()) as client:
        version = client.resolve(source)
        chosen = client.choose_file(version, source.file_name)
        client.check_access(chosen)
        token = client.token_for(chosen.download_url)
        metadata = client.metadata_for_record(version)
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
