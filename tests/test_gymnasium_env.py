"""The ``gymnasium`` env plugin: vector stepping, truncation bootstrap data, masks, hybrid actions, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from agentkit_envs.gymnasium_env import GymnasiumEnvConfig, make_source
from agentkit_exports.onnx_exporter import OnnxExporter, OnnxExporterConfig
from gymnasium import spaces

from agentkit import runtime
from agentkit.algorithm import BuildContext
from agentkit.config import load_config
from agentkit.errors import ConfigError, UserError
from agentkit.host import PluginHost
from agentkit.seeding import seed_everything
from agentkit.spaces import HybridSpace
from agentkit.testing import check_algorithm

HOST = PluginHost(autoload=False)


def source(env_id: str, **kw):
    return make_source(GymnasiumEnvConfig(plugin="gymnasium", id=env_id, **kw))


class MaskedDictEnv(gym.Env):
    """Obs Dict(observation Box(3), action_mask MultiBinary(4)); action k allowed iff k != step % 4."""

    observation_space = spaces.Dict(
        {"observation": spaces.Box(-1, 1, (3,), np.float32), "action_mask": spaces.MultiBinary(4)}
    )
    action_space = spaces.Discrete(4)

    def _obs(self):
        mask = np.ones(4, dtype=np.int8)
        mask[self.t % 4] = 0
        return {"observation": np.full(3, self.t / 10, dtype=np.float32), "action_mask": mask}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        assert action != self.t % 4, "a masked action reached the env"
        self.t += 1
        return self._obs(), 1.0, self.t >= 6, False, {}


class InfoMaskEnv(MaskedDictEnv):
    """The same masks given as info['action_mask'] with a plain Box observation."""

    observation_space = spaces.Box(-1, 1, (3,), np.float32)

    def reset(self, seed=None, options=None):
        obs, _ = super().reset(seed=seed)
        return obs["observation"], {"action_mask": obs["action_mask"]}

    def step(self, action):
        obs, r, term, trunc, _ = super().step(action)
        return obs["observation"], r, term, trunc, {"action_mask": obs["action_mask"]}


class ScoredEnv(gym.Env):
    """Episodes of 1 + (seed % 3) steps; the last step's info has ``won`` (odd seeds), ``score`` (the seed)
    and a string; earlier steps report a different ``score`` that must not count."""

    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_ = seed if seed is not None else int(self.np_random.integers(100))  # autoreset: no seed
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t <= self.seed_ % 3:
            return np.zeros(1, np.float32), 0.0, False, False, {"score": -100.0}
        info = {"score": float(self.seed_), "who": "me", "won": self.seed_ % 2 == 1}
        return np.zeros(1, np.float32), 1.0, True, False, info


class PlatformLayoutEnv(gym.Env):
    """Parameterised actions as gym-platform declares them: a type plus one Box of parameters per type. The env
    checks that every action it gets is in that form, with the chosen type's Box as sent and the others 0."""

    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Tuple((
        spaces.Discrete(3),
        spaces.Tuple((spaces.Box(0, 1, (1,), np.float32), spaces.Box(-1, 1, (1,), np.float32),
                      spaces.Box(-2, 2, (2,), np.float32))),
    ))
    received: list = []

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        assert self.action_space.contains(action), f"not in the env's own action space: {action}"
        kind, boxes = action
        assert all(not box.any() for i, box in enumerate(boxes) if i != kind), f"inactive Boxes not 0: {action}"
        PlatformLayoutEnv.received.append(action)
        reward = -float(np.abs(boxes[kind]).sum())
        return np.zeros(2, np.float32), reward, False, False, {}


class GymHybridLayoutEnv(PlatformLayoutEnv):
    """Parameterised actions as gym-hybrid declares them: a type plus one Box of all parameters."""

    action_space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)))

    def step(self, action):
        assert self.action_space.contains(action), f"not in the env's own action space: {action}"
        PlatformLayoutEnv.received.append(action)
        return np.zeros(2, np.float32), 0.0, False, False, {}


gym.register("agentkit-test/Scored-v0", entry_point=ScoredEnv)
gym.register("agentkit-test/Platform-v0", entry_point=PlatformLayoutEnv)
gym.register("agentkit-test/GymHybrid-v0", entry_point=GymHybridLayoutEnv)
gym.register("agentkit-test/MaskedDict-v0", entry_point=MaskedDictEnv)
gym.register("agentkit-test/InfoMask-v0", entry_point=InfoMaskEnv)


def test_registered_as_builtin():
    host = PluginHost(autoload=False)
    reg = host.registry.get("env", "gymnasium")
    assert reg.config_model is GymnasiumEnvConfig


def test_cartpole_truncation_gives_final_obs_and_episode_stats():
    src = source("CartPole-v1", max_episode_steps=5)
    assert src.observation_space.shape == (4,) and src.observation_space.dtype == np.float32
    assert not src.has_mask and not src.multi_agent
    venv = src.make_vec(3, seed=1)
    first = venv.reset()
    assert first.obs.shape == (3, 4) and first.obs.dtype == np.float32 and first.mask is None
    prev = first.obs
    for step in range(5):
        tr = venv.step(np.array([0, 1, 0]))
        if step < 4:
            assert tr.final_obs is None and not tr.episode_returns
            prev = tr.next.obs
    assert tr.truncated.all() and not tr.terminated.any()
    assert tr.episode_returns == [5.0, 5.0, 5.0] and tr.episode_lengths == [5, 5, 5]
    # the next obs is a fresh episode; the final obs continues the old one (cart moved from prev)
    assert not np.allclose(tr.final_obs, tr.next.obs)
    assert np.all(np.abs(tr.next.obs) <= 0.05)  # CartPole resets uniformly in ±0.05
    assert np.allclose(tr.final_obs[:, 0], prev[:, 0] + 0.02 * prev[:, 1], atol=1e-5)
    venv.close()


def test_same_seed_same_observations():
    a = source("CartPole-v1").make_vec(2, seed=7).reset()
    b = source("CartPole-v1").make_vec(2, seed=7).reset()
    c = source("CartPole-v1").make_vec(2, seed=8).reset()
    np.testing.assert_array_equal(a.obs, b.obs)
    assert not np.array_equal(a.obs, c.obs)


@pytest.mark.parametrize("env_id", ["agentkit-test/MaskedDict-v0", "agentkit-test/InfoMask-v0"])
def test_masks_are_split_off(env_id):
    src = source(env_id)
    assert src.has_mask and src.observation_space.shape == (3,)
    venv = src.make_vec(2, seed=0)
    ob = venv.reset()
    for t in range(8):
        assert ob.mask.dtype == np.bool_ and ob.mask.shape == (2, 4)
        expected = np.ones(4, dtype=bool)
        expected[(t % 6) % 4] = False
        np.testing.assert_array_equal(ob.mask, np.stack([expected, expected]))
        tr = venv.step(np.array([np.flatnonzero(m)[0] for m in ob.mask]))
        ob = tr.next
        if t == 5:
            assert tr.terminated.all() and tr.episode_lengths == [6, 6]
            np.testing.assert_allclose(tr.final_obs, 0.6, rtol=1e-6)  # Dict final obs flattened too
    venv.close()


def test_hybrid_actions_pass_through_the_vector_env():
    src = source("agentkit/Moving-v0")
    assert isinstance(src.action_space, spaces.Tuple)
    venv = src.make_vec(2, seed=0)
    venv.reset()
    p = src.action_space.spaces[1].shape[0]
    tr = venv.step((np.array([0, 1]), np.zeros((2, p), dtype=np.float32)))
    assert tr.next.obs.shape == (2, src.observation_space.shape[0])
    venv.close()


def test_one_box_per_type_is_read_as_hybrid_and_the_env_gets_its_own_form():
    src = source("agentkit-test/Platform-v0")
    space = src.action_space
    assert isinstance(space, HybridSpace)
    assert space.type_names == ["type_0", "type_1", "type_2"]
    assert space.param_names == ["type_0.0", "type_1.0", "type_2.0", "type_2.1"]
    assert space.type_params == [[0], [1], [2, 3]]
    assert space.low.tolist() == [0, -1, -2, -2] and space.high.tolist() == [1, 1, 2, 2]
    PlatformLayoutEnv.received.clear()
    venv = src.make_vec(3, seed=0)
    venv.reset()
    venv.step((np.array([0, 1, 2]), np.array([[0.5, 0, 0, 0], [0, -0.25, 0, 0], [0, 0, 1.5, -2]], np.float32)))
    kinds = [int(kind) for kind, _ in PlatformLayoutEnv.received]
    boxes = [[box.tolist() for box in action[1]] for action in PlatformLayoutEnv.received]
    assert kinds == [0, 1, 2]
    assert boxes == [[[0.5], [0.0], [0.0, 0.0]], [[0.0], [-0.25], [0.0, 0.0]], [[0.0], [0.0], [1.5, -2.0]]]
    venv.close()
    named = source("agentkit-test/Platform-v0", action_types={"run": [0], "hop": [1], "leap": [2, 3]}).action_space
    assert named.type_names == ["run", "hop", "leap"] and named.param_names == ["run.0", "hop.0", "leap.0", "leap.1"]


def test_a_type_plus_one_box_needs_action_types():
    with pytest.raises(ConfigError, match=r"env.action_types.*not which type uses which.*accelerate: \[0\]"):
        source("agentkit-test/GymHybrid-v0")
    src = source("agentkit-test/GymHybrid-v0", action_types={"accelerate": [0], "turn": [1], "brake": []})
    assert isinstance(src.action_space, HybridSpace)
    assert src.action_space.type_params == [[0], [1], []]
    assert src.action_space.param_names == ["param_0", "param_1"]
    PlatformLayoutEnv.received.clear()
    venv = src.make_vec(2, seed=0)
    venv.reset()
    venv.step((np.array([1, 2]), np.array([[0, 0.75], [0, 0]], np.float32)))
    assert [(int(k), p.tolist()) for k, p in PlatformLayoutEnv.received] == [(1, [0, 0.75]), (2, [0, 0])]
    venv.close()


class PlainTupleMoving(gym.Wrapper):
    """agentkit/Moving-v0 declaring its actions as gym-hybrid does: a plain Tuple(Discrete(3), Box(2))."""

    def __init__(self, **kwargs):
        from agentkit_envs.games.moving import MovingEnv

        super().__init__(MovingEnv(**kwargs))
        hybrid = self.env.action_space
        self.action_space = spaces.Tuple((spaces.Discrete(3), spaces.Box(hybrid.low, hybrid.high, dtype=np.float32)))


gym.register("agentkit-test/PlainTupleMoving-v0", entry_point=PlainTupleMoving, max_episode_steps=200)


def test_a_plain_tuple_trains_exactly_as_the_hybrid_space_it_stands_for():
    def metrics(env):
        config = load_config({"seed": 3, "env": {"plugin": "gymnasium", "num_envs": 2, **env},
                              "algorithm": {"plugin": "ppo", "total_steps": 256, "num_steps": 32}}, HOST.registry)
        seed_everything(config.seed)  # as the trainer does before it builds an algorithm (the initial weights)
        algo = HOST.registry.get("algorithm", "ppo").factory(
            config.algorithm, BuildContext(config, HOST.registry, HOST.registry.get("env", "gymnasium").factory(
                config.env), None, torch.device("cpu")))
        out = [algo.iterate() for _ in range(3)]
        algo.close()
        return [{k: v for k, v in m.items() if not k.startswith(("time/", "charts/steps_per"))} for m in out]

    native = metrics({"id": "agentkit/Moving-v0"})
    plain = metrics({"id": "agentkit-test/PlainTupleMoving-v0",
                     "action_types": {"accelerate": [0], "turn": [1], "brake": []}})
    assert plain == native and "losses/policy" in native[-1]


@pytest.mark.parametrize("env_id, action_types, message", [
    ("agentkit-test/GymHybrid-v0", {"a": [0], "b": [1]}, r"has 3 types, but 2 are given"),
    ("agentkit-test/GymHybrid-v0", {"a": [0], "b": [2], "c": []}, r"type 'b' uses parameters \[2\].*0\.\.1"),
    ("agentkit-test/GymHybrid-v0", {"a": [0], "b": [0], "c": [1]}, r"owned by exactly one type"),
    ("agentkit-test/Platform-v0", {"a": [0, 1], "b": [], "c": [2, 3]}, r"type k uses Box k.*'a': \[0\], 'b': \[1\]"),
    ("CartPole-v1", {"a": [0]}, r"env.action_types is set.*Discrete\(2\).*remove env.action_types"),
])
def test_action_types_that_do_not_fit_are_refused_with_the_fix(env_id, action_types, message):
    with pytest.raises(ConfigError, match=message):
        source(env_id, action_types=action_types)


def test_ppo_trains_and_exports_a_platform_layout_env(tmp_path):
    config = load_config({"env": {"plugin": "gymnasium", "id": "agentkit-test/Platform-v0", "num_envs": 2,
                                  "action_types": {"run": [0], "hop": [1], "leap": [2, 3]}},
                          "algorithm": {"plugin": "ppo", "total_steps": 256, "num_steps": 16,
                                                        "minibatch_size": 32}}, HOST.registry)
    check_algorithm(config, HOST)  # trains; the env itself asserts every action's form
    src = HOST.registry.get("env", "gymnasium").factory(config.env)
    algo = HOST.registry.get("algorithm", "ppo").factory(
        config.algorithm, BuildContext(config, HOST.registry, src, None, torch.device("cpu")))
    algo.iterate()
    exporter = OnnxExporter(OnnxExporterConfig(plugin="onnx", stochastic=True))
    path = exporter.export(algo.policies()[0], tmp_path / "platform.onnx")  # parity checked on export
    algo.close()
    policy = runtime.load(path)
    assert [t["name"] for t in policy.metadata["action"]["types"]] == ["run", "hop", "leap"]
    owned = {0: [0], 1: [1], 2: [2, 3]}
    for obs in np.random.default_rng(0).uniform(-1, 1, (20, 2)).astype(np.float32):
        kind, params = policy.act(obs, deterministic=False, rng=0)
        assert params.shape == (4,) and not np.delete(params, owned[int(kind)]).any()


def test_async_vectorization():
    venv = source("CartPole-v1", vectorization="async").make_vec(2, seed=0)
    ob = venv.reset()
    tr = venv.step(np.array([0, 1]))
    assert ob.obs.shape == tr.next.obs.shape == (2, 4)
    venv.close()


def test_frame_stack_keeps_the_stacked_shape():
    src = source("CartPole-v1", frame_stack=3)
    assert src.observation_space.shape == (3, 4)  # a Box keeps its shape; the MLP encoder flattens it
    assert src.make_vec(2, seed=0).reset().obs.shape == (2, 3, 4)


def test_bad_id_names_the_id_and_the_fix():
    with pytest.raises(ConfigError, match=r"CartPol-v1.*pprint_registry"):
        source("CartPol-v1")


def test_tuple_observation_is_flattened_entry_by_entry():
    src = source("Blackjack-v1")  # Tuple(Discrete(32), Discrete(11), Discrete(2))
    assert src.observation_space.shape == (45,) and [f["key"] for f in src.observation_fields] == [0, 1, 2]
    obs = src.make_vec(2, seed=0).reset().obs
    assert obs.shape == (2, 45) and (obs.sum(axis=1) == 3).all()  # one one-hot per entry


def test_discrete_observation_becomes_one_hot():
    src = source("FrozenLake-v1")
    assert src.observation_space.shape == (16,)
    assert src.observation_fields == [{"key": None, "shape": [], "start": 0, "encoding": "one_hot", "size": 16,
                                       "n": [16], "first": [0]}]
    obs = src.make_vec(3, seed=0).reset().obs
    assert obs.shape == (3, 16) and np.array_equal(obs, np.eye(16, dtype=np.float32)[[0, 0, 0]])


def test_bad_kwargs_are_a_user_error():
    with pytest.raises(UserError, match="CartPole-v1"):
        source("CartPole-v1", kwargs={"no_such_option": 1})


def test_episode_infos_are_the_last_steps_numbers_and_eval_averages_them():
    from agentkit.evaluation import play_episodes

    venv = source("agentkit-test/Scored-v0", num_envs=2).make_vec(2, seed=4)
    venv.reset(seed=4)  # copies seeded 4 and 5: episodes of 2 and 3 steps
    steps = [venv.step(np.zeros(2, np.int64)) for _ in range(2)]
    assert [tr.episode_infos for tr in steps] == [[], [{"score": 4.0, "won": 0.0}]]
    assert {"score": 5.0, "won": 1.0} in venv.step(np.zeros(2, np.int64)).episode_infos

    result = play_episodes(source("agentkit-test/Scored-v0"), lambda obs, mask: np.zeros(1, np.int64), 5, seed=10)
    assert result.infos == {"score": pytest.approx(12.0), "won": pytest.approx(0.4)}  # seeds 10..14
