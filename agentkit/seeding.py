"""Seeding and RNG state: the trainer's alone.

The trainer seeds Python, numpy and torch once per session (``seed_everything``), before anything is built,
and saves and restores their global RNG states with each checkpoint (``rng_state``/``set_rng_state``).
Algorithms never touch the global RNGs' seeds or states: what they own (a ``torch.Generator`` for minibatch
order, an env's reset seed) is part of their own ``state_dict``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch


def seed_everything(seed: int, torch_threads: int | None = None) -> None:
    """Seed python, numpy and torch's global RNGs; set torch's intra-op thread count."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch global RNG states as plain data and tensors (loadable with
    ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


def resume_seed(seed: int, steps_done: int) -> int:
    """The reset seed of a run's training envs when it resumes at ``steps_done`` (env episodes are not
    checkpointed, so the envs start afresh; the seed depends on both, so two seeds resumed at the same step
    play different episodes, and resuming the same checkpoint twice plays the same ones)."""
    return (seed + 1_000_003 * steps_done) % 2**31
