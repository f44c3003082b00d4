"""Textual-inversion embeddings for one call: new tokenizers and a temporary input-embedding module.

``textual_inversions(pairs, embeddings)`` never modifies the cached tokenizers: it yields copies that
know each trigger (``trigger``, ``trigger_1`` ... ``trigger_{n-1}`` for an n-vector embedding, diffusers'
convention, so its ``maybe_convert_prompt`` expands ``trigger`` into all vectors), and gives each text
encoder a NEW ``nn.Embedding`` (the original rows copied, the vectors appended) through
``set_input_embeddings``. On exit, also after an exception, the encoder gets its original embedding
module object back. The encoders are locked (the same per-module lock as LoRA patching) meanwhile.

Embeddings are state dicts as the loader returns them: ``{"emb_params": [n, dim]}`` for SD-1/2 (first
encoder) or ``{"clip_l": [n, 768], "clip_g": [n, 1280]}`` for SDXL (first and second encoder).
"""

from __future__ import annotations

import copy
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from modeldepot.errors import ServiceInputError
from modeldepot.services._lora import locked

# Tokenizer copies per (tokenizer, added token names): a real CLIP tokenizer is costly to deepcopy,
# and the same embeddings tend to come back call after call. Entries hold the original weakly.
_COPIES_MAX = 8
_copies: OrderedDict[tuple[int, tuple[str, ...]], tuple[weakref.ref[Any], Any]] = OrderedDict()
_copies_guard = threading.Lock()


def token_names(trigger: str, vectors: int) -> list[str]:
    """The tokens of an n-vector embedding: ``trigger``, ``trigger_1`` ... ``trigger_{n-1}``."""
    return [trigger] + [f"{trigger}_{i}" for i in range(1, vectors)]


def _tokenizer_with(tokenizer: Any, names: Sequence[str]) -> Any:
    """A copy of ``tokenizer`` with ``names`` added, cached (the original is never modified)."""
    key = (id(tokenizer), tuple(names))
    with _copies_guard:
        hit = _copies.get(key)
        if hit is not None and hit[0]() is tokenizer:
            _copies.move_to_end(key)
            return hit[1]
    from tokenizers import AddedToken

    new = copy.deepcopy(tokenizer)
    # not normalized: the trigger matches as written (CLIP lowercases text, which would make a mixed-case
    # trigger unreachable for diffusers' maybe_convert_prompt)
    added = new.add_tokens([AddedToken(n, normalized=False, single_word=False) for n in names])
    if added != len(names):
        raise ServiceInputError(f"tokenizer already knows one of {', '.join(names)}")
    with _copies_guard:
        _copies[key] = (weakref.ref(tokenizer), new)
        while len(_copies) > _COPIES_MAX:
            _copies.popitem(last=False)
    return new


def _vectors(trigger: str, state_dict: Mapping[str, Tensor], encoders: int) -> list[Tensor | None]:
    """Per text encoder, the ``[n, dim]`` vectors this embedding gives it (None: none)."""
    if not isinstance(trigger, str) or not trigger.strip() or trigger != trigger.strip():
        raise ServiceInputError(f"embedding trigger must be a non-empty word, not {trigger!r}")
    if "clip_l" in state_dict or "clip_g" in state_dict:
        if encoders < 2:
            raise ServiceInputError(
                f"embedding {trigger!r} is an SDXL embedding (clip_l / clip_g) but the model has one text encoder"
            )
        per = [state_dict.get("clip_l"), state_dict.get("clip_g")] + [None] * (encoders - 2)
    elif "emb_params" in state_dict:
        per = [state_dict["emb_params"]] + [None] * (encoders - 1)
    else:
        raise ServiceInputError(
            f"embedding {trigger!r} has none of emb_params, clip_l, clip_g (keys: {', '.join(sorted(state_dict))})"
        )
    out: list[Tensor | None] = []
    for v in per:
        if v is not None and (v.dim() not in (1, 2) or v.numel() == 0):
            raise ServiceInputError(f"embedding {trigger!r} has vectors of shape {tuple(v.shape)}, not [n, dim]")
        out.append(None if v is None else (v if v.dim() == 2 else v.unsqueeze(0)))
    counts = {int(v.shape[0]) for v in out if v is not None}
    if len(counts) > 1:
        raise ServiceInputError(f"embedding {trigger!r} has different vector counts per text encoder: {counts}")
    return out


def _check_new(tokenizer: Any, trigger: str, names: Iterable[str]) -> None:
    vocab = tokenizer.get_vocab()
    for name in names:
        # CLIP's BPE spells whole words "cat</w>": a trigger equal to a word would hijack it in every prompt
        if name in vocab or name.lower() + "</w>" in vocab:
            raise ServiceInputError(
                f"embedding trigger {trigger!r}: {name!r} is already a token of the tokenizer's vocabulary; "
                "rename the embedding"
            )


def _extended(embedding: torch.nn.Embedding, ids: Sequence[int], vectors: Tensor) -> torch.nn.Embedding:
    """A new embedding module: ``embedding``'s rows, grown to cover ``ids``, with ``vectors`` at ``ids``."""
    old = embedding.weight.detach()
    rows = max(old.shape[0], max(ids) + 1)
    weight = torch.cat([old, old.new_zeros(rows - old.shape[0], old.shape[1])]) if rows > old.shape[0] else old.clone()
    weight[list(ids)] = vectors.to(device=old.device, dtype=old.dtype)
    return torch.nn.Embedding(
        rows,
        old.shape[1],
        _weight=weight,  # taken as is: no random init of a vocabulary-sized matrix
        _freeze=not embedding.weight.requires_grad,
        padding_idx=embedding.padding_idx,
        max_norm=embedding.max_norm,
        norm_type=embedding.norm_type,
        scale_grad_by_freq=embedding.scale_grad_by_freq,
        sparse=embedding.sparse,
        device=old.device,
        dtype=old.dtype,
    )


@contextmanager
def textual_inversions(
    pairs: Sequence[tuple[Any, Any]], embeddings: Sequence[tuple[str, Mapping[str, Tensor]]]
) -> Iterator[list[Any]]:
    """Yield one tokenizer per ``(tokenizer, text_encoder)`` pair that knows the ``embeddings``' triggers
    (a copy where an embedding adds tokens; the given tokenizer otherwise), with each text encoder
    using an extended input embedding until the context ends.

    ``embeddings`` are ``(trigger, state_dict)``; the trigger is the word a prompt uses. Raises
    ``ServiceInputError`` for a width that is not the encoder's hidden size, a trigger that already is
    a vocabulary token, or two embeddings with the same trigger.
    """
    encoders = [te for _, te in pairs]
    plan: list[list[tuple[str, Tensor]]] = [[] for _ in pairs]
    seen: set[str] = set()
    for trigger, state_dict in embeddings:
        if trigger in seen:
            raise ServiceInputError(f"embedding trigger {trigger!r} is given twice")
        seen.add(trigger)
        for i, vectors in enumerate(_vectors(trigger, state_dict, len(pairs))):
            if vectors is None:
                continue
            width = int(encoders[i].get_input_embeddings().embedding_dim)
            if vectors.shape[1] != width:
                raise ServiceInputError(
                    f"embedding {trigger!r} is {vectors.shape[1]} wide but text encoder {i + 1} takes {width}; "
                    "it was made for another base model"
                )
            plan[i].append((trigger, vectors))
    with locked(encoders):
        tokenizers: list[Any] = []
        swapped: list[tuple[Any, torch.nn.Module, Any]] = []
        try:
            for (tokenizer, encoder), todo in zip(pairs, plan, strict=True):
                if not todo:
                    tokenizers.append(tokenizer)
                    continue
                names = [n for trigger, v in todo for n in token_names(trigger, int(v.shape[0]))]
                for trigger, v in todo:
                    _check_new(tokenizer, trigger, token_names(trigger, int(v.shape[0])))
                new_tok = _tokenizer_with(tokenizer, names)
                ids = [int(i) for i in new_tok.convert_tokens_to_ids(names)]
                original = encoder.get_input_embeddings()
                replacement = _extended(original, ids, torch.cat([v for _, v in todo]))
                swapped.append((encoder, original, getattr(encoder.config, "vocab_size", None)))
                encoder.set_input_embeddings(replacement)
                if swapped[-1][2] is not None:
                    encoder.config.vocab_size = replacement.num_embeddings
                tokenizers.append(new_tok)
            yield tokenizers
        finally:
            for encoder, original, vocab_size in reversed(swapped):
                encoder.set_input_embeddings(original)
                if vocab_size is not None:
                    encoder.config.vocab_size = vocab_size


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement that inserts ``text`` verbatim (no backslash escapes)."""
    return lambda _: text


def expand_prompt(prompt: str, tokenizer: Any, triggers: Iterable[str]) -> str:
    """``prompt`` with each multi-vector trigger written out (``trigger trigger_1 trigger_2``), for
    callers that tokenize themselves; an already expanded prompt stays as it is. (diffusers' pipelines
    expand in ``maybe_convert_prompt`` with a plain ``str.replace``, which is not idempotent: give them
    the unexpanded prompt.)"""
    added = set(tokenizer.get_added_vocab())
    for trigger in triggers:
        extra: list[str] = []
        while f"{trigger}_{len(extra) + 1}" in added:
            extra.append(f"{trigger}_{len(extra) + 1}")
        if not extra:
            continue
        replacement = " ".join([trigger, *extra])
        # a whole occurrence only: not inside a longer word, not trigger_1, not one already expanded
        pattern = rf"(?<!\w){re.escape(trigger)}(?!\w)(?!\s+{re.escape(extra[0])}(?!\w))"
        prompt = re.sub(pattern, _literal(replacement), prompt)
    return prompt


__all__ = ["expand_prompt", "textual_inversions", "token_names"]
