"""The stored form of an ingested post, shared by the ingest worker and the API.

A post has up to one vector per embedding space: `text` (MiniLM, 384-d) for what it
says, and `image` (CLIP's joint image/text space, 512-d) for what it shows, or, for a
post without pictures, its text through CLIP's text tower, so image-space interests
reach text posts and the other way round. Either may be missing (an uncaptioned photo
has no `text` vector when nothing was detected in it; a text post has no `image` vector
when the worker has no CLIP weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import numpy as np

from feed.ids import decode_host_id, encode_host_id

VECTOR_DTYPE = np.dtype("<f4")
TEXT, IMAGE = "text", "image"
SPACES = (TEXT, IMAGE)

_SCALARS = ("id", "author", "author_key", "created_at", "post_type", "text", "tags", "transcript", "language")
_FIELDS = (*_SCALARS, *(f"vec:{s}" for s in SPACES))
_tags_decoder = msgspec.json.Decoder(dict[str, int])


def vector_to_bytes(vector: np.ndarray) -> bytes:
    """Little-endian float32 bytes of a 1-d vector."""
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


def vector_from_bytes(raw: bytes) -> np.ndarray:
    """Inverse of `vector_to_bytes` (a read-only view is copied to a fresh array)."""
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).copy()


def vector_field(space: str) -> str:
    """Hash field holding a post's vector, or a user's long-term interest vector, in `space`."""
    return f"vec:{space}"


def short_vector_field(space: str) -> str:
    """Hash field holding a user's short-term interest vector in `space`."""
    return f"svec:{space}"


@dataclass(frozen=True, slots=True)
class PostRecord:
    """An ingested post: what ranking needs, with the host's ids as it sent them.

    `tags` are detected object classes with counts; `transcript` and `language` come
    from speech in audio and video posts.
    """

    key: str
    post_id: int | str
    author_id: int | str
    author_key: str
    created_at: float
    post_type: str
    text: str
    vectors: dict[str, np.ndarray]
    tags: dict[str, int] = field(default_factory=dict)
    transcript: str = ""
    language: str = ""

    def to_hash(self) -> dict[str, bytes | str | float]:
        """Field mapping for `HSET` (vectors the post lacks are not written)."""
        out: dict[str, bytes | str | float] = {
            "id": encode_host_id(self.post_id),
            "author": encode_host_id(self.author_id),
            "author_key": self.author_key,
            "created_at": self.created_at,
            "post_type": self.post_type,
            "text": self.text,
            "tags": msgspec.json.encode(self.tags),
            "transcript": self.transcript,
            "language": self.language,
        }
        for space, vector in self.vectors.items():
            out[vector_field(space)] = vector_to_bytes(vector)
        return out

    def payload(self) -> dict[str, str | float | list[str] | dict[str, int]]:
        """Vector-index payload (filters and explanations use it)."""
        return {
            "post": self.key,
            "author": self.author_key,
            "created_at": self.created_at,
            "post_type": self.post_type,
            "text": self.text,
            "tags": sorted(self.tags),
            "tag_counts": self.tags,
            "transcript": self.transcript,
            "language": self.language,
        }

    @staticmethod
    def fields() -> tuple[str, ...]:
        """Hash fields in the order `from_values` expects (for `HMGET`)."""
        return _FIELDS

    @classmethod
    def from_values(cls, key: str, values: list[bytes | None]) -> PostRecord | None:
        """Build from `HMGET post fields()`; None when the post is absent."""
        if values[0] is None:
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
            vectors={s: vector_from_bytes(v) for s in SPACES if (v := raw[vector_field(s)]) is not None},
            tags=_tags_decoder.decode(raw["tags"]) if raw["tags"] else {},
            transcript=(raw["transcript"] or b"").decode(),
            language=(raw["language"] or b"").decode(),
        )
