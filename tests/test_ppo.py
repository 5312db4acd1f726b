"""The ``ppo`` plugin: learning smoke test, masks in the loss, truncation bootstrap, resume, options."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from agentkit_plugins.ppo import PPO

from agentkit.algorithm import BuildContext
from agentkit.config import load_config
from agentkit.host import PluginHost
from agentkit.onpolicy import ValueNormalizer
from agentkit.seeding import seed_everything
from agentkit.testing import check_algorithm

HOST = PluginHost(autoload=False)


def build(env: dict, algorithm: dict, policy: dict | None = None, seed: int = 0) -> PPO:
    data = {"seed": seed, "env": {"plugin": "gymnasium", **env}, "algorithm": {"plugin": "ppo", **algorithm}}
    if policy:
        data["policy"] = policy
    cfg = load_config(data, HOST.registry)
    seed_everything(seed)  # as the trainer does: the initial weights do not depend on the tests run before
    source = HOST.registry.get("env", "gymnasium").factory(cfg.env)
    return HOST.registry.get("algorithm", "ppo").factory(
        cfg.algorithm, BuildContext(cfg, HOST.registry, source, None, torch.device("cpu"))
    )


def cartpole(**algorithm) -> PPO:
    return build({"id": "CartPole-v1", "num_envs": 4}, {"total_steps": 4096, "num_steps": 32, **algorithm})


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(
    "env, algorithm, policy",
    [
        ({"id": "CartPole-v1", "num_envs": 2}, {}, {}),
        ({"id": "Pendulum-v1", "num_envs": 2}, {"normalize_value": True, "popart": True, "normalize_reward": True},
         {"shared_trunk": True}),
        ({"id": "agentkit/Moving-v0", "num_envs": 2}, {"objective": "kl_penalty"}, {}),
    ],
    ids=["discrete", "gaussian-shared-popart", "hybrid-kl"],
)
def test_contract(env, algorithm, policy):
    check_algorithm({"env": {"plugin": "gymnasium", **env},
                     "algorithm": {"plugin": "ppo", "total_steps": 256, "num_steps": 16, "minibatch_size": 32,
                                   **algorithm},
                     "policy": policy}, HOST)


def test_smoke_training_improves_cartpole_return():
    algo = build(
        {"id": "CartPole-v1", "num_envs": 8},
        {"total_steps": 8192, "num_steps": 32, "minibatch_size": 256, "update_epochs": 10, "gamma": 0.98,
         "gae_lambda": 0.8, "learning_rate": 1e-3},
    )
    returns = []
    while algo.steps_done < algo.config.total_steps:
        m = algo.iterate()
        if "charts/episode_return" in m:
            returns.append(m["charts/episode_return"])
        for key in ("losses/policy", "losses/value", "losses/entropy", "losses/approx_kl", "losses/clip_fraction",
                    "losses/explained_variance", "charts/lr_actor", "charts/lr_critic"):
            assert key in m and np.isfinite(m[key]), key
    algo.close()
    early, late = np.mean(returns[:3]), np.mean(returns[-3:])
    assert late > 2 * early and late > 60, (early, late)


def test_masks_drive_sampling_and_the_loss():
    algo = build({"id": "agentkit/Dungeon-v0", "num_envs": 2}, {"total_steps": 1024, "num_steps": 32})
    assert algo.has_mask and algo.storage.masks is not None
    algo.collect()
    st = algo.storage
    assert (~st.masks).any(), "the test env should forbid some actions"
    chosen = st.masks.gather(-1, st.actions.unsqueeze(-1)).squeeze(-1)
    assert chosen.all(), "a masked action was sampled"
    batch = st.batch()
    with torch.no_grad():
        logprob, entropy, _ = algo._evaluate(batch)
        # the loss recomputes the stored log-probs exactly, which it can only do with the stored masks ...
        torch.testing.assert_close(logprob, batch.logprobs, rtol=1e-5, atol=1e-5)
        # ... and without them the log-probs (and entropy) differ
        unmasked = batch.__class__(**{**batch.__dict__, "masks": torch.ones_like(batch.masks)})
        logprob_all, entropy_all, _ = algo._evaluate(unmasked)
    assert not torch.allclose(logprob_all, batch.logprobs)
    assert (entropy_all >= entropy - 1e-6).all() and (entropy_all > entropy + 1e-3).any()
    algo.close()


def test_iteration_metrics_carry_the_envs_episode_info_figures():
    algo = build({"id": "agentkit/Dungeon-v0", "num_envs": 2, "kwargs": {"max_steps": 10}}, {"total_steps": 64, "num_steps": 32})
    metrics = algo.iterate()
    algo.close()
    assert metrics["charts/episodes"] >= 6  # at most 10 steps each, 64 steps
    for key in ("infos/success", "infos/has_key", "infos/door_open", "infos/illegal_action"):
        assert 0.0 <= metrics[key] <= 1.0, key


def test_truncation_bootstraps_from_the_final_observation():
    algo = build({"id": "CartPole-v1", "num_envs": 4, "max_episode_steps": 5}, {"total_steps": 64, "num_steps": 16})
    algo.collect()
    st = algo.storage
    boot = st.bootstrap != 0
    assert boot.any() and bool((st.dones[boot] == 1).all())
    # every 5th step ends a pole that has not fallen by truncation; earlier ends are terminations (no bootstrap)
    assert bool(boot[4::5].sum() > 0) and not bool(boot[0:4].any())
    algo.close()


def test_state_dict_round_trip_gives_an_identical_next_iteration():
    from agentkit.seeding import rng_state, set_rng_state

    a = cartpole(normalize_reward=True, normalize_value=True)
    a.iterate()
    state = roundtrip(a.state_dict())
    assert "rng" not in state  # the global RNGs are the trainer's to save (agentkit.seeding)
    rng = rng_state()
    b = cartpole(normalize_reward=True, normalize_value=True)
    # torch's and numpy's RNGs are global: restored right before each instance iterates, as the trainer does
    set_rng_state(rng)
    a.load_state_dict(state)
    ma = a.iterate()
    set_rng_state(rng)
    b.load_state_dict(state)
    assert b.steps_done == 128
    mb = b.iterate()
    assert ma == mb  # no wall-clock figure: the trainer times iterations (time/*)
    for pa, pb in zip(a.actor.parameters(), b.actor.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    a.close(), b.close()


def test_same_seed_same_metrics():
    from agentkit.seeding import seed_everything

    def run():
        seed_everything(0)  # what the trainer does before it builds anything; the algorithm seeds nothing global
        algo = cartpole()
        out = [algo.iterate() for _ in range(2)]
        algo.close()
        return out

    assert run() == run()


def test_target_kl_stops_the_epoch_loop():
    m = cartpole(target_kl=1e-7, update_epochs=8, minibatch_size=32).iterate()
    assert m["charts/update_epochs"] < 8
    assert cartpole(update_epochs=3).iterate()["charts/update_epochs"] == 3


def test_kl_penalty_beta_adapts():
    algo = cartpole(objective="kl_penalty", kl_beta=1.0, kl_target=1e-9, learning_rate=1e-2)
    assert algo.iterate()["charts/kl_beta"] == 2.0
    algo = cartpole(objective="kl_penalty", kl_beta=1.0, kl_target=10.0)
    assert algo.iterate()["charts/kl_beta"] == 0.5


def test_linear_schedules_and_param_groups():
    algo = build(
        {"id": "CartPole-v1", "num_envs": 4},
        {"total_steps": 512, "num_steps": 32, "learning_rate": 1e-3, "lr_schedule": "linear", "shared_lr": 5e-4,
         "critic_eps": 1e-7, "clip_schedule": "linear", "ent_coef": 0.05, "ent_coef_final": 0.001},
        {"shared_trunk": True},
    )
    groups = {g["name"]: g for g in algo.optimizer.param_groups}
    assert set(groups) == {"actor", "critic", "shared"}
    assert groups["critic"]["eps"] == 1e-7 and groups["actor"]["eps"] == 1e-5
    assert algo.critic.trunk is algo.actor.trunk
    first, second = algo.iterate(), algo.iterate()
    assert first["charts/lr_actor"] == 1e-3 and first["charts/lr_shared"] == 5e-4
    assert second["charts/lr_actor"] == pytest.approx(1e-3 * 0.75)
    assert second["charts/clip_range"] == pytest.approx(0.2 * 0.75)
    assert first["charts/ent_coef"] == 0.05
    assert second["charts/ent_coef"] == pytest.approx(0.05 + (0.001 - 0.05) * 0.25)
    algo.close()


def test_observation_normaliser_learns_from_rollouts():
    algo = cartpole()
    assert algo.actor.normalizer.enabled
    assert float(algo.actor.normalizer.mean.abs().sum()) == 0.0
    algo.iterate()
    assert float(algo.actor.normalizer.count) == pytest.approx(128, abs=1e-3)
    torch.testing.assert_close(algo.actor.normalizer.mean, algo.critic.normalizer.mean)
    expected = algo.storage.obs.reshape(-1, 4).double().mean(0)
    torch.testing.assert_close(algo.actor.normalizer.mean, expected, rtol=1e-3, atol=1e-5)
    algo.close()


def test_popart_preserves_denormalised_outputs():
    layer = torch.nn.Linear(3, 1)
    norm = ValueNormalizer(layer)
    x = torch.randn(10, 3)
    with torch.no_grad():
        before = norm.denormalize(layer(x))
        norm.update(torch.randn(100) * 50 + 20)
        after = norm.denormalize(layer(x))
    assert float(norm.mean) == pytest.approx(20, abs=10)
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-4)


def test_multi_agent_env_is_refused():
    from agentkit.errors import ConfigError

    class FakeMulti:
        multi_agent = True
        env_id = "spread"

    cfg = load_config({"env": {"plugin": "gymnasium", "id": "CartPole-v1"},
                       "algorithm": {"plugin": "ppo", "total_steps": 10}}, HOST.registry)
    with pytest.raises(ConfigError, match="mappo"):
        PPO(cfg.algorithm, BuildContext(cfg, HOST.registry, FakeMulti(), None, torch.device("cpu")))


def test_fused_adam_matches_torch_adam_and_round_trips():
    from agentkit.optim import FusedAdam

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)) for _ in range(3)]
    nets[1].load_state_dict(nets[0].state_dict())
    nets[2].load_state_dict(nets[0].state_dict())
    groups = lambda net: [{"params": list(net[0].parameters()), "lr": 1e-2, "eps": 1e-5},  # noqa: E731
                          {"params": list(net[2].parameters()), "lr": 3e-3, "eps": 1e-7}]
    ours, ref = FusedAdam(groups(nets[0])), torch.optim.Adam(groups(nets[1]))
    x = torch.randn(16, 3)
    for _ in range(5):
        for net, opt in ((nets[0], ours), (nets[1], ref)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    state = roundtrip(ours.state_dict())
    again = FusedAdam(groups(nets[2]))
    nets[2].load_state_dict(nets[0].state_dict())
    again.load_state_dict(state)
    for net, opt in ((nets[0], ours), (nets[2], again)):
        opt.zero_grad()
        net(x).square().sum().backward()
        opt.step()
    for p, q in zip(nets[0].parameters(), nets[2].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_clip_grad_norm_matches_torch():
    """Bit for bit torch's clip_grad_norm_, over gradients of many norms (below and above max_norm) and odd
    max_norms: the scale factor is computed on numbers, and must round as torch's tensor ops do."""
    from agentkit.optim import clip_grad_norm

    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    for trial in range(300):
        x = torch.randn(8, 5) * 10 ** torch.empty(()).uniform_(-3, 2)
        max_norm = [0.5, 0.3, 1.7, 10.0][trial % 4]
        for net in (a, b):
            net.zero_grad(set_to_none=True)
            net(x).square().sum().backward()
        ours = clip_grad_norm(list(a.parameters()), max_norm)
        ref = torch.nn.utils.clip_grad_norm_(list(b.parameters()), max_norm)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    assert float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in a.parameters()]))) <= 10.0 + 1e-5


@pytest.mark.parametrize(
    "example", ["cartpole-ppo", "acrobot-ppo", "pendulum-ppo", "lunarlander-ppo", "lunarlander-continuous-ppo"]
)
def test_example_configs_run(example):
    from pathlib import Path

    from agentkit.config import apply_overrides, read_yaml

    path = Path(__file__).resolve().parents[1] / "examples" / f"{example}.yaml"
    data = apply_overrides(read_yaml(path), ["env.num_envs=2", "algorithm.num_steps=8", "algorithm.total_steps=16",
                                                   "algorithm.minibatch_size=16"])
    cfg = load_config(data, HOST.registry)
    source = HOST.registry.get("env", cfg.env.plugin).factory(cfg.env)
    algo = HOST.registry.get("algorithm", "ppo").factory(
        cfg.algorithm, BuildContext(cfg, HOST.registry, source, None, torch.device("cpu"))
    )
    metrics = algo.iterate()
    assert algo.steps_done == 16 and np.isfinite(metrics["losses/value"])
    algo.close()


class ButtonsEnv(gym.Env):
    """Press exactly the buttons lit in the observation (MultiBinary(3) actions): reward = the share of the
    three buttons in the right state; 8 steps per episode. The env asserts each action is in its space."""

    observation_space = gym.spaces.Box(0, 1, (3,), np.float32)
    action_space = gym.spaces.MultiBinary(3)

    def _lights(self):
        self.lit = self.np_random.integers(0, 2, 3).astype(np.int8)
        return self.lit.astype(np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._lights(), {}

    def step(self, action):
        assert self.action_space.contains(action), f"not a MultiBinary(3) action: {action!r}"
        reward = float(np.mean(action == self.lit))
        self.t += 1
        return self._lights(), reward, False, self.t >= 8, {}


gym.register("agentkit-test/Buttons-v0", entry_point=ButtonsEnv)


def test_multi_binary_buttons_are_learned():
    algo = build({"id": "agentkit-test/Buttons-v0", "num_envs": 8},
                 {"total_steps": 16384, "num_steps": 32, "minibatch_size": 64, "update_epochs": 4,
                  "learning_rate": 3e-3, "gamma": 0.0})
    assert algo.policies()[0].actor.head.nvec == [2, 2, 2]  # policy.head: auto picks multi_discrete
    returns = []
    while algo.steps_done < algo.config.total_steps:
        metrics = algo.iterate()
        if "charts/episode_return" in metrics:
            returns.append(metrics["charts/episode_return"])
    algo.close()
    assert returns[0] < 5.0 and np.mean(returns[-3:]) > 7.5, returns  # random play scores 4 of 8, perfect 8
