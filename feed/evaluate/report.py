"""The evaluation's report: every system's scores per user group on one split, as a JSON object
(written to `bench/results/eval-<dataset>.json`) and as a Markdown table."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from feed.evaluate.dataset import Split
from feed.evaluate.metrics import score

COLUMNS = ("ndcg@10", "recall@20", "hit_rate@10", "coverage", "genre_diversity")


def build_report(
    dataset: str,
    split: Split,
    lists: Mapping[str, Mapping[int, Sequence[int]]],
    *,
    overrides: Mapping[str, Any],
    seed: int,
    users_sampled: int | None,
    seconds: Mapping[str, float],
) -> dict[str, Any]:
    """The report of one run: `lists` is each system's ranked movies per user (`engine`,
    `popularity`, ...); `overrides` what the engine ran with beyond its defaults (`{}`: none).
    `systems` maps each system to its scores (and `users`) per group of `Split.groups`."""
    genres = split.genres()
    groups = split.groups()
    return {
        "dataset": dataset,
        "overrides": dict(overrides),
        "seed": seed,
        "users_sampled": users_sampled,
        "sizes": {
            "posts": len(split.catalogue),
            "history_events": len(split.train),
            "evaluated_users": len(split.truth),
            "follow_arcs": sum(len(f) for f in split.following.values()),
        },
        "seconds": dict(seconds),
        "machine": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "systems": {
            system: {
                group: score(ranked, truth, genres, len(split.catalogue)).as_dict()
                for group, truth in groups.items()
            }
            for system, ranked in lists.items()
        },
    }


def table(systems: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Markdown table of a report's `systems`: one line per system and user group."""
    lines = ["| system | users | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for system, groups in systems.items():
        for group, values in groups.items():
            cells = " | ".join(f"{values[c]:.4f}" for c in COLUMNS)
            lines.append(f"| {system} | {group} ({values['users']:.0f}) | {cells} |")
    return "\n".join(lines)
