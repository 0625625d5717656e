"""The operator page: its JSON (metrics summed up, the learned ranker and its trainings, a
user's feed preview that records nothing), its key, and the page itself in a real headless
Chromium (Debian's package)."""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import redis

from feed.api.metrics_summary import _quantile_bound
from feed.batch.ranker import TrainingReport
from feed.pipeline.features import FEATURES
from feed.stores import keys
from feed.stores.batch_state import BatchState
from feed.stores.post_store import commit_ingested
from feed.stores.ranker_store import RankerStore
from feed.stores.records import PostRecord
from ingest_workers.celery_app import app as celery_app
from tests.helpers import api_client, feed_api, unit, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = os.environ.get("ADMIN_SCREENSHOT")  # where the browser test saves its screenshot


def seed_posts(settings: Any, n: int = 6) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    for i in range(n):
        text = f"post number {i} about hiking" if i % 2 else f"post number {i} about cooking"
        tags = {"dog": 1} if i == 0 else {}
        author = f"a{i % 3}"
        commit_ingested(
            r,
            PostRecord(
                f"p{i}", f"p{i}", author, author, time.time() - i, "text", text, {"text": unit(1, i)}, tags
            ),
        )
    r.close()


def training(version: int, deployed: bool, **changes: Any) -> TrainingReport:
    """A training report as `train_ranker` writes it: by default one that fitted a model."""
    fields: dict[str, Any] = {
        "version": version,
        "started_at": version / 1e6,
        "seconds": 12.5,
        "deployed": deployed,
        "reason": "new 0.4100 > formula 0.3500" if deployed else "new 0.3000 <= formula 0.3500: stays",
        "events": 5000,
        "posts": 300,
        "cutoffs": [1.0, 2.0],
        "train_groups": 400,
        "train_rows": 12_000,
        "validation_groups": 90,
        "validation_rows": 9_000,
        "served_train_groups": 40,
        "served_validation_groups": 9,
        "ndcg_at_10": {"formula": 0.35, "new": 0.41 if deployed else 0.30},
        "importance": {name: round(0.5 / (i + 1), 4) for i, name in enumerate(FEATURES[:15])},
        "trees": 60,
        "near_duplicates": {"0.0": 0.41, "0.3": 0.40, "0.6": 0.39, "0.9": 0.39},
        "near_duplicate_strength": 0.0,
    }
    return TrainingReport(**(fields | changes))


async def deploy_model(r: Any, version: int) -> None:
    """A tiny LightGBM lambdarank model over every feature, deployed as `train_ranker` does."""
    import lightgbm as lgb

    from feed.ranking.model import RankerModel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(FEATURES)))
    booster = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "num_leaves": 4, "min_data_in_leaf": 5},
        lgb.Dataset(x, rng.integers(0, 3, size=400), group=[40] * 10, feature_name=list(FEATURES)),
        num_boost_round=5,
    )
    await RankerStore(r).deploy(version, RankerModel(version, FEATURES, time.time(), booster).to_bytes())


@pytest.fixture
async def api(settings: Any) -> AsyncIterator[Any]:
    seed_posts(settings)
    async with api_client(settings, celery=celery_app) as client:
        yield client


async def test_overview_sums_up_requests_stages_caches_and_backlogs(api: Any) -> None:
    before = (await api.get("/admin/overview")).json()["metrics"]
    for _ in range(3):
        assert (await api.post("/feed", json={"user_id": "u1", "limit": 2})).status_code == 200
    assert (await api.post("/feed", json={"user_id": 1, "limit": 0})).status_code == 400
    overview = (await api.get("/admin/overview")).json()
    assert overview["posts"] == 6
    metrics = overview["metrics"]

    def route(summary: dict[str, Any], name: str) -> dict[str, Any]:
        return next((r for r in summary["routes"] if r["route"] == name), {"requests": 0, "client_errors": 0})

    feed = route(metrics, "POST /feed")
    assert feed["requests"] - route(before, "POST /feed")["requests"] == 4
    assert feed["client_errors"] - route(before, "POST /feed")["client_errors"] == 1
    assert feed["mean_ms"] > 0 and feed["p99_ms"] is not None
    assert not any(r["route"].startswith("GET /admin") for r in metrics["routes"])  # its own polls
    similarity = next(s for s in metrics["stages"] if s["component"] == "similarity")
    assert similarity["stage"] == "scorer" and similarity["runs"]["ok"] >= 3 and similarity["mean_ms"] > 0
    fresh = next(s for s in metrics["stages"] if s["component"] == "fresh")
    assert fresh["mean_candidates"] > 0
    ranking = next(c for c in metrics["caches"] if c["cache"] == "ranking")
    assert ranking["hits"] + ranking["misses"] >= 3 and 0 <= ranking["hit_rate"] <= 1


async def test_the_overview_says_the_formula_ranks_while_no_model_was_trained(api: Any) -> None:
    ranker = (await api.get("/admin/overview")).json()["ranker"]
    assert ranker == {
        "serving": {"kind": "formula", "version": None, "trained_at": None},
        "deployed_version": 0,
        "trainings": [],
        "importance": None,
        "schedule": {
            "applied": 0,
            "new_events": 0,
            "last_started_at": None,
            "last_finished_at": None,
            "last_outcome": None,
            "last_error": None,
            "last_trained_at": None,
            "running": False,
        },
    }


async def test_the_overview_shows_the_serving_model_the_newest_trainings_and_the_schedule(
    api: Any, redis_client: Any, settings: Any
) -> None:
    store = RankerStore(redis_client)
    for version in range(1, 6):  # older than the five shown
        await store.add_report(msgspec.json.encode(training(version, deployed=False)))
    await store.add_report(msgspec.json.encode(training(1_000_000, deployed=True)))
    too_few = training(2_000_000, False, reason="too few groups: 3 to train, 0 to validate")
    too_few.ndcg_at_10, too_few.importance, too_few.trees = {}, {}, 0
    await store.add_report(msgspec.json.encode(too_few))
    await deploy_model(redis_client, 1_000_000)
    sync = redis.Redis.from_url(settings.redis_url)
    try:
        state = BatchState(sync)
        sync.incrby(keys.APPLIED_EVENTS, 30)
        state.finish(state.start(), {"ranker": "ok"})
        trained = state.last()
        sync.incrby(keys.APPLIED_EVENTS, 12)
        state.finish(state.start(), None, "RuntimeError('host away')")  # a failed one since
    finally:
        sync.close()

    async def learned() -> Any:
        ranker = (await api.get("/admin/overview")).json()["ranker"]
        return ranker if ranker["serving"]["kind"] == "learned" else None

    ranker = await wait_for(learned, timeout=15, every=0.2)
    assert ranker["serving"]["version"] == ranker["deployed_version"] == 1_000_000
    assert ranker["serving"]["trained_at"] == pytest.approx(time.time(), abs=60)
    trainings = ranker["trainings"]
    assert [t["version"] for t in trainings] == [2_000_000, 1_000_000, 5, 4, 3]  # newest first
    assert trainings[0]["ndcg_at_10"] == {} and trainings[0]["reason"].startswith("too few groups")
    deployed = trainings[1]
    assert deployed["deployed"] and deployed["ndcg_at_10"] == {"formula": 0.35, "new": 0.41}
    sizes = ("train_groups", "train_rows", "validation_groups", "validation_rows", "served_train_groups")
    assert [deployed[k] for k in sizes] == [400, 12_000, 90, 9_000, 40]
    assert [deployed[k] for k in ("seconds", "trees", "events", "posts")] == [12.5, 60, 5000, 300]
    assert deployed["near_duplicate_strength"] == 0.0  # what its validation users did best with
    assert "importance" not in deployed and "cutoffs" not in deployed
    # the newest training that fitted a model: its 12 most important features, largest first
    importance = ranker["importance"]
    assert importance["version"] == 1_000_000 and importance["deployed"]
    assert list(importance["shares"]) == list(FEATURES[:12])
    assert importance["shares"][FEATURES[0]] == 0.5
    schedule = ranker["schedule"]
    assert (schedule["applied"], schedule["new_events"]) == (42, 12)
    assert schedule["last_trained_at"] == pytest.approx(float(trained["started_at"]))
    assert schedule["last_started_at"] >= schedule["last_trained_at"]
    assert schedule["last_finished_at"] >= schedule["last_started_at"]
    assert schedule["last_outcome"] == "failed" and "host away" in schedule["last_error"]
    assert not schedule["running"]


def test_the_p99_bound_is_the_bucket_that_holds_it() -> None:
    cumulative = {0.001: 50.0, 0.01: 98.0, 0.1: 99.0, float("inf"): 100.0}
    assert _quantile_bound(cumulative, 0.5) == 0.001
    assert _quantile_bound(cumulative, 0.99) == 0.1
    assert _quantile_bound({0.1: 1.0, float("inf"): 100.0}, 0.99) is None  # beyond the largest bound
    assert _quantile_bound({}, 0.99) is None


async def test_a_feed_preview_shows_sources_score_parts_and_stages_and_records_nothing(
    api: Any, redis_client: Any
) -> None:
    answer = await api.get("/admin/feed", params={"user_id": "u1", "limit": 6})
    assert answer.status_code == 200
    body = answer.json()
    assert body["user_id"] == "u1" and len(body["items"]) == 6  # every post: p0 is among them
    for item in body["items"]:
        assert item["source"] and item["score_parts"] and item["post_type"] == "text"
        assert item["text"].startswith("post number")
    tags = {item["post_id"]: item["tags"] for item in body["items"]}
    assert tags["p0"] == {"dog": 1} and tags["p1"] == {}
    stages = {(s["stage"], s["name"]): s for s in body["stages"]}
    assert stages[("source", "fresh")]["status"] == "ok" and stages[("source", "fresh")]["count_out"] == 6
    assert stages[("scorer", "similarity")]["ms"] >= 0
    # nothing recorded: no impressions, no session, no ranking kept for the next feed
    assert await redis_client.zcard(keys.IMPRESSIONS) == 0
    assert not [k async for k in redis_client.scan_iter(match=keys.served("*"))]
    again = (await api.post("/feed", json={"user_id": "u1", "limit": 4, "explain": True})).json()
    fresh = next(s for s in again["stages"] if s["name"] == "fresh")
    assert fresh["status"] == "ok"  # ranked in full, not `cached` from the preview


async def test_a_feed_preview_shows_the_learned_rankers_feature_contributions(
    api: Any, redis_client: Any
) -> None:
    formula = (await api.get("/admin/feed", params={"user_id": "u1", "limit": 4})).json()
    assert formula["ranker"] == {"kind": "formula", "version": None}
    assert all(item["contributions"] == {} for item in formula["items"])
    await deploy_model(redis_client, 7)

    async def learned() -> Any:
        body = (await api.get("/admin/feed", params={"user_id": "u1", "limit": 4})).json()
        return body if body["ranker"]["kind"] == "learned" else None

    body = await wait_for(learned, timeout=15, every=0.2)
    assert body["ranker"] == {"kind": "learned", "version": 7} and len(body["items"]) == 4
    for item in body["items"]:
        shares = item["contributions"]
        assert set(shares) == {*FEATURES, "base"}
        raw = sum(shares.values())  # they add up to the model's raw score
        assert item["score_parts"]["ranker"] == pytest.approx(1 / (1 + np.exp(-raw)), rel=1e-4)


async def test_a_feed_preview_names_a_missing_or_bad_parameter(api: Any) -> None:
    missing = await api.get("/admin/feed")
    assert missing.status_code == 400 and "user_id" in missing.text
    bad = await api.get("/admin/feed", params={"user_id": "u1", "limit": 0})
    assert bad.status_code == 400 and "limit" in bad.text


async def test_the_operator_page_is_behind_the_key_and_a_browser_signs_in_with_basic_auth(
    settings: Any,
) -> None:
    keyed = settings.model_copy(update={"api_keys": ["s3cret"]})
    async with api_client(keyed, celery=celery_app) as api:
        refused = await api.get("/admin")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic ")  # the browser asks for it
        basic = "Basic " + base64.b64encode(b"operator:s3cret").decode()
        page = await api.get("/admin", headers={"Authorization": basic})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "A user's feed" in page.text
        wrong = "Basic " + base64.b64encode(b"operator:guess").decode()
        assert (await api.get("/admin/overview", headers={"Authorization": wrong})).status_code == 401
        assert (await api.get("/admin/overview", headers={"X-API-Key": "s3cret"})).status_code == 200
        assert (await api.get("/feed", headers={"Authorization": basic})).status_code != 401  # any endpoint


@pytest.mark.timeout(180)
def test_the_operator_page_in_a_headless_browser_shows_metrics_and_a_users_feed(
    settings: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    if CHROMIUM is None:  # skipped on a developer's machine; CI sets REQUIRE_BROWSER_TEST and fails
        missing = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("REQUIRE_BROWSER_TEST"):
            pytest.fail(missing)
        pytest.skip(missing)
    seed_posts(settings)
    r = redis.Redis.from_url(settings.redis_url)
    r.lpush(keys.RANKER_REPORTS, msgspec.json.encode(training(1_700_000_000_000_000, deployed=False)))
    r.close()
    with feed_api(settings, API_KEYS='["s3cret"]') as url, sync_playwright() as pw:
        feed = httpx.post(f"{url}/feed", json={"user_id": "u2", "limit": 3}, headers={"X-API-Key": "s3cret"})
        assert feed.status_code == 200  # for the live stage metrics
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            context = browser.new_context(
                http_credentials={"username": "operator", "password": "s3cret"},
                viewport={"width": 1400, "height": 1000},
            )
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/admin")
            expect(page.locator("#ready")).to_have_text("ready", timeout=30_000)
            expect(page.locator("#posts")).to_contain_text("6 posts")
            ranker = page.locator("#ranker")
            expect(ranker).to_contain_text("Ranker")
            expect(ranker).to_contain_text("hand-set formula: no model deployed yet")
            trainings = page.locator("#ranker-trainings tbody tr")
            expect(trainings).to_have_count(1)
            expect(trainings.first).to_contain_text("0.3500")  # the formula's NDCG@10
            expect(trainings.first).to_contain_text("400 / 90")  # groups
            expect(trainings.first.locator("td.near-duplicates")).to_have_text("0.00")  # strength chosen
            expect(page.locator("#ranker-importance tbody tr")).to_have_count(12)
            page.fill("#user-id", "u1")
            page.click("#show-feed")
            rows = page.locator("#feed-items tbody tr")
            expect(rows).to_have_count(6, timeout=30_000)
            expect(rows.first).to_contain_text("post number")
            expect(page.locator("#feed-items")).to_contain_text("similarity")  # a score part
            expect(page.locator("#feed-stages tbody tr").first).to_be_visible()
            expect(page.locator("#feed-stages")).to_contain_text("phoenix")
            # the live metrics now show the preview's stages and the page's own requests are not counted
            expect(page.locator("#stages tbody tr").first).to_be_visible(timeout=15_000)
            expect(page.locator("#routes")).not_to_contain_text("/admin")
            page.screenshot(path=str(SCREENSHOT or tmp_path / "admin.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
