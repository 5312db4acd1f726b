"""Policy assembly: observation normaliser, MLP trunks, actor (trunk + any action head) and critic.

The actor never branches on the head it holds: it normalises, encodes, and hands the latent (and mask) to
the head. Observation normalisation lives in the actor as buffers, so checkpoints and exports carry it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from agentkit.config import PolicyConfig
from agentkit.heads import ActionDistribution, ActionHead
from agentkit.moments import merge_moments

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with ``gain``, constant bias (√2 hidden, 0.01 policy output, 1.0 value output)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_dim: int, hidden_sizes: list[int], activation: str) -> nn.Sequential:
    """Hidden layers only; the output layer belongs to the head or the value output."""
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [layer_init(nn.Linear(in_dim, width)), ACTIVATIONS[activation]()]
        in_dim = width
    return nn.Sequential(*layers)


class ObsNormalizer(nn.Module):
    """Running mean/std of observations (parallel-variance update), applied with clipping.

    Stats are buffers: saved in checkpoints, traced into the ONNX graph. ``update`` is called by the
    algorithm on collected observations; ``forward`` only reads the stats. Disabled, it is the identity.
    """

    mean: Tensor  # buffers (register_buffer)
    var: Tensor
    count: Tensor

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, enabled: bool = True, eps: float = 1e-8):
        super().__init__()
        self.enabled = enabled
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: Tensor) -> None:
        if not self.enabled:
            return
        batch = batch.reshape(-1, *self.mean.shape).double()
        mean, var, count = merge_moments(self.mean, self.var, self.count, batch.mean(0),
                                         batch.var(0, unbiased=False), batch.shape[0])
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(count)

    def forward(self, obs: Tensor) -> Tensor:
        if not self.enabled:
            return obs
        mean, std = self.mean.to(obs.dtype), torch.sqrt(self.var + self.eps).to(obs.dtype)
        return torch.clamp((obs - mean) / std, -self.clip, self.clip)


class Actor(nn.Module):
    """obs (raw) → normaliser → trunk → head → ActionDistribution."""

    def __init__(self, obs_dim: int, head_factory, config: PolicyConfig, normalizer: ObsNormalizer | None = None):
        super().__init__()
        self.normalizer = normalizer or ObsNormalizer((obs_dim,), config.obs_clip, config.normalize_obs)
        self.trunk = mlp(obs_dim, config.hidden_sizes, config.activation)
        latent_dim = config.hidden_sizes[-1] if config.hidden_sizes else obs_dim
        self.head: ActionHead = head_factory(latent_dim)

    def latent(self, obs: Tensor) -> Tensor:
        return self.trunk(self.normalizer(obs))

    def forward(self, obs: Tensor, mask: Tensor | None = None) -> ActionDistribution:
        return self.head(self.latent(obs), mask)


class Critic(nn.Module):
    """input (raw obs or global state) → normaliser → trunk → scalar value ``[B]``.

    With ``shared_trunk`` it reuses an actor's normaliser and trunk instead of owning its own.
    """

    def __init__(self, in_dim: int, config: PolicyConfig, share_with: Actor | None = None):
        super().__init__()
        if share_with is not None:
            self.normalizer, self.trunk = share_with.normalizer, share_with.trunk
        else:
            self.normalizer = ObsNormalizer((in_dim,), config.obs_clip, config.normalize_obs)
            self.trunk = mlp(in_dim, config.hidden_sizes, config.activation)
        latent_dim = config.hidden_sizes[-1] if config.hidden_sizes else in_dim
        self.value_out = layer_init(nn.Linear(latent_dim, 1), gain=1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.value_out(self.trunk(self.normalizer(x))).squeeze(-1)


def resolve_head(policy_config: PolicyConfig, registry, action_space):
    """The head registration and config for ``policy.head`` (``auto`` asks the registry)."""
    if policy_config.head == "auto":
        reg = registry.auto_head(action_space)
        return reg, reg.default_config()
    return registry.get("action_head", policy_config.head.plugin, where="policy.head.plugin"), policy_config.head


def build_actor(policy_config: PolicyConfig, registry, observation_space, action_space, extra_obs_dim: int = 0) -> Actor:
    """The actor for a flat Box observation space (plus ``extra_obs_dim`` inputs, e.g. a one-hot agent id)."""
    reg, head_config = resolve_head(policy_config, registry, action_space)
    obs_dim = int(math.prod(observation_space.shape)) + extra_obs_dim
    return Actor(obs_dim, lambda latent_dim: reg.factory(head_config, action_space, latent_dim), policy_config)
