"""`python -m feed.evaluate movielens|ciaodvd`: replay a data set through a local engine running
with its shipped defaults, score its feeds and the baselines' lists on the same split, print a
Markdown table and write the report to bench/results/eval-<dataset>.json (overwritten)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from feed.evaluate import baselines, ciaodvd, movielens
from feed.evaluate.dataset import Split
from feed.evaluate.engine import LocalEngine
from feed.evaluate.host import GraphHost
from feed.evaluate.replay import ask_feeds, replay
from feed.evaluate.report import build_report, table

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
# name -> (title, loader(folder, users, seed), default folder)
DATASETS: dict[str, tuple[str, Callable[[Path, int | None, int], Split], Path]] = {
    "movielens": ("MovieLens ml-latest-small", movielens.load, movielens.DEFAULT_FOLDER),
    "ciaodvd": ("CiaoDVD", ciaodvd.load, ciaodvd.DEFAULT_FOLDER),
}
# what `--ablate` compares by default: the engine without retraining after the backfill (no CF
# model, no learned ranker: what it served before the batch layer kept up), without the learned
# ranker (the hand-set formula ranks), and without the social source. Any component name of
# feed/pipeline/home_feed.py can be given instead.
ABLATION = ("retrain", "learned_ranker", "social")


def overrides(ranking: dict[str, Any], disabled: list[str]) -> dict[str, Any]:
    """What a run changes from the engine's defaults, as the report records it: `ranking` (merged
    into RANKING) and `disabled` (DISABLED_COMPONENTS), each only when not empty."""
    out: dict[str, Any] = {}
    if ranking:
        out["ranking"] = ranking
    if disabled:
        out["disabled"] = disabled
    return out


def engine_env(changes: dict[str, Any], backend_url: str) -> dict[str, str]:
    """The engine's environment for `changes` (from `overrides`), its host at `backend_url`."""
    env = {"BACKEND_URL": backend_url}
    if "ranking" in changes:
        env["RANKING"] = json.dumps(changes["ranking"])
    if "disabled" in changes:
        env["DISABLED_COMPONENTS"] = json.dumps(changes["disabled"])
    return env


def run_engine(
    split: Split, changes: dict[str, Any], ablate: tuple[str, ...] = ()
) -> tuple[dict[str, dict[int, list[int]]], dict[str, float], dict[str, Any]]:
    """The engine's feeds for the split's users from a fresh local engine, whose social-graph
    callback this process answers with the split's follow graph; and the seconds per phase.

    Returns the feeds, the seconds per phase and what the retrain printed (the ranker's training
    report among it). The feeds are `engine` and, for each name in `ablate`, `engine without
    <name>`: `retrain` is the feeds asked for before the batch models are retrained; any other
    name is a component switched off in a restarted API process (same data, same models). The API is restarted
    after the retrain too, so no feed is served from a ranking kept before it.
    """
    lists: dict[str, dict[int, list[int]]] = {}
    trained: dict[str, Any] = {}
    with GraphHost(split.following) as host, LocalEngine(engine_env(changes, host.url)) as engine:

        async def go() -> dict[str, float]:
            async with httpx.AsyncClient(base_url=engine.url, timeout=60.0) as client:

                async def idle(events: int) -> bool:
                    return await asyncio.to_thread(engine.idle, events)

                async def retrain() -> None:
                    if "retrain" in ablate:
                        lists["engine without retrain"] = await ask_feeds(client, split.users)
                    trained.update(await asyncio.to_thread(engine.retrain))
                    await asyncio.to_thread(engine.restart_api, {})

                lists["engine"], phases = await replay(client, split, idle, retrain=retrain)
                for component in ablate:
                    if component == "retrain":
                        continue
                    disabled = [*changes.get("disabled", []), component]
                    await asyncio.to_thread(engine.restart_api, {"DISABLED_COMPONENTS": json.dumps(disabled)})
                    lists[f"engine without {component}"] = await ask_feeds(client, split.users)
                return phases

        phases = asyncio.run(go())
    return lists, phases, trained


def main() -> None:
    """Run one evaluation (arguments from sys.argv), print its table and write its report."""
    parser = argparse.ArgumentParser(prog="python -m feed.evaluate", description=__doc__)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument(
        "--data", type=Path, help="the data set's folder (default: ../shared/data/movielens-small or ciaodvd)"
    )
    parser.add_argument("--users", type=int, help="a random sample of this many users (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="report folder (default: bench/results)")
    parser.add_argument(
        "--ranking", type=json.loads, default={}, help="JSON merged into the engine's RANKING"
    )
    parser.add_argument("--disable", nargs="*", default=[], help="pipeline components to switch off")
    parser.add_argument(
        "--ablate",
        nargs="*",
        help=f"also score the engine without each of these (no names: {', '.join(ABLATION)})",
    )
    args = parser.parse_args()
    # a SIGTERM unwinds like Ctrl-C, so the local engine's processes are stopped, not orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    title, load, default_folder = DATASETS[args.dataset]
    started = time.perf_counter()
    split = load(args.data or default_folder, args.users, args.seed)
    baseline: dict[str, Callable[[], dict[int, list[int]]]] = {
        "popularity": lambda: baselines.popularity(split),
        "als": lambda: baselines.als(split, args.seed),
    }
    if split.following:
        baseline["friends_popularity"] = lambda: baselines.friends_popularity(split)
    changes = overrides(args.ranking, args.disable)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    ablate = () if args.ablate is None else tuple(args.ablate or ABLATION)
    lists, phases, trained = run_engine(split, changes, ablate)
    seconds["engine"] = time.perf_counter() - t
    for name, rank in baseline.items():
        t = time.perf_counter()
        lists[name] = rank()
        seconds[name] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    seconds.update({f"engine_{k}": v for k, v in phases.items()})

    report = build_report(
        args.dataset,
        split,
        lists,
        overrides=changes,
        seed=args.seed,
        users_sampled=args.users,
        seconds=seconds,
    )
    report["retrain"] = trained  # the CF and ranker results, the ranker's training report included
    phase_text = ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
    print(
        f"{title}, seed {args.seed}, overrides {json.dumps(changes)}: {len(split.catalogue)} posts, "
        f"{len(split.train)} history events, {len(split.truth)} users scored; run time "
        f"{seconds['total']:.0f} s (engine {seconds['engine']:.0f} s: {phase_text})\n\n"
        + table(report["systems"])
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"eval-{args.dataset}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
