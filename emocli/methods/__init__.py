"""One package per method: its recipe schema, model, training step and inference."""
