"""Access to Redis (features, post records, counters), the in-process post catalogue and the vector index."""
