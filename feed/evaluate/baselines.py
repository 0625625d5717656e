"""The rankers the engine is measured against, trained on the same history."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from feed.evaluate.dataset import Split

# implicit-feedback confidence per interaction (not_interested carries no positive signal)
CONFIDENCE = {"like": 1.0, "view": 0.3, "not_interested": 0.0}


def _top(
    scores: np.ndarray, items: list[int], exclude: set[int], index: Mapping[int, int], k: int
) -> list[int]:
    s = scores.astype(np.float64, copy=True)
    for item in exclude:
        if item in index:
            s[index[item]] = -np.inf
    k = min(k, int(np.isfinite(s).sum()))
    top = np.argpartition(-s, k - 1)[:k] if k else np.array([], dtype=int)
    top = top[np.lexsort((top, -s[top]))]  # by score, ties by catalogue position: deterministic
    return [items[i] for i in top]


def _likes(split: Split, index: Mapping[int, int]) -> np.ndarray:
    """Likes per catalogue movie before the split."""
    likes = np.zeros(len(index))
    for r in split.train:
        if r.action == "like":
            likes[index[r.movie_id]] += 1
    return likes


def popularity(split: Split, k: int = 20) -> dict[int, list[int]]:
    """Most liked movies before the split, minus what each user has seen."""
    items = sorted(split.catalogue)
    index = {m: i for i, m in enumerate(items)}
    likes = _likes(split, index)
    seen = split.seen()
    return {u: _top(likes, items, seen.get(u, set()), index, k) for u in split.users}


def friends_popularity(split: Split, k: int = 20) -> dict[int, list[int]]:
    """Movies the user's followees liked before the split, by how many of them liked each (ties by
    popularity), then the most liked movies; never what the user interacted with before the split."""
    items = sorted(split.catalogue)
    index = {m: i for i, m in enumerate(items)}
    likes = _likes(split, index)
    liked_by: dict[int, set[int]] = defaultdict(set)
    for r in split.train:
        if r.action == "like":
            liked_by[r.user_id].add(r.movie_id)
    # a followee's like outweighs any popularity, which is below `scale`
    scale = likes.max(initial=0.0) + 1
    seen = split.seen()
    lists: dict[int, list[int]] = {}
    for u in split.users:
        friends = np.zeros(len(items))
        for followee in split.following.get(u, set()):
            for movie in liked_by.get(followee, set()):
                friends[index[movie]] += 1
        lists[u] = _top(friends * scale + likes, items, seen.get(u, set()), index, k)
    return lists


def als(split: Split, seed: int, k: int = 20, factors: int = 64) -> dict[int, list[int]]:
    """`implicit` ALS on the confidence-weighted history, full ranking minus seen items.

    Users with no history get zero factors, so their lists are arbitrary but deterministic.
    """
    from implicit.als import AlternatingLeastSquares

    items = sorted(split.catalogue)
    index = {m: i for i, m in enumerate(items)}
    users = sorted({r.user_id for r in split.train} | set(split.users))
    user_index = {u: i for i, u in enumerate(users)}
    rows, cols, vals = [], [], []
    for r in split.train:
        if CONFIDENCE[r.action] > 0:
            rows.append(user_index[r.user_id])
            cols.append(index[r.movie_id])
            vals.append(CONFIDENCE[r.action])
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(len(users), len(items)), dtype=np.float32)
    with threadpool_limits(1, "blas"):  # implicit's ALS runs its own threads; BLAS must not add more
        model = AlternatingLeastSquares(
            factors=factors, regularization=0.05, alpha=10.0, iterations=20, random_state=seed, num_threads=1
        )
        model.fit(matrix, show_progress=False)
    user_factors = np.asarray(model.user_factors)
    item_factors = np.asarray(model.item_factors)
    seen = split.seen()
    return {
        u: _top(item_factors @ user_factors[user_index[u]], items, seen.get(u, set()), index, k)
        for u in split.users
    }
