"""The interaction events' writes: one batch of events in one optimistic Redis transaction.

`InteractionWrites.batch` WATCHes the batch's done-markers, its users' hashes and the
trending bases, reads what the event applier needs (which events are done, the users'
interest vectors, the trending bases), and `BatchTransaction.commit` writes everything
(done-markers, counters, seen sets, affinity, hidden authors, public engagements, trending,
the interaction log, interest vectors, event counts, the changes-stream entry, the applied
counter) in one MULTI/EXEC with one script call. A concurrent writer makes the commit raise
`WriteConflict`, and the applier retries the batch. Also kept here: events parked until
their post arrives, and the counted drops. What the writes mean (deduplication, parking,
the EMA maths) is the applier's (`feed/events/apply.py`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from feed.config import Settings
from feed.stores import keys
from feed.stores.messages import pack_keys
from feed.stores.records import SPACES, vector_field, vector_from_bytes, vector_to_bytes
from feed.stores.trending import Trending, TrendingBase

# HMGET of the same fields (ARGV[2..n+1]) on many hashes (the rest), values flattened in order.
_HMGET_MANY = """
local n = tonumber(ARGV[1])
local out = {}
for i = n + 2, #ARGV do
  local values = redis.call('HMGET', ARGV[i], unpack(ARGV, 2, n + 1))
  for j = 1, n do out[#out + 1] = values[j] end
end
return out
"""

# All writes of a batch in one script call (inside the MULTI that watches the batch's users):
# per event its done-marker, counters, seen set, affinity, hidden authors, public engagements
# (the social source's), trending (and its extra horizons) and the interaction log; per (user,
# field) its new interest vector (empty: delete); per user its event count; then the changes-stream
# entry (a `CatalogChange`'s posts and authors fields) and the applied counter. The log entries are
# `LoggedInteraction`s (messages.py). One call instead of about ten commands per event: command packing
# in the client was the consumer's bottleneck.
# Key names come from `feed.stores.keys` as templates (%s: an id), so they are defined once.
# ARGV: the fixed settings (`_fixed_args`, ending with the trending horizons' keys, comma-joined),
# then n_events, n_vectors, n_users and one blob of length-prefixed fields (`<len>:<bytes>`, see
# `_blob`): the events (11 fields each, the last their units per horizon, comma-joined), the
# vector triples, the (user, count) pairs, and the changes' two key lists. One blob instead of
# thousands of arguments: redis-py encodes each argument in Python.
_WRITE_BATCH = """
local done_tpl, counts_tpl, seen_tpl, affinity_tpl, hidden_tpl, user_tpl, engaged_tpl = unpack(ARGV, 1, 7)
local reach_key, trending_key, log_key, changes_key, applied_key = unpack(ARGV, 8, 12)
local ttl, seen_max, log_max, changes_max, engaged_keep = unpack(ARGV, 13, 17)
local horizon_keys = {}
for key in string.gmatch(ARGV[18], '[^,]+') do horizon_keys[#horizon_keys + 1] = key end
local n_events, n_vectors, n_users = tonumber(ARGV[19]), tonumber(ARGV[20]), tonumber(ARGV[21])
local blob, pos = ARGV[22], 1
local function field()
  local colon = string.find(blob, ':', pos, true)
  local stop = colon + tonumber(string.sub(blob, pos, colon - 1))
  pos = stop + 1
  return string.sub(blob, colon + 1, stop)
end
local users, engagers = {}, {}
for _ = 1, n_events do
  local id, user, post, author, action = field(), field(), field(), field(), field()
  local ts, weight, units, hides, social = field(), field(), field(), field(), field()
  local horizon_units = field()  -- empty when the event does not count for trending
  redis.call('SET', string.format(done_tpl, id), 1, 'EX', ttl)
  redis.call('HINCRBY', string.format(counts_tpl, post), action, 1)
  redis.call('ZINCRBY', reach_key, 1, author)
  redis.call('ZADD', string.format(seen_tpl, user), ts, post)
  users[user] = true
  if tonumber(weight) ~= 0 then
    redis.call('ZINCRBY', string.format(affinity_tpl, user), weight, author)
  end
  if hides == '1' then
    redis.call('SADD', string.format(hidden_tpl, user), author)
  end
  if social == '1' then  -- GT: the newest of the user's engagements with the post
    redis.call('ZADD', string.format(engaged_tpl, user), 'GT', ts, post)
    engagers[user] = true
  elseif social == '-1' then
    redis.call('ZREM', string.format(engaged_tpl, user), post)
  end
  if tonumber(units) > 0 then
    redis.call('ZINCRBY', trending_key, units, post)
  end
  local h = 0
  for value in string.gmatch(horizon_units, '[^,]+') do
    h = h + 1
    if tonumber(value) > 0 then
      redis.call('ZINCRBY', horizon_keys[h], value, post)
    end
  end
  redis.call('XADD', log_key, 'MAXLEN', '~', log_max, '*',
             'user', user, 'post', post, 'action', action, 'ts', ts)
end
for user in pairs(users) do
  redis.call('ZREMRANGEBYRANK', string.format(seen_tpl, user), 0, -(tonumber(seen_max) + 1))
end
for user in pairs(engagers) do
  redis.call('ZREMRANGEBYRANK', string.format(engaged_tpl, user), 0, -(tonumber(engaged_keep) + 1))
end
for _ = 1, n_vectors do
  local user, name, vector = field(), field(), field()
  if vector == '' then
    redis.call('HDEL', string.format(user_tpl, user), name)
  else
    redis.call('HSET', string.format(user_tpl, user), name, vector)
  end
end
for _ = 1, n_users do
  local user, count = field(), field()
  redis.call('HINCRBY', string.format(user_tpl, user), 'events', count)
end
if n_events > 0 then
  redis.call('INCRBY', applied_key, n_events)
  local posts, authors = field(), field()
  redis.call('XADD', changes_key, 'MAXLEN', '~', changes_max, '*', 'posts', posts, 'authors', authors)
end
return n_events
"""


class WriteConflict(Exception):
    """Another writer changed what the batch read: apply it again."""


@dataclass(frozen=True, slots=True)
class PostVectors:
    """What the applier needs of a post: its author and its vectors per space."""

    author_key: str
    vectors: dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class EventWrite:
    """One event's writes (see `_WRITE_BATCH`)."""

    event_id: str
    user_key: str
    post_key: str
    author_key: str
    action: str
    ts: float
    weight: float  # the action's weight: added to the user's affinity for the author when not 0
    units: float  # added to the post's trending score (0: not counted)
    horizon_units: tuple[float, ...] | None  # per extra horizon; None: not counted
    hides: bool  # the author joins the user's hidden authors
    social: int  # 1: a public engagement the user's followers see; -1: one taken back; 0: neither


@dataclass(slots=True)
class BatchWrites:
    """A batch's writes: its events, the users' changed interest vectors (None: deleted), the
    events counted per user."""

    events: list[EventWrite] = field(default_factory=list)
    vectors: dict[tuple[str, str], np.ndarray | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _blob(fields: list[bytes | str]) -> bytes:
    """Fields as one argument, each as `<length>:<bytes>` (any bytes, separators included)."""
    parts: list[bytes] = []
    for value in fields:
        raw = value.encode() if isinstance(value, str) else value
        parts += [b"%d:" % len(raw), raw]
    return b"".join(parts)


def _event_fields(e: EventWrite) -> list[bytes | str]:
    return [
        e.event_id,
        e.user_key,
        e.post_key,
        e.author_key,
        e.action,
        repr(e.ts),
        repr(e.weight),
        repr(e.units),
        "1" if e.hides else "0",
        str(e.social),
        "" if e.horizon_units is None else ",".join(repr(u) for u in e.horizon_units),
    ]


class BatchTransaction:
    """What a batch read under WATCH, and its commit."""

    def __init__(
        self,
        store: InteractionWrites,
        pipe: Pipeline,
        done: list[bool],
        vectors: dict[tuple[str, str], np.ndarray | None],
        trending: TrendingBase,
        horizons: list[TrendingBase],
    ) -> None:
        self._store = store
        self._pipe = pipe
        self.done = done  # per event id asked for: applied before
        self.vectors = vectors  # (user, vector field) -> the stored interest vector (None: none)
        self.trending = trending
        self.horizons = horizons

    async def commit(self, writes: BatchWrites) -> None:
        """Write the batch in one MULTI/EXEC; raises `WriteConflict` if what it read changed."""
        pipe = self._pipe
        pipe.multi()  # type: ignore[no-untyped-call]
        vector_fields: list[bytes | str] = []
        for (user, name), vector in sorted(writes.vectors.items()):
            vector_fields += [user, name, b"" if vector is None else vector_to_bytes(vector)]
        event_fields = [f for e in writes.events for f in _event_fields(e)]
        posts = pack_keys(sorted({e.post_key for e in writes.events}))
        authors = pack_keys(sorted({e.author_key for e in writes.events}))
        await self._store.write_script(
            args=[
                *self._store.fixed_args,
                len(writes.events),
                len(writes.vectors),
                len(writes.counts),
                _blob(
                    [
                        *event_fields,
                        *vector_fields,
                        *(x for u, n in writes.counts.items() for x in (u, str(n))),
                        posts,
                        authors,
                    ]
                ),
            ],
            client=pipe,
        )
        try:
            await pipe.execute()
        except WatchError as exc:
            raise WriteConflict from exc


class InteractionWrites:
    """The event applier's reads and writes in Redis."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        ranking = settings.ranking
        self.trending = Trending(redis, ranking.trending_half_life_s)
        self.trending_horizons = [Trending.horizon(redis, h) for h in ranking.trending_horizons_s]
        self.write_script = redis.register_script(_WRITE_BATCH)
        self._hmget_script = redis.register_script(_HMGET_MANY)
        self.fixed_args: list[bytes | str | int] = [
            keys.event_done("%s"),
            keys.post_counts("%s"),
            keys.user_seen("%s"),
            keys.user_affinity("%s"),
            keys.user_hidden_authors("%s"),
            keys.user("%s"),
            keys.user_engaged("%s"),
            keys.AUTHOR_REACH,
            keys.TRENDING,
            keys.INTERACTION_LOG,
            keys.CHANGES_STREAM,
            keys.APPLIED_EVENTS,
            settings.event_dedupe_ttl_s,
            settings.seen_max,
            settings.cf_log_max,
            keys.CHANGES_MAXLEN,
            settings.social_engaged_keep,
            ",".join(t.key for t in self.trending_horizons),
        ]

    async def rebase_trending(self) -> None:
        """Rescale the trending sets whose base is due (`Trending.rebase_if_due`)."""
        for trending in (self.trending, *self.trending_horizons):
            await trending.rebase_if_due()

    async def _hmget_many(self, hashes: list[str], fields: list[str]) -> list[list[bytes | None]]:
        """HMGET of the same fields on many hashes in one command (values per hash, in order)."""
        if not hashes:
            return []
        flat: list[bytes | None] = await self._hmget_script(args=[len(fields), *fields, *hashes])
        n = len(fields)
        return [flat[i : i + n] for i in range(0, len(flat), n)]

    async def load_posts(self, post_keys: set[str]) -> tuple[dict[str, PostVectors], dict[str, str]]:
        """The posts that are ingested, and the state (deleted, failed) of those that are not."""
        ordered = sorted(post_keys)
        rows = await self._hmget_many(
            [keys.post(k) for k in ordered], ["author_key", *(vector_field(s) for s in SPACES)]
        )
        posts: dict[str, PostVectors] = {}
        for key, (author, *vectors) in zip(ordered, rows, strict=True):
            if author is not None:
                posts[key] = PostVectors(
                    author.decode(),
                    {s: vector_from_bytes(v) for s, v in zip(SPACES, vectors, strict=True) if v is not None},
                )
        missing = [k for k in ordered if k not in posts]  # why: not ingested yet, deleted or failed
        states = await self._hmget_many([keys.post_state(k) for k in missing], ["state"])
        return posts, {
            k: state.decode() for k, (state,) in zip(missing, states, strict=True) if state is not None
        }

    @contextlib.asynccontextmanager
    async def batch(
        self, event_ids: Sequence[str], user_keys: Sequence[str], vector_fields: Sequence[str]
    ) -> AsyncIterator[BatchTransaction]:
        """WATCH what a batch depends on and read it: which events were applied, the users'
        `vector_fields`, the trending bases; the batch then commits or conflicts."""
        done_keys = [keys.event_done(i) for i in event_ids]
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(
                *done_keys,
                *[keys.user(u) for u in user_keys],
                keys.TRENDING_META,
                *(t.meta_key for t in self.trending_horizons),
            )
            # Read everything in one round trip on another connection: WATCH came first, so
            # a write after these reads still makes the EXEC fail and the batch retry.
            done = await self._redis.mget(done_keys)
            rows = await self._hmget_many([keys.user(u) for u in user_keys], list(vector_fields))
            vectors: dict[tuple[str, str], np.ndarray | None] = {}
            for user, raw in zip(user_keys, rows, strict=True):
                for name, value in zip(vector_fields, raw, strict=True):
                    vectors[user, name] = vector_from_bytes(value) if value else None
            trending = await self.trending.base(pipe)
            horizons = [await t.base(pipe) for t in self.trending_horizons]
            yield BatchTransaction(self, pipe, [d is not None for d in done], vectors, trending, horizons)

    async def park(self, post_key: str, event: bytes) -> None:
        """Keep an encoded event until its post arrives."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(keys.pending_events(post_key), event)
        pipe.zadd(keys.PENDING_POSTS, {post_key: time.time()}, nx=True)
        await pipe.execute()

    async def parked_posts(self) -> list[tuple[str, float]]:
        """(post key, since when events wait for it), oldest first."""
        waiting: list[Any] = await self._redis.zrange(keys.PENDING_POSTS, 0, -1, withscores=True)
        return [(raw.decode(), float(since)) for raw, since in waiting]

    async def parked_events(self, post_key: str) -> list[bytes]:
        """The encoded events waiting for `post_key`, in arrival order."""
        found: list[bytes] = await self._redis.lrange(keys.pending_events(post_key), 0, -1)  # type: ignore[assignment]
        return found

    async def unpark(self, post_key: str, n: int) -> None:
        """Remove the first `n` events waiting for `post_key` (handled); forget the post when
        none is left (events parked meanwhile stay)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.ltrim(keys.pending_events(post_key), n, -1)
        pipe.llen(keys.pending_events(post_key))
        _, left = await pipe.execute()
        if not left:
            await self._redis.zrem(keys.PENDING_POSTS, post_key)

    async def count_dropped(self, reason: str, n: int) -> None:
        """Count `n` events dropped for `reason` (`feed:stats:dropped_events`)."""
        await self._redis.hincrby(keys.DROPPED_EVENTS, reason, n)
