"""The batch layer's one entry: retrain every model on the engine's own log, in order.

CF first (the ranker's features include the CF preference of the model being served), then
the learned ranker. Each swap is atomic and serving never waits for it. Run on demand
(`feed-engine retrain`, `python -m feed.batch.retrain`) or by the ingest worker's beat.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import msgspec

from feed.batch import cf, schedule
from feed.batch.ranker import train_ranker
from feed.config import Settings, get_settings
from feed.stores.connection import SyncRedis, connect, connect_sync


async def _train_ranker(settings: Settings, seed: int) -> dict[str, object] | None:
    client = connect(settings.redis_url)
    try:
        report = await train_ranker(client, settings, seed)
    finally:
        await client.aclose()
    return msgspec.to_builtins(report) if report is not None else None


def retrain(r: SyncRedis, settings: Settings, seed: int = 0) -> dict[str, object]:
    """Train CF and then the ranker; returns what each produced (the ranker's training report,
    None when the log is too short)."""
    result = cf.train(r, settings, seed)
    return {
        "cf": {"pairs": result.pairs, "users": result.users, "items": result.items},
        "ranker": asyncio.run(_train_ranker(settings, seed)),
    }


def main() -> None:
    """`python -m feed.batch.retrain`: retrain the models now, on the engine's AsyncRedis (REDIS_URL)."""
    parser = argparse.ArgumentParser(prog="python -m feed.batch.retrain", description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = get_settings()
    r = connect_sync(settings.redis_url)
    result = schedule.run_locked(r, settings, lambda: retrain(r, settings, args.seed))
    if result is None:
        raise SystemExit("another retrain is running (it holds the batch lock): nothing trained")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
