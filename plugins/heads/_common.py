"""Small helpers shared by the built-in heads."""

from __future__ import annotations

from typing import Any

from agentkit.errors import ConfigError


def require_space(action_space: Any, space_type: type | tuple[type, ...], head: str) -> None:
    """Raise ConfigError unless ``action_space`` is a ``space_type`` (or one of them, or a subclass)."""
    if not isinstance(action_space, space_type):
        types = space_type if isinstance(space_type, tuple) else (space_type,)
        raise ConfigError(
            f"policy.head: the {head!r} head needs a {' or '.join(t.__name__ for t in types)} action space, but the env's "
            f"action space is {action_space}. Use policy.head: auto, or name a head that supports this space."
        )
