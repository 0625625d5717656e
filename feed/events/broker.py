"""The event broker: AsyncRedis Streams by default, Kafka when KAFKA_BOOTSTRAP_SERVERS is set.

One FastStream broker object is chosen by configuration; the publisher (API side)
and the subscriber (consumer side) are the same code for both brokers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.redis import RedisBroker, StreamSub
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from feed.config import Settings
from feed.events.schemas import InteractionEvent
from feed.stores.connection import AsyncRedis, RedisError
from feed.stores.streams import ensure_group

Broker = RedisBroker | KafkaBroker
BatchHandler = Callable[[list[InteractionEvent]], Awaitable[Any]]

log = structlog.get_logger(__name__)

CONSUMER_GROUP = "feed-consumer"
MAX_BATCH = 500
RECLAIM_IDLE_MS = 60_000  # an unacknowledged AsyncRedis Streams batch this old is taken over


MESSAGE_LOG_LEVEL = logging.DEBUG  # FastStream's "Received"/"Processed" lines: only with LOG_LEVEL=DEBUG


def create_broker(settings: Settings) -> Broker:
    """Kafka (acks from all in-sync replicas) if configured, else AsyncRedis Streams on REDIS_URL."""
    if settings.kafka_bootstrap_servers:
        return KafkaBroker(settings.kafka_bootstrap_servers, acks="all", log_level=MESSAGE_LOG_LEVEL)
    return RedisBroker(settings.redis_url, max_connections=256, log_level=MESSAGE_LOG_LEVEL)


class EventPublisher:
    """Publishes interaction events; returns only once the broker has stored the event."""

    def __init__(self, broker: Broker, topic: str, timeout_s: float = 5.0) -> None:
        self._broker = broker
        self._topic = topic
        self._timeout_s = timeout_s

    async def publish(self, event: InteractionEvent) -> None:
        """Raises if the broker did not take the event within `timeout_s` (`TimeoutError`).
        An event given up on may still reach the broker later: a retry with the same
        `event_id` is then applied once."""
        body = msgspec.to_builtins(event)
        async with asyncio.timeout(self._timeout_s):
            if isinstance(self._broker, KafkaBroker):
                await self._broker.publish(body, topic=self._topic, key=event.user_key.encode())
            else:
                await self._broker.publish(body, stream=self._topic)


async def prepare_event_stream(settings: Settings, redis: AsyncRedis) -> None:
    """Wait for AsyncRedis, then, on AsyncRedis Streams, create the consumer group at the stream's start
    if it does not exist yet.

    The API and the consumer both call this before their broker starts. While AsyncRedis does not
    answer (it is starting, or restarting) this retries with backoff up to 5 s apart instead
    of ending the process: both need AsyncRedis whichever broker carries the events. FastStream
    would create the group at `$` (new entries only) when the consumer first starts, skipping
    events the API accepted before that; created here, every accepted event is delivered.
    """
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((RedisError, OSError)),
        wait=wait_exponential(multiplier=0.1, max=5.0),
        before_sleep=lambda state: log.warning(
            "redis_unavailable_at_start",
            attempt=state.attempt_number,
            error=repr(state.outcome.exception()) if state.outcome else None,
        ),
    ):
        with attempt:
            await redis.ping()
            if not settings.kafka_bootstrap_servers:
                await ensure_group(redis, settings.events_topic, CONSUMER_GROUP)


def subscribe_events(
    broker: Broker,
    topic: str,
    consumer_name: str,
    handler: BatchHandler,
    reclaim_idle_ms: int = RECLAIM_IDLE_MS,
) -> None:
    """Register `handler` for batches of events; a batch is acknowledged only after it returns.

    Kafka redelivers uncommitted offsets of a dead group member by itself. On AsyncRedis Streams a
    second subscriber claims (XAUTOCLAIM) entries left unacknowledged for `reclaim_idle_ms`
    by a crashed or restarted consumer and hands them to the same (idempotent) handler.
    """
    if isinstance(broker, KafkaBroker):
        broker.subscriber(
            topic,
            group_id=CONSUMER_GROUP,
            batch=True,
            max_records=MAX_BATCH,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )(_batch_handler(handler))
    else:
        # (polling interval ms, claim-after-idle ms): new entries, then entries a dead consumer left
        for polling_ms, min_idle_ms in ((100, None), (1000, reclaim_idle_ms)):
            broker.subscriber(
                stream=StreamSub(
                    topic,
                    group=CONSUMER_GROUP,
                    consumer=consumer_name,
                    batch=True,
                    max_records=MAX_BATCH,
                    polling_interval=polling_ms,
                    min_idle_time=min_idle_ms,
                ),
                ack_policy=AckPolicy.NACK_ON_ERROR,
            )(_batch_handler(handler))


def _batch_handler(handler: BatchHandler) -> Callable[[list[dict[str, Any]]], Awaitable[None]]:
    """A FastStream handler (one per subscriber) decoding message bodies into events for `handler`."""

    async def on_events(bodies: list[dict[str, Any]]) -> None:
        await handler(msgspec.convert(bodies, list[InteractionEvent]))

    return on_events
