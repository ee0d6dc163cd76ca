"""Create the declared topics and verify existing ones against the declaration, idempotently.

Guarantees:
- a missing topic is created with the declared partitions and configs and the
  profile's replication factor; a topic another process creates at the same
  moment is verified like any existing one ("exists" is treated like "created");
- an existing topic is never deleted or recreated: it is compared field by field
  (partitions, replication factor, each declared config) and every difference
  is reported with what was expected and what was found;
- `fix=True` only grows partitions (`CreatePartitions`) and sets declared
  configs (`AlterConfigs`); other per-topic overrides are kept. More partitions
  than declared and a different replication factor are reported, never changed.

Result per topic, in order of precedence: `drift` (a difference remains),
`created`, `fixed`, `ok`; `missing` only from `describe_topology`.

An unreachable broker raises ServiceUnavailableError after a bounded wait; a
request the broker refuses raises TopologyError; both print as one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

from paystream.errors import PaystreamError, ServiceUnavailableError
from paystream.logging import quiet_client_logs
from paystream.settings import Settings
from topology.topics import DEFAULT_PROFILE, TOPICS, TopicSpec, TopologyProfile, topic_config

# Limits (seconds/milliseconds in the name): every wait here ends.
BROKER_WAIT_S_MAX = 15.0  # how long to keep trying to reach a broker that does not answer
CONNECT_RETRY_S = 0.5
ADMIN_REQUEST_TIMEOUT_MS = 15_000
# Metadata reaches every broker shortly after the controller accepts a change;
# this bounds how long we wait to see a created topic or a fix before reporting.
SETTLE_WAIT_S_MAX = 10.0
SETTLE_POLL_S = 0.2

_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs v1+ config_source: an override set on this topic
# Every topic declares the same config names; only those are read back and compared.
_DECLARED_CONFIG_NAMES = tuple(topic_config(TOPICS[0], DEFAULT_PROFILE))

Status = Literal["created", "ok", "fixed", "drift", "missing"]


class TopologyError(PaystreamError):
    """The broker refused a topic operation (too few brokers for the profile, a bad config, ...)."""


@dataclass(frozen=True, slots=True)
class LiveTopic:
    """What the broker reports for one (namespaced) topic; only declared configs are kept."""

    name: str
    exists: bool
    partitions: int = 0
    replication_factor: int = 0  # the smallest replica count over its partitions
    configs: Mapping[str, str | None] | None = None


@dataclass(frozen=True, slots=True)
class Drift:
    """One field that differs from the declaration."""

    field: str
    expected: str
    actual: str
    fixable: bool  # whether `--fix` can change it
    note: str = ""

    def __str__(self) -> str:
        text = f"{self.field}: expected {self.expected}, found {self.actual}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True, slots=True)
class TopicResult:
    """One declared topic after a run: what the broker has, its status, what differs and what was fixed."""

    spec: TopicSpec
    live: LiveTopic
    status: Status
    drift: tuple[Drift, ...] = ()  # what still differs after this run
    fixed: tuple[Drift, ...] = ()  # what this run changed

    @property
    def topic(self) -> str:
        return self.live.name


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """Every declared topic, in declaration order, so the output reads like the declaration."""

    profile: TopologyProfile
    topics: tuple[TopicResult, ...]

    @property
    def drift_remains(self) -> bool:
        return any(result.drift for result in self.topics)

    def names(self, status: Status) -> list[str]:
        """The namespaced topics with this status, in declaration order."""
        return [result.topic for result in self.topics if result.status == status]


# --- comparing (pure) ---------------------------------------------------------------------------


def diff_topic(spec: TopicSpec, live: LiveTopic, profile: TopologyProfile) -> tuple[Drift, ...]:
    """Every difference between a declaration and what the broker reports, in a stable order."""
    if not live.exists:
        return (Drift("exists", "yes", "no", fixable=False, note="`paystream topology apply` creates it"),)
    found: list[Drift] = []
    if live.partitions < spec.partitions:
        # New partitions move keys: stop the stages first so no payer's events are read out of order.
        found.append(_drift("partitions", spec.partitions, live.partitions, True, "--fix adds partitions"))
    elif live.partitions > spec.partitions:
        found.append(_drift("partitions", spec.partitions, live.partitions, False, "Kafka cannot remove partitions"))
    if live.replication_factor != profile.replication_factor:
        note = f"profile {profile.name}; changing it needs a partition reassignment"
        found.append(_drift("replication", profile.replication_factor, live.replication_factor, False, note))
    configs = live.configs or {}
    for key, expected in topic_config(spec, profile).items():
        if configs.get(key) != expected:
            found.append(_config_drift(key, expected, configs.get(key), live.replication_factor))
    return tuple(found)


def _config_drift(key: str, expected: str, actual: str | None, replication_factor: int) -> Drift:
    if key == "min.insync.replicas" and int(expected) > replication_factor:
        # Safety: a min ISR above the replica count makes the broker refuse every acks=all write.
        note = f"not set while the topic has {replication_factor} replica(s): it would refuse every write"
        return _drift(key, expected, actual, False, note)
    return _drift(key, expected, actual, True)


def _drift(field: str, expected: object, actual: object, fixable: bool, note: str = "") -> Drift:
    return Drift(field, str(expected), "(unset)" if actual is None else str(actual), fixable, note)


def _result(
    spec: TopicSpec, live: LiveTopic, drift: tuple[Drift, ...], created: bool, fixed: tuple[Drift, ...]
) -> TopicResult:
    """The status, by the precedence in the module docstring: a remaining difference wins."""
    status: Status
    if not live.exists:
        status = "missing"
    elif drift:
        status = "drift"
    elif created:
        status = "created"
    else:
        status = "fixed" if fixed else "ok"
    return TopicResult(spec, live, status, drift, fixed)


# --- the admin connection -----------------------------------------------------------------------


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client on a reachable broker; Kafka errors leave as one-line operating errors."""
    admin = await _connect(settings)
    try:
        yield admin
    except (KafkaError, TimeoutError, OSError) as error:
        raise _operating_error(settings, error) from error
    finally:
        await admin.close()


async def _connect(settings: Settings) -> AIOKafkaAdminClient:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BROKER_WAIT_S_MAX
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="paystream-topology",
            request_timeout_ms=ADMIN_REQUEST_TIMEOUT_MS,
        )
        try:
            # Each refused attempt would log an aiokafka ERROR; the one line we raise says it all.
            with quiet_client_logs():
                await asyncio.wait_for(admin.start(), max(0.1, deadline - loop.time()))
        except (KafkaError, TimeoutError, OSError) as error:
            await admin.close()
            if loop.time() + CONNECT_RETRY_S >= deadline:
                raise ServiceUnavailableError(
                    f"cannot reach Kafka at {settings.kafka_bootstrap} within {BROKER_WAIT_S_MAX:.0f} s"
                    f" ({error or type(error).__name__}); is the stack up? try: paystream stack up"
                ) from error
            await asyncio.sleep(CONNECT_RETRY_S)
        else:
            return admin


def _operating_error(settings: Settings, error: BaseException) -> PaystreamError:
    if isinstance(error, PaystreamError):
        return error
    text = str(error) or type(error).__name__
    if isinstance(error, TimeoutError | OSError) or getattr(error, "retriable", False):
        return ServiceUnavailableError(f"Kafka at {settings.kafka_bootstrap} did not complete a request: {text}")
    return TopologyError(f"Kafka at {settings.kafka_bootstrap} refused a request: {text}")


def _broker_error(code: int, message: str | None) -> str:
    error = for_code(code)
    return f"{error.__name__}: {message}" if message else error.__name__


# --- reading the live state ---------------------------------------------------------------------


async def _snapshot(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, LiveTopic]:
    """The live state of these topics; one not yet visible everywhere counts as not existing."""
    listed = set(await admin.list_topics())
    # Only topics that exist are named in a metadata request: on a broker with
    # auto.create.topics.enable, naming a missing one would create it with defaults.
    present = [name for name in names if name in listed]
    metadata = {d["topic"]: d for d in await admin.describe_topics(present)} if present else {}
    configs = await _declared_configs(admin, present)
    return {name: _live(name, metadata.get(name), configs.get(name)) for name in names}


def _live(name: str, metadata: dict[str, Any] | None, configs: dict[str, str | None] | None) -> LiveTopic:
    if metadata is None or metadata["error_code"] != 0 or not metadata["partitions"] or configs is None:
        return LiveTopic(name, exists=False)
    replicas = min(len(p["replicas"]) for p in metadata["partitions"])
    return LiveTopic(name, True, len(metadata["partitions"]), replicas, configs)


async def _declared_configs(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str | None]]:
    """Each topic's effective value (override or default) of every config paystream declares."""
    entries = await _describe_configs(admin, names, dict.fromkeys(_DECLARED_CONFIG_NAMES))
    return {name: {entry[0]: entry[1] for entry in found} for name, found in entries.items()}


async def _describe_configs(
    admin: AIOKafkaAdminClient, names: list[str], wanted: dict[str, None] | None
) -> dict[str, list[Any]]:
    """Raw config entries per topic; a topic the broker does not know yet is left out."""
    if not names:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, wanted) for name in names]
    found: dict[str, list[Any]] = {}
    for response in await admin.describe_configs(resources):
        # v1+: (error_code, error_message, resource_type, resource_name, [(name, value, read_only, source, ...)])
        assert response.API_VERSION >= 1, "DescribeConfigs v0 has no config_source"
        for code, message, _type, name, entries in response.resources:
            if code == UnknownTopicOrPartitionError.errno:
                continue
            if code:
                raise TopologyError(f"cannot read the configs of {name}: {_broker_error(code, message)}")
            found[name] = list(entries)
    return found


async def _settled_snapshot(
    admin: AIOKafkaAdminClient, names: list[str], settled: Callable[[dict[str, LiveTopic]], bool]
) -> dict[str, LiveTopic]:
    """Poll until `settled` holds or the bounded wait ends; the caller reports what it sees then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_WAIT_S_MAX
    while True:
        live = await _snapshot(admin, names)
        if settled(live) or loop.time() >= deadline:
            return live
        await asyncio.sleep(SETTLE_POLL_S)


# --- changing the cluster -----------------------------------------------------------------------


async def _create_missing(
    admin: AIOKafkaAdminClient, specs: Iterable[tuple[TopicSpec, str]], profile: TopologyProfile
) -> set[str]:
    """Create the topics the broker does not list; returns the names this call created."""
    listed = set(await admin.list_topics())
    missing = [(spec, name) for spec, name in specs if name not in listed]
    if not missing:
        return set()
    new_topics = [
        NewTopic(name, spec.partitions, profile.replication_factor, topic_configs=topic_config(spec, profile))
        for spec, name in missing
    ]
    response = await admin.create_topics(new_topics, timeout_ms=ADMIN_REQUEST_TIMEOUT_MS)
    created: set[str] = set()
    refused: list[str] = []
    for name, code, *message in response.topic_errors:
        if code == 0:
            created.add(name)
        elif code != TopicAlreadyExistsError.errno:  # another process won the race: verified like any topic
            refused.append(f"{name} ({_broker_error(code, message[0] if message else None)})")
    if refused:
        raise TopologyError(
            f"cannot create {len(refused)} topic(s) with profile {profile.name}"
            f" (replication {profile.replication_factor}): {'; '.join(refused)}"
        )
    return created


async def _fix(admin: AIOKafkaAdminClient, todo: dict[str, tuple[TopicSpec, tuple[Drift, ...]]]) -> None:
    """Grow partitions and set declared configs, for the fixable differences only."""
    grow = {name: NewPartitions(spec.partitions) for name, (spec, drift) in todo.items() if _has(drift, "partitions")}
    if grow:
        await admin.create_partitions(grow, timeout_ms=ADMIN_REQUEST_TIMEOUT_MS)
    configs = {
        name: {d.field: d.expected for d in drift if d.field != "partitions"}
        for name, (_spec, drift) in todo.items()
        if any(d.field != "partitions" for d in drift)
    }
    if configs:
        await _alter_configs(admin, configs)


def _has(drift: tuple[Drift, ...], field: str) -> bool:
    return any(d.field == field for d in drift)


async def _alter_configs(admin: AIOKafkaAdminClient, changes: dict[str, dict[str, str]]) -> None:
    # AlterConfigs (the only config call aiokafka has) replaces a topic's whole
    # set of overrides, so every override we do not change is sent back as it is.
    overrides = await _dynamic_overrides(admin, list(changes))
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, {**overrides.get(name, {}), **changed})
        for name, changed in changes.items()
    ]
    for response in await admin.alter_configs(resources):
        for code, message, _type, name in response.resources:
            if code:
                raise TopologyError(f"cannot set the configs of {name}: {_broker_error(code, message)}")


async def _dynamic_overrides(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """The configs set on each topic itself (not inherited from the broker)."""
    found: dict[str, dict[str, str]] = {}
    for name, entries in (await _describe_configs(admin, names, None)).items():
        own = [entry for entry in entries if entry[3] == _DYNAMIC_TOPIC_CONFIG]
        if any(entry[4] for entry in own):  # is_sensitive: the broker hides the value, we could not send it back
            raise TopologyError(f"{name} has a sensitive config override; set its configs by hand")
        found[name] = {entry[0]: entry[1] for entry in own}
    return found


# --- the two entry points -----------------------------------------------------------------------


async def apply_topology(
    settings: Settings, profile: TopologyProfile = DEFAULT_PROFILE, fix: bool = False
) -> ApplyReport:
    """Create what is missing, verify everything, and with `fix` repair what can be repaired."""
    specs = [(spec, settings.topic(spec.name)) for spec in TOPICS]
    names = [name for _spec, name in specs]
    async with _admin(settings) as admin:
        created = await _create_missing(admin, specs, profile)
        live = await _settled_snapshot(admin, names, lambda snap: all(t.exists for t in snap.values()))
        drift = {name: diff_topic(spec, live[name], profile) for spec, name in specs}
        todo = {name: (spec, _fixable(drift[name])) for spec, name in specs if fix and _fixable(drift[name])}
        if todo:
            await _fix(admin, todo)
            live = await _settled_snapshot(admin, names, lambda snap: _fixes_visible(snap, todo, profile))
            drift = {name: diff_topic(spec, live[name], profile) for spec, name in specs}
    results = tuple(
        _result(spec, live[name], drift[name], name in created, _fixed(todo.get(name), drift[name]))
        for spec, name in specs
    )
    return ApplyReport(profile, results)


async def describe_topology(settings: Settings, profile: TopologyProfile = DEFAULT_PROFILE) -> ApplyReport:
    """The live state of every declared topic and how it differs from the declaration; changes nothing."""
    specs = [(spec, settings.topic(spec.name)) for spec in TOPICS]
    async with _admin(settings) as admin:
        live = await _snapshot(admin, [name for _spec, name in specs])
    results = tuple(_result(spec, live[name], diff_topic(spec, live[name], profile), False, ()) for spec, name in specs)
    return ApplyReport(profile, results)


def _fixable(drift: tuple[Drift, ...]) -> tuple[Drift, ...]:
    return tuple(d for d in drift if d.fixable)


def _fixes_visible(
    live: dict[str, LiveTopic], todo: dict[str, tuple[TopicSpec, tuple[Drift, ...]]], profile: TopologyProfile
) -> bool:
    return all(not _fixable(diff_topic(spec, live[name], profile)) for name, (spec, _drift) in todo.items())


def _fixed(attempted: tuple[TopicSpec, tuple[Drift, ...]] | None, remaining: tuple[Drift, ...]) -> tuple[Drift, ...]:
    if attempted is None:
        return ()
    still = {d.field for d in remaining}
    return tuple(d for d in attempted[1] if d.field not in still)
