"""Games shipped with agentkit."""
