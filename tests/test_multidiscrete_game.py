"""The Dungeon with multi-discrete actions: the shipped game of the ``multi_discrete`` head.

Checkers, the branch masks against the rules, ``policy.head: auto``, a short PPO run that never takes a
masked branch value, and the export playing exactly like the run dir.
"""

from __future__ import annotations

import copy

import agentkit_envs.games  # noqa: F401  (registers the agentkit/ ids)
import gymnasium as gym
import numpy as np
import pytest
import torch
from agentkit_envs.games import dungeon as dg
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from agentkit import runtime
from agentkit.host import PluginHost
from agentkit.testing import check_env_plugin, check_game

pytestmark = pytest.mark.filterwarnings("ignore:.*recommend using a symmetric and normalized space.*")

MULTI = {"action_space": "multi_discrete"}
AUDIT_ID = "agentkit-test/DungeonMultiAudited-v0"


class AuditedDungeon(dg.DungeonEnv):
    """The multi-discrete Dungeon counting, across all copies, every step and every branch value taken
    that its own mask (the one the policy was given) forbade."""

    steps = 0
    masked_offered = 0
    masked_taken = 0
    interactions = 0

    def step(self, action):
        move, interact = (int(a) for a in np.asarray(action))
        mask = self.legal_actions()
        cls = type(self)
        cls.steps += 1
        cls.masked_offered += int((mask == 0).sum())
        cls.masked_taken += int(not mask[move]) + int(not mask[5 + interact])
        cls.interactions += int(interact != 0)
        return super().step(action)


if AUDIT_ID not in gym.registry:
    gym.register(id=AUDIT_ID, entry_point=AuditedDungeon, kwargs=dict(MULTI))


# -- the checkers ------------------------------------------------------------------------------------------


def test_gymnasium_checker_through_make():
    env = gym.make("agentkit/Dungeon-v0", **MULTI)
    assert env.action_space == spaces.MultiDiscrete([5, 3])
    assert env.observation_space["action_mask"] == spaces.MultiBinary(8)
    check_env(env.unwrapped, skip_render_check=False)
    check_env(gym.make("agentkit/Dungeon-v0", illegal_move_penalty=0.05, **MULTI).unwrapped)


@pytest.mark.parametrize("penalty", [None, 0.05])
def test_agentkit_check_game(penalty):
    check_game(lambda **kw: gym.make("agentkit/Dungeon-v0", illegal_move_penalty=penalty, **MULTI, **kw), steps=300)


def test_through_the_gymnasium_env_plugin():
    check_env_plugin("gymnasium", {"id": "agentkit/Dungeon-v0", "kwargs": MULTI}, num_envs=3, steps=60)


def test_bad_options_and_actions_are_refused():
    with pytest.raises(ValueError, match="action_space must be one of"):
        dg.DungeonEnv(action_space="hybrid")
    env = dg.DungeonEnv(**MULTI)
    env.reset(seed=0)
    for bad in ([5, 0], [0, 3], [-1, 0], [1], 3, [1.0, 0.0]):
        with pytest.raises(ValueError, match="two integers"):
            env.step(bad)


# -- the masks follow the rules ------------------------------------------------------------------------------


def _state(env):
    return env.hero, env.has_key, env.door_open


def test_branch_masks_are_the_discrete_rules_split_and_none_is_always_legal():
    """Same seed, same dungeon: the multi-discrete mask is ``[1, moves, 1, pick, open]`` of the discrete one."""
    disc, multi = dg.DungeonEnv(), dg.DungeonEnv(**MULTI)
    rng = np.random.default_rng(0)
    seen = np.zeros(8, dtype=int)
    for episode in range(10):
        od, _ = disc.reset(seed=episode)
        om, _ = multi.reset(seed=episode)
        for _ in range(60):
            np.testing.assert_array_equal(od["observation"], om["observation"])
            d, m = od["action_mask"], om["action_mask"]
            assert m.dtype == np.int8 and m.shape == (8,)
            np.testing.assert_array_equal(m, [1, *d[:4], 1, *d[4:]])
            np.testing.assert_array_equal(m, multi.legal_actions())
            seen += m
            # the same legal discrete action played in both: a move alone, or an interaction alone
            a = int(rng.choice(np.flatnonzero(d)))
            od, rd, td, trd, _ = disc.step(a)
            om, rm, tm, trm, _ = multi.step([a + 1, 0] if a < 4 else [0, a - 3])
            assert (rd, td, trd) == (rm, tm, trm)
            if td or trd:
                break
    assert seen[6] > 0 and seen[7] > 0, "pick and open were legal at some point"
    assert (seen[1:5] < seen[0]).all(), "walls masked some moves"


def test_every_branch_combination_does_what_the_masks_say():
    """From many states, all 15 (move, interact) pairs on the penalty variant (nothing masked, the rules
    decide): a value is illegal exactly when the masked variant's mask forbids it; legal parts act, the
    interaction first, then the move; each illegal part is a no-op costing the penalty."""
    penalty = 0.5
    env = dg.DungeonEnv(illegal_move_penalty=penalty, **MULTI)
    rng = np.random.default_rng(1)
    checked = both = 0
    for episode in range(6):
        env.reset(seed=episode)
        for _ in range(40):
            mask = env.legal_actions()
            assert env._obs()["action_mask"].all()  # the penalty variant allows everything
            hero, has_key, door_open = _state(env)
            for move in range(5):
                for interact in range(3):
                    trial = copy.deepcopy(env)
                    _, reward, terminated, _, info = trial.step([move, interact])
                    n_illegal = int(not mask[move]) + int(not mask[5 + interact])
                    assert info["illegal_action"] == (n_illegal > 0)
                    want_hero = hero
                    if move and mask[move]:
                        dr, dc = dg._MOVES[move - 1]
                        want_hero = (hero[0] + dr, hero[1] + dc)
                    picked = interact == 1 and mask[6]
                    opened = interact == 2 and mask[7]
                    assert _state(trial) == (want_hero, has_key or picked, door_open or opened)
                    won = want_hero == env.exit
                    assert terminated == won
                    want = -0.01 + 0.1 * (picked or opened) + 1.0 * won - penalty * n_illegal
                    assert reward == pytest.approx(want)
                    both += int(n_illegal == 0 and move > 0 and interact > 0)
                    checked += 1
            legal = [(m, i) for m in np.flatnonzero(mask[:5]) for i in np.flatnonzero(mask[5:])]
            _, _, terminated, truncated, _ = env.step(list(legal[rng.integers(len(legal))]))
            if terminated or truncated:
                break
    assert checked > 2000 and both > 0  # some steps moved and interacted at once


def test_open_then_walk_through_next_step():
    """Opening the door and stepping into it in one step is masked (the door is closed at the start of the
    step); the step after, the move is legal."""
    env = dg.DungeonEnv(**MULTI)
    env.reset(seed=3)
    # stand next to the door holding the key, on the door's floor side
    door = env.door
    for index, (dr, dc) in enumerate(dg._MOVES, start=1):
        r, c = door[0] - dr, door[1] - dc
        if env.cells[r, c] == dg.FLOOR:
            env.hero, env.has_key, move = (r, c), True, index
            break
    mask = env.legal_actions()
    assert mask[7] == 1 and mask[move] == 0
    _, reward, *_ = env.step([move, 2])  # open; the move is still the masked one, a no-op
    assert env.door_open and env.hero == (r, c) and reward == pytest.approx(-0.01 + 0.1)
    assert env.legal_actions()[move] == 1 and env.legal_actions()[7] == 0
    env.step([move, 0])
    assert env.hero == door


# -- training, the auto head, export ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short PPO run on the audited multi-discrete Dungeon with ``policy.head: auto``."""
    from agentkit.config import load_config
    from agentkit.trainer import train

    host = PluginHost(autoload=False)
    data = {
        "seed": 3,
        "env": {"plugin": "gymnasium", "id": AUDIT_ID, "num_envs": 8, "kwargs": {"size": 7}},
        "algorithm": {"plugin": "ppo", "total_steps": 4096, "num_steps": 64, "minibatch_size": 128,
                      "update_epochs": 2},
        "policy": {"hidden_sizes": [32, 32], "head": "auto"},
        "run": {"tensorboard": False, "progress": "none"},
    }
    AuditedDungeon.steps = AuditedDungeon.masked_offered = AuditedDungeon.masked_taken = 0
    AuditedDungeon.interactions = 0
    run_dir = tmp_path_factory.mktemp("md") / "run"
    metrics = train(load_config(data, host.registry), host, run_dir=run_dir)
    audit = {"steps": AuditedDungeon.steps, "masked_offered": AuditedDungeon.masked_offered,
             "masked_taken": AuditedDungeon.masked_taken, "interactions": AuditedDungeon.interactions}
    return run_dir, metrics, audit


def test_auto_head_is_multi_discrete():
    host = PluginHost(autoload=False)
    env = gym.make("agentkit/Dungeon-v0", **MULTI)
    assert host.registry.auto_head(env.action_space).name == "multi_discrete"


def test_ppo_never_takes_a_masked_branch_value(trained):
    from agentkit_plugins.heads.multi_discrete import MultiDiscreteHead

    from agentkit.rundir import load_run

    run_dir, metrics, audit = trained
    assert audit["steps"] >= 4096
    assert audit["masked_offered"] > 2 * audit["steps"], audit  # the masks really forbade things...
    assert audit["masked_taken"] == 0, audit  # ...and nothing forbidden was ever played
    assert audit["interactions"] > 20, audit  # the interact branch was really used, not stuck on "none"
    assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))
    (artifact,) = load_run(run_dir).algorithm.policies()
    assert isinstance(artifact.actor.head, MultiDiscreteHead) and artifact.uses_mask
    assert artifact.actor.head.mask_dim == 8


def _observations(size: int, n_envs=16, steps=30, seed=0):
    """Real (obs, mask) pairs from masked random play, and one forced mask per row (one value per branch)."""
    env = dg.DungeonEnv(size=size, **MULTI)
    rng = np.random.default_rng(seed)
    obs, masks = [], []
    for e in range(n_envs):
        o, _ = env.reset(seed=seed + e)
        for _ in range(steps):
            obs.append(o["observation"])
            masks.append(o["action_mask"])
            m = o["action_mask"]
            o, _, term, trunc, _ = env.step([rng.choice(np.flatnonzero(m[:5])), rng.choice(np.flatnonzero(m[5:]))])
            if term or trunc:
                break
    return np.array(obs), np.array(masks)


def test_export_acts_with_the_mask_and_plays_like_the_run_dir(trained, tmp_path):
    from agentkit.evaluation import evaluate_onnx, evaluate_run
    from agentkit.exporting import export_run
    from agentkit.rundir import load_run

    run_dir, _, _ = trained
    (path,) = export_run(run_dir, out=tmp_path / "md.onnx")
    policy = runtime.load(path)
    assert policy.mask_dim == 8 and policy.metadata["action"]["kind"] == "multi_discrete"

    obs, masks = _observations(size=7)
    actions = policy.act(obs, mask=masks)
    assert actions.shape == (len(obs), 2) and actions.dtype == np.int64
    rows = np.arange(len(obs))
    assert masks[rows, actions[:, 0]].all() and masks[rows, 5 + actions[:, 1]].all()
    (artifact,) = load_run(run_dir).algorithm.policies()
    with torch.no_grad():
        want = artifact.actor(torch.as_tensor(obs), torch.as_tensor(masks.astype(bool))).mode().numpy()
    np.testing.assert_array_equal(actions, want)

    # the mask decides inside the graph: allow one value per branch and the file must play it
    rng = np.random.default_rng(2)
    move, interact = rng.integers(0, 5, len(obs)), rng.integers(0, 3, len(obs))
    forced = np.zeros_like(masks)
    forced[rows, move] = 1
    forced[rows, 5 + interact] = 1
    np.testing.assert_array_equal(policy.act(obs, mask=forced), np.stack([move, interact], axis=1))

    want_eval = evaluate_run(run_dir, episodes=4, seed=5)
    got_eval = evaluate_onnx(path, episodes=4, seed=5)
    assert got_eval.returns == want_eval.returns and got_eval.lengths == want_eval.lengths

    (stochastic,) = export_run(run_dir, out=tmp_path / "st.onnx", stochastic=True)
    sampled = runtime.load(stochastic).act(np.repeat(obs, 4, 0), mask=np.repeat(masks, 4, 0), deterministic=False,
                                           rng=np.random.default_rng(0))
    rows4 = np.arange(len(sampled))
    m4 = np.repeat(masks, 4, 0)
    assert m4[rows4, sampled[:, 0]].all() and m4[rows4, 5 + sampled[:, 1]].all()
    assert len({tuple(a) for a in sampled}) > 3  # it samples, not only the mode


def test_shipped_example_trains_and_exports(tmp_path):
    """The example config as shipped (tiny sizes through ``--set``-style overrides): trains, and its export
    records the multi-discrete env, so ``agentkit eval FILE.onnx`` plays the right game."""
    from conftest import REPO

    from agentkit.exporting import export_run
    from agentkit.host import load_run_config
    from agentkit.trainer import train

    overrides = ["algorithm.total_steps=512", "env.num_envs=4", "algorithm.num_steps=64", "run.tensorboard=false",
                 "run.progress=none", "policy.hidden_sizes=[32]"]
    config, host = load_run_config(REPO / "examples" / "dungeon-multidiscrete-ppo.yaml", overrides=overrides,
                                   autoload=False)
    assert config.policy.head == "auto" and config.env.kwargs["action_space"] == "multi_discrete"
    train(config, host, run_dir=tmp_path / "run")
    (path,) = export_run(tmp_path / "run")
    meta = runtime.load(path).metadata
    assert meta["action"]["kind"] == "multi_discrete" and meta["mask"]["dim"] == 8
    assert meta["env"]["config"]["kwargs"]["action_space"] == "multi_discrete"
