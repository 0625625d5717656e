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
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FOLDER = Path(__file__).resolve().parents[3] / "shared" / "data" / "movielens-small"


def action_for(rating: float) -> str:
    """The interaction a rating stands for."""
    if rating >= 4.0:
        return "like"
    if rating < 2.5:
        return "not_interested"
    return "view"


@dataclass(frozen=True, slots=True)
class Movie:
    """A movie as a post."""

    movie_id: int
    text: str
    genres: frozenset[str]
    created_at: float  # its first rating


@dataclass(frozen=True, slots=True)
class Rating:
    """A rating as an interaction."""

    user_id: int
    movie_id: int
    rating: float
    ts: float

    @property
    def action(self) -> str:
        return action_for(self.rating)


@dataclass(frozen=True)
class Split:
    """History before the split, and what each evaluated user liked after it."""

    split_ts: float
    catalogue: dict[int, Movie]
    train: list[Rating]
    truth: dict[int, set[int]]  # evaluated user -> movies liked after the split

    @property
    def users(self) -> list[int]:
        """Evaluated users, in id order."""
        return sorted(self.truth)

    def seen(self) -> dict[int, set[int]]:
        """Movies each user interacted with before the split (never recommended to them)."""
        out: dict[int, set[int]] = defaultdict(set)
        for r in self.train:
            out[r.user_id].add(r.movie_id)
        return out


def load(
    folder: Path = DEFAULT_FOLDER, users: int | None = None, seed: int = 0, train_fraction: float = 0.8
) -> Split:
    """Read the data set (optionally a random sample of `users`, fixed by `seed`) and split it by time."""
    with (folder / "ratings.csv").open(newline="") as f:
        ratings = [
            Rating(int(row["userId"]), int(row["movieId"]), float(row["rating"]), float(row["timestamp"]))
            for row in csv.DictReader(f)
        ]
    if users is not None:
        everyone = sorted({r.user_id for r in ratings})
        chosen = set(random.Random(seed).sample(everyone, min(users, len(everyone))))
        ratings = [r for r in ratings if r.user_id in chosen]
    ratings.sort(key=lambda r: (r.ts, r.user_id, r.movie_id))
    cut = int(len(ratings) * train_fraction)
    split_ts = ratings[cut].ts
    train, test = ratings[:cut], ratings[cut:]

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
    truth: dict[int, set[int]] = defaultdict(set)
    for r in test:
        if r.action == "like":
            truth[r.user_id].add(r.movie_id)
    return Split(split_ts, catalogue, train, dict(truth))
