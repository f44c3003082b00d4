"""Choose the files of a Hugging Face repo that a model needs, the way diffusers would.

Rules, per folder:

- weights of the wanted framework only (torch unless the variant is onnx / openvino / flax);
  other frameworks (``flax_model.msgpack``, ``tf_model.h5``, ``onnx/``, ``openvino``) are skipped;
- among weight groups (one file, or a shard group ``-00001-of-00003`` with its ``.index.json``):
  the asked variant's label (``.fp16.``), else the unlabelled default (said in ``notes``); then
  safetensors over ``.bin`` over ``.ckpt/.pt/.pth``; then a standard diffusers/transformers name;
  then the largest (so a root holding several single-file checkpoints yields one);
- every config is kept (``*.json``, tokenizer ``*.txt``, sentencepiece ``*.model``, merges/vocab),
  and a ``.yaml`` only when it sits beside a chosen checkpoint of the same stem (A1111 sidecar);
- docs and images (``README.md``, ``*.png``, ``.gitattributes``...) are dropped.

Which folders: with ``model_index.json`` only the folders it names (plus root configs); without it,
the root alone when the root holds weights, else every folder. A subfolder or file can be asked
for (``text_encoder+tokenizer`` joins several); for onnx / openvino, ``vae`` also finds the export's
``vae_decoder`` + ``vae_encoder``.

No variant asked for (``select_preferred``): fp16 when the scope has fp16 weights, else the
unlabelled ones; every ``Selection`` says which variant it chose and why in ``variant_reason``.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modeldepot._fs import safe_relpath
from modeldepot.errors import NoLoadableFilesError, RemoteNotFoundError
from modeldepot.remote.hf import HFFile
from modeldepot.taxonomy import WEIGHT_SUFFIXES, ModelRepoVariant, has_suffix

_LABELS = r"fp16|fp32|bf16|fp8|non_ema|ema"
_WEIGHT_RE = re.compile(
    rf"^(?P<stem>.+?)(?:\.(?P<l1>{_LABELS}))?(?:-(?P<i>\d{{5}})-of-(?P<n>\d{{5}}))?(?:\.(?P<l2>{_LABELS}))?"
    r"\.(?P<ext>safetensors|sft|bin|ckpt|pt|pth|gguf|onnx|msgpack|xml)$"
)
_INDEX_RE = re.compile(
    rf"^(?P<stem>.+?)(?:\.(?P<l1>{_LABELS}))?\.(?P<ext>safetensors|bin)\.index(?:\.(?P<l2>{_LABELS}))?\.json$"
)
_EXT_RANK = {"safetensors": 0, "sft": 0, "bin": 1, "ckpt": 2, "pt": 2, "pth": 2, "gguf": 3}
_STANDARD_STEMS = (
    "diffusion_pytorch_model",
    "model",
    "pytorch_model",
    "pytorch_lora_weights",
    "learned_embeds",
    "ip_adapter",
    "adapter_model",
)
_CONFIG_NAMES = frozenset(
    {"merges.txt", "vocab.txt", "added_tokens.txt", "token_identifier.txt", "type_of_concept.txt"}
)
_CONFIG_EXTS = (".json", ".model", ".jinja", ".tiktoken", ".spm")
_FRAMEWORK_DIRS = {"onnx": "onnx", "openvino": "openvino", "flax": "flax", "tf": "tf", "coreml": "coreml"}
#: Variant labels a caller can ask for; other variants are frameworks.
_LABEL_VARIANTS = {ModelRepoVariant.FP16: "fp16", ModelRepoVariant.FP32: "fp32"}
_FRAMEWORK_VARIANTS = {
    ModelRepoVariant.ONNX: "onnx",
    ModelRepoVariant.OpenVINO: "openvino",
    ModelRepoVariant.Flax: "flax",
}
#: When the wanted label is absent, fall back in this order.
_FALLBACK_ORDER: tuple[str | None, ...] = (None, "fp16", "bf16", "fp32", "ema", "non_ema", "fp8")


@dataclass(frozen=True)
class Selection:
    """The chosen files, which variant they are, and what was decided on the way.

    ``variant_reason`` is one line saying which variant was chosen and why (shown with the install
    job); ``subfolders`` are the repo folders the files came from when a subfolder was asked for
    (``vae`` may stand for ``vae_decoder`` + ``vae_encoder`` in an onnx repo).
    """

    files: list[HFFile]
    variant_used: ModelRepoVariant | None
    notes: list[str] = field(default_factory=list)
    variant_reason: str | None = None
    subfolders: tuple[str, ...] = ()

    @property
    def chosen_variant(self) -> ModelRepoVariant | None:
        """The variant the chosen files are (the seed's name for ``variant_used``)."""
        return self.variant_used

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def total_size(self) -> int:
        return sum(f.size or 0 for f in self.files)


@dataclass
class _Group:
    stem: str
    label: str | None
    ext: str
    shards: int
    files: list[HFFile] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def complete(self) -> bool:
        return self.shards == 0 or len(self.files) == self.shards

    @property
    def display(self) -> str:
        return self.files[0].path if len(self.files) == 1 else f"{self.files[0].path} (+{len(self.files) - 1} shards)"


def framework_of(path: str) -> str | None:
    """``torch``, ``onnx``, ``openvino``, ``flax``, ``tf``, ``coreml`` for weights; None otherwise."""
    parts = path.lower().split("/")
    name = parts[-1]
    for part in parts[:-1]:
        if part in _FRAMEWORK_DIRS:
            return _FRAMEWORK_DIRS[part]
        if part.endswith((".mlpackage", ".mlmodelc")):
            return "coreml"
    if name.startswith("openvino_"):
        return "openvino"
    if name.endswith((".onnx", ".onnx_data")) or name == "weights.pb":
        return "onnx"
    if name.endswith(".msgpack"):
        return "flax"
    if name.endswith((".h5", ".tflite")) or name.startswith("tf_model") or name == "saved_model.pb":
        return "tf"
    if name.endswith((".mlmodel", ".mlpackage")):
        return "coreml"
    if has_suffix(name, WEIGHT_SUFFIXES):  # .onnx answered above
        return "torch"
    return None


def _is_config(f: HFFile) -> bool:
    name = f.name.lower()
    if _INDEX_RE.match(name):
        return False
    if name.endswith(_CONFIG_EXTS) or name in _CONFIG_NAMES:
        return True
    if name.endswith(".txt"):
        folder = f.folder.rsplit("/", 1)[-1].lower()
        return folder.startswith("tokenizer") or "vocab" in name or "merges" in name
    return False


def _groups(weights: Iterable[HFFile]) -> list[_Group]:
    groups: dict[tuple[str, str | None, str, int], _Group] = {}
    for f in weights:
        m = _WEIGHT_RE.match(f.name)
        if m is None:  # unusual name: a group of its own
            stem, _, ext = f.name.rpartition(".")
            key: tuple[str, str | None, str, int] = (stem, None, ext.lower(), 0)
        else:
            key = (m["stem"], m["l1"] or m["l2"], m["ext"].lower(), int(m["n"]) if m["n"] else 0)
        groups.setdefault(key, _Group(*key)).files.append(f)
    for g in groups.values():
        g.files.sort(key=lambda f: f.path)
    return list(groups.values())


def _index_for(group: _Group, indexes: list[HFFile]) -> HFFile | None:
    for f in indexes:
        m = _INDEX_RE.match(f.name)
        if m and m["stem"] == group.stem and (m["l1"] or m["l2"]) == group.label and m["ext"] == group.ext:
            return f
    return None


def _where(folder: str) -> str:
    return folder or "the repo root"


def _pick(groups: list[_Group], want: str | None, folder: str, notes: list[str], *, quiet_default: bool) -> _Group:
    by_label: dict[str | None, list[_Group]] = defaultdict(list)
    for g in groups:
        by_label[g.label].append(g)
    label: str | None
    if by_label.get(want):
        label = want
    else:
        label = next((lab for lab in _FALLBACK_ORDER if by_label.get(lab)), None)
        if label is None or not by_label.get(label):
            label = sorted(by_label, key=str)[0]
        # Unlabelled weights are what fp32 repos ship, so falling back to them is not news.
        if not ((quiet_default or want == "fp32") and label is None):
            asked = want or "default"
            using = label or "default"
            notes.append(f"no {asked} weights for {_where(folder)}; using {using}")
    cands = by_label[label]
    complete = [g for g in cands if g.complete] or cands
    best_rank = min(_EXT_RANK.get(g.ext, 9) for g in complete)
    cands = [g for g in complete if _EXT_RANK.get(g.ext, 9) == best_rank]

    def order(g: _Group) -> tuple[int, int, str]:
        std = _STANDARD_STEMS.index(g.stem) if g.stem in _STANDARD_STEMS else len(_STANDARD_STEMS)
        return (std, -g.size, g.stem)

    cands.sort(key=order)
    chosen = cands[0]
    if not chosen.complete:
        have = f"{len(chosen.files)} of {chosen.shards}"
        notes.append(f"{_where(folder)}: shard group {chosen.stem} is incomplete ({have})")
    others = [g.display for g in cands[1:]]
    if others:
        also = ", ".join(others)
        notes.append(f"{_where(folder)}: chose {chosen.display}; also there: {also} (ask for one as REPO::PATH)")
    return chosen


def _select_folder(
    folder: str,
    files: list[HFFile],
    framework: str,
    want: str | None,
    notes: list[str],
    *,
    quiet_default: bool,
) -> tuple[list[HFFile], str | None, bool]:
    """(files kept, label used, had weights)."""
    weights = [f for f in files if framework_of(f.path) == framework and not f.name.endswith(".json")]
    indexes = [f for f in files if _INDEX_RE.match(f.name)]
    configs = [f for f in files if _is_config(f) and framework_of(f.path) in (None, "torch", framework)]
    if not weights:
        return configs, None, False
    if framework == "torch":
        chosen = _pick(_groups(weights), want, folder, notes, quiet_default=quiet_default)
        kept = list(chosen.files)
        index = _index_for(chosen, indexes)
        if index is not None:
            kept.append(index)
        elif chosen.shards:
            notes.append(f"{_where(folder)}: shard group {chosen.stem} has no index file")
        stems = {f.name.rsplit(".", 1)[0] for f in chosen.files}
        sidecars = [f for f in files if f.name.endswith((".yaml", ".yml")) and f.name.rsplit(".", 1)[0] in stems]
        return configs + kept + sidecars, chosen.label, True
    # Other frameworks have one layout each; keep all of their files in the folder.
    return configs + weights, None, True


def _component_folders(model_index: Mapping[str, Any]) -> set[str]:
    names = set()
    for key, value in model_index.items():
        if key.startswith("_"):
            continue
        if isinstance(value, list | tuple) and value and value[0] is not None:
            names.add(key)
    return names


def select_hf_files(
    files: list[HFFile],
    variant: ModelRepoVariant | None = None,
    subfolder: str | None = None,
    *,
    model_index: Mapping[str, Any] | None = None,
    variant_branch: bool = False,
) -> Selection:
    """Choose what to download from a repo listing.

    Args:
        files: the repo listing (``HuggingFaceClient.list_files`` or ``model_info().siblings``).
        variant: ``fp16`` / ``fp32`` pick labelled weights; ``onnx`` / ``openvino`` / ``flax`` pick
            that framework; None or ``default`` pick unlabelled torch weights.
        subfolder: a folder, several joined with ``+``, or one file path.
        model_index: the parsed ``model_index.json``; without it, folders with a config are kept.
        variant_branch: the listing is of the variant's own branch, whose plain names are the variant.

    Raises:
        UnsafePathError: a listed path escapes the repo.
        RemoteNotFoundError: the subfolder or file is not in the listing.
        NoLoadableFilesError: nothing loadable for this variant.
    """
    for f in files:
        safe_relpath(f.path)
    by_path = {f.path: f for f in files}
    notes: list[str] = []
    framework = _FRAMEWORK_VARIANTS.get(variant, "torch") if variant is not None else "torch"
    want = _LABEL_VARIANTS.get(variant) if variant is not None else None

    scoped: list[HFFile]
    resolved: list[str] = []
    if subfolder:
        targets = [t.strip("/") for t in subfolder.split("+") if t.strip("/")]
        for target in targets:
            safe_relpath(target)
        single = [t for t in targets if t in by_path]
        if single:
            if len(targets) != 1:
                raise RemoteNotFoundError(f"{subfolder!r}: a single file cannot be joined with '+' to other parts")
            used_by_file = variant_of_file(single[0])
            why = f"variant {(used_by_file or ModelRepoVariant.Default).value} (the file asked for)"
            return Selection([by_path[single[0]]], used_by_file, notes, why)
        scoped = []
        for target in targets:
            found = _folders_for(target, files, framework)
            if not found:
                tops = sorted({f.path.split("/", 1)[0] for f in files if "/" in f.path})
                raise RemoteNotFoundError(
                    f"the repo has no file or folder {target!r} (folders: {', '.join(tops) or 'none'})"
                )
            if found != [target]:
                notes.append(f"{target!r} is {' + '.join(found)} in this repo's {framework} layout")
            resolved.extend(found)
            scoped.extend(f for f in files if any(f.path.startswith(d + "/") for d in found))
    else:
        scoped = _scope_whole_repo(files, model_index, framework, notes)

    folders: dict[str, list[HFFile]] = defaultdict(list)
    for f in scoped:
        if framework_of(f.path) in (None, "torch", framework):
            folders[f.folder].append(f)

    chosen: list[HFFile] = []
    labels: set[str | None] = set()
    for folder in sorted(folders):
        kept, label, had = _select_folder(folder, folders[folder], framework, want, notes, quiet_default=variant_branch)
        chosen.extend(kept)
        if had:
            labels.add(label)
    skipped = sorted({fw for f in scoped if (fw := framework_of(f.path)) not in (None, framework)})
    if not labels:
        where = f"subfolder {subfolder!r}" if subfolder else "the repo"
        if subfolder is None or not chosen:
            other = f" (it only has {', '.join(skipped)} weights; ask for that variant)" if skipped else ""
            raise NoLoadableFilesError(f"{where} has no loadable {variant or 'default'} weights{other}")
        why = "no weights in this part (configs only)"
        return Selection(sorted(chosen, key=lambda f: f.path), None, notes, why, tuple(resolved))
    if skipped:
        notes.append(f"skipped weights for other frameworks: {', '.join(skipped)}")
    if framework != "torch":
        used: ModelRepoVariant | None = variant
    elif want is not None and (want in labels or variant_branch):
        used = variant
    elif labels == {None}:
        used = ModelRepoVariant.Default
    else:
        named = [lab for lab in labels if lab is not None]
        only = named[0] if len(named) == 1 and named[0] in ("fp16", "fp32") else None
        used = ModelRepoVariant(only) if only else ModelRepoVariant.Default
    why = _explicit_reason(variant, used)
    return Selection(sorted(chosen, key=lambda f: f.path), used, notes, why, tuple(resolved))


def _explicit_reason(asked: ModelRepoVariant | None, used: ModelRepoVariant | None) -> str:
    shown = (used or ModelRepoVariant.Default).value
    if asked is None or asked == ModelRepoVariant.Default:
        return f"variant {shown} (the unlabelled files)"
    if used == asked:
        return f"variant {shown} (asked for)"
    return f"variant {shown} (asked for {asked.value}, but the repo has no {asked.value} files)"


def select_preferred(
    files: list[HFFile],
    subfolder: str | None = None,
    *,
    model_index: Mapping[str, Any] | None = None,
) -> Selection:
    """No variant asked for: fp16 when the repo (or the subfolder) has fp16 weights, else the unlabelled ones.

    This is the seed's ``HFModelSource`` default (``variant=fp16``) with the fallback it implies:
    fp16 halves the download and is what inference runs in, but a repo without fp16 files still
    installs. ``variant_reason`` says which way it went.
    """
    if subfolder and subfolder.strip("/") in {f.path for f in files}:
        return select_hf_files(files, None, subfolder, model_index=model_index)
    try:
        fp16 = select_hf_files(files, ModelRepoVariant.FP16, subfolder, model_index=model_index)
    except NoLoadableFilesError:
        fp16 = None  # the default selection below raises with the plainer message
    if fp16 is not None and fp16.variant_used == ModelRepoVariant.FP16:
        return dataclasses.replace(fp16, variant_reason="variant fp16 (default: the repo has fp16 files)")
    plain = select_hf_files(files, ModelRepoVariant.Default, subfolder, model_index=model_index)
    shown = (plain.variant_used or ModelRepoVariant.Default).value
    return dataclasses.replace(plain, variant_reason=f"variant {shown} (default: no fp16 files)")


def _folders_for(target: str, files: list[HFFile], framework: str) -> list[str]:
    """The repo folders a subfolder name means for this framework.

    Torch layouts use the name as is. Exported layouts rename parts: diffusers' onnx / openvino
    pipelines split ``vae`` into ``vae_decoder`` and ``vae_encoder``, and some repos keep the export
    under an ``onnx/`` folder; a folder holding the framework's weights wins over one that does not.
    """

    def has(folder: str, fw: str | None = None) -> bool:
        return any(f.path.startswith(folder + "/") and (fw is None or framework_of(f.path) == fw) for f in files)

    if framework == "torch":
        return [target] if has(target) else []
    parent, _, leaf = target.rpartition("/")
    prefix = f"{parent}/" if parent else ""
    candidates = [[target], [f"{framework}/{target}"]]
    if leaf == "vae":
        split = [f"{prefix}vae_decoder", f"{prefix}vae_encoder"]
        candidates += [split, [f"{framework}/{s}" for s in split]]
    for group in candidates:
        found = [folder for folder in group if has(folder, framework)]
        if found:
            return found
    return [target] if has(target) else []


def variant_of_file(path: str) -> ModelRepoVariant | None:
    m = _WEIGHT_RE.match(path.rsplit("/", 1)[-1])
    label = (m["l1"] or m["l2"]) if m else None
    if label == "fp16":
        return ModelRepoVariant.FP16
    if label == "fp32":
        return ModelRepoVariant.FP32
    return None


def _scope_whole_repo(
    files: list[HFFile], model_index: Mapping[str, Any] | None, framework: str, notes: list[str]
) -> list[HFFile]:
    root = [f for f in files if "/" not in f.path]
    has_index = any(f.path == "model_index.json" for f in root)
    if has_index:
        if model_index is not None:
            names = _component_folders(model_index)
            if framework != "torch" and "vae" in names:
                # An export beside a torch pipeline splits the VAE; the torch index still says "vae".
                present = {f.path.split("/", 1)[0] for f in files if "/" in f.path}
                split = {"vae_decoder", "vae_encoder"} & present
                names = (names - {"vae"}) | split if split else names
        else:
            names = {f.path.split("/", 1)[0] for f in files if "/" in f.path and _is_config(f)}
            notes.append("model_index.json was not read; keeping every folder that has a config")
        ignored_root = [f.path for f in root if framework_of(f.path) == "torch"]
        if ignored_root:
            notes.append(f"ignored root checkpoints of this diffusers repo: {', '.join(sorted(ignored_root))}")
        missing = sorted(n for n in names if not any(f.path.startswith(n + "/") for f in files))
        if missing:
            notes.append(f"model_index.json names folders the repo lacks: {', '.join(missing)}")
        return [f for f in root if _is_config(f)] + [
            f for f in files if "/" in f.path and f.path.split("/", 1)[0] in names
        ]
    if any(framework_of(f.path) == framework for f in root):
        sub = sorted({f.path.split("/", 1)[0] for f in files if "/" in f.path and framework_of(f.path) == framework})
        if sub:
            notes.append(f"kept the root model only; other folders with weights: {', '.join(sub)}")
        return root
    return list(files)


__all__ = [
    "NoLoadableFilesError",
    "Selection",
    "framework_of",
    "select_hf_files",
    "select_preferred",
    "variant_of_file",
]
