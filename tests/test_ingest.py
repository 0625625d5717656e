"""Ingest through a real Celery worker on the suite's Redis, with the real MiniLM encoder."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from feed.config import get_settings
from feed.ingest import INGEST_QUEUE, INGEST_TASK, IngestJob
from feed.stores import keys
from feed.stores.post_store import PostStore
from feed.stores.records import PostRecord
from ingest_workers import tasks
from models.clip import ClipEncoder
from models.files import ModelUnavailable
from models.text import TextEncoder
from tests.helpers import wait_for


def job(key: str, text: str, author: str = "a1") -> IngestJob:
    return IngestJob(
        key=key,
        post_id=key,
        author_id=author,
        author_key=author,
        created_at=time.time(),
        post_type="text",
        text=text,
    )


async def enqueue(app: Any, redis_client: Any, j: IngestJob) -> None:
    task_id = uuid.uuid4().hex
    await PostStore(redis_client).mark_queued(j.key, task_id)
    app.send_task(INGEST_TASK, args=[j.to_dict()], task_id=task_id, queue=INGEST_QUEUE)


async def state_of(redis_client: Any, key: str) -> str | None:
    s = await PostStore(redis_client).state(key)
    return s.state if s else None


def test_text_encoder_gives_normalised_384d_vectors(text_encoder: TextEncoder) -> None:
    vectors = text_encoder.encode_texts(["pasta with basil", "football derby", "bread baking"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # semantics of the real weights: cooking texts are closer to each other than to sport
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]


def test_missing_weights_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=str(tmp_path)):
        TextEncoder(tmp_path).encode_texts(["x"])


async def test_worker_ingests_in_one_atomic_commit(celery_worker: Any, redis_client: Any) -> None:
    posts = [job(f"p{i}", f"post number {i} about cooking pasta") for i in range(5)]
    for j in posts:
        await enqueue(celery_worker, redis_client, j)
    for j in posts:
        await wait_for(lambda k=j.key: _is(redis_client, k, "ingested"))
    record = PostRecord.from_values("p3", await redis_client.hmget(keys.post("p3"), PostRecord.fields()))
    assert record is not None
    assert record.author_key == "a1" and record.vectors["text"].shape == (384,)
    assert abs(float(np.linalg.norm(record.vectors["text"])) - 1.0) < 1e-5
    assert await redis_client.exists(*(keys.post(j.key) for j in posts)) == 5
    ops = await redis_client.xrange(keys.INDEX_STREAM)
    assert sorted(fields[b"post"].decode() for _, fields in ops) == [f"p{i}" for i in range(5)]


async def test_reingest_is_idempotent(celery_worker: Any, redis_client: Any) -> None:
    j = job("same", "a post about bread")
    for _ in range(2):
        await enqueue(celery_worker, redis_client, j)
        await wait_for(lambda: _is(redis_client, "same", "ingested"))
    await wait_for(lambda: _xlen_at_least(redis_client, 2))
    stored = {keys.post("same").encode(), keys.post_state("same").encode()}
    assert set(await redis_client.keys(keys.post("same") + "*")) == stored  # the same keys, overwritten
    ops = await redis_client.xrange(keys.INDEX_STREAM)
    assert [(f[b"op"], f[b"post"]) for _, f in ops] == [(b"upsert", b"same")] * 2


async def test_missing_weights_mark_post_failed_with_reason(
    celery_worker: Any, redis_client: Any, tmp_path: Path, use_models: Any
) -> None:
    use_models(text=TextEncoder(tmp_path))
    await enqueue(celery_worker, redis_client, job("nw", "text"))
    await wait_for(lambda: _is(redis_client, "nw", "failed"))
    state = await PostStore(redis_client).state("nw")
    assert state is not None and state.error is not None and str(tmp_path) in state.error
    assert not await redis_client.exists(keys.post("nw"))


class FlakyEncoder:
    """Fails the first `failures` calls, then encodes for real."""

    def __init__(self, real: TextEncoder, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("encoder backend hiccup")
        return self.real.encode_texts(texts)


async def test_transient_failure_is_retried_then_ingested(
    celery_worker: Any, redis_client: Any, text_encoder: TextEncoder, use_models: Any
) -> None:
    flaky = FlakyEncoder(text_encoder, failures=1)
    use_models(text=flaky)
    await enqueue(celery_worker, redis_client, job("flaky", "soup recipe"))
    await wait_for(lambda: _is(redis_client, "flaky", "ingested"), timeout=30)
    assert flaky.calls == 2


async def test_gives_up_after_max_retries(
    redis_client: Any, text_encoder: TextEncoder, use_models: Any
) -> None:
    use_models(text=FlakyEncoder(text_encoder, failures=99))
    await PostStore(redis_client).mark_queued("gone", "t")
    max_retries = get_settings().ingest_max_retries

    def failed() -> float:
        return (
            REGISTRY.get_sample_value("feed_ingest_posts_total", {"post_type": "text", "outcome": "failed"})
            or 0
        )

    before = failed()
    tasks.ingest_batch([job("gone", "x")], [max_retries])
    state = await PostStore(redis_client).state("gone")
    assert state is not None and state.state == "failed"
    assert state.error is not None and "gave up" in state.error
    assert failed() == before + 1


async def test_deleted_post_is_not_resurrected_by_a_late_commit(
    redis_client: Any, text_encoder: TextEncoder
) -> None:
    store = PostStore(redis_client)
    await store.mark_queued("late", "t")
    assert await store.delete("late")
    tasks.ingest_batch([job("late", "x")], [0])
    assert await state_of(redis_client, "late") == "deleted"
    assert not await redis_client.exists(keys.post("late"))


async def _is(redis_client: Any, key: str, state: str) -> bool:
    return await state_of(redis_client, key) == state


async def _xlen_at_least(redis_client: Any, n: int) -> bool:
    return int(await redis_client.xlen(keys.INDEX_STREAM)) >= n


class CountsLoads:
    def __init__(self) -> None:
        self.loads = 0

    def load(self) -> None:
        self.loads += 1


def test_worker_start_warms_every_model(tmp_path: Path, text_encoder: TextEncoder, use_models: Any) -> None:
    counting = FlakyEncoder(text_encoder, failures=0)
    media = {"clip": CountsLoads(), "detector": CountsLoads(), "speech": CountsLoads()}
    use_models(text=counting, **media)
    tasks.warm_up()
    assert counting.calls == 1 and all(m.loads == 1 for m in media.values())
    # missing weights are logged at start, not fatal: posts then fail with the reason
    use_models(text=TextEncoder(tmp_path), clip=ClipEncoder("ViT-B-32", tmp_path / "none.pt"))
    tasks.warm_up()
