"""The batch layer's bookkeeping in Redis: what the last training started and finished on, and
the lock that keeps two retrains from running at once across workers, beats and operators.

The lock is a token SET NX with an expiry longer than a training: it is released (only by its
holder) when the training ends, and a trainer that died holding it loses it when it expires.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.typing import EncodableT, FieldT

from feed.stores import keys

# delete the lock only if it still holds our token (it may have expired and been taken since)
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True, slots=True)
class BatchSnapshot:
    """The counts and times a retrain decision needs; None where no training has happened."""

    applied: int  # interactions the event consumers have applied so far
    started_at: float | None  # the last training's start, whatever its outcome
    trained_events: int | None  # `applied` when the last successful training started
    trained_at: float | None  # when the last successful training started

    @property
    def new_events(self) -> int:
        """Interactions applied since the last successful training started (all of them when none
        has, or when the counter was reset below it)."""
        trained = self.trained_events
        return self.applied - (trained if trained is not None and trained <= self.applied else 0)


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """The batch layer as an operator sees it: the snapshot, how the last training ended, and
    whether one runs now."""

    snapshot: BatchSnapshot
    finished_at: float | None  # the last training's end, whatever its outcome
    outcome: str | None  # of the last training: ok, failed
    error: str | None  # why it failed
    running: bool  # a retrain holds the lock


_SNAPSHOT_FIELDS = ["started_at", "trained_events", "trained_at"]


def _snapshot(applied: Any, started_at: Any, trained_events: Any, trained_at: Any) -> BatchSnapshot:
    return BatchSnapshot(
        applied=int(applied or 0),
        started_at=float(started_at) if started_at is not None else None,
        trained_events=int(trained_events) if trained_events is not None else None,
        trained_at=float(trained_at) if trained_at is not None else None,
    )


async def batch_status(r: AsyncRedis) -> BatchStatus:
    """The batch layer's state in one round trip (for the API, whose Redis client is async)."""
    async with r.pipeline(transaction=False) as pipe:
        pipe.get(keys.APPLIED_EVENTS)
        pipe.hmget(keys.BATCH_STATE, [*_SNAPSHOT_FIELDS, "finished_at", "outcome", "error"])
        pipe.exists(keys.BATCH_LOCK)
        applied, fields, locked = await pipe.execute()
    started_at, trained_events, trained_at, finished_at, outcome, error = fields
    return BatchStatus(
        snapshot=_snapshot(applied, started_at, trained_events, trained_at),
        finished_at=float(finished_at) if finished_at is not None else None,
        outcome=outcome.decode() if outcome is not None else None,
        error=(error.decode() or None) if error is not None else None,
        running=bool(locked),
    )


@dataclass(frozen=True, slots=True)
class TrainingStart:
    """What a training started on: passed back to `BatchState.finish`."""

    applied: int
    at: float


class BatchState:
    """Reads and writes `keys.BATCH_STATE` and the lock `keys.BATCH_LOCK`."""

    def __init__(self, r: redis.Redis) -> None:
        self._redis = r

    def snapshot(self) -> BatchSnapshot:
        """The applied-interaction count now and the last trainings' counts and times."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.APPLIED_EVENTS)
            pipe.hmget(keys.BATCH_STATE, _SNAPSHOT_FIELDS)
            applied, (started_at, trained_events, trained_at) = pipe.execute()
        return _snapshot(applied, started_at, trained_events, trained_at)

    def acquire(self, ttl_s: int) -> str | None:
        """Take the lock for `ttl_s` seconds: its token, or None while another retrain holds it."""
        token = secrets.token_hex(16)
        return token if self._redis.set(keys.BATCH_LOCK, token, nx=True, ex=ttl_s) else None

    def release(self, token: str) -> bool:
        """Give the lock back; False if it was no longer ours (it expired)."""
        return bool(self._redis.eval(_RELEASE, 1, keys.BATCH_LOCK, token))

    def locked(self) -> bool:
        """A retrain holds the lock now."""
        return bool(self._redis.exists(keys.BATCH_LOCK))

    def start(self) -> TrainingStart:
        """Record that a training starts now, on the interactions applied so far."""
        start = TrainingStart(int(self._redis.get(keys.APPLIED_EVENTS) or 0), time.time())
        self._redis.hset(keys.BATCH_STATE, mapping={"started_events": start.applied, "started_at": start.at})
        return start

    def finish(
        self, start: TrainingStart, result: Mapping[str, Any] | None, error: str | None = None
    ) -> None:
        """Record a training's end: its result, or the error it failed with. Only a success moves
        `trained_events`/`trained_at`, so a failed training is retried at the next due check."""
        fields: dict[FieldT, EncodableT] = {
            "finished_at": time.time(),
            "finished_events": int(self._redis.get(keys.APPLIED_EVENTS) or 0),
            "seconds": round(time.time() - start.at, 3),
            "outcome": "failed" if error is not None else "ok",
            "result": json.dumps(result, default=str) if result is not None else "",
            "error": error or "",
        }
        if error is None:
            fields |= {"trained_events": start.applied, "trained_at": start.at}
        self._redis.hset(keys.BATCH_STATE, mapping=fields)

    def last(self) -> dict[str, str]:
        """The whole bookkeeping hash, decoded (for operators and tests)."""
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.BATCH_STATE)  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()}
