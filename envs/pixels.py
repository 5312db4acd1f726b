"""``RenderedPixels``: a gymnasium env seen through its own ``rgb_array`` frames, shrunk to a small image.

    env:
      id: agentkit/Dungeon-v0
      kwargs: {render_mode: rgb_array}
      wrappers: [{wrapper: "agentkit_envs.pixels:RenderedPixels", kwargs: {size: 32}}]

The observation becomes the frame ``env.render()`` draws after each reset and step, area-averaged by an
integer factor to ``size`` × ``size`` (uint8 ``[size, size, 3]``, HWC), so that the CNN encoder trains on what a
player sees. An ``action_mask`` entry of a Dict observation is kept beside it (``{"pixels": ..., "action_mask":
...}``), so masked games stay masked. No resize library is needed: the frame's sides must be multiples of ``size``
(Dungeon's 8×8 board is 256 px: sizes 128, 64, 32, 16 or 8).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agentkit.errors import ConfigError
from agentkit.observations import MASK_KEY


def block_sums(frame: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """The uint32 sum of each ``fy`` x ``fx`` block of ``frame`` ``[H, W, C]`` (H, W multiples of them)."""
    rows, cols = frame.shape[0] // fy, frame.shape[1] // fx
    blocks = frame.reshape(rows, fy, cols, fx, frame.shape[2])
    # one add per row (then column) of the blocks, on whole slices: ~1.5x faster than a sum over an axis and
    # ~10x faster than a float mean over both (which cost 2/3 of a Dungeon step)
    sums = blocks[:, 0].astype(np.uint32)
    for i in range(1, fy):
        sums += blocks[:, i]
    out = sums[:, :, 0].copy()
    for j in range(1, fx):
        out += sums[:, :, j]
    return out


def rounded_quotient(sums: np.ndarray, divisor: int) -> np.ndarray:
    """``sums / divisor`` as uint8, rounded half to even (as np.rint rounds)."""
    quotient, rest = np.divmod(sums, divisor)
    up = (2 * rest > divisor) | ((2 * rest == divisor) & (quotient % 2 == 1))
    return (quotient + up).astype(np.uint8)


def block_mean(frame: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """The uint8 mean of each ``fy`` x ``fx`` block of ``frame`` ``[H, W, C]`` (H, W multiples of them)."""
    return rounded_quotient(block_sums(frame, fy, fx), fy * fx)


class RenderedPixels(gym.ObservationWrapper):
    """The env's rendered frame, area-averaged to ``size`` × ``size`` uint8 RGB (plus its action mask, if any)."""

    def __init__(self, env: gym.Env, size: int = 32):
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ConfigError(
                f"RenderedPixels: the env must be made with render_mode 'rgb_array' (it has {env.render_mode!r}); "
                "add env.kwargs: {render_mode: rgb_array}."
            )
        env.reset(seed=0)
        frame = np.asarray(env.render())
        h, w = frame.shape[:2]
        if frame.ndim != 3 or h % size or w % size:
            raise ConfigError(
                f"RenderedPixels: size {size} does not divide the env's {h}x{w} frame; give a size whose multiples "
                "are its sides."
            )
        self.size, self._fy, self._fx = int(size), h // size, w // size
        self._rows, self._cols = h // self._fy, w // self._fx
        pixels = spaces.Box(0, 255, (self._rows, self._cols, 3), np.uint8)
        inner = env.observation_space
        self._mask = isinstance(inner, spaces.Dict) and MASK_KEY in inner.spaces
        self.observation_space = (spaces.Dict({"pixels": pixels, MASK_KEY: inner.spaces[MASK_KEY]})
                                  if self._mask else pixels)

    def _frame(self) -> np.ndarray:
        return block_mean(np.asarray(self.env.render())[..., :3], self._fy, self._fx)

    def observation(self, observation: Any) -> Any:
        pixels = self._frame()
        return {"pixels": pixels, MASK_KEY: observation[MASK_KEY]} if self._mask else pixels
