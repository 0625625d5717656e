"""A post's life in Redis: queued -> ingested | failed, and deletion.

The API (async) registers and deletes posts; the ingest worker (sync) commits
them. A commit writes the record, the state and the vector-index operation in one
MULTI/EXEC, so a post is never half ingested, and it watches the state key so a post
deleted meanwhile stays deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from redis.asyncio import Redis

from feed.stores import keys
from feed.stores.messages import IndexOp
from feed.stores.records import SPACES, PostRecord, vector_field

QUEUED, INGESTED, FAILED, DELETED = "queued", "ingested", "failed", "deleted"


@dataclass(frozen=True, slots=True)
class PostState:
    """Ingest state of a post as the API reports it."""

    state: str
    error: str | None
    task_id: str | None
    updated_at: float


class PostStore:
    """Async post lifecycle operations for the API."""

    def __init__(self, redis_client: Redis) -> None:
        self.redis = redis_client

    async def mark_queued(self, key: str, task_id: str) -> None:
        """Record that the post was accepted and handed to the ingest queue."""
        await self.redis.hset(
            keys.post_state(key),
            mapping={"state": QUEUED, "error": "", "task_id": task_id, "updated_at": time.time()},
        )

    async def forget(self, key: str, task_id: str) -> None:
        """Undo `mark_queued` when the post could not be queued (only if no newer task took over)."""
        if await self.redis.hget(keys.post_state(key), "task_id") == task_id.encode():
            await self.redis.delete(keys.post_state(key))

    async def state(self, key: str) -> PostState | None:
        """The post's state, or None for a post id the engine never accepted."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.post_state(key))  # type: ignore[assignment]
        if not raw:
            return None
        return PostState(
            state=raw[b"state"].decode(),
            error=raw.get(b"error", b"").decode() or None,
            task_id=raw.get(b"task_id", b"").decode() or None,
            updated_at=float(raw.get(b"updated_at", 0.0)),
        )

    async def delete(self, key: str) -> bool:
        """Remove the post from every store; False if the engine never had it."""
        if not await self.redis.exists(keys.post_state(key)):
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            keys.post_state(key),
            mapping={"state": DELETED, "error": "", "updated_at": time.time()},
        )
        pipe.delete(keys.post(key), keys.post_counts(key))
        pipe.zrem(keys.TRENDING, key)
        pipe.zrem(keys.IMPRESSIONS, key)
        pipe.xadd(keys.INDEX_STREAM, IndexOp.delete(key).fields())
        await pipe.execute()
        return True


def commit_ingested(r: redis.Redis, record: PostRecord) -> bool:
    """Atomically store an ingested post; False (and nothing written) if it was deleted meanwhile.

    Idempotent: committing the same post again overwrites the same keys.
    """
    now = time.time()
    state_key = keys.post_state(record.key)
    with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(state_key)  # type: ignore[no-untyped-call]
                if pipe.hget(state_key, "state") == DELETED.encode():
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.hset(keys.post(record.key), mapping=record.to_hash())  # type: ignore[arg-type]
                missing = [vector_field(s) for s in SPACES if s not in record.vectors]
                if missing:
                    pipe.hdel(keys.post(record.key), *missing)
                pipe.hset(state_key, mapping={"state": INGESTED, "error": "", "updated_at": now})
                pipe.xadd(keys.INDEX_STREAM, IndexOp.upsert(record.key).fields())
                pipe.execute()
                return True
            except redis.WatchError:
                continue


def mark_failed(r: redis.Redis, key: str, error: str) -> None:
    """Record that ingest gave up on the post, with the reason (unless it was deleted)."""
    state_key = keys.post_state(key)
    if r.hget(state_key, "state") == DELETED.encode():
        return
    r.hset(state_key, mapping={"state": FAILED, "error": error[:500], "updated_at": time.time()})
