"""The ``gaussian`` action head: a diagonal Gaussian over a gymnasium ``Box``, and the Gaussian pieces the
hybrid head reuses (options model, mean/log-std layers, log-prob, entropy, Box–Muller, tanh squashing).

Raw action: float32 ``[B, D]`` (D = the Box's flattened size), the unclipped sample. Training stores and
learns from it; only ``env_outputs`` bounds it — clipped to the Box, or with ``squash: true``
tanh-squashed and rescaled into it. Log-prob and entropy are summed over the D dims. No mask.

Encoding (for MADDPG's critic): the bounded action in units of its bounds, ``[-1, 1]`` (a dim with an
infinite bound: its clipped value as it is). Relaxed, the deterministic action is the mean through the same
bounding: ``tanh`` with ``squash: true`` (the usual DDPG actor); with clipping the value is clipped and the
gradient passes the clip straight through (a clipped dim would otherwise get no gradient at all, and the
actor could never bring it back inside).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from pydantic import Field, model_validator
from torch import Tensor, nn

import agentkit
from agentkit.config import HeadConfig
from agentkit.errors import ConfigError, InvalidInputError
from agentkit.heads import ActionDistribution, ActionHead, RelaxedAction
from agentkit.policy import layer_init

from ._common import require_space

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
#: Smallest first uniform for Box–Muller (log(0) is -inf); caps |z| at about 7.4 sigma.
_BM_TINY = 1e-12


class GaussianOptions(HeadConfig):
    """The Gaussian options, shared by the ``gaussian`` head and the hybrid head's parameter sub-head."""

    sigma: Literal["fixed", "independent", "state_conditioned"] = Field(
        "independent",
        description="fixed: constant std (optionally decayed); independent: learned state-independent "
        "log-std (the PPO default); state_conditioned: log-std from a linear layer on the latent.",
    )
    init_std: float = Field(1.0, gt=0, description="Initial standard deviation (the constant one for fixed).")
    final_std: float | None = Field(
        None, gt=0, description="sigma: fixed only: std reached at the end of training (linear decay)."
    )
    log_std_min: float = Field(-5.0, description="Lower clamp of the log-std.")
    log_std_max: float = Field(2.0, description="Upper clamp of the log-std.")
    squash: bool = Field(
        False,
        description="tanh-squash the sample into the bounds (with log-det correction) instead of clipping.",
    )

    @model_validator(mode="after")
    def _check_ranges(self):
        if self.log_std_min >= self.log_std_max:
            raise ValueError(
                f"log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})"
            )
        for name in ("init_std", "final_std"):
            value = getattr(self, name)
            if value is not None and not self.log_std_min <= math.log(value) <= self.log_std_max:
                raise ValueError(
                    f"{name}={value} is outside exp(log_std_min)..exp(log_std_max) = "
                    f"{math.exp(self.log_std_min):.4g}..{math.exp(self.log_std_max):.4g}"
                )
        if self.final_std is not None and self.sigma != "fixed":
            raise ValueError("final_std (a decay schedule) needs sigma: fixed")
        return self


class GaussianConfig(GaussianOptions):
    """Options of the ``gaussian`` head."""

    @classmethod
    def supports(cls, action_space: Any) -> bool:
        return isinstance(action_space, spaces.Box) and np.issubdtype(action_space.dtype, np.floating)


# -- pieces (reused by the hybrid head) ------------------------------------------------------------------


class GaussianParams(nn.Module):
    """latent ``[B, L]`` → (mean ``[B, D]``, log_std ``[B, D]``) for any sigma type.

    The mean layer is orthogonal with gain 0.01. ``fixed`` keeps its log-std in a buffer (checkpointed,
    exported) that ``set_progress`` moves along the linear std decay.
    """

    def __init__(self, options: GaussianOptions, dims: int, latent_dim: int):
        super().__init__()
        self.sigma = options.sigma
        self.init_std, self.final_std = options.init_std, options.final_std
        self.log_std_min, self.log_std_max = options.log_std_min, options.log_std_max
        self.mean = layer_init(nn.Linear(latent_dim, dims), gain=0.01)
        init = math.log(options.init_std)
        if self.sigma == "fixed":
            self.register_buffer("log_std", torch.full((dims,), init))
        elif self.sigma == "independent":
            self.log_std = nn.Parameter(torch.full((dims,), init))
        else:
            self.log_std_layer = layer_init(nn.Linear(latent_dim, dims), gain=0.01, bias=init)

    def forward(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.mean(latent)
        if self.sigma == "state_conditioned":
            log_std = self.log_std_layer(latent)
        else:
            log_std = self.log_std.expand_as(mean)
        return mean, torch.clamp(log_std, self.log_std_min, self.log_std_max)

    def set_progress(self, fraction: float) -> None:
        if self.sigma == "fixed" and self.final_std is not None:
            fraction = min(max(float(fraction), 0.0), 1.0)
            std = self.init_std + (self.final_std - self.init_std) * fraction
            self.log_std.fill_(math.log(std))


def normal_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Elementwise log N(x; mean, exp(log_std))."""
    return -0.5 * ((x - mean) * torch.exp(-log_std)).square() - log_std - _LOG_SQRT_2PI


def normal_entropy(log_std: Tensor) -> Tensor:
    """Elementwise entropy of N(., exp(log_std))."""
    return 0.5 + _LOG_SQRT_2PI + log_std


def box_muller(noise: Tensor) -> Tensor:
    """Uniform(0, 1) ``noise [B, 2D]`` → standard normal ``[B, D]`` (ONNX-friendly: Log, Sqrt, Cos)."""
    dims = noise.shape[-1] // 2
    u1, u2 = noise[..., :dims], noise[..., dims:]
    return torch.sqrt(-2.0 * torch.log(torch.clamp(u1, _BM_TINY, 1.0))) * torch.cos(2.0 * math.pi * u2)


def squash_log_det(x: Tensor, half_range: Tensor) -> Tensor:
    """Elementwise log |d/dx (low + (tanh(x) + 1) * half_range)|, written to stay finite for large |x|."""
    return 2.0 * (math.log(2.0) - x - nn.functional.softplus(-2.0 * x)) + torch.log(half_range)


class BoundedOutput(nn.Module):
    """Raw Gaussian sample → env units: clipped to [low, high], or tanh-squashed into them (``squash``)."""

    def __init__(self, low: np.ndarray, high: np.ndarray, squash: bool, what: str):
        super().__init__()
        low = np.asarray(low, dtype=np.float32).reshape(-1)
        high = np.asarray(high, dtype=np.float32).reshape(-1)
        self.squash = squash
        if squash and not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ConfigError(
                f"policy.head.squash: true needs finite bounds, but {what} has low={low.tolist()}, "
                f"high={high.tolist()}. Use squash: false (clipping), or give the space finite bounds."
            )
        self.register_buffer("low", torch.as_tensor(low), persistent=False)
        self.register_buffer("high", torch.as_tensor(high), persistent=False)
        bounded = np.isfinite(high - low)
        half = np.where(bounded, (high - low) / 2, 1.0).astype(np.float32)
        self.register_buffer("half_range", torch.as_tensor(half), persistent=False)
        self.register_buffer("bounded", torch.as_tensor(bounded), persistent=False)
        centre = np.where(bounded, (np.where(bounded, high, 0) + np.where(bounded, low, 0)) / 2, 0.0)
        self.register_buffer("centre", torch.as_tensor(centre.astype(np.float32)), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.squash:
            return self.low + (torch.tanh(x) + 1.0) * self.half_range
        return torch.clamp(x, self.low, self.high)

    def to_unit(self, x: Tensor) -> Tensor:
        """Raw → the bounded action in units of the bounds, ``[-1, 1]`` (infinite bounds: as it is, clipped).
        Clipping is straight-through here: the value is clipped, the gradient is that of ``x``."""
        if self.squash:
            return torch.tanh(x)
        clipped = x + (torch.clamp(x, self.low, self.high) - x).detach()
        return torch.where(self.bounded, (clipped - self.centre) / self.half_range, clipped)

    def from_unit(self, unit: Tensor) -> Tensor:
        """Bounded action in units of the bounds → a raw action that ``forward`` maps to it (no gradient)."""
        unit = unit.detach()
        if self.squash:
            return torch.atanh(torch.clamp(unit, -1.0 + 1e-6, 1.0 - 1e-6))
        return torch.where(self.bounded, self.centre + unit * self.half_range, unit)

    def relax(self, x: Tensor, noise_std: float = 0.0, generator: torch.Generator | None = None
              ) -> tuple[Tensor, Tensor]:
        """``(unit, raw)``: ``to_unit(x)``, with Gaussian ``noise_std`` (in those units) added and bounded
        again, and the raw action it stands for. Without noise the raw action is ``x`` itself."""
        unit = self.to_unit(x)
        if noise_std <= 0:
            return unit, x.detach()
        eps = torch.randn(unit.shape, generator=generator, device=unit.device, dtype=unit.dtype)
        noisy = unit + noise_std * eps
        unit = torch.where(self.bounded, torch.clamp(noisy, -1.0, 1.0), torch.clamp(noisy, self.low, self.high))
        return unit, self.from_unit(unit)

    def log_det(self, x: Tensor) -> Tensor:
        """Elementwise log-det of the squashing (0 when clipping: the raw sample is the learned action)."""
        if not self.squash:
            return torch.zeros_like(x)
        return squash_log_det(x, self.half_range)


def bounds_json(values: np.ndarray) -> list[float | None]:
    """Bounds for JSON metadata: infinite bounds become null."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).reshape(-1)]


# -- the head --------------------------------------------------------------------------------------------


class GaussianDistribution(ActionDistribution):
    """Diagonal Gaussians ``[B, D]`` over the raw (pre-clip / pre-tanh) action.

    With squashing, ``log_prob`` is the density of the squashed env action (Gaussian log-prob minus the
    tanh/rescale log-det), and ``entropy`` is the entropy of the pre-squash Gaussian: the squashed one has no
    closed form, and the pre-squash entropy is the usual, monotone-in-sigma exploration bonus.
    """

    def __init__(self, mean: Tensor, log_std: Tensor, output: BoundedOutput):
        self.mean = mean
        self.log_std = log_std
        self.std = torch.exp(log_std)
        self.output = output

    @torch.no_grad()
    def sample(self) -> Tensor:
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self) -> Tensor:
        return self.mean

    def log_prob(self, action: Tensor) -> Tensor:
        return (normal_log_prob(action, self.mean, self.log_std) - self.output.log_det(action)).sum(-1)

    def entropy(self) -> Tensor:
        return normal_entropy(self.log_std).sum(-1)

    def sample_from_noise(self, noise: Tensor) -> Tensor:
        return self.mean + self.std * box_muller(noise)


class GaussianHead(ActionHead):
    """Diagonal Gaussian head for a float ``Box`` of any shape (flattened to D dims)."""

    def __init__(self, config: GaussianOptions, action_space: spaces.Box, latent_dim: int):
        super().__init__()
        self.config = config
        self.action_space = action_space
        self.dims = int(np.prod(action_space.shape))
        self.mask_dim = 0
        self.noise_dim = 2 * self.dims
        self.action_shape = (self.dims,)
        self.action_dtype = torch.float32
        self.output_names = ("action",)
        self.encoding_dim = self.dims
        self.params = GaussianParams(config, self.dims, latent_dim)
        self.output = BoundedOutput(
            action_space.low, action_space.high, config.squash, f"the Box {action_space}"
        )

    def forward(self, latent: Tensor, mask: Tensor | None = None) -> GaussianDistribution:
        if mask is not None and mask.shape[-1] != 0:
            raise InvalidInputError(
                f"the gaussian head takes no action mask, but got one of shape {tuple(mask.shape)}. "
                "Masks apply to discrete choices: use a discrete, multi_discrete or hybrid action space."
            )
        mean, log_std = self.params(latent)
        return GaussianDistribution(mean, log_std, self.output)

    def env_outputs(self, action: Tensor) -> dict[str, Tensor]:
        return {"action": self.output(action.to(torch.float32))}

    def encode(self, action: Tensor) -> Tensor:
        return self.output.to_unit(action.to(torch.float32)).detach()

    def relax(self, dist: GaussianDistribution, *, explore: bool = False, temperature: float = 1.0,
              noise_std: float = 0.0, generator: torch.Generator | None = None) -> RelaxedAction:
        unit, raw = self.output.relax(dist.mean, noise_std, generator)
        return RelaxedAction(unit, raw, dist.mean)

    def to_env(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        action = np.asarray(outputs["action"])
        return action.reshape(action.shape[0], *self.action_space.shape).astype(self.action_space.dtype)

    def action_spec(self) -> dict[str, Any]:
        return {
            "kind": "box",
            "shape": list(self.action_space.shape),
            "dims": self.dims,
            "low": bounds_json(self.action_space.low),
            "high": bounds_json(self.action_space.high),
            "squash": self.config.squash,
            "sigma": self.config.sigma,
            "mask_dim": 0,
            "noise_dim": self.noise_dim,
        }

    def set_progress(self, fraction: float) -> None:
        self.params.set_progress(fraction)


def make_gaussian_head(config: GaussianConfig, action_space: Any, latent_dim: int) -> GaussianHead:
    require_space(action_space, spaces.Box, "gaussian")
    return GaussianHead(config, action_space, latent_dim)


@agentkit.hookimpl
def agentkit_register_action_heads(register):
    register(
        "gaussian",
        make_gaussian_head,
        GaussianConfig,
        "Diagonal Gaussian over a Box: sigma fixed (decayable)/independent/state_conditioned; clip or tanh.",
    )
