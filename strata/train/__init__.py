"""Training: the Trainer wrapper and what trains on it (levels, soft prompts)."""
