"""Who may call the API, and how fast they may write.

API keys: with `API_KEYS` set, every request except `/health`, `/ready` and `/metrics` must
carry one of them in `X-API-Key` (or, for a browser on the operator page, as the password
of HTTP Basic authentication, any user name), compared in constant time with each
configured key; otherwise 401. Without `API_KEYS` the API is open (the single-machine default, which
listens on 127.0.0.1) and says so in a log line at start.

Write limits (`feed/stores/write_limits.py`) count each write per API key (`api_key_of`) and
per user; a write over either answers 429 with `Retry-After` (`errors.over_limit_handler`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

import structlog
from litestar import Request
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from feed.stores.write_limits import OPEN

HEADER = b"x-api-key"
BASIC_CHALLENGE = b'Basic realm="feed engine operator page", charset="UTF-8"'
log = structlog.get_logger(__name__)


def key_id(key: str) -> str:
    """A short, non-secret name of a key (for limits and logs)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def api_key_of(request: Request[Any, Any, Any]) -> str:
    """The id of the key the request was let in with (`open` without API keys)."""
    return str(request.scope.get("state", {}).get("api_key", OPEN))


def _basic_password(authorization: bytes) -> bytes:
    """The password of an HTTP Basic `Authorization` header (empty if there is none)."""
    scheme, _, encoded = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        return b""
    try:
        return base64.b64decode(encoded.strip(), validate=True).partition(b":")[2]
    except binascii.Error:
        return b""


class ApiKeyMiddleware(ASGIMiddleware):
    """401 unless `X-API-Key` (or the Basic password) is one of `api_keys`; the matched key's id
    goes to the scope state."""

    scopes = (ScopeType.HTTP,)
    exclude_path_pattern = ("^/health$", "^/ready$", "^/metrics$")

    def __init__(self, api_keys: list[str]) -> None:
        self._keys = [(k.encode(), key_id(k)) for k in api_keys]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = dict(scope.get("headers", ()))
        presented = headers.get(HEADER) or _basic_password(headers.get(b"authorization", b""))
        matched = None
        for key, ident in self._keys:  # every key is compared: the time does not tell which matched
            if hmac.compare_digest(presented, key):
                matched = ident
        if matched is None:
            body = json.dumps(
                {"status_code": 401, "detail": "X-API-Key: missing or not a valid key"}
            ).encode()
            challenge = BASIC_CHALLENGE if scope["path"].startswith("/admin") else b"ApiKey"
            answer = [(b"content-type", b"application/json"), (b"www-authenticate", challenge)]
            start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 401, "headers": answer}
            end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
            await send(start)
            await send(end)
            return
        scope.setdefault("state", {})["api_key"] = matched
        await next_app(scope, receive, send)
