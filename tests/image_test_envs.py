"""Tiny image envs for the image tests (importable as ``image_test_envs``; gymnasium ids through
``image_test_envs:BrightSide-v0``).

``BrightSide``: a 16×16 RGB uint8 frame (HWC) with a bright 6×6 patch on its left or right half; action 0
says left, 1 right; reward 1 for the right answer. Episodes are 8 frames. A policy can only do better than
chance (return 4) by looking at the pixels.

``BrightSideParallel``: the same game for two PettingZoo agents, each with its own frame and patch
(``hud=True``: each frame in a Dict beside the step as a fraction, as BrightSideDict).

``BrightSideDict``: BrightSide's frame in a Dict beside a vector and a category (a camera and a HUD).

``BigFrames``: a 256×256 RGB env (for the memory check: its storage, not its game, matters).
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

SIZE = 16
EPISODE = 8


def frame(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, int]:
    """A dim noisy frame with a bright patch on a random side; returns (frame, side)."""
    img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    side = int(rng.integers(0, 2))
    col = 1 if side == 0 else size // 2 + 1
    row = int(rng.integers(0, size - 6))
    img[row:row + 6, col:col + 6] = 250
    return img, side


class BrightSide(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, size: int = SIZE, render_mode: str | None = None):
        self.size = size
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = spaces.Discrete(2)
        self.render_mode = render_mode

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.img, self.side = frame(self.np_random, self.size)
        return self.img.copy(), {}

    def step(self, action):
        reward = float(int(action) == self.side)
        self.t += 1
        self.img, self.side = frame(self.np_random, self.size)
        return self.img.copy(), reward, False, self.t >= EPISODE, {}

    def render(self):
        return self.img.copy()


class Invert(gym.ObservationWrapper):
    """255 - frame: a wrapper from a module that is not gymnasium's (for the trust check of env.wrappers)."""

    def observation(self, observation):
        return 255 - observation


class BrightSideDict(BrightSide):
    """BrightSide observed as a Dict: the frame beside a vector (the step as a fraction) and a category (the
    step), as a game with a camera and a HUD would observe."""

    def __init__(self, size: int = SIZE, render_mode: str | None = None):
        super().__init__(size, render_mode)
        self.observation_space = spaces.Dict({
            "frame": spaces.Box(0, 255, (size, size, 3), np.uint8),
            "progress": spaces.Box(0.0, 1.0, (1,), np.float32), "step": spaces.Discrete(EPISODE + 1),
        })

    def _dict(self, img):
        return {"frame": img, "progress": np.array([self.t / EPISODE], np.float32), "step": self.t}

    def reset(self, seed=None, options=None):
        img, info = super().reset(seed=seed, options=options)
        return self._dict(img), info

    def step(self, action):
        img, reward, terminated, truncated, info = super().step(action)
        return self._dict(img), reward, terminated, truncated, info


gym.register("BrightSide-v0", entry_point=BrightSide)
gym.register("BrightSideDict-v0", entry_point=BrightSideDict)
gym.register("BigFrames-v0", entry_point=BrightSide, kwargs={"size": 256})


class BrightSideParallel(ParallelEnv):
    metadata = {"name": "bright_side_v0", "render_modes": []}

    def __init__(self, n: int = 2, render_mode=None, hud: bool = False):
        self.possible_agents = [f"eye_{i}" for i in range(n)]
        self.render_mode = render_mode
        self.hud = hud

    @functools.cache  # noqa: B019 - pettingzoo wants the same space object every call
    def observation_space(self, agent):
        frame_space = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        if self.hud:
            return spaces.Dict({"frame": frame_space, "progress": spaces.Box(0.0, 1.0, (1,), np.float32)})
        return frame_space

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.t = 0
        return self._observe(), {a: {} for a in self.agents}

    def _observe(self):
        self.sides = {}
        out = {}
        for a in self.agents:
            out[a], self.sides[a] = frame(self.rng)
            if self.hud:
                out[a] = {"frame": out[a], "progress": np.array([self.t / EPISODE], np.float32)}
        return out

    def step(self, actions):
        rewards = {a: float(int(actions[a]) == self.sides[a]) for a in self.agents}
        self.t += 1
        obs = self._observe()
        done = self.t >= EPISODE
        agents = list(self.agents)
        if done:
            self.agents = []
        return obs, rewards, {a: False for a in agents}, {a: done for a in agents}, {a: {} for a in agents}


def parallel_env(**kwargs):
    return BrightSideParallel(**kwargs)
