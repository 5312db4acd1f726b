"""Per-agent image wrappers for PettingZoo parallel envs: shrink (and grey) each agent's frame, stack the last few.

    env:
      plugin: pettingzoo
      module: pettingzoo.butterfly.pistonball_v6
      wrappers:
        - {wrapper: "agentkit_envs.frames:ShrinkFrames", kwargs: {factor: 8, grey: true}}
        - {wrapper: "agentkit_envs.frames:StackFrames", kwargs: {stack_size: 4}}

What SuperSuit's ``color_reduction_v0`` / ``resize_v1`` / ``frame_stack_v1`` do for PettingZoo's pixel envs
(and gymnasium's ``GrayscaleObservation`` / ``FrameStackObservation`` for a single-agent env, which cannot wrap a
``ParallelEnv``), without SuperSuit's resize dependency: shrinking is an integer block mean, as
``agentkit_envs.pixels`` does for rendered frames. Observations stay uint8 images, so ``policy.encoder: auto``
still picks the CNN; a stack has gymnasium's ``FrameStackObservation`` shape ``[stack, H, W, C]`` (layout
``SHWC``, which the CNN reads as ``stack * C`` channels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo.utils import BaseParallelWrapper
from pettingzoo.utils.env import ParallelEnv

from agentkit.encoders import image_layout
from agentkit.errors import ConfigError

from .pixels import block_mean, block_sums, rounded_quotient

#: ITU-R BT.601 luma weights in 1/256ths (they sum to 256).
_LUMA = np.array([77, 150, 29], dtype=np.uint32)


class ShrinkFrames(BaseParallelWrapper):
    """Each agent's uint8 ``[H, W, C]`` frame as the mean of ``factor`` x ``factor`` pixel blocks (the last
    ``H % factor`` rows and ``W % factor`` columns are dropped), in grey ``[H // factor, W // factor, 1]`` when
    ``grey`` (BT.601 luma of RGB), else with its own channels. Pistonball's 457x120x3 at 8, grey: 57x15x1."""

    def __init__(self, env: ParallelEnv, factor: int = 4, grey: bool = True):
        super().__init__(env)
        self.metadata = env.metadata  # the base class has its own (empty) metadata, which would hide the env's
        if int(factor) < 1:
            raise ConfigError(f"ShrinkFrames: factor must be a whole number >= 1 (got {factor!r}).")
        self.factor, self.grey = int(factor), bool(grey)
        self._spaces: dict[str, spaces.Box] = {}
        for agent in env.possible_agents:
            space = env.observation_space(agent)
            if image_layout(space) != "HWC" or (grey and space.shape[-1] < 3):
                raise ConfigError(
                    f"ShrinkFrames: agent {agent!r} observes {space}, not a uint8 [H, W, C] image"
                    + (" with RGB channels (give grey: false)" if image_layout(space) == "HWC" else "") + "."
                )
            h, w, c = space.shape
            if h < self.factor or w < self.factor:
                raise ConfigError(f"ShrinkFrames: factor {factor} is larger than the {h}x{w} frame of agent {agent!r}.")
            self._spaces[agent] = spaces.Box(0, 255, (h // self.factor, w // self.factor, 1 if grey else c), np.uint8)

    def observation_space(self, agent: str) -> spaces.Box:
        return self._spaces[agent]

    def _shrink(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for agent, frame in obs.items():
            h, w, _ = self._spaces[agent].shape
            frame = np.asarray(frame)[: h * self.factor, : w * self.factor]
            if self.grey:  # block sums first, luma of them: the weighting then runs on 1/factor² of the pixels
                luma = block_sums(frame[..., :3], self.factor, self.factor) @ _LUMA  # x256
                out[agent] = rounded_quotient(luma[..., None], 256 * self.factor**2)
            else:
                out[agent] = block_mean(frame, self.factor, self.factor)
        return out

    def reset(self, seed: int | None = None, options: dict | None = None) -> Any:
        obs, infos = self.env.reset(seed=seed, options=options)
        return self._shrink(obs), infos

    def step(self, actions: dict[str, Any]) -> Any:
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        return self._shrink(obs), rewards, terms, truncs, infos


class StackFrames(BaseParallelWrapper):
    """Each agent's last ``stack_size`` observations, oldest first, as ``[stack_size, *shape]`` (gymnasium's
    ``FrameStackObservation`` with its default ``padding_type="reset"``: after a reset the stack holds the reset
    observation ``stack_size`` times). Motion, such as a ball's, is what a single frame lacks."""

    def __init__(self, env: ParallelEnv, stack_size: int = 4):
        super().__init__(env)
        self.metadata = env.metadata
        if int(stack_size) < 1:
            raise ConfigError(f"StackFrames: stack_size must be a whole number >= 1 (got {stack_size!r}).")
        self.stack_size = int(stack_size)
        self._spaces = {}
        for agent in env.possible_agents:
            space = env.observation_space(agent)
            if not isinstance(space, spaces.Box):
                raise ConfigError(f"StackFrames: agent {agent!r} observes {space}; only Box observations stack.")
            self._spaces[agent] = spaces.Box(
                np.repeat(space.low[None], self.stack_size, 0), np.repeat(space.high[None], self.stack_size, 0),
                dtype=space.dtype)
        self._stacks: dict[str, np.ndarray] = {}

    def observation_space(self, agent: str) -> spaces.Box:
        return self._spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> Any:
        obs, infos = self.env.reset(seed=seed, options=options)
        self._stacks = {a: np.repeat(np.asarray(o)[None], self.stack_size, 0) for a, o in obs.items()}
        return {a: s.copy() for a, s in self._stacks.items()}, infos

    def step(self, actions: dict[str, Any]) -> Any:
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        out = {}
        for agent, o in obs.items():
            stack = self._stacks[agent]
            stack[:-1] = stack[1:]
            stack[-1] = o
            out[agent] = stack.copy()  # the caller may keep it; the next step overwrites the stack
        return out, rewards, terms, truncs, infos
