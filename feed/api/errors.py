"""Typed client errors; the handlers that turn validation failures into 400s naming the field,
a body nested beyond what the decoder follows into a 400 naming `body`, and any other error
into a logged 500; a write over its limit becomes a 429, one the engine cannot take now a 503."""

from __future__ import annotations

import re
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from feed.stores.write_limits import OverWriteLimit
from feed.usecases import Unavailable

log = structlog.get_logger(__name__)

# msgspec names the field as "... - at `$.limit`" or "Object missing required field `user_id`".
_FIELD_IN_MESSAGE = re.compile(r"(?:at `\$\.|missing required field `)([A-Za-z0-9_.\[\]]+)`")


def invalid(field: str, message: str) -> ValidationException:
    """A 400 whose detail starts with the offending field's name."""
    return ValidationException(detail=f"{field}: {message}", extra=[{"key": field, "message": message}])


def bad_request_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Every 400 (failed validation, a body that does not decode): `detail` names each invalid
    field (`"limit: Expected `int` <= 200"`), or `body` when the body is not a JSON document."""
    errors = exc.extra if isinstance(exc.extra, list) else []
    messages: list[str] = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        message = str(error.get("message", ""))
        match = _FIELD_IN_MESSAGE.search(message)
        key = match.group(1) if match else error.get("key") or "body"
        if not message.startswith(f"{key}:"):
            message = f"{key}: {message}"
        messages.append(message)
    detail = "; ".join(messages) if messages else f"body: {exc.detail}"
    return Response(
        {"status_code": 400, "detail": detail, "errors": errors},
        status_code=400,
    )


def too_deep_handler(_: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    """A body nested deeper than the JSON decoder follows (msgspec stops with a RecursionError,
    about 1,000 levels) is a client error like any other undecodable body."""
    message = "nested too deeply to decode"
    return Response(
        {"status_code": 400, "detail": f"body: {message}", "errors": [{"key": "body", "message": message}]},
        status_code=400,
    )


def over_limit_handler(_: Request[Any, Any, Any], exc: OverWriteLimit) -> Response[dict[str, Any]]:
    """A write over its limit: 429 naming the limited field, to be retried in a second."""
    return Response({"status_code": 429, "detail": str(exc)}, status_code=429, headers={"Retry-After": "1"})


def unavailable_handler(_: Request[Any, Any, Any], exc: Unavailable) -> Response[dict[str, Any]]:
    """A write the engine could not take now (its queue or broker is away): 503, retry in a second."""
    return Response({"status_code": 503, "detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Any error no other handler takes: logged with its traceback (and, through the request's
    log context, its request id), answered with a plain 500 that reveals nothing."""
    log.error("unhandled_error", method=request.method, path=request.url.path, exc_info=exc)
    return Response({"status_code": 500, "detail": "Internal Server Error"}, status_code=500)
