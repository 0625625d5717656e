"""Structured logging (structlog, JSON lines) shared by every process."""

from __future__ import annotations

import logging
from typing import Any

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def configure_logging(level: str = "INFO") -> None:
    """JSON logs at `level` (LOG_LEVEL) for structlog and the standard library."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )


def log_retried_failure(logger: Any, event: str, exc: BaseException) -> None:
    """Log one failed round of a background loop that retries: a single line when a server
    does not answer (it repeats every round of an outage), the traceback for anything else."""
    if isinstance(exc, (OSError, RedisConnectionError, RedisTimeoutError)):
        logger.warning(event, error=repr(exc))
    else:
        logger.exception(event)
