"""The ``hybrid`` action head: a parameterised action over an ``agentkit.spaces.HybridSpace``.

A masked Categorical picks the type k of K; a Gaussian sub-head (any sigma type, the ``gaussian`` module's
pieces) gives the P continuous parameters, of which only k's own are active.

Raw action: float32 ``[B, 1 + P]`` = (k as a float, the raw parameter sample with inactive ones 0).
Env outputs: ``action_type`` int64 ``[B]`` and ``action_params`` float32 ``[B, P]``, clipped (or
tanh-squashed) into the bounds, inactive exactly 0. Mask: the type mask ``[B, K]``.
Encoding (for MADDPG's critic): the type's one-hot ``[B, K]``, then the P parameters as the ``gaussian`` head
encodes them (units of their bounds), inactive ones 0. Relaxed: a straight-through Gumbel-softmax picks the
type, the parameters are the bounded means, multiplied by the chosen type's (constant, 0/1) ownership row,
so inactive ones are 0 and get no gradient.

``choose`` (the rollout, eval and the ONNX graph) maps the parts an action is made of — the int64 type and
the parameter sample — straight to the env outputs; ``env_outputs`` parses a stored raw action back into
those parts. Both give identical outputs (the type round-trips exactly through float32, and the inactive
parameters are zeroed after bounding either way); going from the parts keeps the float round trip and a
second masking out of the exported graph, which would cost kernels on every call in an engine.

    log p(k, x) = log p(k) + Σ_{p ∈ params(k)} log N(x_p)
    H           = H(type) + Σ_k p(k) Σ_{p ∈ params(k)} H(N_p)

The entropy is exact: it is the joint entropy H(K, X_K) = H(K) + E_k[H(X_K | K = k)] of the action that is
actually taken, so masked types (p = 0) and parameters no reachable type owns add nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import agentkit
from agentkit.errors import ConfigError
from agentkit.heads import (
    ActionDistribution,
    ActionHead,
    RelaxedAction,
    as_bool_mask,
    gumbel_softmax_st,
    masked_logits,
)
from agentkit.policy import layer_init
from agentkit.spaces import HybridSpace

from ._categorical import MaskedCategorical
from .gaussian import (
    BoundedOutput,
    GaussianOptions,
    GaussianParams,
    bounds_json,
    box_muller,
    normal_entropy,
    normal_log_prob,
)


class HybridConfig(GaussianOptions):
    """Options of the ``hybrid`` head: the Gaussian options, applied to the parameter sub-head."""

    @classmethod
    def supports(cls, action_space: Any) -> bool:
        return isinstance(action_space, HybridSpace)


class HybridDistribution(ActionDistribution):
    """Masked type Categorical ``[B, K]`` × diagonal Gaussian parameters ``[B, P]`` (only k's active)."""

    def __init__(
        self, type_logits: Tensor, type_mask: Tensor | None, mean: Tensor, log_std: Tensor, head: HybridHead
    ):
        self.cat = MaskedCategorical(type_logits, type_mask)
        self.type_logits = type_logits
        self.mask = type_mask
        self.mean = mean
        self.log_std = log_std
        self.std = torch.exp(log_std)
        self.head = head

    def parts(self, deterministic: bool = False, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The type ``[B]`` (int64) and parameter sample ``[B, P]`` (all P) of a mode, a sample from uniform
        ``noise [B, noise_dim]``, or (neither given) a random sample."""
        if deterministic:
            return self.cat.mode(), self.mean
        if noise is not None:
            return self.cat.from_noise(noise[:, 0]), self.mean + self.std * box_muller(noise[:, 1:])
        with torch.no_grad():
            return self.cat.sample(), self.mean + self.std * torch.randn_like(self.mean)

    def join(self, k: Tensor, params: Tensor) -> Tensor:
        """The raw action ``[B, 1 + P]`` of type ``k`` and parameters ``params`` (inactive ones 0)."""
        own_params = torch.where(self.head.active(k), params, 0.0)
        return torch.cat([k.to(params.dtype).unsqueeze(-1), own_params], dim=-1)

    def sample(self) -> Tensor:
        return self.join(*self.parts())

    def mode(self) -> Tensor:
        return self.join(*self.parts(deterministic=True))

    def log_prob(self, action: Tensor) -> Tensor:
        k = self.head.split_type(action)
        x = action[:, 1:]
        per_param = normal_log_prob(x, self.mean, self.log_std) - self.head.output.log_det(x)
        # where (not a product): an inactive parameter's term and its gradient are exactly zero
        per_param = torch.where(self.head.active(k), per_param, torch.zeros_like(per_param))
        return self.cat.log_prob(k) + per_param.sum(-1)

    def entropy(self) -> Tensor:
        reach = self.cat.probs @ self.head.param_mask  # [B, P]: probability that each parameter is active
        return self.cat.entropy() + (reach * normal_entropy(self.log_std)).sum(-1)

    def sample_from_noise(self, noise: Tensor) -> Tensor:
        return self.join(*self.parts(noise=noise))


class HybridHead(ActionHead):
    """Type logits Linear(latent → K) (gain 0.01) + a Gaussian parameter sub-head over P dims."""

    def __init__(self, config: HybridConfig, action_space: HybridSpace, latent_dim: int):
        super().__init__()
        self.config = config
        self.action_space = action_space
        self.num_types, self.num_params = action_space.num_types, action_space.num_params
        self.mask_dim = self.num_types
        self.noise_dim = 1 + 2 * self.num_params
        self.action_shape = (1 + self.num_params,)
        self.action_dtype = torch.float32
        self.output_names = ("action_type", "action_params")
        self.encoding_dim = self.num_types + self.num_params
        self.type_logits = layer_init(nn.Linear(latent_dim, self.num_types), gain=0.01)
        self.params = GaussianParams(config, self.num_params, latent_dim)
        self.output = BoundedOutput(action_space.low, action_space.high, config.squash, f"the {action_space}")
        self.register_buffer("param_mask", torch.as_tensor(action_space.param_mask), persistent=False)
        self.register_buffer("param_active", self.param_mask > 0.5, persistent=False)

    def active(self, k: Tensor) -> Tensor:
        """Bool ``[B, P]``: the parameters type ``k [B]`` owns (one Gather of a bool table when exported)."""
        return self.param_active.index_select(0, k)

    def split_type(self, action: Tensor) -> Tensor:
        """The type index ``[B]`` (int64) of raw actions ``[B, 1 + P]``."""
        return torch.clamp(torch.round(action[:, 0]), 0, self.num_types - 1).to(torch.int64)

    def forward(self, latent: Tensor, mask: Tensor | None = None) -> HybridDistribution:
        logits = self.type_logits(latent)
        if mask is not None:
            mask = as_bool_mask(mask)
            logits = masked_logits(logits, mask, what=f"hybrid action-type mask [B, {self.num_types}]")
        mean, log_std = self.params(latent)
        return HybridDistribution(logits, mask, mean, log_std, self)

    def env_outputs(self, action: Tensor) -> dict[str, Tensor]:
        return self._outputs(self.split_type(action), action[:, 1:].to(torch.float32))

    def choose(
        self, dist: HybridDistribution, *, deterministic: bool = False, noise: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        k, params = dist.parts(deterministic, noise)
        return dist.join(k, params), self._outputs(k, params)

    def _outputs(self, k: Tensor, params: Tensor) -> dict[str, Tensor]:
        # inactive parameters: exactly 0 whatever the bounds (clipping or squashing 0 need not give 0)
        return {"action_type": k, "action_params": torch.where(self.active(k), self.output(params), 0.0)}

    def encode(self, action: Tensor) -> Tensor:
        k = self.split_type(action)
        units = self.output.to_unit(action[:, 1:].to(torch.float32)).detach()
        return torch.cat([nn.functional.one_hot(k, self.num_types).float(), units * self.param_mask[k]], dim=-1)

    def relax(self, dist: HybridDistribution, *, explore: bool = False, temperature: float = 1.0,
              noise_std: float = 0.0, generator: torch.Generator | None = None) -> RelaxedAction:
        one_hot, k = gumbel_softmax_st(dist.type_logits, None, temperature, generator, noise=explore)
        unit, raw_params = self.output.relax(dist.mean, noise_std, generator)
        gate = self.param_mask[k]  # a constant 0/1 row: inactive parameters are 0 with no gradient
        allowed = dist.type_logits if dist.mask is None else torch.where(dist.mask, dist.type_logits, 0.0)
        return RelaxedAction(torch.cat([one_hot, unit * gate], dim=-1), dist.join(k, raw_params),
                             torch.cat([allowed, dist.mean], dim=-1))

    def to_env(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.asarray(outputs["action_type"], dtype=np.int64),
            np.asarray(outputs["action_params"], dtype=np.float32),
        )

    def action_spec(self) -> dict[str, Any]:
        return {
            "kind": "hybrid",
            **self.action_space.describe(),
            "type_names": list(self.action_space.type_names),
            "param_names": list(self.action_space.param_names),
            "num_types": self.num_types,
            "num_params": self.num_params,
            "low": bounds_json(self.action_space.low),
            "high": bounds_json(self.action_space.high),
            "squash": self.config.squash,
            "sigma": self.config.sigma,
            "mask_dim": self.mask_dim,
            "noise_dim": self.noise_dim,
        }

    def set_progress(self, fraction: float) -> None:
        self.params.set_progress(fraction)


def make_hybrid_head(config: HybridConfig, action_space: Any, latent_dim: int) -> HybridHead:
    if not isinstance(action_space, HybridSpace):
        raise ConfigError(
            f"policy.head: the 'hybrid' head needs an agentkit.spaces.HybridSpace action space, but the "
            f"env's action space is {action_space}. Declare the env's action space with "
            "HybridSpace(types=..., params=...)."
        )
    return HybridHead(config, action_space, latent_dim)


@agentkit.hookimpl
def agentkit_register_action_heads(register):
    register(
        "hybrid",
        make_hybrid_head,
        HybridConfig,
        "Parameterised actions (HybridSpace): masked type Categorical + Gaussian params of that type only.",
    )
