"""The algorithm contract: what the trainer drives and what eval and export read.

An algorithm plugin's factory is called as ``factory(config, context)`` with its validated config model and
a ``BuildContext``; it returns an object following ``Algorithm``. The trainer owns the run (run dir,
logging, checkpoints, progress, hooks); the algorithm owns collection and learning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import torch

from agentkit.config import RunConfig
from agentkit.environment import EnvSource
from agentkit.registry import Registry


@dataclass
class BuildContext:
    """Everything an algorithm factory may need besides its own config."""

    config: RunConfig
    registry: Registry
    env: EnvSource
    run_dir: Path | None
    device: torch.device


@dataclass
class PolicyArtifact:
    """One deployable policy: what eval plays and exporters write (one per multi-agent policy group).

    ``actor(obs, mask=None)`` returns an ``ActionDistribution``; obs normalisation is inside ``actor``.
    ``agent_id_dim`` > 0 means the actor expects a one-hot agent id appended to each observation.
    ``uses_mask`` says whether the actor is given action masks (the env supplies them and the head takes them).
    ``observation_fields``: how the env's raw observation is flattened into ``observation_space``
    (``agentkit.observations``; None for a Box observation); exports carry it for the engine.
    """

    name: str
    actor: torch.nn.Module
    observation_space: gym.spaces.Box
    action_space: gym.Space
    agents: list[str]
    agent_id_dim: int = 0
    deterministic_only: bool = False  # e.g. MADDPG's deterministic actors
    # False when the env never supplies action masks: the actor is then always called with mask=None, and
    # exports have no ``action_mask`` input even if the head could take one.
    uses_mask: bool = True
    observation_fields: list[dict[str, Any]] | None = None


class Algorithm(Protocol):
    steps_done: int  # env steps consumed so far (the unit of algorithm.total_steps)

    def iterate(self) -> dict[str, float]:
        """Run one iteration (collect, then learn) and return its metrics (namespaced names → floats)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimiser, normalisers, RNG, counters (tensors and plain
        Python data only: it is saved with torch.save and loaded with weights_only=True)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def policies(self) -> list[PolicyArtifact]:
        """The deployable policies (one for single-agent runs)."""
        ...

    def close(self) -> None: ...
