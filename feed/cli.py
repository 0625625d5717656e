"""`feed-engine`: one command for every process and operation.

    feed-engine serve                 the HTTP API (feed-api; API_WORKERS processes)
    feed-engine worker [celery opts]  an ingest worker (feed-worker)
    feed-engine consumer              the event consumer (feed-consumer)
    feed-engine backfill posts.jsonl  send a file of posts to a running API, with progress
    feed-engine retrain               train every batch model now (CF, then the ranker)
    feed-engine evaluate ciaodvd      the ranking-quality evaluation (ciaodvd or movielens)
    feed-engine bench serving         a benchmark (from a source checkout: bench/ is not installed)

Every process reads its settings from the environment (README, Configuration); options
after a pass-through command go to the process as they are.
"""

from __future__ import annotations

import asyncio
import csv
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx

from feed.config import get_settings

PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
POST_FIELDS = ("post_id", "author_id", "post_type", "text", "media_url", "media_urls", "created_at")


def _run(prog: str, target: Callable[[], None], args: tuple[str, ...]) -> None:
    """Run a process's own entry point with `args` as its command line."""
    sys.argv = [prog, *args]
    target()


@click.group(help=__doc__.split("\n\n")[0], context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The command group."""


@main.command()
def serve() -> None:
    """Serve the HTTP API on API_HOST:API_PORT (API_WORKERS processes)."""
    from feed.app import main as api

    _run("feed-api", api, ())


@main.command(context_settings=PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker(args: tuple[str, ...]) -> None:
    """Run an ingest worker; Celery worker options pass through (e.g. --beat)."""
    from ingest_workers.celery_app import main as celery_worker

    _run("feed-worker", celery_worker, args)


@main.command()
def consumer() -> None:
    """Run the event consumer."""
    from feed.events.consumer import main as events

    _run("feed-consumer", events, ())


@main.command(context_settings=PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def retrain(args: tuple[str, ...]) -> None:
    """Train every batch model now (CF, then the ranker) on the interaction log (--seed N)."""
    from feed.batch.retrain import main as batch

    _run("feed-engine retrain", batch, args)


@main.command(context_settings=PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def evaluate(args: tuple[str, ...]) -> None:
    """Evaluate ranking quality (`ciaodvd|movielens --data FOLDER`; -h for its options)."""
    from feed.evaluate.__main__ import main as evaluation

    _run("feed-engine evaluate", evaluation, args)


@main.command(context_settings=PASS_THROUGH)
@click.argument("name", type=click.Choice(["serving", "ingest_media"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(name: str, args: tuple[str, ...]) -> None:
    """Run a benchmark of bench/ (serving, ingest_media) from a source checkout."""
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        raise click.ClickException("bench/ is not installed: run from a source checkout") from exc
    _run(f"feed-engine bench {name}", module.main, args)


@dataclass
class BackfillResult:
    """What a backfill did: accepted posts, refused ones (line number and the API's answer)."""

    accepted: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)


def read_posts(path: Path) -> Iterator[dict[str, Any]]:
    """Posts from a JSONL file (one object per line) or a CSV file with a header row naming
    post fields (`media_urls` separated by spaces); empty CSV cells are left out."""
    with path.open(newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".csv":
            for row in csv.DictReader(f):
                post: dict[str, Any] = {
                    k: v for k, v in row.items() if k in POST_FIELDS and v not in ("", None)
                }
                if "media_urls" in post:
                    post["media_urls"] = post["media_urls"].split()
                yield post
        else:
            for line in f:
                if line.strip():
                    yield json.loads(line)


async def backfill(
    posts: Iterator[dict[str, Any]],
    client: httpx.AsyncClient,
    concurrency: int = 8,
    progress: Callable[[int], None] = lambda _: None,
) -> BackfillResult:
    """POST each post to the API's /posts with `concurrency` requests in flight; a post the
    API refuses (4xx) is counted with its answer, and a 429 or 503 is retried after its
    `Retry-After`. `progress(1)` is called per post done."""
    result = BackfillResult()
    queue: asyncio.Queue[tuple[int, dict[str, Any]] | None] = asyncio.Queue(maxsize=concurrency * 4)

    async def send() -> None:
        while (item := await queue.get()) is not None:
            number, post = item
            while True:
                answer = await client.post("/posts", json=post)
                if answer.status_code not in (429, 503):
                    break
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            if answer.status_code == 202:
                result.accepted += 1
            else:
                result.refused.append((number, f"{answer.status_code} {answer.text[:300]}"))
            progress(1)

    senders = [asyncio.create_task(send()) for _ in range(concurrency)]
    for number, post in enumerate(posts, start=1):
        await queue.put((number, post))
    for _ in senders:
        await queue.put(None)
    await asyncio.gather(*senders)
    return result


@main.command(name="backfill")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--api", "api_url", help="the API's URL (default: http://API_HOST:API_PORT)")
@click.option("--api-key", envvar="FEED_API_KEY", help="an X-API-Key (or FEED_API_KEY)")
@click.option("--concurrency", default=8, show_default=True, help="requests in flight")
def backfill_command(path: Path, api_url: str | None, api_key: str | None, concurrency: int) -> None:
    """Send a JSONL or CSV file of posts to a running API for ingest, with a progress bar."""
    settings = get_settings()
    url = api_url or f"http://{settings.api_host}:{settings.api_port}"
    total = sum(1 for _ in read_posts(path))
    headers = {"X-API-Key": api_key} if api_key else {}

    async def run() -> BackfillResult:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as client:
            with click.progressbar(length=total, label=f"posts to {url}") as bar:
                return await backfill(read_posts(path), client, concurrency, bar.update)

    result = asyncio.run(run())
    click.echo(f"accepted {result.accepted} of {total} posts; refused {len(result.refused)}")
    for number, answer in result.refused[:10]:
        click.echo(f"  post {number}: {answer}", err=True)
    if result.refused:
        sys.exit(1)
