"""docker-compose.yml and the Dockerfile cannot be run here (no Docker engine), so their structure is checked instead.

The healthcheck commands are run for real, in-process, against a stand-in for urllib's urlopen: they must ask
the right URL and exit 0 only on a 200 (tests/unit/test_monitoring_files.py checks Prometheus and Grafana).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from paystream.settings import load_settings
from workers import STAGE_NAMES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MONITORING_SERVICES = ("views", "prometheus", "grafana")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def worker_services() -> dict[str, dict[str, Any]]:
    """The services that run `paystream worker STAGE`, by name."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("command", [None])[0] == "worker"
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ENV":
            for pair in arguments.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


class _Answer:
    def __init__(self, status: int) -> None:
        self.status = status


def run_healthcheck(
    command: list[str], env: dict[str, str], status: int | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, int | str | None]:
    """Run a `python -c` healthcheck with `env`; urlopen answers `status` (None: nothing listens).

    Returns the URL it asked and its exit code. An exception escaping the snippet would make the real
    interpreter exit 1; it is reported as that.
    """
    assert command[:3] == ["CMD", "python", "-c"], command
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> _Answer:
        asked.append(url)
        assert 0 < timeout <= 5, "the check answers within its healthcheck timeout"
        if status is None:
            raise urllib.error.URLError("[Errno 111] Connection refused")
        if not 200 <= status < 300:
            raise urllib.error.HTTPError(url, status, "unavailable", None, None)  # type: ignore[arg-type]
        return _Answer(status)

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    code: int | str | None = 0
    try:
        exec(command[3], {"__name__": "__main__"})
    except SystemExit as exited:
        code = exited.code
    except OSError:
        code = 1
    assert len(asked) == 1, asked
    return asked[0], code


def test_services_and_images() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "postgres", "init", *STAGE_NAMES, *MONITORING_SERVICES}
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["postgres"]["image"].startswith("postgres:")
    # Pinned releases: `latest` would change what `docker compose up` runs under our feet.
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", services["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", services["grafana"]["image"])


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


def test_init_job_disables_the_images_worker_healthcheck() -> None:
    # It serves no /healthz: the image's check would only ever fail there.
    assert compose()["services"]["init"]["healthcheck"] == {"disable": True}


def test_each_stage_is_a_worker_started_after_init() -> None:
    assert set(worker_services()) == set(STAGE_NAMES)
    for stage, service in worker_services().items():
        assert service["command"] == ["worker", stage]
        assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"
        env = service["environment"]
        assert env["PAYSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["PAYSTREAM_DATABASE_URL"].startswith("postgresql://")


def test_workers_outlast_their_shutdown_grace_before_docker_kills_them() -> None:
    grace_ms = 30_000  # PAYSTREAM_SHUTDOWN_GRACE_MS's default; compose does not change it
    for stage, service in worker_services().items():
        assert "PAYSTREAM_SHUTDOWN_GRACE_MS" not in service["environment"], stage
        period = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
        assert period and int(period.group(1)) * 1000 > grace_ms, stage


def test_workers_serve_metrics_to_other_containers_on_the_images_port() -> None:
    exposed = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "EXPOSE"]
    assert exposed == ["9400"]
    for stage, service in worker_services().items():
        env = service["environment"]
        assert env["PAYSTREAM_METRICS_HOST"] == "0.0.0.0", stage
        assert env["PAYSTREAM_METRICS_PORT"] == exposed[0], stage


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_worker_healthcheck_asks_healthz_on_the_metrics_port(stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = worker_services()[stage]
    env = {name: str(value) for name, value in service["environment"].items()}
    command = service["healthcheck"]["test"]
    url, code = run_healthcheck(command, env, 200, monkeypatch)
    assert url == f"http://127.0.0.1:{env['PAYSTREAM_METRICS_PORT']}/healthz"
    assert code == 0
    for status in (204, 503, None):
        assert run_healthcheck(command, env, status, monkeypatch)[1] not in (0, None), status
    timeout = int(service["healthcheck"]["timeout"].removesuffix("s"))
    assert timeout >= 5, "longer than urlopen's own timeout in the command"


def test_image_healthcheck_asks_healthz_on_the_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    healthchecks = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    options, _, exec_form = healthchecks[0].partition(" CMD ")
    assert "--timeout=5s" in options.split()
    command = ["CMD", *json.loads(exec_form)]
    env = dockerfile_env()
    url, code = run_healthcheck(command, env, 200, monkeypatch)
    assert url == "http://127.0.0.1:9400/healthz"
    assert code == 0
    assert run_healthcheck(command, env, 503, monkeypatch)[1] not in (0, None)
    assert run_healthcheck(command, env, None, monkeypatch)[1] not in (0, None)
    # The same check as compose's, so the image alone and the compose stack agree on what "healthy" is.
    assert command == worker_services()[STAGE_NAMES[0]]["healthcheck"]["test"]


def test_views_serve_http_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    views = compose()["services"]["views"]
    assert views["command"] == ["views"]
    assert views["image"] == "paystream:latest"
    assert views["depends_on"]["init"]["condition"] == "service_completed_successfully"
    env = {name: str(value) for name, value in views["environment"].items()}
    assert env["PAYSTREAM_VIEWS_HOST"] == "0.0.0.0"
    assert env["PAYSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    port = env["PAYSTREAM_VIEWS_PORT"]
    assert views["ports"] == [f"127.0.0.1:{port}:{port}"]
    # Its own check: the image's asks a worker's /healthz, which the views do not serve.
    url, code = run_healthcheck(views["healthcheck"]["test"], env, 200, monkeypatch)
    assert url == f"http://127.0.0.1:{port}/"
    assert code == 0
    assert run_healthcheck(views["healthcheck"]["test"], env, None, monkeypatch)[1] not in (0, None)


def test_monitoring_ports_are_published_on_loopback_only() -> None:
    # Grafana lets anonymous visitors view and its admin password is `admin`: not for other hosts.
    services = compose()["services"]
    for name in MONITORING_SERVICES:
        for mapping in services[name]["ports"]:
            assert mapping.startswith("127.0.0.1:"), (name, mapping)


def test_every_paystream_container_starts_with_valid_settings() -> None:
    # Every command validates all PAYSTREAM_* variables first: a misspelt name or a bad value in compose or
    # the image would stop the container at start (exit 2), which no other check here would notice.
    image_env = dockerfile_env()
    for name, service in compose()["services"].items():
        if service.get("image") != "paystream:latest":
            continue
        env = {**image_env, **{key: str(value) for key, value in service["environment"].items()}}
        assert load_settings(env), name
