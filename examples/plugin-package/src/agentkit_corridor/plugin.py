"""The agentkit plugin for Corridor, found through the entry point in pyproject.toml.

It implements two hooks:

- ``agentkit_register_envs``: the ``corridor`` env plugin, configured in a run config as
  ``env: {plugin: corridor, length: 8, num_envs: 8, solved_return: 0.9}``. It reuses agentkit's
  gymnasium adapter, so vector envs, masks and rendering come for free.
- ``agentkit_iteration_end``: stops the run (the trainer saves a checkpoint and ends cleanly) once the mean
  episode return reaches ``env.solved_return``.
"""

from __future__ import annotations

import gymnasium as gym
from pydantic import Field

import agentkit
from agentkit.config import EnvConfig
from agentkit_corridor.game import ENV_ID

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="agentkit_corridor.game:CorridorEnv")


class CorridorConfig(EnvConfig):
    """The ``env:`` section of a Corridor run; unknown keys and bad values are rejected by agentkit."""

    length: int = Field(8, ge=2, le=64, description="Number of cells in the corridor.")
    max_steps: int = Field(50, ge=1, description="Episodes are truncated after this many steps.")
    solved_return: float | None = Field(
        0.9, description="Stop training once the mean episode return reaches this (null: never stop early)."
    )


def make_corridor(config: CorridorConfig):
    """The env factory: agentkit calls it with the validated ``env:`` section."""
    from agentkit_envs.gymnasium_env import GymnasiumEnvConfig, GymnasiumSource

    return GymnasiumSource(
        GymnasiumEnvConfig(
            plugin="gymnasium",
            id=ENV_ID,
            num_envs=config.num_envs,
            kwargs={"length": config.length},
            max_episode_steps=config.max_steps,
        )
    )


@agentkit.hookimpl
def agentkit_register_envs(register):
    register("corridor", make_corridor, CorridorConfig, "Corridor: walk to the coin (masked Discrete(3)).")


@agentkit.hookimpl
def agentkit_iteration_end(run, iteration, step, metrics):
    env = run.config.env
    if not isinstance(env, CorridorConfig) or env.solved_return is None:
        return None  # another game's run, or early stopping turned off
    mean_return = metrics.get("charts/episode_return")
    if mean_return is not None and mean_return >= env.solved_return:
        metrics["corridor/solved"] = 1.0  # logged with the run's other metrics
        return True
    return None
