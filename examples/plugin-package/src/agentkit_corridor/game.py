"""Corridor: walk along a corridor of ``length`` cells to the coin. A plain gymnasium env, nothing agentkit.

Observation: a Dict with ``observation`` = [agent position, coin position] scaled to [0, 1], and
``action_mask`` = which of (left, stay, right) is allowed (no walking into the walls): agentkit's
gymnasium adapter splits the mask off and the policy never picks a masked action.
Reward: +1 for reaching the coin (the episode terminates), -0.01 per step otherwise.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_ID = "agentkit_corridor/Corridor-v0"
LEFT, STAY, RIGHT = 0, 1, 2
CELL = 16  # pixels per cell in rgb_array frames


class CorridorEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, length: int = 8, render_mode: str | None = None):
        if length < 2:
            raise ValueError(f"length must be at least 2, got {length}")
        self.length = length
        self.render_mode = render_mode
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32),
                "action_mask": spaces.MultiBinary(3),
            }
        )
        self.action_space = spaces.Discrete(3)
        self.agent = 0
        self.coin = 1

    def _obs(self) -> dict[str, np.ndarray]:
        scale = self.length - 1
        mask = np.array([self.agent > 0, True, self.agent < self.length - 1], dtype=np.int8)
        position = np.array([self.agent / scale, self.coin / scale], dtype=np.float32)
        return {"observation": position, "action_mask": mask}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.agent, self.coin = (int(x) for x in self.np_random.choice(self.length, size=2, replace=False))
        return self._obs(), {}

    def step(self, action):
        action = int(action)
        if action not in (LEFT, STAY, RIGHT):
            raise ValueError(f"action must be 0 (left), 1 (stay) or 2 (right), got {action}")
        self.agent = int(np.clip(self.agent + action - 1, 0, self.length - 1))
        reached = self.agent == self.coin
        return self._obs(), (1.0 if reached else -0.01), reached, False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        frame = np.full((CELL, self.length * CELL, 3), 40, dtype=np.uint8)
        frame[:, self.coin * CELL : (self.coin + 1) * CELL] = (230, 190, 40)
        frame[2:-2, self.agent * CELL + 2 : (self.agent + 1) * CELL - 2] = (60, 140, 230)
        return frame
