"""The algorithm contract: what the trainer drives and what eval and export read.

An algorithm plugin's factory is called as ``factory(config, context)`` with its validated config model and
a ``BuildContext``; it returns an object following ``Algorithm``. The trainer owns the run (run dir,
logging, checkpoints, progress, hooks); the algorithm owns collection and learning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import gymnasium as gym
import torch

from agentkit.config import RunConfig
from agentkit.environment import EnvSource
from agentkit.errors import ConfigError
from agentkit.policy import Actor
from agentkit.registry import Registry


def resolve_device(setting: str) -> torch.device:
    """The torch device ``run.device`` names: the one rule every algorithm's networks and storage follow.

    ``cpu``; ``cuda`` (a ConfigError, exit 2, when torch finds no CUDA device); ``auto``: cuda when torch
    finds one, else cpu.
    """
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda" or setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if setting == "auto":
            return torch.device("cpu")
        raise ConfigError(
            f"run.device: cuda, but this torch ({torch.__version__}) finds no CUDA device "
            "(torch.cuda.is_available() is False); set run.device: cpu, or auto to use a GPU only where there is one."
        )
    raise ConfigError(f"run.device: {setting!r} is not a device; use cpu, cuda or auto.")


@dataclass
class BuildContext:
    """Everything an algorithm factory may need besides its own config."""

    config: RunConfig
    registry: Registry
    env: EnvSource
    run_dir: Path | None
    device: torch.device  # resolve_device(config.run.device): networks, storage and optimiser state live here


@dataclass
class PolicyArtifact:
    """One deployable policy: what eval plays and exporters write (one per multi-agent policy group).

    ``actor(obs, mask=None, agent_id=None)`` returns an ``ActionDistribution``; ``obs`` is ``[B,
    *observation_space.shape]`` in ``observation_space.dtype`` (uint8 images stay uint8) and its scaling and
    normalisation are inside ``actor``. ``agent_id_dim`` (the actor's ``id_dim``) > 0: the actor reads a
    one-hot agent id ``[B, agent_id_dim]``, which it builds itself for env-major rows (``Actor``); exports take
    it as their ``agent_id`` input.
    ``uses_mask`` says whether the actor is given action masks (the env supplies them and the head takes them).
    ``observation_fields``: how the env's raw observation is flattened into ``observation_space``
    (``agentkit.observations``; None for a Box observation); exports carry it for the engine.
    """

    name: str
    actor: Actor
    observation_space: gym.spaces.Box
    action_space: gym.Space
    agents: list[str]
    deterministic_only: bool = False  # e.g. MADDPG's deterministic actors
    # False when the env never supplies action masks: the actor is then always called with mask=None, and
    # exports have no ``action_mask`` input even if the head could take one.
    uses_mask: bool = True
    observation_fields: list[dict[str, Any]] | None = None
    # turn-based games: {"turn_based": True, "seats": [...every agent...], "observation": "own", "self_play":
    # bool}: the policy plays any seat it is given, on that seat's own observation (env.observe(seat)).
    game: dict[str, Any] | None = None
    # the env's name as its source gives it (``env_id``; a bridged game's declared name): exporters record it as
    # the env id when the env config names none (agentkit.exporting fills it in)
    env_id: str | None = None

    @property
    def agent_id_dim(self) -> int:
        """The width of the one-hot agent id the actor reads (0: none): the actor's own ``id_dim``."""
        return self.actor.id_dim


class Algorithm(Protocol):
    """What an algorithm factory returns.

    Building one must not open its training envs: eval and export build the algorithm only to load a
    checkpoint and read ``policies()``. Networks are built from the env source's description (its spaces;
    for a multi-agent source ``groups`` and ``state_dim``, ``MultiAgentEnvSource``), and the vector env is
    opened when collection first needs it (``TrainingEnv``).
    """

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


class _VecEnvLike(Protocol):
    """What ``TrainingEnv`` calls on a vector env (``VecEnv`` and ``MultiAgentVecEnv`` both have it)."""

    def reset(self, seed: int | None = None) -> Any: ...

    def close(self) -> None: ...


E = TypeVar("E", bound=_VecEnvLike)  # a VecEnv or a MultiAgentVecEnv
Obs = TypeVar("Obs")  # what its reset gives: an Observation, or one per group


class TrainingEnv(Generic[E, Obs]):
    """An algorithm's training vector env, opened on first use, and the observation collection goes on from.

    ``open_env`` makes the vector env (``source.make_vec(num_envs, seed)``); nothing is opened until
    ``observation()`` is first called, so an algorithm built for eval or export starts no env copies and no
    worker processes. ``restart(seed)`` makes the next ``observation()`` come from ``reset(seed=seed)`` (a
    resumed run: env episodes are not checkpointed); collection stores each step's result in ``obs``.
    """

    def __init__(self, open_env: Callable[[], E], reset_seed: int | None = None):
        self._open_env = open_env
        self.env: E | None = None
        self.reset_seed = reset_seed
        self.obs: Obs | None = None  # None: reset before collecting

    @property
    def opened(self) -> bool:
        return self.env is not None

    def vec(self) -> E:
        """The vector env, opened now if it is not yet."""
        if self.env is None:
            self.env = self._open_env()
        return self.env

    def observation(self) -> Obs:
        """The observation collection continues from: the env's first reset after opening or ``restart``."""
        if self.obs is None:
            self.obs = self.vec().reset(seed=self.reset_seed)
        return self.obs

    def restart(self, seed: int | None) -> None:
        self.reset_seed, self.obs = seed, None

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


class Progress:
    """Training progress in [0, 1] for schedules that move linearly over ``algorithm.total_steps`` (a learning
    rate decaying to 0, an entropy coefficient moving to its final value).

    A fresh run: ``steps_done / total_steps``. A run resumed with a bigger ``total_steps`` (extended) carries
    on from the progress of its last iteration and reaches 1 at the new total: a decaying learning rate
    continues smoothly down from the value it last had, instead of jumping back up to where the new total
    would put it (docs/runs.md, "Stopping and resuming").
    """

    def __init__(self, total_steps: int):
        self.total_steps = int(total_steps)
        self.origin_step = 0  # the schedule runs from (origin_step, origin) to (total_steps, 1)
        self.origin = 0.0
        self.last = 0.0  # the progress of the latest iteration

    def at(self, steps_done: int) -> float:
        """The progress at ``steps_done`` (remembered as the latest iteration's)."""
        span = self.total_steps - self.origin_step
        fraction = (steps_done - self.origin_step) / span if span > 0 else 1.0
        self.last = min(1.0, self.origin + (1.0 - self.origin) * max(fraction, 0.0))
        return self.last

    def state_dict(self) -> dict[str, Any]:
        return {"total_steps": self.total_steps, "origin_step": self.origin_step, "origin": self.origin,
                "last": self.last}

    def load_state_dict(self, state: dict[str, Any] | None, steps_done: int) -> None:
        """Restore a ``state_dict``; when it was saved with another ``total_steps``, re-anchor the schedule at
        ``steps_done`` and the progress last used. ``None`` (a checkpoint from before this existed): the
        schedule runs over the current total."""
        if state is None:
            return
        last = float(state["last"])
        if int(state["total_steps"]) == self.total_steps:
            self.origin_step, self.origin, self.last = int(state["origin_step"]), float(state["origin"]), last
        else:
            self.origin_step, self.origin, self.last = int(steps_done), last, last
