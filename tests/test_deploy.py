"""deploy/: the compose file and the Kubernetes manifests (parsed, no Docker or cluster here)
name only installed entry points, only settings the engine reads, and probe paths it serves;
the image pins torch as scripts/setup_env.sh does."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from feed.app import create_app
from feed.config import Settings
from ingest_workers.celery_app import app as celery_app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ENGINE = {"api", "worker", "scheduler", "consumer"}
ENTRY_POINTS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
SETTINGS = {name.upper() for name in Settings.model_fields}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def manifests() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def served_get_paths() -> set[str]:
    app = create_app(Settings(), celery=celery_app)
    return {route.path for route in app.routes if "GET" in getattr(route, "methods", ())}


def test_compose_runs_every_process_on_kafka_kraft_valkey_and_a_qdrant_server() -> None:
    services = compose()["services"]
    assert {"kafka", "valkey", "qdrant", "gateway"} | ENGINE <= set(services)
    assert not any("zookeeper" in name for name in services)
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert "--appendonly" in services["valkey"]["command"]
    for name in ENGINE:
        service = services[name]
        assert service["command"][0] in ENTRY_POINTS, name
        env = service["environment"]
        assert set(env) <= SETTINGS, f"{name}: {set(env) - SETTINGS} are not settings"
        assert env["REDIS_URL"].startswith("redis://valkey:")
        assert env["QDRANT_URL"].startswith("http://qdrant:")
        assert env["KAFKA_BOOTSTRAP_SERVERS"].startswith("kafka:")
    assert services["api"]["deploy"]["replicas"] >= 2
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"http://api:8000\b", nginx)


def test_kubernetes_manifests_wire_config_probes_and_autoscaling() -> None:
    docs = manifests()
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    assert {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"} <= set(by_kind)
    config_keys = set(by_kind["ConfigMap"]["feed-engine"]["data"]) | set(
        by_kind["Secret"]["feed-engine-keys"]["stringData"]
    )
    assert config_keys <= SETTINGS, config_keys - SETTINGS
    paths = served_get_paths()
    for name, deployment in by_kind["Deployment"].items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["command"][0] in ENTRY_POINTS, name
            assert {e["name"] for e in container.get("env", [])} <= SETTINGS
            for ref in container.get("envFrom", []):
                kind, ref_name = (
                    ("ConfigMap", ref["configMapRef"]["name"])
                    if "configMapRef" in ref
                    else (
                        "Secret",
                        ref["secretRef"]["name"],
                    )
                )
                assert ref_name in by_kind[kind], f"{name} reads a missing {kind} {ref_name}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["path"] in paths, f"{name} {probe}"
    api = by_kind["Deployment"]["feed-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    selector = by_kind["Service"]["feed-api"]["spec"]["selector"]
    assert (
        selector.items()
        <= by_kind["Deployment"]["feed-api"]["spec"]["template"]["metadata"]["labels"].items()
    )
    scaled = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in by_kind["HorizontalPodAutoscaler"].values()}
    assert scaled == {"feed-api", "feed-worker"} and scaled <= set(by_kind["Deployment"])
    assert by_kind["Deployment"]["feed-scheduler"]["spec"]["replicas"] == 1  # one beat only


def test_the_image_pins_torch_as_setup_env_does() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    setup = (ROOT / "scripts" / "setup_env.sh").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11" in dockerfile
    pins = set(re.findall(r"torch(?:vision)?==[0-9.]+", dockerfile))
    assert pins == {"torch==2.13.0", "torch==2.14.1", "torchvision==0.29.1"}
    assert pins <= set(re.findall(r"torch(?:vision)?==[0-9.]+", setup))
    assert 'CMD ["feed-api"]' in dockerfile
