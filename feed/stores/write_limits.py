"""Write limits: writes per second allowed per API key and per user, counted in Redis.

Fixed one-second windows in Redis, so every API process shares them, per API key and per user
(the post's author, the interaction's user). While Redis does not answer, writes are not
limited (the event broker may still take them, e.g. Kafka). Written here rather than with
Litestar's `RateLimitMiddleware`, which keeps every request's timestamp of the window in one
JSON value read and rewritten per request (O(limit) work, and a race between API processes).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from feed.stores import keys

log = structlog.get_logger(__name__)

OPEN = "open"  # the key id of requests to an API without keys: nothing to limit per key


class OverWriteLimit(Exception):
    """A write over its limit; `field` names what was limited (`X-API-Key` or the user's field)."""

    def __init__(self, field: str, limit: int) -> None:
        super().__init__(f"{field}: over {limit} writes per second, retry later")
        self.field = field
        self.limit = limit


class WriteLimits:
    """Writes per second allowed per API key and per user (0 turns a limit off)."""

    def __init__(
        self, redis: Redis, per_key: int, per_user: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._limits = {"key": per_key, "user": per_user}
        self._clock = clock  # wall-clock seconds: the windows are shared by every API process

    async def check(self, api_key: str, user: tuple[str, str] | None = None) -> None:
        """Count one write for `api_key` and for `user` (the request field naming the user, and
        the user's key); raise `OverWriteLimit` naming the field if either is over its limit."""
        fields = {"key": "X-API-Key", "user": user[0] if user else ""}
        subjects = [("key", api_key)] if api_key != OPEN else []  # an open API has no keys to limit
        subjects += [("user", user[1])] if user is not None else []
        subjects = [(kind, who) for kind, who in subjects if self._limits[kind] > 0]
        if not subjects:
            return
        second = int(self._clock())
        pipe = self._redis.pipeline(transaction=False)
        for kind, who in subjects:
            name = keys.write_window(kind, who, second)
            pipe.incr(name)
            pipe.expire(name, 2, nx=True)
        try:
            counts = (await pipe.execute())[::2]
        except RedisError as exc:  # no count, no limit: the write itself decides whether it can be taken
            log.warning("write_limits_unavailable", error=repr(exc))
            return
        for (kind, _), count in zip(subjects, counts, strict=True):
            if int(count) > self._limits[kind]:
                raise OverWriteLimit(fields[kind], self._limits[kind])
