"""The action-head contract, and the one mask pipeline every head shares.

An action head is an ``nn.Module`` built by its plugin's factory from ``(config, action_space, latent_dim)``.
It owns its output layers. Called with a latent ``[B, latent_dim]`` (and a mask ``[B, mask_dim]`` when
``mask_dim > 0``) it returns an ``ActionDistribution``. The policy never looks at which head it holds.

Actions travel through training as one *raw* tensor per step (``head.action_shape``/``head.action_dtype``):
Discrete int64 ``[B]``; MultiDiscrete int64 ``[B, branches]``; Box float32 ``[B, D]`` unclipped;
hybrid float32 ``[B, 1 + P]`` = (type, parameters with inactive ones 0). Only ``env_outputs`` maps a raw
action to env units (clipping, squashing, splitting) — it is the env boundary. ``head.choose(dist)`` picks
actions and maps them in one call; the PPO and MAPPO rollouts, ``agentkit eval`` and the ONNX graph all
act through it, so the trainer and the exported file act identically.

Deterministic policy gradients (MADDPG) need two more things of a head, and every built-in head offers them:

* ``head.encode(raw)`` — the action as a centralised critic reads it, a float vector ``[B, encoding_dim]``:
  one one-hot block per categorical choice, continuous dims in ``[-1, 1]`` of their bounds (as they are where
  unbounded), a hybrid's inactive parameters 0;
* ``head.relax(dist, ...)`` — a ``RelaxedAction``: the same encoding, *differentiable* with respect to the
  distribution's parameters (a straight-through Gumbel-softmax for categorical choices, ``gumbel_softmax_st``;
  the bounded continuous value for continuous ones), with the raw action it stands for and the parameters it
  came from. Greedy (``explore=False``, no noise) it is the mode: ``env_outputs(relax(dist).raw)`` equals
  ``env_outputs(dist.mode())``, so eval and the exported graph act as the trained deterministic actor.

Masks: bool or 0/1 floats, True/1 = allowed. A masked logit becomes ``MASKED_LOGIT`` (large, negative,
finite: gradients stay finite). A row with nothing allowed raises ``EmptyMaskError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agentkit.errors import EmptyMaskError

MASKED_LOGIT = -1e8


def as_bool_mask(mask: Tensor) -> Tensor:
    """Bool view of a mask given as bool or 0/1 numbers (1 = allowed)."""
    return mask if mask.dtype == torch.bool else mask > 0.5


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def check_mask_rows(mask: Tensor, what: str = "action mask") -> None:
    """Raise EmptyMaskError if any row of a ``[B, n]`` bool mask allows nothing (skipped while exporting)."""
    if _exporting():
        return
    empty = ~mask.any(dim=-1)
    if bool(empty.any()):
        rows = torch.nonzero(empty.reshape(-1)).flatten().tolist()
        raise EmptyMaskError(
            f"{what}: row(s) {rows[:10]} allow no action at all. Every step needs at least one allowed action; "
            "check the env's action_mask.",
            rows=rows,
        )


def masked_logits(logits: Tensor, mask: Tensor | None, what: str = "action mask") -> Tensor:
    """Logits with disallowed entries set to MASKED_LOGIT (never -inf). ``mask`` is ``[B, n]`` or None."""
    if mask is None:
        return logits
    mask = as_bool_mask(mask)
    if mask.shape != logits.shape:
        raise EmptyMaskError(f"{what} has shape {tuple(mask.shape)}, expected {tuple(logits.shape)}")
    check_mask_rows(mask, what)
    return torch.where(mask, logits, torch.full_like(logits, MASKED_LOGIT))


def gumbel_softmax_st(
    logits: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    noise: bool = True,
) -> tuple[Tensor, Tensor]:
    """Straight-through Gumbel-softmax over the last axis, respecting ``mask`` (True/1 = allowed; logits that are
    already masked need none).

    Returns ``(one_hot, index)``: ``one_hot`` has the value of the hard one-hot of ``argmax(masked_logits + g)``
    and the gradient of ``softmax((masked_logits + g) / temperature)``. Masked entries are never chosen and
    their logits get exactly zero gradient. ``noise=False`` drops the Gumbel noise (the greedy choice, the
    mode, with the same gradient path).
    """
    logits = masked_logits(logits, mask)
    if noise:
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        logits = logits - torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    y_soft = torch.softmax(logits / temperature, dim=-1)
    index = logits.argmax(dim=-1)
    y_hard = torch.nn.functional.one_hot(index, logits.shape[-1]).to(y_soft.dtype)
    return y_hard - y_soft.detach() + y_soft, index


@dataclass
class RelaxedAction:
    """What ``ActionHead.relax`` returns for a batch.

    Attributes:
        encoding: ``[B, encoding_dim]``, the value of ``head.encode(raw)``, differentiable with respect to the
            distribution's parameters (what a deterministic policy gradient flows through).
        raw: the raw action ``[B, *action_shape]`` it stands for (no gradient): ``env_outputs(raw)`` is what
            the env gets.
        params: ``[B, k]``, the distribution parameters the action came from (logits of allowed choices, means;
            masked logits 0), for an action regulariser such as MADDPG's ``action_reg``.
    """

    encoding: Tensor
    raw: Tensor
    params: Tensor


class ActionDistribution(ABC):
    """What a head returns: a batch of action distributions.

    Every method works on the raw action tensor (see the module docstring). ``log_prob`` and ``entropy``
    return ``[B]``: multi-part heads sum over their parts and over action dims.
    """

    @abstractmethod
    def sample(self) -> Tensor:
        """A random raw action ``[B, *action_shape]`` (masked actions are never drawn)."""

    @abstractmethod
    def mode(self) -> Tensor:
        """The deterministic action: the most likely allowed one; the mean for Gaussians."""

    @abstractmethod
    def log_prob(self, action: Tensor) -> Tensor:
        """Log-probability ``[B]`` of raw actions."""

    @abstractmethod
    def entropy(self) -> Tensor:
        """Entropy ``[B]`` (masked actions contribute nothing)."""

    @abstractmethod
    def sample_from_noise(self, noise: Tensor) -> Tensor:
        """A sample computed from uniform(0, 1) ``noise [B, head.noise_dim]`` with ONNX-exportable ops.

        The same noise gives the same action; this is what a stochastic ONNX export runs.
        """


class ActionHead(nn.Module, ABC):
    """Base class of action heads. Subclasses set the attributes below in ``__init__``.

    Attributes:
        action_space: the env's action space this head serves.
        mask_dim: width of the mask this head takes (0 when it takes none).
        noise_dim: number of uniform(0, 1) numbers ``sample_from_noise`` consumes per row.
        action_shape: per-step shape of the raw action tensor; ``action_dtype`` its dtype.
        output_names: the names ``env_outputs`` returns (and the ONNX outputs).
        encoding_dim: width of ``encode(raw)`` (0: the head offers no encoding, and no ``relax``).
    """

    action_space: Any
    mask_dim: int = 0
    noise_dim: int = 0
    action_shape: tuple[int, ...] = ()
    action_dtype: torch.dtype = torch.int64
    output_names: tuple[str, ...] = ("action",)
    encoding_dim: int = 0

    @abstractmethod
    def forward(self, latent: Tensor, mask: Tensor | None = None) -> ActionDistribution:
        """The action distribution for a batch of latents (and masks, ``[B, mask_dim]``)."""

    @abstractmethod
    def env_outputs(self, action: Tensor) -> dict[str, Tensor]:
        """Raw actions → named tensors in env units (the env boundary)."""

    def choose(
        self, dist: ActionDistribution, *, deterministic: bool = False, noise: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Pick actions from ``dist`` and map them to the env: ``(raw action, env outputs)``.

        ``deterministic`` picks ``dist.mode()`` (any ``noise`` is then unused); otherwise ``noise``
        (uniform(0, 1) ``[B, noise_dim]``) picks ``dist.sample_from_noise(noise)``; neither draws
        ``dist.sample()``. This is what the rollout, eval and the exported graph run. A head may override it
        to compute the outputs from the parts the action is made of (cheaper in an engine than parsing the
        raw tensor back) but must return exactly ``(raw, self.env_outputs(raw))``;
        ``agentkit.testing.check_action_head`` verifies that.
        """
        if deterministic:
            raw = dist.mode()
        elif noise is not None:
            raw = dist.sample_from_noise(noise)
        else:
            raw = dist.sample()
        return raw, self.env_outputs(raw)

    def encode(self, action: Tensor) -> Tensor:
        """Raw actions → the float encoding ``[B, encoding_dim]`` a centralised critic reads (no gradient):
        a one-hot block per categorical choice, continuous dims in ``[-1, 1]`` of their bounds."""
        raise NotImplementedError(self._no_relaxation())

    def relax(
        self,
        dist: ActionDistribution,
        *,
        explore: bool = False,
        temperature: float = 1.0,
        noise_std: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> RelaxedAction:
        """A differentiable action of ``dist`` for deterministic policy gradients (see the module docstring).

        ``explore`` samples the categorical choices (straight-through Gumbel-softmax at ``temperature``; else
        greedy); ``noise_std`` adds Gaussian noise to the continuous dims in encoding units (then bounds them).
        ``relax(dist).encoding`` equals ``encode(relax(dist).raw)``; greedy and without noise its env outputs
        are those of ``dist.mode()``. ``agentkit.testing.check_action_head`` verifies both.
        """
        raise NotImplementedError(self._no_relaxation())

    def _no_relaxation(self) -> str:
        return (f"the action head {type(self).__name__} offers no relaxed action (encoding_dim 0): deterministic "
                "policy gradients (maddpg) need head.encode and head.relax; see docs/heads.md")

    @abstractmethod
    def to_env(self, outputs: dict[str, np.ndarray]) -> Any:
        """``env_outputs`` as numpy → the batched action a gymnasium vector env takes."""

    @abstractmethod
    def action_spec(self) -> dict[str, Any]:
        """JSON-ready description of the action (kind, sizes, bounds, hybrid mapping) for metadata."""

    def set_progress(self, fraction: float) -> None:  # noqa: B027 - optional hook, no-op by default
        """Told the fraction of the training budget spent (0..1), for schedules such as a decaying sigma."""
