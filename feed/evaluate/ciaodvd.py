"""CiaoDVD (DVD ratings with dates and a trust graph, dvd.ciao.co.uk, crawled Nov-Dec 2013) as a
social feed: movies become text posts, ratings become interactions, trust links become follows.

Data set: G. Guo, J. Zhang, D. Thalmann, N. Yorke-Smith. "ETAF: An Extended Trust Antecedents
Framework for Trust Prediction." Proc. ASONAM 2014, pp. 540-547 (LibRec's CiaoDVD release). It has
no license statement and redistribution is not granted: it is read from a folder outside the
repository (`--data`, default `../shared/data/ciaodvd`) and never copied into it.

Each movie is a post created at its first rating; its text is its genre, the only item text the
data has ("A film. Genre: Drama."). A rating of 4 or 5 is a `like`, 1 or 2 a `not_interested`,
3 a `view`. Dates are per day, so a rating's time is its day's start (UTC) plus its rank among
that day's ratings in file order, in seconds: times are distinct and the order reproducible, and
a (user, movie) pair rated twice stays two events. The split is by time as for MovieLens
(`dataset.split_by_time`). `trusts.txt` (trustor, trustee) gives each user the users they follow.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

from feed.evaluate.dataset import Movie, Rating, Split, liked_after, sample_users, split_by_time

DEFAULT_FOLDER = Path(__file__).resolve().parents[3] / "shared" / "data" / "ciaodvd"


def read_ratings(path: Path) -> tuple[list[Rating], dict[int, int]]:
    """`movie-ratings.txt` (user, movie, genre, review, rating, date): the ratings in file order,
    timed as the module says, and each movie's genre id."""
    ratings: list[Rating] = []
    genre_of: dict[int, int] = {}
    rank_in_day: Counter[str] = Counter()
    with path.open(newline="") as f:
        for user, movie, genre, _review, rating, date in csv.reader(f):
            day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
            ratings.append(Rating(int(user), int(movie), float(rating), day + rank_in_day[date]))
            rank_in_day[date] += 1
            genre_of.setdefault(int(movie), int(genre))
    return ratings, genre_of


def read_trusts(path: Path) -> dict[int, set[int]]:
    """`trusts.txt` (trustor, trustee, 1): trustor -> the users they trust (follow)."""
    following: dict[int, set[int]] = defaultdict(set)
    with path.open(newline="") as f:
        for trustor, trustee, _value in csv.reader(f):
            following[int(trustor)].add(int(trustee))
    return dict(following)


def read_genres(path: Path) -> dict[int, str]:
    """`genres.tsv` (genreID, name, with a header): genre id -> name."""
    with path.open(newline="") as f:
        return {int(row["genreID"]): row["name"] for row in csv.DictReader(f, delimiter="\t")}


def load(
    folder: Path = DEFAULT_FOLDER, users: int | None = None, seed: int = 0, train_fraction: float = 0.8
) -> Split:
    """Read the data set (optionally a random sample of `users` of the raters, fixed by `seed`;
    the trust graph is then cut to the sample) and split it by time."""
    ratings, genre_of = read_ratings(folder / "movie-ratings.txt")
    following = read_trusts(folder / "trusts.txt")
    chosen = sample_users(ratings, users, seed)
    if chosen is not None:
        ratings = [r for r in ratings if r.user_id in chosen]
        following = {u: f & chosen for u, f in following.items() if u in chosen and f & chosen}
    split_ts, train, test = split_by_time(ratings, train_fraction)

    names = read_genres(folder / "genres.tsv")
    catalogue: dict[int, Movie] = {}
    for r in train:
        if r.movie_id not in catalogue:
            name = names.get(genre_of[r.movie_id])
            genres = frozenset({name}) if name else frozenset()
            catalogue[r.movie_id] = Movie(r.movie_id, f"A film. Genre: {name or 'unknown'}.", genres, r.ts)
    return Split(split_ts, catalogue, train, liked_after(test), following)
