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
    values, single, batch = _entries(fields, raw)
    out = np.zeros((batch, flat_width(fields)), np.float32)
    for field, value in zip(fields, values, strict=True):
        rows = value.reshape(batch, -1)
        start = int(field["start"])
        if field["encoding"] == "box":
            out[:, start:start + rows.shape[1]] = rows
            continue
        index = _categories(field, value, rows) - np.asarray(field["first"])
        n = np.asarray(field["n"])
        offsets = start + np.concatenate([[0], np.cumsum(n)[:-1]])
        out[np.arange(batch)[:, None], offsets + index] = 1.0
    return out, single


def entry_inputs(fields: list[dict[str, Any]]) -> bool:
    """Whether an export takes the observation as one graph input per entry (``field["input"]``; contract
    version 3, a Dict or Tuple holding an image) rather than as the flat ``obs`` vector."""
    return bool(fields) and all("input" in f for f in fields)


def split_entries(fields: list[dict[str, Any]], raw: Any) -> tuple[dict[str, np.ndarray], bool]:
    """``raw`` (the env's Dict or Tuple observation, one or a batch) → one array ``[B, *shape]`` per field's
    ``input`` in the field's ``dtype`` (uint8 pixels, int64 categories, float32 values), and whether it was
    one. Checked as ``flatten`` checks (shape, categories) and pixels are whole numbers 0..255, each error
    naming the entry."""
    values, single, batch = _entries(fields, raw)
    feeds = {}
    for field, value in zip(fields, values, strict=True):
        shape = tuple(field["shape"])
        value = value.reshape(batch, *shape)
        if field["dtype"] == "int64":
            _categories(field, value, value.reshape(batch, int(np.prod(shape, dtype=np.int64))))
            feeds[field["input"]] = value.astype(np.int64, copy=False)
        elif field["dtype"] == "uint8":
            feeds[field["input"]] = pixels(value, f"observation {_name(field)}", shape)
        else:
            with np.errstate(over="ignore"):
                feeds[field["input"]] = value.astype(np.float32, copy=False)
    return feeds, single


def _entries(fields: list[dict[str, Any]], raw: Any) -> tuple[list[np.ndarray], bool, int]:
    """Each field's entry of ``raw``, whether ``raw`` is one observation (the first entry without a batch
    axis) and the batch size; every entry checked to have its field's shape, with that batch axis or none."""
    values = [_entry(raw, f) for f in fields]
    single = values[0].ndim == len(fields[0]["shape"])
    batch = 1 if single else values[0].shape[0]
    for field, value in zip(fields, values, strict=True):
        shape = tuple(field["shape"])
        expected = shape if single else (batch, *shape)
        if value.shape != expected:
            got = "one observation" if single else f"a batch of {batch}"
            raise InvalidInputError(
                f"observation {_name(field)}: expected shape {expected} ({got}, as the other entries), got "
                f"{value.shape}."
            )
    return values, single, batch


def unflatten(fields: list[dict[str, Any]], flat: np.ndarray) -> dict[str, Any]:
    """The flat vector ``[B, D]`` that ``flatten`` makes → the env's entries (a batch axis on each), so that a
    per-entry export also takes what the trainer's policy takes. A one-hot block gives its largest column."""
    out: dict[Any, Any] = {}
    batch = flat.shape[0]
    for field in fields:
        start, size = int(field["start"]), int(field["size"])
        block = flat[:, start:start + size]
        if field["encoding"] == "box":
            out[field["key"]] = block.reshape(batch, *field["shape"])
            continue
        values, offset = [], 0
        for n, first in zip(field["n"], field["first"], strict=True):
            values.append(np.argmax(block[:, offset:offset + n], axis=1) + first)
            offset += n
        out[field["key"]] = np.stack(values, axis=1).reshape(batch, *field["shape"])
    if fields and isinstance(fields[0]["key"], int):
        return tuple(out[i] for i in range(len(fields)))  # type: ignore[return-value]
    return out


def pixels(arr: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``arr`` as uint8 pixels. They must be whole numbers 0..255, as the env gives them: a frame already
    scaled to 0..1 would be scaled twice by the graph, so it is refused."""
    if arr.dtype == np.uint8:
        return arr
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255
                     or not np.all(np.equal(np.mod(arr, 1), 0))):
        raise InvalidInputError(
            f"{name}: this policy takes uint8 pixels 0..255 of shape {shape} (the env's own image; scaling is "
            f"inside the graph); got {arr.dtype} values from {arr.min()!r} to {arr.max()!r}. Send the frame "
            "unscaled as uint8."
        )
    return arr.astype(np.uint8)


def _categories(field: dict[str, Any], value: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` (``[B, elements]``) checked to be integer categories of ``field``; InvalidInputError otherwise."""
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
    return rows


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
