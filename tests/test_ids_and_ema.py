"""Id canonicalisation and the interest-vector EMA maths."""

from __future__ import annotations

import numpy as np
import pytest

from feed.config import RankingConfig
from feed.events.ema import action_weight, ema_update
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
