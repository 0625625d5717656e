"""Async reads and writes of features in Redis for the API and the pipeline.

Each method does one round trip (a pipeline where it touches several keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from redis.asyncio import Redis

from feed.stores import keys
from feed.stores.records import SPACES, PostRecord, short_vector_field, vector_field, vector_from_bytes
from feed.stores.streams import pack_keys
from feed.stores.trending import Trending

_tags_decoder = msgspec.json.Decoder(dict[str, int])


@dataclass(frozen=True, slots=True)
class UserFeatures:
    """What the engine has learnt about a user: interest vectors per embedding space, and more.

    `vectors` are the long-term interests, `short_vectors` follow the last few interactions.
    """

    vectors: dict[str, np.ndarray]
    events: int
    seen: frozenset[str]
    affinity: dict[str, float]
    hidden_authors: frozenset[str] = frozenset()
    cf: np.ndarray | None = None  # factors in the current collaborative-filtering model
    cf_version: int = 0  # that model's version
    short_vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def interest_queries(self) -> list[tuple[str, np.ndarray]]:
        """(space, vector) of every interest vector, long-term ones first."""
        return [*self.vectors.items(), *self.short_vectors.items()]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """A post on an author's timeline."""

    post_key: str
    created_at: float


class FeatureStore:
    """Feature access on one Redis connection pool."""

    def __init__(self, redis: Redis, seen_max: int = 5000, trending_half_life_s: float = 6 * 3600.0) -> None:
        self.redis = redis
        self._seen_max = seen_max
        self.trending = Trending(redis, trending_half_life_s)

    async def user_features(self, user_key: str) -> UserFeatures:
        """Interest vectors, event count, seen posts and author affinity of a user."""
        pipe = self.redis.pipeline(transaction=True)  # the CF factors and their model version from one model
        pipe.hmget(
            keys.user(user_key),
            ["events", *(vector_field(s) for s in SPACES), *(short_vector_field(s) for s in SPACES)],
        )
        pipe.zrevrange(keys.user_seen(user_key), 0, self._seen_max - 1)
        pipe.zrevrange(keys.user_affinity(user_key), 0, 499, withscores=True)
        pipe.smembers(keys.user_hidden_authors(user_key))
        pipe.hget(keys.CF_USERS, user_key)
        pipe.hget(keys.CF_META, "version")
        replies: list[Any] = await pipe.execute()
        (raw_events, *raw_vectors), seen, affinity, hidden, cf, cf_version = replies
        n = len(SPACES)
        long_term, short_term = raw_vectors[:n], raw_vectors[n:]
        return UserFeatures(
            vectors={s: vector_from_bytes(v) for s, v in zip(SPACES, long_term, strict=True) if v},
            short_vectors={s: vector_from_bytes(v) for s, v in zip(SPACES, short_term, strict=True) if v},
            events=int(raw_events or 0),
            seen=frozenset(s.decode() for s in seen),
            affinity={a.decode(): float(s) for a, s in affinity},
            hidden_authors=frozenset(a.decode() for a in hidden),
            cf=vector_from_bytes(cf) if cf else None,
            cf_version=int(cf_version or 0),
        )

    async def timelines(
        self, author_keys: list[str], per_author: int, newer_than: float
    ) -> list[TimelineEntry]:
        """Newest posts of each author, created after `newer_than` (epoch seconds)."""
        if not author_keys:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for author in author_keys:
            pipe.zrevrangebyscore(
                keys.timeline(author), "+inf", newer_than, start=0, num=per_author, withscores=True
            )
        entries: list[TimelineEntry] = []
        replies: list[Any] = await pipe.execute()
        for rows in replies:
            entries.extend(TimelineEntry(m.decode(), float(s)) for m, s in rows)
        return entries

    async def recent(self, limit: int) -> list[TimelineEntry]:
        """Newest ingested posts across all authors."""
        rows: list[Any] = await self.redis.zrevrange(keys.RECENT_POSTS, 0, limit - 1, withscores=True)
        return [TimelineEntry(m.decode(), float(s)) for m, s in rows]

    async def posts(self, post_keys: list[str]) -> dict[str, PostRecord]:
        """Stored records of these posts; absent (never ingested or deleted) ones are left out."""
        if not post_keys:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        fields = PostRecord.fields()
        for key in post_keys:
            pipe.hmget(keys.post(key), fields)
        out: dict[str, PostRecord] = {}
        for key, values in zip(post_keys, await pipe.execute(), strict=True):
            record = PostRecord.from_values(key, values)
            if record is not None:
                out[key] = record
        return out

    async def post_texts(self, post_keys: list[str]) -> dict[str, str]:
        """Text, transcript and detected object classes of each post, as one string."""
        if not post_keys:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for key in post_keys:
            pipe.hmget(keys.post(key), ["text", "transcript", "tags"])
        out: dict[str, str] = {}
        for key, (text, transcript, tags) in zip(post_keys, await pipe.execute(), strict=True):
            objects = " ".join(_tags_decoder.decode(tags)) if tags else ""
            out[key] = " ".join(((text or b"").decode(), (transcript or b"").decode(), objects))
        return out

    async def record_impressions(self, post_keys: list[str]) -> None:
        """Count one more impression for each of these posts."""
        if post_keys:
            pipe = self.redis.pipeline(transaction=False)
            for key in post_keys:
                pipe.zincrby(keys.IMPRESSIONS, 1, key)
            pipe.xadd(
                keys.CHANGES_STREAM,
                {"impressions": pack_keys(sorted(set(post_keys)))},
                maxlen=keys.CHANGES_MAXLEN,
                approximate=True,
            )
            await pipe.execute()

    async def impressions(self, post_keys: list[str]) -> dict[str, float]:
        """Times each post was served (0 for never)."""
        if not post_keys:
            return {}
        counts: list[float | None] = await self.redis.zmscore(keys.IMPRESSIONS, post_keys)
        return {k: c or 0.0 for k, c in zip(post_keys, counts, strict=True)}

    async def author_reach(self, author_keys: list[str]) -> dict[str, float]:
        """Interactions each author's posts received (0 for none)."""
        if not author_keys:
            return {}
        counts: list[float | None] = await self.redis.zmscore(keys.AUTHOR_REACH, author_keys)
        return {k: c or 0.0 for k, c in zip(author_keys, counts, strict=True)}

    async def cf_factors(self, post_keys: list[str]) -> dict[str, np.ndarray]:
        """Item factors of these posts in the current CF model (posts it has not seen are left out)."""
        if not post_keys:
            return {}
        rows: list[Any] = await self.redis.hmget(keys.CF_ITEMS, post_keys)
        return {k: vector_from_bytes(v) for k, v in zip(post_keys, rows, strict=True) if v}

    async def post_counts(self, post_keys: list[str]) -> dict[str, dict[str, float]]:
        """Interaction counts per action for each post (empty dict when none)."""
        if not post_keys:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for key in post_keys:
            pipe.hgetall(keys.post_counts(key))
        return {
            key: {a.decode(): float(c) for a, c in raw.items()}
            for key, raw in zip(post_keys, await pipe.execute(), strict=True)
        }
