"""The stored form of an ingested post, shared by the ingest worker and the API."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feed.ids import decode_host_id, encode_host_id

VECTOR_DTYPE = np.dtype("<f4")

_FIELDS = ("id", "author", "author_key", "created_at", "post_type", "text", "vec")


def vector_to_bytes(vector: np.ndarray) -> bytes:
    """Little-endian float32 bytes of a 1-d vector."""
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


def vector_from_bytes(raw: bytes) -> np.ndarray:
    """Inverse of `vector_to_bytes` (a read-only view is copied to a fresh array)."""
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).copy()


@dataclass(frozen=True, slots=True)
class PostRecord:
    """An ingested post: what ranking needs, with the host's ids as it sent them."""

    key: str
    post_id: int | str
    author_id: int | str
    author_key: str
    created_at: float
    post_type: str
    text: str
    vector: np.ndarray

    def to_hash(self) -> dict[str, bytes | str | float]:
        """Field mapping for `HSET`."""
        return {
            "id": encode_host_id(self.post_id),
            "author": encode_host_id(self.author_id),
            "author_key": self.author_key,
            "created_at": self.created_at,
            "post_type": self.post_type,
            "text": self.text,
            "vec": vector_to_bytes(self.vector),
        }

    def payload(self) -> dict[str, str | float]:
        """Vector-index payload (filters and explanations use it)."""
        return {
            "post": self.key,
            "author": self.author_key,
            "created_at": self.created_at,
            "post_type": self.post_type,
            "text": self.text,
        }

    @staticmethod
    def fields() -> tuple[str, ...]:
        """Hash fields in the order `from_values` expects (for `HMGET`)."""
        return _FIELDS

    @classmethod
    def from_values(cls, key: str, values: list[bytes | None]) -> PostRecord | None:
        """Build from `HMGET post fields()`; None when the post is absent."""
        if values[0] is None or values[6] is None:
            return None
        raw = dict(zip(_FIELDS, values, strict=True))
        return cls(
            key=key,
            post_id=decode_host_id(raw["id"] or b""),
            author_id=decode_host_id(raw["author"] or b""),
            author_key=(raw["author_key"] or b"").decode(),
            created_at=float(raw["created_at"] or 0.0),
            post_type=(raw["post_type"] or b"text").decode(),
            text=(raw["text"] or b"").decode(),
            vector=vector_from_bytes(raw["vec"] or b""),
        )
