"""Access to Redis (features, timelines, counters) and the vector index (Qdrant)."""
