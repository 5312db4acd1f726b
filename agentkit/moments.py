"""Running moments: the one mean/variance update every normaliser uses.

The observation normaliser (``agentkit.policy.ObsNormalizer``), the value normaliser and the reward scaler
(``agentkit.onpolicy``) each keep a running ``(mean, var, count)`` and fold in one batch at a time with
the parallel-variance formula of Chan et al. (the one SB3's ``RunningMeanStd`` uses).
"""

from __future__ import annotations

from typing import TypeVar

from torch import Tensor

T = TypeVar("T", Tensor, float)


def merge_moments(mean: T, var: T, count: T, batch_mean: T, batch_var: T, batch_count: int) -> tuple[T, T, T]:
    """``(mean, var, count)`` of the running stats with a batch of ``batch_count`` values whose mean and
    (population) variance are ``batch_mean`` and ``batch_var`` folded in. Tensors (any shape, broadcast
    elementwise) or floats; nothing is changed in place."""
    delta = batch_mean - mean
    total = count + batch_count
    new_mean = mean + delta * batch_count / total
    new_var = (var * count + batch_var * batch_count + delta * delta * count * batch_count / total) / total
    return new_mean, new_var, total
