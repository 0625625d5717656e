"""Searches of the host's one embedded shard, over a local socket.

A Qdrant Edge search holds the GIL for its whole duration (and `optimize()` for seconds),
so it must not run on an API process's event loop; and each shard costs memory. So one
process per host, the index owner (`feed/index_owner.py`), opens the shard, applies the
index stream to it and answers the searches of every API process on the host through a
Unix socket: `serve_searches` is its half, `RemoteVectorIndex` the API's.

Frames are a 4-byte big-endian length and a msgpack `SearchCall` or `SearchAnswer`; calls
carry an id, so one connection per API process carries many calls at once, answered in
the order the owner finishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import structlog

from feed.logging import log_failure
from feed.stores.index.vectors import Queries, VectorHit, VectorIndex

log = structlog.get_logger(__name__)

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 2**20  # a call is kB (a few vectors), an answer at most `limit` keys and scores


class SearchCall(msgspec.Struct, array_like=True, frozen=True):
    """One search: `nearest` (vectors in `spaces`), `nearest_cf` (one vector, model `version`)
    or `count`; vectors are float32 bytes."""

    id: int
    kind: Literal["nearest", "nearest_cf", "count"]
    spaces: list[str] = []
    vectors: list[bytes] = []
    limit: int = 0
    exclude_authors: list[str] = []
    version: int = 0


class SearchAnswer(msgspec.Struct, array_like=True, frozen=True):
    """The hits of call `id` (post keys and scores, best first), or the point count, or an error."""

    id: int
    posts: list[str] = []
    scores: list[float] = []
    count: int = 0
    error: str = ""


class IndexUnavailable(ConnectionError):
    """The index owner does not answer (not started yet, restarting, or gone)."""


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


class RemoteVectorIndex:
    """`PostSearch` (and `count`) answered by the index owner at `path`. Connects on first use
    and again after the connection broke; a call while the owner is unreachable raises
    `IndexUnavailable` at once (the candidate source that asked fails alone, the feed is
    served without it), and one unanswered after `timeout_s` raises `TimeoutError`."""

    def __init__(self, path: Path, timeout_s: float = 5.0) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[SearchAnswer]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._encoder = msgspec.msgpack.Encoder()

    async def _connection(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is None or self._writer.is_closing():
                try:
                    reader, self._writer = await asyncio.open_unix_connection(str(self._path))
                except OSError as exc:
                    raise IndexUnavailable(f"no index owner at {self._path}: {exc}") from exc
                self._reader_task = asyncio.create_task(self._read_answers(reader), name="index-answers")
            return self._writer

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        decoder = msgspec.msgpack.Decoder(SearchAnswer)
        broken = IndexUnavailable("the connection to the index owner was closed")
        try:
            while True:
                answer = decoder.decode(await _read_frame(reader))
                waiting = self._waiting.pop(answer.id, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(answer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, msgspec.DecodeError) as exc:
            broken = IndexUnavailable(f"the index owner's connection broke: {exc!r}")
        finally:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(broken)
            self._waiting.clear()

    async def _call(self, call: SearchCall) -> SearchAnswer:
        writer = await self._connection()
        answer: asyncio.Future[SearchAnswer] = asyncio.get_running_loop().create_future()
        self._waiting[call.id] = answer
        try:
            writer.write(_frame(self._encoder.encode(call)))
            result = await asyncio.wait_for(answer, self._timeout_s)
        finally:
            self._waiting.pop(call.id, None)
        if result.error:
            raise RuntimeError(f"index owner: {result.error}")
        return result

    async def nearest(self, queries: Queries, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
        if not queries:
            return []
        call = SearchCall(
            next(self._ids),
            "nearest",
            [space for space, _ in queries],
            [np.asarray(v, dtype=np.float32).tobytes() for _, v in queries],
            limit,
            exclude_authors,
        )
        return _hits(await self._call(call))

    async def nearest_cf(
        self, user: np.ndarray, version: int, limit: int, exclude_authors: list[str]
    ) -> list[VectorHit]:
        vector = np.asarray(user, dtype=np.float32).tobytes()
        call = SearchCall(next(self._ids), "nearest_cf", [], [vector], limit, exclude_authors, version)
        return _hits(await self._call(call))

    async def count(self) -> int:
        return (await self._call(SearchCall(next(self._ids), "count"))).count

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


def _hits(answer: SearchAnswer) -> list[VectorHit]:
    return [VectorHit(p, s) for p, s in zip(answer.posts, answer.scores, strict=True)]


async def _answer(index: VectorIndex, call: SearchCall) -> SearchAnswer:
    vectors = [np.frombuffer(v, dtype=np.float32) for v in call.vectors]
    if call.kind == "count":
        return SearchAnswer(call.id, count=await index.count())
    if call.kind == "nearest_cf":
        hits = await index.nearest_cf(vectors[0], call.version, call.limit, call.exclude_authors)
    else:
        queries = list(zip(call.spaces, vectors, strict=True))
        hits = await index.nearest(queries, call.limit, call.exclude_authors)
    return SearchAnswer(call.id, [h.post_key for h in hits], [h.score for h in hits])


@contextlib.asynccontextmanager
async def serve_searches(index: VectorIndex, path: Path) -> AsyncIterator[asyncio.Server]:
    """Answer `SearchCall`s on the Unix socket `path` with `index` (one call at a time: a search
    holds the GIL anyway) for the duration of the context. A stale socket file is replaced:
    the caller holds the owner's lock, so no live owner uses it."""
    decoder = msgspec.msgpack.Decoder(SearchCall)
    encoder = msgspec.msgpack.Encoder()
    open_connections: set[asyncio.StreamWriter] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_connections.add(writer)
        try:
            while True:
                try:
                    frame = await _read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the API process closed its end (or the owner is stopping)
                call = decoder.decode(frame)
                try:
                    answer = await _answer(index, call)
                except Exception as exc:
                    log_failure(log, "index_search_failed", exc, kind=call.kind)
                    answer = SearchAnswer(call.id, error=f"{type(exc).__name__}: {exc}")
                writer.write(_frame(encoder.encode(answer)))
                await writer.drain()
        except Exception as exc:  # a malformed frame: drop this connection, keep serving others
            log_failure(log, "index_connection_failed", exc)
        finally:
            open_connections.discard(writer)
            writer.close()

    path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(connection, str(path))
    try:
        yield server
    finally:
        server.close()
        for writer in list(open_connections):  # their readers see the end and return
            writer.close()
        await server.wait_closed()
        path.unlink(missing_ok=True)
