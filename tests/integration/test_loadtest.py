"""A short load test end to end: every payment's first outcome is seen and measured; reports are written."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from paystream.loadtest.report import write_reports
from paystream.loadtest.run import LoadOptions, run_loadtest
from paystream.settings import load_settings

pytestmark = pytest.mark.integration


async def test_short_load_test_measures_every_payment(tmp_path: Path) -> None:
    options = LoadOptions(rate=100, duration_s=5, seed=3, warmup_s=1, out_dir=tmp_path)
    result = await run_loadtest(options, load_settings())
    data = result.as_dict()
    assert data["published"] == 500
    assert data["completed"] == 500
    # The warm-up's 100 payments are measured apart, never in the run's figures.
    assert data["warmup"]["published"] == 100
    assert data["warmup"]["completed"] == 100
    assert data["workers"] == "processes"
    assert sum(data["outcomes"].values()) == 500
    assert data["outcomes"]["cleared"] > 250
    assert sum(v for row in data["timeline"] for k, v in row.items() if k.startswith("outcome_")) == 500
    latency = data["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 60_000
    assert sum(row["published"] for row in data["timeline"]) == 500
    assert sum(row["completed"] for row in data["timeline"]) == 500
    assert {"lag_risk", "lag_funds", "lag_clearing", "lag_settlement"} <= {k for r in data["timeline"] for k in r}

    paths = write_reports(data, tmp_path)
    assert orjson.loads(paths["json"].read_bytes())["completed"] == 500
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = paths["markdown"].read_text()
    assert f"| p99 | {latency['p99']:.1f} |" in summary
