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
from collections.abc import Iterable
from typing import Any

import numpy as np
from gymnasium import spaces

from agentkit.environment import GroupSpec, MultiAgentTransition, Observation, Transition
from agentkit.errors import InvalidInputError
from agentkit.observations import ObservationLayout
from agentkit.spaces import HybridSpace

from .protocol import DTYPES, OBS_BLOBS, AgentSpec, BridgeDisconnected, BridgeError, Layout, encode_rows
from .server import Instance

_RESTART_SEED_STRIDE = 100_003


class WireLayout:
    """Where every agent's values sit in the flat arrays of a message, and each group's gather indices.

    Observations travel in one blob per wire dtype (``protocol.OBS_BLOBS``); ``obs_sizes`` gives each blob's
    values per instance. A group's policy observation is gathered from them: a Box observation keeps its shape
    (and uint8), a Dict one is the flat float32 vector of its ``ObservationLayout.fields``.
    """

    def __init__(self, agents: list[AgentSpec], groups: dict[str, GroupSpec], state_dim: int,
                 layouts: dict[str, ObservationLayout]):
        self.agents = agents
        self.n_agents = len(agents)
        self.state_dim = state_dim
        index = {a.name: i for i, a in enumerate(agents)}

        def offsets(sizes: list[int]) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

        obs_off = {d: offsets([a.obs_count(d) for a in agents]) for d in OBS_BLOBS}
        self.obs_sizes = {d: int(off[-1]) for d, off in obs_off.items() if off[-1] > 0}
        mask_off = offsets([a.mask_dim for a in agents])
        int_off = offsets([a.n_int for a in agents])
        float_off = offsets([a.n_float for a in agents])
        self.mask_size = int(mask_off[-1])
        self.int_size, self.float_size = int(int_off[-1]), int(float_off[-1])
        self.agent_of_obs = {d: np.repeat(np.arange(self.n_agents), [a.obs_count(d) for a in agents])
                             for d in self.obs_sizes}
        # per group: agent indices [A_g]; its observation as (dtype, gather indices [A_g, size], destination
        # columns of the flat vector, or None for a Box kept in its shape) per entry; mask/action indices
        self.members: dict[str, np.ndarray] = {}
        self.obs_parts: dict[str, list[tuple[str, np.ndarray | slice, slice | None]]] = {}
        self.obs_space: dict[str, spaces.Box] = {}
        self.member_sel: dict[str, np.ndarray | slice] = {}  # ``members`` as a slice where they are adjacent
        self.mask_idx: dict[str, np.ndarray] = {}
        self.mask_sel: dict[str, np.ndarray | slice] = {}  # ``mask_idx`` as a slice where it is one run
        self.int_idx: dict[str, np.ndarray] = {}
        self.float_idx: dict[str, np.ndarray] = {}
        for name, g in groups.items():
            ids = np.array([index[a] for a in g.agents])
            first = agents[ids[0]]
            layout = layouts[first.name]
            self.members[name] = ids
            self.obs_space[name] = layout.space
            by_key = {e.key: e for e in first.entries}
            if layout.fields is None:  # one Box
                (entry,) = first.entries
                idx = obs_off[entry.dtype][ids][:, None] + entry.offset + np.arange(entry.size)
                parts = [(entry.dtype, _as_slice(idx), None)]
            else:
                parts = []
                for f in layout.fields:
                    entry = by_key[f["key"]]
                    idx = obs_off[entry.dtype][ids][:, None] + entry.offset + np.arange(entry.size)
                    parts.append((entry.dtype, idx, slice(f["start"], f["start"] + f["size"])))
            self.obs_parts[name] = parts
            self.member_sel[name] = _as_slice(ids)
            self.mask_idx[name] = mask_off[ids][:, None] + np.arange(first.mask_dim)
            self.mask_sel[name] = _as_slice(self.mask_idx[name])
            self.int_idx[name] = int_off[ids][:, None] + np.arange(first.n_int)
            self.float_idx[name] = float_off[ids][:, None] + np.arange(first.n_float)

    def expected(self, kind: str, info_keys: int) -> dict[str, int]:
        """The blobs a ``reset_result``/``step_result`` must carry, with their counts."""
        out = {OBS_BLOBS[d]: size for d, size in self.obs_sizes.items()}
        out["alive"] = self.n_agents
        if kind == "step_result":
            out.update(reward=self.n_agents, terminated=self.n_agents, truncated=self.n_agents)
        if self.mask_size:
            out["mask"] = self.mask_size
        if self.state_dim:
            out["state"] = self.state_dim
        if info_keys:
            out["info"] = self.n_agents * info_keys
        return out

    def gather(self, name: str, obs: dict[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """Group ``name``'s policy observations ``[N, A_g, *space.shape]`` from the per-dtype arrays ``obs``
        (``[N, size]`` each); zeros for the agents not ``present`` (``[N, A]``)."""
        space = self.obs_space[name]
        parts = self.obs_parts[name]
        n, ids = present.shape[0], self.members[name]
        if parts[0][2] is None:
            dtype, idx, _ = parts[0]
            out = obs[dtype][:, idx].astype(space.dtype).reshape(n, len(ids), *space.shape)
        else:
            out = np.empty((n, len(ids), *space.shape), np.float32)
            for dtype, idx, columns in parts:
                out[:, :, columns] = obs[dtype][:, idx]
        absent = ~present[:, ids]
        if absent.any():
            out[absent] = 0
        return out


def _as_slice(idx: np.ndarray) -> np.ndarray | slice:
    """Gather indices (``[A_g]`` or ``[A_g, size]``) as a slice when they are one run of columns (a group whose agents sit
    side by side, e.g. one agent): a view instead of a fancy-index copy."""
    flat = idx.reshape(-1)
    if flat.size and np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size)):
        return slice(int(flat[0]), int(flat[0]) + flat.size)
    return idx


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
    """The N instances' answers stacked: flat arrays ``[N, width]``; ``obs`` one per wire dtype."""

    def __init__(self, layout: WireLayout, n: int, step: bool):
        a = layout.n_agents
        self.obs = {d: np.zeros((n, size), DTYPES[d]) for d, size in layout.obs_sizes.items()}
        self.alive = np.zeros((n, a), bool)
        self.mask = np.ones((n, layout.mask_size), bool)
        self.state = np.zeros((n, layout.state_dim), np.float32)
        if step:
            self.reward = np.zeros((n, a), np.float32)
            self.terminated = np.zeros((n, a), bool)
            self.truncated = np.zeros((n, a), bool)
        # (rows: a list, or slice(None) for all, info_keys, values [m, A, K])
        self.info: list[tuple[list[int] | slice, tuple[str, ...], np.ndarray]] = []

    def observed(self) -> list[np.ndarray]:
        """The arrays that describe what the agents see after a reset or step (copied row by row)."""
        return [*self.obs.values(), self.alive, self.mask, self.state]


class RemoteMultiAgentVecEnv:
    """``num_envs`` bridged game instances behind ``agentkit.environment.MultiAgentVecEnv``."""

    def __init__(self, source: Any, num_envs: int, seed: int | None, with_state: bool = True, render: bool = False):
        """``with_state``: build the global state (False for a single-agent game, whose policy has no use for it);
        ``render``: ask protocol 2 games for a frame with every request (``render()`` gives instance 0's last)."""
        self.source = source
        self.with_state = with_state
        self.render_frames = render and source.hello.protocol >= 2
        self._frames: dict[int, np.ndarray] = {}
        self.num_envs = num_envs
        self.groups: dict[str, GroupSpec] = source.groups
        self.state_dim = source.state_dim
        self.observation_space = source.observation_space
        self.action_space = source.action_space
        self.layout = WireLayout(source.agent_specs, self.groups, source.declared_state_dim, source.layouts)
        self.instances: list[Instance] = []
        self._seed = seed
        self._base_seed = 0 if seed is None else seed
        n, a = num_envs, self.layout.n_agents
        self._acted = np.zeros((n, a), bool)  # alive before the step: the agents whose actions count
        self._last = _Results(self.layout, n, step=False)
        self._ep_return = np.zeros((n, a), np.float64)
        self._ep_length = np.zeros(n, np.int64)
        # each row's info values so far in its episode: the last finite value per agent, NaN for none, in a
        # matrix [A, K] for the keys the game sent last (``_info_keys``) and by key for keys it sent before
        self._info_keys: tuple[str, ...] = ()
        self._info_vals = np.zeros((n, a, 0))
        self._info_rest: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
        self._lost: dict[int, BridgeError] = {}
        self._checked: dict[int, tuple[dict[str, Any], str]] = {}  # headers whose blobs were checked, by id

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

    def _flush(self, rows: Iterable[int]) -> None:
        """Games that serve several instances on one connection get their queued batches now."""
        for i in rows:
            if i not in self._lost:
                try:
                    self.instances[i].flush()
                except BridgeDisconnected as exc:
                    self._lost[i] = exc

    def _answers(self, rows: list[int], kind: str, into: _Results) -> np.ndarray:
        """Read the answers of instances ``rows`` into ``into``; returns which rows answered (a lost instance
        does not). The instances' blob bytes are stacked and each blob copied once for all of them (games
        send the same header at every step, so one check and one layout serve the whole vector step)."""
        answered = np.zeros(self.num_envs, bool)
        self._flush(rows)
        groups: dict[int, tuple[dict[str, Any], Layout, list[int], list[memoryview]]] = {}
        for i in rows:
            if i in self._lost:
                continue
            inst = self.instances[i]
            try:
                header, layout, body = inst.answer_split(kind)
            except BridgeDisconnected as exc:
                self._lost[i] = exc
                continue
            group = groups.get(id(header))
            if group is None:
                seen = self._checked.get(id(header))
                if seen is None or seen[0] is not header or seen[1] != kind:
                    self._check_blobs(inst, kind, header, layout)
                group = groups[id(header)] = (header, layout, [], [])
            group[2].append(i)
            group[3].append(body)
        for header, layout, members, bodies in groups.values():
            stacked = np.frombuffer(b"".join(bodies), np.uint8).reshape(len(members), -1)
            blobs = {name: stacked[:, offset:offset + count * dtype.itemsize].view(dtype)
                     for name, dtype, count, offset in layout}
            at: Any = members if len(members) < self.num_envs else slice(None)
            for d, array in into.obs.items():
                array[at] = blobs[OBS_BLOBS[d]]
            into.alive[at] = blobs["alive"]  # uint8 into bool: any non-zero byte is True
            if "mask" in blobs:
                into.mask[at] = blobs["mask"]
            if "state" in blobs:
                into.state[at] = blobs["state"]
            if kind == "step_result":
                into.reward[at] = blobs["reward"]
                into.terminated[at] = blobs["terminated"]
                into.truncated[at] = blobs["truncated"]
            if "frame" in blobs:
                shape = tuple(header["frame_shape"])
                for j, row in enumerate(members):
                    self._frames[row] = blobs["frame"][j].reshape(shape).copy()
            keys = header.get("info_keys")
            if keys:
                into.info.append((at, tuple(keys), blobs["info"].reshape(len(members), self.layout.n_agents,
                                                                          len(keys))))
            answered[members] = True
        return answered

    def _check_blobs(self, inst: Instance, kind: str, header: dict[str, Any], layout: Layout) -> None:
        """The blobs of a header not seen before must be those the declared agents need. ``split`` hands out one
        shared header per header text and checked the sizes against it, so every later frame with the same
        header has the same blobs: each header is checked once (remembered by id, the header kept alive)."""
        keys = header.get("info_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BridgeError(f"bad_frame: instance {inst.number}'s {kind}: info_keys must be a list of strings.",
                              field="info_keys")
        expected = self.layout.expected(kind, len(keys))
        blobs = {name: (dtype, count) for name, dtype, count, _ in layout}
        for name, count in expected.items():
            if name not in blobs:
                raise BridgeError(f"bad_frame: instance {inst.number}'s {kind} (answering {inst.last}) has no "
                                  f"blob {name!r}; it must carry {', '.join(expected)}.", field=name)
            dtype, size = blobs[name]
            if size != count:
                raise BridgeError(
                    f"bad_frame: instance {inst.number}'s {kind} blob {name!r} has {size} values; the declared "
                    f"agents and spaces need {count}.", field=name,
                )
            if dtype != DTYPES[self._dtype_of(name)]:
                raise BridgeError(
                    f"bad_frame: instance {inst.number}'s {kind} blob {name!r} is {dtype.name}; the protocol "
                    f"sends it as {self._dtype_of(name)}.", field=name,
                )
        if "frame" in blobs and self.render_frames:
            shape = header.get("frame_shape")
            if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)
                    and shape[2] in (3, 4) and int(np.prod(shape)) == blobs["frame"][1]
                    and blobs["frame"][0] == np.uint8):
                raise BridgeError(
                    f"bad_frame: instance {inst.number}'s {kind} has a 'frame' blob of {blobs['frame'][1]} "
                    f"{blobs['frame'][0].name} values with frame_shape {shape!r}; send uint8 [H, W, 3] (or 4) values "
                    "and their frame_shape.", field="frame_shape",
                )
            expected = {**expected, "frame": blobs["frame"][1]}
        extra = sorted(set(blobs) - set(expected))
        if extra:
            raise BridgeError(f"bad_frame: instance {inst.number}'s {kind} has unknown blobs {extra}.", field=extra[0])
        if len(self._checked) > 256:
            self._checked.clear()
        self._checked[id(header)] = (header, kind)

    @staticmethod
    def _dtype_of(blob: str) -> str:
        for d, name in OBS_BLOBS.items():
            if name == blob:
                return d
        return {"alive": "uint8", "terminated": "uint8", "truncated": "uint8", "mask": "uint8"}.get(blob, "float32")

    def _check_finite(self, into: _Results, kind: str, rows: np.ndarray | None = None) -> None:
        obs = into.obs.get("float32")
        if obs is None:
            return
        bad = ~np.isfinite(obs).all(axis=1)
        if rows is not None:
            bad &= rows
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BridgeError(f"bad_result: instance {self.instances[i].number}'s {kind} has a non-finite observation.",
                              field="obs", code="bad_result")

    def _replace_lost(self) -> list[int]:
        """Restart every lost instance (or stop if none may be restarted); returns their rows."""
        rows = sorted(self._lost)
        for i in rows:
            cause = self._lost[i]
            old = self.instances[i]
            server = self.source.server
            if not server.can_restart(old):
                raise BridgeError(
                    f"instance {old.number} was lost after {old.last} ({cause}); {server.restarts} games were "
                    f"restarted already (env.max_restarts: {server.config.max_restarts}), so the run stops.",
                    code="game_lost",
                )
            seed = self._base_seed + i + _RESTART_SEED_STRIDE * (server.restarts + 1)
            del self._lost[i]
            self.instances[i] = server.restart(old, seed)
            self.source.stats["restarts"] = server.restarts  # games, as max_restarts counts them
        return rows

    def _reset_rows(self, rows: list[int], seeds: list[int | None], into: _Results) -> None:
        """Reset the instances of ``rows``; lost ones are restarted and reset until they answer."""
        pending = list(zip(rows, seeds, strict=True))
        while pending:
            for i, seed in pending:
                header = {"type": "reset", "seed": seed, "params": self.source.params}
                self._send(i, {**header, "render": True} if self.render_frames else header)
            answered = self._answers([i for i, _ in pending], "reset_result", into)
            empty = answered & ~into.alive.any(axis=1)
            if empty.any():
                raise BridgeError(
                    f"bad_result: instance {self.instances[int(np.flatnonzero(empty)[0])].number}'s reset_result has "
                    "no agent alive; at least one must be.", code="bad_result", field="alive",
                )
            self._check_finite(into, "reset_result", answered)
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
        for i in range(n):
            self._clear(i)
        self._acted = res.alive.copy()
        self._last = res
        return self._observations(res, res.alive)

    def step(self, actions: dict[str, Any]) -> MultiAgentTransition:
        self.send_step(actions)
        return self.finish_step()

    def send_step(self, actions: dict[str, Any]) -> None:
        """The first half of ``step``: the actions go to every instance, which starts stepping now; a caller
        may work (say, choose another vector env's actions) before ``finish_step`` waits for the results."""
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
        steps = encode_rows("step", {"action_int": ints, "action_float": floats}, render=self.render_frames)
        for i, payload in enumerate(steps):
            if i not in self._lost:
                try:
                    self.instances[i].send_encoded("step", payload)
                except BridgeDisconnected as exc:
                    self._lost[i] = exc
        self._flush(range(n))

    def finish_step(self) -> MultiAgentTransition:
        """The second half of ``step``: the instances' results, once each has answered (``send_step`` first)."""
        n = self.num_envs
        res = _Results(self.layout, n, step=True)
        answered = self._answers(list(range(n)), "step_result", res)
        self._check_finite(res, "step_result", answered)
        crashed = ~answered
        any_crashed = not answered.all()
        acted = self._acted
        for i in np.flatnonzero(crashed) if any_crashed else ():
            # the episode in flight is dropped: its last stored step is cut as truncated, bootstrapped from the
            # last observation the game sent
            for now, before in zip(res.observed(), self._last.observed(), strict=True):
                now[i] = before[i]
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
        for rows, keys, values in res.info:
            self._note_info(rows, keys, values, acted[rows])
        ended = ~res.alive.any(axis=1)
        # what the step's observation was for the agents that just left; when none left (most steps) it is the
        # next observation itself, taken below without a second gather
        final_obs = final_state = None
        if any_crashed or (res.terminated | res.truncated).any():
            final_obs = self._gather_obs(res.obs, present)
            final_state = self._state(res, present)
        result = MultiAgentTransition(groups={}, group_returns={g: [] for g in self.groups})
        if ended.any():
            for i in np.flatnonzero(ended & answered):
                self._record(i, result)
            for i in np.flatnonzero(ended & crashed) if any_crashed else ():
                self._clear(i)
        if any_crashed:
            self._replace_lost()
        if ended.any():  # their reset_results overwrite their rows of what the agents see (copied out above)
            ended_rows = np.flatnonzero(ended).tolist()
            self._reset_rows(ended_rows, [None] * len(ended_rows), res)
        self._acted = res.alive.copy()
        self._last = res
        observations = self._observations(res, res.alive)
        for name in self.groups:
            sel = self.layout.member_sel[name]
            seen = observations[name]
            result.groups[name] = Transition(
                next=seen,
                reward=res.reward[:, sel],
                terminated=res.terminated[:, sel],
                truncated=res.truncated[:, sel],
                final_obs=seen.obs if final_obs is None else final_obs[name],
                final_state=seen.state if final_obs is None else final_state,
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

    def _gather_obs(self, obs: dict[str, np.ndarray], present: np.ndarray) -> dict[str, np.ndarray]:
        return {name: self.layout.gather(name, obs, present) for name in self.groups}

    def _state(self, res: _Results, present: np.ndarray) -> np.ndarray | None:
        """The declared global state, or every agent's observation values (float32; each wire dtype's blob in
        turn, float32 first) with zeros for the agents not ``present``; None without ``with_state``."""
        if not self.with_state:
            return None
        if self.layout.state_dim:
            return res.state.copy()
        parts = [res.obs[d] * present[:, self.layout.agent_of_obs[d]] for d in self.layout.obs_sizes]
        return (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)).astype(np.float32, copy=False)

    def _observations(self, res: _Results, alive: np.ndarray) -> dict[str, Observation]:
        obs = self._gather_obs(res.obs, alive)
        state = self._state(res, alive)
        out = {}
        everyone = alive.all()
        for name, g in self.groups.items():
            ids = self.layout.members[name]
            mask = None
            if g.mask_dim:
                sel = self.layout.mask_sel[name]
                mask = res.mask[:, sel]
                if isinstance(sel, slice):
                    mask = mask.reshape(len(alive), len(ids), g.mask_dim)
                # absent agents' rows allow everything (the pettingzoo adapter's rule)
                mask = mask.copy() if everyone else mask | ~alive[:, ids, None]
                empty = ~mask.any(axis=2)
                if empty.any():
                    i, a = (int(v) for v in np.argwhere(empty)[0])
                    raise BridgeError(
                        f"bad_result: instance {self.instances[i].number}: agent {g.agents[a]!r} is alive with a mask "
                        "that allows nothing; every alive agent needs an allowed action.", code="bad_result",
                        field="mask",
                    )
            out[name] = Observation(obs=obs[name], mask=mask, state=state, alive=alive[:, self.layout.member_sel[name]].copy())
        return out

    def _record(self, i: int, result: MultiAgentTransition) -> None:
        returns = self._ep_return[i]
        result.episode_returns.append(float(returns.mean()))
        result.episode_lengths.append(int(self._ep_length[i]))
        result.episode_envs.append(int(i))
        infos = {}
        last_values = dict(self._info_rest[i])
        last_values.update({key: self._info_vals[i, :, k] for k, key in enumerate(self._info_keys)})
        for key, last in last_values.items():  # the mean over the agents that reported the key
            reported = last[np.isfinite(last)]
            if reported.size:
                infos[key] = float(reported.mean())
        result.episode_infos.append(infos)
        for name in self.groups:
            result.group_returns[name].append(float(returns[self.layout.members[name]].mean()))
        self._clear(i)

    def _clear(self, i: int) -> None:
        self._ep_return[i] = 0.0
        self._ep_length[i] = 0
        self._info_vals[i] = np.nan
        self._info_rest[i] = {}

    def _note_info(self, rows: list[int] | slice, keys: tuple[str, ...], values: np.ndarray, acted: np.ndarray) -> None:
        """Keep the latest finite info values ``[m, A, K]`` of the agents that acted, for ``rows``. The values
        sit in one array ``[N, A, K]`` for the keys the games sent last (usually the same at every step), and
        by key per row for keys sent before."""
        if keys != self._info_keys:
            self._fold_info(keys)
        take = acted[:, :, None] & np.isfinite(values)
        self._info_vals[rows] = np.where(take, values, self._info_vals[rows])

    def _fold_info(self, keys: tuple[str, ...]) -> None:
        """Move every row's values into its by-key store, and lay out the array for ``keys``."""
        n, a = self.num_envs, self.layout.n_agents
        for i in range(n):
            for k, key in enumerate(self._info_keys):
                if np.isfinite(self._info_vals[i, :, k]).any():
                    self._info_rest[i][key] = self._info_vals[i, :, k].copy()
        self._info_keys = keys
        self._info_vals = np.full((n, a, len(keys)), np.nan)
        for i in range(n):
            for k, key in enumerate(keys):
                if key in self._info_rest[i]:
                    self._info_vals[i, :, k] = self._info_rest[i].pop(key)

    def render(self) -> np.ndarray | None:
        """Instance 0's last frame (uint8 ``[H, W, 3]``), when frames were asked for and the game sends them."""
        return self._frames.get(0)

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

    def __init__(self, source: Any, num_envs: int, seed: int | None, render: bool = False):
        self.multi = RemoteMultiAgentVecEnv(source, num_envs, seed, with_state=False, render=render)
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
        self.send_step(actions)
        return self.finish_step()

    def send_step(self, actions: Any) -> None:
        """``RemoteMultiAgentVecEnv.send_step``: the instances start stepping; ``finish_step`` waits for them."""
        self.multi.send_step({self._group: actions})

    def finish_step(self) -> Transition:
        ma = self.multi.finish_step()
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
        return self.multi.render()

    def close(self) -> None:
        self.multi.close()
