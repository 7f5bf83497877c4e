"""Test helpers: tiny random models built locally (see `emocli.testing.tiny`)."""
