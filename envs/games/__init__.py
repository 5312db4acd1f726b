"""Games shipped with agentkit: pure Python + numpy, seeded, rendered to rgb_array with numpy.

Importing this package registers the single-agent games as gymnasium ids:

    import agentkit_envs.games  # noqa: F401  (registers the ids)
    env = gymnasium.make("agentkit/Moving-v0")      # hybrid actions
    env = gymnasium.make("agentkit/Dungeon-v0")     # masked discrete actions

or, without the import, ``gymnasium.make("agentkit_envs.games:agentkit/Moving-v0")`` (gymnasium 1.x has no
entry-point auto-loading, so this is how any gymnasium tool finds them). The multi-agent team game is a
PettingZoo parallel env: ``agentkit_envs.games.team_arena.parallel_env(**kwargs)``.
"""

import gymnasium as gym

GAME_IDS = ("agentkit/Moving-v0", "agentkit/Dungeon-v0")

_ENTRY_POINTS = {
    "agentkit/Moving-v0": "agentkit_envs.games.moving:MovingEnv",
    "agentkit/Dungeon-v0": "agentkit_envs.games.dungeon:DungeonEnv",
}

for _id, _entry in _ENTRY_POINTS.items():
    if _id not in gym.registry:
        # The games enforce their own time limits (truncated=True), so no TimeLimit wrapper is added.
        gym.register(id=_id, entry_point=_entry)
