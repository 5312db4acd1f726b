"""The ``discrete`` action head: one masked Categorical over a gymnasium ``Discrete(n, start)`` space.

Raw action: int64 ``[B]``, the index 0..n-1. Env output ``action`` = index + ``start`` (int64 ``[B]``).
Mask: ``[B, n]``, True/1 = allowed (optional: None allows everything). ``noise_dim`` = 1 (inverse CDF).
Encoding (``encode``/``relax``, for MADDPG's critic): the one-hot ``[B, n]``; relaxed, a straight-through
Gumbel-softmax over the masked logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

import agentkit
from agentkit.config import HeadConfig
from agentkit.heads import (
    ActionDistribution,
    ActionHead,
    RelaxedAction,
    as_bool_mask,
    gumbel_softmax_st,
    masked_logits,
)
from agentkit.policy import layer_init

from ._categorical import MaskedCategorical
from ._common import require_space


class DiscreteConfig(HeadConfig):
    """Options of the ``discrete`` head (none besides ``plugin``: the layer size comes from the space)."""

    @classmethod
    def supports(cls, action_space: Any) -> bool:
        return isinstance(action_space, spaces.Discrete)


class DiscreteDistribution(ActionDistribution):
    """A batch of masked Categoricals. ``logits`` are the masked logits ``[B, n]``."""

    def __init__(self, logits: Tensor, mask: Tensor | None):
        self.cat = MaskedCategorical(logits, mask)
        self.logits = logits
        self.mask = mask

    def sample(self) -> Tensor:
        return self.cat.sample()

    def mode(self) -> Tensor:
        return self.cat.mode()

    def log_prob(self, action: Tensor) -> Tensor:
        return self.cat.log_prob(action)

    def entropy(self) -> Tensor:
        return self.cat.entropy()

    def sample_from_noise(self, noise: Tensor) -> Tensor:
        return self.cat.from_noise(noise[:, 0])


class DiscreteHead(ActionHead):
    """Linear(latent → n) logits (orthogonal init, gain 0.01) → masked Categorical."""

    def __init__(self, config: DiscreteConfig, action_space: spaces.Discrete, latent_dim: int):
        super().__init__()
        self.config = config
        self.action_space = action_space
        self.n = int(action_space.n)
        self.mask_dim = self.n
        self.noise_dim = 1
        self.action_shape = ()
        self.action_dtype = torch.int64
        self.output_names = ("action",)
        self.encoding_dim = self.n
        self.logits = layer_init(nn.Linear(latent_dim, self.n), gain=0.01)
        self.register_buffer(
            "start", torch.tensor(int(action_space.start), dtype=torch.int64), persistent=False
        )

    def forward(self, latent: Tensor, mask: Tensor | None = None) -> DiscreteDistribution:
        logits = self.logits(latent)
        if mask is not None:
            mask = as_bool_mask(mask)
            logits = masked_logits(logits, mask, what=f"discrete action mask [B, {self.n}]")
        return DiscreteDistribution(logits, mask)

    def env_outputs(self, action: Tensor) -> dict[str, Tensor]:
        return {"action": (action if action.dtype == torch.int64 else action.to(torch.int64)) + self.start}

    def encode(self, action: Tensor) -> Tensor:
        return nn.functional.one_hot(action.long(), self.n).float()

    def relax(self, dist: DiscreteDistribution, *, explore: bool = False, temperature: float = 1.0,
              noise_std: float = 0.0, generator: torch.Generator | None = None) -> RelaxedAction:
        one_hot, index = gumbel_softmax_st(dist.logits, None, temperature, generator, noise=explore)
        allowed = dist.logits if dist.mask is None else torch.where(dist.mask, dist.logits, 0.0)
        return RelaxedAction(one_hot, index, allowed)

    def to_env(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(outputs["action"], dtype=np.int64)

    def action_spec(self) -> dict[str, Any]:
        return {
            "kind": "discrete",
            "n": self.n,
            "start": int(self.action_space.start),
            "mask_dim": self.mask_dim,
            "noise_dim": self.noise_dim,
        }


def make_discrete_head(config: DiscreteConfig, action_space: Any, latent_dim: int) -> DiscreteHead:
    require_space(action_space, spaces.Discrete, "discrete")
    return DiscreteHead(config, action_space, latent_dim)


@agentkit.hookimpl
def agentkit_register_action_heads(register):
    register(
        "discrete",
        make_discrete_head,
        DiscreteConfig,
        "Masked Categorical over a Discrete action space (mask [B, n], True = allowed).",
    )
