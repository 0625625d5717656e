"""Celery ingest workers: turn accepted posts into vectors and stored post records."""
