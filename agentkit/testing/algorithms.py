"""``check_algorithm``: the contract checks an algorithm plugin's author runs in their own tests.

    from agentkit.testing import check_algorithm
    check_algorithm({"env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2},
                     "algorithm": {"plugin": "ppo", "total_steps": 512, "num_steps": 16}})

Each failed check raises ``AlgorithmCheckError`` naming the broken part of the contract and its probable cause.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch

from agentkit.algorithm import BuildContext, PolicyArtifact
from agentkit.config import RunConfig, load_config
from agentkit.heads import ActionDistribution
from agentkit.host import PluginHost


class AlgorithmCheckError(AssertionError):
    """An algorithm plugin that breaks the ``agentkit.algorithm.Algorithm`` contract."""


def _fail(message: str) -> None:
    raise AlgorithmCheckError(message)


class _CountingSource:
    """The env source as built, counting the vector envs made from it (building an algorithm makes none)."""

    def __init__(self, source: Any):
        self._source = source
        self.made = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def make_vec(self, *args: Any, **kwargs: Any) -> Any:
        self.made += 1
        return self._source.make_vec(*args, **kwargs)


def _build(config: RunConfig, host: PluginHost):
    env = _CountingSource(host.registry.get("env", config.env.plugin).factory(config.env))
    reg = host.registry.get("algorithm", config.algorithm.plugin)
    algo = reg.factory(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))
    return env, algo


def _check_metrics(name: str, metrics: Any) -> None:
    if not isinstance(metrics, dict):
        _fail(f"{name}.iterate() returned {type(metrics).__name__}; it must return a dict of metric name → float.")
    for key, value in metrics.items():
        if not isinstance(key, str) or "/" not in key:
            _fail(f"{name}.iterate() metric {key!r} is not namespaced; use names like 'losses/policy'.")
        if not isinstance(value, int | float) or isinstance(value, bool):
            _fail(f"{name}.iterate() metric {key!r} is {type(value).__name__}; convert it with float(...).")
        if math.isinf(value):
            _fail(f"{name}.iterate() metric {key!r} is infinite: probably a division by a zero std or count.")


def _round_trip(name: str, state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=True)
    except Exception as exc:
        raise AlgorithmCheckError(
            f"{name}.state_dict() does not survive torch.save / torch.load(weights_only=True): {exc}. Keep it to "
            "tensors, numbers, strings, lists and dicts (convert numpy arrays and RNG states to tensors)."
        ) from exc


def _probe_obs(artifact: PolicyArtifact, rng: np.random.Generator, n: int = 5) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Observations in the space's shape and dtype, and the first agent's one-hot id (None without ids)."""
    space = artifact.observation_space
    low = np.where(np.isfinite(space.low), space.low, -1.0)
    high = np.where(np.isfinite(space.high), space.high, 1.0)
    obs = rng.uniform(low, high, size=(n, *space.shape)).astype(space.dtype)
    ids = artifact.actor.ids(n)
    return torch.from_numpy(obs), None if ids is None else ids[:, 0]  # the first agent's id on every row


def _check_policies(name: str, algo: Any) -> list[PolicyArtifact]:
    arts = algo.policies()
    if not arts or not all(isinstance(a, PolicyArtifact) for a in arts):
        _fail(f"{name}.policies() must return a non-empty list of agentkit.algorithm.PolicyArtifact.")
    rng = np.random.default_rng(0)
    for art in arts:
        obs, ids = _probe_obs(art, rng)
        head = art.actor.head
        mask = torch.ones(obs.shape[0], head.mask_dim, dtype=torch.bool) if head.mask_dim and art.uses_mask else None
        with torch.no_grad():
            dist = art.actor(obs, mask, ids)
        if not isinstance(dist, ActionDistribution):
            _fail(f"policy {art.name!r}: actor(obs, mask) returned {type(dist).__name__}, not an ActionDistribution.")
        action = dist.sample() if art.deterministic_only else dist.mode()
        env_action = head.to_env({k: v.numpy() for k, v in head.env_outputs(action).items()})
        for i in range(obs.shape[0]):
            one = tuple(part[i] for part in env_action) if isinstance(env_action, tuple) else env_action[i]
            if isinstance(one, tuple):
                one = (int(one[0]), np.asarray(one[1]))
            if not art.action_space.contains(one):
                _fail(f"policy {art.name!r}: action {one!r} is outside the action space {art.action_space}; "
                      "env_outputs/to_env must bound actions at the env boundary.")
    return arts


def _outputs(arts: list[PolicyArtifact]) -> list[torch.Tensor]:
    rng = np.random.default_rng(1)
    outs = []
    for art in arts:
        head = art.actor.head
        obs, ids = _probe_obs(art, rng)
        mask = torch.ones(obs.shape[0], head.mask_dim, dtype=torch.bool) if head.mask_dim and art.uses_mask else None
        with torch.no_grad():
            dist = art.actor(obs, mask, ids)
            # a deterministic-only policy (MADDPG) has no log-prob: compare its actions instead
            outs.append(dist.mode().float() if art.deterministic_only else dist.log_prob(dist.mode()))
    return outs


def check_algorithm(config: RunConfig | dict[str, Any], host: PluginHost | None = None, iterations: int = 2) -> None:
    """Build the config's algorithm and check the contract the trainer, eval and export rely on.

    Checks: ``iterate`` returns namespaced float metrics and advances ``steps_done``; ``state_dict`` survives
    ``torch.load(weights_only=True)`` and a fresh instance that loads it has the same policies and counters;
    ``policies()`` gives ``PolicyArtifact``s whose actors return distributions whose actions, through
    ``head.env_outputs`` and ``head.to_env``, lie in the action space; building the algorithm, loading its
    state and reading its policies make no vector env (eval and export do only that). Keep the config small (a few hundred
    steps): this trains for ``iterations`` iterations.

    Without ``host`` it builds one as ``agentkit train`` and ``check_env_plugin`` do: the built-ins, the
    installed packages' entry points (unless AGENTKIT_DISABLE_PLUGIN_AUTOLOAD is set) and the config's
    ``plugins:`` modules.
    """
    if host is None:
        modules = config.get("plugins", []) if isinstance(config, dict) else config.plugins
        host = PluginHost(modules=modules)
    if isinstance(config, dict):
        config = load_config(config, host.registry)
    name = f"algorithm {config.algorithm.plugin!r}"
    _, algo = _build(config, host)
    try:
        last = int(algo.steps_done)
        for i in range(iterations):
            metrics = algo.iterate()
            _check_metrics(name, metrics)
            if int(algo.steps_done) <= last:
                _fail(f"{name}: steps_done did not grow in iteration {i} ({last} → {algo.steps_done}); the "
                      "trainer stops at algorithm.total_steps and would never end.")
            last = int(algo.steps_done)
        arts = _check_policies(name, algo)
        state = _round_trip(name, algo.state_dict())
        expected = _outputs(arts)
    finally:
        algo.close()

    source, fresh = _build(config, host)
    try:
        fresh.load_state_dict(state)
        if int(fresh.steps_done) != last:
            _fail(f"{name}: load_state_dict restored steps_done={fresh.steps_done}, expected {last}; a resumed "
                  "run would train the wrong number of steps.")
        got = _outputs(fresh.policies())
        for a, b in zip(expected, got, strict=True):
            if not torch.allclose(a, b, atol=1e-6):
                _fail(f"{name}: a fresh instance that loaded state_dict() acts differently: weights or "
                      "normaliser statistics are missing from the state dict.")
        if source.made:
            _fail(f"{name}: building it, load_state_dict or policies() made a vector env; eval and export build "
                  "the algorithm only to read its policies, so they would start env copies (and worker "
                  "processes) for nothing. Open the env on the first iterate (agentkit.algorithm.TrainingEnv).")
        _check_metrics(name, fresh.iterate())
    finally:
        fresh.close()
