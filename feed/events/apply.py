"""Applying interaction events to the feature store, exactly once per event id.

A batch is applied in one optimistic transaction (`feed/stores/interaction_writes.py`):
what it depends on is watched and read, new interest vectors are computed here by EMA, and
every write commits at once. A concurrent writer makes the batch retry; a replayed event
finds its done-marker and changes nothing.

Events whose post is not ingested yet are parked per post and applied by
`retry_pending` once it is; after `pending_event_ttl_s` they are dropped and
counted under a reason, as are events on deleted or failed posts.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import structlog

from feed.config import HIDING_ACTIONS, NEGATIVE_ACTIONS, SOCIAL_ACTIONS, Settings
from feed.events.ema import action_weight, ema_update
from feed.events.schemas import InteractionEvent
from feed.stores.interaction_writes import (
    BatchTransaction,
    BatchWrites,
    EventWrite,
    InteractionWrites,
    PostVectors,
    WriteConflict,
)
from feed.stores.post_store import DELETED, FAILED
from feed.stores.records import SPACES, short_vector_field, vector_field

log = structlog.get_logger(__name__)

_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(InteractionEvent).decode


@dataclass(slots=True)
class ApplyResult:
    """What happened to a batch."""

    applied: int = 0
    duplicates: int = 0
    parked: int = 0
    dropped: int = 0


class EventApplier:
    """Applies batches of interaction events through `InteractionWrites`."""

    def __init__(self, writes: InteractionWrites, settings: Settings) -> None:
        self._writes = writes
        self._settings = settings
        self._ranking = settings.ranking
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
        await self._writes.rebase_trending()
        posts, states = await self._writes.load_posts({e.post_key for e in unique})
        ready: list[InteractionEvent] = []
        for event in unique:
            if event.post_key in posts:
                ready.append(event)
            elif states.get(event.post_key) in (DELETED, FAILED):
                await self._drop(f"{states[event.post_key]}_post", 1)
                result.dropped += 1
            else:
                await self._writes.park(event.post_key, _encode(event))
                result.parked += 1
        for _ in range(max_tries):
            try:
                applied, dupes = await self._apply_ready(ready, posts)
            except WriteConflict:
                continue
            result.applied += applied
            result.duplicates += dupes
            return result
        raise RuntimeError(f"event batch kept conflicting after {max_tries} tries")

    async def _apply_ready(
        self, events: list[InteractionEvent], posts: dict[str, PostVectors]
    ) -> tuple[int, int]:
        if not events:
            return 0, 0
        user_keys = sorted({e.user_key for e in events})
        fields = [field_of(s) for field_of, _ in self._horizons for s in SPACES]
        async with self._writes.batch([e.event_id for e in events], user_keys, fields) as tx:
            todo = [e for e, done in zip(events, tx.done, strict=True) if not done]
            writes = BatchWrites(events=[self._event_write(e, posts[e.post_key], tx) for e in todo])
            vectors = tx.vectors
            counts: dict[str, int] = defaultdict(int)
            for event in sorted(todo, key=lambda e: e.ts):
                weight = action_weight(event.action, event.dwell_ms, self._ranking)
                for space, post_vector in posts[event.post_key].vectors.items():
                    for field_of, rate in self._horizons:
                        slot = (event.user_key, field_of(space))
                        vectors[slot] = ema_update(vectors[slot], post_vector, weight, rate)
                        writes.vectors[slot] = vectors[slot]
                counts[event.user_key] += 1
            writes.counts = dict(counts)
            await tx.commit(writes)
        return len(todo), len(events) - len(todo)

    def _event_write(self, event: InteractionEvent, post: PostVectors, tx: BatchTransaction) -> EventWrite:
        """What one event writes besides the interest vectors."""
        weight = action_weight(event.action, event.dwell_ms, self._ranking)
        counted = weight > 0.0 and event.action not in NEGATIVE_ACTIONS  # counts for trending
        return EventWrite(
            event_id=event.event_id,
            user_key=event.user_key,
            post_key=event.post_key,
            author_key=post.author_key,
            action=event.action,
            ts=event.ts,
            weight=weight,
            units=tx.trending.units(weight, event.ts) if counted else 0.0,
            horizon_units=tuple(h.units(weight, event.ts) for h in tx.horizons) if counted else None,
            hides=event.action in HIDING_ACTIONS,
            # public engagement: shown to followers; a later negative action takes it back
            social=1 if event.action in SOCIAL_ACTIONS else -1 if event.action in NEGATIVE_ACTIONS else 0,
        )

    async def _drop(self, reason: str, n: int) -> None:
        await self._writes.count_dropped(reason, n)
        log.info("events_dropped", reason=reason, count=n)

    async def retry_pending(self, now: float | None = None) -> ApplyResult:
        """Apply parked events whose post now exists; drop (counted) those parked too long."""
        now = time.time() if now is None else now
        total = ApplyResult()
        for post_key, since in await self._writes.parked_posts():
            raw_events = await self._writes.parked_events(post_key)
            events = [_decode_event(r) for r in raw_events]
            posts, states = await self._writes.load_posts({post_key})
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
            await self._writes.unpark(post_key, len(raw_events))
        return total
