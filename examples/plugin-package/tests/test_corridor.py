"""The example package's own tests, the way a plugin author tests a plugin: gymnasium's env checker for the
game, agentkit's checkers for the env plugin and the action head, and the hook called directly.

    pip install -e examples/plugin-package && pytest examples/plugin-package/tests
"""

from types import SimpleNamespace

import gymnasium as gym
from agentkit_corridor import ENV_ID
from agentkit_corridor.plugin import CorridorConfig, agentkit_iteration_end
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from agentkit.host import PluginHost
from agentkit.testing import check_action_head, check_env_plugin


def test_game_passes_gymnasium_checker():
    check_env(gym.make(ENV_ID, length=5).unwrapped)


def test_env_plugin_passes_agentkit_checker():
    # -p loads the plugin module even where entry points are turned off
    check_env_plugin("corridor", {"length": 6}, host=PluginHost(modules=["agentkit_corridor.plugin"]))


def test_hook_stops_only_solved_corridor_runs():
    run = SimpleNamespace(config=SimpleNamespace(env=CorridorConfig(plugin="corridor", solved_return=0.9)))
    metrics = {"charts/episode_return": 0.95}
    assert agentkit_iteration_end(run, 3, 3000, metrics) is True and metrics["corridor/solved"] == 1.0
    assert agentkit_iteration_end(run, 3, 3000, {"charts/episode_return": 0.5}) is None
    other_game = SimpleNamespace(config=SimpleNamespace(env=SimpleNamespace(plugin="gymnasium")))
    assert agentkit_iteration_end(other_game, 3, 3000, metrics) is None


def test_head_passes_agentkit_checker():
    # every check the built-in heads pass: masks, log-prob and entropy against torch.distributions, sampling
    # from noise, the relaxed action maddpg trains through, and an ONNX trace
    registry = PluginHost(modules=["agentkit_corridor.head"]).registry
    for space in (spaces.Discrete(3), spaces.Discrete(5, start=-2)):
        check_action_head(registry.get("action_head", "epsilon_discrete"), space)
