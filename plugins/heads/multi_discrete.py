"""The ``multi_discrete`` action head: one masked Categorical per branch of a 1-D gymnasium ``MultiDiscrete``.

Raw action: int64 ``[B, branches]`` (indices). Env output ``action`` = indices + ``start`` (int64).
Mask: the branch masks concatenated, ``[B, sum(nvec)]``, True/1 = allowed; every branch of every row needs
an allowed value. Log-prob and entropy are summed over branches. ``noise_dim`` = branches.

The branches are padded to a ``[B, branches, max(nvec)]`` tensor (padding = a disallowed action) so every
operation is one batched op, with no Python loop over branches in training or in the exported graph.
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
from agentkit.heads import MASKED_LOGIT, ActionDistribution, ActionHead, _exporting, as_bool_mask
from agentkit.policy import layer_init

from ._categorical import MaskedCategorical
from ._common import require_space


class MultiDiscreteConfig(HeadConfig):
    """Options of the ``multi_discrete`` head (none besides ``plugin``)."""

    @classmethod
    def supports(cls, action_space: Any) -> bool:
        return isinstance(action_space, spaces.MultiDiscrete) and len(action_space.nvec.shape) == 1


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

    def __init__(self, config: MultiDiscreteConfig, action_space: spaces.MultiDiscrete, latent_dim: int):
        super().__init__()
        if len(action_space.nvec.shape) != 1:
            raise ConfigError(
                f"policy.head: the multi_discrete head needs a 1-D MultiDiscrete, got nvec of shape "
                f"{action_space.nvec.shape}. Flatten the env's action space to one row of branches."
            )
        self.config = config
        self.action_space = action_space
        self.nvec = [int(n) for n in action_space.nvec]
        self.branches = len(self.nvec)
        total, width = sum(self.nvec), max(self.nvec)
        self.mask_dim = total
        self.noise_dim = self.branches
        self.action_shape = (self.branches,)
        self.action_dtype = torch.int64
        self.output_names = ("action",)
        self.logits = layer_init(nn.Linear(latent_dim, total), gain=0.01)
        # index [branches, width] into the concatenated logits with one extra, always-masked slot at `total`
        index = torch.full((self.branches, width), total, dtype=torch.int64)
        offset = 0
        for i, n in enumerate(self.nvec):
            index[i, :n] = torch.arange(offset, offset + n)
            offset += n
        self.register_buffer("pad_index", index.reshape(-1), persistent=False)
        self.register_buffer(
            "start", torch.as_tensor(action_space.start, dtype=torch.int64), persistent=False
        )

    def _pad(self, flat: Tensor, fill: Tensor) -> Tensor:
        """``[B, sum(nvec)]`` → ``[B, branches, max_n]`` with ``fill`` in the padding."""
        extended = torch.cat([flat, fill.expand(flat.shape[0], 1)], dim=-1)
        return extended.index_select(-1, self.pad_index).reshape(flat.shape[0], self.branches, -1)

    def forward(self, latent: Tensor, mask: Tensor | None = None) -> MultiDiscreteDistribution:
        flat_logits = self.logits(latent)
        if mask is None:
            mask = torch.ones_like(flat_logits, dtype=torch.bool)
        mask = as_bool_mask(mask)
        if mask.shape != flat_logits.shape:
            raise EmptyMaskError(
                f"multi_discrete action mask has shape {tuple(mask.shape)}, "
                f"expected {tuple(flat_logits.shape)} "
                f"(the branch masks for nvec={self.nvec} concatenated)"
            )
        mask = self._pad(mask, torch.zeros((), dtype=torch.bool, device=mask.device))
        self._check_rows(mask)
        logits = self._pad(flat_logits, flat_logits.new_full((), MASKED_LOGIT))
        logits = torch.where(mask, logits, torch.full_like(logits, MASKED_LOGIT))
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
        return {"action": action.to(torch.int64) + self.start}

    def to_env(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(outputs["action"]).astype(self.action_space.dtype)

    def action_spec(self) -> dict[str, Any]:
        return {
            "kind": "multi_discrete",
            "nvec": self.nvec,
            "start": [int(s) for s in self.action_space.start],
            "branches": self.branches,
            "mask_dim": self.mask_dim,
            "noise_dim": self.noise_dim,
        }


def make_multi_discrete_head(
    config: MultiDiscreteConfig, action_space: Any, latent_dim: int
) -> MultiDiscreteHead:
    require_space(action_space, spaces.MultiDiscrete, "multi_discrete")
    return MultiDiscreteHead(config, action_space, latent_dim)


@agentkit.hookimpl
def agentkit_register_action_heads(register):
    register(
        "multi_discrete",
        make_multi_discrete_head,
        MultiDiscreteConfig,
        "One masked Categorical per MultiDiscrete branch (mask = branch masks concatenated, [B, sum(nvec)]).",
    )
