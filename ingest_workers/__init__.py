"""Celery ingest workers: turn accepted posts into vectors, stored records and timeline entries."""
