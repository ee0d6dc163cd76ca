"""The edge rules on the real pipeline: refused to the dead letters with field and rule, stored, nothing stalls.

NUL and lone surrogates (`text`), repeated keys (`duplicate_key`), a request with
no room for its derived events (`size`) and a `created_at` outside the event-time
window around the broker's append time (`window`) are refused by the risk stage;
the dead-letter rows, whose `field` and `detail` must be storable PostgreSQL
text, are written; the good payments around them reach a terminal status.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.settings import Settings
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("edge")
    yield settings
    await drop_database(settings)


def _spelled(document: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**document, **changes}, ensure_ascii=False).encode()


async def test_edge_refusals_are_dead_lettered_with_field_and_rule(environment: Settings) -> None:
    prefix = environment.namespace.rstrip(".")
    good = generate(40, f"{prefix}-good", seed=11)
    samples = [msgspec.to_builtins(g.payment) for g in generate(12, f"{prefix}-bad", seed=12)]
    now = datetime.now(UTC)
    inside = {**samples[11], "created_at": (now - timedelta(hours=23)).isoformat()}
    bad: dict[str, tuple[bytes, str, str]] = {
        "NUL in a metadata value": (_spelled(samples[0], metadata={"note": "a\x00b"}), "metadata.note", "text"),
        "NUL in a metadata key": (_spelled(samples[1], metadata={"n\x00te": "b"}), "metadata", "text"),
        "NUL in a field name": (_spelled(samples[2], **{"a\x00b": 1}), "a\\u0000b", "unknown_field"),
        "lone surrogate": (
            _spelled(samples[3], metadata={"k": "@"}).replace(b'"@"', b'"\\ud800"'),
            "metadata.k",
            "text",
        ),
        "repeated key": (
            _spelled(samples[4])[:-1] + b', "amount_minor": 99999999}',
            "amount_minor",
            "duplicate_key",
        ),
        "repeated key spelt with an escape": (
            _spelled(samples[5])[:-1] + b', "amo\\u0075nt_minor": 99999999}',
            "amount_minor",
            "duplicate_key",
        ),
        "no room for derived events": (
            _spelled(samples[6], metadata={f"k{i:02d}": "\U0001f600" * 512 for i in range(24)}),
            "$",
            "size",
        ),
        "created two days before": (
            _spelled(samples[7], created_at=(now - timedelta(days=2)).isoformat()),
            "created_at",
            "window",
        ),
        "created an hour ahead": (
            _spelled(samples[8], created_at=(now + timedelta(hours=1)).isoformat()),
            "created_at",
            "window",
        ),
        "created at year 1": (_spelled(samples[9], created_at="0001-01-01T00:00:00+23:59"), "created_at", "window"),
        "created at year 9999": (
            _spelled(samples[10], created_at="9999-12-31T23:59:59.999999-23:59"),
            "created_at",
            "window",
        ),
    }
    assert len(bad["no room for derived events"][0]) < environment.record_bytes_max  # not refused for its length

    await publish(environment, good[:20], raw=[raw for raw, _, _ in bad.values()] + [_spelled(inside)])
    await publish(environment, good[20:])
    await drain(environment)
    ids = [g.payment.payment_id for g in good] + [inside["payment_id"]]
    statuses = await wait_terminal(environment, ids)
    assert len(statuses) == len(ids)  # including the request 23 hours old: inside the window

    connection = await connect(environment)
    try:
        rows = await connection.fetch("SELECT field, rule, raw, detail FROM dead_letters WHERE stage = 'risk'")
        refused_ids = await connection.fetchval(
            "SELECT count(*) FROM payments WHERE payment_id = ANY($1::text[])",
            [s["payment_id"] for s in samples[:11]],
        )
    finally:
        await connection.close()
    found = {bytes(row["raw"]): (row["field"], row["rule"], row["detail"]) for row in rows}
    for name, (raw, field, rule) in bad.items():
        assert found.get(raw, (None, None, None))[:2] == (field, rule), name
        assert found[raw][2], name
    assert refused_ids == 0, "no refused request became a payment"
    assert "86400 s is allowed" in found[bad["created two days before"][0]][2]
