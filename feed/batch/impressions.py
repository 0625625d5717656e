"""The learned ranker's second kind of training data: served impressions.

Each page the feed served was logged with the features its posts were ranked with
(`feed.stores.served_log`); joined here with what the user did with each of those posts in
the `label_window_s` after serving, it becomes one query group. Labels follow the replayed
history's convention (`feed.batch.labels`): the grade of the summed action weights, a negative
action grading 0 whatever else the user did. Unlike replayed history, the negatives are the
posts the user was actually shown and left alone, and every feature (impressions included) is
the one served.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from feed.batch.labels import NOTHING, grade, signed_weight
from feed.config import RankingConfig
from feed.pipeline.features import LAYOUT
from feed.stores.messages import LoggedInteraction
from feed.stores.served_log import ServedPage


def _actions(
    interactions: Iterable[LoggedInteraction], ranking: RankingConfig
) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(user, post) -> (time, signed action weight) of each interaction (negative actions
    negative; see `signed_weight`)."""
    out: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for e in interactions:
        out[e.user, e.post].append((e.ts, signed_weight(e.action, ranking)))
    return out


def served_groups(
    entries: Iterable[ServedPage],
    interactions: Iterable[LoggedInteraction],
    *,
    ranking: RankingConfig,
    label_window_s: float,
    end: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(feature rows (n, len(FEATURES)) float32, label grades (n,) int64) per served page that
    holds a positive, pages in serving order.

    A post's label comes from the user's interactions with it in [served, served +
    `label_window_s`) and before `end` (the log's end: later pages have had less time to earn
    theirs). A post served to the same user again within `label_window_s` of the serving kept
    for it is dropped from the later page: its label belongs to the first. Pages logged with
    another FEATURES layout (an earlier release) are left out.
    """
    actions = _actions(interactions, ranking)
    kept_at: dict[tuple[str, str], float] = {}  # (user, post) -> time of the serving that labels it
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for page in sorted(entries, key=lambda p: p.at):
        if page.layout != LAYOUT or page.at >= end:
            continue
        until = min(page.at + label_window_s, end)
        keep: list[int] = []
        grades: list[int] = []
        for i, post in enumerate(page.posts):
            pair = (page.user, post)
            first = kept_at.get(pair)
            if first is not None and page.at < first + label_window_s:
                continue
            kept_at[pair] = page.at
            keep.append(i)
            grades.append(grade([w for ts, w in actions.get(pair, ()) if page.at <= ts < until]))
        labels = np.asarray(grades, dtype=np.int64)
        if (labels > NOTHING).any():
            out.append((page.rows()[keep], labels))
    return out
