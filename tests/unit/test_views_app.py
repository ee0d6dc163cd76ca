"""The views app makes exactly the topics topology/ declares for it, under the namespace; skips log once per rule."""

from __future__ import annotations

import socket
from pathlib import Path

from structlog.testing import capture_logs

from paystream.settings import NAMESPACE_CHARS_MAX, Settings
from paystream.views.aggregate import Fact
from paystream.views.app import Refusals, advertised_url, app_id, build_app, state_dir
from paystream.views.windows import EVENT_AGE_S_MAX
from schemas.codec import Invalid
from topology.topics import PAYMENTS_OUTCOMES, VIEWS_APP, VIEWS_TOPICS


def _topics_made(settings: Settings) -> set[str]:
    """Every topic the app would create: its internal topics, its tables' changelogs, its leader topic."""
    app = build_app(settings, 16_066, replication_factor=1).app
    internal = {agent.channel.get_topic_name() for agent in app.agents.values() if agent.channel.internal}
    changelogs = {table.changelog_topic_name for table in app.tables.values()}
    return internal | changelogs | {app._leader_assignor._leader_topic_name}


def test_the_app_makes_exactly_the_declared_topics_under_the_namespace() -> None:
    settings = Settings(namespace="u1.")
    assert app_id(settings) == "u1." + VIEWS_APP
    assert _topics_made(settings) == {settings.topic(name) for name in VIEWS_TOPICS}
    assert all(name.startswith("u1.") for name in _topics_made(settings))


def test_the_app_reads_the_namespaced_outcomes_and_nothing_else_from_outside() -> None:
    app = build_app(Settings(namespace="u2."), 16_066, replication_factor=1).app
    external = {agent.channel.get_topic_name() for agent in app.agents.values() if not agent.channel.internal}
    assert external == {"u2." + PAYMENTS_OUTCOMES}


def test_the_web_server_and_its_advertised_url_follow_the_settings_and_port() -> None:
    app = build_app(Settings(namespace="u3.", views_host="127.0.0.2"), 16_077, replication_factor=1).app
    assert (app.conf.web_bind, app.conf.web_port) == ("127.0.0.2", 16_077)
    # The URL other workers forward requests to.
    assert str(app.conf.canonical_url) == "http://127.0.0.2:16077"


def test_a_wildcard_address_is_advertised_by_host_name_and_ipv6_in_brackets() -> None:
    assert advertised_url("0.0.0.0", 6066) == f"http://{socket.gethostname()}:6066"
    assert advertised_url("::", 6066) == f"http://{socket.gethostname()}:6066"
    assert advertised_url("::1", 6066) == "http://[::1]:6066"
    assert advertised_url("views-1.internal", 6067) == "http://views-1.internal:6067"


def test_the_state_directory_is_per_namespace() -> None:
    base = Settings(stack_dir=Path("/srv/stack"))
    assert state_dir(base.with_overrides(namespace="t1.")) == Path("/srv/stack/views/t1")
    assert state_dir(base.with_overrides(namespace="t2.")) == Path("/srv/stack/views/t2")
    assert state_dir(base) == Path("/srv/stack/views/default")


def test_a_namespaced_views_topic_name_fits_kafka() -> None:
    assert NAMESPACE_CHARS_MAX + max(len(name) for name in VIEWS_TOPICS) <= 249


def test_a_skipped_record_is_logged_once_per_rule() -> None:
    refusals = Refusals()
    with capture_logs() as logs:
        rules = [
            refusals.skip(Invalid("$", "json", "JSON is malformed"), 0, 1),
            refusals.skip(Invalid("$", "json", "JSON is malformed"), 0, 2),
            refusals.skip(Invalid("currency", "enum", "Invalid enum value 'XXX'"), 3, 7),
        ]
    assert rules == ["json", "json", "enum"]
    assert [(entry["rule"], entry["offset"]) for entry in logs] == [("json", 1), ("enum", 7)]
    assert all(entry["log_level"] == "warning" for entry in logs)


def test_an_outcome_older_than_every_window_is_not_counted_and_logged_once() -> None:
    refusals = Refusals()
    now_s = 1_800_000_000.0

    def at(at_s: float) -> Fact:
        return Fact(merchant_id="m1", currency="EUR", status="cleared", amount_minor=1, reasons=[], at_s=at_s)

    with capture_logs() as logs:
        kept = [
            refusals.old(at(now_s - EVENT_AGE_S_MAX), now_s),
            refusals.old(at(now_s - EVENT_AGE_S_MAX - 0.001), now_s),
            refusals.old(at(now_s - 86_400), now_s),
        ]
    assert kept == [False, True, True]
    assert refusals.too_old == 2
    assert [entry["event"] for entry in logs] == ["views do not count outcomes older than their windows"]
