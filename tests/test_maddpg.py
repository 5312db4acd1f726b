"""MADDPG: the relaxed actions of the registered heads it trains through (the straight-through Gumbel-softmax
with masks, hybrid gating, bounded continuous actions), soft updates, the replay buffer, short smoke trainings
(discrete, continuous, hybrid with masks), resume and export."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from agentkit_plugins.maddpg import ensemble_act, soft_update
from agentkit_plugins.replay import ReplayBuffer
from gymnasium import spaces

from agentkit.algorithm import BuildContext, resolve_device
from agentkit.config import PolicyConfig, load_config
from agentkit.errors import ConfigError, EmptyMaskError
from agentkit.heads import ActionHead, gumbel_softmax_st
from agentkit.host import PluginHost
from agentkit.policy import build_actor
from agentkit.spaces import HybridSpace

EXTRA = ["agentkit_plugins.heads.hybrid", "agentkit_envs.pettingzoo_env"]  # no-ops once built in


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost(modules=EXTRA, autoload=False)


def random_masks(gen: torch.Generator, rows: int, n: int) -> torch.Tensor:
    mask = torch.rand(rows, n, generator=gen) < 0.5
    mask[torch.arange(rows), torch.randint(0, n, (rows,), generator=gen)] = True  # at least one allowed
    return mask


# -- straight-through Gumbel-softmax --------------------------------------------------------------------------


def test_gumbel_st_never_chooses_masked_and_masked_logits_get_zero_grad():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(4096, 7, generator=gen) * 5).requires_grad_(True)
    mask = random_masks(gen, 4096, 7)
    one_hot, index = gumbel_softmax_st(logits, mask, temperature=0.7, generator=gen)
    assert mask[torch.arange(4096), index].all()
    assert torch.equal(one_hot.detach(), torch.nn.functional.one_hot(index, 7).float())
    weights = torch.randn(7, generator=gen)
    (one_hot * weights).sum().backward()
    assert torch.all(logits.grad[~mask] == 0)
    assert torch.all(torch.isfinite(logits.grad))
    assert logits.grad[mask].abs().sum() > 0  # the soft path carries gradient to the allowed logits


def test_gumbel_st_samples_every_allowed_action_and_greedy_is_the_masked_argmax():
    gen = torch.Generator().manual_seed(1)
    logits = torch.zeros(20_000, 4)
    mask = torch.tensor([[True, False, True, True]]).expand(20_000, 4)
    _, index = gumbel_softmax_st(logits, mask, generator=gen)
    counts = torch.bincount(index, minlength=4).float() / 20_000
    assert counts[1] == 0
    assert torch.allclose(counts[[0, 2, 3]], torch.full((3,), 1 / 3), atol=0.02)
    greedy_logits = torch.tensor([[5.0, 9.0, 1.0, 2.0]])
    _, greedy = gumbel_softmax_st(greedy_logits, torch.tensor([[True, False, True, True]]), noise=False)
    assert greedy.item() == 0


def test_gumbel_st_empty_mask_row_raises():
    with pytest.raises(EmptyMaskError):
        gumbel_softmax_st(torch.zeros(2, 3), torch.tensor([[True, False, False], [False, False, False]]))


# -- the relaxed actions of the registered heads (what MADDPG trains through) --------------------------------


def head_for(host: PluginHost, space, latent_dim: int = 8, **head_options) -> ActionHead:
    """The registered head of ``space`` as MADDPG's actors hold it: built by the head plugin, unwrapped."""
    name = {HybridSpace: "hybrid", spaces.Discrete: "discrete", spaces.Box: "gaussian"}[type(space)]
    reg = host.registry.get("action_head", name)
    return reg.factory(reg.validate_config({"plugin": name, **head_options}), space, latent_dim)


HYBRID = HybridSpace(
    types={"move": ["dx", "dy"], "shoot": ["angle"], "idle": []},
    params={"dx": (-1.0, 1.0), "dy": (-2.0, 2.0), "angle": (-math.pi, math.pi)},
)


@pytest.mark.parametrize("squash", [False, True])
def test_hybrid_inactive_params_are_zero_with_zero_grad_and_masks_hold(host, squash):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    head = head_for(host, HYBRID, squash=squash)
    latent = torch.randn(2048, 8) * 3
    mask = random_masks(gen, 2048, 3)
    dist = head(latent, mask)
    dist.type_logits.retain_grad()
    dist.mean.retain_grad()
    act = head.relax(dist, explore=True, noise_std=0.3, generator=gen)
    rep, raw = act.encoding, act.raw
    k = raw[:, 0].long()
    assert mask[torch.arange(2048), k].all()
    owned = torch.as_tensor(HYBRID.param_mask)[k].bool()  # [B, P]
    params_rep, params_raw = rep[:, 3:], raw[:, 1:]
    assert torch.all(params_rep[~owned] == 0) and torch.all(params_raw[~owned] == 0)
    (rep * torch.randn(rep.shape[1], generator=gen)).sum().backward()
    grad_params = dist.mean.grad
    assert torch.all(grad_params[~owned] == 0)
    assert (grad_params[owned] != 0).float().mean() > 0.5  # where the noise did not push it onto a bound
    assert torch.all(dist.type_logits.grad[~mask] == 0)
    outs = head.env_outputs(raw)
    assert torch.all(outs["action_params"][~owned] == 0)
    low, high = torch.as_tensor(HYBRID.low), torch.as_tensor(HYBRID.high)
    assert torch.all(outs["action_params"] >= low) and torch.all(outs["action_params"] <= high)
    assert torch.allclose(head.encode(raw), rep.detach(), atol=1e-5)


@pytest.mark.parametrize("squash", [False, True])
def test_box_actions_bounded_and_env_boundary_matches_the_registered_head(host, squash):
    space = spaces.Box(np.array([0.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    head = head_for(host, space, squash=squash)
    latent = torch.randn(512, 8) * 50  # saturates the bounds
    gen = torch.Generator().manual_seed(0)
    dist = head(latent)
    act = head.relax(dist, noise_std=0.5, generator=gen)
    action = head.env_outputs(act.raw)["action"]
    assert torch.all(action >= torch.as_tensor(space.low)) and torch.all(action <= torch.as_tensor(space.high))
    expected = torch.as_tensor(space.low) + (act.encoding.detach() + 1) / 2 * torch.as_tensor(space.high - space.low)
    assert torch.allclose(action, expected, atol=1e-4)
    assert torch.allclose(head.encode(act.raw), act.encoding.detach(), atol=1e-4)
    # greedy, the relaxed action is the mode: what eval and the exported graph play
    greedy = head.relax(dist)
    assert torch.equal(head.env_outputs(greedy.raw)["action"], head.env_outputs(dist.mode())["action"])
    # clipping passes the gradient straight through, so a mean beyond a bound can still be brought back
    dist.mean.retain_grad()
    head.relax(dist).encoding.sum().backward()
    assert torch.all(dist.mean.grad != 0)


def test_discrete_greedy_relaxed_action_is_the_masked_mode(host):
    head = head_for(host, spaces.Discrete(5))
    latent = torch.randn(256, 8)
    mask = random_masks(torch.Generator().manual_seed(2), 256, 5)
    dist = head(latent, mask)
    greedy = head.relax(dist)
    assert torch.equal(greedy.raw, dist.mode())
    assert mask[torch.arange(256), greedy.raw].all()
    assert torch.equal(greedy.encoding.detach(), torch.nn.functional.one_hot(dist.mode(), 5).float())
    assert torch.all(greedy.params[~mask] == 0)  # the regulariser never sees a masked logit


def test_unbounded_box_dims_are_encoded_as_they_are(host):
    head = head_for(host, spaces.Box(np.array([-1.0, -np.inf], np.float32), np.array([1.0, np.inf], np.float32)))
    raw = torch.tensor([[0.5, 7.0], [3.0, -40.0]])
    assert torch.equal(head.encode(raw), torch.tensor([[0.5, 7.0], [1.0, -40.0]]))
    act = head.relax(head(torch.randn(64, 8) * 30), noise_std=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(act.encoding).all() and torch.allclose(head.encode(act.raw), act.encoding.detach())


# -- soft update and replay buffer -------------------------------------------------------------------------


def test_soft_update_is_polyak_averaging():
    torch.manual_seed(0)
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    soft_update(target, source, tau=0.25)
    for t, s, b in zip(target.parameters(), source.parameters(), before, strict=True):
        assert torch.allclose(t, 0.75 * b + 0.25 * s, atol=1e-7)
    soft_update(target, source, tau=1.0)
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        assert torch.equal(t, s)


def test_replay_buffer_wraps_around_and_round_trips():
    buf = ReplayBuffer(5, {"x": ((2,), torch.float32), "done": ((), torch.bool)})
    buf.add({"x": torch.arange(6.0).reshape(3, 2), "done": torch.tensor([True, False, True])})
    assert (len(buf), buf.pos) == (3, 3)
    buf.add({"x": 10 + torch.arange(8.0).reshape(4, 2), "done": torch.zeros(4, dtype=torch.bool)})
    assert (len(buf), buf.pos) == (5, 2)
    # rows 0-1 were overwritten by the last two rows of the second batch; row 2 is the oldest survivor
    assert buf.data["x"][:, 0].tolist() == [14.0, 16.0, 4.0, 10.0, 12.0]
    sample = buf.sample(1000, torch.Generator().manual_seed(0))
    assert set(sample["x"][:, 0].tolist()) == {14.0, 16.0, 4.0, 10.0, 12.0}
    copy = ReplayBuffer(5, buf.fields)
    copy.load_state_dict(buf.state_dict())
    assert torch.equal(copy.data["x"], buf.data["x"]) and (copy.pos, copy.size) == (2, 5)
    with pytest.raises(KeyError):
        buf.add({"x": torch.zeros(1, 2)})


# -- smoke trainings ------------------------------------------------------------------------------------------

SPREAD = {"plugin": "pettingzoo", "module": "mpe2.simple_spread_v3", "num_envs": 4}
ARENA = {
    "plugin": "pettingzoo",
    "module": "agentkit_envs.games.team_arena",
    "kwargs": {"team_size": 2, "opponent": "scripted"},
    "num_envs": 4,
}
FAST = {"learning_starts": 300, "batch_size": 64, "train_every": 40, "iteration_steps": 400, "buffer_size": 5000}


def build(host, env_section, steps=1200, device="cpu", **algo):
    data = {
        "seed": 3,
        "env": env_section,
        "algorithm": {"plugin": "maddpg", "total_steps": steps, **FAST, **algo},
        "policy": {"hidden_sizes": [32, 32], "activation": "relu"},
    }
    config = load_config(data, host.registry)
    env = host.registry.get("env", config.env.plugin).factory(config.env)
    algo_obj = host.registry.get("algorithm", "maddpg").factory(
        config.algorithm, BuildContext(config, host.registry, env, None, torch.device(device))
    )
    return config, algo_obj


def assert_same_actors(first, second):
    """Every sub-policy of every group has the same weights in both algorithms."""
    for g, grp in first.groups.items():
        for mine, theirs in zip(grp.actors, second.groups[g].actors, strict=True):
            for p, q in zip(mine.parameters(), theirs.parameters(), strict=True):
                assert torch.equal(p, q)


def run_all(algo, total):
    metrics = []
    while algo.steps_done < total:
        metrics.append(algo.iterate())
    return metrics


@pytest.mark.parametrize(
    "env_section",
    [
        {**SPREAD, "kwargs": {"N": 3, "max_cycles": 25, "continuous_actions": False}},
        {**SPREAD, "kwargs": {"N": 3, "max_cycles": 25, "continuous_actions": True}},
        ARENA,
    ],
    ids=["discrete", "continuous", "hybrid-masked"],
)
def test_smoke_training_updates_and_reports(host, env_section):
    _, algo = build(host, env_section, critic_input="state" if env_section is ARENA else "obs")
    try:
        params_before = [p.detach().clone() for grp in algo.groups.values() for p in grp.actor.parameters()]
        metrics = run_all(algo, 1200)
        last = metrics[-1]
        assert algo.steps_done >= 1200 and algo.updates_done > 0
        assert any("charts/episode_return" in m for m in metrics)
        for key in ("losses/critic", "losses/actor"):
            assert math.isfinite(last[key])
        params_after = [p for grp in algo.groups.values() for p in grp.actor.parameters()]
        assert any(not torch.equal(a, b) for a, b in zip(params_before, params_after, strict=True))
        if env_section is ARENA:
            grp = algo.groups["blue"]
            assert grp.spec.mask_dim == 3
            stored = algo.buffer.data["blue/action"][: len(algo.buffer)]
            masks = algo.buffer.data["blue/mask"][: len(algo.buffer)]
            alive = algo.buffer.data["blue/alive"][: len(algo.buffer)]
            chosen = stored[..., :3].argmax(-1)
            allowed = torch.gather(masks, -1, chosen.unsqueeze(-1)).squeeze(-1)
            assert allowed[alive].all(), "a masked action type was taken"
            assert torch.all(stored[~alive] == 0)  # dead agents' actions are zeros
    finally:
        algo.close()


def test_resume_from_state_dict_continues_identically(host):
    env_section = {**SPREAD, "kwargs": {"N": 2, "max_cycles": 10, "continuous_actions": False}}
    _, first = build(host, env_section, checkpoint_buffer=True)
    _, second = build(host, env_section, checkpoint_buffer=True)
    try:
        run_all(first, 600)
        saved = io.BytesIO()
        torch.save(first.state_dict(), saved)  # as the trainer's checkpoints do
        saved.seek(0)
        second.load_state_dict(torch.load(saved, weights_only=True))
        second.training_env.obs = first.training_env.obs  # the env copies' state is not part of a checkpoint
        torch.manual_seed(7)
        a = first.update()
        torch.manual_seed(7)
        b = second.update()
        assert a == b
        assert_same_actors(first, second)
    finally:
        first.close()
        second.close()


# -- policy ensembles ---------------------------------------------------------------------------------------


def test_ensemble_act_sends_each_row_through_its_own_sub_policy(host):
    obs_space, space = spaces.Box(-1.0, 1.0, (6,), np.float32), spaces.Discrete(4)
    config = PolicyConfig(hidden_sizes=[16])
    torch.manual_seed(0)
    actors = [build_actor(config, host.registry, obs_space, space) for _ in range(3)]
    gen = torch.Generator().manual_seed(1)
    x, mask = torch.randn(40, 6, generator=gen), random_masks(gen, 40, 4)
    sub = torch.randint(0, 2, (40,), generator=gen)  # sub-policy 2 plays no row
    act = ensemble_act(actors, (x, None), mask, sub)
    for k in (0, 1):
        rows = sub == k
        want = actors[k].head.relax(actors[k](x[rows], mask[rows]))
        for got, expected in ((act.encoding, want.encoding), (act.raw, want.raw), (act.params, want.params)):
            assert torch.equal(got[rows], expected)
    act.params.square().sum().backward()
    for k in (0, 1):
        assert actors[k].head.logits.weight.grad.abs().sum() > 0
    assert actors[2].head.logits.weight.grad is None


def test_ensemble_draws_a_sub_policy_per_agent_episode_trains_each_and_checkpoints(host):
    env_section = {**SPREAD, "kwargs": {"N": 2, "max_cycles": 10, "continuous_actions": False}}
    _, algo = build(host, env_section, ensemble_size=3)
    _, other = build(host, env_section, ensemble_size=3)
    _, smaller = build(host, env_section, ensemble_size=2)
    try:
        grp = algo.groups["agent"]
        before = [[p.detach().clone() for p in a.parameters()] for a in grp.actors]
        run_all(algo, 600)
        stored = algo.buffer.data["agent/sub_policy"][: len(algo.buffer)]
        assert set(stored.unique().tolist()) == {0, 1, 2}
        # Rows are added env copy by env copy each vector step; every episode lasts max_cycles = 10 steps.
        per_step = stored.reshape(-1, 4, 2)  # [vector step, env copy, agent]
        changed = (per_step[1:] != per_step[:-1]).any(dim=(1, 2)).nonzero().squeeze(1) + 1
        assert len(changed) > 0 and all(t % 10 == 0 for t in changed.tolist()), changed
        for actor, params in zip(grp.actors, before, strict=True):  # every sub-policy learned
            assert any(not torch.equal(p, q) for p, q in zip(actor.parameters(), params, strict=True))

        other.load_state_dict(algo.state_dict())
        assert_same_actors(algo, other)
        assert torch.equal(other._sub_policy["agent"], algo._sub_policy["agent"])
        with pytest.raises(ValueError, match="3 sub-policies in the checkpoint and algorithm.ensemble_size is 2"):
            smaller.load_state_dict(algo.state_dict())
    finally:
        for a in (algo, other, smaller):
            a.close()


def test_checkpoints_from_before_ensembles_still_load(host):
    env_section = {**SPREAD, "kwargs": {"N": 2, "max_cycles": 10, "continuous_actions": False}}
    _, first = build(host, env_section)
    _, second = build(host, env_section)
    try:
        with torch.no_grad():
            for p in first.groups["agent"].actor.parameters():
                p.add_(1.0)
        state = first.state_dict()
        for s in state["groups"].values():  # the format before ensemble_size: one actor, singular keys
            for key in ("actors", "target_actors", "actor_opts"):
                s[key[:-1]] = s.pop(key)[0]
            del s["sub_policy"]
        second.load_state_dict(state)
        assert_same_actors(first, second)
    finally:
        first.close()
        second.close()


def test_crossplay_benchmark_plays_every_sub_policy_or_the_first(host):
    """benchmarks/maddpg_crossplay.py reads sub-policies from the group's ``actors``, outside the plugin
    contract: "all" must give one distinct player per sub-policy, "first" the one eval and export play."""
    from test_benchmarks import BENCHMARKS, load_script

    sub_policy_acts = load_script(BENCHMARKS / "maddpg_crossplay.py").sub_policy_acts
    env_section = {**SPREAD, "kwargs": {"N": 2, "max_cycles": 10, "continuous_actions": False}}
    _, algo = build(host, env_section, ensemble_size=3)
    try:
        (artifact,) = algo.policies()
        obs = np.random.default_rng(0).normal(size=(64, *artifact.observation_space.shape)).astype(np.float32)
        every = [act(obs, None) for act in sub_policy_acts(algo, artifact, "all")]
        (first,) = [act(obs, None) for act in sub_policy_acts(algo, artifact, "first")]
        assert len(every) == 3
        assert np.array_equal(first, every[0])
        assert not np.array_equal(every[0], every[1]) and not np.array_equal(every[0], every[2])
        # An algorithm without an ensemble (MAPPO has no ``groups`` of actors) has one sub-policy.
        assert len(sub_policy_acts(object(), artifact, "all")) == 1
    finally:
        algo.close()


def test_checkpoints_from_before_heads_were_used_as_they_are_are_refused_by_name(host):
    """Actors trained before MADDPG used the registered head as it is had their own ``head.out`` layer; this
    version cannot play them, and says so (the trainer turns the ValueError into an exit-2 CheckpointError)."""
    env_section = {**SPREAD, "kwargs": {"N": 2, "max_cycles": 10, "continuous_actions": False}}
    _, algo = build(host, env_section)
    try:
        state = algo.state_dict()
        for s in state["groups"].values():
            # the old layout: the wrapper's own output layer, the registered head under head.base
            s["actors"] = [{**{k.replace("head.", "head.base.", 1): v for k, v in a.items()},
                            "head.out.weight": torch.zeros(5, 32), "head.out.bias": torch.zeros(5)}
                           for a in s["actors"]]
        with pytest.raises(ValueError, match="trained by a maddpg from before it used the registered action head"):
            algo.load_state_dict(state)
    finally:
        algo.close()


def test_single_agent_env_is_a_config_error(host):
    data = {
        "env": {"plugin": "gymnasium", "id": "CartPole-v1"},
        "algorithm": {"plugin": "maddpg", "total_steps": 100},
    }
    config = load_config(data, host.registry)
    env = host.registry.get("env", "gymnasium").factory(config.env)
    with pytest.raises(ConfigError, match="multi-agent"):
        host.registry.get("algorithm", "maddpg").factory(
            config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu"))
        )


def test_run_device_auto_holds_networks_optimisers_and_replay_samples(host):
    """``run.device`` through ``resolve_device``, as ppo and mappo: ``auto`` is the CPU on a machine without CUDA
    (the GPU where torch finds one, and then this test checks cuda placement); every network, optimiser state,
    replay row and sampled batch lives there, and the run learns."""
    device = resolve_device("auto")
    _, algo = build(host, ARENA, steps=800, device=device, critic_input="state", ensemble_size=2)
    try:
        run_all(algo, 800)
        assert algo.updates_done > 0
        for grp in algo.groups.values():
            modules = [*grp.actors, *grp.target_actors, grp.critic, grp.target_critic]
            tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
            tensors += [v for opt in [*grp.actor_opts, grp.critic_opt] for st in opt.state.values()
                        for v in st.values() if torch.is_tensor(v) and v.dim() > 0]
            assert tensors and {t.device.type for t in tensors} == {device.type}
        assert {t.device.type for t in algo.buffer.data.values()} == {device.type}
        assert {t.device.type for t in algo.buffer.sample(8, algo.generator).values()} == {device.type}
    finally:
        algo.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gives")
def test_run_device_cuda_without_cuda_exits_2_before_building(host, tmp_path):
    from agentkit.trainer import train

    config = load_config({"env": SPREAD, "algorithm": {"plugin": "maddpg", "total_steps": 100},
                          "run": {"device": "cuda", "progress": "none"}}, host.registry)
    with pytest.raises(ConfigError, match=r"run.device: cuda.*finds no CUDA device") as info:
        train(config, host, run_dir=tmp_path / "run")
    assert info.value.exit_code == 2 and not (tmp_path / "run").exists()


def test_train_export_each_group_and_eval_parity(host, tmp_path):
    from agentkit.evaluation import evaluate_onnx, evaluate_run
    from agentkit.exporting import export_run
    from agentkit.trainer import train

    data = {
        "seed": 0,
        "env": {
            "plugin": "pettingzoo", "module": "mpe2.simple_adversary_v3", "num_envs": 2,
            "kwargs": {"N": 2, "max_cycles": 10, "continuous_actions": False},
        },
        "algorithm": {"plugin": "maddpg", "total_steps": 600, **FAST, "learning_starts": 200, "batch_size": 32},
        "policy": {"hidden_sizes": [16]},
        "run": {"progress": "none", "tensorboard": False},
        "plugins": EXTRA,
    }
    config = load_config(data, host.registry)
    run_dir = tmp_path / "run"
    result = train(config, host, run_dir)
    assert result["step"] >= 600 and math.isfinite(result["losses/critic"])
    paths = export_run(run_dir, out=tmp_path / "export")
    assert len(paths) == 2 and all(p.is_file() for p in paths)  # one file per group: adversary, agent
    torch_eval = evaluate_run(run_dir, episodes=4, seed=5)
    onnx_eval = evaluate_onnx(paths[0], episodes=4, seed=5)
    assert torch_eval.returns == pytest.approx(onnx_eval.returns, abs=1e-4)
    assert set(torch_eval.groups) == {"adversary", "agent"}
    # MADDPG's actors are deterministic: --stochastic is refused with the reason, not silently ignored
    from agentkit.errors import UserError

    for call in (lambda: export_run(run_dir, out=tmp_path / "st", stochastic=True),
                 lambda: evaluate_run(run_dir, episodes=1, deterministic=False),
                 lambda: evaluate_onnx(paths[0], episodes=1, deterministic=False)):
        with pytest.raises(UserError, match="deterministic only.*without --stochastic"):
            call()
    assert not (tmp_path / "st").exists()


@pytest.mark.parametrize("ensemble_size", [1, 2])
def test_passes_the_algorithm_checker(host, ensemble_size):
    from agentkit.testing import check_algorithm

    check_algorithm(
        {
            "env": {**ARENA, "num_envs": 2},
            "algorithm": {"plugin": "maddpg", "total_steps": 2000, **FAST, "iteration_steps": 200,
                          "learning_starts": 200, "batch_size": 32, "ensemble_size": ensemble_size},
            "policy": {"hidden_sizes": [16]},
        },
        host,
    )


@pytest.mark.parametrize("algorithm", [
    {"plugin": "maddpg", "total_steps": 400, **FAST, "iteration_steps": 100, "learning_starts": 100, "batch_size": 32},
    {"plugin": "mappo", "total_steps": 64, "num_steps": 8},
])
def test_multi_binary_buttons_train_in_both_multi_agent_algorithms(host, algorithm):
    from agentkit.testing import check_algorithm

    # the env raises unless every action is a MultiBinary(3) value
    check_algorithm({"env": {"plugin": "pettingzoo", "module": "ma_test_envs:buttons_env", "num_envs": 2},
                     "algorithm": algorithm, "policy": {"hidden_sizes": [16]}}, host)
