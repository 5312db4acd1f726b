"""The Corridor game and its agentkit plugin (an example third-party plugin package)."""

from agentkit_corridor.game import ENV_ID, CorridorEnv

__all__ = ["ENV_ID", "CorridorEnv"]
