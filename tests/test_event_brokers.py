"""The same consumer handler on both brokers: Kafka (FastStream's TestKafkaBroker) and Redis Streams."""

from __future__ import annotations

from typing import Any

import numpy as np
from faststream.kafka import KafkaBroker, TestKafkaBroker

from feed.events.broker import EventPublisher, create_broker
from feed.events.consumer import EventConsumer
from feed.stores import keys
from tests.helpers import api_client, unit, wait_for
from tests.test_event_apply import event, store_post, user_vector


async def test_kafka_path_applies_events_once(settings: Any, redis_client: Any) -> None:
    settings = settings.model_copy(update={"kafka_bootstrap_servers": "localhost:9092"})
    store_post(settings, "k1", "author", unit(1, 0))
    consumer = EventConsumer(settings, redis_client)
    assert isinstance(consumer.broker, KafkaBroker)
    async with TestKafkaBroker(consumer.broker) as broker:
        publisher = EventPublisher(broker, settings.events_topic)
        await publisher.publish(event("kafka-e1", "k1"))
        await publisher.publish(event("kafka-e1", "k1"))  # a redelivery
    vec = await user_vector(redis_client, "u1")
    assert vec is not None and np.allclose(vec, unit(1, 0), atol=1e-6)
    assert await redis_client.hget(keys.post_counts("k1"), "like") == b"1"


async def test_redis_streams_path_applies_published_events_then_trims_them(
    settings: Any, redis_client: Any
) -> None:
    settings = settings.model_copy(update={"stream_trim_every_s": 0.1})
    store_post(settings, "r1", "author", unit(0, 1))
    consumer = EventConsumer(settings, redis_client)
    publisher_broker = create_broker(settings)
    await publisher_broker.connect()
    await consumer.start()
    try:
        publisher = EventPublisher(publisher_broker, settings.events_topic)
        for i in range(3):
            await publisher.publish(event(f"stream-e{i}", "r1", user=f"user-{i}"))
        await wait_for(lambda: _applied(redis_client, 3))
        await wait_for(lambda: _length_is(redis_client, settings.events_topic, 1))  # the last one read stays
    finally:
        await consumer.stop()
        await publisher_broker.stop()
    assert await redis_client.hget(keys.post_counts("r1"), "like") == b"3"


async def _applied(redis_client: Any, n: int) -> bool:
    raw = await redis_client.get(keys.APPLIED_EVENTS)
    return raw is not None and int(raw) >= n


async def test_api_and_consumer_on_a_real_kafka_broker(
    settings: Any, redis_client: Any, celery_worker: Any, kafka_bootstrap: str
) -> None:
    """POST /interaction publishes to Kafka (Tansu); the consumer group applies each event once."""

    settings = settings.model_copy(
        update={"kafka_bootstrap_servers": kafka_bootstrap, "events_topic": "it.events"}
    )
    store_post(settings, "kp", "author", unit(1, 1))
    consumer = EventConsumer(settings, redis_client)
    await consumer.start()
    try:
        async with api_client(settings, celery=celery_worker) as client:
            body = {"user_id": "ku", "post_id": "kp", "action": "share", "event_id": "kafka-host-1"}
            for _ in range(2):
                response = await client.post("/interaction", json=body)
                assert response.status_code == 202, response.text
            await client.post("/interaction", json={**body, "event_id": "kafka-host-2", "action": "like"})
            await wait_for(lambda: _applied(redis_client, 2), timeout=60)
    finally:
        await consumer.stop()
    counts = await redis_client.hgetall(keys.post_counts("kp"))
    assert counts == {b"share": b"1", b"like": b"1"}


async def test_event_accepted_before_any_consumer_is_applied(settings: Any, redis_client: Any) -> None:

    from ingest_workers.celery_app import app as celery_app

    store_post(settings, "early", "author", unit(1, 0))
    async with api_client(settings, celery=celery_app) as client:
        body = {"user_id": "eu", "post_id": "early", "action": "like"}
        assert (await client.post("/interaction", json=body)).status_code == 202
    consumer = EventConsumer(settings, redis_client)  # the first consumer ever on this stream
    await consumer.start()
    try:
        await wait_for(lambda: _applied(redis_client, 1))
    finally:
        await consumer.stop()


async def test_events_left_unacked_by_a_dead_consumer_are_reclaimed(settings: Any, redis_client: Any) -> None:
    from feed.events.broker import CONSUMER_GROUP, prepare_event_stream

    settings = settings.model_copy(update={"event_reclaim_idle_ms": 200})
    store_post(settings, "orphan", "author", unit(1, 0))
    await prepare_event_stream(settings, redis_client)
    publisher_broker = create_broker(settings)
    await publisher_broker.connect()
    try:
        await EventPublisher(publisher_broker, settings.events_topic).publish(event("dead-e1", "orphan"))
    finally:
        await publisher_broker.stop()
    # a consumer takes the entry and dies before acknowledging it
    taken = await redis_client.xreadgroup(CONSUMER_GROUP, "crashed-1", {settings.events_topic: ">"}, count=10)
    assert len(taken[0][1]) == 1
    consumer = EventConsumer(settings, redis_client)
    await consumer.start()
    try:
        await wait_for(lambda: _applied(redis_client, 1), timeout=20)
        await wait_for(lambda: _no_pending(redis_client, settings.events_topic), timeout=20)
    finally:
        await consumer.stop()
    assert await redis_client.hget(keys.post_counts("orphan"), "like") == b"1"


async def _no_pending(redis_client: Any, topic: str) -> bool:
    from feed.events.broker import CONSUMER_GROUP

    info = await redis_client.xpending(topic, CONSUMER_GROUP)
    return int(info["pending"]) == 0


async def _length_is(redis_client: Any, stream: str, n: int) -> bool:
    return int(await redis_client.xlen(stream)) == n
