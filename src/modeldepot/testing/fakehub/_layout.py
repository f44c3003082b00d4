"""Load a folder layout into a hub (what ``modeldepot fakehub --root DIR`` serves).

root/hf/<org>/<name>/<revision>/<files...>     one folder per branch (e.g. main, fp16)
root/hf/<org>/<name>/repo.json                 optional: tags, gated_token, card_data, author, private
root/civitai/<model_id>.json                   a model dict; files' "data" are paths under root/civitai/files/
root/files/<path>                              served at /files/<path>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot._fs import join_inside
from modeldepot.errors import ConfigurationError

if TYPE_CHECKING:
    from ._server import FakeHub


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"fakehub: cannot read {path}: {exc}") from exc


def load_root(hub: FakeHub, root: Path) -> None:
    if not root.is_dir():
        raise ConfigurationError(f"fakehub: root folder {root} does not exist")
    _load_hf(hub, root / "hf")
    _load_civitai(hub, root / "civitai")
    files = root / "files"
    if files.is_dir():
        for path in sorted(p for p in files.rglob("*") if p.is_file()):
            hub.add_file("files/" + path.relative_to(files).as_posix(), path)


def _load_hf(hub: FakeHub, hf: Path) -> None:
    if not hf.is_dir():
        return
    for org in sorted(p for p in hf.iterdir() if p.is_dir()):
        for repo in sorted(p for p in org.iterdir() if p.is_dir()):
            repo_id = f"{org.name}/{repo.name}"
            meta: dict[str, Any] = {}
            if (repo / "repo.json").is_file():
                meta = _read_json(repo / "repo.json")
                if not isinstance(meta, dict):
                    raise ConfigurationError(f"fakehub: {repo / 'repo.json'} must hold a JSON object")
            revisions = sorted(p for p in repo.iterdir() if p.is_dir())
            if not revisions:
                raise ConfigurationError(f"fakehub: {repo} has no revision folder (e.g. {repo / 'main'})")
            for rev in revisions:
                files: dict[str, bytes | Path] = {
                    p.relative_to(rev).as_posix(): p for p in sorted(rev.rglob("*")) if p.is_file()
                }
                hub.add_hf_repo(
                    repo_id,
                    files,
                    revision=rev.name,
                    gated_token=meta.get("gated_token"),
                    tags=meta.get("tags"),
                    card_data=meta.get("card_data", meta.get("cardData")),
                    author=meta.get("author"),
                    private=bool(meta.get("private", False)),
                )


def _load_civitai(hub: FakeHub, civitai: Path) -> None:
    if not civitai.is_dir():
        return
    files_dir = civitai / "files"
    for path in sorted(civitai.glob("*.json")):
        model = _read_json(path)
        if not isinstance(model, dict):
            raise ConfigurationError(f"fakehub: {path} must hold a Civitai model object")
        for version in model.get("modelVersions") or []:
            for f in version.get("files") or []:
                data = f.get("data")
                if not isinstance(data, str):
                    raise ConfigurationError(f"fakehub: {path}: every file needs 'data', a path under {files_dir}")
                f["data"] = join_inside(files_dir, data)
        hub.add_civitai_model(model)
