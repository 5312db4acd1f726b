"""How an env's raw observation becomes the array a policy takes, and the action mask.

Both env plugins use ``ObservationLayout``. A Box observation keeps its own shape (a camera image stays
``[H, W, C]``) and, when it is uint8 (pixels), its dtype; any other Box dtype becomes float32. Any other supported
observation — a Discrete, MultiDiscrete or MultiBinary value, or a Dict or a Tuple of Box, Discrete,
MultiDiscrete and MultiBinary entries — is described by ``fields`` (gymnasium's ``spaces.flatten`` rule: Dict
entries in the Dict's key order, Tuple entries in order, categories one-hot) and flattened by
``agentkit.runtime.observation.flatten``, the
function the runtimes use on an export's ``metadata.observation.fields``. An ``action_mask`` entry of a Dict
is not part of the observation: it is split off as the action mask (PettingZoo's convention).
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agentkit.errors import ConfigError
from agentkit.runtime.observation import flat_width, flatten

MASK_KEY = "action_mask"


class ObservationLayout:
    """One agent's raw observation space, split into the flat observation ``space`` and the mask.

    Attributes:
        raw_space: the env's own observation space.
        space: the Box the policy takes: a Box observation's own shape (uint8 kept, other dtypes float32), or
            the flat float32 vector of a Dict, Tuple or category observation.
        fields: None for a Box observation, else the flattening (``metadata.observation.fields``).
        mask_key: whether the raw observation is a Dict with an ``action_mask`` entry.
        mask_dim: width of that mask (0 without one).
        obs_dim: the number of values in one observation (``prod(space.shape)``).
        key: hashable; equal for spaces a policy can share (same flat space, fields and mask width).
    """

    def __init__(self, space: gym.Space, owner: str):
        """``owner`` names the env (or agent) in error messages, e.g. ``"env.id 'CartPole-v1'"``."""
        self.raw_space = space
        self.mask_key = isinstance(space, spaces.Dict) and MASK_KEY in space.spaces
        obs_space: gym.Space = space
        self.mask_dim = 0
        if isinstance(space, spaces.Dict) and self.mask_key:
            self.mask_dim = int(spaces.flatdim(space.spaces[MASK_KEY]))
            rest = {k: v for k, v in space.spaces.items() if k != MASK_KEY}
            if not rest:
                raise ConfigError(f"{owner}: the Dict observation {space} has an 'action_mask' and nothing else.")
            obs_space = spaces.Dict(rest)
        if isinstance(obs_space, spaces.Box):
            self.fields: list[dict[str, Any]] | None = None
            self._box_shape = tuple(obs_space.shape)
            dtype: Any = np.uint8 if obs_space.dtype == np.uint8 else np.float32
            self.space = spaces.Box(obs_space.low.astype(dtype), obs_space.high.astype(dtype), dtype=dtype)
        else:
            self.fields = _fields(obs_space, owner)
            low, high = _bounds(obs_space, self.fields)
            self.space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.obs_dim = int(np.prod(self.space.shape, dtype=np.int64))
        # PettingZoo's {"observation": Box, "action_mask": ...}: one Box entry is only a reshape, and this runs
        # per agent and step, so it skips the general flatten (measured ≈ 3 µs of its ≈ 6 µs per call)
        only = self.fields[0] if self.fields is not None and len(self.fields) == 1 else None
        self._only_box = only if only is not None and only["encoding"] == "box" and only["key"] is not None else None
        self.key = (tuple(self.space.shape), str(self.space.dtype), self.space.low.tobytes(),
                    self.space.high.tobytes(), json.dumps(self.fields), self.mask_dim)

    def split(self, raw: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """One observation or a batch (as the env gives it) → (``[B, *space.shape]`` in ``space.dtype``, bool
        mask ``[B, M]`` or None when the observation carries none)."""
        mask = None
        if self.mask_key:
            mask = np.asarray(raw[MASK_KEY]).astype(bool)
        if self.fields is None:
            obs = np.asarray(raw, dtype=self.space.dtype)
            obs = obs.reshape(1 if obs.shape == self._box_shape else obs.shape[0], *self._box_shape)
        elif self._only_box is not None:
            obs = np.asarray(raw[self._only_box["key"]], dtype=np.float32)
            obs = obs.reshape(1 if obs.ndim == len(self._only_box["shape"]) else obs.shape[0], self.obs_dim)
        else:
            obs, _ = flatten(self.fields, raw)
        if mask is not None:
            mask = mask.reshape(obs.shape[0], self.mask_dim)
        return obs, mask


def _entries(space: gym.Space) -> dict[str | int | None, gym.Space]:
    """The entries a space flattens from: a Dict's by name, a Tuple's by position, else the space itself."""
    if isinstance(space, spaces.Dict):
        return {key: value for key, value in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return dict(enumerate(space.spaces))
    return {None: space}


def _fields(space: gym.Space, owner: str) -> list[dict[str, Any]]:
    entries = list(_entries(space).items())
    fields, start = [], 0
    for key, entry in entries:
        field: dict[str, Any] = {"key": key, "shape": [int(d) for d in entry.shape or ()], "start": start}
        if isinstance(entry, (spaces.Box, spaces.MultiBinary)):
            field.update(encoding="box", size=int(np.prod(entry.shape, dtype=np.int64)))
        elif isinstance(entry, (spaces.Discrete, spaces.MultiDiscrete)):
            nvec = np.asarray(entry.n if isinstance(entry, spaces.Discrete) else entry.nvec)
            first = np.broadcast_to(np.asarray(entry.start), nvec.shape)
            field.update(encoding="one_hot", size=int(nvec.sum()), n=nvec.reshape(-1).tolist(),
                         first=first.reshape(-1).tolist())
        else:
            where = f"entry {key!r}" if key is not None else "space"
            raise ConfigError(
                f"{owner}: the observation {where} is {entry}; agentkit takes Box, Discrete, MultiDiscrete and "
                "MultiBinary observations and Dicts or Tuples of them (one level; a Dict may add an 'action_mask' "
                f"entry). {_fix_hint(space, key)}"
            )
        fields.append(field)
        start += field["size"]
    return fields


_SUPPORTED = (spaces.Box, spaces.MultiBinary, spaces.Discrete, spaces.MultiDiscrete)


def _fix_hint(space: gym.Space, bad_key: Any) -> str:
    """A wrapper that turns ``space`` into one agentkit takes, for ``env.wrappers`` — only one that works on
    this space: FlattenObservation fails on a Text entry (MiniGrid's mission), so a Dict keeps its supported
    entries with FilterObservation instead."""
    if isinstance(space, spaces.Dict):
        keep = [k for k, v in space.spaces.items() if isinstance(v, _SUPPORTED)]
        if keep:
            return (
                f"Keep the entries agentkit takes with env.wrappers: [{{wrapper: "
                f"\"gymnasium.wrappers:FilterObservation\", kwargs: {{filter_keys: {keep}}}}}] (MiniGrid: "
                "minigrid.wrappers:ImgObsWrapper keeps only its image)."
            )
    try:
        spaces.flatdim(space)
    except (NotImplementedError, ValueError, TypeError):
        return (
            f"Wrap the env so that its observation leaves out the {'entry ' + repr(bad_key) if bad_key is not None else 'space'} "
            "(an observation wrapper listed in env.wrappers, or a plugin module)."
        )
    return (
        "Flatten it with env.wrappers: [{wrapper: \"gymnasium.wrappers:FlattenObservation\"}] (gymnasium can "
        "flatten this space)."
    )


def _bounds(space: gym.Space, fields: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.zeros(flat_width(fields), np.float32), np.ones(flat_width(fields), np.float32)
    entries = _entries(space)
    for field in fields:
        entry = entries[field["key"]]
        if isinstance(entry, spaces.Box):
            span = slice(field["start"], field["start"] + field["size"])
            low[span], high[span] = entry.low.reshape(-1), entry.high.reshape(-1)
    return low, high
