"""Keeps the vector index in step with ingested and deleted posts.

Ingest workers never open the embedded Qdrant shard: they append `upsert` and
`delete` operations to a Redis stream, and the API processes apply them here. Each
embedded shard (one per API replica) reads the stream through a consumer group of its
own; API processes sharing a Qdrant server share one group. Entries are acknowledged
only after the index has them; entries left pending by a crash are applied first on the
next start, and entries a consumer that never came back left pending are taken over
once idle for `reclaim_idle_ms`.
A `cf` operation (a retrain swapped a new CF model in) copies the current model's
item factors into the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import structlog
from redis.asyncio import Redis

from feed.aio import forever, running
from feed.logging import log_failure
from feed.stores import keys
from feed.stores.feature_store import FeatureStore
from feed.stores.index.vectors import CF, VectorIndex
from feed.stores.messages import IndexOp
from feed.stores.records import vector_from_bytes
from feed.stores.streams import ensure_group, trim_consumed

log = structlog.get_logger(__name__)


class IndexSync:
    """Applies the index-operation stream to a `VectorIndex`."""

    def __init__(
        self,
        redis: Redis,
        index: VectorIndex,
        group: str = keys.INDEX_GROUP,
        consumer: str = "api",
        batch: int = 256,
        reclaim_idle_ms: int = 60_000,
        trim_every_s: float = 0.0,
        drop_idle_groups_s: float = 0.0,
        between_batches: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._redis = redis
        self._index = index
        self._features = FeatureStore(redis)
        self._group = group
        self._consumer = consumer
        self._batch = batch
        self._reclaim_idle_ms = reclaim_idle_ms
        self._trim_every_s = trim_every_s  # how often `run` trims what every group applied (0: never)
        self._drop_idle_groups_s = drop_idle_groups_s  # groups idle this long are dropped (0: never)
        self._between_batches = between_batches  # `run` awaits it after each batch (the owner's builds)

    async def ensure_group(self) -> bool:
        """Create the consumer group (from the stream's start) if it does not exist; returns
        whether it was created."""
        return await ensure_group(self._redis, keys.INDEX_STREAM, self._group)

    async def skip_to_tip(self) -> None:
        """Point the group at the stream's end: what was appended so far is no longer read
        (the caller is about to rebuild the index from the stored records)."""
        await self.ensure_group()
        await self._redis.xgroup_setid(keys.INDEX_STREAM, self._group, "$")

    async def reclaim(self) -> int:
        """Take over entries other consumers of the group left pending for `reclaim_idle_ms`
        (they read them, then died); they are applied as this consumer's own pending entries.
        Returns how many were taken."""
        claimed: list[Any] = await self._redis.xautoclaim(
            keys.INDEX_STREAM,
            self._group,
            self._consumer,
            min_idle_time=self._reclaim_idle_ms,
            count=self._batch,
            justid=True,
        )
        return len(claimed)

    async def apply_once(self, block_ms: int | None = None, pending: bool = False) -> int:
        """Read one batch (own pending entries if `pending`), apply it, ack it; returns its size."""
        stream_id = "0" if pending else ">"
        reply: Any = await self._redis.xreadgroup(
            self._group,
            self._consumer,
            {keys.INDEX_STREAM: stream_id},
            count=self._batch,
            block=None if pending else block_ms,
        )
        entries = reply[0][1] if reply else []
        if not entries:
            return 0
        upserts: list[str] = []
        deletes: list[str] = []
        new_model = False
        for _, fields in entries:
            op = IndexOp.of(fields)
            key = op.post
            if op.op == "cf":
                new_model = True
            elif op.op == "delete":
                deletes.append(key)
                upserts = [k for k in upserts if k != key]
            else:
                upserts.append(key)
                deletes = [k for k in deletes if k != key]
        records = await self._features.posts(upserts)
        await self._index.upsert(list(records.values()))
        # An upserted post whose record is gone was deleted after its op: drop it from the index too.
        await self._index.delete(deletes + [k for k in upserts if k not in records])
        if new_model or records:
            await self.sync_cf(only_posts=None if new_model else list(records))
        await self._redis.xack(keys.INDEX_STREAM, self._group, *[eid for eid, _ in entries])
        return len(entries)

    async def sync_cf(self, only_posts: list[str] | None = None, batch: int = 1000) -> int:
        """Copy the current CF model's item factors into the index (only for `only_posts` if
        given: posts upserted again lose their factors); returns how many points got them.

        A retrain that swaps the model in meanwhile restarts the copy, so the index never
        tags one model's factors with another's version.
        """
        while True:
            meta: list[Any] = await self._redis.hmget(keys.CF_META, ["version", "factors"])
            raw, factors = meta[0], int(meta[1] or 0)
            if raw is None:
                return 0
            if factors != self._index.dims.get(CF):  # a model trained with another CF_FACTORS
                log.warning("cf_factors_not_indexed", model=factors, index=self._index.dims.get(CF))
                return 0
            version, total = int(raw), 0
            if only_posts is not None:
                total = await self._index.set_cf(await self._features.cf_factors(only_posts), version)
            else:
                async for chunk in self._cf_chunks(batch):
                    total += await self._index.set_cf(chunk, version)
            if await self._redis.hget(keys.CF_META, "version") == raw:
                return total

    async def _cf_chunks(self, batch: int) -> AsyncIterator[dict[str, np.ndarray]]:
        chunk: dict[str, np.ndarray] = {}
        async for key, value in self._redis.hscan_iter(keys.CF_ITEMS, count=batch):
            chunk[key.decode()] = vector_from_bytes(value)
            if len(chunk) >= batch:
                yield chunk
                chunk = {}
        if chunk:
            yield chunk

    async def rebuild(self, batch: int = 512) -> int:
        """Upsert every stored post record into the index (after it was created empty); returns the count."""
        total = 0
        keys_seen: list[str] = []
        prefix = keys.post("")
        async for raw in self._redis.scan_iter(match=f"{prefix}*", count=1000, _type="hash"):
            keys_seen.append(raw.decode()[len(prefix) :])
            if len(keys_seen) >= batch:
                total += await self._upsert_records(keys_seen)
                keys_seen = []
        total += await self._upsert_records(keys_seen)
        if total:
            log.info("vector_index_rebuilt", posts=total, cf_factors=await self.sync_cf())
        return total

    async def _upsert_records(self, post_keys: list[str]) -> int:
        records = await self._features.posts(post_keys)  # state and counter hashes have no record fields
        await self._index.upsert(list(records.values()))
        return len(records)

    async def catch_up(self) -> int:
        """Apply everything pending and queued now; returns how many entries were applied."""
        await self.ensure_group()
        total = 0
        while n := await self.apply_once(pending=True):
            total += n
        while n := await self.apply_once(block_ms=None):
            total += n
        return total

    async def start(self) -> None:
        """Prepare the index (create its collection if missing) and the group. An index that
        was just created, or whose group had to be created (a first start, or a group dropped
        while idle, whose entries may have been trimmed since), is rebuilt from the stored
        records first; operations appended from then on are applied after it. Retried every
        second until it succeeds: a vector index that is down when the API starts delays only
        this loop, not the API."""
        while True:
            try:
                new_index = await self._index.prepare()
                if await self.ensure_group() or new_index:
                    if not new_index:  # it may hold posts deleted while it had no group
                        await self._index.clear()
                    await self.skip_to_tip()
                    await self.rebuild()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, "index_prepare_failed", exc)
                await asyncio.sleep(1.0)

    async def run(self, block_ms: int = 200, reclaim_every_s: float = 30.0) -> None:
        """`start()`, then apply operations until cancelled; a failing batch is logged and
        retried. Every `trim_every_s` the entries every group applied are dropped from the stream."""
        await self.start()
        next_reclaim, next_trim = 0.0, time.monotonic() + self._trim_every_s

        async def step() -> None:
            nonlocal next_reclaim, next_trim
            if time.monotonic() >= next_reclaim:
                await self.reclaim()
                next_reclaim = time.monotonic() + reclaim_every_s
            if self._trim_every_s and time.monotonic() >= next_trim:
                next_trim = time.monotonic() + self._trim_every_s
                await trim_consumed(self._redis, keys.INDEX_STREAM, self._drop_idle_groups_s)
            while await self.apply_once(pending=True):
                pass
            await self.apply_once(block_ms=block_ms)
            if self._between_batches is not None:
                await self._between_batches()

        async def recover(exc: Exception) -> None:
            if "NOGROUP" in str(exc):  # the group is gone (Redis lost it, or it was dropped as
                await self.start()  # idle): what it missed may be trimmed, so rebuild

        await forever(step, log, "index_sync_failed", recover=recover)

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Run `run()` as a background task for the duration of the context."""
        return running(self.run(), "index-sync")
