"""Batch layer: models trained from the interaction log off the serving path."""
