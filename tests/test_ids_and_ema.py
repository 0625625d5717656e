"""Id canonicalisation and the interest-vector EMA maths."""

from __future__ import annotations

import numpy as np
import pytest

from feed.config import RankingConfig
from feed.events.ema import action_weight, ema_batch, ema_update
from feed.ids import decode_host_id, encode_host_id, id_key, point_id
from tests.helpers import unit


def test_int_and_string_ids_share_a_key_and_point_id() -> None:
    assert id_key(123) == id_key("123") == "123"
    assert point_id(id_key(123)) == point_id(id_key("123"))
    assert point_id("a") != point_id("b")


@pytest.mark.parametrize("value", [7, "7", "a1b2-uuid", 2**40])
def test_host_id_keeps_its_type(value: int | str) -> None:
    assert decode_host_id(encode_host_id(value)) == value
    assert type(decode_host_id(encode_host_id(value))) is type(value)


def test_positive_action_moves_toward_post() -> None:
    user, post = unit(1, 0), unit(0, 1)
    moved = ema_update(user, post, weight=1.0, rate=0.2)
    assert moved is not None
    assert float(moved @ post) > float(user @ post)
    assert np.isclose(np.linalg.norm(moved), 1.0)
    # exact: normalise(0.8 * u + 0.2 * p)
    expected = 0.8 * user + 0.2 * post
    assert np.allclose(moved, expected / np.linalg.norm(expected), atol=1e-6)


def test_negative_action_moves_away_from_post() -> None:
    user, post = unit(1, 1), unit(0, 1)
    moved = ema_update(user, post, weight=-1.5, rate=0.2)
    assert moved is not None
    assert float(moved @ post) < float(user @ post)


def test_first_positive_event_sets_the_vector_and_step_is_capped() -> None:
    post = unit(0, 0, 1)
    assert np.allclose(ema_update(None, post, weight=1.0, rate=0.2), post)  # type: ignore[arg-type]
    assert np.allclose(ema_update(unit(1), post, weight=100.0, rate=0.2), post)  # type: ignore[arg-type]


def test_zero_weight_changes_nothing() -> None:
    user = unit(1, 2)
    assert ema_update(user, unit(0, 1), weight=0.0, rate=0.2) is user


def test_action_weights_come_from_the_table_and_dwell_scales() -> None:
    ranking = RankingConfig()
    assert action_weight("like", None, ranking) == ranking.action_weights["like"]
    assert action_weight("report", None, ranking) < action_weight("hide", None, ranking) < 0
    half = action_weight("dwell", ranking.dwell_full_ms // 2, ranking)
    assert half == pytest.approx(ranking.action_weights["dwell"] / 2)
    assert action_weight("dwell", 10 * ranking.dwell_full_ms, ranking) == ranking.action_weights["dwell"]


def test_batched_updates_equal_the_updates_one_by_one_bit_for_bit() -> None:
    """Mixed vector sizes, users without a vector, zero weights and a move that cancels out."""
    rng = np.random.default_rng(1)

    def vec(size: int) -> np.ndarray:
        v = rng.standard_normal(size).astype(np.float32)
        return v / np.linalg.norm(v)

    start: dict[int, np.ndarray | None] = {}
    updates: dict[int, list[tuple[np.ndarray, float, float]]] = {}
    for slot in range(200):
        size = 512 if slot % 3 == 0 else 384
        start[slot] = None if slot % 5 == 0 else vec(size)
        updates[slot] = [
            (vec(size), float(rng.choice([0.0, 1.0, -1.5, 0.3, 100.0])), float(rng.choice([0.05, 0.3])))
            for _ in range(int(rng.integers(1, 6)))
        ]
    cancel = vec(384)
    start[-1], updates[-1] = cancel, [(cancel, -1.0, 0.5)]  # half of it away from itself: no direction
    batched = ema_batch(start, updates)
    for slot, steps in updates.items():
        one_by_one = start[slot]
        for post, weight, rate in steps:
            one_by_one = ema_update(one_by_one, post, weight, rate)
        got = batched[slot]
        if one_by_one is None:
            assert got is None, slot
        else:
            assert got is not None and got.dtype == one_by_one.dtype and np.array_equal(got, one_by_one), slot
    assert batched[-1] is None
