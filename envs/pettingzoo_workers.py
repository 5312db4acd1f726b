"""The ``pettingzoo`` env plugin's ``vectorization: async``: env copies stepped in worker processes.

The copies are split into contiguous blocks, one per worker. The trainer's own process is the first worker:
it sends every worker process its rows of the actions, steps its own block meanwhile, then gathers the other
blocks' transitions and joins them along the env axis. (A block stepped in a worker process costs the
trainer its step time plus ≈ 0.8 ms per step of pickling and pipe for 8 spread copies on this project's VM,
benchmarks/RESULTS.md; the trainer's own block keeps its core busy meanwhile.) Copy ``n`` is seeded with ``seed + n``
as in the in-process vector env, so both give the same transitions step for step; only the wall clock differs.

Written here because PettingZoo has no vector env of its own, and SuperSuit's vector wrappers
(``pettingzoo_env_to_vec_env_v1`` + ``concat_vec_envs_v1``) flatten agents into vector slots that must never
leave (``black_death``): they have no policy groups, ``alive`` flags or per-group global state.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from agentkit.environment import (
    GroupSpec,
    MultiAgentTransition,
    MultiAgentVecEnv,
    Observation,
    Transition,
    require_every_group,
)


class LocalVecSource(Protocol):
    """What the workers need of an env source (``PettingZooSource`` is one): its description, its ``config``,
    and ``make_local_vec``, copies stepped in the calling process. A worker process rebuilds the source as
    ``type(source)(source.config)``, so this module never imports the env plugin's (no import cycle)."""

    config: Any
    groups: dict[str, GroupSpec]
    state_dim: int
    observation_space: gym.Space
    action_space: gym.Space

    def make_local_vec(self, num_envs: int, seed: int | None, render_mode: str | None = None) -> MultiAgentVecEnv: ...


def _serve(conn: Connection, source_type: Any, config: Any, count: int, seed: int | None,
           render_mode: str | None) -> None:
    """A worker: ``source_type(config).make_local_vec`` of ``count`` copies, answering ``(method, args)`` messages with
    ``("ok", result)`` or ``("error", exception)`` until ``("close", ())`` or until the trainer is gone."""
    # Ctrl-C reaches the whole process group, and the trainer's clean stop finishes its iteration first, with
    # these workers; it closes them after. A trainer killed outright ends them through the closed pipe.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    vec = None
    try:
        try:
            vec = source_type(config).make_local_vec(count, seed, render_mode)
            conn.send(("ok", None))
        except Exception as exc:
            conn.send(("error", _portable(exc)))
            return
        while True:
            method, args = conn.recv()
            if method == "close":
                return
            try:
                answer = ("ok", getattr(vec, method)(*args))
            except Exception as exc:  # the trainer raises it; the worker keeps serving
                answer = ("error", _portable(exc))
            conn.send(answer)
    except (EOFError, ConnectionError):
        pass  # the trainer is gone: nobody to answer
    finally:
        if vec is not None:
            vec.close()
        conn.close()


def _portable(exc: Exception) -> Exception:
    """``exc`` itself when it survives pickling (agentkit's errors do), else a RuntimeError with its traceback."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError("".join(traceback.format_exception(exc)))


class SubprocessPettingZooVecEnv:
    """``MultiAgentVecEnv`` whose copies run in ``workers`` processes, the trainer's and ``workers - 1`` worker
    processes (blocks of near-equal size).

    Worth it when stepping the env, not the network, is the cost (mpe2's spread is about three quarters of a
    MAPPO iteration) and each block has enough copies to outweigh a pipe round trip per step: on this
    project's VM, 1.6× for 32 spread copies on 2 processes, nothing for 8 (``benchmarks/pettingzoo_vector.py``).
    ``render`` shows copy 0, which the trainer's own block holds.
    """

    def __init__(self, source: LocalVecSource, num_envs: int, seed: int | None, render_mode: str | None, workers: int):
        self.num_envs = num_envs
        self.groups = source.groups
        self.state_dim = source.state_dim
        self.observation_space = source.observation_space
        self.action_space = source.action_space
        sizes = [len(block) for block in np.array_split(np.arange(num_envs), workers)]
        self._starts = np.cumsum([0, *sizes])[:-1].tolist()
        self._sizes = sizes
        self._local = source.make_local_vec(sizes[0], seed, render_mode)  # block 0, in the trainer
        # Not fork: the trainer's process holds torch and TensorBoard threads, which fork would copy mid-use.
        # forkserver and spawn import the parent's main module in each worker, hence its __main__ guard.
        context = multiprocessing.get_context(
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        self._conns: list[Connection] = []
        self._procs = []
        for start, size in zip(self._starts[1:], sizes[1:], strict=True):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_serve, args=(child, type(source), source.config, size, None if seed is None else seed + start, None),
                daemon=True,
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._closed = False
        try:
            self._gather()  # each worker built its env copies (or raised why not)
        except Exception:
            self.close()
            raise

    # -- messaging --------------------------------------------------------------------------------------------

    def _call(self, method: str, args_per_block: list[tuple]) -> list[Any]:
        """``method(*args)`` on every block, the worker processes' and the trainer's at the same time."""
        for conn, args in zip(self._conns, args_per_block[1:], strict=True):
            conn.send((method, args))
        try:
            local = getattr(self._local, method)(*args_per_block[0])
        except Exception:
            with contextlib.suppress(Exception):
                self._gather()  # take the workers' answers, so the next call reads its own
            raise
        return [local, *self._gather()]

    def _gather(self) -> list[Any]:
        results, error = [], None
        for conn, proc in zip(self._conns, self._procs, strict=True):
            try:
                status, value = conn.recv()
            except (EOFError, ConnectionError):
                proc.join(timeout=5)
                status, value = "error", RuntimeError(
                    f"a pettingzoo env worker process died (exit code {proc.exitcode}; its error is printed above). "
                    "With env.vectorization: async, a script that trains must start under "
                    "`if __name__ == \"__main__\":`, because each worker imports the script again."
                )
            if status == "error" and error is None:
                error = value
            results.append(value)
        if error is not None:
            raise error
        return results

    # -- protocol -------------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> dict[str, Observation]:
        """Reset every copy; copy i gets ``seed + i`` (the ``make_vec`` seed on the first reset if None)."""
        return _join_observations(self._call("reset", [(None if seed is None else seed + s,) for s in self._starts]))

    def step(self, actions: dict[str, Any]) -> MultiAgentTransition:
        require_every_group(self.groups, actions)
        blocks = [
            ({g: _rows(actions[g], start * len(spec.agents), (start + size) * len(spec.agents))
              for g, spec in self.groups.items()},)
            for start, size in zip(self._starts, self._sizes, strict=True)
        ]
        return _join_transitions(self._call("step", blocks), self._starts)

    def render(self) -> np.ndarray | None:
        return self._local.render()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._local.close()
        for conn in self._conns:
            try:
                conn.send(("close", ()))
            except ConnectionError:
                pass
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        for conn in self._conns:
            conn.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


# -- slicing and joining along the env axis ---------------------------------------------------------------


def _rows(batched: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a batched action: an array, or a tuple/dict of them (hybrid, Dict spaces)."""
    if isinstance(batched, tuple | list):
        return type(batched)(_rows(part, start, stop) for part in batched)
    if isinstance(batched, dict):
        return {key: _rows(part, start, stop) for key, part in batched.items()}
    return np.asarray(batched)[start:stop]


def _cat(arrays: Iterator[np.ndarray | None]) -> np.ndarray | None:
    parts = list(arrays)
    return None if parts[0] is None else np.concatenate(parts)


def _first(groups: dict[str, Any]) -> Any:
    return next(iter(groups.values()))


def _join_observations(blocks: list[dict[str, Observation]]) -> dict[str, Observation]:
    state = _cat(_first(b).state for b in blocks)  # every group shares the one state array
    return {
        g: Observation(
            obs=_cat(b[g].obs for b in blocks),
            mask=_cat(b[g].mask for b in blocks),
            state=state,
            alive=_cat(b[g].alive for b in blocks),
        )
        for g in blocks[0]
    }


def _join_transitions(blocks: list[MultiAgentTransition], starts: list[int]) -> MultiAgentTransition:
    nxt = _join_observations([{g: t.next for g, t in b.groups.items()} for b in blocks])
    final_state = _cat(_first(b.groups).final_state for b in blocks)  # shared by the groups, like state
    result = MultiAgentTransition(
        groups={
            g: Transition(
                next=nxt[g],
                reward=_cat(b.groups[g].reward for b in blocks),
                terminated=_cat(b.groups[g].terminated for b in blocks),
                truncated=_cat(b.groups[g].truncated for b in blocks),
                final_obs=_cat(b.groups[g].final_obs for b in blocks),
                final_state=final_state,
            )
            for g in blocks[0].groups
        },
        group_returns={g: [] for g in blocks[0].group_returns},
    )
    for block, start in zip(blocks, starts, strict=True):
        result.episode_returns += block.episode_returns
        result.episode_lengths += block.episode_lengths
        result.episode_envs += [start + n for n in block.episode_envs]
        result.episode_infos += block.episode_infos
        result.agent_returns += block.agent_returns
        for g, returns in block.group_returns.items():
            result.group_returns[g] += returns
    return result
