"""Host ids (integers or strings) and their canonical forms.

A host may send `123` or `"123"` for the same thing: both map to the key `"123"`,
so Redis keys and Qdrant point ids agree whichever type the host used. The id as
the host first sent it is stored with the post and returned in responses.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated

import msgspec

HostId = int | Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

_POINT_NAMESPACE = uuid.UUID("6f1d7d0e-3c59-4c8e-9a57-3f1b2c9d8e01")


def id_key(value: int | str) -> str:
    """Canonical string form of a host id, used in every Redis key."""
    return str(value)


def point_uuid(key: str) -> uuid.UUID:
    """The UUID of a canonical post key's Qdrant point; stable across processes."""
    return uuid.uuid5(_POINT_NAMESPACE, key)


def point_id(key: str) -> str:
    """Qdrant point id (a UUID string) for a canonical post key."""
    return str(point_uuid(key))


def encode_host_id(value: int | str) -> str:
    """JSON text that keeps the id's type, for storage next to the canonical key."""
    return json.dumps(value)


def decode_host_id(raw: str | bytes) -> int | str:
    """Inverse of `encode_host_id`."""
    value = json.loads(raw)
    if not isinstance(value, int | str):
        raise ValueError(f"not a host id: {raw!r}")
    return value
