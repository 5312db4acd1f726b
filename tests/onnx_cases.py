"""Actors for every registered head, built directly (no training), shared by the ONNX and runtime tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agentkit.algorithm import PolicyArtifact
from agentkit.config import PolicyConfig
from agentkit.host import PluginHost
from agentkit.policy import build_actor
from agentkit.spaces import HybridSpace, discrete_branches


@dataclass
class Case:
    id: str
    head: str | dict
    action_space: spaces.Space
    obs_dim: int = 6
    agents: tuple[str, ...] = ("agent",)
    agent_id_dim: int = 0
    uses_mask: bool = True  # False: an env that never supplies masks (no action_mask input)


HYBRID = HybridSpace(
    types={"accelerate": ["magnitude"], "turn": ["angle", "speed"], "brake": []},
    params={"magnitude": (0.0, 1.0), "angle": (-3.14, 3.14), "speed": (-2.0, 5.0)},
)

CASES = [
    Case("discrete", "discrete", spaces.Discrete(5)),
    Case("discrete-start", "discrete", spaces.Discrete(4, start=-1)),
    Case("multi_discrete", "multi_discrete", spaces.MultiDiscrete([3, 4, 2])),
    Case("gaussian-clip", "gaussian", spaces.Box(-1.0, 1.0, (3,), np.float32)),
    Case("gaussian-squash", {"plugin": "gaussian", "squash": True, "sigma": "state_conditioned"},
         spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 5.0], np.float32))),
    Case("gaussian-2d-box", {"plugin": "gaussian", "sigma": "fixed", "init_std": 0.5},
         spaces.Box(-3.0, 3.0, (2, 2), np.float32)),
    Case("hybrid", "hybrid", HYBRID),
    Case("hybrid-squash", {"plugin": "hybrid", "squash": True}, HYBRID),
    Case("discrete-nomask", "discrete", spaces.Discrete(5), uses_mask=False),
    Case("multi_discrete-nomask", "multi_discrete", spaces.MultiDiscrete([3, 4, 2]), uses_mask=False),
    Case("hybrid-nomask", "hybrid", HYBRID, uses_mask=False),
    Case("shared-discrete", "discrete", spaces.Discrete(3), agents=("a_0", "a_1", "a_2"), agent_id_dim=3),
    Case("multi_binary", "multi_discrete", spaces.MultiBinary(4)),  # tests index the cases above: add at the end
]

_HOST: PluginHost | None = None


def host() -> PluginHost:
    global _HOST
    if _HOST is None:
        _HOST = PluginHost(autoload=False)
    return _HOST


def make_artifact(case: Case, seed: int = 0) -> PolicyArtifact:
    """An untrained actor for ``case`` whose normaliser holds non-trivial statistics."""
    registry = host().registry
    head = case.head if isinstance(case.head, dict) else {"plugin": case.head}
    if head["plugin"] not in registry.names("action_head"):
        pytest.skip(f"action head {head['plugin']!r} is not registered (yet)")
    config = PolicyConfig(head=registry.get("action_head", head["plugin"]).validate_config(head))
    torch.manual_seed(seed)
    obs_space = spaces.Box(-np.inf, np.inf, (case.obs_dim,), np.float32)
    actor = build_actor(config, registry, obs_space, case.action_space, id_dim=case.agent_id_dim)
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(256, case.obs_dim + case.agent_id_dim, generator=gen) * 2.0 + 0.5
    actor.normalizer.update(sample)
    # untrained output layers are near-uniform (gain 0.01); scale them so that actions vary with the input
    with torch.no_grad():
        for module in actor.head.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(100.0)
    return PolicyArtifact(
        name="policy" if case.agent_id_dim == 0 else "team",
        actor=actor,
        observation_space=obs_space,
        action_space=case.action_space,
        agents=list(case.agents),
        uses_mask=case.uses_mask,
    )


def torch_env_actions(artifact: PolicyArtifact, obs: np.ndarray, mask: np.ndarray | None,
                      noise: np.ndarray | None = None, agent_onehot: np.ndarray | None = None):
    """What the trainer hands the env: actor → mode (or sample from noise) → env_outputs → numpy → to_env."""
    actor = artifact.actor
    x = torch.as_tensor(obs, dtype=torch.float32)
    ids = None if agent_onehot is None else torch.as_tensor(agent_onehot)  # rows of any agents: given
    with torch.no_grad():
        dist = actor(x, None if mask is None else torch.as_tensor(mask > 0.5), ids)
        action = dist.mode() if noise is None else dist.sample_from_noise(torch.as_tensor(noise))
        outs = {k: v.numpy() for k, v in actor.head.env_outputs(action).items()}
    return actor.head.to_env(outs)


def random_masks(artifact: PolicyArtifact, n: int, rng: np.random.Generator) -> np.ndarray | None:
    head = artifact.actor.head
    if not head.mask_dim or not artifact.uses_mask:
        return None
    mask = rng.random((n, head.mask_dim)) < 0.5
    branches = discrete_branches(artifact.action_space)
    segments = branches[0] if branches is not None else [head.mask_dim]
    start = 0
    for width in segments:
        mask[np.arange(n), start + rng.integers(0, width, n)] = True
        start += width
    return mask
