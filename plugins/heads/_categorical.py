"""Masked categorical maths shared by the discrete, multi-discrete and hybrid heads.

One implementation of the mask pipeline for every categorical part: logits arrive already masked
(``MASKED_LOGIT`` where disallowed), so sampling, the mode, log-probs and entropy all read the same tensor.
Every operation works on the last axis and is traceable by ``torch.onnx.export`` (no RNG op, no -inf).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Smallest uniform number used by the inverse CDF: a noise of exactly 0 must not pick a zero-probability
#: (masked) first action, and any target > 0 lands on an action with positive probability.
_TINY = 1e-12


class MaskedCategorical:
    """Categorical distributions over the last axis of ``logits [..., n]``.

    ``logits`` must already be masked (``agentkit.heads.masked_logits``); ``mask`` (bool ``[..., n]``, or
    None for "all allowed") is kept so that disallowed actions contribute exactly nothing to the entropy.
    """

    def __init__(self, logits: Tensor, mask: Tensor | None = None):
        self.logits = logits
        self.mask = mask
        self.log_probs = torch.log_softmax(logits, dim=-1)
        self.probs = torch.exp(self.log_probs)

    @property
    def n(self) -> int:
        return self.logits.shape[-1]

    def log_prob(self, index: Tensor) -> Tensor:
        """``index [...]`` int64 → log-probability ``[...]``."""
        index = index if index.dtype == torch.int64 else index.long()  # a sampled or stored action already is
        return self.log_probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        plogp = self.probs * self.log_probs
        if self.mask is not None:
            # exp(MASKED_LOGIT - max) underflows to 0 already; the where makes "no contribution" exact
            # and keeps the gradient of disallowed logits exactly zero.
            plogp = torch.where(self.mask, plogp, torch.zeros_like(plogp))
        return -plogp.sum(-1)

    def mode(self) -> Tensor:
        """The most likely allowed action ``[...]`` (ties: the lowest index, as in ONNX ArgMax)."""
        return torch.argmax(self.logits, dim=-1)

    def from_noise(self, u: Tensor) -> Tensor:
        """Inverse-CDF sample from uniform(0, 1) ``u [...]``: the first action whose CDF reaches u.

        The chosen action always has positive probability: with target ``t > 0`` the picked index i has
        ``cdf[i-1] < t <= cdf[i]``; ``t <= cdf[-1]`` because u <= 1.
        """
        cdf = torch.cumsum(self.probs, dim=-1)
        target = torch.clamp(u, _TINY, 1.0).unsqueeze(-1) * cdf[..., -1:]
        index = (cdf < target).to(torch.int64).sum(-1)
        # int(): the width is static; a constant bound keeps Shape/Gather/Sub out of the exported graph
        return torch.clamp(index, max=int(self.n) - 1)

    def sample(self) -> Tensor:
        return self.from_noise(torch.rand(self.logits.shape[:-1], device=self.logits.device))
