"""Finding non-finite numbers (NaN, +inf, -inf): in tensors, numpy arrays and nested state.

A run stops on the first non-finite value it meets (docs/runs.md, "What stops a run"): the env boundary
checks what envs return (``agentkit.envcheck``), the trainer checks the weights after each iteration and
everything it is about to save. These helpers find the value and say where it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when every floating-point element of ``tensors`` is finite.

    One fused norm per dtype instead of one check per tensor (what makes it cheap enough to run every
    iteration). A huge but finite tensor can overflow the norm: when the norm is not finite, each tensor is
    checked on its own before answering False.
    """
    floats = [t.detach() for t in tensors if t.is_floating_point() and t.numel()]
    if not floats:
        return True
    norms = torch._foreach_norm(floats)
    if bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in floats)


def first_non_finite(obj: Any, path: str = "") -> tuple[str, float] | None:
    """``(where, value)`` of the first non-finite number in ``obj``, or None when there is none.

    ``obj`` may be a tensor, a numpy array, a float or nested dicts, lists and tuples of them; ``where`` is
    the dotted path with the element index, e.g. ``actor.trunk.0.weight[3, 1]``. Integer and bool data are
    finite by nature and skipped.
    """
    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point() or bool(torch.isfinite(obj).all()):
            return None
        bad = (~torch.isfinite(obj.detach())).nonzero()[0].tolist()
        return _indexed(path, bad), float(obj.detach()[tuple(bad)] if bad else obj.detach())
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "fc" or bool(np.isfinite(obj).all()):
            return None
        bad = [int(i) for i in np.argwhere(~np.isfinite(obj))[0]]
        return _indexed(path, bad), float(obj[tuple(bad)].real)
    if isinstance(obj, float | np.floating):
        return None if math.isfinite(obj) else (path or "value", float(obj))
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            found = first_non_finite(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            found = first_non_finite(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _indexed(path: str, index: list[int]) -> str:
    return f"{path}[{', '.join(map(str, index))}]" if index else path
