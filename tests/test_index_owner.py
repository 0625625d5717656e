"""The index owner's socket: many calls at once on one connection, each answered by its own id;
clear failures when the owner is away, and a new connection once it is back; a malformed frame
costs only its own connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from feed.stores.index.edge import EdgeVectorIndex
from feed.stores.index.remote import HEADER, IndexUnavailable, RemoteVectorIndex, serve_searches
from tests.helpers import unit
from tests.test_stores import DIMS, rec


@pytest.fixture
async def shard(tmp_path: Path) -> AsyncIterator[EdgeVectorIndex]:
    index = EdgeVectorIndex(tmp_path / "shard", DIMS)
    await index.upsert([rec(f"p{i}", f"a{i}", unit(1, i / 10)) for i in range(10)])
    yield index
    await index.close()


@pytest.fixture
def socket(tmp_path: Path) -> Path:
    return tmp_path / "index.sock"


@pytest.fixture
async def remote(socket: Path) -> AsyncIterator[RemoteVectorIndex]:
    client = RemoteVectorIndex(socket)
    yield client
    await client.close()


async def test_concurrent_calls_on_one_connection_get_their_own_answers(
    shard: EdgeVectorIndex, socket: Path, remote: RemoteVectorIndex
) -> None:
    queries = [[("text", unit(1, i / 10))] for i in range(10)]
    async with serve_searches(shard, socket):
        answers = await asyncio.gather(*(remote.nearest(q, 1, []) for q in queries), remote.count())
    assert [hits[0].post_key for hits in answers[:-1]] == [f"p{i}" for i in range(10)]  # type: ignore[index]
    assert answers[-1] == 10


async def test_an_absent_owner_fails_fast_and_a_returning_one_is_reconnected(
    shard: EdgeVectorIndex, socket: Path, remote: RemoteVectorIndex
) -> None:
    with pytest.raises(IndexUnavailable):
        await remote.count()
    async with serve_searches(shard, socket):
        assert await remote.count() == 10
    with pytest.raises(IndexUnavailable):  # the owner went away: the open connection broke
        await remote.count()
    async with serve_searches(shard, socket):  # a new owner on the same socket
        assert [h.post_key for h in await remote.nearest([("text", unit(1, 0))], 1, [])] == ["p0"]


async def test_a_malformed_frame_or_a_failing_search_costs_only_itself(
    shard: EdgeVectorIndex, socket: Path, remote: RemoteVectorIndex
) -> None:
    async with serve_searches(shard, socket):
        reader, writer = await asyncio.open_unix_connection(str(socket))
        writer.write(HEADER.pack(3) + b"\xc1\xc1\xc1")  # not msgpack
        assert await reader.read() == b""  # that connection is closed
        with pytest.raises(RuntimeError, match="index owner"):  # a 3-d vector in a 384-d space
            await remote.nearest([("text", np.ones(3, dtype=np.float32))], 1, [])
        assert await remote.count() == 10  # the same connection still answers
