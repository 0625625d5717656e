"""MovieLens (ml-latest-small) as a feed: movies become text posts, ratings become interactions.

A rating of 4 stars or more is a `like`, below 2.5 a `not_interested`, anything else a
`view`. The events are split by time: the first `train_fraction` of all ratings is the
history the engine and the baselines learn from; the users who like something after the
split are asked for a feed at the split and scored on what they liked afterwards.

The catalogue at the split is the movies rated at least once before it (a post is created
at its first rating); movies first rated later are in nobody's candidates, so they lower
every ranker's recall alike. A post's text is its title, genres and the tags users gave it
before the split.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

from feed.evaluate.dataset import Movie, Rating, Split, liked_after, sample_users, split_by_time

DEFAULT_FOLDER = Path(__file__).resolve().parents[3] / "shared" / "data" / "movielens-small"


def load(
    folder: Path = DEFAULT_FOLDER, users: int | None = None, seed: int = 0, train_fraction: float = 0.8
) -> Split:
    """Read the data set (optionally a random sample of `users`, fixed by `seed`) and split it by time."""
    with (folder / "ratings.csv").open(newline="") as f:
        ratings = [
            Rating(int(row["userId"]), int(row["movieId"]), float(row["rating"]), float(row["timestamp"]))
            for row in csv.DictReader(f)
        ]
    chosen = sample_users(ratings, users, seed)
    if chosen is not None:
        ratings = [r for r in ratings if r.user_id in chosen]
    split_ts, train, test = split_by_time(ratings, train_fraction)

    first_rating: dict[int, float] = {}
    for r in train:
        first_rating.setdefault(r.movie_id, r.ts)
    tags: dict[int, Counter[str]] = defaultdict(Counter)
    with (folder / "tags.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if float(row["timestamp"]) < split_ts and int(row["movieId"]) in first_rating:
                tags[int(row["movieId"])][row["tag"].strip().lower()] += 1
    catalogue: dict[int, Movie] = {}
    with (folder / "movies.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            movie_id = int(row["movieId"])
            if movie_id not in first_rating:
                continue
            genres = frozenset(g for g in row["genres"].split("|") if g != "(no genres listed)")
            text = f"{row['title']}. Genres: {', '.join(sorted(genres)) or 'unknown'}."
            if tags[movie_id]:
                text += " Tags: " + ", ".join(t for t, _ in tags[movie_id].most_common(10)) + "."
            catalogue[movie_id] = Movie(movie_id, text, genres, first_rating[movie_id])
    return Split(split_ts, catalogue, train, liked_after(test))
