"""POST /interaction."""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog
from litestar import Controller, Request, post
from litestar.exceptions import ServiceUnavailableException

from feed.api.access import api_key_of
from feed.api.errors import invalid
from feed.api.schemas import InteractionAccepted, InteractionIn
from feed.events.schemas import InteractionEvent
from feed.ids import id_key
from feed.services import ServicesDep

log = structlog.get_logger(__name__)

MAX_CLOCK_SKEW_S = 300.0


class InteractionController(Controller):
    """User interactions, handed to the event broker."""

    path = "/interaction"
    tags = ["interactions"]

    @post("/", status_code=202)
    async def add_interaction(
        self, request: Request[Any, Any, Any], data: InteractionIn, services: ServicesDep
    ) -> InteractionAccepted:
        """202 only once the broker has stored the event; 503 (retry) if it could not; 429 over
        the write limits."""
        if data.action == "dwell" and data.dwell_ms is None:
            raise invalid("dwell_ms", "required for action 'dwell'")
        now = time.time()
        ts = data.occurred_at.timestamp() if data.occurred_at is not None else now
        if ts > now + MAX_CLOCK_SKEW_S:
            raise invalid("occurred_at", f"is in the future (more than {MAX_CLOCK_SKEW_S:.0f} s ahead)")
        user_key = id_key(data.user_id)
        await services.limits.check(api_key_of(request), ("user_id", user_key))
        event = InteractionEvent(
            event_id=data.event_id or uuid.uuid4().hex,
            user_id=data.user_id,
            user_key=user_key,
            post_id=data.post_id,
            post_key=id_key(data.post_id),
            action=data.action,
            ts=ts,
            author_id=data.author_id,
            post_type=data.post_type,
            dwell_ms=data.dwell_ms,
        )
        try:
            await services.publisher.publish(event)
        except Exception as exc:
            log.warning("event_publish_failed", error=repr(exc))
            raise ServiceUnavailableException(
                detail="event broker unavailable, retry later", headers={"Retry-After": "1"}
            ) from exc
        return InteractionAccepted(event_id=event.event_id)
