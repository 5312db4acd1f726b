"""The ``multi_discrete`` action head: one masked Categorical per branch of a 1-D gymnasium ``MultiDiscrete``.

A 1-D ``MultiBinary(n)`` (buttons pressed together: jump, fire, crouch) is ``MultiDiscrete([2] * n)``: each
button a branch of two values, 0 = released, 1 = pressed; the env gets the values in its own dtype (int8).

Raw action: int64 ``[B, branches]`` (indices). Env output ``action`` = indices + ``start`` (int64).
Mask: the branch masks concatenated, ``[B, sum(nvec)]``, True/1 = allowed; every branch of every row needs
an allowed value. Log-prob and entropy are summed over branches. ``noise_dim`` = branches. Encoding (for
MADDPG's critic): the branch one-hots concatenated, ``[B, sum(nvec)]``; relaxed, one straight-through
Gumbel-softmax per branch, batched over the padded branches (the padding is never chosen).

The branches are padded to a ``[B, branches, max(nvec)]`` tensor (padding = a disallowed action) so every
operation is one batched op, with no Python loop over branches in training or in the exported graph. The
padding is laid out in the logits layer itself (its rows gathered into the padded order, padding rows
weight 0 and bias ``MASKED_LOGIT``), so the exported graph computes padded logits with one Gemm and a
constant Reshape: no batch-size-dependent shape ops run per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

import agentkit
from agentkit.config import HeadConfig
from agentkit.errors import ConfigError, EmptyMaskError
from agentkit.heads import (
    MASKED_LOGIT,
    ActionDistribution,
    ActionHead,
    RelaxedAction,
    _exporting,
    as_bool_mask,
    gumbel_softmax_st,
)
from agentkit.policy import layer_init
from agentkit.spaces import discrete_branches

from ._categorical import MaskedCategorical
from ._common import require_space


class MultiDiscreteConfig(HeadConfig):
    """Options of the ``multi_discrete`` head (none besides ``plugin``)."""

    @classmethod
    def supports(cls, action_space: Any) -> bool:
        return discrete_branches(action_space) is not None


class MultiDiscreteDistribution(ActionDistribution):
    """Independent masked Categoricals, one per branch. ``logits``: ``[B, branches, max_n]`` (padded)."""

    def __init__(self, logits: Tensor, mask: Tensor, nvec: list[int]):
        self.cat = MaskedCategorical(logits, mask)
        self.logits = logits
        self.mask = mask
        self.nvec = nvec

    @property
    def branch_logits(self) -> list[Tensor]:
        """Per-branch masked logits ``[B, n_i]`` (the padding removed)."""
        return [self.logits[:, i, :n] for i, n in enumerate(self.nvec)]

    def sample(self) -> Tensor:
        return self.cat.sample()

    def mode(self) -> Tensor:
        return self.cat.mode()

    def log_prob(self, action: Tensor) -> Tensor:
        return self.cat.log_prob(action).sum(-1)

    def entropy(self) -> Tensor:
        return self.cat.entropy().sum(-1)

    def sample_from_noise(self, noise: Tensor) -> Tensor:
        return self.cat.from_noise(noise)


class MultiDiscreteHead(ActionHead):
    """Linear(latent → sum(nvec)) logits (gain 0.01), split into padded branches."""

    def __init__(self, config: MultiDiscreteConfig, action_space: spaces.MultiDiscrete | spaces.MultiBinary,
                 latent_dim: int):
        super().__init__()
        branches = discrete_branches(action_space)
        if branches is None:
            raise ConfigError(
                f"policy.head: the multi_discrete head needs a 1-D MultiDiscrete or MultiBinary, got {action_space}. "
                "Flatten the env's action space to one row of branches."
            )
        self.config = config
        self.action_space = action_space
        self.nvec, start = branches
        self.branches = len(self.nvec)
        total, width = sum(self.nvec), max(self.nvec)
        self.mask_dim = total
        self.noise_dim = self.branches
        self.action_shape = (self.branches,)
        self.action_dtype = torch.int64
        self.output_names = ("action",)
        self.encoding_dim = total
        self.width = width
        self.logits = layer_init(nn.Linear(latent_dim, total), gain=0.01)
        # the padded layout [branches, width]: the flat slot each entry reads (padding reads slot 0, unused)
        index = torch.zeros((self.branches, width), dtype=torch.int64)
        valid = torch.zeros((self.branches, width), dtype=torch.bool)
        offset = 0
        for i, n in enumerate(self.nvec):
            index[i, :n] = torch.arange(offset, offset + n)
            valid[i, :n] = True
            offset += n
        self.register_buffer("pad_index", index.reshape(-1), persistent=False)
        self.register_buffer("pad_valid", valid, persistent=False)
        # the flat slots of the padded layout that hold a real value, in branch order: padded → [B, sum(nvec)]
        self.register_buffer("flat_index", torch.nonzero(valid.reshape(-1)).flatten(), persistent=False)
        self.register_buffer("start", torch.as_tensor(start, dtype=torch.int64), persistent=False)
        self.has_start = any(start)

    def _padded(self, flat: Tensor) -> Tensor:
        """``[B, sum(nvec)]`` → ``[B, branches, max_n]`` (the padding holds whatever slot 0 holds)."""
        return flat.index_select(-1, self.pad_index).reshape(-1, self.branches, self.width)

    def padded_logits(self, latent: Tensor) -> Tensor:
        """Logits ``[B, branches, max_n]`` of the logits layer, ``MASKED_LOGIT`` in the padding: the layer's
        rows in the padded order (each logit is the same row's dot product, up to the matmul's rounding;
        training and export both compute it this way), padding rows 0 with bias ``MASKED_LOGIT``.
        ``where`` (not a product) keeps the padding's gradient off slot 0's row."""
        valid = self.pad_valid.reshape(-1)
        weight = torch.where(valid.unsqueeze(-1), self.logits.weight.index_select(0, self.pad_index), 0.0)
        bias = torch.where(valid, self.logits.bias.index_select(0, self.pad_index), MASKED_LOGIT)
        return nn.functional.linear(latent, weight, bias).reshape(-1, self.branches, self.width)

    def forward(self, latent: Tensor, mask: Tensor | None = None) -> MultiDiscreteDistribution:
        logits = self.padded_logits(latent)
        if mask is None:
            return MultiDiscreteDistribution(logits, self.pad_valid.expand_as(logits), self.nvec)
        mask = as_bool_mask(mask)
        if mask.shape != (latent.shape[0], self.mask_dim):
            raise EmptyMaskError(
                f"multi_discrete action mask has shape {tuple(mask.shape)}, "
                f"expected {(latent.shape[0], self.mask_dim)} "
                f"(the branch masks for nvec={self.nvec} concatenated)"
            )
        allowed = self._padded(mask)
        # the padding's logits are MASKED_LOGIT already, so `allowed` need not exclude it here; the mask the
        # distribution keeps (entropy, row checks) does
        logits = torch.where(allowed, logits, MASKED_LOGIT)
        mask = allowed & self.pad_valid
        self._check_rows(mask)
        return MultiDiscreteDistribution(logits, mask, self.nvec)

    def _check_rows(self, mask: Tensor) -> None:
        if _exporting():
            return
        empty = ~mask.any(-1)  # [B, branches]
        if bool(empty.any()):
            rows, branches = torch.nonzero(empty, as_tuple=True)
            pairs = list(zip(rows.tolist(), branches.tolist(), strict=True))
            raise EmptyMaskError(
                f"multi_discrete action mask: (row, branch) {pairs[:10]} allow no action at all. Every "
                f"branch (nvec={self.nvec}) needs at least one allowed value each step; check the env's "
                "action_mask.",
                rows=sorted(set(rows.tolist())),
            )

    def env_outputs(self, action: Tensor) -> dict[str, Tensor]:
        if not self.has_start:  # adding zeros is exact: skip it (one kernel less per exported call)
            return {"action": action.to(torch.int64)}
        return {"action": action.to(torch.int64) + self.start}

    def _unpadded(self, padded: Tensor) -> Tensor:
        """``[B, branches, max_n]`` → ``[B, sum(nvec)]`` (the padding dropped)."""
        return padded.reshape(padded.shape[0], -1).index_select(-1, self.flat_index)

    def encode(self, action: Tensor) -> Tensor:
        return self._unpadded(nn.functional.one_hot(action.long(), self.width).float())

    def relax(self, dist: MultiDiscreteDistribution, *, explore: bool = False, temperature: float = 1.0,
              noise_std: float = 0.0, generator: torch.Generator | None = None) -> RelaxedAction:
        one_hot, index = gumbel_softmax_st(dist.logits, None, temperature, generator, noise=explore)
        allowed = torch.where(dist.mask, dist.logits, 0.0)
        return RelaxedAction(self._unpadded(one_hot), index, self._unpadded(allowed))

    def to_env(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(outputs["action"]).astype(self.action_space.dtype)

    def action_spec(self) -> dict[str, Any]:
        return {
            "kind": "multi_discrete",
            "nvec": self.nvec,
            "start": [int(s) for s in self.start],
            "branches": self.branches,
            "mask_dim": self.mask_dim,
            "noise_dim": self.noise_dim,
        }


def make_multi_discrete_head(
    config: MultiDiscreteConfig, action_space: Any, latent_dim: int
) -> MultiDiscreteHead:
    require_space(action_space, (spaces.MultiDiscrete, spaces.MultiBinary), "multi_discrete")
    return MultiDiscreteHead(config, action_space, latent_dim)


@agentkit.hookimpl
def agentkit_register_action_heads(register):
    register(
        "multi_discrete",
        make_multi_discrete_head,
        MultiDiscreteConfig,
        "One masked Categorical per MultiDiscrete branch, or per MultiBinary button (mask = branch masks "
        "concatenated, [B, sum(nvec)]).",
    )
