"""Structured logging (structlog, JSON lines) shared by every process."""

from __future__ import annotations

import contextlib
import logging
import signal
from typing import Any

import httpx
import structlog


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


def log_failure(logger: Any, event: str, exc: BaseException, **fields: Any) -> None:
    """Log a failure that will be retried or skipped: a single line when a server does not
    answer (it repeats for every request or round of an outage), the traceback for anything else."""
    if _unreachable(exc):
        logger.warning(event, error=repr(exc), **fields)
    else:
        logger.exception(event, **fields)


_UNREACHABLE = (OSError, httpx.TransportError)
# client libraries' own "no answer" errors (redis-py's ConnectionError and TimeoutError), known by
# name so that this module, below every layer, imports none of them
_UNREACHABLE_NAMES = frozenset({"ConnectionError", "TimeoutError"})


def _unreachable(exc: BaseException | None) -> bool:
    """`exc`, or an error it wraps (qdrant-client wraps httpx's), says a server did not answer."""
    for _ in range(8):  # a bounded walk: a chain can loop
        if exc is None:
            return False
        if isinstance(exc, _UNREACHABLE) or any(c.__name__ in _UNREACHABLE_NAMES for c in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def exit_cause(code: int | None) -> str:
    """A child process's exit code as how it ended: `exit 1`, or the signal that ended it (`SIGKILL`)."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"exit {code}"
