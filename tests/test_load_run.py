"""Loading a run for eval or export builds its policies only: no training env copies, no worker processes."""

from __future__ import annotations

import multiprocessing.process

import numpy as np
import pytest

from agentkit.build import build_algorithm, build_env
from agentkit.config import load_config
from agentkit.evaluation import evaluate_onnx, evaluate_run, play_episodes, torch_act
from agentkit.exporting import export_run
from agentkit.host import PluginHost
from agentkit.rundir import load_run

ARENA_ASYNC = {
    "seed": 0,
    "env": {"plugin": "pettingzoo", "module": "agentkit_envs.games.team_arena",
            "kwargs": {"team_size": 2, "opponent": "scripted"}, "num_envs": 3, "vectorization": "async",
            "workers": 2},
    "algorithm": {"plugin": "mappo", "total_steps": 120, "num_steps": 40, "update_epochs": 1},
    "policy": {"hidden_sizes": [16]},
    "run": {"progress": "none", "tensorboard": False},
}


@pytest.fixture(scope="module")
def async_run(trained_run):
    return trained_run(ARENA_ASYNC, "arena")


def _watch(monkeypatch):
    """Record every vector env made (its ``num_envs``) and refuse any process start."""
    from agentkit_envs.pettingzoo_env import PettingZooSource

    made: list[int] = []
    real = PettingZooSource.make_vec

    def make_vec(self, num_envs, *args, **kwargs):
        made.append(num_envs)
        return real(self, num_envs, *args, **kwargs)

    def start(self):
        raise AssertionError(f"a process was started: {self!r}")

    monkeypatch.setattr(PettingZooSource, "make_vec", make_vec)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    return made


def test_eval_and_export_of_an_async_run_start_no_worker_and_play_as_with_training_envs(
        async_run, monkeypatch, tmp_path):
    # The old way: the training env open (3 copies, one worker process), then the same episodes played.
    loaded = load_run(async_run)
    try:
        loaded.algorithm.training_env.observation()
        assert len(multiprocessing.active_children()) >= 1  # the async env did start its worker
        act = {a.name: torch_act(a, True, np.random.default_rng(3)) for a in loaded.algorithm.policies()}
        want = play_episodes(loaded.env, act, episodes=2, seed=3)
    finally:
        loaded.algorithm.close()
    before = multiprocessing.active_children()

    made = _watch(monkeypatch)
    got = evaluate_run(async_run, episodes=2, seed=3)
    assert made == [1]  # eval's own one-copy env; no training vector env
    assert got.returns == want.returns and got.lengths == want.lengths and got.groups == want.groups

    made.clear()
    paths = export_run(async_run, out=tmp_path / "arena.onnx")
    assert made == []  # export makes no vector env at all
    assert multiprocessing.active_children() == before
    monkeypatch.undo()
    onnx = evaluate_onnx(paths[0], episodes=2, seed=3)
    assert onnx.lengths == want.lengths
    np.testing.assert_allclose(onnx.returns, want.returns, rtol=0, atol=1e-4)


@pytest.mark.parametrize("section", [
    {"env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 4},
     "algorithm": {"plugin": "ppo", "total_steps": 64, "num_steps": 8, "minibatch_size": 16}},
    {"env": {"plugin": "pettingzoo", "module": "mpe2.simple_spread_v3", "kwargs": {"N": 2, "max_cycles": 10},
             "num_envs": 4},
     "algorithm": {"plugin": "maddpg", "total_steps": 80, "iteration_steps": 40, "batch_size": 16,
                   "learning_starts": 20, "buffer_size": 200, "train_every": 20}},
], ids=["ppo", "maddpg"])
def test_building_an_algorithm_opens_no_env_until_it_collects(section, host):
    if section["env"]["plugin"] == "pettingzoo":
        pytest.importorskip("mpe2")
    config = load_config({"seed": 0, **section}, host.registry)
    env = build_env(config, host.registry)
    made: list[int] = []
    real = env.make_vec
    env.make_vec = lambda n, *a, **k: (made.append(n), real(n, *a, **k))[1]  # type: ignore[method-assign]
    algorithm = build_algorithm(config, host.registry, env, None)
    try:
        algorithm.load_state_dict(algorithm.state_dict())
        assert algorithm.policies() and made == []
        algorithm.iterate()
        assert made == [4]
    finally:
        algorithm.close()


def test_check_algorithm_fails_an_algorithm_that_opens_its_env_when_built():
    from agentkit_plugins.ppo import PPOConfig, make_ppo

    from agentkit.testing import check_algorithm
    from agentkit.testing.algorithms import AlgorithmCheckError

    def eager(config, context):  # PPO as it was: the env copies opened and reset in the constructor
        algorithm = make_ppo(config, context)
        algorithm.training_env.observation()
        return algorithm

    host = PluginHost()
    host.registry.registrar("algorithm", "test", "agentkit_register_algorithms")(
        "eager_ppo", eager, PPOConfig, "PPO that opens its env when built")
    config = {"env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2},
              "algorithm": {"plugin": "eager_ppo", "total_steps": 64, "num_steps": 8, "minibatch_size": 16}}
    with pytest.raises(AlgorithmCheckError, match="made a vector env"):
        check_algorithm(config, host, iterations=1)
    check_algorithm({**config, "algorithm": {**config["algorithm"], "plugin": "ppo"}}, host, iterations=1)


def test_the_saved_run_dir_reaches_an_env_factory_that_declares_run_dir(tmp_path):
    """``build_env(..., run_dir=)``: a factory with a ``run_dir`` parameter gets it (None while training); a
    factory of ``config`` alone is called as before."""
    from agentkit_envs.gymnasium_env import GymnasiumEnvConfig, GymnasiumSource

    seen: list = []

    def reads_its_run(config, run_dir=None):
        seen.append(run_dir)
        return GymnasiumSource(GymnasiumEnvConfig(plugin="gymnasium", id="CartPole-v1"))

    def config_only(config):
        seen.append("config only")
        return GymnasiumSource(GymnasiumEnvConfig(plugin="gymnasium", id="CartPole-v1"))

    host = PluginHost()
    register = host.registry.registrar("env", "test", "agentkit_register_envs")
    register("reads-its-run", reads_its_run, GymnasiumEnvConfig, "records the run dir it is given")
    register("config-only", config_only, GymnasiumEnvConfig, "takes its config alone")
    base = {"algorithm": {"plugin": "ppo", "total_steps": 64}}
    config = load_config({**base, "env": {"plugin": "reads-its-run", "id": "CartPole-v1"}}, host.registry)
    build_env(config, host.registry, run_dir=tmp_path).close()
    build_env(config, host.registry).close()
    other = load_config({**base, "env": {"plugin": "config-only", "id": "CartPole-v1"}}, host.registry)
    build_env(other, host.registry, run_dir=tmp_path).close()
    assert seen == [tmp_path, None, "config only"]
