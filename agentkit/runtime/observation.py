"""The flat observation a policy takes, built from an env's structured observation; numpy only.

An export's ``metadata.observation.fields`` says how (exports/CONTRACT.md): the observation is a Dict of
entries (``key``: the entry's name), a Tuple of entries (``key``: the entry's position, an integer) or one
Discrete / MultiDiscrete / MultiBinary value (``key``: null).
Each field fills ``size`` columns from column ``start``: ``"box"`` entries (Box, MultiBinary) their values
in C order, ``"one_hot"`` entries (Discrete, MultiDiscrete) one one-hot block of ``n[i]`` columns per
element, for the value minus ``first[i]``. This is gymnasium's ``spaces.flatten`` rule, written out here
because a game engine has only the metadata and the runtime must not need gymnasium; the trainer flattens
with this same function, so what the engine feeds the graph is what the policy was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agentkit.errors import InvalidInputError


def flat_width(fields: list[dict[str, Any]]) -> int:
    """Columns of the flat observation the fields make."""
    return max(int(f["start"]) + int(f["size"]) for f in fields)


def flatten(fields: list[dict[str, Any]], raw: Any) -> tuple[np.ndarray, bool]:
    """``raw`` (one observation or a batch, as the env gives it) → float32 ``[B, D]``, and whether it was one.

    A batch is each entry with a leading batch axis (a gymnasium vector env's Dict observation). Raises
    InvalidInputError naming the entry for a missing entry, a wrong shape or a value out of range.
    """
    values = [_entry(raw, f) for f in fields]
    single = values[0].ndim == len(fields[0]["shape"])
    batch = 1 if single else values[0].shape[0]
    out = np.zeros((batch, flat_width(fields)), np.float32)
    for field, value in zip(fields, values, strict=True):
        shape = tuple(field["shape"])
        expected = shape if single else (batch, *shape)
        if value.shape != expected:
            got = "one observation" if single else f"a batch of {batch}"
            raise InvalidInputError(
                f"observation {_name(field)}: expected shape {expected} ({got}, as the other entries), got "
                f"{value.shape}."
            )
        rows = value.reshape(batch, -1)
        start = int(field["start"])
        if field["encoding"] == "box":
            out[:, start:start + rows.shape[1]] = rows
            continue
        if value.dtype.kind not in "iub":
            raise InvalidInputError(
                f"observation {_name(field)}: expected integer category values, got dtype {value.dtype}."
            )
        n, first = np.asarray(field["n"]), np.asarray(field["first"])
        index = rows - first
        if ((index < 0) | (index >= n)).any():
            raise InvalidInputError(
                f"observation {_name(field)}: values must lie in {first.tolist()} .. {(first + n - 1).tolist()}, "
                f"got {rows.tolist() if rows.size <= 16 else 'values outside it'}."
            )
        offsets = start + np.concatenate([[0], np.cumsum(n)[:-1]])
        out[np.arange(batch)[:, None], offsets + index] = 1.0
    return out, single


def _entry(raw: Any, field: dict[str, Any]) -> np.ndarray:
    key = field["key"]
    if key is None:
        value = raw
    elif isinstance(key, int):
        if not isinstance(raw, tuple | list):
            raise InvalidInputError(
                f"observation: expected a tuple with entry {key} and the others of the policy's "
                f"metadata.observation.fields (the env's Tuple observation), or a flat float32 vector; got "
                f"{type(raw).__name__}."
            )
        if key >= len(raw):
            raise InvalidInputError(f"observation: entry {key} is missing (got a tuple of {len(raw)} entries).")
        value = raw[key]
    elif not isinstance(raw, Mapping):
        raise InvalidInputError(
            f"observation: expected a dict with the entries {field['key']!r} and the others of the policy's "
            f"metadata.observation.fields (or a flat float32 vector), got {type(raw).__name__}."
        )
    elif key not in raw:
        raise InvalidInputError(f"observation: the entry {key!r} is missing (got the entries {sorted(raw)}).")
    else:
        value = raw[key]
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise InvalidInputError(f"observation {_name(field)}: expected numbers, got dtype {arr.dtype}.")
    return arr


def _name(field: dict[str, Any]) -> str:
    key = field["key"]
    return "value" if key is None else f"entry {key}" if isinstance(key, int) else repr(key)
