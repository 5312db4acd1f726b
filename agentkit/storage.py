"""Rollout storage and generalised advantage estimation, shared by every on-policy algorithm.

One storage serves single-agent and multi-agent runs: tensors are preallocated as ``[T, *batch, ...]`` where
``batch`` is ``(N,)`` (N env copies) or ``(N, A)`` (N copies of A agents). Entries an agent did not act on
(dead agents) are marked invalid with ``valid`` and never reach the loss.

Episode ends are kept apart: ``dones`` marks that an episode ended at step t (terminated OR truncated), so
nothing flows across the boundary, and ``bootstrap`` holds ``V(final obs)`` on truncated steps only (a time
limit is not a real end: the return continues past it), 0 on terminated ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class Batch:
    """Flattened rollout entries (``b_`` tensors; a minibatch is the same type, ``mb_``).

    ``critic_obs`` is the critic's input (the obs itself unless a centralised critic has its own);
    ``masks`` is None when the env gives no action masks.
    """

    obs: Tensor
    critic_obs: Tensor
    actions: Tensor
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    masks: Tensor | None

    def __len__(self) -> int:
        return self.obs.shape[0]

    def index(self, idx: Tensor) -> Batch:
        return Batch(**{f.name: (None if (v := getattr(self, f.name)) is None else v[idx]) for f in fields(self)})

    def minibatches(self, minibatch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Shuffled minibatches of ``minibatch_size`` entries (the last one may be smaller); a batch that
        fits in one minibatch is yielded whole."""
        n = len(self)
        if minibatch_size >= n:  # one minibatch: the order of its entries does not change the update
            yield self
            return
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, minibatch_size):
            yield self.index(perm[start : start + minibatch_size])


class RolloutStorage:
    """Preallocated ``[T, *batch_shape, ...]`` buffers for one rollout.

    Args:
        num_steps: T, vector steps per rollout.
        batch_shape: ``(N,)`` or ``(N, A)``.
        obs_dim: width of a (flat) observation.
        action_shape, action_dtype: one raw action (``head.action_shape``, ``head.action_dtype``).
        mask_dim: width of the action mask (0: no masks stored).
        critic_dim: width of a separate critic input (0: the critic reads ``obs``).
    """

    def __init__(
        self,
        num_steps: int,
        batch_shape: tuple[int, ...],
        obs_dim: int,
        action_shape: tuple[int, ...] = (),
        action_dtype: torch.dtype = torch.int64,
        mask_dim: int = 0,
        critic_dim: int = 0,
        device: torch.device | str = "cpu",
    ):
        self.num_steps = num_steps
        self.batch_shape = tuple(batch_shape)
        shape = (num_steps, *self.batch_shape)
        zeros = lambda *extra, dtype=torch.float32: torch.zeros(*shape, *extra, dtype=dtype, device=device)  # noqa: E731
        self.obs = zeros(obs_dim)
        self.critic_obs = zeros(critic_dim) if critic_dim else None
        self.actions = zeros(*action_shape, dtype=action_dtype)
        self.logprobs = zeros()
        self.rewards = zeros()
        self.values = zeros()
        self.dones = zeros()  # 1.0 where the episode ended at this step (terminated or truncated)
        self.bootstrap = zeros()  # V(final obs) where truncated (and not terminated), else 0
        self.masks = zeros(mask_dim, dtype=torch.bool) if mask_dim else None
        self.valid = torch.ones(shape, dtype=torch.bool, device=device)
        self.advantages = zeros()
        self.returns = zeros()

    def compute_gae(self, last_value: Tensor, gamma: float, gae_lambda: float) -> None:
        """Fill ``advantages`` and ``returns`` (= advantages + values) with GAE(lambda).

        ``last_value`` ``[*batch]`` is V(obs after the last step); it is ignored where that step ended an
        episode (the next obs then belongs to a new episode; a truncated end bootstraps from ``bootstrap``).
        """
        last_gae = torch.zeros_like(last_value)
        for t in reversed(range(self.num_steps)):
            next_value = last_value if t == self.num_steps - 1 else self.values[t + 1]
            not_done = 1.0 - self.dones[t]
            delta = self.rewards[t] + gamma * (next_value * not_done + self.bootstrap[t]) - self.values[t]
            last_gae = delta + gamma * gae_lambda * not_done * last_gae
            self.advantages[t] = last_gae
        torch.add(self.advantages, self.values, out=self.returns)

    def batch(self) -> Batch:
        """The rollout's valid entries, flattened to ``[M, ...]`` (views when every entry is valid)."""
        lead = self.num_steps * int(torch.Size(self.batch_shape).numel())

        def flat(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.reshape(lead, *x.shape[1 + len(self.batch_shape) :])

        b = Batch(
            obs=flat(self.obs),
            critic_obs=flat(self.critic_obs if self.critic_obs is not None else self.obs),
            actions=flat(self.actions),
            logprobs=flat(self.logprobs),
            values=flat(self.values),
            advantages=flat(self.advantages),
            returns=flat(self.returns),
            masks=flat(self.masks),
        )
        if bool(self.valid.all()):
            return b
        return b.index(torch.nonzero(self.valid.reshape(-1)).squeeze(-1))
