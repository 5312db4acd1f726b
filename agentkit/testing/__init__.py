"""Checkers a plugin author calls from their own tests, failing with the probable cause in the message.

    from agentkit.testing import check_action_head, check_env_plugin, check_algorithm
"""
from agentkit.testing.algorithms import AlgorithmCheckError, check_algorithm  # noqa: F401
from agentkit.testing.envs import check_env_plugin, check_game  # noqa: F401
from agentkit.testing.heads import HeadCheckError, check_action_head  # noqa: F401
