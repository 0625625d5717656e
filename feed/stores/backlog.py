"""Backlogs read from Redis: work waiting in the event stream, the index-operation stream and
the ingest queue, and the count of applied events (what the `feed_backlog` gauges show)."""

from __future__ import annotations

from typing import Any

import msgspec
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from feed.stores import keys


class BacklogCounts(msgspec.Struct, frozen=True):
    """What is waiting now."""

    events_unread: int  # events not yet delivered to the consumer group
    events_pending: int  # delivered, not yet acknowledged
    index_ops: int  # index operations this API process's shard has not applied
    ingest_queue: int  # ingest tasks Celery has queued
    events_applied: int  # events applied since the store was created


class Backlogs:
    """Reads the backlogs of one API process (its index group) from Redis."""

    def __init__(
        self, redis: Redis, events_stream: str, events_group: str, index_group: str, queue: str
    ) -> None:
        self._redis = redis
        self._events = (events_stream, events_group)
        self._index_group = index_group
        self._queue = queue

    async def _group(self, stream: str, group: str) -> tuple[int, int]:
        """(entries not yet delivered to `group`, entries delivered but not acknowledged)."""
        try:
            groups: list[dict[str, Any]] = await self._redis.xinfo_groups(stream)
        except ResponseError:  # the stream does not exist yet
            return 0, 0
        for g in groups:
            if g["name"] in (group, group.encode()):
                return int(g.get("lag") or 0), int(g["pending"])
        return int(await self._redis.xlen(stream)), 0

    async def read(self) -> BacklogCounts:
        unread, pending = await self._group(*self._events)
        index_unread, index_pending = await self._group(keys.INDEX_STREAM, self._index_group)
        return BacklogCounts(
            events_unread=unread,
            events_pending=pending,
            index_ops=index_unread + index_pending,
            ingest_queue=int(await self._redis.llen(self._queue)),
            events_applied=int(await self._redis.get(keys.APPLIED_EVENTS) or 0),
        )


def settled(r: SyncRedis, events: int) -> bool:
    """Every one of `events` applied (or dropped) and every index group caught up (a replay's
    wait before it asks for feeds)."""
    applied = int(r.get(keys.APPLIED_EVENTS) or 0)
    dropped = sum(int(v) for v in r.hvals(keys.DROPPED_EVENTS))
    groups: Any = r.xinfo_groups(keys.INDEX_STREAM) if r.exists(keys.INDEX_STREAM) else []
    indexed = all(g["pending"] == 0 and not g.get("lag") for g in groups)
    return applied + dropped >= events and indexed
