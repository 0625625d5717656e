"""POST /interaction."""

from __future__ import annotations

import time
import uuid
from typing import Any

from litestar import Controller, Request, post
from litestar.di import Provide

from feed.api.access import api_key_of
from feed.api.errors import invalid
from feed.api.schemas import InteractionAccepted, InteractionIn
from feed.events.schemas import InteractionEvent
from feed.ids import id_key
from feed.services import ServicesDep
from feed.usecases import InteractionIntake

MAX_CLOCK_SKEW_S = 300.0


def _intake(services: ServicesDep) -> InteractionIntake:
    return services.interactions


class InteractionController(Controller):
    """User interactions, handed to the event broker."""

    path = "/interaction"
    tags = ["interactions"]
    dependencies = {"intake": Provide(_intake, sync_to_thread=False)}

    @post("/", status_code=202)
    async def add_interaction(
        self, request: Request[Any, Any, Any], data: InteractionIn, intake: InteractionIntake
    ) -> InteractionAccepted:
        """202 only once the broker has stored the event; 503 (retry) if it could not; 429 over
        the write limits."""
        if data.action == "dwell" and data.dwell_ms is None:
            raise invalid("dwell_ms", "required for action 'dwell'")
        now = time.time()
        ts = data.occurred_at.timestamp() if data.occurred_at is not None else now
        if ts > now + MAX_CLOCK_SKEW_S:
            raise invalid("occurred_at", f"is in the future (more than {MAX_CLOCK_SKEW_S:.0f} s ahead)")
        event = InteractionEvent(
            event_id=data.event_id or uuid.uuid4().hex,
            user_id=data.user_id,
            user_key=id_key(data.user_id),
            post_id=data.post_id,
            post_key=id_key(data.post_id),
            action=data.action,
            ts=ts,
            author_id=data.author_id,
            post_type=data.post_type,
            dwell_ms=data.dwell_ms,
        )
        await intake.accept(api_key_of(request), event)
        return InteractionAccepted(event_id=event.event_id)
