"""A single-node Apache Kafka broker in KRaft mode, run from Maven Central jars with the installed Java.

The jars are fetched once with Maven into ~/.cache/paystream/kafka-<version>/lib;
storage is formatted once under .stack/kafka/data. Kafka 4.x does not ship its
logging backend as a dependency, so log4j2 and its SLF4J 1.x binding are added.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from paystream.errors import StackError
from paystream.logging import quiet_client_logs
from paystream.settings import STACK_KAFKA_CONTROLLER_PORT, STACK_KAFKA_PORT, Settings
from paystream.stack.process import log_tail, read_pid, run_checked, start_detached, stop_process

LOG4J_VERSION = "2.24.3"
READY_TIMEOUT_S = 60.0

POM_TEMPLATE = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.paystream</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

# The broker logs every topic created or deleted at INFO (megabytes per test
# run): the file rolls at 20 MB and three old files are kept, so it is bounded.
LOG4J_PROPERTIES = """rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=RollingFile
appender.file.name=FILE
appender.file.fileName=${sys:kafka.logs.dir}/server.log
appender.file.filePattern=${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
appender.file.policies.type=Policies
appender.file.policies.size.type=SizeBasedTriggeringPolicy
appender.file.policies.size.size=20MB
appender.file.strategy.type=DefaultRolloverStrategy
appender.file.strategy.max=3
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
"""


def kafka_dir(settings: Settings) -> Path:
    return settings.stack_dir / "kafka"


def lib_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{settings.kafka_version}" / "lib"


def server_properties(settings: Settings) -> str:
    data = kafka_dir(settings) / "data"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{STACK_KAFKA_CONTROLLER_PORT}",
            f"listeners=PLAINTEXT://127.0.0.1:{STACK_KAFKA_PORT},CONTROLLER://127.0.0.1:{STACK_KAFKA_CONTROLLER_PORT}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{STACK_KAFKA_PORT}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # The cleaner allocates 128 MB at start-up by default; 2 MB fits a 512 MB heap.
            "log.cleaner.dedupe.buffer.size=2097152",
            "",
        ]
    )


def fetch_jars(settings: Settings) -> Path:
    """Maven Central -> the cache, once per Kafka version."""
    target = lib_dir(settings)
    if target.is_dir() and any(target.glob("kafka_2.13-*.jar")):
        return target
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch the Kafka broker from Maven Central: apt-get install maven")
    if shutil.which("java") is None:
        raise StackError("Java 17+ is needed to run the Kafka broker: apt-get install openjdk-17-jre-headless")
    work = target.parent
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(POM_TEMPLATE.format(kafka=settings.kafka_version, log4j=LOG4J_VERSION))
    print(f"fetching Apache Kafka {settings.kafka_version} from Maven Central into {target} ...", flush=True)
    partial = work / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    run_checked(
        [
            "mvn",
            "-q",
            "-B",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ],
        "fetching Kafka jars with Maven",
        cwd=str(work),
    )
    partial.rename(target)
    print(f"fetched {len(list(target.glob('*.jar')))} jars", flush=True)
    return target


def _java(settings: Settings, *args: str) -> list[str]:
    return ["java", "-cp", str(lib_dir(settings) / "*"), *args]


def _random_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: URL-safe base64 of 16 bytes, not starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def prepare(settings: Settings) -> Path:
    """Jars, config and formatted storage; returns the server.properties path."""
    fetch_jars(settings)
    home = kafka_dir(settings)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    properties.write_text(server_properties(settings))
    (home / "log4j2.properties").write_text(LOG4J_PROPERTIES)
    if not (home / "data" / "meta.properties").exists():
        run_checked(
            _java(
                settings, "kafka.tools.StorageTool", "format", "--standalone",
                "-t", _random_cluster_id(), "-c", str(properties), "--ignore-formatted",
            ),
            "formatting Kafka storage",
            log_file=home / "logs" / "format.log",
        )  # fmt: skip
    return properties


def pid_file(settings: Settings) -> Path:
    return kafka_dir(settings) / "kafka.pid"


def log_file(settings: Settings) -> Path:
    return kafka_dir(settings) / "logs" / "server.log"


async def start(settings: Settings) -> int:
    """Start the broker if it is not running, and wait until it answers."""
    pid = read_pid(pid_file(settings))
    if pid is None:
        properties = prepare(settings)
        home = kafka_dir(settings)
        heap = f"{settings.kafka_heap_mb}m"
        pid = start_detached(
            [
                "java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={home / 'logs'}",
                "-cp", str(lib_dir(settings) / "*"), "kafka.Kafka", str(properties),
            ],
            home / "logs" / "stdout.log",
            pid_file(settings),
        )  # fmt: skip
    await wait_ready(settings)
    _record_version(settings)
    return pid


async def wait_ready(settings: Settings) -> None:
    with quiet_client_logs():
        await _wait_ready(settings)


async def _wait_ready(settings: Settings) -> None:
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
    last_error: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        if read_pid(pid_file(settings)) is None:
            raise StackError("the Kafka broker exited during start-up; its log ends with:\n" + _tails(settings))
        try:
            await describe(settings)
            return
        except Exception as error:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = error
            await asyncio.sleep(0.5)
    raise StackError(
        f"the Kafka broker did not answer within {READY_TIMEOUT_S:.0f} s ({last_error}); its log ends with:\n"
        + _tails(settings)
    )


def _tails(settings: Settings) -> str:
    home = kafka_dir(settings) / "logs"
    return log_tail(home / "stdout.log") + "\n" + log_tail(home / "server.log")


async def describe(settings: Settings) -> dict[str, object]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=5_000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        cluster: dict[str, object] = await asyncio.wait_for(admin.describe_cluster(), 5)
        return cluster
    finally:
        await admin.close()


def stop(settings: Settings) -> bool:
    return stop_process(pid_file(settings), grace_s=60.0)


def version_file(settings: Settings) -> Path:
    return kafka_dir(settings) / "version"


def _record_version(settings: Settings) -> None:
    """Keep the version the broker states at start-up: later its log rolls past that line."""
    found = _version_in_log(log_file(settings))
    if found is not None:
        version_file(settings).write_text(found)


def _version_in_log(path: Path) -> str | None:
    found = None
    with contextlib.suppress(FileNotFoundError), path.open(errors="replace") as log:
        for line in log:
            if "Kafka version:" in line:
                found = line.split("Kafka version:", 1)[1].split("(", 1)[0].strip()
    return found


def version(settings: Settings) -> str | None:
    """The running broker's version, as it stated it when it started."""
    try:
        return version_file(settings).read_text().strip() or None
    except FileNotFoundError:
        return _version_in_log(log_file(settings))
