"""Request ids: every HTTP request gets one, bound into the structlog context for as long as
the request runs (so every log line of its pipeline, and of the side effects it starts,
carries it) and returned in the `X-Request-ID` response header.

A host backend may send its own `X-Request-ID` (up to 128 characters of letters, digits,
`-`, `_`, `.`, `:`) to follow one of its requests into the engine's logs; anything else is
replaced by a new random id.
"""

from __future__ import annotations

import re
import uuid

import structlog
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Scope) -> str:
    """The caller's valid `X-Request-ID`, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == HEADER and _VALID.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex


class RequestIdMiddleware(ASGIMiddleware):
    """Binds `request_id` for the request's duration and echoes it in the response."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request_id = request_id_of(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, request_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await next_app(scope, receive, send_with_id)
