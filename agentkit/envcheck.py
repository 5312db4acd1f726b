"""The env boundary: what an env returns is checked before any algorithm sees it.

``agentkit.build.build_env`` wraps every env plugin's source in ``CheckedSource``, so every algorithm
(ppo, mappo, maddpg, a plugin's) gets vector envs that check each reset and step:

- observations (and global states) are arrays of numbers of the declared shape, ``[N, *obs_shape]`` or
  ``[N, A, *obs_shape]``; an action mask keeps its width; rewards are ``[N]`` or ``[N, A]``;
- every floating-point value is finite: NaN or ±inf in an observation, a final observation, a state or a
  reward raises ``NonFiniteError`` (a ``None`` reward reads as NaN once batched);
- a reset or step returns within ``env.step_timeout`` seconds, once the trainer arms the ``StepClock``
  (``EnvTimeoutError``).

Errors name the env, the step, the env copy, the agent and the observation entry. What a single env copy
returns is batched inside the env plugin, so the adapters check a raw observation against its space
themselves when batching fails (``describe_mismatch``).

Cost: a few numpy reductions per vector step (benchmarks/RESULTS.md, "env boundary checks").
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agentkit.environment import (
    MULTI_AGENT_ATTRIBUTES,
    SOURCE_ATTRIBUTES,
    MultiAgentTransition,
    Observation,
    Transition,
)
from agentkit.errors import EnvTimeoutError, InvalidInputError, NonFiniteError, PluginError

_NUMBER_KINDS = "biuf"


# -- one raw observation against its space ------------------------------------------------------------------


def describe_mismatch(space: gym.Space, value: Any, what: str = "the observation") -> str | None:
    """What is wrong with one env copy's raw observation ``value`` for ``space`` (``"entry 'action_mask' has
    shape (3,), expected (4,)"``), or None when its structure, shape and kind of numbers fit."""
    if isinstance(space, spaces.Dict):
        if not isinstance(value, Mapping):
            return f"{what} is a {type(value).__name__}, expected a dict with the keys {list(space.spaces)}"
        for key, sub in space.spaces.items():
            if key not in value:
                return f"{what} has no entry {key!r} (its space has {list(space.spaces)})"
            found = describe_mismatch(sub, value[key], f"entry {key!r}")
            if found:
                return found
        return None
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, tuple | list) or len(value) != len(space.spaces):
            return f"{what} is {_short(value)}, expected a tuple of {len(space.spaces)} entries"
        for i, (sub, item) in enumerate(zip(space.spaces, value, strict=True)):
            found = describe_mismatch(sub, item, f"entry {i}")
            if found:
                return found
        return None
    try:
        array = np.asarray(value)
    except Exception:
        return f"{what} cannot be read as an array ({_short(value)})"
    if array.dtype.kind not in _NUMBER_KINDS:
        return f"{what} holds {array.dtype} data ({_short(value)}), not numbers"
    expected = tuple(space.shape or ())
    if array.shape != expected:
        return f"{what} has shape {array.shape}, expected {expected} ({space})"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- the step clock -----------------------------------------------------------------------------------------


class StepClock:
    """Times each env call; once armed, interrupts one that runs past ``timeout`` seconds.

    ``start(kind, number)``/``stop()`` around each call cost two attribute writes. ``armed()`` (main thread only)
    installs a SIGALRM handler and starts a watchdog thread that, when a call has run for longer than
    ``timeout``, sends SIGALRM to the main thread; the handler raises ``EnvTimeoutError`` inside the call.
    An env stuck in C code that never returns to Python cannot be interrupted this way.
    """

    def __init__(self, env_id: str, timeout: float | None):
        self.env_id = env_id
        self.timeout = timeout
        self.busy: tuple[str, int, float] | None = None  # (reset or step, its number, when it started)
        self._fired: tuple[str, int, float] | None = None
        self._stop = threading.Event()

    def start(self, kind: str, number: int = 0) -> None:
        self.busy = (kind, number, time.monotonic())

    def stop(self) -> None:
        self.busy = None

    def armed(self) -> _Armed:
        return _Armed(self)

    def _watch(self, main_thread: int) -> None:
        assert self.timeout is not None
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            busy = self.busy
            if busy is not None and busy is not self._fired and time.monotonic() - busy[2] > self.timeout:
                self._fired = busy
                signal.pthread_kill(main_thread, signal.SIGALRM)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        fired = self._fired
        if fired is None or self.busy is not fired:  # the call ended just in time
            return
        kind, number, started = fired
        what = f"step {number}" if kind == "step" else kind
        raise EnvTimeoutError(
            f"env {self.env_id!r}: {what} did not return within env.step_timeout = {self.timeout:g} s (it has run "
            f"{time.monotonic() - started:.1f} s). The env is hung or too slow: fix it, or raise env.step_timeout "
            "(null: no limit)."
        )


class _Armed:
    def __init__(self, clock: StepClock):
        self.clock = clock
        self._previous: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StepClock:
        clock = self.clock
        if clock.timeout is None or threading.current_thread() is not threading.main_thread():
            return clock
        self._previous = signal.signal(signal.SIGALRM, clock._on_alarm)
        clock._stop.clear()
        self._thread = threading.Thread(
            target=clock._watch, args=(threading.main_thread().ident,), name="agentkit-step-clock", daemon=True
        )
        self._thread.start()
        return clock

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            return
        self.clock._stop.set()
        self._thread.join()
        signal.signal(signal.SIGALRM, self._previous)


# -- checked vector envs ------------------------------------------------------------------------------------


def require_declared(source: Any) -> None:
    """``PluginError`` naming the attributes of ``agentkit.environment.EnvSource`` (and ``MultiAgentEnvSource``
    for a ``multi_agent`` source) that an env plugin's source does not declare."""
    missing = [a for a in SOURCE_ATTRIBUTES if not hasattr(source, a)]
    if not missing and source.multi_agent:
        missing = [a for a in MULTI_AGENT_ATTRIBUTES if not hasattr(source, a)]
    if missing:
        raise PluginError(
            f"the env source {type(source).__name__} does not declare {', '.join(missing)}: an env plugin's source "
            "declares every attribute of agentkit.environment.EnvSource (MultiAgentEnvSource when multi_agent), "
            "e.g. observation_fields = None for a Box observation, enforces_step_timeout = False, turn_based = False, "
            "def close(self): pass for a source that holds nothing between its vector envs."
        )


class CheckedSource:
    """An env source whose vector envs check what they return (the module docstring). Every other attribute is
    the wrapped source's.

    A source that enforces ``env.step_timeout`` itself, with messages that know more (the remote plugin: which
    game instance, which request, restarts of crashed games within a step), says so with a true
    ``enforces_step_timeout`` attribute; the clock then only times calls and never interrupts them.
    """

    def __init__(self, source: Any, step_timeout: float | None = None):
        require_declared(source)
        self._source = source
        if source.enforces_step_timeout:
            step_timeout = None
        self.clock = StepClock(str(source.env_id), step_timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    @property
    def wrapped(self) -> Any:
        """The env plugin's own source."""
        return self._source

    def close(self) -> None:
        """Close the env plugin's source (``EnvSource.close``)."""
        self._source.close()

    def make_vec(self, num_envs: int, *args: Any, **kwargs: Any) -> Any:
        vec = self._source.make_vec(num_envs, *args, **kwargs)
        if self._source.multi_agent:
            return CheckedMultiAgentVecEnv(vec, self)
        return CheckedVecEnv(vec, self)


class _Checked:
    """What both checked vector envs share: the clock around each call, the array checks and the names."""

    def __init__(self, env: Any, source: CheckedSource):
        self.env = env
        self.source = source
        self.env_id = source.clock.env_id
        self.steps = 0
        self._ones: dict[tuple[int, str], np.ndarray] = {}  # the finite check's dot product, per size and dtype
        self.interrupted = False  # an env call was cut off (timeout, Ctrl-C): closing it could hang again

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def _call(self, kind: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        clock = self.source.clock
        clock.start(kind, self.steps + 1)
        try:
            return fn(*args, **kwargs)
        except (EnvTimeoutError, KeyboardInterrupt, SystemExit):
            self.interrupted = True
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # e.g. the trainer's abort on a second SIGTERM
                self.interrupted = True
            raise
        finally:
            clock.stop()

    def _where(self) -> str:
        return "at reset" if self.steps == 0 else f"at step {self.steps}"

    def _array(self, array: Any, shape: tuple[int, ...], what: str, agents: list[str] | None = None,
               fields: list[dict[str, Any]] | None = None) -> None:
        if array.__class__ is np.ndarray and array.shape == shape:
            kind = array.dtype.kind
            if kind == "f":
                flat = array.reshape(-1)
                ones = self._ones.get((flat.size, flat.dtype.char))
                if ones is None:
                    ones = self._ones[(flat.size, flat.dtype.char)] = np.ones(flat.size, flat.dtype)
                # the sum is finite when every value is (or it overflowed: then look closer); one BLAS call
                if math.isfinite(np.dot(flat, ones)) or np.isfinite(array).all():
                    return
            elif kind in _NUMBER_KINDS:
                return
        self._bad_array(array, shape, what, agents, fields)

    def _bad_array(self, array: Any, shape: tuple[int, ...], what: str, agents: list[str] | None,
                   fields: list[dict[str, Any]] | None) -> None:
        if not isinstance(array, np.ndarray) or array.dtype.kind not in _NUMBER_KINDS:
            kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise InvalidInputError(
                f"env {self.env_id!r} returned {what} of {kind} {self._where()}, not an array of numbers; an env "
                "must return numbers that fit its declared space."
            )
        if array.shape != shape:
            raise InvalidInputError(
                f"env {self.env_id!r} returned {what} of shape {array.shape} {self._where()}, expected {shape}; "
                "an env must return values that fit its declared space."
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            index = [int(i) for i in np.argwhere(~np.isfinite(array))[0]]
            value = array[tuple(index)]
            where = [f"env copy {index[0]}"]
            rest = index[1:]
            if agents is not None and rest:
                where.append(f"agent {agents[rest[0]]!r}")
                rest = rest[1:]
            if rest:
                where.append(_element(rest, fields, array.shape[len(index) - len(rest):]))
            none_hint = " (an env returning None as a reward reads as nan)" if "reward" in what else ""
            raise NonFiniteError(
                f"env {self.env_id!r} returned {value} in {what} {self._where()} ({', '.join(where)}){none_hint}. "
                "Training needs finite numbers: fix the env, or wrap it to clip or replace such values."
            )

    def _mask(self, mask: Any, shape: tuple[int, ...], what: str = "the action mask") -> None:
        if mask is None:
            return
        if not isinstance(mask, np.ndarray) or mask.shape != shape:
            got = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
            raise InvalidInputError(
                f"env {self.env_id!r} returned {what} of shape {got} {self._where()}, expected {shape}; a mask "
                "has one entry per action, the same width at every step."
            )

    def close(self) -> None:
        if not self.interrupted:  # an interrupted env may be stuck mid-call; its processes end with the program
            self.env.close()


def _element(index: list[int], fields: list[dict[str, Any]] | None, shape: tuple[int, ...]) -> str:
    """An observation element: entry and position within it when the observation is flattened from entries."""
    if fields and len(index) == 1:
        flat = index[0]
        for field in fields:
            if field["start"] <= flat < field["start"] + field["size"]:
                key = field["key"]
                inner = flat - field["start"]
                name = f"entry {key!r}" if key is not None else "the value"
                return f"{name}, element {inner}" if field["size"] > 1 else name
    return f"element {index[0] if len(index) == 1 else tuple(index)}"


class CheckedVecEnv(_Checked):
    """A single-agent ``VecEnv`` whose returns are checked (``agentkit.environment.VecEnv``)."""

    def __init__(self, env: Any, source: CheckedSource):
        super().__init__(env, source)
        self._obs_shape = (env.num_envs, *env.observation_space.shape)
        self._reward_shape = (env.num_envs,)
        self._fields = source.observation_fields
        self._mask_shape: tuple[int, ...] | None = None

    def _observation(self, ob: Observation, what: str = "the observation") -> None:
        self._array(ob.obs, self._obs_shape, what, fields=self._fields)
        if ob.mask is not None:
            if self._mask_shape is None:
                self._mask_shape = ob.mask.shape if isinstance(ob.mask, np.ndarray) else None
            self._mask(ob.mask, self._mask_shape or ())

    def reset(self, seed: int | None = None) -> Observation:
        self.steps = 0
        ob = self._call("reset", self.env.reset, seed=seed)
        self._observation(ob)
        return ob

    def step(self, actions: Any) -> Transition:
        tr = self._call("step", self.env.step, actions)
        self.steps += 1
        self._observation(tr.next)
        self._array(tr.reward, self._reward_shape, "the reward")
        if tr.final_obs is not None:
            self._array(tr.final_obs, self._obs_shape, "the final observation of an episode", fields=self._fields)
        return tr


class CheckedMultiAgentVecEnv(_Checked):
    """A ``MultiAgentVecEnv`` whose returns are checked, group by group."""

    def _group(self, name: str, ob: Observation, what: str = "the observation") -> None:
        spec = self.env.groups[name]
        n, agents = self.env.num_envs, spec.agents
        shape = (n, len(agents), *spec.observation_space.shape)
        self._array(ob.obs, shape, f"{what} of group {name!r}", agents, spec.observation_fields)
        if spec.mask_dim:
            self._mask(ob.mask, (n, len(agents), spec.mask_dim), f"the action mask of group {name!r}")
        if ob.state is not None:
            self._array(ob.state, (n, self.env.state_dim), "the global state")

    def reset(self, seed: int | None = None) -> dict[str, Observation]:
        self.steps = 0
        obs = self._call("reset", self.env.reset, seed=seed)
        for name, ob in obs.items():
            self._group(name, ob)
        return obs

    def step(self, actions: dict[str, Any]) -> MultiAgentTransition:
        tr = self._call("step", self.env.step, actions)
        self.steps += 1
        n = self.env.num_envs
        for name, group in tr.groups.items():
            spec = self.env.groups[name]
            self._group(name, group.next)
            self._array(group.reward, (n, len(spec.agents)), f"the reward of group {name!r}", spec.agents)
            if group.final_obs is not None:
                shape = (n, len(spec.agents), *spec.observation_space.shape)
                self._array(group.final_obs, shape, f"the final observation of group {name!r}", spec.agents,
                            spec.observation_fields)
            if group.final_state is not None:
                self._array(group.final_state, (n, self.env.state_dim), "the final global state")
        return tr
