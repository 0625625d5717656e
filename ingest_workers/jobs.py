"""The message the API hands to the ingest queue for one accepted post."""

from __future__ import annotations

from typing import Any

import msgspec


class IngestJob(msgspec.Struct, frozen=True):
    """An accepted post, with canonical keys already computed by the API."""

    key: str
    post_id: int | str
    author_id: int | str
    author_key: str
    created_at: float
    post_type: str
    text: str
    media_urls: tuple[str, ...] = ()
    accepted_at: float = 0.0  # when the API accepted it (0: not known), for the ingest latency

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the Celery message."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> IngestJob:
        """Inverse of `to_dict`; raises `msgspec.ValidationError` on a malformed message."""
        return msgspec.convert(payload, cls)
