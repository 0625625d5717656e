"""The event broker: Redis Streams by default, Kafka when KAFKA_BOOTSTRAP_SERVERS is set.

One FastStream broker object is chosen by configuration; the publisher (API side)
and the subscriber (consumer side) are the same code for both brokers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.redis import RedisBroker, StreamSub

from feed.config import Settings
from feed.events.schemas import InteractionEvent

Broker = RedisBroker | KafkaBroker
BatchHandler = Callable[[list[InteractionEvent]], Awaitable[Any]]

CONSUMER_GROUP = "feed-consumer"
MAX_BATCH = 500


def create_broker(settings: Settings) -> Broker:
    """Kafka (acks from all in-sync replicas) if configured, else Redis Streams on REDIS_URL."""
    if settings.kafka_bootstrap_servers:
        return KafkaBroker(settings.kafka_bootstrap_servers, acks="all")
    return RedisBroker(settings.redis_url, max_connections=256)


class EventPublisher:
    """Publishes interaction events; returns only once the broker has stored the event."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self._broker = broker
        self._topic = topic

    async def publish(self, event: InteractionEvent) -> None:
        """Raises if the broker did not take the event."""
        body = msgspec.to_builtins(event)
        if isinstance(self._broker, KafkaBroker):
            await self._broker.publish(body, topic=self._topic, key=event.user_key.encode())
        else:
            await self._broker.publish(body, stream=self._topic)


def subscribe_events(broker: Broker, topic: str, consumer_name: str, handler: BatchHandler) -> None:
    """Register `handler` for batches of events; a batch is acknowledged only after it returns."""

    async def on_events(bodies: list[dict[str, Any]]) -> None:
        await handler(msgspec.convert(bodies, list[InteractionEvent]))

    if isinstance(broker, KafkaBroker):
        broker.subscriber(
            topic,
            group_id=CONSUMER_GROUP,
            batch=True,
            max_records=MAX_BATCH,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )(on_events)
    else:
        broker.subscriber(
            stream=StreamSub(
                topic,
                group=CONSUMER_GROUP,
                consumer=consumer_name,
                batch=True,
                max_records=MAX_BATCH,
                polling_interval=100,
            ),
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )(on_events)
