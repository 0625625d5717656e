"""Typed client errors, and one handler that turns validation failures into messages naming the field."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

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
