"""LoRA / LyCORIS weights patched into cached modules for one call, and restored bit for bit.

``patched_loras(modules, loras)`` adds ``scale * delta`` to every layer the LoRAs name, computed in
float32 on the layer's device and assigned out of place (``param.data = new``), so the cache's tensors
are never written to and restoring is a pointer swap back to the very same tensor objects (InvokeAI's
direct patching; ComfyUI keeps backups instead, which costs a copy). Key layouts understood:

- kohya: ``lora_unet_<name with _>``, ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` + ``.lora_down.weight``,
  ``.lora_up.weight``, ``.alpha`` (and LoCon's ``.lora_mid.weight``); the UNet may be named the diffusers
  way or the original SGM / LDM way (``input_blocks_4_1_...``), mapped through the UNet's config;
- PEFT / diffusers: ``unet.<name>.lora_A.weight`` / ``.lora_B.weight``, the older ``.lora.down.weight``,
  ``.lora_linear_layer.down.weight`` and attention-processor ``to_q_lora.down.weight`` spellings;
- LyCORIS LoHa (``hada_w1_a`` ...), LoKr (``lokr_w1`` or ``lokr_w1_a/b``, ``lokr_w2`` or ``lokr_w2_a/b``)
  and full differences (``diff``, ``diff_b``).

Every module is locked (:func:`module_lock`, re-entrant) for the whole context, so two threads never
patch the same cached module at once. Callers that nest contexts (LoRAs, then embeddings) should take
the wider set of locks first — :func:`locked` takes several in one fixed order.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from modeldepot.errors import ServiceInputError

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_KOHYA_PREFIXES = (("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"),
                   ("lora_te_", "text_encoder"))  # fmt: skip

# key ending -> part name; matched longest first
_LYCORIS = ["alpha", "diff", "diff_b", "dora_scale", "hada_t1", "hada_t2", "lokr_t2"] + [
    f"{kind}_{w}{ab}" for kind, abs_ in (("hada", ("_a", "_b")), ("lokr", ("", "_a", "_b"))) for w in ("w1", "w2")
    for ab in abs_
]  # fmt: skip
_PARTS = {
    ".lora_down.weight": "down", ".lora_up.weight": "up", ".lora_mid.weight": "mid",
    ".lora_A.weight": "down", ".lora_B.weight": "up", ".lora.down.weight": "down", ".lora.up.weight": "up",
    ".lora_linear_layer.down.weight": "down", ".lora_linear_layer.up.weight": "up",
    "_lora.down.weight": "down_proc", "_lora.up.weight": "up_proc",
} | {"." + p: p for p in _LYCORIS}  # fmt: skip
_SUFFIXES = sorted(_PARTS, key=len, reverse=True)
_TUCKER = "Tucker-decomposed LyCORIS factors"
_UNSUPPORTED = {"hada_t1": _TUCKER, "hada_t2": _TUCKER, "lokr_t2": _TUCKER, "dora_scale": "DoRA magnitudes"}
# attention-processor spellings of diffusers' oldest LoRA format
_PROC_NAMES = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
_PROC_NAMES_TE = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


# ----- locks ---------------------------------------------------------------------------------------
_locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def module_lock(module: Any) -> threading.RLock:
    """The re-entrant lock of ``module`` (one per object, created on first use, dropped with it)."""
    with _locks_guard:
        lock = _locks.get(module)
        if lock is None:
            lock = _locks[module] = threading.RLock()
        return lock


@contextmanager
def locked(modules: Iterable[Any]) -> Iterator[None]:
    """Hold the locks of all ``modules`` (duplicates and None skipped), taken in one fixed order so
    two callers locking overlapping sets cannot deadlock."""
    unique = {id(m): m for m in modules if m is not None}
    with ExitStack() as stack:
        for key in sorted(unique):
            stack.enter_context(module_lock(unique[key]))
        yield


# ----- name index ----------------------------------------------------------------------------------
_RESNET_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}  # fmt: skip


def _ldm_prefixes(config: Any) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, SGM / LDM prefix, is a resnet) for a UNet2DConditionModel config; [] if the
    config is not one. Blocks are numbered the way the original UNet lays them out."""
    try:
        channels = list(config["block_out_channels"])
        down_types, up_types = list(config["down_block_types"]), list(config["up_block_types"])
        per_block = config["layers_per_block"]
    except (KeyError, TypeError):
        return []
    n = len(channels)
    layers = [int(per_block)] * n if isinstance(per_block, int) else [int(x) for x in per_block]
    if len(layers) != n or len(down_types) != n or len(up_types) != n:
        return []
    out = [("conv_in.", "input_blocks.0.0.", False)]
    idx = 1
    for i in range(n):
        for j in range(layers[i]):
            out.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{idx}.0.", True))
            if "Attn" in down_types[i]:
                out.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{idx}.1.", False))
            idx += 1
        if i < n - 1:
            out.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{idx}.0.op.", False))
            idx += 1
    up_layers = list(reversed(layers))
    idx = 0
    for i in range(n):
        attn = "Attn" in up_types[i]
        for j in range(up_layers[i] + 1):
            out.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{idx}.0.", True))
            if attn:
                out.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{idx}.1.", False))
            if j == up_layers[i] and i < n - 1:
                out.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{idx}.{2 if attn else 1}.", False))
            idx += 1
    out += [
        ("mid_block.resnets.0.", "middle_block.0.", True),
        ("mid_block.attentions.0.", "middle_block.1.", False),
        ("mid_block.resnets.1.", "middle_block.2.", True),
        ("time_embedding.linear_1.", "time_embed.0.", False),
        ("time_embedding.linear_2.", "time_embed.2.", False),
        ("add_embedding.linear_1.", "label_emb.0.0.", False),
        ("add_embedding.linear_2.", "label_emb.0.2.", False),
        ("conv_norm_out.", "out.0.", False),
        ("conv_out.", "out.2.", False),
    ]
    return out


def _ldm_name(name: str, prefixes: list[tuple[str, str, bool]]) -> str | None:
    dotted = name + "."
    for dprefix, lprefix, is_resnet in prefixes:
        if dotted.startswith(dprefix):
            rest = dotted[len(dprefix) :]
            if is_resnet:
                head, _, tail = rest.partition(".")
                rest = f"{_RESNET_LDM.get(head, head)}.{tail}"
            return (lprefix + rest).rstrip(".")
    return None


@dataclass(frozen=True)
class _Index:
    """Every spelling of a module's layer names: dotted (diffusers, LDM, with / without ``text_model.``)
    and kohya's flattened one, each mapped to the real name."""

    dotted: dict[str, str]
    flat: dict[str, str]
    modules: dict[str, torch.nn.Module]


_indexes: weakref.WeakKeyDictionary[torch.nn.Module, _Index] = weakref.WeakKeyDictionary()
_indexes_guard = threading.Lock()


def _index(module: torch.nn.Module) -> _Index:
    """The name index of ``module``, built once per module object (the cache keeps modules alive)."""
    with _indexes_guard:
        found = _indexes.get(module)
    if found is not None:
        return found
    config = getattr(module, "config", None)
    prefixes = _ldm_prefixes(config) if isinstance(config, Mapping) else []
    modules = dict(module.named_modules())
    dotted: dict[str, str] = {}
    for name in modules:
        if not name:
            continue
        spellings = [name]
        ldm = _ldm_name(name, prefixes) if prefixes else None
        if ldm:
            spellings.append(ldm)
        # transformers 5 flattened CLIPTextModel (no ``text_model.``); files keep the classic names
        spellings.append(name.removeprefix("text_model.") if name.startswith("text_model.") else "text_model." + name)
        for s in spellings:
            dotted.setdefault(s, name)
    flat: dict[str, str] = {}
    for s, name in dotted.items():
        flat.setdefault(s.replace(".", "_"), name)
    index = _Index(dotted=dotted, flat=flat, modules=modules)
    with _indexes_guard:
        _indexes[module] = index
    return index


# ----- parsing -------------------------------------------------------------------------------------
@dataclass
class LoraReport:
    """What a :func:`patched_loras` context did: per LoRA label, the layers it patched
    (``"unet:down_blocks.0...to_q"``) and the layer names in its file that match no module."""

    patched: dict[str, list[str]] = field(default_factory=dict)
    unmatched: dict[str, list[str]] = field(default_factory=dict)

    @property
    def layer_count(self) -> int:
        """How many distinct layers were patched (a layer several LoRAs touch counts once)."""
        return len({layer for layers in self.patched.values() for layer in layers})


def _split_key(key: str) -> tuple[str, str] | None:
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], _PARTS[suffix]
    return None


def _resolve(base: str, modules: Mapping[str, torch.nn.Module]) -> tuple[str, str] | None:
    """(component, real module name) that a LoRA layer name designates, or None."""
    for prefix, component in _KOHYA_PREFIXES:
        if base.startswith(prefix):
            module = modules.get(component)
            if module is None:
                return None
            name = _index(module).flat.get(base[len(prefix) :])
            return (component, name) if name else None
    dotted = base.removeprefix("base_model.model.")
    head, _, rest = dotted.partition(".")
    candidates = [(head, rest)] if head in COMPONENTS else [(c, dotted) for c in COMPONENTS]
    for component, name in candidates:
        module = modules.get(component)
        if module is not None and name and (real := _index(module).dotted.get(name)):
            return component, real
    return None


def _processor_base(base: str) -> str:
    """``...attn1.processor.to_q`` (diffusers' attention-processor LoRA) as ``...attn1.to_q``."""
    head, _, last = base.rpartition(".")
    head = head.removesuffix(".processor")
    is_te = base.startswith(("text_encoder.", "text_encoder_2.")) or ".self_attn" in base
    return f"{head}.{(_PROC_NAMES_TE if is_te else _PROC_NAMES).get(last, last)}"


def _groups(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, dict[str, Tensor]], list[str]]:
    """Keys grouped by layer name -> {part: tensor}; and the keys of no known layout."""
    groups: dict[str, dict[str, Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        split = _split_key(key)
        if split is None:
            unknown.append(key)
            continue
        base, part = split
        if part in ("down_proc", "up_proc"):
            base, part = _processor_base(base), part.removesuffix("_proc")
        groups.setdefault(base, {})[part] = tensor
    return groups, unknown


# ----- deltas --------------------------------------------------------------------------------------
def _scalar(t: Tensor | None) -> float | None:
    return None if t is None else float(t.reshape(-1)[0].item())


def _delta(label: str, layer: str, parts: Mapping[str, Tensor], device: torch.device) -> tuple[Tensor, float]:
    """The weight update of one layer in float32 on ``device``, and the LoRA's own scale
    (alpha / rank; 1 for full differences and for LoKr without a low-rank factor)."""

    def get(name: str) -> Tensor:
        if name not in parts:
            raise ServiceInputError(f"LoRA {label!r}: layer {layer} lacks {name} (has {', '.join(sorted(parts))})")
        return parts[name].to(device=device, dtype=torch.float32)

    def opt(name: str) -> Tensor | None:
        return get(name) if name in parts else None

    for part, what in _UNSUPPORTED.items():
        if part in parts:
            raise ServiceInputError(f"LoRA {label!r}: layer {layer} uses {what} ({part}), which are not supported")
    alpha = _scalar(parts.get("alpha"))
    if "down" in parts or "up" in parts:
        down, up, mid = get("down"), get("up"), opt("mid")
        rank = int(down.shape[0])
        if mid is not None:  # LoCon / Tucker: 1x1 down, kh x kw mid core, 1x1 up
            delta = torch.einsum("ijkl,jr,pi->prkl", mid, down.flatten(1), up.flatten(1))
        else:
            if up.flatten(1).shape[1] != rank:
                raise ServiceInputError(
                    f"LoRA {label!r}: layer {layer} has down rank {rank} but up shape {tuple(up.shape)}"
                )
            delta = up.flatten(1) @ down.flatten(1)
        return delta, (alpha / rank if alpha is not None else 1.0)
    if "hada_w1_a" in parts:
        w1a, w1b, w2a, w2b = (get(n) for n in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
        rank = int(w1b.shape[0])
        return (w1a @ w1b) * (w2a @ w2b), (alpha / rank if alpha is not None else 1.0)
    if any(p.startswith("lokr_") for p in parts):
        w1 = opt("lokr_w1")
        w1 = w1 if w1 is not None else get("lokr_w1_a") @ get("lokr_w1_b")
        w2 = opt("lokr_w2")
        w2 = w2 if w2 is not None else get("lokr_w2_a") @ get("lokr_w2_b")
        if w2.dim() == 4 and w1.dim() == 2:  # a conv: the kernel lives in w2
            w1 = w1[:, :, None, None]
        low = parts.get("lokr_w1_b", parts.get("lokr_w2_b"))
        scale = alpha / int(low.shape[0]) if alpha is not None and low is not None else 1.0
        return torch.kron(w1, w2), scale
    if "diff" in parts:
        return get("diff"), 1.0
    raise ServiceInputError(f"LoRA {label!r}: layer {layer} has no weights of a known kind ({', '.join(parts)})")


def _fit(label: str, layer: str, delta: Tensor, weight: Tensor) -> Tensor:
    """``delta`` in ``weight``'s shape: a linear update may come as a 1x1 conv and a conv update
    flattened, but a transposed or wrong-size update is an error."""
    if delta.shape == weight.shape:
        return delta
    same_out = delta.dim() >= 1 and weight.dim() >= 1 and delta.shape[0] == weight.shape[0]
    if same_out and delta.dim() != weight.dim() and delta[0].numel() == weight[0].numel():
        return delta.reshape(weight.shape)
    raise ServiceInputError(
        f"LoRA {label!r}: layer {layer} has weight shape {tuple(weight.shape)} "
        f"but the LoRA's update has shape {tuple(delta.shape)}"
    )


@dataclass
class _Job:
    """One layer to patch: its module and the (label, parts, weight) of every LoRA touching it."""

    module: torch.nn.Module
    contributions: list[tuple[str, Mapping[str, Tensor], float]] = field(default_factory=list)


def _plan(
    modules: Mapping[str, torch.nn.Module], loras: Sequence[tuple[str, Mapping[str, Tensor], float]]
) -> tuple[dict[str, _Job], LoraReport]:
    """Resolve every LoRA's layer names (no tensor math yet): jobs by ``component:layer``, and the report."""
    jobs: dict[str, _Job] = {}
    report = LoraReport()
    present = {k: v for k, v in modules.items() if v is not None}
    for label, state_dict, weight in loras:
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight != weight:
            raise ServiceInputError(f"LoRA {label!r}: weight must be a number, not {weight!r}")
        groups, unknown = _groups(state_dict)
        patched = report.patched.setdefault(label, [])
        unmatched = report.unmatched.setdefault(label, list(unknown))
        matched = 0
        for base, parts in groups.items():
            if parts.keys() == {"alpha"}:  # a stray scale with no weights: nothing to apply
                continue
            found = _resolve(base, present)
            if found is None:
                unmatched.append(base)
                continue
            matched += 1
            if weight == 0:  # resolved (so a wrong LoRA still fails) but nothing to add
                continue
            component, name = found
            key = f"{component}:{name}"
            if key not in jobs:
                jobs[key] = _Job(_index(present[component]).modules[name])
            jobs[key].contributions.append((label, parts, float(weight)))
            patched.append(key)
        if not matched:
            first = ", ".join(sorted(unmatched)[:3]) or "none"
            raise ServiceInputError(
                f"LoRA {label!r} matches no layer of the {' / '.join(sorted(present)) or 'given modules'} "
                f"(first names: {first}); is it made for another base model?"
            )
    return jobs, report


def _fused(job: _Job, weight: torch.nn.Parameter) -> Tensor | None:
    """The patched weight of the common case — one plain LoRA (down/up, no mid) on a layer — in one
    ``addmm`` instead of a matmul, a scale and an add: a third of the thread-parallel regions, which
    is what a busy machine makes expensive. None when the case is any other."""
    if len(job.contributions) != 1:
        return None
    _, parts, strength = job.contributions[0]
    down, up = parts.get("down"), parts.get("up")
    if down is None or up is None or "mid" in parts or "diff_b" in parts:
        return None
    down2, up2 = down.flatten(1), up.flatten(1)
    rank = int(down2.shape[0])
    if up2.shape[1] != rank or up2.shape[0] * down2.shape[1] != weight.numel() or up2.shape[0] != weight.shape[0]:
        return None  # let the general path name what does not fit
    alpha = _scalar(parts.get("alpha"))
    scale = strength * (alpha / rank if alpha is not None else 1.0)
    device = weight.device
    base = weight.detach().reshape(up2.shape[0], -1).float()
    up32, down32 = up2.to(device=device, dtype=torch.float32), down2.to(device=device, dtype=torch.float32)
    new = torch.addmm(base, up32, down32, alpha=scale)
    return new.reshape(weight.shape).to(weight.dtype)


def _patch_layer(key: str, job: _Job, originals: list[tuple[torch.nn.Parameter, Tensor]]) -> None:
    weight = getattr(job.module, "weight", None)
    if not isinstance(weight, torch.nn.Parameter) or not weight.is_floating_point():
        raise ServiceInputError(f"layer {key} has no floating-point weight to patch")
    fused = _fused(job, weight)
    if fused is not None:
        originals.append((weight, weight.data))
        weight.data = fused  # out of place, as below
        return
    bias = getattr(job.module, "bias", None)
    total: Tensor | None = None
    total_bias: Tensor | None = None
    for label, parts, strength in job.contributions:
        try:
            delta, scale = _delta(label, key, parts, weight.device)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:  # factors whose shapes do not multiply
            raise ServiceInputError(f"LoRA {label!r}: layer {key}: its factors do not fit together ({exc})") from exc
        delta = _fit(label, key, delta, weight)
        total = delta * (strength * scale) if total is None else total.add_(delta, alpha=strength * scale)
        if "diff_b" in parts:
            if not isinstance(bias, torch.nn.Parameter):
                raise ServiceInputError(f"LoRA {label!r}: layer {key} has a bias update but no bias")
            db = _fit(label, key + ".bias", parts["diff_b"].to(device=bias.device, dtype=torch.float32), bias)
            total_bias = db * strength if total_bias is None else total_bias.add_(db, alpha=strength)
    with torch.no_grad():
        for param, update in ((weight, total), (bias, total_bias)):
            if update is None or not isinstance(param, torch.nn.Parameter):
                continue
            new = (param.data.float() + update).to(param.dtype)
            originals.append((param, param.data))
            param.data = new  # out of place: the cached tensor itself is never written


@contextmanager
def _small_work_threads(jobs: Iterable[_Job]) -> Iterator[None]:
    """One intra-op thread while patching weights on the CPU. Each layer's update is a few small ops;
    with torch's threads, every op is a parallel region that waits for all of them to be scheduled,
    and on a busy machine those waits (not the arithmetic) took 4-8x diffusers' own load + unload
    (benchmarks/results/services.md). Single-threaded it is 0.05-0.13x there, and the same idle."""
    on_cpu = any(getattr(getattr(j.module, "weight", None), "device", None) == torch.device("cpu") for j in jobs)
    before = torch.get_num_threads()
    if not on_cpu or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def patched_loras(
    modules: Mapping[str, torch.nn.Module], loras: Sequence[tuple[str, Mapping[str, Tensor], float]]
) -> Iterator[LoraReport]:
    """Patch ``loras`` — ``(label, state_dict, weight)`` — into ``modules`` (``{"unet": ...,
    "text_encoder": ..., "text_encoder_2": ...}``, any may be missing) for the duration of the context.

    Each layer gets ``w + sum(weight * alpha / rank * delta)`` computed in float32 on its device and cast
    back to its dtype; on exit, also after an exception, every parameter gets its original tensor object
    back (bit-exact, no copy). Yields a :class:`LoraReport`. Raises ``ServiceInputError`` for a LoRA
    matching no layer, a layer whose shape differs from the update, or an unsupported LyCORIS kind.
    """
    unknown = sorted(set(modules) - set(COMPONENTS))
    if unknown:
        raise ServiceInputError(f"cannot patch LoRAs into {', '.join(unknown)}; parts are {', '.join(COMPONENTS)}")
    with locked(modules.values()):
        jobs, report = _plan(modules, loras)
        originals: list[tuple[torch.nn.Parameter, Tensor]] = []
        try:
            with _small_work_threads(jobs.values()):
                for key, job in jobs.items():
                    _patch_layer(key, job, originals)
            yield report
        finally:
            with torch.no_grad():
                for param, original in reversed(originals):
                    param.data = original


__all__ = ["COMPONENTS", "LoraReport", "locked", "module_lock", "patched_loras"]
