"""Async reads and writes of features in Redis for the API and the pipeline.

Each method does one round trip (a pipeline where it touches several keys).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from redis.asyncio import Redis

from feed.stores import keys
from feed.stores.messages import CatalogChange
from feed.stores.records import SPACES, PostRecord, short_vector_field, vector_field, vector_from_bytes

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


# Each key's newest ARGV[1] members with their scores, all in one flat reply (member, score, ...):
# one command instead of a pipeline of hundreds, whose per-command handling in redis-py cost
# about 20 ms for 200 keys. Keys are arguments, as in the event applier's scripts.
_NEWEST_MANY = """
local n = tonumber(ARGV[1]) - 1
local out = {}
for i = 2, #ARGV do
  local found = redis.call('ZREVRANGE', ARGV[i], 0, n, 'WITHSCORES')
  for j = 1, #found do out[#out + 1] = found[j] end
end
return out
"""

# One more impression for each post key in ARGV: one command for a page, where a ZINCRBY a post
# was 50 commands for redis-py to encode and parse in the API process.
_IMPRESSIONS = """
for i = 1, #ARGV do redis.call('ZINCRBY', KEYS[1], 1, ARGV[i]) end
"""


class FeatureStore:
    """Feature access on one Redis connection pool."""

    def __init__(self, redis: Redis, seen_max: int = 5000) -> None:
        self.redis = redis
        self._seen_max = seen_max
        self._newest_many = redis.register_script(_NEWEST_MANY)
        self._impressions = redis.register_script(_IMPRESSIONS)

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

    async def recent_engagements(self, user_keys: list[str], per_user: int) -> dict[str, tuple[int, float]]:
        """Post key -> (how many of these users liked, commented on or shared it, the newest such
        time), over each user's newest `per_user` engagements.

        Up to thousands of entries per request: one script call reads them (`_NEWEST_MANY`),
        and they are counted in C (Counter, numpy, dict)."""
        if not user_keys or per_user <= 0:
            return {}
        flat: list[bytes] = await self._newest_many(
            args=[per_user, *(keys.user_engaged(u) for u in user_keys)]
        )
        if not flat:
            return {}
        members = flat[0::2]
        times = np.fromiter(map(float, flat[1::2]), dtype=np.float64, count=len(members))
        users = Counter(members)
        ascending = np.argsort(times, kind="stable")
        # written oldest first, so each post keeps its newest time
        newest = dict(zip([members[i] for i in ascending.tolist()], times[ascending].tolist(), strict=True))
        return {post.decode(): (users[post], ts) for post, ts in newest.items()}

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

    async def all_posts(self, batch: int = 2000) -> AsyncIterator[list[PostRecord]]:
        """Every stored post record, `batch` keys at a time (SCAN: posts may come and go meanwhile)."""
        prefix = keys.post("")
        chunk: list[str] = []
        async for raw in self.redis.scan_iter(match=f"{prefix}*", count=1000, _type="hash"):
            chunk.append(raw.decode()[len(prefix) :])  # state and counter hashes are not records
            if len(chunk) >= batch:
                yield list((await self.posts(chunk)).values())
                chunk = []
        yield list((await self.posts(chunk)).values())

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
            await self._impressions(keys=[keys.IMPRESSIONS], args=post_keys, client=pipe)
            pipe.xadd(
                keys.CHANGES_STREAM,
                CatalogChange(impressions=sorted(set(post_keys))).fields(),
                maxlen=keys.CHANGES_MAXLEN,
                approximate=True,
            )
            await pipe.execute()

    async def cf_factors(self, post_keys: list[str]) -> dict[str, np.ndarray]:
        """Item factors of these posts in the current CF model (posts it has not seen are left out)."""
        if not post_keys:
            return {}
        rows: list[Any] = await self.redis.hmget(keys.CF_ITEMS, post_keys)
        return {k: vector_from_bytes(v) for k, v in zip(post_keys, rows, strict=True) if v}
