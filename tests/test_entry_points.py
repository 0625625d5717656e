"""Each process has one installed entry point (`feed-api`, `feed-worker`, `feed-consumer`), and
`feed-engine` runs any of them and the operations (tests/test_cli.py)."""

from __future__ import annotations

from importlib.metadata import entry_points


def test_process_entry_points_resolve() -> None:
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name.startswith("feed-")}
    assert set(scripts) == {"feed-engine", "feed-api", "feed-worker", "feed-consumer"}
    for ep in scripts.values():
        assert callable(ep.load())
