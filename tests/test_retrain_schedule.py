"""Retraining when enough new interactions arrived: the decision, the batch lock and bookkeeping,
the beat's check on a real Redis (and a real worker), and a real retrain in a child process."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from feed.batch import schedule
from feed.batch.schedule import Decision, RetrainPolicy, decide
from feed.cli import main
from feed.events.apply import EventApplier
from feed.ingest import BATCH_QUEUE, RETRAIN_CHECK_TASK
from feed.stores import keys
from feed.stores.batch_state import BatchSnapshot, BatchState
from feed.stores.interaction_writes import InteractionWrites
from ingest_workers import tasks
from tests.helpers import unit, wait_for
from tests.test_event_apply import event, store_post

POLICY = RetrainPolicy(min_new_events=500, growth=0.1, min_interval_s=300.0, max_interval_s=6 * 3600.0)
NOW = 1_000_000.0
HOUR = 3600.0


def snap(
    applied: int, trained: int | None = None, trained_ago: float = HOUR, started_ago: float | None = None
) -> BatchSnapshot:
    """A snapshot whose last successful training started `trained_ago` s ago on `trained` events
    (and whose last start, of any outcome, was `started_ago` s ago: by default that training's)."""
    trained_at = NOW - trained_ago if trained is not None else None
    started_at = NOW - started_ago if started_ago is not None else trained_at
    return BatchSnapshot(applied, started_at, trained, trained_at)


def test_the_first_model_trains_once_there_are_min_new_events() -> None:
    assert decide(POLICY, snap(0), NOW) == Decision(False, "first_model", 0)
    assert decide(POLICY, snap(499), NOW) == Decision(False, "first_model", 499)
    assert decide(POLICY, snap(500), NOW) == Decision(True, "first_model", 500)
    # a first training that failed (or still runs) holds the next one off for the minimum interval
    assert decide(POLICY, snap(800, started_ago=60), NOW) == Decision(False, "min_interval", 800)
    assert decide(POLICY, snap(800, started_ago=300), NOW).retrain


def test_growth_needs_the_larger_of_min_new_events_and_a_share_of_the_trained_count() -> None:
    assert decide(POLICY, snap(1_499, trained=1_000), NOW) == Decision(False, "growth", 499)
    assert decide(POLICY, snap(1_500, trained=1_000), NOW) == Decision(True, "growth", 500)
    assert not decide(POLICY, snap(10_999, trained=10_000), NOW).retrain  # 999 < 10 % of 10,000
    assert decide(POLICY, snap(11_000, trained=10_000), NOW) == Decision(True, "growth", 1_000)
    # a reset counter (rebuilt store) counts from zero instead of never growing again
    assert decide(POLICY, snap(600, trained=10_000), NOW) == Decision(True, "growth", 600)


def test_never_within_the_minimum_interval_of_the_last_start() -> None:
    assert decide(POLICY, snap(50_000, trained=1_000, trained_ago=299), NOW) == Decision(
        False, "min_interval", 49_000
    )
    assert decide(POLICY, snap(50_000, trained=1_000, trained_ago=300), NOW).retrain
    # a failed training (started 60 s ago, last success an hour ago) is retried after the interval
    failed = snap(50_000, trained=1_000, started_ago=60)
    assert decide(POLICY, failed, NOW).reason == "min_interval"
    assert decide(POLICY, failed, NOW + 240).retrain


def test_after_the_maximum_interval_any_new_interaction_retrains() -> None:
    assert decide(POLICY, snap(10_001, trained=10_000, trained_ago=6 * HOUR - 1), NOW).reason == "growth"
    assert decide(POLICY, snap(10_001, trained=10_000, trained_ago=6 * HOUR), NOW) == Decision(
        True, "max_interval", 1
    )
    assert decide(POLICY, snap(10_000, trained=10_000, trained_ago=60 * HOUR), NOW) == Decision(
        False, "no_new_events", 0
    )
    never = RetrainPolicy(500, 0.1, 300.0, max_interval_s=0)
    assert not decide(never, snap(10_001, trained=10_000, trained_ago=60 * HOUR), NOW).retrain


def test_the_lock_admits_one_holder_and_expires(settings: Any) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    state = BatchState(r)
    token = state.acquire(ttl_s=60)
    assert token is not None and state.locked()
    assert state.acquire(ttl_s=60) is None  # a second retrain, anywhere, is refused
    assert 0 < r.ttl(keys.BATCH_LOCK) <= 60
    assert state.release(token) and not state.locked()

    stale = state.acquire(ttl_s=1)  # a trainer that dies holding the lock...
    assert stale is not None
    time.sleep(1.2)
    fresh = state.acquire(ttl_s=60)  # ...loses it when it expires
    assert fresh is not None
    assert not state.release(stale)  # and cannot release the next holder's lock
    assert state.locked() and state.release(fresh)
    r.close()


def test_run_locked_records_the_training_and_a_failure_keeps_the_last_success(settings: Any) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    state = BatchState(r)
    r.set(keys.APPLIED_EVENTS, 700)
    assert schedule.run_locked(r, settings, lambda: {"cf": {"pairs": 3}}) == {"cf": {"pairs": 3}}
    done = state.last()
    assert done["outcome"] == "ok" and done["trained_events"] == done["started_events"] == "700"
    assert '"pairs": 3' in done["result"] and not state.locked()

    r.set(keys.APPLIED_EVENTS, 900)

    def broken() -> dict[str, object]:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        schedule.run_locked(r, settings, broken)
    failed = state.last()
    assert failed["outcome"] == "failed" and "out of memory" in failed["error"]
    assert failed["started_events"] == "900" and failed["trained_events"] == "700"
    assert not state.locked()

    token = state.acquire(ttl_s=60)  # held elsewhere: nothing runs, and an operator is told so
    assert schedule.run_locked(r, settings, lambda: {"ran": True}) is None
    refused = CliRunner().invoke(main, ["retrain"])
    assert refused.exit_code == 1 and "another retrain is running" in refused.output
    assert state.last()["started_events"] == "900"
    assert token is not None and state.release(token)
    r.close()


async def _apply(settings: Any, redis_client: Any, first: int, count: int) -> None:
    """Apply `count` likes through the consumer's applier (which counts them)."""
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    await applier.apply([event(f"e{n}", "p", user=f"u{n}") for n in range(first, first + count)])


async def test_the_check_task_launches_a_retrain_once_enough_events_were_applied(
    settings: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"retrain_min_new_events": 5, "retrain_min_interval_s": 0.0})
    launched: list[bool] = []
    monkeypatch.setattr(tasks, "get_settings", lambda: settings)
    monkeypatch.setattr(schedule, "launch_retrain", lambda: launched.append(True))
    store_post(settings, "p", "a", unit(1))
    r = redis.Redis.from_url(settings.redis_url)

    await _apply(settings, redis_client, 0, 4)
    assert tasks.check_retrain() == "first_model" and launched == []  # 4 < 5: not yet
    await _apply(settings, redis_client, 4, 1)
    assert tasks.check_retrain() == "first_model" and launched == [True]

    token = BatchState(r).acquire(ttl_s=60)  # the child took the lock and trains
    assert tasks.check_retrain() == "running" and len(launched) == 1
    assert token is not None and BatchState(r).release(token)
    assert schedule.run_locked(r, settings, lambda: {}) == {}  # what the child records: trained on 5

    await _apply(settings, redis_client, 5, 4)
    assert tasks.check_retrain() == "growth" and len(launched) == 1  # 4 new < 5
    await _apply(settings, redis_client, 9, 1)
    assert tasks.check_retrain() == "growth" and len(launched) == 2
    r.close()


async def test_beat_sends_the_check_on_its_own_queue_and_a_worker_runs_it(
    celery_worker: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest_workers.celery_app import app

    entry = app.conf.beat_schedule["check-retrain"]
    assert entry["task"] == RETRAIN_CHECK_TASK and entry["schedule"] == settings.retrain_check_every_s == 60
    assert app.amqp.router.route({}, RETRAIN_CHECK_TASK)["queue"].name == BATCH_QUEUE
    settings = settings.model_copy(update={"retrain_min_new_events": 1})
    launched: list[bool] = []
    monkeypatch.setattr(tasks, "get_settings", lambda: settings)
    monkeypatch.setattr(schedule, "launch_retrain", lambda: launched.append(True))
    redis.Redis.from_url(settings.redis_url).set(keys.APPLIED_EVENTS, 1)
    tasks.check_retrain.delay()  # what beat sends: the worker (solo pool) takes it from feed.batch
    await wait_for(lambda: launched, timeout=30)


def test_a_due_check_retrains_in_a_child_process_and_the_cf_model_appears(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CF_FACTORS", "8")  # the child reads the environment (REDIS_URL: ours)
    monkeypatch.setenv("CF_ITERATIONS", "5")
    r = redis.Redis.from_url(settings.redis_url)
    for user, post in [("u1", "p1"), ("u1", "p2"), ("u2", "p1"), ("u2", "p3")]:
        r.xadd(keys.INTERACTION_LOG, {"user": user, "post": post, "action": "like", "ts": 1})
    r.set(keys.APPLIED_EVENTS, 4)
    settings = settings.model_copy(update={"retrain_min_new_events": 4})

    started = time.perf_counter()
    assert schedule.check(r, settings, schedule.launch_retrain) == Decision(True, "first_model", 4)
    assert time.perf_counter() - started < 1.0  # the check only starts the child
    assert not r.exists(keys.CF_META)

    deadline = time.monotonic() + 120
    while BatchState(r).last().get("outcome") != "ok":
        assert time.monotonic() < deadline, BatchState(r).last()
        time.sleep(0.2)
    assert int(r.hget(keys.CF_META, "version") or 0) > 0 and int(r.hget(keys.CF_META, "factors") or 0) == 8
    assert BatchState(r).last()["trained_events"] == "4"
    assert not BatchState(r).locked()
    assert schedule.check(r, settings, schedule.launch_retrain).reason == "min_interval"
    r.close()
