"""The ``pettingzoo`` env plugin: groups, the multi-agent vector env's layout, deaths, masks, state."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from agentkit_envs.pettingzoo_env import PettingZooEnvConfig, PettingZooSource
from pettingzoo.test import parallel_api_test

from agentkit.errors import ConfigError, InvalidInputError

SPREAD = {"module": "mpe2.simple_spread_v3", "kwargs": {"N": 3, "max_cycles": 25, "continuous_actions": False}}
SPEAKER = {"module": "mpe2.simple_speaker_listener_v4", "kwargs": {"max_cycles": 25}}
DEATH = {"module": "ma_test_envs"}


def source(num_envs: int = 2, **section) -> PettingZooSource:
    return PettingZooSource(PettingZooEnvConfig(plugin="pettingzoo", num_envs=num_envs, **section))


def test_adapter_env_passes_pettingzoo_parallel_api_test():
    parallel_api_test(source(**SPREAD).make_env(None), num_cycles=30)
    parallel_api_test(source(**DEATH).make_env(None), num_cycles=30)


def test_parameterised_action_tuples_are_read_as_hybrid_and_the_env_gets_its_own_form():
    from agentkit.spaces import HybridSpace

    src = source(module="ma_test_envs:platform_env", action_types={"move": [0], "jump": [1, 2]})
    group = src.groups["p"]
    assert group.agents == ["p_0", "p_1"] and isinstance(group.action_space, HybridSpace)
    assert group.action_space.param_names == ["move.0", "jump.0", "jump.1"]
    venv = src.make_vec(2, seed=0)
    venv.reset(seed=0)
    types = np.array([0, 1, 1, 0])  # env-major rows: (copy 0: p_0, p_1), (copy 1: p_0, p_1)
    params = np.array([[0.5, 0, 0], [0, -0.5, 0.25], [0, 1, -1], [0.125, 0, 0]], np.float32)
    venv.step({"p": (types, params)})
    got = [(int(k), [b.tolist() for b in boxes]) for env in venv.envs for k, boxes in env.unwrapped.received[0].values()]
    assert got == [(0, [[0.5], [0, 0]]), (1, [[0], [-0.5, 0.25]]), (1, [[0], [1, -1]]), (0, [[0.125], [0, 0]])]
    with pytest.raises(ConfigError, match=r"env.action_types is set.*Discrete\(5\).*remove env.action_types"):
        source(**SPREAD, action_types={"a": [0]})
    from agentkit.testing import check_algorithm

    check_algorithm({"env": {"plugin": "pettingzoo", "module": "ma_test_envs:platform_env", "num_envs": 2},
                     "algorithm": {"plugin": "mappo", "total_steps": 64, "num_steps": 8}})  # the env checks each action


def test_default_groups_share_identical_spaces_and_split_different_ones():
    spread = source(**SPREAD)
    assert list(spread.groups) == ["agent"]
    assert spread.groups["agent"].agents == ["agent_0", "agent_1", "agent_2"]
    assert spread.groups["agent"].observation_space.shape == (18,)
    assert spread.multi_agent and spread.state_dim == 54 and not spread.has_mask

    speaker = source(**SPEAKER)
    assert {g: s.agents for g, s in speaker.groups.items()} == {"speaker": ["speaker_0"], "listener": ["listener_0"]}
    assert speaker.groups["speaker"].action_space.n == 3 and speaker.groups["listener"].action_space.n == 5
    assert speaker.state_dim == 14


def test_default_group_without_a_common_prefix_is_named_agents():
    src = source(module="agentkit_envs.games.team_arena", kwargs={"team_size": 2})
    assert {g: s.agents for g, s in src.groups.items()} == {"agents": ["blue_0", "blue_1", "red_0", "red_1"]}
    assert src.groups["agents"].mask_dim == 3 and src.has_mask


@pytest.mark.parametrize(("named", "message"), [
    ({"a": [], "b": ["agent_0", "agent_1", "agent_2"]}, r"env.groups.a: a group needs at least one agent"),
    ({"a": ["agent_0", "agent_9"]}, r"env.groups.a: unknown agent 'agent_9'; the env's agents are"),
    ({"a": ["agent_0", "agent_1"], "b": ["agent_1", "agent_2"]}, r"agent 'agent_1' is in both 'a' and 'b'"),
    ({"a": ["agent_0", "agent_1"]}, r"agents \['agent_2'\] are in no group"),
])
def test_named_groups_that_break_a_rule_name_it(named, message):
    """One helper (agentkit.environment.group_agents) checks env.groups for every multi-agent env plugin."""
    with pytest.raises(ConfigError, match=message):
        source(**SPREAD, groups=named)
    with pytest.raises(ConfigError, match="cannot share a policy"):
        source(**SPEAKER, groups={"both": ["speaker_0", "listener_0"]})


def test_named_groups_set_the_agent_axis():
    src = source(**SPREAD, groups={"solo": ["agent_2"], "pair": ["agent_1", "agent_0"]})
    assert {g: s.agents for g, s in src.groups.items()} == {"solo": ["agent_2"], "pair": ["agent_1", "agent_0"]}
    venv = src.make_vec(2, seed=0)
    obs = venv.reset()
    assert obs["pair"].obs.shape == (2, 2, 18) and obs["solo"].obs.shape == (2, 1, 18)
    # the state is the concatenation in possible_agents order: agent_2's obs is its third block
    np.testing.assert_allclose(obs["solo"].state[:, 36:54], obs["solo"].obs[:, 0])
    venv.close()


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"a": ["agent_0", "agent_1"]}, "agent_2"),  # missing
        ({"a": ["agent_0", "agent_1", "agent_2", "agent_9"]}, "agent_9"),  # unknown
        ({"a": ["agent_0", "agent_1", "agent_2"], "b": ["agent_0"]}, "both"),  # twice
        ({"a": []}, "at least one"),
    ],
)
def test_bad_groups_are_config_errors_naming_the_agent(groups, message):
    with pytest.raises(ConfigError, match=message):
        source(**SPREAD, groups=groups)


def test_agents_with_different_spaces_cannot_share_a_group():
    with pytest.raises(ConfigError, match="different observation or action spaces"):
        source(**SPEAKER, groups={"all": ["speaker_0", "listener_0"]})


def test_bad_module_is_a_config_error():
    with pytest.raises(ConfigError, match="env.module"):
        source(module="no_such_module_for_agentkit")
    with pytest.raises(ConfigError, match="kwargs"):
        source(module="mpe2.simple_spread_v3", kwargs={"no_such_kwarg": 1})


def test_aec_env_is_converted_to_parallel():
    src = source(module="mpe2.simple_spread_v3:env", kwargs=SPREAD["kwargs"])
    venv = src.make_vec(2, seed=0)
    assert venv.reset()["agent"].obs.shape == (2, 3, 18)
    tr = venv.step({"agent": np.zeros(6, np.int64)})
    assert tr.groups["agent"].reward.shape == (2, 3)
    venv.close()


def test_spread_episodes_truncate_bootstrap_and_auto_reset():
    venv = source(**SPREAD).make_vec(3, seed=7)
    obs = venv.reset()
    assert obs["agent"].alive.all() and obs["agent"].state.shape == (3, 54)
    totals = np.zeros((3, 3))
    for t in range(25):
        tr = venv.step({"agent": np.random.default_rng(t).integers(0, 5, 9)})
        g = tr.groups["agent"]
        totals += g.reward
        if t < 24:
            assert not g.truncated.any() and not tr.episode_returns
    assert g.truncated.all() and not g.terminated.any()
    assert tr.episode_lengths == [25, 25, 25] and tr.episode_envs == [0, 1, 2]
    np.testing.assert_allclose(tr.episode_returns, totals.mean(axis=1), rtol=1e-5)
    # next is the new episode's start; final_obs/final_state the ended one's last
    assert not np.allclose(g.final_obs, g.next.obs)
    np.testing.assert_allclose(g.final_state.reshape(3, 3, 18), g.final_obs)


def test_same_seed_same_episodes():
    a, b = (source(**SPREAD).make_vec(2, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a.reset()["agent"].obs, b.reset()["agent"].obs)
    act = {"agent": np.arange(6) % 5}
    np.testing.assert_array_equal(a.step(act).groups["agent"].reward, b.step(act).groups["agent"].reward)


def test_dead_agents_are_masked_placeholders_and_never_stepped():
    venv = source(**DEATH, state="concat").make_vec(2, seed=0)
    obs = venv.reset()["a"]
    assert obs.mask.shape == (2, 3, 3) and obs.mask.dtype == bool
    for t in range(6):
        # act with the allowed action on every row, dead rows included: the adapter must drop those
        allowed = obs.mask.reshape(6, 3).argmax(axis=1)
        assert (obs.mask.sum(-1) == 1)[obs.alive].all()
        tr = venv.step({"a": allowed})
        g = tr.groups["a"]
        alive_before = obs.alive
        expected_alive = np.array([t < 2, t < 4, True])  # a_0 dies after 2 steps, a_1 after 4
        np.testing.assert_array_equal(alive_before, np.tile(expected_alive, (2, 1)))
        np.testing.assert_array_equal(g.terminated[0], [t == 1, t == 3, False])
        np.testing.assert_array_equal(g.reward[0], alive_before[0].astype(np.float32))
        obs = g.next
        if t < 5:
            dead = ~obs.alive
            assert (obs.obs[dead] == 0).all() and obs.mask[dead].all()  # placeholders: zeros, all allowed
            # concat state: zeros in the dead agents' blocks
            state = obs.state.reshape(2, 3, 4)
            assert (state[dead] == 0).all() and (state[obs.alive] != 0).all()
    assert g.truncated[0, 2] and tr.episode_returns == [4.0, 4.0]  # (2 + 4 + 6) / 3
    assert obs.alive.all()  # reset: everyone is back
    assert [sorted(r) for r in venv.envs[0].received][:3] == [["a_0", "a_1", "a_2"]] * 2 + [["a_1", "a_2"]]


def test_env_state_is_used_when_the_env_has_one():
    src = source(**DEATH)
    assert src.uses_env_state and src.state_dim == 4
    obs = src.make_vec(1, seed=0).reset()
    np.testing.assert_array_equal(obs["a"].state, [[0, 1, 1, 1]])


def test_state_none_makes_an_empty_state_and_a_centralised_critic_refuses_it():
    """``env.state: none``: no state() call and a [N, 0] state (for a critic that reads none: IPPO)."""
    from agentkit.testing import check_algorithm

    src = source(**DEATH, state="none")
    assert src.state_dim == 0 and not src.uses_env_state
    venv = src.make_vec(2, seed=0)
    assert venv.reset()["a"].state.shape == (2, 0)
    assert venv.step({"a": np.zeros(6, np.int64)}).groups["a"].next.state.shape == (2, 0)
    env = {"plugin": "pettingzoo", "num_envs": 2, "state": "none", **DEATH}
    check_algorithm({"env": env, "algorithm": {"plugin": "mappo", "total_steps": 32, "num_steps": 8,
                                               "centralised": False}})
    with pytest.raises(ConfigError, match=r"reads the global state, and this env has none \(env.state: none"):
        check_algorithm({"env": env, "algorithm": {"plugin": "mappo", "total_steps": 32, "num_steps": 8}})


def test_registered_as_built_in():
    from agentkit.host import PluginHost

    reg = PluginHost(autoload=False).registry.get("env", "pettingzoo")
    assert reg.provider == "built-in" and reg.config_model is PettingZooEnvConfig


def _hunter(obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Team Arena blue policy from observations alone (2 v 2): shoot the first live enemy when loaded,
    else walk towards it. It wins some episodes and loses others against the scripted red team."""
    from agentkit_envs.games.team_arena import MOVE, SHOOT

    enemies = obs[:, 6:14].reshape(len(obs), 2, 4)  # per enemy: dx, dy, bearing / pi, alive
    target = np.argmax(enemies[:, :, 3] > 0, axis=1)
    bearing = enemies[np.arange(len(obs)), target, 2] * np.pi
    kind = np.where(mask[:, SHOOT] > 0, SHOOT, MOVE)
    return kind, np.stack([bearing, bearing], axis=1).astype(np.float32)


def test_episode_infos_carry_the_envs_numeric_figures_and_eval_averages_them():
    """Team Arena reports ``win`` (and a string ``winner``) in its infos at the end of an episode: the
    adapter keeps the numbers per ended episode, and eval reports their mean (the win rate)."""
    from agentkit_envs.games.team_arena import parallel_env

    from agentkit.evaluation import play_episodes

    arena = source(module="agentkit_envs.games.team_arena", kwargs={"team_size": 2, "opponent": "scripted"})
    episodes = 12
    result = play_episodes(arena, _hunter, episodes=episodes, seed=5)
    assert set(result.infos) == {"win"}  # numbers only: the string "winner" and the mask are left out
    wins = []
    for i in range(episodes):  # the same episodes on the raw env
        env = parallel_env(team_size=2, opponent="scripted")
        observations, _ = env.reset(seed=5 + i)
        while env.agents:
            agents = list(env.agents)
            kind, params = _hunter(
                np.stack([observations[a]["observation"] for a in agents]),
                np.stack([observations[a]["action_mask"] for a in agents]),
            )
            observations, *_, infos = env.step({a: (k, p) for a, k, p in zip(agents, kind, params, strict=True)})
        wins.append(next(iter(infos.values()))["win"])
    assert 0 < sum(wins) < episodes, "the hunter should win some episodes and lose others"
    assert result.infos["win"] == pytest.approx(np.mean(wins))

    spread = play_episodes(source(**SPREAD), lambda obs, mask: np.zeros(len(obs), np.int64), episodes=2)
    assert spread.infos == {}


def _assert_same(a, b, where="step"):
    """Two results of a vector env (dataclasses, dicts, lists, arrays) hold equal values everywhere."""
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def test_async_copies_in_worker_processes_step_exactly_as_in_process():
    """``vectorization: async`` runs blocks of copies in worker processes (3 copies on 2 workers: 2 + 1) and
    joins their steps: hybrid actions, masks, deaths, auto-resets, episode returns and infos come out as
    the in-process vector env gives them."""
    arena = {"module": "agentkit_envs.games.team_arena", "kwargs": {"team_size": 2, "opponent": "scripted"}}
    in_process = source(3, **arena).make_vec(3, seed=7)
    workers = source(3, **arena, vectorization="async", workers=2).make_vec(3, seed=7)
    try:
        assert type(workers).__name__ == "SubprocessPettingZooVecEnv"
        obs = in_process.reset()
        _assert_same(obs, workers.reset(), "reset")
        ended = 0
        for t in range(150):
            blue = obs["blue"]
            kind, params = _hunter(blue.obs.reshape(6, -1), blue.mask.reshape(6, -1))
            step = in_process.step({"blue": (kind, params)})
            _assert_same(step, workers.step({"blue": (kind, params)}), f"step {t}")
            ended += len(step.episode_returns)
            obs = {g: tr.next for g, tr in step.groups.items()}
        assert ended >= 3
        _assert_same(in_process.reset(seed=11), workers.reset(seed=11), "reset(seed)")
    finally:
        in_process.close()
        workers.close()
    assert not any(p.is_alive() for p in workers._procs)


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
def test_without_checking_wrappers_the_episodes_are_the_same(continuous):
    """By default the AEC env is converted without pettingzoo's checking wrappers (``api_checks: false``) and
    by ``_ObservingOnce``, which changes the speed and nothing else: the same seed and actions give the same
    steps as pettingzoo's own conversion, resets included."""
    spread = {**SPREAD, "kwargs": {**SPREAD["kwargs"], "continuous_actions": continuous}}
    assert type(source(**spread).make_env(None).aec_env).__name__ == "raw_env"
    assert type(source(**spread, api_checks=True).make_env(None).aec_env).__name__ == "OrderEnforcingWrapper"
    bare, checked = source(**spread).make_vec(2, seed=5), source(**spread, api_checks=True).make_vec(2, seed=5)
    _assert_same(bare.reset(), checked.reset(), "reset")
    rng = np.random.default_rng(0)
    for t in range(60):  # crosses two episode ends (max_cycles 25)
        act = rng.uniform(0, 1, (6, 5)).astype(np.float32) if continuous else rng.integers(0, 5, 6)
        _assert_same(bare.step({"agent": act}), checked.step({"agent": act}), f"step {t}")
    bare.close()
    checked.close()


def test_each_observation_is_made_once_a_step():
    """pettingzoo's conversion makes every agent's observation twice a step (``last()``, dropped, then
    ``observe``); agentkit's makes each once."""
    from agentkit_envs.pettingzoo_env import _ObservingOnce

    env = source(**SPREAD).make_env(None)
    assert isinstance(env, _ObservingOnce)
    made = []
    raw, observe = env.aec_env, env.aec_env.observe
    raw.observe = lambda agent: made.append(agent) or observe(agent)
    env.reset(seed=0)
    made.clear()
    env.step({a: 0 for a in env.agents})
    assert sorted(made) == sorted(env.possible_agents)


def test_a_wrapper_that_changes_the_game_is_kept():
    from agentkit_envs.pettingzoo_env import _without_checking_wrappers
    from mpe2 import simple_spread_v3
    from pettingzoo.utils.conversions import aec_to_parallel
    from pettingzoo.utils.wrappers import BaseWrapper, OrderEnforcingWrapper

    game_rule = BaseWrapper(simple_spread_v3.raw_env())  # stands for e.g. TerminateIllegalWrapper
    env = _without_checking_wrappers(aec_to_parallel(OrderEnforcingWrapper(game_rule)))
    assert env.aec_env is game_rule
    native = source(module="agentkit_envs.games.team_arena").make_env(None)  # a ParallelEnv: untouched
    assert _without_checking_wrappers(native) is native


def test_async_joins_every_groups_blocks():
    """Speaker/listener: two groups with different spaces, each joined from the workers' blocks."""
    in_process = source(5, **SPEAKER).make_vec(5, seed=1)
    workers = source(5, **SPEAKER, vectorization="async", workers=2).make_vec(5, seed=1)
    try:
        _assert_same(in_process.reset(), workers.reset(), "reset")
        rng = np.random.default_rng(0)
        for t in range(50):
            actions = {g: rng.integers(0, spec.action_space.n, size=5 * len(spec.agents))
                       for g, spec in in_process.groups.items()}
            step = in_process.step(actions)
            _assert_same(step, workers.step(actions), f"step {t}")
        assert len(step.group_returns) == 2 and step.episode_envs == [0, 1, 2, 3, 4]  # the 50th step ends every copy's second episode
    finally:
        in_process.close()
        workers.close()


def test_async_workers_raise_the_envs_errors_in_the_trainer():
    """Copy 0 runs in the trainer, copy 1 in a worker process: an error in the worker's env is raised in the
    trainer with its type and message, and the pipes stay in step for the next call."""
    venv = source(2, **DEATH, vectorization="async", workers=2).make_vec(2, seed=0)
    try:
        allowed = venv.reset()["a"].mask.reshape(6, 3).argmax(axis=1)
        with pytest.raises(InvalidInputError, match="no actions for group 'a'"):
            venv.step({})
        masked_in_copy_1 = allowed.copy()
        masked_in_copy_1[3:] = (allowed[3:] + 1) % 3
        with pytest.raises(AssertionError, match="took masked action"):  # DeathEnv refuses masked actions
            venv.step({"a": masked_in_copy_1})
        assert venv.reset()["a"].alive.all()  # both blocks answer the next call
    finally:
        venv.close()
    assert source(1, **DEATH, vectorization="async").make_vec(1, seed=0).__class__.__name__ == "PettingZooVecEnv"


def test_categorical_observations_are_one_hot_and_a_state_attribute_is_not_a_state_method():
    """pettingzoo.classic.rps_v2 observes the opponent's last move as a Discrete(4) and keeps a dict named
    ``state``: the adapter one-hot encodes the observation and falls back to concatenated observations."""
    src = source(module="pettingzoo.classic.rps_v2")
    assert not src.uses_env_state and src.state_dim == 8
    group = next(iter(src.groups.values()))
    assert group.observation_fields == [{"key": None, "shape": [], "start": 0, "encoding": "one_hot", "size": 4,
                                         "n": [4], "first": [0]}]
    venv = src.make_vec(2, seed=0)
    obs = venv.reset(seed=0)[group.name].obs
    assert obs.shape == (2, 2, 4) and (obs.sum(axis=-1) == 1).all()  # one-hot rows
    venv.close()


@pytest.mark.parametrize("module", ["ma_test_envs:platform_env", "ma_test_envs:buttons_env"])
def test_env_plugin_checker_passes_plain_tuple_and_multi_binary_agents(module):
    from agentkit.testing import check_env_plugin

    check_env_plugin("pettingzoo", {"module": module}, steps=20)  # random allowed actions reach the env's checks
