"""Rollout storage and generalised advantage estimation, shared by every on-policy algorithm.

One storage serves single-agent and multi-agent runs: tensors are preallocated as ``[T, *batch, ...]`` where
``batch`` is ``(N,)`` (N env copies) or ``(N, A)`` (N copies of A agents). Entries an agent did not act on
(dead agents) are marked invalid with ``valid`` and never reach the loss.

Episode ends are kept apart: ``dones`` marks that an episode ended at step t (terminated OR truncated), so
nothing flows across the boundary, and ``bootstrap`` holds ``V(final obs)`` on truncated steps only (a time
limit is not a real end: the return continues past it), 0 on terminated ones.

Observations are stored in their own dtype: a Box image as uint8. A Dict or Tuple observation reaches the
policy as one flat float32 vector; when it holds images (``agentkit.encoders.image_fields``) its image columns
are stored as uint8 too (``ObsPacking``, ``PackedObs``) and turned back into the flat float32 vector one
minibatch at a time, so that its frames cost one byte a pixel in the rollout and the replay buffer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from agentkit.errors import ConfigError

#: The share of the memory available at start (``MemAvailable``) a run's storage may take: the rest is left for
#: the networks, the update's activations (a minibatch of frames through a CNN) and the other processes.
MEMORY_FRACTION = 0.5


class ObsPacking:
    """How a flat float32 observation that holds images is stored: its image columns as uint8 (one byte a
    pixel), the other columns as float32.

    The image columns are those of a Dict's or Tuple's image entries (``agentkit.encoders.image_fields``: Box
    entries of 3 dims bounded 0..255, which the export takes as uint8 pixels), so their values are whole
    numbers 0..255 and the round trip ``unpack(*pack(x)) == x`` is exact.
    """

    def __init__(self, width: int, pixel_columns: Sequence[int]):
        pixels = sorted(set(int(i) for i in pixel_columns))
        if not pixels or pixels[0] < 0 or pixels[-1] >= width:
            raise ValueError(f"pixel columns must be a non-empty subset of 0..{width - 1}")
        taken = set(pixels)
        self.width = int(width)
        self.pixel_index = torch.tensor(pixels, dtype=torch.int64)
        self.value_index = torch.tensor([i for i in range(width) if i not in taken], dtype=torch.int64)
        self._indices_on: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @classmethod
    def of(cls, space: Any, fields: list[dict[str, Any]] | None) -> ObsPacking | None:
        """The packing of a flat observation ``space`` (a Box) flattened by ``fields``, or None when it holds no
        image entry (then it is stored as it is)."""
        from agentkit.encoders import EncoderSpec, image_fields

        if not fields or len(space.shape) != 1:
            return None
        images = image_fields(EncoderSpec(space, fields))
        columns = [i for f in images for i in range(int(f["start"]), int(f["start"]) + int(f["size"]))]
        return cls(int(space.shape[0]), columns) if columns else None

    @classmethod
    def after(cls, offset: int, obs_width: int, obs_dtype: Any, obs_packing: ObsPacking | None) -> ObsPacking | None:
        """The packing of ``offset`` float32 columns followed by a flat observation of ``obs_width`` (a
        centralised critic's agent-specific input: state ⊕ own obs): the observation's pixel columns (all of
        them for a uint8 observation, whose values are 0..255; a Dict's per ``obs_packing``), shifted by
        ``offset``; None when it has none."""
        if np.dtype(obs_dtype) == np.uint8:
            columns: Sequence[int] = range(offset, offset + obs_width)
        elif obs_packing is not None:
            columns = (obs_packing.pixel_index + offset).tolist()
        else:
            return None
        return cls(offset + obs_width, columns)

    @property
    def pixel_width(self) -> int:
        return int(self.pixel_index.numel())

    @property
    def value_width(self) -> int:
        return int(self.value_index.numel())

    def parts(self, lead: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """The two tensors a store of ``lead`` observations holds: ``pixels`` and ``values`` (shape, dtype)."""
        return {"pixels": ((*lead, self.pixel_width), torch.uint8), "values": ((*lead, self.value_width), torch.float32)}

    def nbytes(self, lead: tuple[int, ...]) -> int:
        """Bytes a store of ``lead`` observations takes."""
        return sum(nbytes(shape, dtype) for shape, dtype in self.parts(lead).values())

    def indices_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(``pixel_index``, ``value_index``) on ``device``, copied there once (pack and unpack run every step
        and minibatch; on a GPU a copy each time is a host-to-device transfer each time)."""
        found = self._indices_on.get(device)
        if found is None:
            found = self._indices_on[device] = (self.pixel_index.to(device), self.value_index.to(device))
        return found

    def pack(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Flat observations ``[..., width]`` → (uint8 pixels ``[..., P]``, float32 values ``[..., V]``)."""
        x = torch.as_tensor(x)
        pixel_index, value_index = self.indices_on(x.device)
        return x.index_select(-1, pixel_index).to(torch.uint8), x.index_select(-1, value_index).to(torch.float32)

    def unpack(self, pixels: Tensor, values: Tensor) -> Tensor:
        """The flat float32 observations ``[..., width]`` that ``pack`` took apart."""
        out = torch.empty((*pixels.shape[:-1], self.width), dtype=torch.float32, device=pixels.device)
        pixel_index, value_index = self.indices_on(out.device)
        out[..., pixel_index] = pixels.to(torch.float32)
        out[..., value_index] = values
        return out


@dataclass
class PackedObs:
    """Flat observations ``[*lead, width]`` stored packed (``ObsPacking``). Indexing its leading axes gives a
    ``PackedObs``; assigning flat float32 observations packs them; ``unpack`` gives the flat float32 tensor."""

    pixels: Tensor
    values: Tensor
    packing: ObsPacking

    @classmethod
    def zeros(cls, lead: tuple[int, ...], packing: ObsPacking, device: torch.device | str = "cpu") -> PackedObs:
        parts = {k: torch.zeros(shape, dtype=dtype, device=device) for k, (shape, dtype) in packing.parts(lead).items()}
        return cls(parts["pixels"], parts["values"], packing)

    @property
    def shape(self) -> torch.Size:
        """The shape of the unpacked observations."""
        return torch.Size((*self.pixels.shape[:-1], self.packing.width))

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def __getitem__(self, idx: Any) -> PackedObs:
        return PackedObs(self.pixels[idx], self.values[idx], self.packing)

    def __setitem__(self, idx: Any, x: Tensor) -> None:
        self.pixels[idx], self.values[idx] = self.packing.pack(x)

    def reshape(self, *shape: int) -> PackedObs:
        """The observations reshaped to ``shape`` (as a tensor's ``reshape``; its last axis stays ``width``)."""
        if shape[-1] != self.packing.width:
            raise ValueError(f"a PackedObs keeps its last axis ({self.packing.width} columns); got shape {shape}")
        lead = shape[:-1]
        return PackedObs(self.pixels.reshape(*lead, self.packing.pixel_width),
                         self.values.reshape(*lead, self.packing.value_width), self.packing)

    def unpack(self) -> Tensor:
        return self.packing.unpack(self.pixels, self.values)


def unpacked(obs: Tensor | PackedObs) -> Tensor:
    """``obs`` as the flat tensor the policy takes (``PackedObs.unpack``; a tensor is returned as it is)."""
    return obs.unpack() if isinstance(obs, PackedObs) else obs


@dataclass
class Batch:
    """Flattened rollout entries (``b_`` tensors; a minibatch is the same type, ``mb_``).

    ``obs`` keeps the observation's own shape and dtype (uint8 images stay uint8); a rollout's batch of a Dict
    observation holding images keeps them packed (``PackedObs``), and every minibatch (``index``,
    ``minibatches``, ``parts``) has them unpacked into the flat float32 tensor the policy takes.
    ``critic_obs`` is the critic's input (the obs itself unless a centralised critic has its own); ``masks``
    is None when the env gives no action masks; ``extras`` the features given beside the obs (one-hot agent
    ids), or None.
    """

    obs: Tensor | PackedObs
    critic_obs: Tensor | PackedObs
    actions: Tensor
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    masks: Tensor | None
    extras: Tensor | None = None

    def __len__(self) -> int:
        return self.obs.shape[0]

    def select(self, idx: Tensor | slice) -> Batch:
        """The entries ``idx``, packed observations kept packed."""
        obs = self.obs[idx]
        return Batch(
            obs=obs, critic_obs=obs if self.critic_obs is self.obs else self.critic_obs[idx],
            actions=self.actions[idx], logprobs=self.logprobs[idx], values=self.values[idx],
            advantages=self.advantages[idx], returns=self.returns[idx],
            masks=None if self.masks is None else self.masks[idx],
            extras=None if self.extras is None else self.extras[idx],
        )

    def index(self, idx: Tensor | slice) -> Batch:
        """The entries ``idx``, observations unpacked (a minibatch)."""
        b = self.select(idx)
        if not b.packed:
            return b
        obs = unpacked(b.obs)
        return replace(b, obs=obs, critic_obs=obs if b.critic_obs is b.obs else unpacked(b.critic_obs))

    @property
    def packed(self) -> bool:
        return isinstance(self.obs, PackedObs) or isinstance(self.critic_obs, PackedObs)

    def parts(self, size: int) -> Iterator[Batch]:
        """The batch in order, observations unpacked: whole when they are not packed, else in parts of ``size``
        entries (so that the flat float32 copy of a packed rollout is never made whole)."""
        if not self.packed:
            yield self
            return
        for start in range(0, len(self), size):
            yield self.index(slice(start, start + size))

    def minibatches(self, minibatch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Shuffled minibatches of ``minibatch_size`` entries (the last one may be smaller); a batch that
        fits in one minibatch is yielded whole."""
        n = len(self)
        if minibatch_size >= n:  # one minibatch: the order of its entries does not change the update
            yield self if not self.packed else self.index(slice(None))
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
        packing: for a flat observation holding images (``ObsPacking.of``), how it is stored; ``obs`` is then
            a ``PackedObs``.
        action_shape, action_dtype: one raw action (``head.action_shape``, ``head.action_dtype``).
        mask_dim: width of the action mask (0: no masks stored).
        critic_dim: width of a separate critic input (0: the critic reads ``obs``).
        critic_packing: how that input is stored when it holds images (``ObsPacking.after``): ``critic_obs`` is
            then a ``PackedObs``.
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
        packing: ObsPacking | None = None,
        critic_packing: ObsPacking | None = None,
    ):
        self.num_steps = num_steps
        self.batch_shape = tuple(batch_shape)
        shape = (num_steps, *self.batch_shape)
        obs_shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
        zeros = lambda *extra, dtype=torch.float32: torch.zeros(*shape, *extra, dtype=dtype, device=device)  # noqa: E731
        self.obs: Tensor | PackedObs = (zeros(*obs_shape, dtype=obs_dtype) if packing is None
                                        else PackedObs.zeros(shape, packing, device))
        self.critic_obs: Tensor | PackedObs | None = (
            None if not critic_dim else zeros(critic_dim) if critic_packing is None
            else PackedObs.zeros(shape, critic_packing, device))
        self.extras = zeros(extra_dim) if extra_dim else None
        self.actions = zeros(*action_shape, dtype=action_dtype)
        self.logprobs = zeros()
        self.rewards = zeros()
        self.values = zeros()
        self.dones = zeros()  # 1.0 where the episode ended at this step (terminated or truncated)
        self._outcome_views: tuple[np.ndarray, np.ndarray] | None = None  # record_outcome's, on the CPU
        self.bootstrap = zeros()  # V(final obs) where truncated (and not terminated), else 0
        self.masks = zeros(mask_dim, dtype=torch.bool) if mask_dim else None
        self.valid = torch.ones(shape, dtype=torch.bool, device=device)
        self.resolved = torch.ones(shape, dtype=torch.bool, device=device)  # set by compute_gae
        self.advantages = zeros()
        self.returns = zeros()

    def record_outcome(self, t: int, reward: np.ndarray, done: np.ndarray) -> None:
        """Step ``t``'s rewards and episode ends, numpy ``[*batch]`` as the env gave them (``done`` bool: 1.0 in
        ``dones``). A CPU rollout takes them through numpy views of its buffers: the same values, at a fraction
        of torch's per-call cost for a step's few rows."""
        if self.rewards.device.type == "cpu":
            if self._outcome_views is None:  # numpy views of the two buffers, made once (each .numpy() is 4 dispatches)
                self._outcome_views = (self.rewards.numpy(), self.dones.numpy())
            rewards, dones = self._outcome_views
            rewards[t] = reward
            dones[t] = done
        else:
            self.rewards[t] = torch.as_tensor(reward, device=self.rewards.device)
            self.dones[t] = torch.as_tensor(done, device=self.dones.device)

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
            # A pending entry (valid, outcome past the rollout, left out of the batch) still hands its gae,
            # bootstrapped from ``last_value`` of an obs that is not the agent's (a turn-based game's
            # placeholder), to the agent's entries before it. Zeroing it there (the textbook truncated
            # lambda-return) was measured and did worse on tic-tac-toe and connect four (RESULTS.md,
            # "the pending move's bootstrap", 2026-12-04), so it is kept as it is.
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
        # A small rollout's GAE is dispatch-bound: the per-step rows are taken once rather than indexed in the
        # loop, and on the CPU they are numpy views of the buffers, whose per-op cost is a fraction of torch's.
        # Either way the same float32 operations run in the same order, so the sums are the same.
        rows: Callable[[Tensor], Sequence[Any]]
        stack: Callable[..., Any]
        out: Any
        if self.advantages.device.type == "cpu":
            rows, stack, out = (lambda x: list(x.numpy())), np.stack, self.advantages.numpy()
            next_value: Any = last_value.numpy()
            next_gae: Any = np.zeros_like(next_value)
        else:
            rows, stack, out = (lambda x: x.unbind(0)), torch.stack, self.advantages
            next_value, next_gae = last_value, torch.zeros_like(last_value)
        rewards, values, bootstrap = rows(self.rewards), rows(self.values), rows(self.bootstrap)
        not_done = rows(1.0 - self.dones)
        advantages = [next_gae] * self.num_steps
        for t in reversed(range(self.num_steps)):
            delta = rewards[t] + gamma * (next_value * not_done[t] + bootstrap[t]) - values[t]
            next_gae = advantages[t] = delta + gamma * gae_lambda * not_done[t] * next_gae
            next_value = values[t]
        stack(advantages, out=out)
        self.resolved.fill_(True)
        torch.add(self.advantages, self.values, out=self.returns)

    def batch(self) -> Batch:
        """The rollout's valid entries whose outcome it holds (``compute_gae``), flattened to ``[M, ...]``
        (views when every entry is kept)."""
        lead = self.num_steps * int(torch.Size(self.batch_shape).numel())

        def flat(x: Any) -> Any:
            return x.reshape(lead, *x.shape[1 + len(self.batch_shape) :])

        obs = flat(self.obs)
        b = Batch(
            obs=obs,
            critic_obs=flat(self.critic_obs) if self.critic_obs is not None else obs,
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
        return b.select(torch.nonzero(keep.reshape(-1)).squeeze(-1))


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype of a numpy dtype (``np.uint8`` → ``torch.uint8``)."""
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype``."""
    return int(math.prod(shape)) * torch.empty((), dtype=dtype).element_size()


def rollout_bytes(
    num_steps: int, batch_shape: tuple[int, ...], obs_shape: int | tuple[int, ...], obs_dtype: torch.dtype,
    action_shape: tuple[int, ...] = (), action_dtype: torch.dtype = torch.int64, mask_dim: int = 0,
    critic_dim: int = 0, extra_dim: int = 0, packing: ObsPacking | None = None,
    critic_packing: ObsPacking | None = None,
) -> int:
    """Bytes a ``RolloutStorage`` with these arguments allocates (the same buffers, counted before any is)."""
    lead = (num_steps, *batch_shape)
    obs_shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
    obs_bytes = nbytes((*lead, *obs_shape), obs_dtype) if packing is None else packing.nbytes(lead)
    total = obs_bytes + nbytes((*lead, *action_shape), action_dtype)
    critic_bytes = nbytes((*lead, critic_dim), torch.float32) if critic_packing is None else critic_packing.nbytes(lead)
    total += critic_bytes + nbytes((*lead, extra_dim), torch.float32) + nbytes((*lead, mask_dim), torch.bool)
    total += 7 * nbytes(lead, torch.float32) + 2 * nbytes(lead, torch.bool)  # logprobs ... returns; valid, resolved
    return total


def stored_as(shape: tuple[int, ...], dtype: Any, packing: ObsPacking | None) -> str:
    """How one observation is stored, for messages: ``(16, 16, 3) uint8``, or for a packed one ``(778,) float32
    stored as 768 uint8 pixels + 10 float32``."""
    text = f"{tuple(shape)} {np.dtype(dtype)}"
    if packing is not None:
        text += f" stored as {packing.pixel_width} uint8 pixels + {packing.value_width} float32"
    return text


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
        "observations (a resize or grey-scale wrapper in env.wrappers: gymnasium.wrappers:GrayscaleObservation, or "
        "ResizeObservation with opencv-python installed, for a gymnasium env; agentkit_envs.frames:ShrinkFrames for "
        "a pettingzoo one)."
    )
