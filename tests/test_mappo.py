"""The ``mappo`` plugin: MAPPO and IPPO smoke trainings, dead agents out of the loss, masks, per-group
policies, options, checkpoints/resume and per-group ONNX export."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch

from agentkit.algorithm import BuildContext
from agentkit.config import load_config
from agentkit.errors import ConfigError
from agentkit.host import PluginHost

SPREAD = {
    "plugin": "pettingzoo",
    "module": "mpe2.simple_spread_v3",
    "kwargs": {"N": 3, "max_cycles": 25, "continuous_actions": False},
    "num_envs": 4,
}
SPEAKER = {"plugin": "pettingzoo", "module": "mpe2.simple_speaker_listener_v4", "kwargs": {"max_cycles": 25}, "num_envs": 4}
DEATH = {"plugin": "pettingzoo", "module": "ma_test_envs", "num_envs": 2}
FAST = {"num_steps": 32, "update_epochs": 2, "num_minibatches": 2}


@pytest.fixture(scope="module")
def host():
    return PluginHost(autoload=False)


def config(host, env, total_steps=1024, seed=0, policy=None, **algo):
    data = {
        "seed": seed,
        "env": env,
        "algorithm": {"plugin": "mappo", "total_steps": total_steps, **FAST, **algo},
        "run": {"progress": "none", "tensorboard": False, "checkpoint_every_steps": 0},
    }
    if policy:
        data["policy"] = policy
    return load_config(data, host.registry)


def build(host, cfg):
    from agentkit.seeding import seed_everything

    seed_everything(cfg.seed)  # as the trainer does before it builds anything: algorithms seed nothing global
    reg = host.registry
    env = reg.get("env", cfg.env.plugin).factory(cfg.env)
    return reg.get("algorithm", "mappo").factory(cfg.algorithm, BuildContext(cfg, reg, env, None, torch.device("cpu")))


def finite(metrics):
    return all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("centralised", [True, False], ids=["mappo", "ippo"])
def test_smoke_train_spread_checkpoint_resume_eval_export(host, tmp_path, centralised):
    from agentkit.evaluation import evaluate_onnx, evaluate_run
    from agentkit.exporting import export_run
    from agentkit.trainer import train

    run_dir = tmp_path / "run"
    result = train(config(host, SPREAD, 1024, centralised=centralised), host, run_dir=run_dir)
    assert result["step"] == 1024
    assert -60 < result["charts/episode_return"] < 0 and finite(dict(result))
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    resumed = train(config(host, SPREAD, 1536, centralised=centralised), host, run_dir=run_dir, resume=True)
    assert resumed["step"] == 1536

    torch_eval = evaluate_run(run_dir, episodes=3, seed=5)
    assert torch_eval.episodes == 3 and set(torch_eval.groups) == {"agent"}
    assert all(length == 25 for length in torch_eval.lengths)

    [path] = export_run(run_dir)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert "agent_id" in [i.name for i in model.graph.input]
    onnx_eval = evaluate_onnx(path, episodes=3, seed=5)
    np.testing.assert_allclose(onnx_eval.returns, torch_eval.returns, rtol=1e-5)


def test_speaker_listener_one_policy_and_one_onnx_file_per_group(host, tmp_path):
    from agentkit.exporting import export_run
    from agentkit.trainer import train

    train(config(host, SPEAKER, 512), host, run_dir=tmp_path / "run")
    paths = export_run(tmp_path / "run")
    assert len(paths) == 2 and all(p.exists() for p in paths)
    for path in paths:
        onnx.checker.check_model(onnx.load(str(path)))


def test_policies_per_group_with_agent_ids(host):
    algo = build(host, config(host, SPREAD))
    [art] = algo.policies()
    assert art.name == "agent" and art.agents == ["agent_0", "agent_1", "agent_2"] and art.agent_id_dim == 3
    assert art.actor.encoder.net[0].in_features == 18 + 3
    algo.close()

    algo = build(host, config(host, SPEAKER))
    arts = algo.policies()
    assert [(a.name, a.agent_id_dim, a.actor.encoder.net[0].in_features) for a in arts] == [
        ("speaker", 0, 3), ("listener", 0, 11)
    ]
    algo.close()

    algo = build(host, config(host, SPREAD, share_parameters=False))
    assert [a.name for a in algo.policies()] == ["agent_0", "agent_1", "agent_2"]
    assert len({id(a.actor) for a in algo.policies()}) == 3
    assert finite(algo.iterate())
    algo.close()


def test_dead_agents_steps_are_out_of_the_loss_and_masks_are_obeyed(host):
    # DeathEnv raises on a masked action or an action for a dead agent, so iterating at all checks both.
    algo = build(host, config(host, DEATH, num_steps=12))
    metrics = algo.iterate()
    assert finite(metrics) and metrics["charts/episode_return"] == 4.0  # (2 + 4 + 6) / 3 steps alive
    st = algo.units[0].storage
    step_in_episode = np.arange(12) % 6
    expected = np.stack([step_in_episode < 2, step_in_episode < 4, np.ones(12, bool)], axis=-1)  # [T, A]
    np.testing.assert_array_equal(st.valid.numpy(), np.repeat(expected[:, None], 2, axis=1))
    batch = st.batch()
    assert len(batch) == int(expected.sum()) * 2
    assert (batch.obs[:, :4] != 0).all()  # no zero placeholder row of a dead agent reached the batch
    # an agent's last step (terminated) has return = its last reward: nothing flows in from dead steps
    assert torch.allclose(st.returns[1, :, 0], torch.ones(2)) and torch.allclose(st.returns[3, :, 1], torch.ones(2))
    algo.close()


@pytest.mark.parametrize(
    "options",
    [
        {"critic_input": "agent_specific"},
        {"normalize_value": False, "value_loss": "mse", "value_clip_range": None},
        {"agent_id": False, "lr_schedule": "linear"},
        {"objective": "kl_penalty", "normalize_reward": True, "target_kl": 0.02, "actor_lr": 3e-4},
        {"centralised": False, "policy": {"shared_trunk": True}},
        {"share_parameters": False},
    ],
    ids=["agent-specific", "mse-no-valuenorm", "no-id", "kl-penalty-reward-scaling", "ippo-shared-trunk", "no-sharing"],
)
def test_options_iterate(host, options):
    options = dict(options)
    policy = options.pop("policy", None)
    algo = build(host, config(host, DEATH, policy=policy, **options))
    assert finite(algo.iterate())
    algo.close()


def test_entropy_coefficient_moves_linearly_to_its_final_value(host):
    algo = build(host, config(host, DEATH, total_steps=256, ent_coef=0.05, ent_coef_final=0.001))
    first, second = algo.iterate(), algo.iterate()  # 64 env steps each: progress 0, then 0.25
    assert first["charts/ent_coef"] == 0.05
    assert second["charts/ent_coef"] == pytest.approx(0.05 + (0.001 - 0.05) * 0.25)
    algo.close()


def test_continuous_actions_use_the_gaussian_head(host):
    env = {**SPREAD, "kwargs": {"N": 2, "max_cycles": 25, "continuous_actions": True}, "num_envs": 2}
    algo = build(host, config(host, env, num_steps=16))
    assert type(algo.units[0].actor.head).__name__.lower().startswith("gaussian")
    assert finite(algo.iterate())
    algo.close()


def test_team_arena_hybrid_masked_actions_with_deaths(host):
    env = {"plugin": "pettingzoo", "module": "agentkit_envs.games.team_arena",
           "kwargs": {"team_size": 2, "opponent": "scripted"}, "num_envs": 2}
    algo = build(host, config(host, env, num_steps=100))  # max_cycles 100: every copy ends an episode
    unit = algo.units[0]
    assert type(unit.actor.head).__name__ == "HybridHead" and unit.use_mask
    metrics = algo.iterate()
    assert finite(metrics)
    assert 0.0 <= metrics["infos/win"] <= 1.0  # the win rate over the episodes that ended
    valid = unit.storage.valid
    assert not valid.all()  # somebody died (or the game ended) and those steps were left out
    assert len(unit.storage.batch()) == int(valid.sum())
    (artifact,) = algo.policies()
    assert artifact.observation_fields == [  # the game's Dict observation: the entry besides the mask
        {"key": "observation", "shape": [15], "start": 0, "encoding": "box", "size": 15}]
    algo.close()


def test_team_arena_export_takes_the_games_own_observation_dict(host, tmp_path):
    from agentkit_envs.games import team_arena
    from agentkit_exports.onnx_exporter import OnnxExporter

    from agentkit import runtime

    env = {"plugin": "pettingzoo", "module": "agentkit_envs.games.team_arena", "kwargs": {"team_size": 2},
           "num_envs": 1}
    algo = build(host, config(host, env, num_steps=8))
    (artifact,) = algo.policies()
    policy = runtime.load(OnnxExporter().export(artifact, tmp_path / "arena.onnx"))
    algo.close()
    game = team_arena.parallel_env(team_size=2)
    observations, _ = game.reset(seed=3)
    agents = [a for a in artifact.agents if a in observations]
    raws = [observations[a] for a in agents]
    from_dicts = policy.act(raws, agent=agents)  # the game's dicts: obs and action_mask entries
    flat = np.stack([r["observation"] for r in raws])
    masks = np.stack([r["action_mask"] for r in raws])
    for got, want in zip(from_dicts, policy.act(flat, mask=masks, agent=agents), strict=True):
        np.testing.assert_array_equal(got, want)
    # the dicts' own action_mask is obeyed: forbid the type each agent chose, and it chooses another
    chosen = from_dicts[0]
    forbidding = [dict(r, action_mask=(np.arange(3) != t).astype(np.int8)) for r, t in zip(raws, chosen, strict=True)]
    assert (policy.act(forbidding, agent=agents)[0] != chosen).all()


def test_state_dict_round_trip(host):
    cfg = config(host, SPEAKER, num_steps=16)
    a = build(host, cfg)
    a.iterate()
    b = build(host, cfg)
    b.load_state_dict(a.state_dict())
    assert b.steps_done == a.steps_done
    x = torch.randn(5, 11)
    torch.testing.assert_close(a.policies()[1].actor(x).mode(), b.policies()[1].actor(x).mode())
    for pa, pb in zip(a.units[1].parameters(), b.units[1].parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    a.close()
    b.close()


def test_single_agent_env_and_shared_trunk_with_central_critic_are_config_errors(host):
    with pytest.raises(ConfigError, match="multi-agent"):
        build(host, config(host, {"plugin": "gymnasium", "id": "CartPole-v1"}))
    with pytest.raises(ConfigError, match="shared_trunk"):
        build(host, config(host, DEATH, policy={"shared_trunk": True}))


def test_async_env_workers_train_exactly_as_in_process(host):
    """Same seed, same config but ``env.vectorization: async``: the copies run in worker processes, the
    transitions are the same, so the two iterations' metrics and the learned weights are the same."""
    arena = {"plugin": "pettingzoo", "module": "agentkit_envs.games.team_arena",
             "kwargs": {"team_size": 2, "opponent": "scripted"}, "num_envs": 3}
    runs = []
    for vectorization in ("sync", "async"):
        algo = build(host, config(host, {**arena, "vectorization": vectorization, "workers": 2}, num_steps=40))
        metrics = [algo.iterate() for _ in range(2)]
        runs.append((metrics, [p.detach().clone() for p in algo.units[0].parameters()]))
        algo.close()
    (sync_metrics, sync_weights), (async_metrics, async_weights) = runs
    assert sync_metrics == async_metrics and "infos/win" in sync_metrics[-1]
    for a, b in zip(sync_weights, async_weights, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
