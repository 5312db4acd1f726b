"""agentkit: a Python SDK for game AI.

Train game agents (PPO, MAPPO, MADDPG) with hybrid and masked actions, extend everything through
pluggy plugins, and export trained policies to ONNX for game engines.
"""

__version__ = "0.1.0"

from agentkit.hookspecs import hookimpl  # noqa: E402  (re-exported for plugin authors)

__all__ = ["__version__", "hookimpl"]
