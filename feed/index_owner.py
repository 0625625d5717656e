"""The index owner process: the one process on a host that opens the embedded Qdrant Edge
shard (`python -m feed.index_owner`; `feed-api` starts it in embedded mode).

It applies the index-operation stream to the shard (`IndexSync`, consumer group `indexer`)
and answers the searches of every API process on the host over a Unix socket
(`feed/stores/index/remote.py`). So a host holds one copy of the index, and searches,
which hold the GIL for their whole run, never stall an API process's event loop; the HNSW
graphs of new points are built on a copy in a child process and swapped in
(`feed/stores/index/builds.py`), so they stall no search either. An owner holds
`DATA_DIR/index-owner.lock` while it lives; a second one started on the same data folder
waits for the lock and takes over when the first ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial

import structlog
import uvloop

from feed.config import Settings, get_settings
from feed.logging import configure_logging, exit_cause
from feed.replica import end_with_parent, hold_lock
from feed.stores import keys
from feed.stores.connection import connect
from feed.stores.index.builds import ShardGenerations
from feed.stores.index.remote import serve_searches
from feed.stores.index.sync import IndexSync
from feed.stores.index.vectors import space_dims

log = structlog.get_logger(__name__)

OWNER_CONSUMER = "owner"


@contextlib.asynccontextmanager
async def owning_index(settings: Settings) -> AsyncIterator[ShardGenerations]:
    """Open the host's shard, keep it in step with the index stream and answer searches on
    `settings.index_socket()`, for the duration of the context (the caller holds the owner's
    lock, or is a test that runs the engine in one process)."""
    redis = connect(settings.redis_url)
    index = ShardGenerations(settings.qdrant_path(), space_dims(settings), settings.index_build_every)
    sync = IndexSync(
        redis,
        index,
        keys.INDEX_GROUP,
        OWNER_CONSUMER,
        reclaim_idle_ms=settings.event_reclaim_idle_ms,
        trim_every_s=settings.stream_trim_every_s,
        drop_idle_groups_s=settings.index_group_drop_idle_s,
        between_batches=partial(index.step, redis),
    )
    try:
        async with serve_searches(index, settings.index_socket()), sync.running():
            yield index
    finally:
        await index.close()
        await redis.aclose()


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with owning_index(settings) as index:
        log.info("index_owner_serving", points=await index.count(), socket=str(settings.index_socket()))
        await stop.wait()


def main() -> None:
    """Process entry point: wait for the owner's lock, then own the shard until SIGTERM or SIGINT."""
    settings = get_settings()
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with hold_lock(settings.data_dir / "index-owner.lock"):
        uvloop.run(_serve(settings))


@contextlib.contextmanager
def owner_process(restart_after_s: float = 1.0) -> Iterator[None]:
    """Run `python -m feed.index_owner` as a child for the duration of the context, starting it
    again whenever it ends (logged at error level with how it ended), then stop it."""
    stopping = threading.Event()
    current: list[subprocess.Popen[bytes]] = []

    def keep_alive() -> None:
        while not stopping.is_set():
            child = subprocess.Popen([sys.executable, "-m", "feed.index_owner"], preexec_fn=end_with_parent)
            current[:] = [child]
            code = child.wait()
            if not stopping.is_set():
                log.error("index_owner_replaced", pid=child.pid, ended_by=exit_cause(code))
                time.sleep(restart_after_s)

    thread = threading.Thread(target=keep_alive, name="index-owner", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        for child in current:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        thread.join(5)


if __name__ == "__main__":
    main()
