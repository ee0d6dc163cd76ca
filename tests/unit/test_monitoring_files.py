"""Prometheus and Grafana for docker-compose.yml (topology/monitoring/): checked by structure, no Docker here.

Prometheus must scrape exactly the compose worker services on the port compose gives them, the files compose
mounts must exist, and the Grafana dashboard may only ask for the metrics the workers export.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
MONITORING = ROOT / "topology" / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources"
DASHBOARD_PROVIDERS = MONITORING / "grafana" / "provisioning" / "dashboards"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
DASHBOARD = DASHBOARDS / "paystream.json"
GRAFANA_PROVISIONING_PATH = "/etc/grafana/provisioning"  # the image's GF_PATHS_PROVISIONING

# The metrics paystream's processes export, by name and kind. Must match the Metrics section of
# docs/operations.md (the one list for operators); the dashboard may use no other metric.
METRICS = {
    "paystream_stage_records_total": "counter",
    "paystream_stage_batches_total": "counter",
    "paystream_stage_outputs_total": "counter",
    "paystream_stage_dead_letters_total": "counter",
    "paystream_stage_poison_isolations_total": "counter",
    "paystream_stage_poisoned_records_total": "counter",
    "paystream_stage_fenced_batches_total": "counter",
    "paystream_stage_retries_total": "counter",
    "paystream_stage_commit_failures_total": "counter",
    "paystream_stage_rebalances_total": "counter",
    "paystream_stage_ticks_total": "counter",
    "paystream_stage_batch_duration_seconds": "histogram",
    "paystream_stage_batch_records": "histogram",
    "paystream_stage_event_latency_seconds": "histogram",
    "paystream_stage_consumer_lag_records": "gauge",
    "paystream_stage_last_batch_age_seconds": "gauge",
    "paystream_stage_assigned_partitions": "gauge",
    "paystream_settlement_batches": "gauge",
    "paystream_db_pool_connections_in_use": "gauge",
    "paystream_db_pool_connections_max": "gauge",
}
HISTOGRAM_SERIES_SUFFIXES = ("_bucket", "_sum", "_count")

# PromQL words that are neither metrics nor functions.
_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def bind_mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """Container path -> (host path, read-only) for each of the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        assert source.startswith("./"), f"{volume}: a path in the checkout, relative to docker-compose.yml"
        mounts[target] = (ROOT / source, mode == ["ro"])
    return mounts


def container_path(mounts: dict[str, tuple[Path, bool]], path: str) -> Path:
    """The checkout's file behind a path inside the container."""
    for target, (source, _) in mounts.items():
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source / path[len(target) :].lstrip("/")
    raise AssertionError(f"{path} is not under any mount: {sorted(mounts)}")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, histogram series (_bucket ...) as their histogram."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors, $__rate_interval among them
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        if word in _PROMQL_KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword or a function
        for suffix in HISTOGRAM_SERIES_SUFFIXES:
            base = word.removesuffix(suffix)
            if base != word and METRICS.get(base) == "histogram":
                word = base
        names.add(word)
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def provisioned_datasource() -> dict[str, Any]:
    files = sorted(DATASOURCES.glob("*.yml"))
    assert len(files) == 1, files
    config = load_yaml(files[0])
    assert config["apiVersion"] == 1
    (datasource,) = config["datasources"]
    assert {"name", "uid", "type", "access", "url"} <= set(datasource), datasource
    return dict(datasource)


def test_prometheus_config_is_well_formed() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert re.fullmatch(r"\d+s", config["global"]["scrape_interval"])
    assert config["scrape_configs"], "at least one scrape job"
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(jobs) == len(set(jobs)), jobs
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job
        assert job["static_configs"] and all(static["targets"] for static in job["static_configs"]), job


def test_prometheus_scrapes_exactly_the_worker_services_on_their_metrics_port() -> None:
    services = compose_services()
    workers = {name: service for name, service in services.items() if service.get("command", [None])[0] == "worker"}
    assert workers
    wanted = {f"{name}:{service['environment']['PAYSTREAM_METRICS_PORT']}" for name, service in workers.items()}
    scraped = [
        target
        for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    assert sorted(scraped) == sorted(wanted)


def test_prometheus_adds_no_stage_label_of_its_own() -> None:
    # The workers label their series with `stage`; a target label of that name would rename theirs to
    # exported_stage, and every dashboard query grouped by stage would come back empty.
    for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]:
        assert not job.get("honor_labels", False), job["job_name"]
        assert "relabel_configs" not in job and "metric_relabel_configs" not in job, job["job_name"]
        for static in job["static_configs"]:
            assert "stage" not in static.get("labels", {}), job["job_name"]


def test_compose_mounts_existing_files_read_only() -> None:
    mounted = 0
    for name, service in compose_services().items():
        for target, (source, read_only) in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} mounted at {target} does not exist"
            assert read_only, f"{name}: {target} should be mounted :ro"
            mounted += 1
    assert mounted >= 3


def test_prometheus_reads_the_mounted_config() -> None:
    prometheus = compose_services()["prometheus"]
    flags = dict(flag.split("=", 1) for flag in prometheus["command"])
    assert container_path(bind_mounts(prometheus), flags["--config.file"]) == PROMETHEUS_CONFIG
    # Retention bounded: by age and by size.
    assert flags["--storage.tsdb.retention.time"] and flags["--storage.tsdb.retention.size"]


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["access"] == "proxy"
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus"
    published = [mapping.rsplit(":", 1)[1] for mapping in compose_services()["prometheus"]["ports"]]
    assert str(url.port) in published, "Prometheus's port inside its container"
    # $__rate_interval is at least four of these: the same as Prometheus's scrape interval.
    scrape_interval = load_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape_interval


def test_grafana_provisions_the_mounted_dashboards() -> None:
    grafana = compose_services()["grafana"]
    mounts = bind_mounts(grafana)
    assert container_path(mounts, GRAFANA_PROVISIONING_PATH) == MONITORING / "grafana" / "provisioning"
    files = sorted(DASHBOARD_PROVIDERS.glob("*.yml"))
    assert len(files) == 1, files
    config = load_yaml(files[0])
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert {"name", "type", "options"} <= set(provider), provider
    assert provider["type"] == "file"
    assert container_path(mounts, provider["options"]["path"]) == DASHBOARDS
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert container_path(mounts, home) == DASHBOARD


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    uid = provisioned_datasource()["uid"]
    board = dashboard()
    assert board["uid"] and board["title"]
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids are unique"
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_metric_names_in_the_dashboard_are_the_exported_ones() -> None:
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= set(METRICS), f"{sorted(names - set(METRICS))} in {expr!r} are not exported"


def test_metric_name_extraction() -> None:
    # What the test above relies on: labels, functions, ranges and histogram series are not metric names.
    expr = 'histogram_quantile(0.99, sum by (le, stage) (rate(paystream_stage_batch_records_bucket{stage="risk"}[5m])))'
    assert metric_names(expr) == {"paystream_stage_batch_records"}
    assert metric_names("sum by (stage) (rate(paystream_stage_records_total[$__rate_interval])) / up") == {
        "paystream_stage_records_total",
        "up",
    }
    assert metric_names("rate(paystream_stage_records_total_bucket[1m])") == {"paystream_stage_records_total_bucket"}


def test_dashboard_shows_what_operators_watch() -> None:
    exprs = [re.sub(r"\s+", " ", expr) for expr in dashboard_exprs()]

    def shown(pattern: str) -> bool:
        return any(re.search(pattern, expr) for expr in exprs)

    def quantile(q: str, histogram: str) -> str:
        return rf"histogram_quantile\({re.escape(q)}, sum by \(le, stage\) \(rate\({histogram}_bucket\["

    assert shown(r"sum by \(stage\) \(rate\(paystream_stage_records_total\[")
    for q in ("0.5", "0.9", "0.99"):
        assert shown(quantile(q, "paystream_stage_event_latency_seconds")), q
    assert shown(r"sum by \(stage\) \(paystream_stage_consumer_lag_records\)")
    assert shown(r"sum by \(stage\) \(rate\(paystream_stage_dead_letters_total\[")
    assert shown(r"by \(status\) \(paystream_settlement_batches\)")
    assert shown(quantile("0.99", "paystream_stage_batch_duration_seconds"))
    assert shown(r"paystream_db_pool_connections_in_use")
