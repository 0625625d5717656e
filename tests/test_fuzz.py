"""Schemathesis over the served OpenAPI document, against a real `feed-api` process: valid and
invalid requests for every operation; no answer is a 5xx, every 400 names the field."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from tests.helpers import feed_api

EXAMPLES = 40  # per operation and generation mode
NAMES_A_FIELD = re.compile(r"^[A-Za-z_][\w.\[\]-]*: \S")


@pytest.fixture
def api_url(settings: Any) -> Iterator[str]:
    with feed_api(settings) as url:
        yield url


def fuzz(
    operation: Any, mode: GenerationMode, api_url: str, statuses: Counter[str], failures: list[str]
) -> None:
    """Send `EXAMPLES` generated requests for one operation; count answers, note failures."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same cases on every run: a failure can be reproduced
    )
    def run(case: Any) -> None:
        response = case.call(base_url=api_url, timeout=10)
        statuses[f"{case.method} {case.path} {mode.value} {response.status_code}"] += 1
        where = f"{case.method} {case.formatted_path}"
        if response.status_code >= 500:
            failures.append(f"{where} -> {response.status_code}: {case.body!r}")
        elif response.status_code == 400:
            detail = response.json().get("detail", "")
            if not NAMES_A_FIELD.match(detail):
                failures.append(f"{where} 400 without a field: {detail!r}")

    run()


def hostile_bodies(api_url: str, failures: list[str]) -> None:
    """What generated cases do not reach: bodies nested past the decoder's depth (about 2 kB at
    1,000 levels) and very wide ones (200,000 array items, 50,000 unknown fields), on every
    write. None may get a 5xx; the nested ones get a 400 naming `body`."""
    depth = 1_000
    for path, field in (("/feed", "user_id"), ("/interaction", "user_id"), ("/posts", "author_id")):
        key = f'"{field}": '.encode()
        bodies = {
            "nested": b"{" + key + b"[" * depth + b"]" * depth + b"}",
            "wide array": b"{" + key + b"[" + b",".join([b"0"] * 200_000) + b"]}",
            "wide object": b"{" + key + b'"u", ' + b", ".join(b'"k%d": 0' % i for i in range(50_000)) + b"}",
        }
        for kind, body in bodies.items():
            answer = httpx.post(
                f"{api_url}{path}", content=body, headers={"content-type": "application/json"}, timeout=10
            )
            detail = answer.json().get("detail", "") if answer.status_code == 400 else ""
            if answer.status_code >= 500 or (kind == "nested" and not detail.startswith("body:")):
                failures.append(f"POST {path} {kind} -> {answer.status_code}: {answer.text[:200]}")


@pytest.mark.timeout(600)
def test_fuzzed_requests_get_no_5xx_and_every_400_names_the_field(api_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/schema/openapi.json")
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    unsatisfiable: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /posts",
        "GET /posts/{post_id}",
        "DELETE /posts/{post_id}",
        "POST /interaction",
        "POST /feed",
        "GET /health",
        "GET /ready",
    }
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, api_url, statuses, failures)
            except Unsatisfiable:  # nothing about the operation can be made invalid (no inputs)
                assert mode == GenerationMode.NEGATIVE, operation.path
                unsatisfiable.append(f"{operation.method.upper()} {operation.path}")
    hostile_bodies(api_url, failures)
    print(f"fuzz: {sum(statuses.values())} requests", *sorted(statuses.items()), sep="\n  ")
    print("no invalid input possible:", unsatisfiable)
    assert not failures, "\n".join(failures[:20])
    assert sum(n for key, n in statuses.items() if key.endswith(" 400")) > 0  # invalid input was sent
