"""The candidate pipeline behind POST /feed."""
