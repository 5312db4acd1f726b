"""Rollout storage and generalised advantage estimation, shared by every on-policy algorithm.

One storage serves single-agent and multi-agent runs: tensors are preallocated as ``[T, *batch, ...]`` where
``batch`` is ``(N,)`` (N env copies) or ``(N, A)`` (N copies of A agents). Entries an agent did not act on
(dead agents) are marked invalid with ``valid`` and never reach the loss.

Episode ends are kept apart: ``dones`` marks that an episode ended at step t (terminated OR truncated), so
nothing flows across the boundary, and ``bootstrap`` holds ``V(final obs)`` on truncated steps only (a time
limit is not a real end: the return continues past it), 0 on terminated ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from agentkit.errors import ConfigError

#: The share of the memory available at start (``MemAvailable``) a run's storage may take: the rest is left for
#: the networks, the update's activations (a minibatch of frames through a CNN) and the other processes.
MEMORY_FRACTION = 0.5


@dataclass
class Batch:
    """Flattened rollout entries (``b_`` tensors; a minibatch is the same type, ``mb_``).

    ``obs`` keeps the observation's own shape and dtype (uint8 images stay uint8); ``critic_obs`` is the
    critic's input (the obs itself unless a centralised critic has its own); ``masks`` is None when the env
    gives no action masks; ``extras`` the features given beside the obs (one-hot agent ids), or None.
    """

    obs: Tensor
    critic_obs: Tensor
    actions: Tensor
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    masks: Tensor | None
    extras: Tensor | None = None

    def __len__(self) -> int:
        return self.obs.shape[0]

    def index(self, idx: Tensor) -> Batch:
        return Batch(
            obs=self.obs[idx], critic_obs=self.critic_obs[idx], actions=self.actions[idx],
            logprobs=self.logprobs[idx], values=self.values[idx], advantages=self.advantages[idx],
            returns=self.returns[idx], masks=None if self.masks is None else self.masks[idx],
            extras=None if self.extras is None else self.extras[idx],
        )

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
        obs_shape: one observation's shape (an int: a flat vector of that width).
        obs_dtype: its dtype (``torch.uint8`` for images: they are stored as the env gives them).
        action_shape, action_dtype: one raw action (``head.action_shape``, ``head.action_dtype``).
        mask_dim: width of the action mask (0: no masks stored).
        critic_dim: width of a separate critic input (0: the critic reads ``obs``).
        extra_dim: width of features stored beside the obs (one-hot agent ids; 0: none).
    """

    def __init__(
        self,
        num_steps: int,
        batch_shape: tuple[int, ...],
        obs_shape: int | tuple[int, ...],
        action_shape: tuple[int, ...] = (),
        action_dtype: torch.dtype = torch.int64,
        mask_dim: int = 0,
        critic_dim: int = 0,
        device: torch.device | str = "cpu",
        obs_dtype: torch.dtype = torch.float32,
        extra_dim: int = 0,
    ):
        self.num_steps = num_steps
        self.batch_shape = tuple(batch_shape)
        shape = (num_steps, *self.batch_shape)
        obs_shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
        zeros = lambda *extra, dtype=torch.float32: torch.zeros(*shape, *extra, dtype=dtype, device=device)  # noqa: E731
        self.obs = zeros(*obs_shape, dtype=obs_dtype)
        self.critic_obs = zeros(critic_dim) if critic_dim else None
        self.extras = zeros(extra_dim) if extra_dim else None
        self.actions = zeros(*action_shape, dtype=action_dtype)
        self.logprobs = zeros()
        self.rewards = zeros()
        self.values = zeros()
        self.dones = zeros()  # 1.0 where the episode ended at this step (terminated or truncated)
        self.bootstrap = zeros()  # V(final obs) where truncated (and not terminated), else 0
        self.masks = zeros(mask_dim, dtype=torch.bool) if mask_dim else None
        self.valid = torch.ones(shape, dtype=torch.bool, device=device)
        self.resolved = torch.ones(shape, dtype=torch.bool, device=device)  # set by compute_gae
        self.advantages = zeros()
        self.returns = zeros()

    def compute_gae(
        self, last_value: Tensor, gamma: float, gae_lambda: float, last_valid: Tensor | None = None
    ) -> None:
        """Fill ``advantages`` and ``returns`` (= advantages + values) with GAE(lambda).

        ``last_value`` ``[*batch]`` is V(obs after the last step); it is ignored where that step ended an
        episode (the next obs then belongs to a new episode; a truncated end bootstraps from ``bootstrap``).

        An agent's steps are its ``valid`` entries; the entries between them are skipped. The reward, end and
        bootstrap of an invalid entry belong to the agent's previous valid entry: a turn-based game's loss
        arrives on the winner's turn, and a frozen opponent's moves are not the learner's. (With every entry
        valid this is plain GAE; a dead agent's entries after its end change nothing.) ``last_valid``
        ``[*batch]`` (default: all True) says whether the obs after the last step is the agent's own next
        step; where it is not and the agent's last valid entry has no end after it, that entry's outcome lies
        beyond the rollout, and ``batch`` leaves it out.
        """
        if last_valid is None and bool(self.valid.all()):
            self._plain_gae(last_value, gamma, gae_lambda)
            return
        zeros = torch.zeros_like(last_value)
        next_value, next_gae = last_value, zeros
        known = torch.ones_like(last_value, dtype=torch.bool) if last_valid is None else last_valid.bool()
        carry_reward, carry_done, carry_bootstrap = zeros, zeros, zeros  # from invalid entries after this one
        for t in reversed(range(self.num_steps)):
            valid, ended = self.valid[t], self.dones[t] > 0
            reward, done, bootstrap = self.rewards[t], self.dones[t], self.bootstrap[t]
            # an entry's own end cuts off what the invalid entries after it carry (a later episode's)
            reward = torch.where(ended, reward, reward + carry_reward)
            bootstrap = torch.where(ended, bootstrap, carry_bootstrap)
            done = torch.where(ended, done, carry_done)
            not_done = 1.0 - done
            delta = reward + gamma * (next_value * not_done + bootstrap) - self.values[t]
            gae = delta + gamma * gae_lambda * not_done * next_gae
            self.advantages[t] = torch.where(valid, gae, 0.0)
            self.resolved[t] = ~valid | (done > 0) | known
            # a valid entry starts a new carry; an invalid one hands its outcome back to the valid one before it
            next_value = torch.where(valid, self.values[t], next_value)
            next_gae = torch.where(valid, gae, next_gae)
            known = known | valid
            carry_reward = torch.where(valid, 0.0, reward)
            carry_bootstrap = torch.where(valid, 0.0, bootstrap)
            carry_done = torch.where(valid, 0.0, done)
        torch.add(self.advantages, self.values, out=self.returns)

    def _plain_gae(self, last_value: Tensor, gamma: float, gae_lambda: float) -> None:
        """``compute_gae`` where every entry is valid: the same sums without the carries (which are all 0)."""
        next_value, next_gae = last_value, torch.zeros_like(last_value)
        not_done = 1.0 - self.dones
        for t in reversed(range(self.num_steps)):
            delta = self.rewards[t] + gamma * (next_value * not_done[t] + self.bootstrap[t]) - self.values[t]
            next_gae = delta + gamma * gae_lambda * not_done[t] * next_gae
            self.advantages[t] = next_gae
            next_value = self.values[t]
        self.resolved.fill_(True)
        torch.add(self.advantages, self.values, out=self.returns)

    def batch(self) -> Batch:
        """The rollout's valid entries whose outcome it holds (``compute_gae``), flattened to ``[M, ...]``
        (views when every entry is kept)."""
        lead = self.num_steps * int(torch.Size(self.batch_shape).numel())

        def flat(x: Tensor) -> Tensor:
            return x.reshape(lead, *x.shape[1 + len(self.batch_shape) :])

        b = Batch(
            obs=flat(self.obs),
            critic_obs=flat(self.critic_obs if self.critic_obs is not None else self.obs),
            actions=flat(self.actions),
            logprobs=flat(self.logprobs),
            values=flat(self.values),
            advantages=flat(self.advantages),
            returns=flat(self.returns),
            masks=None if self.masks is None else flat(self.masks),
            extras=None if self.extras is None else flat(self.extras),
        )
        keep = self.valid & self.resolved
        if bool(keep.all()):
            return b
        return b.index(torch.nonzero(keep.reshape(-1)).squeeze(-1))


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype of a numpy dtype (``np.uint8`` → ``torch.uint8``)."""
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype``."""
    return int(math.prod(shape)) * torch.empty((), dtype=dtype).element_size()


def rollout_bytes(
    num_steps: int, batch_shape: tuple[int, ...], obs_shape: int | tuple[int, ...], obs_dtype: torch.dtype,
    action_shape: tuple[int, ...] = (), action_dtype: torch.dtype = torch.int64, mask_dim: int = 0,
    critic_dim: int = 0, extra_dim: int = 0,
) -> int:
    """Bytes a ``RolloutStorage`` with these arguments allocates (the same buffers, counted before any is)."""
    lead = (num_steps, *batch_shape)
    obs_shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
    total = nbytes((*lead, *obs_shape), obs_dtype) + nbytes((*lead, *action_shape), action_dtype)
    total += nbytes((*lead, critic_dim + extra_dim), torch.float32) + nbytes((*lead, mask_dim), torch.bool)
    total += 7 * nbytes(lead, torch.float32) + 2 * nbytes(lead, torch.bool)  # logprobs ... returns; valid, resolved
    return total


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can get (``MemAvailable`` in /proc/meminfo), or None where
    there is no such file (not Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def ensure_fits(needed: int, what: str, knobs: str, available: int | None = None) -> None:
    """Raise a ConfigError (exit 2) before allocating when ``needed`` bytes of storage exceed
    ``MEMORY_FRACTION`` of the available memory. ``what`` says what would be allocated (shapes), ``knobs``
    the config keys that shrink it. ``available`` overrides the reading of /proc/meminfo."""
    available = available_memory() if available is None else available
    if available is None or needed <= MEMORY_FRACTION * available:
        return
    raise ConfigError(
        f"this run's storage needs {_size(needed)} ({needed:,} bytes: {what}) but only {_size(available)} of "
        f"memory is available ({MEMORY_FRACTION:.0%} of it may be used). Lower {knobs}, or use smaller "
        "observations (a resize or grey-scale wrapper in env.wrappers)."
    )
