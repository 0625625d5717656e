"""`python -m feed.evaluate movielens`: replay MovieLens through a local engine, score its feeds
and the baselines' lists on the same split, print a table and write it as JSON and Markdown."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from feed.evaluate import baselines, movielens
from feed.evaluate.engine import LocalEngine
from feed.evaluate.metrics import Scores, score
from feed.evaluate.replay import replay

YEAR_S = 365 * 24 * 3600
# Movies are a catalogue, not a stream of posts: they do not expire, age over a year rather
# than a day, and what is popular is measured over months.
CATALOGUE_RANKING: dict[str, Any] = {"trending_half_life_s": 3 * YEAR_S, "trending_weight": 1.5}
# A film's age since its first rating says little about its appeal; and an offline replay cannot
# reward exploration (what it buys, learning about unproven posts, happens only online).
CATALOGUE_DISABLED = ["freshness", "exploration"]


def catalogue_profile(ranking: dict[str, Any], disabled: list[str]) -> dict[str, str]:
    """Engine settings (environment) for a catalogue: RANKING overrides merged over CATALOGUE_RANKING."""
    return {
        "TIMELINE_MAX_AGE_S": str(40 * YEAR_S),
        "RANKING": json.dumps({**CATALOGUE_RANKING, **ranking}),
        "DISABLED_COMPONENTS": json.dumps(disabled),
    }


COLUMNS = ("NDCG@10", "Recall@20", "HitRate@10", "coverage", "genre_diversity")
# what `--ablate` switches off, one at a time (names from feed/pipeline/home_feed.py)
ABLATION = (
    "phoenix",
    "collaborative",
    "trending",
    "fresh",
    "similarity",
    "engagement",
    "trending_score",
    "cf",
    "affinity",
    "network",
    "author_diversity",
    "near_duplicates",
    "small_author",
)


def run_engine(
    split: movielens.Split, profile: dict[str, str]
) -> tuple[dict[int, list[int]], dict[str, float]]:
    """The engine's feeds for the split's users, from a fresh local engine."""
    with LocalEngine(profile) as engine:

        async def go() -> tuple[dict[int, list[int]], dict[str, float]]:
            async def idle(events: int) -> bool:
                return await asyncio.to_thread(engine.idle, events)

            async def retrain() -> None:
                await asyncio.to_thread(engine.retrain)

            async with httpx.AsyncClient(base_url=engine.url, timeout=60.0) as client:
                return await replay(client, split, idle, retrain=retrain)

        return asyncio.run(go())


def table(rows: dict[str, dict[str, Scores]]) -> str:
    """Markdown table: one line per ranker and user group."""
    lines = ["| ranker | users | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for ranker, groups in rows.items():
        for group, s in groups.items():
            values = s.as_dict()
            cells = " | ".join(f"{values[c]:.4f}" for c in COLUMNS)
            lines.append(f"| {ranker} | {group} ({s.users}) | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m feed.evaluate", description=__doc__)
    parser.add_argument("dataset", choices=["movielens"])
    parser.add_argument("--data", type=Path, default=movielens.DEFAULT_FOLDER, help="ml-latest-small folder")
    parser.add_argument("--users", type=int, help="a random sample of this many users (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--ranking", type=json.loads, default={}, help="JSON merged into the engine's RANKING"
    )
    parser.add_argument(
        "--disable", nargs="*", default=CATALOGUE_DISABLED, help="pipeline components to switch off"
    )
    parser.add_argument(
        "--ablate", action="store_true", help="also run the engine once without each component"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    split = movielens.load(args.data, args.users, args.seed)
    genres = {m.movie_id: m.genres for m in split.catalogue.values()}
    lists: dict[str, dict[int, list[int]]] = {}
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    lists["popularity"] = baselines.popularity(split)
    seconds["popularity"] = time.perf_counter() - t
    t = time.perf_counter()
    lists["ALS"] = baselines.als(split, args.seed)
    seconds["ALS"] = time.perf_counter() - t
    t = time.perf_counter()
    profile = catalogue_profile(args.ranking, args.disable)
    lists["engine"], phases = run_engine(split, profile)
    seconds["engine"] = time.perf_counter() - t
    for component in ABLATION if args.ablate else ():
        t = time.perf_counter()
        lists[f"engine without {component}"], _ = run_engine(
            split, catalogue_profile(args.ranking, [*args.disable, component])
        )
        seconds[f"engine without {component}"] = time.perf_counter() - t

    seen = split.seen()
    groups = {
        "all": split.truth,
        "with history": {u: v for u, v in split.truth.items() if seen.get(u)},
        "new users": {u: v for u, v in split.truth.items() if not seen.get(u)},
    }
    rows = {
        ranker: {group: score(ranked, truth, genres, len(split.catalogue)) for group, truth in groups.items()}
        for ranker, ranked in lists.items()
    }
    total = time.perf_counter() - started
    phase_text = ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
    header = (
        f"MovieLens ml-latest-small, seed {args.seed}: {len(split.catalogue)} posts, {len(split.train)} "
        f"history events, {len(split.users)} users scored; run time {total:.0f} s "
        f"(engine {seconds['engine']:.0f} s: {phase_text})"
    )
    markdown = header + "\n\n" + table(rows) + "\n"
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {
        "dataset": "movielens-small",
        "seed": args.seed,
        "users_sampled": args.users,
        "posts": len(split.catalogue),
        "history_events": len(split.train),
        "engine_profile": profile,
        "seconds": {"total": total, **seconds, **{f"engine_{k}": v for k, v in phases.items()}},
        "machine": {"python": platform.python_version(), "machine": platform.machine()},
        "scores": {ranker: {g: s.as_dict() for g, s in groups_.items()} for ranker, groups_ in rows.items()},
    }
    (args.out / f"evaluation-movielens-{stamp}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"evaluation-movielens-{stamp}.md").write_text(markdown)
    print(f"wrote {args.out}/evaluation-movielens-{stamp}.json and .md")


if __name__ == "__main__":
    main()
