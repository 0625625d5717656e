"""The interaction event as it travels through the broker."""

from __future__ import annotations

import msgspec


class InteractionEvent(msgspec.Struct, frozen=True):
    """One accepted interaction; `event_id` makes applying it idempotent."""

    event_id: str
    user_id: int | str
    user_key: str
    post_id: int | str
    post_key: str
    action: str
    ts: float
    author_id: int | str | None = None
    post_type: str | None = None
    dwell_ms: int | None = None
