"""Real-time social feed engine: HTTP API, candidate pipeline, stores and event handling."""
