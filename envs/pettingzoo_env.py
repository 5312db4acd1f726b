"""The ``pettingzoo`` env plugin: any PettingZoo env as a multi-agent agentkit ``EnvSource``.

    env: {plugin: pettingzoo, module: mpe2.simple_spread_v3, kwargs: {N: 3}, num_envs: 8, groups: {...}}

Agents are collected into policy groups (``GroupSpec``); the vector env returns one ``Observation`` /
``Transition`` per group with the group's agent axis, ``alive [N, A_g]`` and the global ``state [N, S]``.
The layout, death handling and the action format are specified in docs/multi-agent.md and
``agentkit.environment.MultiAgentVecEnv``.
``vectorization: async`` steps blocks of copies in several processes at once (``pettingzoo_workers``).

Turn-based AEC envs (pettingzoo.classic's ``connect_four_v3``, ``tictactoe_v3``: an AEC env that is not
``is_parallelizable``) are stepped natively by ``TurnBasedVecEnv``: at each vector step only each copy's agent
to move acts (``alive``), with its action mask; every agent's reward and episode end are reported at the step
where they happen, and the algorithm credits them to that agent's previous move (``RolloutStorage``).
"""

from __future__ import annotations

import importlib
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space, iterate
from pettingzoo.utils import BaseParallelWrapper
from pettingzoo.utils.conversions import aec_to_parallel, aec_to_parallel_wrapper
from pettingzoo.utils.env import AECEnv, ParallelEnv
from pettingzoo.utils.wrappers import AssertOutOfBoundsWrapper, ClipOutOfBoundsWrapper, OrderEnforcingWrapper
from pydantic import Field

import agentkit
from agentkit.config import EnvConfig
from agentkit.envcheck import describe_mismatch
from agentkit.environment import (
    GroupSpec,
    MultiAgentTransition,
    MultiAgentVecEnv,
    Observation,
    Transition,
    group_agents,
    is_info_metric,
    require_every_group,
)
from agentkit.errors import ConfigError, InvalidInputError
from agentkit.observations import MASK_KEY, ObservationLayout
from agentkit.spaces import ACTION_TYPES_HELP, HybridSpace, hybrid_views
from agentkit.trust import is_allowed
from agentkit.wrappers import WRAPPERS_HELP, WrapperSpec, apply_wrappers, known_wrapper_keys

from .pettingzoo_workers import SubprocessPettingZooVecEnv


class PettingZooEnvConfig(EnvConfig):
    """A PettingZoo env, by import path, with agents grouped into policy groups."""

    module: str = Field(
        description="Import path of the env module (mpe2.simple_spread_v3), whose parallel_env() or env() "
        "builds it, or 'package.module:callable' returning a ParallelEnv or AECEnv."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the constructor.")
    groups: dict[str, list[str]] | None = Field(
        None,
        description="Policy groups {name: [agent, ...]}; default: agents with identical spaces share a group.",
    )
    state: Literal["auto", "concat", "none"] = Field(
        "auto",
        description="Global state: the env's state() when it has one (auto), all observations concatenated, or "
        "none (an empty state, for a critic that reads no global state, e.g. MAPPO's centralised: false; "
        "pistonball's 560x880x3 state() costs 60% of its own step).",
    )
    vectorization: Literal["sync", "async"] = Field(
        "sync",
        description="sync: copies stepped one after the other in this process; async: copies split into `workers` "
        "blocks, stepped at once by this process and workers - 1 worker processes (worth it when the env, not "
        "the network, is the cost and each block has several copies).",
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="async: processes stepping copies, this one included (default: one per core this process "
        "may use, at most num_envs).",
    )
    api_checks: bool = Field(
        False,
        description="Keep pettingzoo's API-checking wrappers (OrderEnforcingWrapper, Assert/ClipOutOfBoundsWrapper) "
        "around an AEC env; agentkit's calls never trip them, and they cost mpe2 spread a quarter of its step time.",
    )
    action_types: dict[str, list[int]] | None = Field(None, description=ACTION_TYPES_HELP)
    turn_based: Literal["auto"] | bool = Field(
        "auto",
        description="Step an AEC env natively, one move at a time (only the agent to move acts); auto: for AEC "
        "envs whose metadata does not declare is_parallelizable (pettingzoo.classic's board games); false: "
        "convert every AEC env to a parallel env.",
    )
    random_opening_moves: int = Field(
        0,
        ge=0,
        description="Turn-based games: each training game starts after k uniformly random legal moves, k drawn "
        "from 0..N at every reset (moves nobody learns from), so self-play also meets the openings it would not "
        "choose itself; matches against fixed opponents (agentkit eval --opponent) start from the real start.",
    )
    wrappers: list[WrapperSpec] = Field(
        default_factory=list,
        description=WRAPPERS_HELP + " Each is called with the ParallelEnv (the AECEnv of a turn-based game), e.g. "
        "supersuit's color_reduction_v0.",
    )

    def imports(self) -> dict[str, str]:
        """``module`` unless it is a plain module path (no ``:callable``) inside ``KNOWN_ENV_PACKAGES``, and each
        wrapper outside gymnasium's."""
        found = known_wrapper_keys(super().imports())
        if ":" in self.module or not is_allowed(self.module, KNOWN_ENV_PACKAGES):
            found["module"] = self.module
        return found


#: Packages whose env modules a file made elsewhere may name without --allow-import: the SDK's games and the
#: env families of pettingzoo and mpe2 (their modules build an env in parallel_env() / env(), nothing else).
KNOWN_ENV_PACKAGES = ("agentkit_envs.games", "mpe2", "pettingzoo.atari", "pettingzoo.butterfly",
                      "pettingzoo.classic", "pettingzoo.mpe", "pettingzoo.sisl", "pettingzoo.magent")


# -- building the env -------------------------------------------------------------------------------------


def _constructor(module_path: str) -> Callable[..., Any]:
    """The callable that builds one env from ``module_path`` (ConfigError naming env.module otherwise)."""
    mod_name, _, attr = module_path.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:
        raise ConfigError(
            f"env.module: cannot import {mod_name!r} ({type(exc).__name__}: {exc}). Give an importable module "
            "path such as mpe2.simple_spread_v3, or package.module:callable."
        ) from exc
    names = [attr] if attr else ["parallel_env", "env"]
    for name in names:
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    raise ConfigError(
        f"env.module: {module_path!r} has no callable {' or '.join(names)}; name the env constructor as "
        "'package.module:callable'."
    )


# Wrappers that only check how the env is called (order of calls, actions inside the space; Clip also clips
# an out-of-space action, which agentkit's heads never send). The AEC-to-parallel conversion reads a dozen
# attributes per agent step through their __getattr__ chain: mpe2 spread's vector env steps 1.34× as fast
# without them (benchmarks/RESULTS.md, "pettingzoo's checking wrappers").
_CHECKING_WRAPPERS = (OrderEnforcingWrapper, AssertOutOfBoundsWrapper, ClipOutOfBoundsWrapper)


def _without_checking_wrappers(env: ParallelEnv) -> ParallelEnv:
    """A converted AEC env with its outermost checking-only wrappers removed, converted again by
    ``_ObservingOnce``; any other wrapper (one that changes the game, such as TerminateIllegalWrapper) and
    everything inside it stays. Other envs unchanged."""
    if type(env) is not aec_to_parallel_wrapper:
        return env
    inner = env.aec_env
    while isinstance(inner, _CHECKING_WRAPPERS):
        inner = inner.env
    return _ObservingOnce(inner)


class _ObservingOnce(aec_to_parallel_wrapper):
    """pettingzoo's AEC-to-parallel conversion without the observation its ``step`` makes for every agent
    (``aec_env.last()``) and drops: the same game, each observation computed once a step. A pixel env pays for
    each one (pistonball crops its screen for every piston: a third of its step)."""

    def step(self, actions: dict[str, Any]) -> Any:
        aec = self.aec_env
        rewards: dict[str, float] = defaultdict(int)
        for agent in aec.agents:
            if agent != aec.agent_selection:  # the conversion's own checks, as pettingzoo words them
                if aec.terminations[agent] or aec.truncations[agent]:
                    raise AssertionError(
                        f"expected agent {agent} got termination or truncation agent {aec.agent_selection}. "
                        "Parallel environment wrapper expects all agent death (setting an agent's "
                        "self.terminations or self.truncations entry to True) to happen only at the end of a cycle."
                    )
                raise AssertionError(
                    f"expected agent {agent} got agent {aec.agent_selection}, Parallel environment wrapper "
                    "expects agents to step in a cycle."
                )
            aec.step(actions[agent])
            for other in aec.agents:
                rewards[other] += aec.rewards[other]
        terminations, truncations, infos = dict(**aec.terminations), dict(**aec.truncations), dict(**aec.infos)
        observations = {agent: aec.observe(agent) for agent in aec.agents}
        while aec.agents and (aec.terminations[aec.agent_selection] or aec.truncations[aec.agent_selection]):
            aec.step(None)
        self.agents = aec.agents
        return observations, rewards, terminations, truncations, infos


class HybridActions(BaseParallelWrapper):
    """Shows the agents' parameterised-action ``Tuple``s as the ``HybridSpace``s they stand for and hands the env
    each action in the Tuple's own form (``agentkit.spaces.hybrid_view``)."""

    def __init__(self, env: ParallelEnv, views: dict[str, tuple[HybridSpace, Callable[[Any], Any]]]):
        super().__init__(env)
        self.metadata = env.metadata  # the base class has its own (empty) metadata, which would hide the env's
        self._views = views

    def action_space(self, agent: str) -> gym.Space:
        return self._views[agent][0] if agent in self._views else self.env.action_space(agent)

    def step(self, actions: dict[str, Any]) -> Any:
        return self.env.step({a: self._views[a][1](x) if a in self._views else x for a, x in actions.items()})


def is_turn_based(env: Any, setting: Literal["auto"] | bool) -> bool:
    """Whether ``env`` is stepped as a turn-based AEC env (``PettingZooEnvConfig.turn_based``)."""
    if not isinstance(env, AECEnv) or setting is False:
        return False
    return setting is True or not (getattr(env, "metadata", None) or {}).get("is_parallelizable", False)


def _without_aec_checking_wrappers(env: AECEnv) -> AECEnv:
    """An AEC env with its outermost checking-only wrappers removed (see ``_without_checking_wrappers``)."""
    while isinstance(env, _CHECKING_WRAPPERS):
        env = env.env
    return env


def _as_parallel(env: Any, module_path: str) -> ParallelEnv:
    if isinstance(env, ParallelEnv):
        return env
    if isinstance(env, AECEnv):
        try:
            return aec_to_parallel(env)
        except Exception as exc:  # e.g. an env whose agents do not all act every cycle
            raise ConfigError(
                f"env.module {module_path!r} builds an AEC env that cannot be converted to a parallel env "
                f"({type(exc).__name__}: {exc}); provide its parallel_env() instead."
            ) from exc
    raise ConfigError(
        f"env.module {module_path!r} built a {type(env).__name__}, not a PettingZoo ParallelEnv or AECEnv."
    )


# -- the env source ---------------------------------------------------------------------------------------


class PettingZooSource:
    """Describes a PettingZoo env (probed once) and makes multi-agent vector envs of it.

    Attributes besides the ``EnvSource`` protocol: ``groups`` (ordered ``GroupSpec``s), ``agents`` (all
    agents in ``possible_agents`` order) and ``state_dim``. ``observation_space``/``action_space`` are the
    first group's.
    """

    multi_agent = True
    enforces_step_timeout = False  # the env boundary's clock bounds env.step_timeout

    def __init__(self, config: PettingZooEnvConfig):
        self.config = config
        self.env_id = config.module
        self._ctor = _constructor(config.module)
        probe = self.make_env(None)
        self.turn_based = isinstance(probe, AECEnv)
        try:
            self.agents: list[str] = list(probe.possible_agents)
            self.layouts = {a: ObservationLayout(probe.observation_space(a), f"env: agent {a!r}") for a in self.agents}
            self.action_spaces = {a: probe.action_space(a) for a in self.agents}
            self.uses_env_state = False
            if config.state == "auto":
                try:
                    probe.reset(seed=0)
                    self.state_dim = int(np.asarray(probe.state()).size)
                    self.uses_env_state = True
                except (NotImplementedError, AttributeError):
                    pass
                except TypeError:  # an AEC env whose `state` is data, not state() (pettingzoo.classic.rps_v2)
                    pass
            if config.state == "none":
                self.state_dim = 0
            elif not self.uses_env_state:
                self.state_dim = sum(self.layouts[a].obs_dim for a in self.agents)
        finally:
            probe.close()
        self.groups = self._make_groups(config.groups)
        first = next(iter(self.groups.values()))
        self.observation_space = first.observation_space
        self.observation_fields = first.observation_fields
        self.action_space = first.action_space
        self.has_mask = any(g.mask_dim > 0 for g in self.groups.values())

    def make_env(self, render_mode: str | None) -> ParallelEnv | AECEnv:
        """One env copy: a ParallelEnv, or the AEC env itself when it is turn-based (``turn_based``)."""
        kwargs = dict(self.config.kwargs)
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        try:
            env = self._ctor(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"env.kwargs: {self.config.module} rejected {kwargs}: {exc}") from exc
        if is_turn_based(env, self.config.turn_based):
            if self.config.action_types:
                env.close()
                raise ConfigError(
                    f"env.action_types: {self.config.module!r} is a turn-based AEC env, whose actions are read as "
                    "they are; remove env.action_types."
                )
            env = env if self.config.api_checks else _without_aec_checking_wrappers(env)
            return apply_wrappers(env, self.config.wrappers, repr(self.config.module))
        env = _as_parallel(env, self.config.module)
        env = env if self.config.api_checks else _without_checking_wrappers(env)
        if self.config.wrappers:
            env = _as_parallel(apply_wrappers(env, self.config.wrappers, repr(self.config.module)), self.config.module)
        try:
            views = hybrid_views({a: env.action_space(a) for a in env.possible_agents}, self.config.action_types,
                                 repr(self.config.module))
        except ConfigError:
            env.close()
            raise
        return HybridActions(env, views) if views else env

    def _make_groups(self, named: dict[str, list[str]] | None) -> dict[str, GroupSpec]:
        signature = {a: (self.layouts[a].key, self.action_spaces[a]) for a in self.agents}
        named = group_agents(self.agents, signature, named)
        return {
            name: GroupSpec(
                name=name,
                agents=list(members),
                observation_space=self.layouts[members[0]].space,
                action_space=self.action_spaces[members[0]],
                mask_dim=self.layouts[members[0]].mask_dim,
                observation_fields=self.layouts[members[0]].fields,
            )
            for name, members in named.items()
        }

    def close(self) -> None:
        """Nothing to release: the probe env was closed once read, and each vector env closes itself."""

    def make_vec(self, num_envs: int, seed: int | None, render_mode: str | None = None) -> MultiAgentVecEnv:
        workers = min(self.config.workers or _usable_cores(), num_envs)
        if self.config.vectorization == "async" and workers > 1:
            return SubprocessPettingZooVecEnv(self, num_envs, seed, render_mode, workers)
        return self.make_local_vec(num_envs, seed, render_mode)

    def make_local_vec(self, num_envs: int, seed: int | None, render_mode: str | None = None) -> PettingZooVecEnv:
        """Copies stepped in this process: a ``TurnBasedVecEnv`` for a turn-based env, else a ``PettingZooVecEnv``."""
        kind = TurnBasedVecEnv if self.turn_based else PettingZooVecEnv
        return kind(self, num_envs, seed, render_mode)


# -- the vector env ---------------------------------------------------------------------------------------


class PettingZooVecEnv:
    """N copies of a PettingZoo parallel env behind ``agentkit.environment.MultiAgentVecEnv``.

    Copies are stepped one after the other in this process. A copy whose agents have all terminated or
    truncated (or that has no agents left) is reset in the same step; the first reset seeds copy i with
    ``seed + i``, later auto-resets continue each copy's own RNG.
    """

    def __init__(self, source: PettingZooSource, num_envs: int, seed: int | None, render_mode: str | None):
        self.source = source
        self.num_envs = num_envs
        self.groups = source.groups
        self.state_dim = source.state_dim
        self.observation_space = source.observation_space
        self.action_space = source.action_space
        self.envs = [source.make_env(render_mode if i == 0 else None) for i in range(num_envs)]
        self._seed = seed
        # where each agent sits: (group name, index on the group's agent axis)
        self._slot = {a: (g.name, i) for g in self.groups.values() for i, a in enumerate(g.agents)}
        self._batched = {
            g.name: batch_space(g.action_space, num_envs * len(g.agents)) for g in self.groups.values()
        }
        self._obs_offsets = np.cumsum([0] + [source.layouts[a].obs_dim for a in source.agents])
        self._agent_index = {a: i for i, a in enumerate(source.agents)}
        self._ep_return = np.zeros((num_envs, len(source.agents)), dtype=np.float64)
        self._ep_length = np.zeros(num_envs, dtype=np.int64)
        # per env copy: agent → {info key: its last numeric scalar value this episode}
        self._ep_infos: list[dict[str, dict[str, float]]] = [{} for _ in range(num_envs)]
        self._alive = np.zeros((num_envs, len(source.agents)), dtype=bool)

    # -- buffers --------------------------------------------------------------------------------------------

    def _blank(self) -> dict[str, Observation]:
        n = self.num_envs
        out = {}
        for g in self.groups.values():
            a, space = len(g.agents), g.observation_space
            mask = np.ones((n, a, g.mask_dim), dtype=bool) if g.mask_dim else None
            out[g.name] = Observation(
                obs=np.zeros((n, a, *space.shape), space.dtype), mask=mask, state=None, alive=np.zeros((n, a), bool)
            )
        return out

    def _write(self, out: dict[str, Observation], n: int, agent: str, raw: Any, info: dict | None) -> None:
        gname, i = self._slot[agent]
        group = out[gname]
        try:
            obs, mask = self.source.layouts[agent].split(raw)
            group.obs[n, i] = obs[0]
            if group.mask is not None:
                if mask is None and info is not None and MASK_KEY in info:
                    mask = np.asarray(info[MASK_KEY]).reshape(-1).astype(bool)
                if mask is not None:
                    group.mask[n, i] = mask.reshape(-1)
        except (ValueError, TypeError) as exc:
            problem = describe_mismatch(self.source.layouts[agent].raw_space, raw)
            if problem is None and group.mask is not None and info is not None and MASK_KEY in info:
                problem = f"info['action_mask'] has {np.size(info[MASK_KEY])} entries, expected {group.mask.shape[-1]}"
            if problem is None:
                raise
            raise InvalidInputError(
                f"env {self.source.env_id!r} (env copy {n}, agent {agent!r}): {problem}. An env must return "
                "observations that fit its observation_space; fix the env or its declared space."
            ) from exc
        group.alive[n, i] = True

    def _state(self, env: ParallelEnv, out: dict[str, Observation], n: int, alive: dict[str, bool]) -> np.ndarray:
        if self.source.uses_env_state:
            return np.asarray(env.state(), dtype=np.float32).reshape(-1)
        if self.source.state_dim == 0:
            return np.zeros(0, np.float32)
        parts = []
        for agent in self.source.agents:
            gname, i = self._slot[agent]
            obs = out[gname].obs[n, i].reshape(-1)
            parts.append(obs if alive.get(agent) else np.zeros_like(obs))
        return np.concatenate(parts).astype(np.float32, copy=False)

    # -- protocol -------------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> dict[str, Observation]:
        """Reset every copy; copy i gets ``seed + i`` (the ``make_vec`` seed on the first reset if None)."""
        if seed is None:
            seed, self._seed = self._seed, None
        out = self._blank()
        state = np.zeros((self.num_envs, self.state_dim), np.float32)
        for n, env in enumerate(self.envs):
            state[n] = self._reset_one(n, env, None if seed is None else seed + n, out)
        for group in out.values():
            group.state = state
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._ep_infos = [{} for _ in range(self.num_envs)]
        return out

    def _reset_one(self, n: int, env: ParallelEnv, seed: int | None, out: dict[str, Observation]) -> np.ndarray:
        raw, infos = env.reset(seed=seed)
        for group in out.values():
            group.alive[n] = False
            group.obs[n] = 0.0
            if group.mask is not None:
                group.mask[n] = True
        for agent, agent_obs in raw.items():
            self._write(out, n, agent, agent_obs, infos.get(agent))
        return self._state(env, out, n, {a: True for a in raw})

    def _split_actions(self, actions: dict[str, Any]) -> dict[str, list[Any]]:
        require_every_group(self.groups, actions)
        rows = {}
        for g in self.groups.values():
            act = actions[g.name]
            if isinstance(act, np.ndarray) and isinstance(g.action_space, spaces.Discrete | spaces.Box):
                act = act.reshape(self._batched[g.name].shape)
            rows[g.name] = list(iterate(self._batched[g.name], act))
        return rows

    def step(self, actions: dict[str, Any]) -> MultiAgentTransition:
        rows = self._split_actions(actions)
        n_envs = self.num_envs
        nxt = self._blank()
        trans: dict[str, Transition] = {}
        for g in self.groups.values():
            a = len(g.agents)
            trans[g.name] = Transition(
                next=nxt[g.name],
                reward=np.zeros((n_envs, a), np.float32),
                terminated=np.zeros((n_envs, a), bool),
                truncated=np.zeros((n_envs, a), bool),
                final_obs=np.zeros((n_envs, a, *g.observation_space.shape), g.observation_space.dtype),
            )
        final = self._blank()  # obs after the step, before any reset (for final_obs / final_state)
        state = np.zeros((n_envs, self.state_dim), np.float32)
        final_state = np.zeros((n_envs, self.state_dim), np.float32)
        result = MultiAgentTransition(groups=trans, group_returns={g: [] for g in self.groups})
        for n, env in enumerate(self.envs):
            acting = {}
            for agent in env.agents:
                gname, i = self._slot[agent]
                acting[agent] = rows[gname][n * len(self.groups[gname].agents) + i]
            raw, rewards, terms, truncs, infos = env.step(acting)
            self._ep_length[n] += 1
            for agent, r in rewards.items():
                gname, i = self._slot[agent]
                trans[gname].reward[n, i] = r
                self._ep_return[n, self._agent_index[agent]] += r
            for agent, info in infos.items():
                scalars = _numeric_scalars(info)
                if scalars:
                    self._ep_infos[n].setdefault(agent, {}).update(scalars)
            for agent in acting:
                gname, i = self._slot[agent]
                trans[gname].terminated[n, i] = bool(terms.get(agent, False))
                trans[gname].truncated[n, i] = bool(truncs.get(agent, False)) and not terms.get(agent, False)
            for agent, agent_obs in raw.items():
                self._write(final, n, agent, agent_obs, infos.get(agent))
            still = set(env.agents)
            final_state[n] = self._state(env, final, n, {a: True for a in raw})
            for g in self.groups.values():
                trans[g.name].final_obs[n] = final[g.name].obs[n]
            if not still or all(terms.get(a, False) or truncs.get(a, False) for a in still):
                self._record_episode(n, result)
                state[n] = self._reset_one(n, env, None, nxt)
            else:
                for agent in still:
                    if agent in raw:
                        self._write(nxt, n, agent, raw[agent], infos.get(agent))
                state[n] = final_state[n] if self.source.uses_env_state else self._state(
                    env, nxt, n, {a: a in raw for a in still}
                )
        for g in self.groups.values():
            nxt[g.name].state = state
            trans[g.name].final_state = final_state
        return result

    def _record_episode(self, n: int, result: MultiAgentTransition) -> None:
        returns = self._ep_return[n]
        result.episode_returns.append(float(returns.mean()))
        if self.source.turn_based:  # a zero-sum game's sides, whose mean says nothing
            result.agent_returns.append({a: float(returns[i]) for a, i in self._agent_index.items()})
        result.episode_lengths.append(int(self._ep_length[n]))
        result.episode_envs.append(n)
        per_key: dict[str, list[float]] = {}
        for scalars in self._ep_infos[n].values():
            for key, value in scalars.items():
                per_key.setdefault(key, []).append(value)
        result.episode_infos.append({key: float(np.mean(values)) for key, values in per_key.items()})
        self._ep_infos[n] = {}
        for g in self.groups.values():
            idx = [self._agent_index[a] for a in g.agents]
            result.group_returns[g.name].append(float(returns[idx].mean()))
        self._ep_return[n] = 0.0
        self._ep_length[n] = 0

    def render(self) -> np.ndarray | None:
        frame = self.envs[0].render()
        return None if frame is None else np.asarray(frame)

    def close(self) -> None:
        for env in self.envs:
            env.close()


class TurnBasedVecEnv(PettingZooVecEnv):
    """N copies of a turn-based AEC env behind ``MultiAgentVecEnv``: one move per copy per vector step.

    At each step the agent to move in each copy (``agent_selection``) is the only one ``alive``, with its
    observation and action mask; the other agents' rows are placeholders (zeros, all-allowed masks). After the
    move, every agent's reward from ``env.rewards`` is reported on its own row, so a loss on the opponent's
    turn reaches the loser, and an agent's episode end (terminated or truncated, with its ``final_obs``) is
    reported at the step where it happens, once. An agent whose turn comes while it is done takes pettingzoo's
    dead step (``None``) within the same vector step. A copy ends when every agent is done (or none is left),
    and is reset in the same step. The algorithm credits each agent's rewards and end to its previous move
    (``agentkit.storage.RolloutStorage.compute_gae``).

    With ``random_opening_moves: N`` a reset also plays k uniformly random legal moves (k drawn from 0..N,
    seeded by the ``make_vec`` seed) before the first observation; they are no agent's steps.
    """

    def __init__(self, source: PettingZooSource, num_envs: int, seed: int | None, render_mode: str | None):
        super().__init__(source, num_envs, seed, render_mode)
        self._ended: list[set[str]] = [set() for _ in range(num_envs)]
        self._opening = int(getattr(source.config, "random_opening_moves", 0))
        self._opening_rng = np.random.default_rng(None if seed is None else seed + 104_729)

    def _play_opening(self, env: AECEnv, seed: int | None) -> None:
        """k random legal moves from the start (a game over in them starts again, with none)."""
        from agentkit.opponents import game_over, legal_moves

        for _ in range(int(self._opening_rng.integers(0, self._opening + 1))):
            env.step(int(self._opening_rng.choice(legal_moves(env, env.agent_selection))))
            if game_over(env) or self._live(env) is None or self._is_done(env, env.agent_selection):
                env.reset(seed=seed)
                return

    def _reset_one(self, n: int, env: AECEnv, seed: int | None, out: dict[str, Observation]) -> np.ndarray:
        env.reset(seed=seed)
        if self._opening:
            self._play_opening(env, seed)
        self._ended[n] = set()
        for group in out.values():
            group.alive[n] = False
            group.obs[n] = 0.0
            if group.mask is not None:
                group.mask[n] = True
        mover = env.agent_selection
        self._write(out, n, mover, env.observe(mover), env.infos.get(mover))
        return self._state(env, out, n, {mover: True})

    def step(self, actions: dict[str, Any]) -> MultiAgentTransition:
        rows = self._split_actions(actions)
        n_envs = self.num_envs
        nxt = self._blank()
        final = self._blank()
        trans = {
            g.name: Transition(
                next=nxt[g.name],
                reward=np.zeros((n_envs, len(g.agents)), np.float32),
                terminated=np.zeros((n_envs, len(g.agents)), bool),
                truncated=np.zeros((n_envs, len(g.agents)), bool),
                final_obs=np.zeros((n_envs, len(g.agents), *g.observation_space.shape), g.observation_space.dtype),
            )
            for g in self.groups.values()
        }
        state = np.zeros((n_envs, self.state_dim), np.float32)
        final_state = np.zeros((n_envs, self.state_dim), np.float32)
        result = MultiAgentTransition(groups=trans, group_returns={g: [] for g in self.groups})
        for n, env in enumerate(self.envs):
            mover = env.agent_selection
            gname, i = self._slot[mover]
            env.step(rows[gname][n * len(self.groups[gname].agents) + i])
            self._ep_length[n] += 1
            self._take_outcomes(n, env, trans, final)
            while self._live(env) is not None and self._is_done(env, env.agent_selection):
                env.step(None)  # pettingzoo's dead step for a done agent whose turn it is
                self._take_outcomes(n, env, trans, final)
            final_state[n] = self._state(env, final, n, {a: True for a in env.agents})
            for g in self.groups.values():
                trans[g.name].final_obs[n] = final[g.name].obs[n]
            if self._live(env) is None:
                self._record_episode(n, result)
                state[n] = self._reset_one(n, env, None, nxt)
            else:
                mover = env.agent_selection
                self._write(nxt, n, mover, env.observe(mover), env.infos.get(mover))
                state[n] = self._state(env, nxt, n, {mover: True})
        for g in self.groups.values():
            nxt[g.name].state = state
            trans[g.name].final_state = final_state
        return result

    @staticmethod
    def _is_done(env: AECEnv, agent: str) -> bool:
        return bool(env.terminations.get(agent, False) or env.truncations.get(agent, False))

    def _live(self, env: AECEnv) -> str | None:
        """An agent still playing in ``env`` (None: the episode is over)."""
        return next((a for a in env.agents if not self._is_done(env, a)), None)

    def _take_outcomes(self, n: int, env: AECEnv, trans: dict[str, Transition], final: dict[str, Observation]) -> None:
        """Every agent's reward of the last AEC step, and the ends that happened in it."""
        for agent, r in env.rewards.items():
            if r and agent not in self._ended[n]:
                gname, i = self._slot[agent]
                trans[gname].reward[n, i] += r
                self._ep_return[n, self._agent_index[agent]] += r
        for agent in env.agents:
            scalars = _numeric_scalars(env.infos.get(agent))
            if scalars:
                self._ep_infos[n].setdefault(agent, {}).update(scalars)
            if agent in self._ended[n] or not self._is_done(env, agent):
                continue
            self._ended[n].add(agent)
            gname, i = self._slot[agent]
            term = bool(env.terminations.get(agent, False))
            trans[gname].terminated[n, i] = term
            trans[gname].truncated[n, i] = not term
            self._write(final, n, agent, env.observe(agent), env.infos.get(agent))


def _usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's share), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _numeric_scalars(info: Any) -> dict[str, float]:
    """The metric entries of an agent's info dict (floats and bools, ``is_info_metric``), the mask left out."""
    if not isinstance(info, dict):
        return {}
    return {str(key): float(value) for key, value in info.items() if key != MASK_KEY and is_info_metric(value)}


# -- registration -----------------------------------------------------------------------------------------


@agentkit.hookimpl
def agentkit_register_envs(register):
    register(
        "pettingzoo",
        PettingZooSource,
        PettingZooEnvConfig,
        "Any PettingZoo env by import path (parallel or AEC), agents grouped into policy groups.",
    )


__all__ = ["PettingZooEnvConfig", "PettingZooSource", "PettingZooVecEnv", "TurnBasedVecEnv"]
