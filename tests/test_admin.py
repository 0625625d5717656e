"""The operator page: its JSON (metrics summed up, a user's feed preview that records
nothing), its key, and the page itself in a real headless Chromium (Debian's package)."""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import AsyncTestClient

from feed.app import create_app
from feed.metrics import _quantile_bound
from feed.stores import keys
from feed.stores.post_store import commit_ingested
from feed.stores.records import PostRecord
from ingest_workers.celery_app import app as celery_app
from tests.helpers import feed_api, unit

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


@pytest.fixture
async def api(settings: Any) -> AsyncIterator[Any]:
    seed_posts(settings)
    async with AsyncTestClient(create_app(settings, celery=celery_app)) as client:
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


def test_the_p99_bound_is_the_bucket_that_holds_it() -> None:
    cumulative = {0.001: 50.0, 0.01: 98.0, 0.1: 99.0, float("inf"): 100.0}
    assert _quantile_bound(cumulative, 0.5) == 0.001
    assert _quantile_bound(cumulative, 0.99) == 0.1
    assert _quantile_bound({0.1: 1.0, float("inf"): 100.0}, 0.99) is None  # beyond the largest bound
    assert _quantile_bound({}, 0.99) is None


async def test_a_feed_preview_shows_sources_score_parts_and_stages_and_records_nothing(
    api: Any, redis_client: Any
) -> None:
    answer = await api.get("/admin/feed", params={"user_id": "u1", "limit": 4})
    assert answer.status_code == 200
    body = answer.json()
    assert body["user_id"] == "u1" and len(body["items"]) == 4
    for item in body["items"]:
        assert item["source"] and item["score_parts"] and item["post_type"] == "text"
        assert item["text"].startswith("post number")
    tagged = [item for item in body["items"] if item["post_id"] == "p0"]
    assert not tagged or tagged[0]["tags"] == {"dog": 1}
    stages = {(s["stage"], s["name"]): s for s in body["stages"]}
    assert stages[("source", "fresh")]["status"] == "ok" and stages[("source", "fresh")]["count_out"] == 6
    assert stages[("scorer", "similarity")]["ms"] >= 0
    # nothing recorded: no impressions, no session, no ranking kept for the next feed
    assert await redis_client.zcard(keys.IMPRESSIONS) == 0
    assert not [k async for k in redis_client.scan_iter(match=keys.served("*"))]
    again = (await api.post("/feed", json={"user_id": "u1", "limit": 4, "explain": True})).json()
    fresh = next(s for s in again["stages"] if s["name"] == "fresh")
    assert fresh["status"] == "ok"  # ranked in full, not `cached` from the preview


async def test_a_feed_preview_names_a_missing_or_bad_parameter(api: Any) -> None:
    missing = await api.get("/admin/feed")
    assert missing.status_code == 400 and "user_id" in missing.text
    bad = await api.get("/admin/feed", params={"user_id": "u1", "limit": 0})
    assert bad.status_code == 400 and "limit" in bad.text


async def test_the_operator_page_is_behind_the_key_and_a_browser_signs_in_with_basic_auth(
    settings: Any,
) -> None:
    keyed = settings.model_copy(update={"api_keys": ["s3cret"]})
    async with AsyncTestClient(create_app(keyed, celery=celery_app)) as api:
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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
@pytest.mark.timeout(180)
def test_the_operator_page_in_a_headless_browser_shows_metrics_and_a_users_feed(
    settings: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    seed_posts(settings)
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
