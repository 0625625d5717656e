"""Applying interaction events to the feature store, exactly once per event id.

A batch is applied in one optimistic transaction: the users' vector hashes and
the events' done-markers are WATCHed, new vectors are computed in Python, and
every write (vectors, counters, seen sets, affinity, trending, done-markers)
commits in one MULTI/EXEC. A concurrent writer makes the batch retry; a replayed
event finds its done-marker and changes nothing.

Events whose post is not ingested yet are parked per post and applied by
`retry_pending` once it is; after `pending_event_ttl_s` they are dropped and
counted under a reason, as are events on deleted or failed posts.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from feed.config import HIDING_ACTIONS, NEGATIVE_ACTIONS, Settings
from feed.events.ema import action_weight, ema_update
from feed.events.schemas import InteractionEvent
from feed.stores import keys
from feed.stores.post_store import DELETED, FAILED
from feed.stores.records import SPACES, short_vector_field, vector_field, vector_from_bytes, vector_to_bytes
from feed.stores.streams import pack_keys
from feed.stores.trending import Trending, TrendingBase

log = structlog.get_logger(__name__)

_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(InteractionEvent).decode


@dataclass(frozen=True, slots=True)
class _Post:
    author_key: str
    vectors: dict[str, np.ndarray]


@dataclass(slots=True)
class ApplyResult:
    """What happened to a batch."""

    applied: int = 0
    duplicates: int = 0
    parked: int = 0
    dropped: int = 0


class EventApplier:
    """Applies batches of interaction events to Redis."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._ranking = settings.ranking
        self._trending = Trending(redis, settings.ranking.trending_half_life_s)
        # (user hash field of a space's vector, EMA rate): the long- and the short-term vector
        self._horizons: list[tuple[Callable[[str], str], float]] = [
            (vector_field, settings.ranking.ema_rate),
            (short_vector_field, settings.ranking.short_ema_rate),
        ]

    async def apply(self, events: list[InteractionEvent], max_tries: int = 20) -> ApplyResult:
        """Apply a batch; safe to call again with the same events."""
        unique = list({e.event_id: e for e in events}.values())
        result = ApplyResult(duplicates=len(events) - len(unique))
        if not unique:
            return result
        await self._trending.rebase_if_due()
        posts, states = await self._load_posts({e.post_key for e in unique})
        ready: list[InteractionEvent] = []
        for event in unique:
            if event.post_key in posts:
                ready.append(event)
            elif states.get(event.post_key) in (DELETED, FAILED):
                await self._drop(f"{states[event.post_key]}_post", 1)
                result.dropped += 1
            else:
                await self._park(event)
                result.parked += 1
        for _ in range(max_tries):
            try:
                applied, dupes = await self._apply_ready(ready, posts)
            except WatchError:
                continue
            result.applied += applied
            result.duplicates += dupes
            return result
        raise RuntimeError(f"event batch kept conflicting after {max_tries} tries")

    async def _load_posts(self, post_keys: set[str]) -> tuple[dict[str, _Post], dict[str, str]]:
        ordered = sorted(post_keys)
        pipe = self._redis.pipeline(transaction=False)
        for key in ordered:
            pipe.hmget(keys.post(key), ["author_key", *(vector_field(s) for s in SPACES)])
            pipe.hget(keys.post_state(key), "state")
        replies = await pipe.execute()
        posts: dict[str, _Post] = {}
        states: dict[str, str] = {}
        for i, key in enumerate(ordered):
            (author, *vectors), state = replies[2 * i], replies[2 * i + 1]
            if author is not None:
                posts[key] = _Post(
                    author.decode(),
                    {s: vector_from_bytes(v) for s, v in zip(SPACES, vectors, strict=True) if v is not None},
                )
            if state is not None:
                states[key] = state.decode()
        return posts, states

    async def _apply_ready(self, events: list[InteractionEvent], posts: dict[str, _Post]) -> tuple[int, int]:
        if not events:
            return 0, 0
        user_keys = sorted({e.user_key for e in events})
        done_keys = [keys.event_done(e.event_id) for e in events]
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*done_keys, *[keys.user(u) for u in user_keys], keys.TRENDING_META)
            # Read everything in one round trip on another connection: WATCH came first, so
            # a write after these reads still makes the EXEC below fail and the batch retry.
            fields = [field_of(s) for field_of, _ in self._horizons for s in SPACES]
            reader = self._redis.pipeline(transaction=False)
            reader.mget(done_keys)
            for u in user_keys:
                reader.hmget(keys.user(u), fields)
            done, *user_rows = await reader.execute()
            trending = await self._trending.base(pipe)
            todo = [e for e, d in zip(events, done, strict=True) if d is None]
            vectors: dict[tuple[str, str], np.ndarray | None] = {}
            counts: dict[str, int] = defaultdict(int)
            for u, raw in zip(user_keys, user_rows, strict=True):
                for name, value in zip(fields, raw, strict=True):
                    vectors[u, name] = vector_from_bytes(value) if value else None
            touched: set[tuple[str, str]] = set()
            for event in sorted(todo, key=lambda e: e.ts):
                weight = action_weight(event.action, event.dwell_ms, self._ranking)
                for space, post_vector in posts[event.post_key].vectors.items():
                    for field_of, rate in self._horizons:
                        slot = (event.user_key, field_of(space))
                        vectors[slot] = ema_update(vectors[slot], post_vector, weight, rate)
                        touched.add(slot)
                counts[event.user_key] += 1
            pipe.multi()  # type: ignore[no-untyped-call]
            for u, name in sorted(touched):
                vec = vectors[u, name]
                if vec is None:
                    pipe.hdel(keys.user(u), name)
                else:
                    pipe.hset(keys.user(u), name, vector_to_bytes(vec))
            for u, n in counts.items():
                pipe.hincrby(keys.user(u), "events", n)
            for event in todo:
                self._queue_counters(pipe, event, posts[event.post_key], trending)
            for event in todo:
                pipe.xadd(
                    keys.INTERACTION_LOG,
                    {"user": event.user_key, "post": event.post_key, "action": event.action, "ts": event.ts},
                    maxlen=self._settings.cf_log_max,
                    approximate=True,
                )
            if todo:
                pipe.incrby(keys.APPLIED_EVENTS, len(todo))
                pipe.xadd(
                    keys.CHANGES_STREAM,
                    {
                        "posts": pack_keys(sorted({e.post_key for e in todo})),
                        "authors": pack_keys(sorted({posts[e.post_key].author_key for e in todo})),
                    },
                    maxlen=keys.CHANGES_MAXLEN,
                    approximate=True,
                )
            await pipe.execute()
        return len(todo), len(events) - len(todo)

    def _queue_counters(
        self, p: Pipeline, event: InteractionEvent, post: _Post, trending: TrendingBase
    ) -> None:
        """Queue the per-event writes on a MULTI pipeline."""
        weight = action_weight(event.action, event.dwell_ms, self._ranking)
        ttl = self._settings.event_dedupe_ttl_s
        p.set(keys.event_done(event.event_id), 1, ex=ttl)
        p.hincrby(keys.post_counts(event.post_key), event.action, 1)
        p.zincrby(keys.AUTHOR_REACH, 1, post.author_key)
        seen = keys.user_seen(event.user_key)
        p.zadd(seen, {event.post_key: event.ts})
        p.zremrangebyrank(seen, 0, -(self._settings.seen_max + 1))
        if weight != 0.0:
            p.zincrby(keys.user_affinity(event.user_key), weight, post.author_key)
        if event.action in HIDING_ACTIONS:
            p.sadd(keys.user_hidden_authors(event.user_key), post.author_key)
        if weight > 0.0 and event.action not in NEGATIVE_ACTIONS:
            Trending.increment(p, trending, event.post_key, weight, event.ts)

    async def _park(self, event: InteractionEvent) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(keys.pending_events(event.post_key), _encode(event))
        pipe.zadd(keys.PENDING_POSTS, {event.post_key: time.time()}, nx=True)
        await pipe.execute()

    async def _drop(self, reason: str, n: int) -> None:
        await self._redis.hincrby(keys.DROPPED_EVENTS, reason, n)
        log.info("events_dropped", reason=reason, count=n)

    async def retry_pending(self, now: float | None = None) -> ApplyResult:
        """Apply parked events whose post now exists; drop (counted) those parked too long."""
        now = time.time() if now is None else now
        total = ApplyResult()
        waiting: list[Any] = await self._redis.zrange(keys.PENDING_POSTS, 0, -1, withscores=True)
        for raw_key, since in waiting:
            post_key = raw_key.decode()
            raw_events = await self._redis.lrange(keys.pending_events(post_key), 0, -1)
            events = [_decode_event(r) for r in raw_events]
            posts, states = await self._load_posts({post_key})
            expired = now - since > self._settings.pending_event_ttl_s
            if post_key in posts:
                result = await self.apply(events)
                total.applied += result.applied
                total.duplicates += result.duplicates
            elif expired or states.get(post_key) in (DELETED, FAILED):
                reason = "unknown_post" if expired else f"{states[post_key]}_post"
                await self._drop(reason, len(events))
                total.dropped += len(events)
            else:
                continue
            pipe = self._redis.pipeline(transaction=True)
            pipe.ltrim(keys.pending_events(post_key), len(raw_events), -1)
            pipe.llen(keys.pending_events(post_key))
            _, left = await pipe.execute()
            if not left:
                await self._redis.zrem(keys.PENDING_POSTS, post_key)
        return total
