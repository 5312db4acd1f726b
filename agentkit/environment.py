"""The collection interface: what an env plugin hands the algorithms.

An env plugin's factory returns an ``EnvSource``; ``EnvSource.make_vec`` returns a ``VecEnv``, the one
interface collection goes through (local gymnasium/pettingzoo vector envs now; remote rollout workers
could implement the same protocol later). Everything crossing it is a typed container of numpy arrays.

Shapes: single-agent arrays are ``[N, ...]`` (N env copies). Multi-agent arrays carry an agent axis,
``[N, A, ...]``, with ``alive [N, A]`` telling which agents act this step; ``state [N, S]`` is the global
state for centralised critics.

Masks reach the heads the same way for every env: an ``action_mask`` key in a Dict observation
(PettingZoo's convention: ``{"observation": ..., "action_mask": ...}``) or ``info["action_mask"]``.
The adapter splits it off into ``Observation.mask`` (bool, True = allowed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from agentkit.errors import ConfigError, InvalidInputError


@dataclass
class Observation:
    """What the policy sees at one step for all env copies (and agents)."""

    obs: np.ndarray  # float32 [N, *obs_shape] or [N, A, *obs_shape]
    mask: np.ndarray | None = None  # bool [N, mask_dim] or [N, A, mask_dim]
    state: np.ndarray | None = None  # float32 [N, state_dim]: global state (multi-agent)
    alive: np.ndarray | None = None  # bool [N, A]: which agents act (multi-agent)


@dataclass
class Transition:
    """The result of one vector step. ``next`` is already reset where an episode ended."""

    next: Observation
    reward: np.ndarray  # float32 [N] or [N, A]
    terminated: np.ndarray  # bool [N] or [N, A]
    truncated: np.ndarray  # bool [N] or [N, A]
    final_obs: np.ndarray | None = None  # obs where an episode was truncated, for bootstrapping
    final_state: np.ndarray | None = None  # global state at truncation (multi-agent)
    episode_returns: list[float] = field(default_factory=list)  # episodes that ended this step
    episode_lengths: list[int] = field(default_factory=list)
    infos: dict[str, Any] = field(default_factory=dict)
    # per ended episode (aligned with episode_returns): the numeric scalars of the env's info at its last step
    episode_infos: list[dict[str, float]] = field(default_factory=list)


def is_info_metric(value: Any) -> bool:
    """Whether an info entry is a figure to average over episodes: a float or a bool (a rate), numpy's too.

    Integers are left out: in infos they name things (an action index, a team or agent number, a level),
    whose mean means nothing; an env that wants an integer count averaged reports it as a float.
    """
    if isinstance(value, np.ndarray):
        return value.dtype == np.bool_ or np.issubdtype(value.dtype, np.floating)
    return isinstance(value, (bool, float, np.bool_, np.floating))


def mean_episode_infos(episode_infos: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each numeric info figure over the episodes that reported it (``episode_infos``, one dict
    per ended episode): Team Arena's ``win`` becomes the win rate."""
    values: dict[str, list[float]] = {}
    for infos in episode_infos:
        for key, value in infos.items():
            values.setdefault(key, []).append(value)
    return {key: float(np.mean(v)) for key, v in values.items()}


class VecEnv(Protocol):
    """N env copies stepped together, auto-resetting (same-step: ``Transition.next`` is the new start)."""

    num_envs: int
    observation_space: gym.spaces.Box  # one agent's observation, mask removed
    action_space: gym.Space  # one agent's action space

    def reset(self, seed: int | None = None) -> Observation: ...

    def step(self, actions: Any) -> Transition: ...

    def render(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class EnvSource(Protocol):
    """What an env plugin's factory returns: a description of the env and a way to make vector envs.

    Every attribute is declared (``agentkit.envcheck.CheckedSource``, the door every source goes through,
    names a missing one): algorithms, eval and export read them as they are, never probing.
    """

    env_id: str
    multi_agent: bool
    observation_space: gym.spaces.Box
    action_space: gym.Space
    has_mask: bool
    # how the raw observation is flattened into observation_space (agentkit.observations'
    # ObservationLayout.fields); exports carry it. None: a Box observation, reshaped.
    observation_fields: list[dict[str, Any]] | None
    # True when the source bounds env.step_timeout itself, with messages that know more (the remote plugin);
    # the env boundary's clock then only times calls
    enforces_step_timeout: bool

    def make_vec(self, num_envs: int, seed: int, render_mode: str | None = None) -> VecEnv: ...

    def close(self) -> None:
        """Release what the source itself holds (a bridged game's listening port and spare instances); called
        once when the run, eval or export that built it ends. Each vector env is closed on its own; a source
        that holds nothing between them writes ``def close(self): pass``."""
        ...


# -- multi-agent ---------------------------------------------------------------------------------------------
# Agents are grouped into policy groups (one trained policy per group). Every array of a group carries the
# group's agent axis, in ``GroupSpec.agents`` order: obs ``[N, A_g, D_g]``. See docs/multi-agent.md.


@dataclass
class GroupSpec:
    """One policy group: agents with the same observation and action spaces that share one policy."""

    name: str
    agents: list[str]  # the group's agent axis, in this order
    observation_space: gym.spaces.Box  # one agent's flat observation, mask removed
    action_space: gym.Space
    mask_dim: int = 0  # width of Observation.mask (0: the env gives no action mask)
    # how one agent's raw observation is flattened (agentkit.observations); None: a Box, reshaped
    observation_fields: list[dict[str, Any]] | None = None


def _group_name(agents: list[str]) -> str:
    """`agent_0, agent_1` → `agent`; `speaker_0` → `speaker`; no common prefix (`blue_0, red_0`) → `agents`."""
    base = os.path.commonprefix(agents).rstrip("_-0123456789")
    return base or (agents[0] if len(agents) == 1 else "agents")


def group_agents(agents: list[str], signature: dict[str, Any], named: dict[str, list[str]] | None = None,
                 what: str = "the env") -> dict[str, list[str]]:
    """The policy groups of a multi-agent env: ``{group name: its agents}``, the one rule every env plugin uses.

    ``signature[agent]`` is what agents must share to share a policy (their observation layout, action space,
    mask width), compared with ``==``. ``named`` (the user's ``env.groups``) is checked: every agent in
    exactly one group, no empty group, members of a group with equal signatures; ``ConfigError`` names the
    culprit. ``None``: agents with equal signatures are grouped in ``agents`` order, each group named after
    its agents' common prefix (``agent_0, agent_1`` → ``agent``).
    """
    if named is None:
        buckets: list[list[str]] = []
        for agent in agents:
            for bucket in buckets:
                if signature[bucket[0]] == signature[agent]:
                    bucket.append(agent)
                    break
            else:
                buckets.append([agent])
        groups: dict[str, list[str]] = {}
        for bucket in buckets:
            name = _group_name(bucket)
            while name in groups:
                name += "_"
            groups[name] = bucket
        return groups
    seen: dict[str, str] = {}
    for gname, members in named.items():
        if not members:
            raise ConfigError(f"env.groups.{gname}: a group needs at least one agent.")
        for agent in members:
            if agent not in signature:
                raise ConfigError(f"env.groups.{gname}: unknown agent {agent!r}; {what}'s agents are {agents}.")
            if agent in seen:
                raise ConfigError(f"env.groups: agent {agent!r} is in both {seen[agent]!r} and {gname!r}; put it in one.")
            seen[agent] = gname
            if signature[agent] != signature[members[0]]:
                raise ConfigError(
                    f"env.groups.{gname}: agents {members[0]!r} and {agent!r} have different observation or action "
                    "spaces or masks, so they cannot share a policy; put them in different groups."
                )
    missing = [a for a in agents if a not in seen]
    if missing:
        raise ConfigError(f"env.groups: agents {missing} are in no group; every agent needs one.")
    return {name: list(members) for name, members in named.items()}


def require_every_group(groups: dict[str, GroupSpec], actions: dict[str, Any]) -> None:
    """``InvalidInputError`` naming the first group that ``actions`` (a multi-agent ``step`` argument) leaves out."""
    for name in groups:
        if name not in actions:
            raise InvalidInputError(f"step: no actions for group {name!r}; pass one batch per group ({list(groups)}).")


@dataclass
class MultiAgentTransition:
    """One multi-agent vector step: a ``Transition`` per group plus whole-episode figures.

    ``episode_returns`` holds, for each episode that ended this step, the mean over all agents of each
    agent's summed reward (the "mean per-agent episode return"); ``group_returns[g]`` the same mean over
    group g's agents only (aligned with ``episode_returns``); ``episode_envs`` the env copies that ended;
    ``episode_infos`` the numeric scalars the env put in its agents' infos during the episode (a game's
    ``win``, say): each key's last value per agent, averaged over the agents that reported it;
    ``agent_returns`` each agent's own summed reward (what a zero-sum game's sides are judged by).
    """

    groups: dict[str, Transition]
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    group_returns: dict[str, list[float]] = field(default_factory=dict)
    episode_envs: list[int] = field(default_factory=list)
    episode_infos: list[dict[str, float]] = field(default_factory=list)
    agent_returns: list[dict[str, float]] = field(default_factory=list)


class MultiAgentVecEnv(Protocol):
    """N multi-agent env copies stepped together, auto-resetting like ``VecEnv``.

    ``reset`` returns one ``Observation`` per group (all with ``alive`` and the same ``state``); ``step``
    takes, per group, the batched action a gymnasium vector env of ``N * A_g`` copies of the group's action
    space would take (rows env-major: row ``n * A_g + a`` is agent ``a`` of env copy ``n``; i.e. what
    ``head.to_env`` returns for the flattened batch). Actions on rows of agents that are not alive are ignored.
    """

    num_envs: int
    groups: dict[str, GroupSpec]
    state_dim: int

    def reset(self, seed: int | None = None) -> dict[str, Observation]: ...

    def step(self, actions: dict[str, Any]) -> MultiAgentTransition: ...

    def render(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class MultiAgentEnvSource(Protocol):
    """What a multi-agent env plugin's factory returns (``multi_agent`` True): the env's description, read
    without making a vector env (algorithms build their networks from it, so eval and export open none),
    and a way to make ``MultiAgentVecEnv``s whose ``groups`` and ``state_dim`` are these."""

    env_id: str
    multi_agent: bool
    observation_space: gym.spaces.Box  # the first group's, for messages
    action_space: gym.Space
    has_mask: bool
    observation_fields: list[dict[str, Any]] | None  # the first group's (GroupSpec.observation_fields)
    enforces_step_timeout: bool
    groups: dict[str, GroupSpec]
    agents: list[str]  # every agent, in the env's order
    state_dim: int
    turn_based: bool  # stepped turn by turn (a pettingzoo AEC game: only the mover acts); agentkit.matches

    def make_vec(self, num_envs: int, seed: int, render_mode: str | None = None) -> MultiAgentVecEnv: ...

    def close(self) -> None: ...  # as EnvSource.close


#: What every env source declares (``EnvSource``), and what a multi-agent one adds (``MultiAgentEnvSource``).
SOURCE_ATTRIBUTES = ("env_id", "multi_agent", "observation_space", "action_space", "has_mask", "observation_fields",
                     "enforces_step_timeout", "make_vec", "close")
MULTI_AGENT_ATTRIBUTES = ("groups", "agents", "state_dim", "turn_based")
