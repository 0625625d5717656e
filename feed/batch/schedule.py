"""When to retrain, and running a retrain under the batch lock with its bookkeeping.

The worker started with `--beat` sends `check` every RETRAIN_CHECK_EVERY_S. `decide` (pure)
says whether enough new interactions arrived since the last successful training; when they
did and no retrain holds the lock, `check` starts `python -m feed.batch.retrain` as a detached
child process and returns at once: the training never runs inside a worker task, so ingestion
on that worker (a solo pool) goes on while it trains. The child (like `feed-engine retrain`)
trains through `run_locked`, which takes the lock, so two retrains never run at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from feed.config import Settings
from feed.stores.batch_state import BatchSnapshot, BatchState
from feed.stores.connection import SyncRedis

log = structlog.get_logger(__name__)

RETRAIN_NICENESS = 10  # a retrain's child process: below the worker's ingestion for the CPU


@dataclass(frozen=True, slots=True)
class RetrainPolicy:
    """The thresholds of `decide` (RETRAIN_* settings)."""

    min_new_events: int
    growth: float
    min_interval_s: float
    max_interval_s: float  # 0: no retrain on time alone

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrainPolicy:
        return cls(
            settings.retrain_min_new_events,
            settings.retrain_growth,
            settings.retrain_min_interval_s,
            settings.retrain_max_interval_s,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """Retrain or not, the rule that decided (for a no: the one not met yet, or `min_interval`,
    `running`, `no_new_events`), and the interactions applied since the last successful training."""

    retrain: bool
    reason: str
    new_events: int


def decide(policy: RetrainPolicy, state: BatchSnapshot, now: float) -> Decision:
    """Retrain when the interactions applied since the last successful training reach
    max(min_new_events, growth * those it was trained on), or when max_interval_s has passed
    since it and any arrived; never within min_interval_s of the last start (a failed training
    is retried after it, not in a loop). With no model yet, min_new_events trains the first."""
    trained = state.trained_events
    if trained is not None and state.applied < trained:  # the counter was reset: count from zero
        trained = 0
    new = state.new_events
    if state.started_at is not None and now - state.started_at < policy.min_interval_s:
        return Decision(False, "min_interval", new)
    if trained is None:
        return Decision(new >= policy.min_new_events, "first_model", new)
    if new >= max(policy.min_new_events, policy.growth * trained):
        return Decision(True, "growth", new)
    if new > 0 and policy.max_interval_s > 0 and now - (state.trained_at or 0.0) >= policy.max_interval_s:
        return Decision(True, "max_interval", new)
    return Decision(False, "growth" if new > 0 else "no_new_events", new)


def launch_retrain() -> None:
    """Start `python -m feed.batch.retrain` in its own session at a lower CPU priority (it yields
    to the worker's ingestion on the same host), not waiting for it. Its output goes where this
    process's does; `subprocess` reaps it at the next launch once it has ended."""
    child = subprocess.Popen(
        [sys.executable, "-m", "feed.batch.retrain"], stdin=subprocess.DEVNULL, start_new_session=True
    )
    # before its imports start the training's threads, which inherit the priority
    os.setpriority(os.PRIO_PROCESS, child.pid, RETRAIN_NICENESS)


def check(r: SyncRedis, settings: Settings, launch: Callable[[], None]) -> Decision:
    """Decide on the bookkeeping in Redis and `launch` a retrain (`launch_retrain`) when one is due
    and none runs."""
    state = BatchState(r)
    snapshot = state.snapshot()
    decision = decide(RetrainPolicy.from_settings(settings), snapshot, time.time())
    if decision.retrain and state.locked():
        decision = Decision(False, "running", decision.new_events)
    if decision.retrain:
        log.info(
            "retrain_launched",
            reason=decision.reason,
            new_events=decision.new_events,
            applied=snapshot.applied,
            trained_events=snapshot.trained_events,
        )
        launch()
    return decision


def run_locked(
    r: SyncRedis, settings: Settings, train: Callable[[], Mapping[str, object]]
) -> Mapping[str, object] | None:
    """Run `train` holding the batch lock and record its start, result or error in Redis;
    None (nothing run) while another retrain holds the lock."""
    state = BatchState(r)
    token = state.acquire(settings.retrain_lock_ttl_s)
    if token is None:
        log.info("retrain_skipped", reason="running")
        return None
    try:
        start = state.start()
        try:
            result = train()
        except Exception as exc:
            state.finish(start, None, repr(exc))
            log.error("retrain_failed", error=repr(exc), events=start.applied)
            raise
        state.finish(start, result)
        log.info(
            "retrain_finished", events=start.applied, seconds=round(time.time() - start.at, 1), result=result
        )
        return result
    finally:
        if not state.release(token):
            log.warning("retrain_lock_expired", ttl_s=settings.retrain_lock_ttl_s)
