"""The ``gymnasium`` env plugin: any registered gymnasium env as an agentkit ``EnvSource``.

    env: {plugin: gymnasium, id: CartPole-v1, num_envs: 8, vectorization: sync, kwargs: {}}

Vector envs are gymnasium's own (``SyncVectorEnv`` by default, ``AsyncVectorEnv`` with
``vectorization: async``), in same-step autoreset mode: when an episode ends, ``step`` returns the first
observation of the next episode and the last observation of the ended one travels in
``Transition.final_obs`` so that a truncated episode can be bootstrapped from it.

``env.wrappers`` (``agentkit.wrappers``) wraps each env copy in order right after ``gymnasium.make``.

Observations reach the policy as the env gives them (``agentkit.observations``: a Box in its own shape, uint8
images kept uint8; a
Discrete, MultiDiscrete or MultiBinary value, or a Dict or Tuple of such entries and Boxes, flattened to float32 by the rule
exports describe in ``metadata.observation.fields``). A ``Dict`` observation may carry an ``action_mask``
entry; otherwise an ``info["action_mask"]`` is used when the env provides one at reset. Hybrid action
spaces (``agentkit.spaces.HybridSpace``, a ``Tuple``) pass through: the vector env takes a tuple of
batched arrays ``(types [N], params [N, P])``. An env written for another tool that declares its
parameterised actions as a plain ``Tuple`` (gym-hybrid's ``Tuple(Discrete(K), Box(P))`` with
``action_types``, gym-platform's ``Tuple(Discrete(K), Tuple(Box, ...))``) is wrapped to show the
``HybridSpace`` it stands for (``agentkit.spaces.hybrid_view``); the env still receives its own form.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from pydantic import Field

import agentkit
from agentkit.config import EnvConfig
from agentkit.envcheck import describe_mismatch
from agentkit.environment import Observation, Transition, is_info_metric
from agentkit.errors import ConfigError, InvalidInputError
from agentkit.observations import MASK_KEY, ObservationLayout
from agentkit.spaces import ACTION_TYPES_HELP, HybridSpace, hybrid_views
from agentkit.wrappers import WRAPPERS_HELP, WrapperSpec, apply_wrappers, known_wrapper_keys


class GymnasiumEnvConfig(EnvConfig):
    """A gymnasium env id, vectorised with gymnasium's vector API."""

    id: str = Field(description="A registered gymnasium env id, e.g. CartPole-v1 or agentkit/Moving-v0.")
    vectorization: Literal["sync", "async"] = Field(
        "sync", description="sync: envs stepped in this process; async: one subprocess per env copy."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for gymnasium.make.")
    max_episode_steps: int | None = Field(None, ge=1, description="Override the env's time limit.")
    frame_stack: int = Field(1, ge=1, description="Stack the last k observations (Box observations only).")
    wrappers: list[WrapperSpec] = Field(default_factory=list, description=WRAPPERS_HELP)
    action_types: dict[str, list[int]] | None = Field(None, description=ACTION_TYPES_HELP)

    def imports(self) -> dict[str, str]:
        """An id ``module:Env-v0`` imports ``module`` (gymnasium's own rule); a registered id imports nothing new."""
        found = known_wrapper_keys(super().imports())
        if ":" in self.id:
            found["id"] = self.id.partition(":")[0]
        return found


class HybridActions(gym.ActionWrapper):
    """Shows a parameterised-action ``Tuple`` as the ``HybridSpace`` it stands for and hands the env each
    action in the Tuple's own form (``agentkit.spaces.hybrid_view``)."""

    def __init__(self, env: gym.Env, space: HybridSpace, native: Any):
        super().__init__(env)
        self.action_space = space
        self._native = native

    def action(self, action: Any) -> Any:
        return self._native(action)


# -- the vector env ---------------------------------------------------------------------------------------

#: info key through which an async worker reports an observation that does not fit the space (``_ReportMisfit``)
MISFIT_KEY = "agentkit_observation_misfit"


class _ReportMisfit(gym.Wrapper):
    """Wraps each copy of an ``AsyncVectorEnv`` in its worker: an observation that does not fit the space is
    replaced by a placeholder that does and described in ``info[MISFIT_KEY]``, so that the parent names it
    (as it does for a sync vector env) instead of gymnasium's shared-memory traceback from the worker."""

    def _check(self, obs: Any, info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        problem = describe_mismatch(self.observation_space, obs)
        if problem is None:
            return obs, info
        return self.observation_space.sample(), {**info, MISFIT_KEY: problem}

    def reset(self, **kwargs):
        return self._check(*self.env.reset(**kwargs))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._check(obs, info)
        return obs, reward, terminated, truncated, info


def _reporting(fn):
    return lambda: _ReportMisfit(fn())


class GymnasiumVecEnv:
    """A gymnasium vector env behind agentkit's ``VecEnv`` protocol (same-step autoreset).

    ``Transition.final_obs`` is None when no episode ended this step; otherwise it is ``[N, D]`` equal to
    ``next.obs`` except in rows whose episode ended, which hold that episode's last observation.
    Finished episodes' undiscounted returns and lengths are reported in ``episode_returns/lengths``.
    """

    def __init__(self, source: GymnasiumSource, num_envs: int, seed: int | None, render_mode: str | None):
        self.source = source
        self.num_envs = num_envs
        self.observation_space = source.observation_space
        self.action_space = source.action_space
        cfg = source.config
        fns = [source.env_fn(render_mode) for _ in range(num_envs)]
        vec_cls = gym.vector.SyncVectorEnv if cfg.vectorization == "sync" else gym.vector.AsyncVectorEnv
        if cfg.vectorization == "async":
            fns = [_reporting(fn) for fn in fns]
        self.envs = vec_cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)
        self._layout = source.layout
        self._info_mask = source.has_mask and not self._layout.mask_key
        self._ep_return = np.zeros(num_envs, dtype=np.float64)
        self._ep_length = np.zeros(num_envs, dtype=np.int64)
        self._seed: int | None = seed

    def _observation(self, raw: Any, infos: dict[str, Any]) -> Observation:
        for where in (infos, infos.get("final_info")):  # an async copy's misfit (_ReportMisfit)
            if isinstance(where, dict) and MISFIT_KEY in where:
                i = int(np.flatnonzero(where[f"_{MISFIT_KEY}"])[0])
                raise self._misfit_error(i, where[MISFIT_KEY][i])
        obs, mask = self._layout.split(raw)
        if self._info_mask:
            if MASK_KEY not in infos:
                raise ConfigError(
                    f"env {self.source.env_id!r} gave info['action_mask'] at reset but not at this step; an "
                    "env that masks actions must return the mask in every info."
                )
            mask = np.asarray(infos[MASK_KEY]).reshape(self.num_envs, -1).astype(bool)
        return Observation(obs=obs, mask=mask)

    def _misfit(self, exc: Exception) -> InvalidInputError | None:
        """When batching the copies' observations failed: the copy whose observation does not fit the space."""
        for i, raw in enumerate(getattr(self.envs, "_env_obs", None) or []):  # SyncVectorEnv's per-copy values
            problem = describe_mismatch(self.envs.single_observation_space, raw)
            if problem is not None:
                return self._misfit_error(i, problem)
        return None

    def _misfit_error(self, i: int, problem: str) -> InvalidInputError:
        return InvalidInputError(
            f"env {self.source.env_id!r} (env copy {i}): {problem}. An env must return observations that fit its "
            "observation_space; fix the env or its declared space."
        )

    def reset(self, seed: int | None = None) -> Observation:
        """Reset every copy; env i gets ``seed + i`` (the ``make_vec`` seed on the first reset if None)."""
        if seed is None:
            seed, self._seed = self._seed, None
        try:
            raw, infos = self.envs.reset(seed=seed)
        except (ValueError, TypeError) as exc:
            misfit = self._misfit(exc)
            if misfit is None:
                raise
            raise misfit from exc
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        return self._observation(raw, infos)

    def step(self, actions: Any) -> Transition:
        try:
            raw, reward, terminated, truncated, infos = self.envs.step(actions)
        except (ValueError, TypeError) as exc:
            misfit = self._misfit(exc)
            if misfit is None:
                raise
            raise misfit from exc
        nxt = self._observation(raw, infos)
        reward = np.asarray(reward, dtype=np.float32)
        self._ep_return += reward
        self._ep_length += 1
        done = terminated | truncated
        transition = Transition(
            next=nxt, reward=reward, terminated=np.asarray(terminated), truncated=np.asarray(truncated),
            infos=infos,
        )
        if done.any():
            final = nxt.obs.copy()
            final_raw = infos.get("final_obs")
            ended = np.flatnonzero(done)
            for i in ended:
                if final_raw is not None and final_raw[i] is not None:
                    final[i] = self._layout.split(final_raw[i])[0][0]
            transition.final_obs = final
            transition.episode_returns = self._ep_return[ended].tolist()
            transition.episode_lengths = self._ep_length[ended].tolist()
            transition.episode_infos = [_final_scalars(infos.get("final_info"), i) for i in ended]
            self._ep_return[ended] = 0.0
            self._ep_length[ended] = 0
        return transition

    def render(self) -> np.ndarray | None:
        frames = self.envs.render()
        if frames is None:
            return None
        if isinstance(frames, tuple | list):
            return frames[0] if frames else None
        return frames

    def close(self) -> None:
        self.envs.close()


def _final_scalars(final_info: Any, i: int) -> dict[str, float]:
    """Env copy ``i``'s metric info entries (floats and bools, ``is_info_metric``) at the last step of its
    episode, from a gymnasium vector env's batched ``final_info`` (each key an array, ``_key`` saying which
    copies set it; the mask left out)."""
    if not isinstance(final_info, dict):
        return {}
    out = {}
    for key, values in final_info.items():
        if key.startswith("_") or key == MASK_KEY or not isinstance(values, np.ndarray) or values.ndim != 1:
            continue
        present = final_info.get(f"_{key}")
        if is_info_metric(values) and (present is None or bool(present[i])):
            out[key] = float(values[i])
    return out


# -- the env source ---------------------------------------------------------------------------------------


class GymnasiumSource:
    """Describes a gymnasium env (probed once at construction) and makes vector envs of it."""

    multi_agent = False
    enforces_step_timeout = False  # the env boundary's clock bounds env.step_timeout

    def __init__(self, config: GymnasiumEnvConfig):
        self.config = config
        self.env_id = config.id
        if config.id.startswith("agentkit/"):
            # The SDK's own games register themselves with gymnasium when their package is imported.
            try:
                importlib.import_module("agentkit_envs.games")
            except ImportError:
                pass
        probe = self._make(None)
        try:
            self.layout = ObservationLayout(probe.observation_space, f"env.id {config.id!r}")
            self.action_space = probe.action_space
            _, info = probe.reset(seed=0)
            self.has_mask = self.layout.mask_key or MASK_KEY in info
        finally:
            probe.close()
        self.observation_space = self.layout.space
        self.observation_fields = self.layout.fields

    def _make(self, render_mode: str | None) -> gym.Env:
        cfg = self.config
        kwargs = dict(cfg.kwargs)
        if cfg.max_episode_steps is not None:
            kwargs["max_episode_steps"] = cfg.max_episode_steps
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        try:
            env = gym.make(cfg.id, **kwargs)
        except gym.error.Error as exc:
            raise ConfigError(
                f"env.id {cfg.id!r}: {exc} Check the id (`python -c \"import gymnasium; "
                "gymnasium.pprint_registry()\"` lists them) and list the module that registers it under "
                "`plugins:`."
            ) from exc
        except TypeError as exc:
            raise ConfigError(f"env.kwargs for {cfg.id!r} were not accepted by the env: {exc}") from exc
        except ImportError as exc:  # "module:Env-v0" ids import the module
            raise ConfigError(
                f"env.id {cfg.id!r}: cannot import module {exc.name or cfg.id.partition(':')[0]!r} "
                f"({type(exc).__name__}: {exc}). Install it or put it on PYTHONPATH, or use a registered id."
            ) from exc
        env = apply_wrappers(env, cfg.wrappers, repr(cfg.id))
        try:
            views = hybrid_views({"": env.action_space}, cfg.action_types, repr(cfg.id))
        except ConfigError:
            env.close()
            raise
        if views:
            env = HybridActions(env, *views[""])
        if cfg.frame_stack > 1:
            if not isinstance(env.observation_space, spaces.Box):
                env.close()
                raise ConfigError(
                    f"env.frame_stack: {cfg.frame_stack} needs a Box observation; {cfg.id!r} has "
                    f"{env.observation_space}. Set env.frame_stack: 1."
                )
            env = gym.wrappers.FrameStackObservation(env, cfg.frame_stack)
        return env

    def env_fn(self, render_mode: str | None):
        return lambda: self._make(render_mode)

    def close(self) -> None:
        """Nothing to release: the probe env was closed once read, and each vector env closes itself."""

    def make_vec(self, num_envs: int, seed: int, render_mode: str | None = None) -> GymnasiumVecEnv:
        """``num_envs`` copies; env i is seeded with ``seed + i`` at the first ``reset()``."""
        return GymnasiumVecEnv(self, num_envs, seed, render_mode)


def make_source(config: GymnasiumEnvConfig) -> GymnasiumSource:
    return GymnasiumSource(config)


@agentkit.hookimpl
def agentkit_register_envs(register):
    register(
        "gymnasium", make_source, GymnasiumEnvConfig, "Any gymnasium env id, through gymnasium's vector API."
    )
