"""Encoder loading and batching; weights come from a package or MODELS_DIR, never a hub."""
