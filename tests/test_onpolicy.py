"""The on-policy core (``agentkit.onpolicy``): one collector for ppo and mappo, its truncation bootstrap, the
mask rule, ``run.device``, seeding only in the trainer, and the options renamed to one spelling."""

from __future__ import annotations

import csv
import shutil
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from agentkit.algorithm import BuildContext, TrainingEnv, resolve_device
from agentkit.config import PolicyConfig, RunConfig, load_config
from agentkit.environment import GroupSpec, Observation, Transition
from agentkit.errors import ConfigError
from agentkit.host import PluginHost
from agentkit.onpolicy import (
    Collector,
    PolicyGroup,
    SingleAgentEnv,
    _mask_rule,
    clipped_surrogate,
    single_agent_group,
)
from agentkit.optim import FusedAdam, load_optimizer_state
from agentkit.policy import build_actor, build_critic

HOST = PluginHost(autoload=False)


def build(algorithm: str, env: dict, policy: dict | None = None, **options):
    data = {"env": env, "algorithm": {"plugin": algorithm, "total_steps": 1024, **options}, "policy": policy or {},
            "run": {"progress": "none", "tensorboard": False, "checkpoint_every_steps": 0}}
    cfg = load_config(data, HOST.registry)
    source = HOST.registry.get("env", cfg.env.plugin).factory(cfg.env)
    return HOST.registry.get("algorithm", algorithm).factory(
        cfg.algorithm, BuildContext(cfg, HOST.registry, source, None, torch.device("cpu")))


def test_ppo_and_mappo_collect_with_the_one_collector():
    ppo = build("ppo", {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2}, num_steps=8, minibatch_size=16)
    mappo = build("mappo", {"plugin": "pettingzoo", "module": "ma_test_envs", "num_envs": 2}, num_steps=8)
    assert type(ppo.collector) is type(mappo.collector) is Collector
    assert [type(g) for g in ppo.collector.groups + mappo.collector.groups] == [PolicyGroup] * 2
    for algo in (ppo, mappo):
        assert "rng" not in algo.state_dict()  # the global RNGs are the trainer's (agentkit.seeding)
        algo.close()


@pytest.mark.parametrize("algorithm, env, policy, options", [
    ("ppo", {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2}, {}, {"minibatch_size": 6}),  # parts: 3, 3, 2 steps
    ("ppo", {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2}, {"shared_trunk": True}, {"minibatch_size": 4}),
    ("mappo", {"plugin": "pettingzoo", "module": "ma_test_envs", "num_envs": 2}, {}, {}),  # a critic of the state
    ("mappo", {"plugin": "pettingzoo", "module": "ma_test_envs", "num_envs": 2}, {}, {"centralised": False}),
])
def test_the_stored_values_are_the_critics_values_of_each_stored_step(algorithm, env, policy, options):
    """A critic of its own is run once per rollout (``PolicyGroup.rollout_values``), a shared trunk's value
    comes with each action: either way each step's stored value is V(that step's stored critic input)."""
    algo = build(algorithm, env, policy, num_steps=8, **options)
    algo.collector.collect()
    for group in algo.collector.groups:
        st = group.storage
        inputs = st.critic_obs if st.critic_obs is not None else st.obs
        with torch.no_grad():
            expected = torch.stack([group.value(inputs[t], None if st.extras is None else st.extras[t])
                                    for t in range(st.num_steps)])
        torch.testing.assert_close(st.values, expected)
        assert st.values.abs().sum() > 0
    algo.close()


class _TimeLimitedVec:
    """Two env copies whose episodes last 3 steps; copy 0's end is a time limit (truncated), copy 1's a
    termination that is also at the time limit (terminated and truncated). ``final_obs`` is a known vector."""

    num_envs = 2
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)
    FINAL = np.array([[0.5, -0.5, 0.25], [0.9, 0.9, 0.9]], np.float32)

    def __init__(self):
        self.t = 0

    def _obs(self) -> Observation:
        return Observation(np.full((2, 3), 0.1 * (self.t % 3), np.float32))

    def reset(self, seed=None):
        self.t = 0
        return self._obs()

    def step(self, actions):
        self.t += 1
        end = self.t % 3 == 0
        return Transition(self._obs(), np.ones(2, np.float32), np.array([False, end]), np.array([end, end]),
                          final_obs=self.FINAL.copy())

    def close(self):
        pass


def test_the_collector_bootstraps_a_truncation_once_from_the_final_observation_and_never_a_termination():
    cfg = load_config({"env": {"plugin": "gymnasium", "id": "CartPole-v1"},
                       "algorithm": {"plugin": "ppo", "total_steps": 64, "num_steps": 6}}, HOST.registry)
    space, actions = _TimeLimitedVec.observation_space, _TimeLimitedVec.action_space
    actor = build_actor(PolicyConfig(), HOST.registry, space, actions)
    critic = build_critic(PolicyConfig(), HOST.registry, space)
    group = PolicyGroup("policy", single_agent_group(space, actions, None), [0], actor, critic, cfg.algorithm,
                        num_envs=2, device=torch.device("cpu"))
    env = TrainingEnv(lambda: SingleAgentEnv(_TimeLimitedVec()))
    Collector([group], env, num_steps=6, gamma=0.9, gae_lambda=1.0).collect()
    st = group.storage
    with torch.no_grad():
        v_final = group.value(torch.from_numpy(_TimeLimitedVec.FINAL[:, None]), None)[0, 0]
    ends = [2, 5]
    torch.testing.assert_close(st.bootstrap[ends, 0, 0], v_final.expand(2))
    assert not st.bootstrap[:, 1].any(), "a terminated step is bootstrapped"
    assert not st.bootstrap[[0, 1, 3, 4]].any()
    assert bool((st.dones[ends] == 1).all()) and not st.dones[[0, 1, 3, 4]].any()
    # the truncated copy's return at its last step is r + gamma * V(final obs); the terminated one's is r
    torch.testing.assert_close(st.returns[5, 0, 0], 1 + 0.9 * v_final)
    torch.testing.assert_close(st.returns[5, 1, 0], torch.tensor(1.0))
    env.close()


def test_one_mask_rule_a_head_without_masks_under_an_env_that_gives_them_is_refused():
    spec = GroupSpec("team", ["a", "b"], gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4), mask_dim=4)
    with pytest.raises(ConfigError, match="takes none; pick a head that takes masks"):
        _mask_rule(spec, SimpleNamespace(mask_dim=0), env_masks=True)
    with pytest.raises(ConfigError, match="width 4 but its head .* takes 5"):
        _mask_rule(spec, SimpleNamespace(mask_dim=5), env_masks=True)
    assert _mask_rule(spec, SimpleNamespace(mask_dim=4), env_masks=True)
    assert not _mask_rule(spec, SimpleNamespace(mask_dim=4), env_masks=False)  # no masks: none are passed
    # the same rule in both algorithms: a masked env with a head that takes no masks
    for algorithm, env in [("ppo", {"plugin": "gymnasium", "id": "agentkit/Dungeon-v0"}),
                           ("mappo", {"plugin": "pettingzoo", "module": "ma_test_envs"})]:
        data = {"env": env, "algorithm": {"plugin": algorithm, "total_steps": 64},
                "policy": {"head": {"plugin": "gaussian"}}}
        with pytest.raises(ConfigError):
            cfg = load_config(data, HOST.registry)
            source = HOST.registry.get("env", cfg.env.plugin).factory(cfg.env)
            HOST.registry.get("algorithm", algorithm).factory(
                cfg.algorithm, BuildContext(cfg, HOST.registry, source, None, torch.device("cpu")))


def test_run_device_cpu_auto_and_cuda_without_cuda():
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda" and resolve_device("cuda").type == "cuda"
        return
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"run.device: cuda.*finds no CUDA device.*run.device: cpu"):
        resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gives")
def test_train_with_run_device_cuda_and_no_cuda_exits_2_and_leaves_nothing(run_cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("env: {plugin: gymnasium, id: CartPole-v1}\nalgorithm: {plugin: ppo, total_steps: 64}\n"
                      "run: {device: cuda, progress: none}\n")
    proc = run_cli("train", config, "--run-dir", tmp_path / "run")
    assert proc.returncode == 2, proc.stderr
    assert "run.device: cuda" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_renamed_options_are_refused_naming_the_new_spelling_and_old_run_dirs_still_load():
    old = {"env": {"plugin": "pettingzoo", "module": "ma_test_envs"},
           "algorithm": {"plugin": "mappo", "total_steps": 64, "clip_coef": 0.1, "anneal_lr": True,
                         "clip_vloss": True, "norm_adv": False, "value_norm": False}}
    with pytest.raises(ConfigError) as err:
        load_config(old, HOST.registry)
    for was, now in [("clip_coef", "clip_range"), ("anneal_lr", "lr_schedule"), ("clip_vloss", "value_clip_range"),
                     ("norm_adv", "normalize_advantages"), ("value_norm", "normalize_value")]:
        assert f"algorithm.{was}: renamed algorithm.{now}" in str(err.value)
    saved = load_config(old, HOST.registry, saved_run=True).algorithm
    assert (saved.clip_range, saved.lr_schedule, saved.value_clip_range) == (0.1, "linear", 0.1)
    assert (saved.normalize_advantages, saved.normalize_value) == (False, False)
    off = load_config({**old, "algorithm": {"plugin": "mappo", "total_steps": 64, "clip_vloss": False,
                                            "anneal_lr": False}}, HOST.registry, saved_run=True).algorithm
    assert (off.value_clip_range, off.lr_schedule, off.clip_range) == (None, "constant", 0.2)
    assert isinstance(load_config(old, HOST.registry, saved_run=True), RunConfig)


def test_an_optimiser_saved_as_one_parameter_group_loads_onto_the_actor_and_critic_groups():
    """MAPPO checkpoints from before the core had one Adam group over actor then critic parameters."""
    algo = build("mappo", {"plugin": "pettingzoo", "module": "ma_test_envs", "num_envs": 2}, num_steps=8)
    group = algo.groups[0]
    legacy = list(dict.fromkeys([*group.actor.parameters(), *group.critic.parameters()]))
    old = FusedAdam([{"params": legacy, "lr": 7e-4, "eps": 1e-5}])
    for p in legacy:
        p.grad = torch.randn_like(p)
    old.step()
    load_optimizer_state(group.optimizer, old.state_dict(), legacy_order=legacy)
    for p in legacy:
        torch.testing.assert_close(group.optimizer.state[p]["exp_avg"], old.state[p]["exp_avg"])
    assert [g["name"] for g in group.optimizer.param_groups] == ["actor", "critic"]
    algo.close()


def _returns(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [(r["step"], r["losses/value"], r.get("charts/episode_return")) for r in rows]


def test_a_resumed_run_continues_identically_each_time(tmp_path):
    """Seeding and RNG state are the trainer's alone: resuming the same checkpoint twice gives the same run
    (before, each algorithm also restored its own copy of the RNGs, which the trainer then overwrote)."""
    from agentkit.trainer import train

    data = {"seed": 3, "env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2},
            "algorithm": {"plugin": "ppo", "total_steps": 128, "num_steps": 32, "minibatch_size": 32,
                          "update_epochs": 2},
            "run": {"progress": "none", "tensorboard": False, "checkpoint_every_steps": 0}}
    train(load_config(data, HOST.registry), HOST, run_dir=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    longer = load_config({**data, "algorithm": {**data["algorithm"], "total_steps": 256}}, HOST.registry)
    train(longer, HOST, run_dir=tmp_path / "a", resume=True)
    train(longer, HOST, run_dir=tmp_path / "b", resume=True)
    a, b = _returns(tmp_path / "a"), _returns(tmp_path / "b")
    assert len(a) == 4 and a == b  # 64 env steps per iteration


def test_ppo_update_reports_the_mean_over_minibatches_of_each_minibatchs_kl_and_clip_fraction():
    """The KL and clip-fraction figures are reduced once after the epochs; with minibatches of different sizes
    (10 entries in 4 + 4 + 2) they are still the mean of each minibatch's own mean."""
    from agentkit.onpolicy import UpdateSettings, ppo_update
    from agentkit.storage import Batch

    n = 10
    x = torch.linspace(-1, 1, n)
    batch = Batch(obs=x[:, None], critic_obs=x[:, None], actions=torch.zeros(n), logprobs=torch.zeros(n),
                  values=torch.zeros(n), advantages=torch.ones(n), returns=torch.zeros(n), masks=None)
    w = torch.nn.Parameter(torch.tensor(0.5))
    frozen = FusedAdam([{"params": [w], "lr": 0.0, "eps": 1e-5}])  # lr 0: every minibatch sees the same w

    def evaluate(mb):
        return mb.logprobs + w * mb.obs[:, 0], torch.zeros(len(mb)) + 0 * w, w * mb.obs[:, 0]

    hp = UpdateSettings(clip_range=0.2, update_epochs=1, minibatch_size=4, vf_coef=0.5, ent_coef=0.0)
    generator = torch.Generator().manual_seed(0)
    metrics = ppo_update(batch, evaluate, frozen, [w], hp, generator)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    kls, clips = [], []
    for part in perm.split(4):
        r = 0.5 * x[part]
        kls.append(float(((r.exp() - 1) - r).mean()))
        clips.append(float(((r.exp() - 1).abs() > 0.2).float().mean()))
    assert metrics["losses/approx_kl"] == pytest.approx(np.mean(kls), rel=1e-6)
    assert metrics["losses/clip_fraction"] == pytest.approx(np.mean(clips), rel=1e-6)
    assert 0 < metrics["losses/clip_fraction"] < 1 and metrics["charts/update_epochs"] == 1


def test_the_one_clamp_surrogate_is_the_clipped_one_in_value_and_gradient():
    """``clipped_surrogate``: -A clamp(r, low, high) is PPO's -min(A r, A clip(r, 1-e, 1+e)), its value and its
    gradient, for advantages of both signs and ratios inside and outside the clip range."""
    gen = torch.Generator().manual_seed(0)
    adv = torch.randn(512, generator=gen)
    adv[:3] = torch.tensor([0.0, -0.0, 2.0])
    logratio = (torch.rand(512, generator=gen) - 0.5).requires_grad_()  # ratios 0.61 .. 1.65
    neg_adv, low, high = clipped_surrogate(adv, 0.2)
    one_clamp = (neg_adv * logratio.exp().clamp(low, high)).mean()
    (grad_one,) = torch.autograd.grad(one_clamp, logratio)
    ratio = logratio.exp()
    clipped = -torch.min(adv * ratio, adv * torch.clamp(ratio, 0.8, 1.2)).mean()
    (grad_clipped,) = torch.autograd.grad(clipped, logratio)
    assert one_clamp.item() == clipped.item()
    assert torch.equal(grad_one, grad_clipped)
    assert 0 < int((grad_one == 0).sum()) < 512  # some entries were clipped, some not
