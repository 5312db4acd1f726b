"""An action-head plugin: ``epsilon_discrete``, a Discrete head that never stops exploring.

Its distribution is the mixture ``(1 - epsilon) * softmax(logits) + epsilon * uniform(allowed actions)``:
every allowed action keeps at least ``epsilon / n_allowed`` of probability, masked actions have none. It is
written only against agentkit's public head contract (``agentkit.heads``), the way any third-party head is:

- ``forward(latent, mask)`` returns the distribution (``sample``, ``mode``, ``log_prob``, ``entropy``, and
  ``sample_from_noise`` for stochastic ONNX exports, as an inverse CDF);
- ``env_outputs``/``to_env``/``action_spec`` are the env boundary and the ONNX metadata (an ``action`` int64
  ``[B]``, described as ``kind: discrete`` so every runtime reads it);
- ``encode``/``relax`` give the action as a centralised critic reads it (a one-hot) and a differentiable
  version of it (a straight-through Gumbel-softmax over the mixture's log-probabilities, which samples the
  mixture exactly), so ``maddpg`` trains it as it trains the built-in heads.

Use it with ``policy: {head: {plugin: epsilon_discrete, epsilon: 0.05}}``; ``policy.head: auto`` never picks
it (its config declares no ``supports``). ``agentkit.testing.check_action_head`` passes it (tests/).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pydantic import Field
from torch import Tensor, nn

import agentkit
from agentkit.config import HeadConfig
from agentkit.errors import ConfigError
from agentkit.heads import (
    MASKED_LOGIT,
    ActionDistribution,
    ActionHead,
    RelaxedAction,
    as_bool_mask,
    gumbel_softmax_st,
    masked_logits,
)
from agentkit.policy import layer_init


class EpsilonDiscreteConfig(HeadConfig):
    """The ``policy.head`` section: ``{plugin: epsilon_discrete, epsilon: 0.05}``."""

    epsilon: float = Field(0.05, ge=0.0, lt=1.0, description="Probability spread uniformly over the allowed actions.")


class EpsilonDiscreteDistribution(ActionDistribution):
    """The mixture, held as its log-probabilities ``logits [B, n]`` (``MASKED_LOGIT`` where masked)."""

    def __init__(self, logits: Tensor, allowed: Tensor):
        self.logits = logits
        self.allowed = allowed
        self.probs = torch.where(allowed, torch.exp(logits), 0.0)

    def log_prob(self, action: Tensor) -> Tensor:
        return self.logits.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        return -torch.where(self.allowed, self.probs * self.logits, 0.0).sum(-1)

    def mode(self) -> Tensor:
        return torch.argmax(self.logits, dim=-1)

    def sample_from_noise(self, noise: Tensor) -> Tensor:
        # inverse CDF: the first action whose CDF reaches u (a masked action's step is 0, so never it)
        cdf = torch.cumsum(self.probs, dim=-1)
        target = torch.clamp(noise[:, 0], 1e-12, 1.0).unsqueeze(-1) * cdf[:, -1:]
        return torch.clamp((cdf < target).to(torch.int64).sum(-1), max=int(self.logits.shape[-1]) - 1)

    def sample(self) -> Tensor:
        return self.sample_from_noise(torch.rand(self.logits.shape[0], 1, device=self.logits.device))


class EpsilonDiscreteHead(ActionHead):
    """Linear(latent → n) logits (orthogonal, gain 0.01), mixed with the uniform over allowed actions."""

    def __init__(self, config: EpsilonDiscreteConfig, action_space: spaces.Discrete, latent_dim: int):
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
        self.out = layer_init(nn.Linear(latent_dim, self.n), gain=0.01)
        self.register_buffer("start", torch.tensor(int(action_space.start), dtype=torch.int64), persistent=False)

    def forward(self, latent: Tensor, mask: Tensor | None = None) -> EpsilonDiscreteDistribution:
        logits = self.out(latent)
        allowed = torch.ones_like(logits, dtype=torch.bool) if mask is None else as_bool_mask(mask)
        soft = torch.softmax(masked_logits(logits, None if mask is None else allowed, "epsilon_discrete mask"), -1)
        uniform = allowed.to(soft.dtype) / allowed.sum(-1, keepdim=True).clamp_min(1).to(soft.dtype)
        probs = (1.0 - self.config.epsilon) * soft + self.config.epsilon * uniform
        log_probs = torch.where(allowed, torch.log(probs.clamp_min(1e-30)), MASKED_LOGIT)
        return EpsilonDiscreteDistribution(log_probs, allowed)

    def env_outputs(self, action: Tensor) -> dict[str, Tensor]:
        return {"action": action.to(torch.int64) + self.start}

    def to_env(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(outputs["action"], dtype=np.int64)

    def encode(self, action: Tensor) -> Tensor:
        return nn.functional.one_hot(action.long(), self.n).float()

    def relax(self, dist: EpsilonDiscreteDistribution, *, explore: bool = False, temperature: float = 1.0,
              noise_std: float = 0.0, generator: torch.Generator | None = None) -> RelaxedAction:
        one_hot, index = gumbel_softmax_st(dist.logits, None, temperature, generator, noise=explore)
        return RelaxedAction(one_hot, index, torch.where(dist.allowed, dist.logits, 0.0))

    def action_spec(self) -> dict[str, Any]:
        return {"kind": "discrete", "n": self.n, "start": int(self.action_space.start), "mask_dim": self.mask_dim,
                "noise_dim": self.noise_dim, "epsilon": self.config.epsilon}


def make_epsilon_discrete_head(config: EpsilonDiscreteConfig, action_space: Any, latent_dim: int) -> EpsilonDiscreteHead:
    if not isinstance(action_space, spaces.Discrete):
        raise ConfigError(
            f"policy.head: the 'epsilon_discrete' head needs a Discrete action space, but the env's is {action_space}. "
            "Use policy.head: auto, or a head for that space."
        )
    return EpsilonDiscreteHead(config, action_space, latent_dim)


@agentkit.hookimpl
def agentkit_register_action_heads(register):
    register(
        "epsilon_discrete",
        make_epsilon_discrete_head,
        EpsilonDiscreteConfig,
        "Discrete actions that keep exploring: (1 - epsilon) softmax + epsilon uniform over the allowed actions.",
    )
