"""docker-compose.yml cannot be run here (no Docker engine), so its structure is checked instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from workers import STAGE_NAMES

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_services_and_images() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "postgres", "init", *STAGE_NAMES}
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["postgres"]["image"].startswith("postgres:")


def test_kafka_runs_kraft_without_auto_created_topics() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "19092:19092" in compose()["services"]["kafka"]["ports"]


def test_services_have_healthchecks_and_init_waits_for_them() -> None:
    services = compose()["services"]
    for name in ("kafka", "postgres"):
        assert services[name]["healthcheck"]["test"], name
    assert services["init"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    assert "topology apply" in " ".join(services["init"]["entrypoint"])
    assert "db migrate" in " ".join(services["init"]["entrypoint"])


def test_each_stage_is_a_worker_started_after_init() -> None:
    services = compose()["services"]
    for stage in STAGE_NAMES:
        assert services[stage]["command"] == ["worker", stage]
        assert services[stage]["depends_on"]["init"]["condition"] == "service_completed_successfully"
        env = services[stage]["environment"]
        assert env["PAYSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["PAYSTREAM_DATABASE_URL"].startswith("postgresql://")
