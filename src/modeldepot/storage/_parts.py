"""Parts: the components a loader opens as one unit, named by what their tensors hold.

A *part* is a unet, VAE, text encoder... Its id is a **content hash over its tensors**, not over
files: blake3 of the sorted lines ``dtype:nbytes:blake3(tensor bytes)`` of its floating-point
tensors. Tensor names, order, file layout and integer buffers (``position_ids``) do not enter it,
so a checkpoint's embedded VAE (``first_stage_model.*`` keys, 1x1-conv attention) and a diffusers
``vae/`` folder holding the same weights (renamed keys, linear attention: same bytes, other shape)
are the same part — the AI Horde reference's container-independent ``content_hash`` idea.

The tensor hashes are taken by a :class:`TensorTap` fed the bytes the install already reads to
store and hash the file (one read pass). Parts with no safetensors weights (a tokenizer, a
scheduler, ``.bin`` weights) are named by their files instead (:func:`files_part_id`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import blake3

from modeldepot.errors import ModelDepotError, StorageError
from modeldepot.identify import SafetensorsHeader, read_safetensors_header
from modeldepot.identify._assemble import compatible_for
from modeldepot.storage._manifests import walk_source
from modeldepot.storage._split import REST, component_of
from modeldepot.storage.base import ManifestEntry
from modeldepot.taxonomy import BaseModelType, ModelType

#: Dtypes whose bytes are weights (integer tensors are buffers such as ``position_ids``).
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"})

ComponentOf = Callable[[str], "str | None"]


def ldm_component(key: str) -> str | None:
    """The component a single-file checkpoint key belongs to (None: EMA copies, schedules...)."""
    component = component_of(key)
    return None if component == REST else component


def whole(component: str) -> ComponentOf:
    """Every weight of the file belongs to ``component`` (a diffusers ``vae/`` file, a VAE file)."""
    return lambda _key: component


class TensorTap:
    """Hash each tensor of one safetensors file while its bytes stream past, in file order.

    ``feed(offset, piece)`` must be called with consecutive pieces of the whole file (the blob
    store's copy/hash loop does); :meth:`result` then gives each component's tensor lines.
    """

    def __init__(self, header: SafetensorsHeader, component_of: ComponentOf) -> None:
        self.component_of = component_of
        base = header.data_offset
        spans = []
        for name, t in header.tensors.items():
            component = component_of(name)
            if component is not None and t.dtype in FLOAT_DTYPES and t.end > t.begin:
                spans.append((base + t.begin, base + t.end, component, t.dtype))
        spans.sort()
        self._spans = spans
        self._next = 0
        self._hasher: blake3.blake3 | None = None
        self._lines: dict[str, list[str]] = {}
        self._bytes: dict[str, int] = {}
        self.path = header.path

    def feed(self, offset: int, piece: memoryview) -> None:
        if offset == 0:  # read again from the start (a hardlink that failed falls back to a copy)
            self._next, self._hasher, self._lines, self._bytes = 0, None, {}, {}
        end = offset + len(piece)
        spans = self._spans
        while self._next < len(spans):
            begin, stop, component, dtype = spans[self._next]
            if begin >= end:
                return
            lo, hi = max(begin, offset), min(stop, end)
            if hi > lo:
                if self._hasher is None:
                    self._hasher = blake3.blake3(max_threads=1)
                self._hasher.update(piece[lo - offset : hi - offset])
            if stop > end:
                return
            digest = self._hasher.hexdigest() if self._hasher is not None else ""
            self._lines.setdefault(component, []).append(f"{dtype}:{stop - begin}:{digest}")
            self._bytes[component] = self._bytes.get(component, 0) + stop - begin
            self._hasher = None
            self._next += 1

    def result(self) -> dict[str, tuple[list[str], int]]:
        """component -> (tensor lines, weight bytes); an error if the file was not fed whole."""
        if self._next != len(self._spans):
            raise StorageError(f"{self.path}: the part hash saw only part of the file", path=self.path)
        return {c: (lines, self._bytes[c]) for c, lines in self._lines.items()}


def per_tensor_tap(header: SafetensorsHeader) -> TensorTap:
    """A tap hashing every weight of a file, each its own "component" (named by the tensor): fed
    before anyone knows what the file is (while it downloads), grouped later by :class:`FedTap`."""
    return TensorTap(header, lambda name: name)


class FedTap:
    """A :class:`TensorTap`'s result from the tensor hashes a :func:`per_tensor_tap` already took
    of the same bytes: the same lines, grouped by ``tap``'s components, without reading again."""

    def __init__(self, fed: TensorTap, tap: TensorTap) -> None:
        self._fed = fed
        self._component_of = tap.component_of
        self.path = tap.path

    def result(self) -> dict[str, tuple[list[str], int]]:
        out: dict[str, tuple[list[str], int]] = {}
        for name, (lines, size) in self._fed.result().items():
            component = self._component_of(name)
            if component is None:
                continue
            have_lines, have_size = out.get(component, ([], 0))
            have_lines.extend(lines)
            out[component] = (have_lines, have_size + size)
        return out


def tensors_part_id(lines: Iterable[str]) -> str:
    h = blake3.blake3()
    h.update(b"tensors-v1\n")
    for line in sorted(lines):
        h.update(line.encode() + b"\n")
    return str(h.hexdigest())


def files_part_id(entries: Iterable[ManifestEntry], prefix: str = "") -> str:
    """A part with no safetensors weights, named by its files (relative to ``prefix``)."""
    h = blake3.blake3()
    h.update(b"files-v1\n")
    for e in sorted(entries, key=lambda e: e.relpath):
        h.update(f"{e.relpath[len(prefix) :]}\0{e.digest}\n".encode())
    return str(h.hexdigest())


@dataclass(frozen=True)
class Part:
    """One part of one model: ``folder`` is its subfolder ("" for the whole model); an
    ``embedded`` part lives inside a single file (its ``folder`` is then the submodel name)."""

    folder: str
    submodel: str
    part_id: str
    size: int
    embedded: bool
    bases: tuple[str, ...]
    kind: str = "tensors"  # or "files"


def plan_taps(kind: str, relpaths: Sequence[str], type_: str, fmt: str) -> dict[str, ComponentOf]:
    """Which files of a model to tap, and how their tensors map to components."""
    weights = [r for r in relpaths if r.endswith(".safetensors")]
    if kind == "file":
        if not weights:
            return {}
        if type_ == "main" and fmt == "checkpoint":
            return {weights[0]: ldm_component}
        if type_ == "vae":
            return {weights[0]: whole("vae")}
        return {}
    if type_ == "main" and fmt == "diffusers":
        return {r: whole(r.split("/", 1)[0]) for r in weights if r.count("/") == 1}
    if type_ == "vae" and fmt == "diffusers":
        return {r: whole("vae") for r in weights if "/" not in r}
    return {}


def collect_parts(
    kind: str,
    entries: Sequence[ManifestEntry],
    taps: Mapping[str, TensorTap | FedTap],
    *,
    type_: str,
    base: str,
    vae_bases: Iterable[str],
    pipeline: bool,
) -> list[Part]:
    """The parts of a model from its manifest entries and the taps fed while it was read."""
    tensors: dict[str, tuple[list[str], int]] = {}
    for tap in taps.values():
        for component, (lines, size) in tap.result().items():
            have = tensors.setdefault(component, ([], 0))
            tensors[component] = (have[0] + lines, have[1] + size)

    def bases_of(submodel: str) -> tuple[str, ...]:
        found = {base, *vae_bases} if submodel == "vae" else {base}
        return tuple(sorted(b for b in found if b != "unknown") or [base])

    parts: list[Part] = []
    if kind == "file":
        if type_ == "main" and tensors:
            for component, (lines, size) in sorted(tensors.items()):
                parts.append(Part(component, component, tensors_part_id(lines), size, True, bases_of(component)))
        own = "vae" if type_ == "vae" else type_
        if type_ == "vae" and "vae" in tensors:
            lines, size = tensors["vae"]
            parts.append(Part("", "vae", tensors_part_id(lines), size, False, bases_of("vae")))
        else:
            parts.append(Part("", own, files_part_id(entries), sum(e.size for e in entries), False, (base,), "files"))
        return parts
    if not pipeline:
        if type_ == "vae" and "vae" in tensors:
            lines, size = tensors["vae"]
            return [Part("", "vae", tensors_part_id(lines), size, False, bases_of("vae"))]
        return [Part("", type_, files_part_id(entries), sum(e.size for e in entries), False, (base,), "files")]
    folders: dict[str, list[ManifestEntry]] = {}
    for e in entries:
        path = PurePosixPath(e.relpath)
        if len(path.parts) > 1:
            folders.setdefault(path.parts[0], []).append(e)
    for folder, files in sorted(folders.items()):
        if folder in tensors:
            lines, size = tensors[folder]
            parts.append(Part(folder, folder, tensors_part_id(lines), size, False, bases_of(folder)))
        else:
            size = sum(e.size for e in files)
            parts.append(
                Part(folder, folder, files_part_id(files, f"{folder}/"), size, False, bases_of(folder), "files")
            )
    return parts


def taps_for(path: Path, type_: str, fmt: str) -> dict[str, TensorTap]:
    """Taps for the files of ``path`` that :func:`plan_taps` names, built from their headers (a
    file whose header cannot be read gets no tap: identification has already said what is wrong
    with it)."""
    kind, files = walk_source(path)
    taps: dict[str, TensorTap] = {}
    for rel, components in plan_taps(kind, [rel for rel, _ in files], type_, fmt).items():
        try:
            header = read_safetensors_header(path if kind == "file" else path / rel)
        except ModelDepotError:
            continue
        taps[rel] = TensorTap(header, components)
    return taps


def parts_of(
    kind: str, entries: Sequence[ManifestEntry], taps: Mapping[str, TensorTap | FedTap], type_: str, fmt: str, base: str
) -> list[Part]:
    """:func:`collect_parts` for a model of this type, format and base."""
    try:
        vae_bases = [str(b) for b in compatible_for(ModelType.VAE, BaseModelType(base))]
    except ValueError:
        vae_bases = []
    pipeline = kind == "folder" and type_ == "main" and fmt == "diffusers"
    return collect_parts(kind, entries, taps, type_=type_, base=base, vae_bases=vae_bases, pipeline=pipeline)


#: Families whose single files ``split_single_files`` stores as parts (their LDM layout is known).
SPLIT_BASES = frozenset({"sd-1", "sd-2", "sdxl", "sdxl-refiner"})


def splittable(path: Path, type_: str, fmt: str, base: str) -> bool:
    """Whether ``split_single_files`` applies: a single safetensors SD checkpoint."""
    return (
        path.is_file()
        and path.suffix == ".safetensors"
        and (type_, fmt) == ("main", "checkpoint")
        and base in SPLIT_BASES
    )
