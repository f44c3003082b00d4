"""Planning a remote install: which files to fetch, from where, and what the remote says."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.errors import InvalidSourceError

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig
    from modeldepot.download import RemoteFile
    from modeldepot.remote import AnyModelSource

#: What an HTML error page starts with (after whitespace), case-insensitively.
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<?xml")


@dataclass
class DownloadPlan:
    files: list[RemoteFile]
    dest: Path
    #: Where the model is inside ``dest`` once downloaded (a file or subfolder), None = dest itself.
    model_subpath: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: One plain URL whose file name comes from the response (Content-Disposition or URL).
    single_url: bool = False
    token: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


def plan_download(config: DepotConfig, source: AnyModelSource, dest: Path) -> DownloadPlan:
    from modeldepot.remote import CivitaiModelSource, HFModelSource, URLModelSource

    if isinstance(source, URLModelSource):
        from modeldepot.download import RemoteFile

        return DownloadPlan(files=[RemoteFile(url=source.url, path="")], dest=dest, single_url=True)
    if isinstance(source, HFModelSource):
        return _plan_hf(config, source, dest)
    if isinstance(source, CivitaiModelSource):
        return _plan_civitai(config, source, dest)
    raise InvalidSourceError(f"{source} is not a remote source")


def _plan_hf(config: DepotConfig, source: Any, dest: Path) -> DownloadPlan:
    from modeldepot.download import RemoteFile
    from modeldepot.remote import HuggingFaceClient, hf_metadata_for_record
    from modeldepot.remote.hf_select import NoLoadableFilesError

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
    return DownloadPlan(files=remote, dest=dest, model_subpath=subpath, metadata=metadata, notes=notes, token=token)


def _plan_civitai(config: DepotConfig, source: Any, dest: Path) -> DownloadPlan:
    from modeldepot.download import RemoteFile
    from modeldepot.remote import CivitaiClient

    with CivitaiClient.from_config(config, token=source.token_value()) as client:
        version = client.resolve(source)
        chosen = client.choose_file(version, source.file_name)
        client.check_access(chosen)
        token = client.token_for(chosen.download_url)
        metadata = client.metadata_for_record(version)
    remote = RemoteFile(url=chosen.download_url, path=chosen.name, size=chosen.size, sha256=chosen.sha256)
    return DownloadPlan(files=[remote], dest=dest, model_subpath=chosen.name, metadata=metadata, token=token)


def _lone_weight_file(files: list[Any]) -> Any:
    from modeldepot.install._maintenance import MODEL_SUFFIXES

    weights = [f for f in files if Path(f.path).suffix.lower() in MODEL_SUFFIXES]
    configs = [f for f in files if f.path.lower().endswith((".json", ".yaml", ".yml", ".txt", ".model"))]
    if len(weights) == 1 and not configs:
        return weights[0]
    return None


def check_looks_like_model(path: Path) -> None:
    """Refuse a download that is an HTML (or XML) page rather than model weights.

    Raises:
        InvalidSourceError: naming the file.
    """
    if not path.is_file():
        return
    with path.open("rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith(_HTML_MARKERS):
        raise InvalidSourceError(
            f"the download {path.name!r} is a web page, not a model file (a login page or a wrong link?)"
        )
