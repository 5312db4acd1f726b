"""Environment plugins and the games agentkit ships (installed as ``agentkit_envs``)."""
