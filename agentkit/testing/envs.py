"""Checkers for game and env-plugin authors: call them from your own tests.

    from agentkit.testing import check_game, check_env_plugin

    check_game("agentkit/Dungeon-v0")                       # a gymnasium id, or a callable making the env
    check_game(lambda **kw: my_pettingzoo_module.parallel_env(**kw))
    check_env_plugin("gymnasium", {"id": "agentkit/Moving-v0", "num_envs": 2})

``check_game`` runs the ecosystem's checker first (gymnasium's ``check_env`` for a ``gymnasium.Env``,
PettingZoo's ``parallel_api_test`` for a ``ParallelEnv``), then agentkit's own checks: the observation space
is one the env plugins can flatten (``agentkit.observations``), and over a random rollout that honours the
masks: the ``action_mask`` has an integer/bool dtype, the right width for the
action space (Discrete ``n``, MultiDiscrete ``sum(nvec)``, hybrid: the number of types) and at least one
allowed action at every step; a ``HybridSpace`` is self-consistent and the env ignores the parameters of
the types it was not given; the same seed and actions replay the same episode; ``render()`` in
``rgb_array`` mode returns ``uint8 [H, W, 3]``.

``check_env_plugin`` checks a registered env plugin through agentkit's own interface: the ``EnvSource``
attributes and the ``VecEnv`` (or multi-agent vector env) arrays' shapes and dtypes over a few steps.
Every failure is an ``AssertionError`` whose message names the check and the probable cause.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agentkit.environment import MULTI_AGENT_ATTRIBUTES, SOURCE_ATTRIBUTES
from agentkit.errors import ConfigError
from agentkit.observations import MASK_KEY, ObservationLayout
from agentkit.runtime.observation import flat_width
from agentkit.spaces import HybridSpace, discrete_branches

__all__ = ["check_env_plugin", "check_game", "random_action"]


# -- actions that honour a mask ------------------------------------------------------------------------------


def mask_width(space: gym.Space) -> int:
    """The width an ``action_mask`` must have for ``space`` (Discrete n, MultiDiscrete sum(nvec), MultiBinary
    2n, hybrid K)."""
    if isinstance(space, HybridSpace):
        return space.num_types
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if (branches := discrete_branches(space)) is not None:
        return sum(branches[0])
    raise AssertionError(f"an action_mask was given for action space {space}, which agentkit cannot mask")


def random_action(space: gym.Space, mask: np.ndarray | None, rng: np.random.Generator) -> Any:
    """A random action of ``space`` that the 0/1 ``mask`` allows (any action when ``mask`` is None)."""
    if isinstance(space, HybridSpace):
        allowed = np.arange(space.num_types) if mask is None else np.flatnonzero(mask)
        k = int(rng.choice(allowed))
        params = rng.uniform(space.low, space.high).astype(np.float32) * space.param_mask[k]
        return k, params.astype(np.float32)
    if isinstance(space, spaces.Discrete):
        allowed = np.arange(space.n) if mask is None else np.flatnonzero(mask)
        return space.start + int(rng.choice(allowed))
    if (branches := discrete_branches(space)) is not None:
        out, offset = [], 0
        for n, first in zip(*branches, strict=True):
            branch = np.arange(n) if mask is None else np.flatnonzero(mask[offset : offset + n])
            out.append(first + int(rng.choice(branch)))
            offset += n
        return np.array(out, dtype=space.dtype)
    if isinstance(space, spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        return rng.uniform(low, high).astype(space.dtype)
    return space.sample()


def _batched_random_actions(space: gym.Space, masks: np.ndarray | None, n: int, rng: np.random.Generator) -> Any:
    """``n`` random actions in the batched format gymnasium vector envs (and agentkit's adapters) take."""
    rows = [random_action(space, None if masks is None else masks[i], rng) for i in range(n)]
    if isinstance(space, spaces.Tuple):
        return tuple(np.stack([np.asarray(r[j]) for r in rows]) for j in range(len(space.spaces)))
    return np.stack([np.asarray(r) for r in rows])


# -- shared checks -------------------------------------------------------------------------------------------


def _check_hybrid_space(space: HybridSpace, who: str) -> None:
    k, p = space.num_types, space.num_params
    assert space.param_mask.shape == (k, p), f"{who}: HybridSpace.param_mask has shape {space.param_mask.shape}, expected ({k}, {p})"
    owned = sorted(i for ps in space.type_params for i in ps)
    assert owned == sorted(set(owned)), f"{who}: a HybridSpace parameter is owned by two types"
    assert len(space.type_names) == k == space.types_space.n, f"{who}: HybridSpace type names do not match Discrete({k})"
    assert np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)), (
        f"{who}: HybridSpace parameter bounds must be finite (the hybrid head scales its Gaussians to them)"
    )
    sample = space.sample()
    assert space.contains(sample), f"{who}: HybridSpace.sample() {sample} is not contained in the space"


def _split_obs(obs: Any, space: gym.Space, who: str) -> np.ndarray | None:
    """The ``action_mask`` of a Dict observation after checking its dtype and values (None: no mask)."""
    if not (isinstance(space, spaces.Dict) and MASK_KEY in space.spaces):
        return None
    assert isinstance(obs, Mapping) and MASK_KEY in obs, f"{who}: the observation space has '{MASK_KEY}' but the observation lacks it"
    mask = np.asarray(obs[MASK_KEY])
    assert mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer), (
        f"{who}: action_mask has dtype {mask.dtype}; use int8 (MultiBinary / Box(0, 1, dtype=int8)) or bool"
    )
    assert np.isin(mask, (0, 1)).all(), f"{who}: action_mask holds values other than 0/1: {np.unique(mask)}"
    return mask.reshape(-1).astype(bool)


def _check_flattenable(space: gym.Space, who: str) -> None:
    """The env plugins can turn this observation space into the flat vector a policy takes."""
    try:
        ObservationLayout(space, who)
    except ConfigError as exc:
        raise AssertionError(str(exc)) from None


def _check_mask(mask: np.ndarray, action_space: gym.Space, who: str, step: int) -> None:
    width = mask_width(action_space)
    assert mask.shape == (width,), (
        f"{who}: action_mask has {mask.size} entries at step {step}; {action_space} needs {width} "
        "(Discrete n, MultiDiscrete sum(nvec), hybrid: one per action type)"
    )
    if (branches := discrete_branches(action_space)) is not None:
        start = 0
        for b, n in enumerate(branches[0]):
            assert mask[start : start + n].any(), f"{who}: action_mask allows nothing in branch {b} at step {step}"
            start += n
    else:
        assert mask.any(), f"{who}: action_mask allows no action at all at step {step}; every step needs one"


def _check_frame(frame: Any, who: str) -> None:
    assert isinstance(frame, np.ndarray), f"{who}: render() in rgb_array mode returned {type(frame).__name__}"
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8, (
        f"{who}: render() must return uint8 [H, W, 3]; got {frame.dtype} {frame.shape}"
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(np.asarray(a), np.asarray(b))


def _perturbed(space: HybridSpace, action: tuple[int, np.ndarray], rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """The same hybrid action with every parameter the chosen type does not own set to a random value."""
    k, params = action
    other = rng.uniform(space.low, space.high).astype(np.float32)
    return k, np.where(space.param_mask[k] > 0, params, other).astype(np.float32)


# -- check_game ----------------------------------------------------------------------------------------------


def check_game(
    make_env: str | Callable[..., Any], steps: int = 300, seed: int = 0, api_test: bool = True
) -> None:
    """Check a game: the ecosystem's API checker, then agentkit's checks (see the module docstring).

    ``make_env`` is a gymnasium id or a callable taking keyword arguments (``render_mode``) and returning a
    ``gymnasium.Env`` or a PettingZoo ``ParallelEnv``. ``steps`` is the length of the random rollouts.
    """
    if isinstance(make_env, str):
        env_id = make_env
        make_env = lambda **kw: gym.make(env_id, **kw)  # noqa: E731
    env = make_env()
    try:
        if isinstance(env, gym.Env):
            _check_gym_game(make_env, env, steps, seed, api_test)
        else:
            from pettingzoo import ParallelEnv

            assert isinstance(env, ParallelEnv), (
                f"check_game: {type(env).__name__} is neither a gymnasium.Env nor a PettingZoo ParallelEnv"
            )
            _check_parallel_game(make_env, env, steps, seed, api_test)
    finally:
        env.close()


def _gym_rollout(env: gym.Env, seed: int, steps: int, who: str, perturb: bool = False) -> list[Any]:
    """A masked random rollout (resetting after each episode); returns what it saw, for replay checks."""
    rng = np.random.default_rng(seed)
    noise = np.random.default_rng(seed + 1)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for t in range(steps):
        mask = _split_obs(obs, env.observation_space, who)
        if mask is not None:
            _check_mask(mask, env.action_space, who, t)
        action = random_action(env.action_space, mask, rng)
        if perturb and isinstance(env.action_space, HybridSpace):
            action = _perturbed(env.action_space, action, noise)
        obs, reward, terminated, truncated, _ = env.step(action)
        trace += [obs, reward, terminated, truncated]
        if terminated or truncated:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


def _check_gym_game(make_env: Callable[..., Any], env: gym.Env, steps: int, seed: int, api_test: bool) -> None:
    from gymnasium.utils.env_checker import check_env

    who = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    if api_test:
        check_env(env.unwrapped, skip_render_check=True)
    _check_flattenable(env.observation_space, who)
    if isinstance(env.action_space, HybridSpace):
        _check_hybrid_space(env.action_space, who)
    _check_replay_and_render(make_env, _gym_rollout, isinstance(env.action_space, HybridSpace), env, steps, seed, who)


def _parallel_rollout(env: Any, seed: int, steps: int, who: str, perturb: bool = False) -> list[Any]:
    rng = np.random.default_rng(seed)
    noise = np.random.default_rng(seed + 1)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for t in range(steps):
        actions = {}
        for agent in env.agents:
            space = env.action_space(agent)
            mask = _split_obs(obs[agent], env.observation_space(agent), f"{who} agent {agent}")
            if mask is not None:
                _check_mask(mask, space, f"{who} agent {agent}", t)
            actions[agent] = random_action(space, mask, rng)
            if perturb and isinstance(space, HybridSpace):
                actions[agent] = _perturbed(space, actions[agent], noise)
        obs, rewards, terms, truncs, _ = env.step(actions)
        trace += [obs, rewards, terms, truncs]
        if hasattr(env, "state"):
            try:
                trace.append(np.asarray(env.state()))
            except NotImplementedError:
                pass
        if not env.agents:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


def _check_parallel_game(make_env: Callable[..., Any], env: Any, steps: int, seed: int, api_test: bool) -> None:
    from pettingzoo.test import parallel_api_test

    who = env.metadata.get("name", type(env).__name__)
    if api_test:
        parallel_api_test(env, num_cycles=steps)
    for agent in env.possible_agents:
        _check_flattenable(env.observation_space(agent), f"{who} agent {agent}")
        space = env.action_space(agent)
        if isinstance(space, HybridSpace):
            _check_hybrid_space(space, f"{who} agent {agent}")
    hybrid = any(isinstance(env.action_space(a), HybridSpace) for a in env.possible_agents)
    # a fresh env for the replay: parallel_api_test may change the env it was given (e.g. its max_cycles)
    _check_replay_and_render(make_env, _parallel_rollout, hybrid, env, steps, seed, who)


def check_env_plugin(
    name: str,
    config: Mapping[str, Any] | None = None,
    host: Any = None,
    num_envs: int = 2,
    steps: int = 50,
    seed: int = 0,
) -> None:
    """Check the env plugin ``name`` built from ``config`` (the ``env:`` section without ``plugin``).

    Builds it through the registry of ``host`` (a new ``agentkit.host.PluginHost()`` by default), checks the
    ``EnvSource`` description, then steps ``num_envs`` copies for ``steps`` masked random steps and checks
    every array crossing the ``VecEnv`` interface (``docs/multi-agent.md`` for the multi-agent layout).
    """
    if host is None:
        from agentkit.host import PluginHost

        host = PluginHost()
    reg = host.registry.get("env", name)
    cfg = reg.validate_config({"plugin": name, **dict(config or {}), "num_envs": num_envs})
    source = reg.factory(cfg)
    who = f"env plugin {name!r}"
    for attr in SOURCE_ATTRIBUTES:
        assert hasattr(source, attr), f"{who}: its EnvSource lacks the attribute {attr!r}"
    for attr in MULTI_AGENT_ATTRIBUTES if source.multi_agent else ():
        assert hasattr(source, attr), f"{who}: its MultiAgentEnvSource lacks the attribute {attr!r}"
    assert isinstance(source.observation_space, spaces.Box) and len(source.observation_space.shape) == 1, (
        f"{who}: EnvSource.observation_space must be a flat Box (mask removed); got {source.observation_space}"
    )
    fields = source.observation_fields
    if fields is not None:
        width = flat_width(fields)
        assert width == source.observation_space.shape[0], (
            f"{who}: observation_fields make {width} columns but observation_space has "
            f"{source.observation_space.shape[0]}; set them from the same agentkit.observations.ObservationLayout"
        )
    if isinstance(source.action_space, HybridSpace):
        _check_hybrid_space(source.action_space, who)
    venv = source.make_vec(num_envs, seed)
    try:
        if source.multi_agent:
            _check_multi_agent_vec(venv, source, who, num_envs, steps, seed)
        else:
            _check_single_agent_vec(venv, source, who, num_envs, steps, seed)
    finally:
        venv.close()


def _check_observation(o: Any, shape: tuple[int, ...], mask_dim: int | None, who: str, t: int) -> None:
    assert o.obs.dtype == np.float32 and o.obs.shape == shape, (
        f"{who}: Observation.obs at step {t} is {o.obs.dtype} {o.obs.shape}, expected float32 {shape}"
    )
    if mask_dim is None:
        return
    assert o.mask is not None, f"{who}: has_mask is true but Observation.mask is None at step {t}"
    assert o.mask.dtype == np.bool_ and o.mask.shape == (*shape[:-1], mask_dim), (
        f"{who}: Observation.mask at step {t} is {o.mask.dtype} {o.mask.shape}, expected bool {(*shape[:-1], mask_dim)}"
    )
    assert o.mask.any(axis=-1).all(), f"{who}: a mask row allows no action at step {t}"


def _check_single_agent_vec(venv: Any, source: Any, who: str, n: int, steps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = source.observation_space.shape[0]
    mask_dim = mask_width(source.action_space) if source.has_mask else None
    obs = venv.reset(seed=seed)
    _check_observation(obs, (n, d), mask_dim, who, 0)
    for t in range(1, steps + 1):
        actions = _batched_random_actions(source.action_space, obs.mask, n, rng)
        tr = venv.step(actions)
        assert tr.reward.shape == (n,) and tr.terminated.shape == (n,) and tr.truncated.shape == (n,), (
            f"{who}: Transition reward/terminated/truncated must be [N]={n}; got {tr.reward.shape}, "
            f"{tr.terminated.shape}, {tr.truncated.shape}"
        )
        assert tr.terminated.dtype == np.bool_ and tr.truncated.dtype == np.bool_, f"{who}: terminated/truncated must be bool"
        if (tr.terminated | tr.truncated).any():
            assert tr.final_obs is not None and tr.final_obs.shape == (n, d), (
                f"{who}: an episode ended at step {t} but Transition.final_obs is missing or mis-shaped"
            )
        _check_observation(tr.next, (n, d), mask_dim, who, t)
        obs = tr.next


def _check_multi_agent_vec(venv: Any, source: Any, who: str, n: int, steps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = source.groups
    obs = venv.reset(seed=seed)
    for t in range(steps + 1):
        assert set(obs) == set(groups), f"{who}: observations are keyed {sorted(obs)}, expected the groups {sorted(groups)}"
        actions = {}
        for g in groups.values():
            a, d = len(g.agents), g.observation_space.shape[0]
            o = obs[g.name]
            _check_observation(o, (n, a, d), g.mask_dim or None, f"{who} group {g.name}", t)
            assert o.alive is not None and o.alive.shape == (n, a), f"{who}: group {g.name} alive must be [N, A]"
            assert o.state is not None and o.state.shape == (n, source.state_dim), (
                f"{who}: group {g.name} state must be [N, state_dim]={(n, source.state_dim)}"
            )
            masks = None if o.mask is None else o.mask.reshape(n * a, -1)
            actions[g.name] = _batched_random_actions(g.action_space, masks, n * a, rng)
        if t == steps:
            break
        tr = venv.step(actions)
        for g in groups.values():
            shape = (n, len(g.agents))
            gt = tr.groups[g.name]
            assert gt.reward.shape == shape and gt.terminated.shape == shape and gt.truncated.shape == shape, (
                f"{who}: group {g.name} reward/terminated/truncated must be [N, A]={shape}"
            )
        obs = {name: gt.next for name, gt in tr.groups.items()}


def _check_replay_and_render(
    make_env: Callable[..., Any], rollout: Callable[..., list[Any]], hybrid: bool, env: Any, steps: int, seed: int,
    who: str,
) -> None:
    """Same seed and actions → the same episode; a hybrid env ignores the parameters of types not chosen;
    an env that offers rgb_array renders a valid frame. ``rollout`` is the gymnasium or the parallel one."""
    fresh = make_env()
    try:
        first = rollout(fresh, seed, steps, who)
    finally:
        fresh.close()
    again = make_env()
    try:
        assert _same(first, rollout(again, seed, steps, who)), (
            f"{who}: the same seed and actions gave a different episode; draw all randomness from the env's "
            "RNG seeded in reset(seed=...) (self.np_random for gymnasium envs)"
        )
        if hybrid:
            assert _same(first, rollout(again, seed, steps, who, perturb=True)), (
                f"{who}: changing the parameters of action types that were not chosen changed the episode; "
                "a hybrid env must read only the chosen type's parameters"
            )
    finally:
        again.close()
    if "rgb_array" in env.metadata.get("render_modes", []):
        rendering = make_env(render_mode="rgb_array")
        try:
            rendering.reset(seed=seed)
            _check_frame(rendering.render(), who)
        finally:
            rendering.close()
