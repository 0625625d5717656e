"""The event consumer process: applies interaction events from the broker to Redis.

Run it with `python -m feed.events.consumer`. Besides the broker subscription it
retries parked events (events that arrived before their post) every few seconds.
"""

from __future__ import annotations

import asyncio
import os
import socket

import structlog
import uvloop
from faststream import FastStream
from redis.asyncio import Redis

from feed.aio import cancel_and_wait
from feed.config import Settings, get_settings
from feed.events.apply import EventApplier
from feed.events.broker import create_broker, prepare_event_stream, subscribe_events
from feed.events.schemas import InteractionEvent
from feed.logging import configure_logging

log = structlog.get_logger(__name__)


class EventConsumer:
    """Wires a broker subscription and the pending-event retrier to one `EventApplier`."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.applier = EventApplier(redis, settings)
        self.broker = create_broker(settings)
        consumer_name = f"{socket.gethostname()}-{os.getpid()}"
        subscribe_events(
            self.broker, settings.events_topic, consumer_name, self.handle, settings.event_reclaim_idle_ms
        )
        self._redis = redis
        self._retrier: asyncio.Task[None] | None = None

    async def handle(self, events: list[InteractionEvent]) -> None:
        """Apply a batch from the broker."""
        result = await self.applier.apply(events)
        log.debug("events_applied", applied=result.applied, parked=result.parked)

    async def retry_pending_forever(self, every_s: float = 2.0) -> None:
        """Apply parked events whose post arrived; never stops on an error."""
        while True:
            try:
                await self.applier.retry_pending()
            except Exception:
                log.exception("retry_pending_failed")
            await asyncio.sleep(every_s)

    async def start_retrier(self) -> None:
        """Start the background retrier of parked events."""
        self._retrier = asyncio.create_task(self.retry_pending_forever(), name="retry-pending")

    async def stop_retrier(self) -> None:
        """Stop the retrier."""
        if self._retrier is not None:
            await cancel_and_wait(self._retrier)
            self._retrier = None

    async def prepare(self) -> None:
        """Before the broker starts: wait for Redis, and create the stream's consumer group."""
        await prepare_event_stream(self.settings, self._redis)

    async def start(self) -> None:
        """Connect the broker, start consuming and the retrier."""
        await self.prepare()
        await self.broker.start()
        await self.start_retrier()

    async def stop(self) -> None:
        """Stop consuming; batches not yet acknowledged are redelivered later."""
        await self.stop_retrier()
        await self.broker.stop()


def create_app(settings: Settings | None = None) -> FastStream:
    """FastStream application for the consumer process."""
    settings = settings or get_settings()
    consumer = EventConsumer(settings, Redis.from_url(settings.redis_url))
    app = FastStream(consumer.broker)
    app.on_startup(consumer.prepare)
    app.after_startup(consumer.start_retrier)
    app.on_shutdown(consumer.stop_retrier)
    return app


def main() -> None:
    """Process entry point."""
    settings = get_settings()
    configure_logging(settings.log_level)
    log.info("consumer_starting", kafka=bool(settings.kafka_bootstrap_servers))
    uvloop.run(create_app(settings).run())


if __name__ == "__main__":
    main()
