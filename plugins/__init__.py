"""Built-in algorithm and action-head plugins of agentkit (installed as ``agentkit_plugins``)."""
