"""Built-in action-head plugins."""
