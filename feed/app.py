"""Litestar app factory (wiring only) and the API process entry point (`python -m feed.app`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from celery import Celery
from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusController
from threadpoolctl import threadpool_limits
from uvicorn.supervisors import Multiprocess

from feed.api.access import ApiKeyMiddleware
from feed.api.admin import AdminController
from feed.api.errors import (
    bad_request_handler,
    internal_error_handler,
    over_limit_handler,
    too_deep_handler,
    unavailable_handler,
)
from feed.api.feed import FeedController
from feed.api.health import health, ready
from feed.api.interactions import InteractionController
from feed.api.posts import PostController
from feed.api.request_ids import RequestIdMiddleware
from feed.config import Settings, get_settings
from feed.index_owner import owner_process
from feed.ingest import create_celery_app
from feed.logging import configure_logging, exit_cause
from feed.metrics import prepare_multiprocess, prometheus_config
from feed.services import Services, open_services
from feed.stores.write_limits import OverWriteLimit
from feed.usecases import Unavailable

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1_000_000


def create_app(
    settings: Settings | None = None, celery: Celery | None = None, clock: Callable[[], float] = time.time
) -> Litestar:
    """The API application; services open with the app's lifespan and close with it. `clock`
    (wall-clock seconds) times the write-limit windows."""
    settings = settings or get_settings()
    if celery is None:
        celery = create_celery_app()  # the API only sends tasks: the ingest contract's app

    holder: dict[str, Services] = {}
    if not settings.api_keys:
        log.warning("api_open", detail="API_KEYS is empty: every request is accepted without a key")

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        assert celery is not None
        # numpy's BLAS threads cost more than they save on products of a few ms and fight the
        # event loop for the cores: one per process
        with threadpool_limits(1, "blas"):
            async with open_services(settings, celery, clock) as services:
                holder["services"] = services
                yield

    def provide_services() -> Services:
        return holder["services"]

    return Litestar(
        route_handlers=[
            PostController,
            InteractionController,
            FeedController,
            health,
            ready,
            PrometheusController,
            AdminController,
        ],
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        lifespan=[lifespan],
        middleware=[
            RequestIdMiddleware(),
            prometheus_config().middleware,
            *([ApiKeyMiddleware(settings.api_keys)] if settings.api_keys else []),
        ],
        exception_handlers={  # status codes take precedence over classes; 500: anything else
            400: bad_request_handler,
            RecursionError: too_deep_handler,
            OverWriteLimit: over_limit_handler,
            Unavailable: unavailable_handler,
            500: internal_error_handler,
        },
        openapi_config=OpenAPIConfig(title="Feed engine", version="0.1.0", path="/schema"),
        request_max_body_size=MAX_BODY_BYTES,  # 413 beyond: the largest valid post is under 100 kB
        logging_config=None,  # logging is configured once per process (feed.logging), at LOG_LEVEL
    )


def worker_app() -> Litestar:
    """The app of one API process started by `main` (logging configured in that process)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


class ApiSupervisor(Multiprocess):
    """uvicorn's supervisor of several API processes, logging each process it replaces and why
    (uvicorn itself says only "died", at INFO): it ended (its exit code, or the signal: a
    SIGKILL from outside is usually the kernel's out-of-memory killer), or it stopped answering
    the supervisor's ping for `timeout_worker_healthcheck` seconds (a process holding the GIL
    that long) and the supervisor killed it."""

    def keep_subprocess_alive(self) -> None:
        before = [(p, p.process.is_alive()) for p in self.processes]
        super().keep_subprocess_alive()
        for (gone, was_running), now in zip(before, self.processes, strict=True):
            if gone is not now:
                log.error(
                    "api_process_replaced",
                    pid=gone.process.pid,
                    ended_by=exit_cause(gone.process.exitcode),
                    reason=(
                        f"no answer to the supervisor's ping in "
                        f"{self.config.timeout_worker_healthcheck} s: killed"
                        if was_running
                        else "it ended"
                    ),
                    new_pid=now.process.pid,
                )


def main() -> None:
    """Serve the API with uvicorn (uvloop, httptools) on API_HOST:API_PORT, in API_WORKERS
    processes (a supervisor restarts one that dies or hangs, and logs it; the kernel spreads
    connections). In embedded mode (no QDRANT_URL) the host's index owner runs beside them
    as a child process, started again if it ends."""
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level)
    several = settings.api_workers > 1
    options: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        # a process starting on a busy host imports for many seconds; uvicorn's default (5 s
        # without answering its supervisor's ping) killed such workers in a loop
        "timeout_worker_healthcheck": 60,
        "loop": "uvloop",
        "http": "httptools",
    }
    with contextlib.nullcontext() if settings.qdrant_url else owner_process():
        if not several:
            uvicorn.run(create_app(settings), **options)
            return
        # each process writes its metrics there; a scrape of any one sums them all
        prepare_multiprocess(settings.data_dir / "prometheus")
        config = uvicorn.Config("feed.app:worker_app", factory=True, workers=settings.api_workers, **options)
        ApiSupervisor(config, sockets=[config.bind_socket()]).run()


if __name__ == "__main__":
    main()
