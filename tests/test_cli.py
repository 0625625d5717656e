"""The `feed-engine` command: its help, pass-through commands, retrain and backfill."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from feed.cli import backfill, main, read_posts
from feed.stores import keys
from ingest_workers.celery_app import app as celery_app
from tests.helpers import api_client


def test_help_lists_every_command_and_options_pass_through() -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["--help"])
    assert listed.exit_code == 0
    for command in ("serve", "worker", "consumer", "backfill", "retrain", "evaluate", "bench"):
        assert f"  {command} " in listed.output
    evaluation = runner.invoke(main, ["evaluate", "-h"])  # the evaluation's own argparse help
    assert evaluation.exit_code == 0 and "movielens" in evaluation.output and "--users" in evaluation.output
    assert runner.invoke(main, ["bench", "nonsense"]).exit_code == 2


def test_retrain_trains_on_the_interaction_log(settings: Any) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    for user, post in [("u1", "p1"), ("u1", "p2"), ("u2", "p1"), ("u2", "p3")]:
        r.xadd(keys.INTERACTION_LOG, {"user": user, "post": post, "action": "like", "ts": 1})
    result = CliRunner().invoke(main, ["retrain", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert r.hget(keys.CF_META, "version") is not None
    # feed.batch.retrain (every model) ran and recorded it, so the schedule counts from here
    assert r.hget(keys.BATCH_STATE, "outcome") == b"ok"
    r.close()


def test_posts_are_read_from_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_text(
        '{"post_id": 1, "author_id": 7, "text": "hello"}\n\n{"post_id": "b", "author_id": 7, "text": "x"}\n'
    )
    assert list(read_posts(jsonl)) == [
        {"post_id": 1, "author_id": 7, "text": "hello"},
        {"post_id": "b", "author_id": 7, "text": "x"},
    ]
    table = tmp_path / "posts.csv"
    table.write_text(
        "post_id,author_id,post_type,text,media_urls,ignored\n"
        "1,7,text,hello,,z\n"
        "2,7,image,,http://h/a.jpg http://h/b.jpg,z\n"
    )
    assert list(read_posts(table)) == [
        {"post_id": "1", "author_id": "7", "post_type": "text", "text": "hello"},
        {
            "post_id": "2",
            "author_id": "7",
            "post_type": "image",
            "media_urls": ["http://h/a.jpg", "http://h/b.jpg"],
        },
    ]


@pytest.fixture
async def api(settings: Any) -> AsyncIterator[Any]:
    async with api_client(settings, celery=celery_app) as client:
        yield client


async def test_backfill_queues_every_valid_post_and_reports_the_refused(api: Any) -> None:
    posts = [{"post_id": i, "author_id": 7, "text": f"post {i}"} for i in range(20)]
    posts.insert(5, {"post_id": 99, "author_id": 7})  # no text
    done: list[int] = []
    result = await backfill(iter(posts), api, concurrency=4, progress=done.append)
    assert result.accepted == 20 and len(done) == 21
    assert len(result.refused) == 1
    number, answer = result.refused[0]
    assert number == 6 and answer.startswith("400") and json.loads(answer[4:])["detail"].startswith("text")
    for i in (0, 19):  # (a Celery worker other tests started may have ingested them already)
        assert (await api.get(f"/posts/{i}")).json()["state"] in ("queued", "ingested")
    assert (await api.get("/posts/99")).status_code == 404
