"""The entries of the Redis streams the engine's processes talk through, one typed message per
kind, each with the only code that writes (`fields`) and reads (`of`) its stream fields.

- `IndexOp` (`keys.INDEX_STREAM`): a post was upserted or deleted, or a new CF model was
  swapped in; the vector index and every API process's catalogue follow it.
- `CatalogChange` (`keys.CHANGES_STREAM`): posts whose engagement, impressions or authors'
  reach changed; the catalogues refresh those.
- `LoggedInteraction` (`keys.INTERACTION_LOG`): one applied interaction, for the batch layer.

Stream fields stay plain (not one encoded blob), so entries written before this module
existed read the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec
from redis.typing import EncodableT, FieldT

Fields = Mapping[bytes, bytes]  # an entry as read
Written = dict[FieldT, EncodableT]  # an entry to add

_encode_keys = msgspec.msgpack.Encoder().encode
_decode_keys = msgspec.msgpack.Decoder(list[str]).decode


def pack_keys(values: list[str]) -> bytes:
    """A stream field holding a list of keys (msgpack)."""
    return _encode_keys(values)


def unpack_keys(raw: bytes | None) -> list[str]:
    """Inverse of `pack_keys`; an absent field is an empty list."""
    return _decode_keys(raw) if raw else []


class IndexOp(msgspec.Struct, frozen=True):
    """`upsert` or `delete` of `post`, or `cf`: CF model `version` was swapped in."""

    op: Literal["upsert", "delete", "cf"]
    post: str = ""
    version: int = 0

    @classmethod
    def upsert(cls, post: str) -> IndexOp:
        return cls("upsert", post)

    @classmethod
    def delete(cls, post: str) -> IndexOp:
        return cls("delete", post)

    @classmethod
    def cf(cls, version: int) -> IndexOp:
        return cls("cf", "", version)

    def fields(self) -> Written:
        out: Written = {"op": self.op, "post": self.post}
        if self.op == "cf":
            out["version"] = self.version
        return out

    @classmethod
    def of(cls, fields: Fields) -> IndexOp:
        op = fields[b"op"].decode()
        if op not in ("upsert", "delete", "cf"):
            raise ValueError(f"unknown index operation {op!r}")
        return cls(op, fields.get(b"post", b"").decode(), int(fields.get(b"version", b"0")))  # type: ignore[arg-type]


class CatalogChange(msgspec.Struct, frozen=True):
    """Posts whose counts or trending changed, posts served again, authors whose reach changed."""

    posts: list[str] = []
    impressions: list[str] = []
    authors: list[str] = []

    def fields(self) -> Written:
        """Only the lists that are not empty."""
        named = {"posts": self.posts, "impressions": self.impressions, "authors": self.authors}
        return {name: pack_keys(values) for name, values in named.items() if values}

    @classmethod
    def of(cls, fields: Fields) -> CatalogChange:
        return cls(
            unpack_keys(fields.get(b"posts")),
            unpack_keys(fields.get(b"impressions")),
            unpack_keys(fields.get(b"authors")),
        )


class LoggedInteraction(msgspec.Struct, frozen=True):
    """One applied interaction: who did what to which post, when (epoch seconds). Written by the
    event applier's script (`interaction_writes.py`) from its event fields."""

    user: str
    post: str
    action: str
    ts: float

    @classmethod
    def of(cls, fields: Fields) -> LoggedInteraction:
        return cls(
            fields[b"user"].decode(),
            fields[b"post"].decode(),
            fields[b"action"].decode(),
            float(fields[b"ts"]),
        )
