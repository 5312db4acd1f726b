"""Structured observations: one flattening rule for training, exports and the runtimes (agentkit.observations)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from agentkit import runtime
from agentkit.errors import ConfigError, InvalidInputError
from agentkit.observations import ObservationLayout
from agentkit.runtime.observation import flatten

EVERY_KIND = spaces.Dict(
    {
        "position": spaces.Box(-2.0, 2.0, (2,), np.float32),
        "cell": spaces.Discrete(4, start=1),
        "grid": spaces.MultiDiscrete([[2, 3], [4, 2]]),
        "items": spaces.MultiBinary(3),
        "action_mask": spaces.MultiBinary(5),
    },
    seed=0,
)


def without_mask(raw):
    return {k: v for k, v in raw.items() if k != "action_mask"}


def test_layout_flattens_as_gymnasium_does_one_observation_or_a_batch():
    layout = ObservationLayout(EVERY_KIND, "test env")
    rest = spaces.Dict(without_mask(EVERY_KIND.spaces))
    assert [f["key"] for f in layout.fields] == ["cell", "grid", "items", "position"]  # the Dict's key order
    assert layout.space.shape == (spaces.flatdim(rest),) and layout.mask_dim == 5
    samples = [EVERY_KIND.sample() for _ in range(50)]
    for raw in samples:
        obs, mask = layout.split(raw)
        np.testing.assert_array_equal(obs[0], spaces.flatten(rest, without_mask(raw)))
        np.testing.assert_array_equal(mask[0], raw["action_mask"].astype(bool))
        assert layout.space.contains(obs[0])
    stacked = {k: np.stack([s[k] for s in samples]) for k in EVERY_KIND.spaces}  # a vector env's batch
    obs, mask = layout.split(stacked)
    assert obs.shape == (50, layout.obs_dim) and mask.shape == (50, 5)
    np.testing.assert_array_equal(obs, np.stack([layout.split(s)[0][0] for s in samples]))


def test_unsupported_entries_are_refused_naming_them():
    nested = spaces.Dict({"inner": spaces.Dict({"x": spaces.Box(0, 1, (1,))})})
    with pytest.raises(ConfigError, match=r"my env: the observation entry 'inner' is Dict.*FlattenObservation"):
        ObservationLayout(nested, "my env")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"cell": 1, "grid": np.zeros((2, 2), int), "items": np.zeros(3, np.int8)}, "'position' is missing"),
        ({"cell": 1, "grid": np.zeros((2, 2), int), "items": np.zeros(3), "position": np.zeros(3)},
         r"'position': expected shape \(2,\)"),
        ({"cell": 0, "grid": np.zeros((2, 2), int), "items": np.zeros(3), "position": np.zeros(2)},
         r"'cell': values must lie in \[1\] .. \[4\]"),
        ({"cell": 1.0, "grid": np.zeros((2, 2), int), "items": np.zeros(3), "position": np.zeros(2)},
         "'cell': expected integer category values"),
        (np.zeros(21, np.float32), "expected a dict"),
    ],
)
def test_bad_structured_observations_name_the_entry(raw, message):
    fields = ObservationLayout(EVERY_KIND, "test env").fields
    with pytest.raises(InvalidInputError, match=message):
        flatten(fields, raw)


class InventoryEnv(gym.Env):
    """A Dict observation without a mask: pick action 1 when the agent holds item 0, else 0."""

    observation_space = spaces.Dict(
        {"position": spaces.Box(-1.0, 1.0, (2,), np.float32), "cell": spaces.Discrete(3), "items": spaces.MultiBinary(2)}
    )
    action_space = spaces.Discrete(2)

    def _obs(self):
        return {"position": self.np_random.uniform(-1, 1, 2).astype(np.float32),
                "cell": int(self.np_random.integers(3)), "items": self.np_random.integers(0, 2, 2).astype(np.int8)}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.last = 0, self._obs()
        return self.last, {}

    def step(self, action):
        reward = float(action == self.last["items"][0])
        self.t += 1
        self.last = self._obs()
        return self.last, reward, False, self.t >= 8, {}


def train_and_export(env_id: str, run_dir) -> str:
    """A brief PPO run on ``env_id`` in ``run_dir``, exported: the .onnx path."""
    from agentkit.config import load_config
    from agentkit.exporting import export_run
    from agentkit.host import PluginHost
    from agentkit.trainer import train

    host = PluginHost(autoload=False)
    config = load_config({
        "seed": 0, "env": {"plugin": "gymnasium", "id": env_id, "num_envs": 4},
        "algorithm": {"plugin": "ppo", "total_steps": 512, "num_steps": 32, "update_epochs": 1},
        "policy": {"hidden_sizes": [16]}, "run": {"tensorboard": False, "progress": "none"},
    }, host.registry)
    train(config, host, run_dir=run_dir)
    (path,) = export_run(run_dir)
    return path


def test_dict_observation_trains_exports_and_the_runtime_takes_the_env_dict(tmp_path):
    from agentkit.evaluation import evaluate_onnx, evaluate_run

    gym.register("agentkit_test/Inventory-v0", entry_point=InventoryEnv)
    try:
        path = train_and_export("agentkit_test/Inventory-v0", tmp_path / "run")
        policy = runtime.load(path)
        fields = policy.metadata["observation"]["fields"]
        assert [(f["key"], f["encoding"], f["start"], f["size"]) for f in fields] == [
            ("cell", "one_hot", 0, 3), ("items", "box", 3, 2), ("position", "box", 5, 2)]

        env = InventoryEnv()
        layout = ObservationLayout(env.observation_space, "test")
        raws = [env.reset(seed=s)[0] for s in range(20)]
        flat = np.concatenate([layout.split(raw)[0] for raw in raws])
        from_dicts = np.array([policy.act(raw) for raw in raws])
        np.testing.assert_array_equal(from_dicts, policy.act(flat))
        batch = {k: np.stack([raw[k] for raw in raws]) for k in raws[0]}
        np.testing.assert_array_equal(policy.act(batch), from_dicts)
        np.testing.assert_array_equal(policy.act(raws), from_dicts)  # a list of the env's dicts
        with pytest.raises(InvalidInputError, match=r"observation 1: its entries \['cell', 'position'\] differ"):
            policy.act([raws[0], {"cell": 0, "position": np.zeros(2)}])
        assert evaluate_onnx(path, episodes=3, seed=4).returns == evaluate_run(tmp_path / "run", episodes=3, seed=4).returns
    finally:
        gym.registry.pop("agentkit_test/Inventory-v0", None)


def test_check_env_plugin_checks_the_fields_against_the_flat_space(monkeypatch):
    from agentkit_envs import gymnasium_env

    from agentkit.testing import check_env_plugin

    check_env_plugin("gymnasium", {"id": "FrozenLake-v1"}, steps=20)  # a Discrete observation, one-hot
    real = gymnasium_env.GymnasiumSource.__init__

    def fields_that_do_not_fit(self, config):
        real(self, config)
        self.observation_fields = [dict(self.observation_fields[0], size=15)]

    monkeypatch.setattr(gymnasium_env.GymnasiumSource, "__init__", fields_that_do_not_fit)
    with pytest.raises(AssertionError, match="observation_fields make 15 columns but observation_space has 16"):
        check_env_plugin("gymnasium", {"id": "FrozenLake-v1"}, steps=5)


class NestedEnv(InventoryEnv):
    """A Dict inside a Tuple: more than one level, which agentkit does not flatten."""

    observation_space = spaces.Tuple((spaces.Discrete(2), spaces.Dict({"x": spaces.Box(0, 1, (1,), np.float32)})))

    def _obs(self):
        return 0, {"x": np.zeros(1, np.float32)}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 8, {}


def test_check_game_refuses_an_observation_the_plugins_cannot_flatten():
    from agentkit.testing import check_game

    check_game("Blackjack-v1", steps=10)  # a Tuple of Discretes: flattened
    with pytest.raises(AssertionError, match=r"the observation entry 1 is Dict.*FlattenObservation"):
        check_game(NestedEnv, steps=10)


TUPLE = spaces.Tuple((spaces.Discrete(3, start=1), spaces.Box(-1, 1, (2,), np.float32), spaces.MultiBinary(2),
                      spaces.MultiDiscrete([2, 3])), seed=0)


def test_tuple_layout_flattens_as_gymnasium_does_and_keys_are_positions():
    layout = ObservationLayout(TUPLE, "test env")
    assert [f["key"] for f in layout.fields] == [0, 1, 2, 3] and layout.mask_dim == 0
    samples = [TUPLE.sample() for _ in range(50)]
    for raw in samples:
        np.testing.assert_array_equal(layout.split(raw)[0][0], spaces.flatten(TUPLE, raw))
    batch = tuple(np.stack([s[i] for s in samples]) for i in range(4))  # a vector env's batch
    np.testing.assert_array_equal(layout.split(batch)[0], np.stack([spaces.flatten(TUPLE, s) for s in samples]))
    with pytest.raises(InvalidInputError, match=r"entry 3 is missing \(got a tuple of 3 entries\)"):
        flatten(layout.fields, samples[0][:3])
    with pytest.raises(InvalidInputError, match=r"observation entry 0: values must lie in \[1\] .. \[3\]"):
        flatten(layout.fields, (0, *samples[0][1:]))
    with pytest.raises(InvalidInputError, match=r"expected a tuple with entry 0"):
        flatten(layout.fields, {"0": 1})


def test_blackjack_trains_exports_and_the_runtime_takes_the_envs_tuple(tmp_path):
    from agentkit.evaluation import evaluate_onnx, evaluate_run

    path = train_and_export("Blackjack-v1", tmp_path / "run")
    policy = runtime.load(path)
    assert [(f["key"], f["n"]) for f in policy.metadata["observation"]["fields"]] == [(0, [32]), (1, [11]), (2, [2])]

    env = gym.make("Blackjack-v1")
    layout = ObservationLayout(env.observation_space, "test")
    raws = [env.reset(seed=s)[0] for s in range(30)]
    assert all(isinstance(raw, tuple) for raw in raws)
    from_tuples = np.array([policy.act(raw) for raw in raws])
    np.testing.assert_array_equal(from_tuples, policy.act(np.concatenate([layout.split(raw)[0] for raw in raws])))
    np.testing.assert_array_equal(policy.act(raws), from_tuples)  # a list of the env's tuples
    np.testing.assert_array_equal(policy.act(tuple(np.array(col) for col in zip(*raws, strict=True))), from_tuples)
    with pytest.raises(InvalidInputError, match=r"got \[3\]\. The env's Tuple observation goes in as a tuple"):
        policy.act(list(raws[0]))
    assert evaluate_onnx(path, episodes=5, seed=4).returns == evaluate_run(tmp_path / "run", episodes=5, seed=4).returns
