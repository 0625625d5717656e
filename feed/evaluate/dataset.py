"""What every evaluation data set becomes: a catalogue of movies as posts, ratings as
interactions, a time split, and (for social data sets) who follows whom."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field


def action_for(rating: float) -> str:
    """The interaction a rating stands for: 4 stars or more `like`, below 2.5 `not_interested`,
    anything else `view`."""
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
    """A rating as an interaction; (user, movie, ts) is unique within a data set: it names the event."""

    user_id: int
    movie_id: int
    rating: float
    ts: float

    @property
    def action(self) -> str:
        return action_for(self.rating)


@dataclass(frozen=True)
class Split:
    """History before the split, what each evaluated user liked after it, and the follow graph."""

    split_ts: float
    catalogue: dict[int, Movie]
    train: list[Rating]
    truth: dict[int, set[int]]  # evaluated user -> movies liked after the split
    following: dict[int, set[int]] = field(default_factory=dict)  # user -> users they follow

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

    def genres(self) -> dict[int, frozenset[str]]:
        """Each catalogue movie's genres (for the diversity metric)."""
        return {m.movie_id: m.genres for m in self.catalogue.values()}

    def groups(self) -> dict[str, dict[int, set[int]]]:
        """The truth per user group: `all`, `with_history` (any event before the split) and
        `new` (none)."""
        seen = self.seen()
        return {
            "all": self.truth,
            "with_history": {u: v for u, v in self.truth.items() if seen.get(u)},
            "new": {u: v for u, v in self.truth.items() if not seen.get(u)},
        }


def sample_users(ratings: list[Rating], users: int | None, seed: int) -> set[int] | None:
    """A random sample of `users` of the raters, fixed by `seed` (None: everyone)."""
    if users is None:
        return None
    everyone = sorted({r.user_id for r in ratings})
    return set(random.Random(seed).sample(everyone, min(users, len(everyone))))


def split_by_time(ratings: list[Rating], train_fraction: float) -> tuple[float, list[Rating], list[Rating]]:
    """Sort by time (ties by user, movie) and cut after the first `train_fraction`: the split's
    time (the first test rating's), the history and the rest."""
    ratings = sorted(ratings, key=lambda r: (r.ts, r.user_id, r.movie_id))
    cut = int(len(ratings) * train_fraction)
    return ratings[cut].ts, ratings[:cut], ratings[cut:]


def liked_after(test: list[Rating]) -> dict[int, set[int]]:
    """User -> the movies they liked in `test`."""
    truth: dict[int, set[int]] = defaultdict(set)
    for r in test:
        if r.action == "like":
            truth[r.user_id].add(r.movie_id)
    return dict(truth)
