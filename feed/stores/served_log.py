"""The served-impressions log (`keys.SERVED_LOG`): each page the feed served, with the learned
ranker's features as they were when it was ranked, for training the ranker on what users were
actually shown (`feed/batch/impressions.py` joins it with the interactions that followed).

One stream entry per served page, one msgpack value encoded once (the feature rows as raw
float32 bytes), appended in one round trip and capped at about `max_entries` (XADD MAXLEN ~):
the oldest pages go first. An entry is about 150 bytes per served post.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from redis.asyncio import Redis

from feed.stores import keys

FIELD = "page"
# an entry is appended a moment after its page was served, by Redis' clock, which may differ a
# little from the API host's: a read by serving time scans this much further on either side
LATE_S = 60.0


class ServedPage(msgspec.Struct, frozen=True):
    """One served page: who, when (epoch s, the request's time), the posts in order, their
    feature rows (float32, C order, one row per post, columns as named by `layout`), and the
    learned model that ranked them (0: the hand-set formula)."""

    user: str
    at: float
    posts: list[str]
    features: bytes
    layout: int  # `feed.pipeline.features.LAYOUT` of the release that computed the rows
    ranker_version: int = 0

    @classmethod
    def of(
        cls, user: str, at: float, posts: list[str], rows: np.ndarray, layout: int, ranker_version: int
    ) -> ServedPage:
        """A page from its (len(posts), n_features) feature rows."""
        features = np.ascontiguousarray(rows, dtype=np.float32).tobytes()
        return cls(user, at, posts, features, layout, ranker_version)

    def rows(self) -> np.ndarray:
        """The feature rows, (len(posts), n_features) float32 (read-only: a view of the bytes)."""
        return np.frombuffer(self.features, dtype=np.float32).reshape(len(self.posts), -1)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ServedPage).decode


def _stream_ms(t: float) -> int:
    return max(int(t * 1000), 0)


class ServedLog:
    """Appends served pages and reads them back by serving time, on one Redis connection pool."""

    def __init__(self, redis: Redis, max_entries: int) -> None:
        self._redis = redis
        self._max_entries = max_entries

    async def append(self, page: ServedPage) -> None:
        """Log one served page (one XADD; the stream is trimmed to about `max_entries`)."""
        await self._redis.xadd(
            keys.SERVED_LOG, {FIELD: _encode(page)}, maxlen=self._max_entries, approximate=True
        )

    async def read(self, start: float, end: float, chunk: int = 1000) -> list[ServedPage]:
        """The pages served in [start, end) (by `at`) still in the log, in the order they were logged."""
        out: list[ServedPage] = []
        low, high = f"{_stream_ms(start - LATE_S)}-0", f"{_stream_ms(end + LATE_S)}-0"
        while True:
            rows: Any = await self._redis.xrange(keys.SERVED_LOG, min=low, max=high, count=chunk)
            pages = (_decode(fields[FIELD.encode()]) for _, fields in rows)
            out.extend(p for p in pages if start <= p.at < end)
            if len(rows) < chunk:
                return out
            low = "(" + rows[-1][0].decode()
