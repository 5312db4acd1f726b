"""Tiny PettingZoo parallel envs for the multi-agent tests (importable as ``ma_test_envs``).

``DeathEnv``: agents ``a_0..a_{n-1}``; agent i terminates (dies) after ``deaths[i]`` steps, the survivors
are truncated at ``max_cycles``. Every observation is a Dict with an ``action_mask`` that allows only action
``t % 3`` at step t; the env raises if it receives a masked action or an action for a dead agent, so a test
passes only if masks and deaths flow through the adapter and the algorithm correctly. Each living agent gets
reward 1 per step, so agent i's episode return is its number of steps.
"""

from __future__ import annotations

import functools

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class DeathEnv(ParallelEnv):
    metadata = {"name": "death_v0", "render_modes": []}

    def __init__(self, n: int = 3, deaths: tuple[int, ...] = (2, 4), max_cycles: int = 6, render_mode=None):
        self.possible_agents = [f"a_{i}" for i in range(n)]
        self.deaths = {a: (deaths[i] if i < len(deaths) else None) for i, a in enumerate(self.possible_agents)}
        self.max_cycles = max_cycles
        self.render_mode = render_mode
        self.received: list[dict[str, int]] = []

    @functools.cache  # noqa: B019 - pettingzoo wants the same space object every call
    def observation_space(self, agent):
        return spaces.Dict(
            {
                "observation": spaces.Box(-100.0, 100.0, (4,), np.float32),
                "action_mask": spaces.Box(0, 1, (3,), np.int8),
            }
        )

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return spaces.Discrete(3)

    def _obs(self, agent):
        i = self.possible_agents.index(agent)
        mask = np.zeros(3, np.int8)
        mask[self.t % 3] = 1
        return {"observation": np.array([i + 1, self.t + 1, 1.0, -1.0], np.float32), "action_mask": mask}

    def state(self):
        alive = [float(a in self.agents) for a in self.possible_agents]
        return np.array([self.t, *alive], np.float32)

    def reset(self, seed=None, options=None):
        self.t = 0
        self.agents = list(self.possible_agents)
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        if set(actions) != set(self.agents):
            raise AssertionError(f"step got actions for {sorted(actions)}, living agents are {self.agents}")
        for agent, action in actions.items():
            if int(action) != self.t % 3:
                raise AssertionError(f"{agent} took masked action {action} at step {self.t}")
        self.received.append({a: int(x) for a, x in actions.items()})
        self.t += 1
        rewards = {a: 1.0 for a in self.agents}
        terms = {a: self.deaths[a] is not None and self.t >= self.deaths[a] for a in self.agents}
        truncs = {a: self.t >= self.max_cycles and not terms[a] for a in self.agents}
        obs = {a: self._obs(a) for a in self.agents}
        infos = {a: {} for a in self.agents}
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos

    def close(self):
        pass


def parallel_env(**kwargs) -> DeathEnv:
    return DeathEnv(**kwargs)


class PlatformEnv(ParallelEnv):
    """Two agents whose parameterised actions are declared as gym-platform does: a type plus one Box of
    parameters per type. The env raises unless every action is in that form, with the chosen type's Box as
    sent and the other Boxes 0; ``received`` keeps what it got."""

    metadata = {"name": "platform_v0", "render_modes": []}

    def __init__(self, render_mode=None):
        self.possible_agents = ["p_0", "p_1"]
        self.render_mode = render_mode
        self.received: list[dict] = []

    @functools.cache  # noqa: B019
    def observation_space(self, agent):
        return spaces.Box(-1.0, 1.0, (2,), np.float32)

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return spaces.Tuple((spaces.Discrete(2), spaces.Tuple((spaces.Box(0, 1, (1,), np.float32),
                                                               spaces.Box(-1, 1, (2,), np.float32)))))

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        return {a: np.zeros(2, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        for agent, action in actions.items():
            if not self.action_space(agent).contains(action):
                raise AssertionError(f"{agent}: {action} is not in the env's own action space")
            kind, boxes = action
            if any(box.any() for i, box in enumerate(boxes) if i != kind):
                raise AssertionError(f"{agent}: the Boxes of the types not chosen are not 0: {action}")
        self.received.append(actions)
        zeros = dict.fromkeys(self.agents, False)
        return ({a: np.zeros(2, np.float32) for a in self.agents}, dict.fromkeys(self.agents, 0.0), zeros,
                dict(zeros), {a: {} for a in self.agents})

    def close(self):
        pass


def platform_env(**kwargs) -> PlatformEnv:
    return PlatformEnv(**kwargs)


class ButtonsEnv(PlatformEnv):
    """Two agents that press MultiBinary(3) buttons; the env raises unless each action is in that space."""

    metadata = {"name": "buttons_v0", "render_modes": []}

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return spaces.MultiBinary(3)

    def step(self, actions):
        for agent, action in actions.items():
            if not self.action_space(agent).contains(action):
                raise AssertionError(f"{agent}: {action!r} is not a MultiBinary(3) action")
        self.received.append(actions)
        zeros = dict.fromkeys(self.agents, False)
        rewards = {a: float(np.asarray(x).sum()) for a, x in actions.items()}
        return ({a: np.zeros(2, np.float32) for a in self.agents}, rewards, zeros, dict(zeros),
                {a: {} for a in self.agents})


def buttons_env(**kwargs) -> ButtonsEnv:
    return ButtonsEnv(**kwargs)
