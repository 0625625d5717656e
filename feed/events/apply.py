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
from redis.exceptions import WatchError

from feed.config import HIDING_ACTIONS, NEGATIVE_ACTIONS, SOCIAL_ACTIONS, Settings
from feed.events.ema import action_weight, ema_update
from feed.events.schemas import InteractionEvent
from feed.stores import keys
from feed.stores.post_store import DELETED, FAILED
from feed.stores.records import SPACES, short_vector_field, vector_field, vector_from_bytes, vector_to_bytes
from feed.stores.streams import pack_keys
from feed.stores.trending import Trending, TrendingBase

log = structlog.get_logger(__name__)

_encode = msgspec.json.Encoder().encode

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
# entry and the applied counter. One call instead of about ten commands per event: command packing
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
_decode_event = msgspec.json.Decoder(InteractionEvent).decode


def _blob(fields: list[bytes | str]) -> bytes:
    """Fields as one argument, each as `<length>:<bytes>` (any bytes, separators included)."""
    parts: list[bytes] = []
    for value in fields:
        raw = value.encode() if isinstance(value, str) else value
        parts += [b"%d:" % len(raw), raw]
    return b"".join(parts)


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
        self._trending_horizons = [Trending.horizon(redis, h) for h in settings.ranking.trending_horizons_s]
        self._script = redis.register_script(_WRITE_BATCH)
        self._hmget_script = redis.register_script(_HMGET_MANY)
        self._fixed_args: list[bytes | str | int] = [
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
            ",".join(t.key for t in self._trending_horizons),
        ]
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
        for trending in (self._trending, *self._trending_horizons):
            await trending.rebase_if_due()
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

    async def _hmget_many(self, hashes: list[str], fields: list[str]) -> list[list[bytes | None]]:
        """HMGET of the same fields on many hashes in one command (values per hash, in order)."""
        if not hashes:
            return []
        flat: list[bytes | None] = await self._hmget_script(args=[len(fields), *fields, *hashes])
        n = len(fields)
        return [flat[i : i + n] for i in range(0, len(flat), n)]

    async def _load_posts(self, post_keys: set[str]) -> tuple[dict[str, _Post], dict[str, str]]:
        ordered = sorted(post_keys)
        rows = await self._hmget_many(
            [keys.post(k) for k in ordered], ["author_key", *(vector_field(s) for s in SPACES)]
        )
        posts: dict[str, _Post] = {}
        for key, (author, *vectors) in zip(ordered, rows, strict=True):
            if author is not None:
                posts[key] = _Post(
                    author.decode(),
                    {s: vector_from_bytes(v) for s, v in zip(SPACES, vectors, strict=True) if v is not None},
                )
        missing = [k for k in ordered if k not in posts]  # why: not ingested yet, deleted or failed
        states = await self._hmget_many([keys.post_state(k) for k in missing], ["state"])
        return posts, {
            k: state.decode() for k, (state,) in zip(missing, states, strict=True) if state is not None
        }

    async def _apply_ready(self, events: list[InteractionEvent], posts: dict[str, _Post]) -> tuple[int, int]:
        if not events:
            return 0, 0
        user_keys = sorted({e.user_key for e in events})
        done_keys = [keys.event_done(e.event_id) for e in events]
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(
                *done_keys,
                *[keys.user(u) for u in user_keys],
                keys.TRENDING_META,
                *(t.meta_key for t in self._trending_horizons),
            )
            # Read everything in one round trip on another connection: WATCH came first, so
            # a write after these reads still makes the EXEC below fail and the batch retry.
            fields = [field_of(s) for field_of, _ in self._horizons for s in SPACES]
            done = await self._redis.mget(done_keys)
            user_rows = await self._hmget_many([keys.user(u) for u in user_keys], fields)
            trending = await self._trending.base(pipe)
            horizon_bases = [await t.base(pipe) for t in self._trending_horizons]
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
            user_writes: list[bytes | str] = []
            for u, name in sorted(touched):
                vec = vectors[u, name]
                user_writes += [u, name, b"" if vec is None else vector_to_bytes(vec)]
            event_args: list[bytes | str] = []
            for event in todo:
                event_args += self._event_args(event, posts[event.post_key], trending, horizon_bases)
            changes = {
                "posts": pack_keys(sorted({e.post_key for e in todo})),
                "authors": pack_keys(sorted({posts[e.post_key].author_key for e in todo})),
            }
            await self._script(
                args=[
                    *self._fixed_args,
                    len(todo),
                    len(touched),
                    len(counts),
                    _blob(
                        [
                            *event_args,
                            *user_writes,
                            *(x for u, n in counts.items() for x in (u, str(n))),
                            changes["posts"],
                            changes["authors"],
                        ]
                    ),
                ],
                client=pipe,
            )
            await pipe.execute()
        return len(todo), len(events) - len(todo)

    def _event_args(
        self, event: InteractionEvent, post: _Post, trending: TrendingBase, horizon_bases: list[TrendingBase]
    ) -> list[bytes | str]:
        """One event's fields for the batch script (see `_WRITE_BATCH`)."""
        weight = action_weight(event.action, event.dwell_ms, self._ranking)
        counted = weight > 0.0 and event.action not in NEGATIVE_ACTIONS
        units = trending.units(weight, event.ts) if counted else 0.0
        return [
            event.event_id,
            event.user_key,
            event.post_key,
            post.author_key,
            event.action,
            repr(event.ts),
            repr(weight),
            repr(units),
            "1" if event.action in HIDING_ACTIONS else "0",
            # public engagement: shown to followers; a later negative action takes it back
            "1" if event.action in SOCIAL_ACTIONS else "-1" if event.action in NEGATIVE_ACTIONS else "0",
            ",".join(repr(h.units(weight, event.ts)) for h in horizon_bases) if counted else "",
        ]

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
