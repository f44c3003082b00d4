"""Parsing JSON from model files (safetensors headers, ``model_index.json``, ``config.json``) safely.

The stdlib parser raises ``RecursionError`` on deeply nested input and ``ValueError`` on an
integer of more than 4300 digits; values that parse but nest a few hundred levels deep still
break ``repr``/``json.dumps`` later. :func:`parse_json` turns every such failure into the caller's
:class:`IdentificationError` naming the file, and :func:`short` shows a value in a message without
recursing or growing without bound.
"""

from __future__ import annotations

import json
import reprlib
import sys
from pathlib import Path
from typing import Any

from modeldepot.errors import IdentificationError

#: Real configs and headers nest 3-5 levels; anything deeper than this is not a model file.
MAX_JSON_DEPTH = 64

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlong = 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8


def short(value: Any) -> str:
    """``repr(value)`` cut to a few levels and ~100 characters: safe for any parsed value."""
    try:
        return _repr.repr(value)
    except (ValueError, RecursionError):  # an int of more than 4300 digits; a pathological object
        if isinstance(value, int):
            return f"<a {value.bit_length()}-bit integer>"
        return f"<{type(value).__name__}>"


def depth_of(obj: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), counting no further than ``limit + 1``.

    Iterative, so it cannot itself hit the recursion limit.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((c, depth) for c in children if isinstance(c, dict | list))
    return deepest


def parse_json(
    raw: bytes | str,
    path: Path,
    what: str,
    error: type[IdentificationError] = IdentificationError,
    *,
    max_depth: int | None = MAX_JSON_DEPTH,
    syntax: str = "not valid JSON",
) -> Any:
    """``json.loads(raw)``; any failure (syntax, nesting, huge numbers) becomes ``error`` naming ``path``.

    ``what`` names the document in messages, ``syntax`` is the message for malformed JSON, and
    ``max_depth`` (None: only the parser's own recursion bound) rejects documents nested deeper
    than real model files ever are.
    """
    try:
        doc = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: {syntax}: {exc}", path) from exc
    except RecursionError as exc:
        raise error(f"{path}: {what} nests JSON too deeply to be a model file", path) from exc
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise error(
            f"{path}: {what} holds a number of more than {sys.get_int_max_str_digits()} digits: not a model file",
            path,
        ) from exc
    if max_depth is not None and depth_of(doc, max_depth) > max_depth:
        raise error(f"{path}: {what} nests JSON more than {max_depth} levels deep: not a model file", path)
    return doc


__all__ = ["MAX_JSON_DEPTH", "depth_of", "parse_json", "short"]
