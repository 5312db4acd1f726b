"""The ``ppo`` algorithm plugin (being written)."""
