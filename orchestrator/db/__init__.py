"""Persistence: models, the engine, and the one function that changes a state."""
