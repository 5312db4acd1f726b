"""Bridged game instances as agentkit vector envs.

``RemoteMultiAgentVecEnv`` is a ``MultiAgentVecEnv`` (agentkit/environment.py) with the pettingzoo
adapter's semantics (docs/multi-agent.md): one ``Observation``/``Transition`` per policy group, ``alive``,
dead agents' rows zero with all-allowed masks, an env copy reset in the same step once no agent is left.
``RemoteVecEnv`` is the single-agent ``VecEnv`` (one agent: gymnasium's same-step autoreset, ``final_obs``).

Why not gymnasium's ``SyncVectorEnv`` over one ``gym.Env`` per instance: it steps the copies one after
the other, so N games would wait for each other's round trips. Here every step sends the N ``step``
messages first and then reads the N answers, so the games simulate at the same time; and a crashed
instance must be replaced in place, its episode dropped rather than recorded.

Instances are connected at the first ``reset`` (building an algorithm, as ``agentkit export`` does, needs
only the spaces the source read).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from gymnasium import spaces

from agentkit.environment import GroupSpec, MultiAgentTransition, Observation, Transition
from agentkit.errors import InvalidInputError
from agentkit.spaces import HybridSpace

from .protocol import AgentSpec, BridgeDisconnected, BridgeError
from .server import Instance

_RESTART_SEED_STRIDE = 100_003


class WireLayout:
    """Where every agent's values sit in the flat arrays of a message, and each group's gather indices."""

    def __init__(self, agents: list[AgentSpec], groups: dict[str, GroupSpec], state_dim: int):
        self.agents = agents
        self.n_agents = len(agents)
        self.state_dim = state_dim
        index = {a.name: i for i, a in enumerate(agents)}

        def offsets(sizes: list[int]) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

        obs_off = offsets([a.obs_size for a in agents])
        mask_off = offsets([a.mask_dim for a in agents])
        int_off = offsets([a.n_int for a in agents])
        float_off = offsets([a.n_float for a in agents])
        self.obs_size, self.mask_size = int(obs_off[-1]), int(mask_off[-1])
        self.int_size, self.float_size = int(int_off[-1]), int(float_off[-1])
        self.agent_of_obs = np.repeat(np.arange(self.n_agents), [a.obs_size for a in agents])
        self.agent_of_mask = np.repeat(np.arange(self.n_agents), [a.mask_dim for a in agents])
        # per group: agent indices [A_g] and gather indices [A_g, width] into the flat arrays
        self.members: dict[str, np.ndarray] = {}
        self.obs_idx: dict[str, np.ndarray] = {}
        self.mask_idx: dict[str, np.ndarray] = {}
        self.int_idx: dict[str, np.ndarray] = {}
        self.float_idx: dict[str, np.ndarray] = {}
        for name, g in groups.items():
            ids = np.array([index[a] for a in g.agents])
            first = agents[ids[0]]
            self.members[name] = ids
            self.obs_idx[name] = obs_off[ids][:, None] + np.arange(first.obs_size)
            self.mask_idx[name] = mask_off[ids][:, None] + np.arange(first.mask_dim)
            self.int_idx[name] = int_off[ids][:, None] + np.arange(first.n_int)
            self.float_idx[name] = float_off[ids][:, None] + np.arange(first.n_float)

    def expected(self, kind: str, info_keys: int) -> dict[str, int]:
        """The blobs a ``reset_result``/``step_result`` must carry, with their counts."""
        out = {"obs": self.obs_size, "alive": self.n_agents}
        if kind == "step_result":
            out.update(reward=self.n_agents, terminated=self.n_agents, truncated=self.n_agents)
        if self.mask_size:
            out["mask"] = self.mask_size
        if self.state_dim:
            out["state"] = self.state_dim
        if info_keys:
            out["info"] = self.n_agents * info_keys
        return out


def action_to_wire(space: spaces.Space, action: Any, rows: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One group's batched env action (what ``head.to_env`` returns for ``rows`` agents) as the integer and
    float parts of the wire layout (docs/bridge.md, ``step``), ``[rows, n_int]`` and ``[rows, n_float]``."""
    if isinstance(space, HybridSpace):
        types, params = action
        return np.asarray(types).reshape(rows, 1), np.asarray(params, np.float32).reshape(rows, -1)
    if isinstance(space, spaces.Box):
        return None, np.asarray(action, np.float32).reshape(rows, -1)
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
        return np.asarray(action).reshape(rows, -1), None
    raise TypeError(f"no wire layout for action space {space}")


class _Results:
    """The N instances' answers stacked: flat arrays ``[N, width]``."""

    def __init__(self, layout: WireLayout, n: int, step: bool):
        a = layout.n_agents
        self.obs = np.zeros((n, layout.obs_size), np.float32)
        self.alive = np.zeros((n, a), bool)
        self.mask = np.ones((n, layout.mask_size), bool)
        self.state = np.zeros((n, layout.state_dim), np.float32)
        if step:
            self.reward = np.zeros((n, a), np.float32)
            self.terminated = np.zeros((n, a), bool)
            self.truncated = np.zeros((n, a), bool)
        self.info: list[dict[str, np.ndarray]] = [{} for _ in range(n)]


class RemoteMultiAgentVecEnv:
    """``num_envs`` bridged game instances behind ``agentkit.environment.MultiAgentVecEnv``."""

    def __init__(self, source: Any, num_envs: int, seed: int | None):
        self.source = source
        self.num_envs = num_envs
        self.groups: dict[str, GroupSpec] = source.groups
        self.state_dim = source.state_dim
        self.observation_space = source.observation_space
        self.action_space = source.action_space
        self.layout = WireLayout(source.agent_specs, self.groups, source.declared_state_dim)
        self.instances: list[Instance] = []
        self._seed = seed
        self._base_seed = 0 if seed is None else seed
        n, a = num_envs, self.layout.n_agents
        self._acted = np.zeros((n, a), bool)  # alive before the step: the agents whose actions count
        self._last = _Results(self.layout, n, step=False)
        self._ep_return = np.zeros((n, a), np.float64)
        self._ep_length = np.zeros(n, np.int64)
        self._ep_infos: list[dict[int, dict[str, float]]] = [{} for _ in range(n)]
        self._lost: dict[int, BridgeError] = {}

    # -- talking to the instances ---------------------------------------------------------------------------

    def _connect(self) -> None:
        if not self.instances:
            self.instances = self.source.claim(self.num_envs, self._base_seed)

    def _send(self, i: int, header: dict[str, Any], blobs: dict[str, np.ndarray] | None = None) -> None:
        if i in self._lost:
            return
        try:
            self.instances[i].request(header, blobs)
        except BridgeDisconnected as exc:
            self._lost[i] = exc

    def _answer(self, i: int, kind: str, into: _Results) -> bool:
        """Read instance i's answer into row i of ``into``; False if the instance was lost."""
        if i in self._lost:
            return False
        inst = self.instances[i]
        try:
            header, blobs = inst.answer(kind)
        except BridgeDisconnected as exc:
            self._lost[i] = exc
            return False
        keys = header.get("info_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BridgeError(f"bad_frame: instance {inst.number}'s {kind}: info_keys must be a list of strings.",
                              field="info_keys")
        expected = self.layout.expected(kind, len(keys))
        for name, count in expected.items():
            blob = blobs.get(name)
            if blob is None:
                raise BridgeError(f"bad_frame: instance {inst.number}'s {kind} (answering {inst.last}) has no "
                                  f"blob {name!r}; it must carry {', '.join(expected)}.", field=name)
            if blob.size != count:
                raise BridgeError(
                    f"bad_frame: instance {inst.number}'s {kind} blob {name!r} has {blob.size} values; the declared "
                    f"agents and spaces need {count}.", field=name,
                )
        extra = sorted(set(blobs) - set(expected))
        if extra:
            raise BridgeError(f"bad_frame: instance {inst.number}'s {kind} has unknown blobs {extra}.", field=extra[0])
        into.obs[i] = blobs["obs"]
        into.alive[i] = blobs["alive"] != 0
        if "mask" in blobs:
            into.mask[i] = blobs["mask"] != 0
        if "state" in blobs:
            into.state[i] = blobs["state"]
        if kind == "step_result":
            into.reward[i] = blobs["reward"]
            into.terminated[i] = blobs["terminated"] != 0
            into.truncated[i] = blobs["truncated"] != 0
        if keys:
            into.info[i] = dict(zip(keys, blobs["info"].reshape(self.layout.n_agents, len(keys)).T, strict=True))
        if not np.isfinite(into.obs[i]).all():
            raise BridgeError(f"bad_result: instance {inst.number}'s {kind} has a non-finite observation.", field="obs",
                              code="bad_result")
        return True

    def _replace_lost(self) -> list[int]:
        """Restart every lost instance (or stop if none may be restarted); returns their rows."""
        rows = sorted(self._lost)
        for i in rows:
            cause = self._lost[i]
            old = self.instances[i]
            server = self.source.server
            if not server.can_restart():
                raise BridgeError(
                    f"instance {old.number} was lost after {old.last} ({cause}); {server.restarts} instances were "
                    f"restarted already (env.max_restarts: {server.config.max_restarts}), so the run stops.",
                    code="game_lost",
                )
            seed = self._base_seed + i + _RESTART_SEED_STRIDE * (server.restarts + 1)
            del self._lost[i]
            self.instances[i] = server.restart(old, seed)
            self.source.stats["restarts"] += 1
        return rows

    def _reset_rows(self, rows: list[int], seeds: list[int | None], into: _Results) -> None:
        """Reset the instances of ``rows``; lost ones are restarted and reset until they answer."""
        pending = list(zip(rows, seeds, strict=True))
        while pending:
            for i, seed in pending:
                self._send(i, {"type": "reset", "seed": seed, "params": self.source.params})
            for i, _ in pending:
                if self._answer(i, "reset_result", into) and not into.alive[i].any():
                    raise BridgeError(
                        f"bad_result: instance {self.instances[i].number}'s reset_result has no agent alive; at least "
                        "one must be.", code="bad_result", field="alive",
                    )
            lost = self._replace_lost()
            pending = [(i, self._base_seed + i + _RESTART_SEED_STRIDE * self.source.server.restarts) for i in lost]

    # -- the VecEnv protocol --------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> dict[str, Observation]:
        """Reset every instance; instance row i gets ``seed + i`` (the ``make_vec`` seed on the first reset
        if None)."""
        self._connect()
        if seed is None:
            seed, self._seed = self._seed, None
        n = self.num_envs
        res = _Results(self.layout, n, step=False)
        self._reset_rows(list(range(n)), [None if seed is None else seed + i for i in range(n)], res)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._ep_infos = [{} for _ in range(n)]
        self._acted = res.alive.copy()
        self._last = res
        return self._observations(res, res.alive)

    def step(self, actions: dict[str, Any]) -> MultiAgentTransition:
        if not self.instances:
            raise InvalidInputError("step: call reset() before the first step.")
        n = self.num_envs
        ints = np.zeros((n, self.layout.int_size), np.int32)
        floats = np.zeros((n, self.layout.float_size), np.float32)
        for name, g in self.groups.items():
            if name not in actions:
                raise InvalidInputError(f"step: no actions for group {name!r}; pass one batch per group "
                                        f"({list(self.groups)}).")
            a_int, a_float = action_to_wire(g.action_space, actions[name], n * len(g.agents))
            if a_int is not None:
                ints[:, self.layout.int_idx[name]] = a_int.reshape(n, len(g.agents), -1)
            if a_float is not None:
                floats[:, self.layout.float_idx[name]] = a_float.reshape(n, len(g.agents), -1)
        for i in range(n):
            self._send(i, {"type": "step"}, {"action_int": ints[i], "action_float": floats[i]})
        res = _Results(self.layout, n, step=True)
        answered = np.array([self._answer(i, "step_result", res) for i in range(n)])
        crashed = ~answered
        acted = self._acted
        for i in np.flatnonzero(crashed):
            # the episode in flight is dropped: its last stored step is cut as truncated, bootstrapped from the
            # last observation the game sent
            res.obs[i], res.mask[i], res.state[i] = self._last.obs[i], self._last.mask[i], self._last.state[i]
            res.truncated[i] = acted[i]
            self.source.stats["dropped_episodes"] += 1
        self._check_leaving(res, acted)
        res.reward *= acted
        res.terminated &= acted
        res.truncated &= acted & ~res.terminated
        res.alive &= ~(res.terminated | res.truncated)
        present = acted | res.alive  # the agents the step's obs describes
        self._ep_return += res.reward
        self._ep_length += 1
        for i in np.flatnonzero(answered):
            for key, values in res.info[i].items():
                for agent in np.flatnonzero(acted[i] & np.isfinite(values)):
                    self._ep_infos[i].setdefault(int(agent), {})[key] = float(values[agent])
        final_obs = self._gather_obs(res.obs, present)
        final_state = self._state(res, present)
        ended = ~res.alive.any(axis=1)
        result = MultiAgentTransition(groups={}, group_returns={g: [] for g in self.groups})
        for i in np.flatnonzero(ended & answered):
            self._record(i, result)
        for i in np.flatnonzero(ended & crashed):
            self._clear(i)
        if crashed.any():
            self._replace_lost()
        nxt = res
        ended_rows = np.flatnonzero(ended).tolist()
        if ended_rows:
            fresh = _Results(self.layout, n, step=False)
            self._reset_rows(ended_rows, [None] * len(ended_rows), fresh)
            nxt = _Results(self.layout, n, step=False)
            keep = ~ended
            for attr in ("obs", "alive", "mask", "state"):
                getattr(nxt, attr)[keep] = getattr(res, attr)[keep]
                getattr(nxt, attr)[ended] = getattr(fresh, attr)[ended]
        self._acted = nxt.alive.copy()
        self._last = nxt
        observations = self._observations(nxt, nxt.alive)
        for name in self.groups:
            ids = self.layout.members[name]
            result.groups[name] = Transition(
                next=observations[name],
                reward=res.reward[:, ids],
                terminated=res.terminated[:, ids],
                truncated=res.truncated[:, ids],
                final_obs=final_obs[name],
                final_state=final_state,
            )
        return result

    def _check_leaving(self, res: _Results, acted: np.ndarray) -> None:
        leaving = acted & ~res.alive & ~res.terminated & ~res.truncated
        if leaving.any():
            i, a = (int(v) for v in np.argwhere(leaving)[0])
            raise BridgeError(
                f"bad_result: instance {self.instances[i].number}'s step_result (answering "
                f"{self.instances[i].last}): agent {self.layout.agents[a].name!r} is no longer alive but is "
                "neither terminated nor truncated; set one of them when an agent leaves.",
                code="bad_result", field="alive",
            )

    # -- assembling what the algorithms see ----------------------------------------------------------------

    def _gather_obs(self, flat: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for name in self.groups:
            ids = self.layout.members[name]
            out[name] = flat[:, self.layout.obs_idx[name]] * present[:, ids, None]
        return out

    def _state(self, res: _Results, present: np.ndarray) -> np.ndarray:
        if self.layout.state_dim:
            return res.state.copy()
        return res.obs * present[:, self.layout.agent_of_obs]

    def _observations(self, res: _Results, alive: np.ndarray) -> dict[str, Observation]:
        obs = self._gather_obs(res.obs, alive)
        state = self._state(res, alive)
        out = {}
        for name, g in self.groups.items():
            ids = self.layout.members[name]
            mask = None
            if g.mask_dim:
                mask = res.mask[:, self.layout.mask_idx[name]] | ~alive[:, ids, None]
                empty = alive[:, ids] & ~mask.any(axis=2)
                if empty.any():
                    i, a = (int(v) for v in np.argwhere(empty)[0])
                    raise BridgeError(
                        f"bad_result: instance {self.instances[i].number}: agent {g.agents[a]!r} is alive with a mask "
                        "that allows nothing; every alive agent needs an allowed action.", code="bad_result",
                        field="mask",
                    )
            out[name] = Observation(obs=obs[name], mask=mask, state=state, alive=alive[:, ids].copy())
        return out

    def _record(self, i: int, result: MultiAgentTransition) -> None:
        returns = self._ep_return[i]
        result.episode_returns.append(float(returns.mean()))
        result.episode_lengths.append(int(self._ep_length[i]))
        result.episode_envs.append(int(i))
        per_key: dict[str, list[float]] = {}
        for scalars in self._ep_infos[i].values():
            for key, value in scalars.items():
                per_key.setdefault(key, []).append(value)
        result.episode_infos.append({key: float(np.mean(v)) for key, v in per_key.items()})
        for name in self.groups:
            result.group_returns[name].append(float(returns[self.layout.members[name]].mean()))
        self._clear(i)

    def _clear(self, i: int) -> None:
        self._ep_return[i] = 0.0
        self._ep_length[i] = 0
        self._ep_infos[i] = {}

    def render(self) -> np.ndarray | None:
        return None  # protocol 1 carries no frames

    def close(self) -> None:
        instances, self.instances = self.instances, []
        for inst in instances:
            inst.close("training finished")
        deadline = time.monotonic() + 3.0  # launched games get 3 s in all to exit on their own
        for inst in instances:
            if inst.game is not None:
                inst.game.stop(grace=max(deadline - time.monotonic(), 0.0))


class RemoteVecEnv:
    """A single-agent bridged game (one declared agent) behind ``agentkit.environment.VecEnv``."""

    def __init__(self, source: Any, num_envs: int, seed: int | None):
        self.multi = RemoteMultiAgentVecEnv(source, num_envs, seed)
        self.num_envs = num_envs
        self.observation_space = source.observation_space
        self.action_space = source.action_space
        self._group = next(iter(self.multi.groups))

    def _observation(self, observations: dict[str, Observation]) -> Observation:
        o = observations[self._group]
        return Observation(obs=o.obs[:, 0], mask=None if o.mask is None else o.mask[:, 0])

    def reset(self, seed: int | None = None) -> Observation:
        return self._observation(self.multi.reset(seed))

    def step(self, actions: Any) -> Transition:
        ma = self.multi.step({self._group: actions})
        tr = ma.groups[self._group]
        terminated, truncated = tr.terminated[:, 0], tr.truncated[:, 0]
        out = Transition(
            next=self._observation({self._group: tr.next}), reward=tr.reward[:, 0], terminated=terminated,
            truncated=truncated, episode_returns=ma.episode_returns, episode_lengths=ma.episode_lengths,
            episode_infos=ma.episode_infos,
        )
        if (terminated | truncated).any():
            out.final_obs = tr.final_obs[:, 0]
        return out

    def render(self) -> np.ndarray | None:
        return None

    def close(self) -> None:
        self.multi.close()
