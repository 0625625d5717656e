"""The event consumer process: applies interaction events from the broker to Redis.

Run it with `python -m feed.events.consumer`. Besides the broker subscription it
retries parked events (events that arrived before their post) every few seconds and, on
AsyncRedis Streams, trims the events every consumer group has acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import structlog
import uvloop
from faststream import FastStream

from feed.aio import cancel_and_wait, forever
from feed.config import Settings, get_settings
from feed.events.apply import EventApplier
from feed.events.broker import create_broker, prepare_event_stream, subscribe_events
from feed.events.schemas import InteractionEvent
from feed.logging import configure_logging
from feed.stores.connection import AsyncRedis, connect
from feed.stores.interaction_writes import InteractionWrites
from feed.stores.streams import trim_consumed

log = structlog.get_logger(__name__)


class EventConsumer:
    """Wires a broker subscription and the housekeeping (parked events, trimming) to one `EventApplier`."""

    def __init__(self, settings: Settings, redis: AsyncRedis) -> None:
        self.settings = settings
        self.applier = EventApplier(InteractionWrites(redis, settings), settings)
        self.broker = create_broker(settings)
        consumer_name = f"{socket.gethostname()}-{os.getpid()}"
        subscribe_events(
            self.broker, settings.events_topic, consumer_name, self.handle, settings.event_reclaim_idle_ms
        )
        self._redis = redis
        self._housekeeping: asyncio.Task[None] | None = None

    async def handle(self, events: list[InteractionEvent]) -> None:
        """Apply a batch from the broker."""
        result = await self.applier.apply(events)
        log.debug("events_applied", applied=result.applied, parked=result.parked)

    async def housekeeping_forever(self, every_s: float = 2.0) -> None:
        """Apply parked events whose post arrived, every `every_s`; on AsyncRedis Streams, also trim
        the events every group has acknowledged, every STREAM_TRIM_EVERY_S (Kafka keeps its
        own retention). Never stops on an error."""
        trim = not self.settings.kafka_bootstrap_servers and self.settings.stream_trim_every_s > 0
        next_trim = time.monotonic() + self.settings.stream_trim_every_s

        async def step() -> None:
            nonlocal next_trim
            await self.applier.retry_pending()
            if trim and time.monotonic() >= next_trim:
                next_trim = time.monotonic() + self.settings.stream_trim_every_s
                await trim_consumed(self._redis, self.settings.events_topic)

        await forever(step, log, "consumer_housekeeping_failed", every_s=every_s, retry_s=every_s)

    async def start_housekeeping(self) -> None:
        """Start the background housekeeping (parked events, stream trimming)."""
        self._housekeeping = asyncio.create_task(self.housekeeping_forever(), name="housekeeping")

    async def stop_housekeeping(self) -> None:
        """Stop the housekeeping."""
        if self._housekeeping is not None:
            await cancel_and_wait(self._housekeeping)
            self._housekeeping = None

    async def prepare(self) -> None:
        """Before the broker starts: wait for AsyncRedis, and create the stream's consumer group."""
        await prepare_event_stream(self.settings, self._redis)

    async def start(self) -> None:
        """Connect the broker, start consuming and the housekeeping."""
        await self.prepare()
        await self.broker.start()
        await self.start_housekeeping()

    async def stop(self) -> None:
        """Stop consuming; batches not yet acknowledged are redelivered later."""
        await self.stop_housekeeping()
        await self.broker.stop()


def create_app(settings: Settings | None = None) -> FastStream:
    """FastStream application for the consumer process."""
    settings = settings or get_settings()
    consumer = EventConsumer(settings, connect(settings.redis_url))
    app = FastStream(consumer.broker)
    app.on_startup(consumer.prepare)
    app.after_startup(consumer.start_housekeeping)
    app.on_shutdown(consumer.stop_housekeeping)
    return app


def main() -> None:
    """Process entry point."""
    settings = get_settings()
    configure_logging(settings.log_level)
    log.info("consumer_starting", kafka=bool(settings.kafka_bootstrap_servers))
    uvloop.run(create_app(settings).run())


if __name__ == "__main__":
    main()
