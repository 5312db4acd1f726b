"""Action heads: the contract checker on every registered head, plus head-specific behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from agentkit_plugins.heads.discrete import DiscreteConfig, DiscreteDistribution, DiscreteHead
from agentkit_plugins.heads.gaussian import GaussianConfig, GaussianDistribution, GaussianHead
from agentkit_plugins.heads.hybrid import HybridConfig, HybridDistribution, HybridHead
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentkit.config import PolicyConfig
from agentkit.errors import ConfigError, EmptyMaskError, InvalidInputError
from agentkit.heads import MASKED_LOGIT
from agentkit.host import PluginHost
from agentkit.policy import build_actor
from agentkit.spaces import HybridSpace
from agentkit.testing import HeadCheckError, check_action_head
from agentkit.testing import heads as checks

torch.set_num_threads(1)

MOVING = HybridSpace(
    types={"accelerate": ["magnitude"], "turn": ["angle"], "brake": []},
    params={"magnitude": (0.0, 1.0), "angle": (-3.14, 3.14)},
)
PLATFORM = HybridSpace(
    types={"run": ["dx"], "hop": ["dx2", "dy"], "leap": ["dist"], "wait": []},
    params={"dx": (-1.0, 1.0), "dx2": (0.0, 2.0), "dy": (-5.0, -1.0), "dist": (10.0, 30.0)},
)
SPACES = [
    spaces.Discrete(1),
    spaces.Discrete(6, start=-2),
    spaces.MultiDiscrete([3, 2, 5], start=[0, 1, -1]),
    spaces.MultiBinary(4),
    spaces.Box(-2.0, 2.0, (3,), np.float32),
    spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, np.inf], np.float32), dtype=np.float32),
    spaces.Box(-1.0, 1.0, (2, 2), np.float32),
    MOVING,
    PLATFORM,
]


@pytest.fixture(scope="module")
def registry():
    return PluginHost(autoload=False).registry


def test_builtin_heads_are_registered(registry):
    assert {"discrete", "multi_discrete", "gaussian", "hybrid"} <= set(registry.names("action_head"))


@pytest.mark.parametrize(
    ("space", "name"),
    [
        (spaces.Discrete(3), "discrete"),
        (spaces.MultiDiscrete([2, 3]), "multi_discrete"),
        (spaces.MultiBinary(3), "multi_discrete"),
        (spaces.Box(-1, 1, (2,)), "gaussian"),
        (MOVING, "hybrid"),
    ],
)
def test_auto_head_picks_by_space(registry, space, name):
    assert registry.auto_head(space).name == name


def test_every_registered_head_passes_the_checker(registry):
    """Each registered head, on each of the sample spaces it declares support for (ONNX check included)."""
    checked = []
    for name in registry.names("action_head"):
        reg = registry.get("action_head", name)
        supports = getattr(reg.config_model, "supports", None)
        for space in SPACES:
            if supports is not None and supports(space):
                check_action_head(reg, space, onnx=name != "gaussian" or space.shape == (3,))
                checked.append((name, str(space)))
    assert {n for n, _ in checked} >= {"discrete", "multi_discrete", "gaussian", "hybrid"}


@pytest.mark.parametrize("sigma", ["fixed", "independent", "state_conditioned"])
@pytest.mark.parametrize("squash", [False, True])
def test_gaussian_options_pass_the_checker(registry, sigma, squash):
    config = GaussianConfig(plugin="gaussian", sigma=sigma, squash=squash, init_std=0.7)
    check_action_head(registry.get("action_head", "gaussian"), spaces.Box(-2, 3, (2,)), config, onnx=squash)


@pytest.mark.parametrize("sigma", ["fixed", "state_conditioned"])
def test_hybrid_sigma_options_pass_the_checker(registry, sigma):
    config = HybridConfig(plugin="hybrid", sigma=sigma, squash=sigma == "fixed")
    check_action_head(registry.get("action_head", "hybrid"), PLATFORM, config, onnx=False)


# -- property-based: random spaces and masks -----------------------------------------------------------------

FAST = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(n=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_discrete_random_sizes(registry, n, seed):
    check_action_head(registry.get("action_head", "discrete"), spaces.Discrete(n), seed=seed, onnx=False)


@FAST
@given(nvec=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_multi_discrete_random_sizes(registry, nvec, seed):
    check_action_head(
        registry.get("action_head", "multi_discrete"), spaces.MultiDiscrete(nvec), seed=seed, onnx=False
    )


@st.composite
def hybrid_spaces(draw):
    num_params = draw(st.integers(1, 5))
    num_types = draw(st.integers(1, 4))
    owner = draw(st.lists(st.integers(0, num_types - 1), min_size=num_params, max_size=num_params))
    types = {f"t{k}": [f"p{p}" for p in range(num_params) if owner[p] == k] for k in range(num_types)}
    lows = draw(st.lists(st.floats(-10, 10), min_size=num_params, max_size=num_params))
    widths = draw(st.lists(st.floats(0.1, 10), min_size=num_params, max_size=num_params))
    return HybridSpace(
        types, {f"p{p}": (lo, lo + w) for p, (lo, w) in enumerate(zip(lows, widths, strict=True))}
    )


@FAST
@given(space=hybrid_spaces(), seed=st.integers(0, 2**16))
def test_hybrid_random_structures(registry, space, seed):
    check_action_head(registry.get("action_head", "hybrid"), space, seed=seed, onnx=False)


# -- the checker catches broken heads ------------------------------------------------------------------------


class _MeanEntropyGaussian(GaussianHead):
    def forward(self, latent, mask=None):
        dist = super().forward(latent, mask)
        dist.entropy = lambda: GaussianDistribution.entropy(dist) / self.dims  # mean over dims: wrong
        return dist


class _SamplingIgnoresMask(DiscreteHead):
    def forward(self, latent, mask=None):
        dist = super().forward(latent, mask)
        unmasked = DiscreteDistribution(self.logits(latent), None)
        dist.sample = unmasked.sample
        return dist


class _NoEmptyCheck(DiscreteHead):
    def forward(self, latent, mask=None):
        logits = self.logits(latent)
        mask = mask.bool()
        return DiscreteDistribution(torch.where(mask, logits, torch.full_like(logits, -1e8)), mask)


class _AllParamsHybrid(HybridHead):
    def forward(self, latent, mask=None):
        dist = super().forward(latent, mask)
        from agentkit_plugins.heads.gaussian import normal_log_prob

        def log_prob(action):  # sums every parameter, active or not: wrong
            return dist.cat.log_prob(dist.head.split_type(action)) + normal_log_prob(
                action[:, 1:], dist.mean, dist.log_std
            ).sum(-1)

        dist.log_prob = log_prob
        return dist


class _ChooseSkipsTheBoundary(HybridHead):
    def choose(self, dist, *, deterministic=False, noise=None):
        k, params = dist.parts(deterministic, noise)
        return dist.join(k, params), {"action_type": k, "action_params": params}  # unbounded: wrong


@pytest.mark.parametrize(
    ("factory", "config", "space", "check"),
    [
        (_MeanEntropyGaussian, GaussianConfig(plugin="gaussian"), spaces.Box(-1, 1, (3,)), "reference"),
        (_SamplingIgnoresMask, DiscreteConfig(plugin="discrete"), spaces.Discrete(5), "masks"),
        (_NoEmptyCheck, DiscreteConfig(plugin="discrete"), spaces.Discrete(5), "empty mask"),
        (_AllParamsHybrid, HybridConfig(plugin="hybrid"), MOVING, "reference"),
        (_ChooseSkipsTheBoundary, HybridConfig(plugin="hybrid"), MOVING, "choose"),
    ],
)
def test_checker_catches_broken_heads(factory, config, space, check):
    with pytest.raises(HeadCheckError, match=rf"\[{check}\]"):
        check_action_head(factory, space, config, onnx=False)


def test_checker_catches_nonzero_inactive_gradient():
    head = _AllParamsHybrid(HybridConfig(plugin="hybrid"), MOVING, 16)
    with pytest.raises(HeadCheckError, match="inactive parameter's mean"):
        checks.check_inactive_param_gradient(head, MOVING, 16, torch.Generator().manual_seed(0))


# -- masks ---------------------------------------------------------------------------------------------------


def _head(registry, name, space, latent_dim=8, **options):
    reg = registry.get("action_head", name)
    return reg.factory(reg.config_model(plugin=name, **options), space, latent_dim)


def test_masked_entropy_counts_only_allowed_actions(registry):
    head = _head(registry, "discrete", spaces.Discrete(6))
    torch.nn.init.zeros_(head.logits.weight)
    torch.nn.init.zeros_(head.logits.bias)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    dist = head(torch.randn(3, 8), mask)
    assert torch.allclose(dist.entropy(), torch.tensor([math.log(3), 0.0, math.log(6)]), atol=1e-6)
    assert dist.log_prob(torch.tensor([4, 1, 5])).exp()[:2].eq(0).all()


def test_float_masks_work_like_bool_masks(registry):
    head = _head(registry, "discrete", spaces.Discrete(4))
    latent = torch.randn(5, 8)
    bool_mask = torch.tensor([[1, 0, 1, 0]] * 5, dtype=torch.bool)
    a, b = head(latent, bool_mask), head(latent, bool_mask.float())
    assert torch.equal(a.logits, b.logits)


def test_empty_mask_error_names_the_rows(registry):
    head = _head(registry, "discrete", spaces.Discrete(3))
    mask = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    with pytest.raises(EmptyMaskError, match=r"row\(s\) \[1, 3\]") as info:
        head(torch.randn(4, 8), mask)
    assert info.value.rows == [1, 3]


def test_multi_discrete_empty_branch_names_row_and_branch(registry):
    head = _head(registry, "multi_discrete", spaces.MultiDiscrete([2, 3]))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    with pytest.raises(EmptyMaskError, match=r"\(1, 1\)") as info:
        head(torch.randn(2, 8), mask)
    assert info.value.rows == [1]


def test_multi_discrete_mask_of_wrong_width_is_rejected(registry):
    head = _head(registry, "multi_discrete", spaces.MultiDiscrete([2, 3]))
    with pytest.raises(EmptyMaskError, match="expected"):
        head(torch.randn(2, 8), torch.ones(2, 4, dtype=torch.bool))


def test_gaussian_rejects_a_mask(registry):
    head = _head(registry, "gaussian", spaces.Box(-1, 1, (2,)))
    with pytest.raises(InvalidInputError, match="takes no action mask"):
        head(torch.randn(2, 8), torch.ones(2, 3))


# -- gaussian ------------------------------------------------------------------------------------------------


def test_fixed_sigma_decays_linearly_and_is_checkpointed(registry):
    head = _head(registry, "gaussian", spaces.Box(-1, 1, (2,)), sigma="fixed", init_std=1.0, final_std=0.2)
    assert not any(p is head.params.log_std for p in head.parameters())  # fixed: not learned
    head.set_progress(0.5)
    assert torch.allclose(head(torch.randn(3, 8)).std, torch.full((3, 2), 0.6))
    head.set_progress(2.0)  # clamped to the end of the schedule
    assert torch.allclose(head(torch.randn(3, 8)).std, torch.full((3, 2), 0.2))
    assert "params.log_std" in head.state_dict()


def test_independent_sigma_is_learned_and_state_independent(registry):
    head = _head(registry, "gaussian", spaces.Box(-1, 1, (2,)), init_std=0.5)
    dist = head(torch.randn(4, 8))
    assert torch.allclose(dist.std, torch.full((4, 2), 0.5))
    dist.log_prob(dist.sample()).sum().backward()
    assert head.params.log_std.grad is not None and head.params.log_std.grad.abs().sum() > 0


def test_state_conditioned_sigma_depends_on_the_latent(registry):
    head = _head(registry, "gaussian", spaces.Box(-1, 1, (2,)), sigma="state_conditioned", init_std=0.5)
    std = head(torch.randn(64, 8) * 10).std
    assert std.std() > 0
    assert torch.allclose(std.mean(), torch.tensor(0.5), atol=0.1)


def test_log_std_is_clamped(registry):
    head = _head(registry, "gaussian", spaces.Box(-1, 1, (2,)), log_std_min=-1.0, log_std_max=0.5)
    with torch.no_grad():
        head.params.log_std.fill_(10.0)
    assert torch.allclose(head(torch.randn(2, 8)).std, torch.full((2, 2), math.exp(0.5)))


def test_clipping_happens_only_at_the_env_boundary(registry):
    head = _head(registry, "gaussian", spaces.Box(-1, 2, (2,)))
    raw = torch.tensor([[5.0, -5.0], [0.5, 1.5]])
    assert torch.equal(head.env_outputs(raw)["action"], torch.tensor([[2.0, -1.0], [0.5, 1.5]]))
    dist = head(torch.randn(2, 8))
    assert torch.isfinite(dist.log_prob(raw)).all()  # the unclipped raw action keeps its own log-prob


def test_squash_maps_into_bounds(registry):
    head = _head(registry, "gaussian", spaces.Box(-1, 3, (1,)), squash=True)
    out = head.env_outputs(torch.tensor([[0.0], [100.0], [-100.0]]))["action"]
    assert torch.allclose(out, torch.tensor([[1.0], [3.0], [-1.0]]))


def test_squash_needs_finite_bounds(registry):
    with pytest.raises(ConfigError, match="finite bounds"):
        _head(registry, "gaussian", spaces.Box(-np.inf, np.inf, (2,)), squash=True)


def test_infinite_bounds_are_null_in_the_action_spec(registry):
    head = _head(
        registry,
        "gaussian",
        spaces.Box(np.array([-1.0], np.float32), np.array([np.inf], np.float32), dtype=np.float32),
    )
    assert head.action_spec()["high"] == [None]


@pytest.mark.parametrize(
    "options",
    [{"log_std_min": 1.0, "log_std_max": 0.0}, {"final_std": 0.1}, {"init_std": 100.0}, {"sigma": "learned"}],
)
def test_gaussian_options_are_validated(options):
    with pytest.raises(ValidationError):
        GaussianConfig(plugin="gaussian", **options)


# -- hybrid --------------------------------------------------------------------------------------------------


def test_hybrid_entropy_is_the_joint_entropy(registry):
    """H(type) + Σ_k p(k) H(params of k) equals a Monte Carlo estimate of -E[log p(k, x_k)]."""
    torch.manual_seed(0)
    head = _head(registry, "hybrid", PLATFORM, init_std=0.6)
    latent = torch.randn(1, 8).expand(40_000, -1)
    mask = torch.tensor([[1, 1, 0, 1]], dtype=torch.bool).expand(40_000, -1)
    dist = head(latent, mask)
    with torch.no_grad():
        estimate = -dist.log_prob(dist.sample()).mean()
    assert abs(dist.entropy()[0].item() - estimate.item()) < 0.03


def test_hybrid_env_outputs_zero_inactive_and_clip_active(registry):
    head = _head(registry, "hybrid", MOVING)
    raw = torch.tensor([[0.0, 7.0, 0.0], [1.0, 0.0, -9.0], [2.0, 0.0, 0.0]])
    out = head.env_outputs(raw)
    assert out["action_type"].tolist() == [0, 1, 2]
    assert torch.allclose(out["action_params"], torch.tensor([[1.0, 0.0], [0.0, -3.14], [0.0, 0.0]]))
    types, params = head.to_env({k: v.numpy() for k, v in out.items()})
    assert types.dtype == np.int64 and params.dtype == np.float32


def test_hybrid_type_mask_is_honoured(registry):
    head = _head(registry, "hybrid", MOVING)
    mask = torch.tensor([[0, 0, 1]] * 100, dtype=torch.bool)
    dist = head(torch.randn(100, 8), mask)
    action = dist.sample()
    assert action[:, 0].eq(2).all() and action[:, 1:].eq(0).all()
    assert torch.allclose(dist.entropy(), torch.zeros(100), atol=1e-6)  # brake: no choice, no params


@pytest.mark.parametrize(
    ("name", "space"),
    [
        ("hybrid", spaces.Discrete(3)),
        ("gaussian", MOVING),
        ("discrete", spaces.Box(-1, 1, (2,))),
        ("multi_discrete", spaces.Discrete(2)),
    ],
)
def test_factories_reject_other_spaces(registry, name, space):
    with pytest.raises(ConfigError, match=name):
        _head(registry, name, space)


# -- the actor assembles any head ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "space", [spaces.Discrete(4), spaces.MultiDiscrete([2, 3]), spaces.Box(-1, 1, (2,)), MOVING]
)
def test_build_actor_with_auto_head(registry, space):
    obs_space = spaces.Box(-1, 1, (5,), np.float32)
    actor = build_actor(PolicyConfig(hidden_sizes=[16]), registry, obs_space, space)
    dist = actor(torch.randn(3, 5))
    action = dist.sample()
    outputs = actor.head.env_outputs(action)
    env_action = actor.head.to_env({k: v.detach().numpy() for k, v in outputs.items()})
    from gymnasium.vector.utils import batch_space

    assert batch_space(space, 3).contains(env_action)


def test_build_actor_with_named_head_options(registry):
    config = PolicyConfig(head=GaussianConfig(plugin="gaussian", sigma="state_conditioned"))
    actor = build_actor(config, registry, spaces.Box(-1, 1, (5,)), spaces.Box(-1, 1, (2,)))
    assert actor.head.config.sigma == "state_conditioned"
    assert isinstance(actor(torch.randn(2, 5)), GaussianDistribution)
    assert isinstance(HybridDistribution, type)


# -- multi_discrete end to end: PPO on a masked MultiDiscrete env --------------------------------------------


class _Knobs:
    """Set two knobs (3 and 4 positions) to the target shown in the observation; one wrong position per knob
    is masked each step, and picking it is counted (it must never happen)."""

    masked_picks = 0

    def __new__(cls, **kwargs):
        import gymnasium as gym

        class Knobs(gym.Env):
            action_space = spaces.MultiDiscrete([3, 4])
            observation_space = spaces.Dict(
                {
                    "observation": spaces.Box(0.0, 1.0, (7,), np.float32),
                    "action_mask": spaces.MultiBinary(7),
                }
            )

            def _obs(self):
                self.target = self.np_random.integers(0, [3, 4])
                obs = np.zeros(7, np.float32)
                obs[self.target[0]] = obs[3 + self.target[1]] = 1.0
                self.mask = np.ones(7, np.int8)
                for offset, n, t in ((0, 3, self.target[0]), (3, 4, self.target[1])):
                    self.mask[offset + (t + 1 + self.np_random.integers(0, n - 1)) % n] = 0
                return {"observation": obs, "action_mask": self.mask.copy()}

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                self.steps = 0
                return self._obs(), {}

            def step(self, action):
                if not self.mask[action[0]] or not self.mask[3 + action[1]]:
                    _Knobs.masked_picks += 1
                reward = float(np.sum(np.asarray(action) == self.target))
                self.steps += 1
                return self._obs(), reward, False, self.steps >= 8, {}

        return Knobs()


def test_multi_discrete_trains_with_ppo_and_masks():
    import gymnasium as gym

    from agentkit.algorithm import BuildContext
    from agentkit.config import load_config

    if "agentkit_test/Knobs-v0" not in gym.registry:
        gym.register("agentkit_test/Knobs-v0", entry_point=_Knobs)
    host = PluginHost(autoload=False)
    cfg = load_config(
        {
            "seed": 0,
            "env": {"plugin": "gymnasium", "id": "agentkit_test/Knobs-v0", "num_envs": 4},
            "algorithm": {
                "plugin": "ppo",
                "total_steps": 2048,
                "num_steps": 64,
                "minibatch_size": 64,
                "learning_rate": 0.003,
            },
            "policy": {"hidden_sizes": [32]},
        },
        host.registry,
    )
    source = host.registry.get("env", "gymnasium").factory(cfg.env)
    algo = host.registry.get("algorithm", "ppo").factory(
        cfg.algorithm, BuildContext(cfg, host.registry, source, None, torch.device("cpu"))
    )
    assert algo.policies()[0].actor.head.__class__.__name__ == "MultiDiscreteHead"
    _Knobs.masked_picks = 0
    returns = []
    while algo.steps_done < cfg.algorithm.total_steps:
        metrics = algo.iterate()
        if "charts/episode_return" in metrics:
            returns.append(metrics["charts/episode_return"])
    algo.close()
    assert _Knobs.masked_picks == 0
    # random allowed actions score 8 * (1/2 + 1/3) ≈ 6.7 per episode; a policy that reads the target, 16
    assert returns[-1] > returns[0] and returns[-1] > 9.5, returns


@pytest.mark.parametrize("squash", [False, True])
def test_hybrid_choose_from_parts_equals_env_outputs_of_the_raw_tensor(registry, squash):
    """What choose() maps from the drawn parts (what the ONNX graph is traced from) is exactly what parsing
    the float raw tensor gives (what a stored action takes), for the mode, a sample and a noise sample."""
    torch.manual_seed(1)
    head = _head(registry, "hybrid", PLATFORM, squash=squash)  # dy in [-5, -1]: bounding 0 does not give 0
    mask = torch.rand(300, 4) < 0.6
    mask[:, 3] = True
    dist = head(torch.randn(300, 8) * 3, mask)
    for kwargs in ({"deterministic": True}, {}, {"noise": torch.rand(300, head.noise_dim)}):
        raw, fast = head.choose(dist, **kwargs)
        parsed = head.env_outputs(raw)
        assert torch.equal(fast["action_type"], parsed["action_type"])
        assert torch.equal(fast["action_params"], parsed["action_params"])
        assert torch.equal(raw[:, 0].long(), fast["action_type"])


def test_multi_discrete_padded_logits_hold_the_layer_logits_and_masked_padding(registry):
    head = _head(registry, "multi_discrete", spaces.MultiDiscrete([3, 4, 2]))
    latent = torch.randn(64, 8) * 3
    with torch.no_grad():
        flat, padded = head.logits(latent), head.padded_logits(latent)
    assert padded.shape == (64, 3, 4)
    offset = 0
    for i, n in enumerate([3, 4, 2]):
        torch.testing.assert_close(padded[:, i, :n], flat[:, offset:offset + n], rtol=0, atol=1e-6)
        assert (padded[:, i, n:] == MASKED_LOGIT).all()
        offset += n
    assert (head(latent).mode() < torch.tensor([3, 4, 2])).all()  # the padding is never chosen


def test_multi_binary_buttons_are_two_value_branches_in_the_envs_dtype(registry):
    head = _head(registry, "multi_discrete", spaces.MultiBinary(3))
    assert head.nvec == [2, 2, 2] and head.mask_dim == 6 and head.action_spec()["start"] == [0, 0, 0]
    dist = head(torch.zeros(4, 8), torch.tensor([[0, 1, 1, 0, 1, 1]] * 4))  # button 0 must be pressed, 1 released
    _, outputs = head.choose(dist, deterministic=False)
    action = head.to_env({k: v.numpy() for k, v in outputs.items()})
    assert action.dtype == np.int8 and action.shape == (4, 3)
    assert (action[:, 0] == 1).all() and (action[:, 1] == 0).all()
    assert all(spaces.MultiBinary(3).contains(row) for row in action)
    with pytest.raises(ConfigError, match=r"1-D MultiDiscrete or MultiBinary"):
        _head(registry, "multi_discrete", spaces.MultiBinary((2, 2)))
