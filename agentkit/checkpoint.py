"""Checkpoint files: atomic writes, safe loads, and an integrity digest.

A checkpoint is an ordinary ``torch.save`` file holding only tensors and plain Python data (dict, list,
tuple, str, int, float, bool, None), so anyone can open it with ``torch.load(path, weights_only=True)``:
loading one never runs code from it. The payload is a dict::

    {"format": "agentkit-checkpoint", "version": 1, "step": int, "iteration": int,
     "config": {...the run config...}, "algorithm": Algorithm.state_dict(), "trainer": {...},
     "sha256": "<hex digest of everything above>"}

``sha256`` is a canonical digest of the payload's content (keys, types, tensor dtypes, shapes and bytes),
computed before saving and checked after loading: a truncated file fails to unzip, a tampered one fails the
digest, and either is refused with ``CheckpointError`` (exit code 2). The digest guards against corruption
and accidental edits; it is not a signature, and safety from code comes from ``weights_only=True``.

Writes are atomic (``agentkit.files.write_atomic``): a kill -9 at any moment leaves either the old or the new
file, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from agentkit.errors import CheckpointError
from agentkit.files import TMP_MARK, write_atomic

FORMAT = "agentkit-checkpoint"
VERSION = 1


# -- the digest --------------------------------------------------------------------------------------------


def _feed(h: Any, obj: Any, path: str) -> None:
    """Feed ``obj`` to the hash canonically; raise TypeError naming ``path`` for data torch can't reload."""
    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"T" if obj else b"F")
    elif isinstance(obj, int):
        text = str(obj).encode()
        h.update(b"i" + struct.pack("<I", len(text)) + text)
    elif isinstance(obj, float):
        h.update(b"f" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"s" + struct.pack("<Q", len(data)) + data)
    elif isinstance(obj, bytes):
        h.update(b"b" + struct.pack("<Q", len(obj)) + obj)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        header = f"{t.dtype}|{tuple(t.shape)}".encode()
        h.update(b"t" + struct.pack("<I", len(header)) + header)
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(b"d" + struct.pack("<Q", len(obj)))
        for key, value in obj.items():
            _feed(h, key, path)
            _feed(h, value, f"{path}[{key!r}]")
    elif isinstance(obj, (list, tuple)):  # torch.Size is a tuple
        h.update((b"l" if isinstance(obj, list) else b"u") + struct.pack("<Q", len(obj)))
        for i, value in enumerate(obj):
            _feed(h, value, f"{path}[{i}]")
    elif isinstance(obj, (torch.dtype, torch.device)):
        text = str(obj).encode()
        h.update(b"x" + struct.pack("<I", len(text)) + text)
    else:
        raise TypeError(
            f"checkpoint data at {path} is a {type(obj).__module__}.{type(obj).__qualname__}: only tensors and "
            "plain Python data (dict, list, tuple, str, int, float, bool, None) can be saved, because "
            "checkpoints are loaded with torch.load(weights_only=True). Convert it (e.g. numpy arrays with "
            "torch.as_tensor, numpy scalars with float()/int()) in the plugin's state_dict()."
        )


def digest(payload: dict[str, Any]) -> str:
    """The canonical sha256 of a checkpoint payload, ignoring its own ``sha256`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "sha256"}, "checkpoint")
    return h.hexdigest()


# -- writing -----------------------------------------------------------------------------------------------


def encode(payload: dict[str, Any]) -> bytes:
    """The file bytes for ``payload`` (with ``format``, ``version`` and ``sha256`` filled in)."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    payload["sha256"] = digest(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Encode ``payload`` and write it atomically to ``path``; return the path."""
    write_atomic(path, encode(payload))
    return Path(path)


def remove_stale_temp_files(folder: Path) -> None:
    """Delete temporary files a killed writer left behind in ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(f".*{TMP_MARK}*"):
            tmp.unlink(missing_ok=True)


# -- reading -----------------------------------------------------------------------------------------------


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and verify a checkpoint, with ``weights_only=True``.

    Raises CheckpointError when the file is missing, truncated, not an agentkit checkpoint, holds anything
    but tensors and plain data, or does not match its digest.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, unsupported pickle globals (code), garbage bytes, ...
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded safely: it is truncated, corrupt or holds more than "
            f"tensors and plain data ({_load_failure(exc)}). "
            "Copy an intact checkpoints/step_<n>.pt over it, or start a new run."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an agentkit checkpoint (no 'format: {FORMAT}' entry).")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {payload.get('version')!r}; this agentkit reads "
            f"version {VERSION}."
        )
    try:
        actual = digest(payload)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} holds unexpected data: {exc}") from None
    if actual != payload.get("sha256"):
        raise CheckpointError(
            f"checkpoint {str(path)!r} failed its integrity check (sha256 mismatch): it was modified or "
            "damaged after it was written. Copy an intact checkpoints/step_<n>.pt over it, or start a new run."
        )
    return payload


def _load_failure(exc: Exception) -> str:
    """What torch.load's failure says about the file, without torch's advice to retry with
    ``weights_only=False`` (which would run the code a tampered file holds)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if any("weights_only" in line or "Weights only load failed" in line for line in lines):
        found = [line.split("error:", 1)[-1].strip() for line in lines if "GLOBAL" in line or "error:" in line]
        detail = found[0].split(". ")[0].rstrip(".") if found else "data that is not tensors and plain data"
        return f"refused by torch.load(weights_only=True): {detail}; a checkpoint never holds code"
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The periodic ``step_<n>.pt`` files in ``folder``, oldest first."""
    found = []
    for p in Path(folder).glob("step_*.pt"):
        number = p.stem.removeprefix("step_")
        if number.isdigit():
            found.append((int(number), p))
    return sorted(found)


def prune(folder: Path, keep: int, protect: Iterable[Path] = ()) -> list[Path]:
    """Delete the oldest ``step_<n>.pt`` files beyond the newest ``keep``; return what was deleted."""
    protected = {Path(p).resolve() for p in protect}
    files = step_checkpoints(folder)
    removed = []
    for _, p in files[: max(0, len(files) - keep)]:
        if p.resolve() not in protected:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
