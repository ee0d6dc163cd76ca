"""Is the broker there? One bounded attempt, so a command without Kafka fails in seconds with one line.

The Kafka client logs each refused connection and leaves a traceback when its
bootstrap fails; commands that talk to Kafka call `require_kafka` first, and
the entry point turns a connection error met later into the same one line.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from paystream.errors import PaystreamError, ServiceUnavailableError
from paystream.logging import quiet_client_logs
from paystream.settings import Settings

KAFKA_REACH_S = 10.0


def kafka_unreachable(settings: Settings, error: BaseException | None = None) -> ServiceUnavailableError:
    if error is None or isinstance(error, TimeoutError):
        reason = f"no broker answered within {KAFKA_REACH_S:.0f} s"
    elif isinstance(error, KafkaConnectionError | OSError):
        reason = "no broker answered"
    else:
        reason = f"{type(error).__name__}: {error}"
    return ServiceUnavailableError(
        f"cannot reach Kafka at {settings.kafka_bootstrap}: {reason} (is the stack up? try: paystream stack up)"
    )


async def require_kafka(settings: Settings) -> None:
    """Return once a broker of `settings.kafka_bootstrap` answered; raise one clear error within KAFKA_REACH_S."""
    client = AIOKafkaClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="paystream-reach",
        request_timeout_ms=int(KAFKA_REACH_S * 1000),
    )
    try:
        # Each refused connection would log an aiokafka ERROR; the one line raised says it all.
        with quiet_client_logs():
            await asyncio.wait_for(client.bootstrap(), KAFKA_REACH_S)
    except (KafkaError, OSError, TimeoutError) as error:
        raise kafka_unreachable(settings, error) from error
    finally:
        with quiet_client_logs():
            await client.close()


async def require_topics(settings: Settings, declared: list[str]) -> None:
    """Raise one line naming the missing topics (declared names, namespaced by `settings`) and the fix.

    Without it a producer to a missing topic waits for metadata and ends in a
    client traceback (brokers here do not create topics on first use).
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(KAFKA_REACH_S * 1000)
    )
    try:
        with quiet_client_logs():
            await admin.start()
            existing = set(await admin.list_topics())
    except (KafkaError, OSError, TimeoutError) as error:
        raise kafka_unreachable(settings, error) from error
    finally:
        with quiet_client_logs():
            await admin.close()
    missing = [settings.topic(name) for name in declared if settings.topic(name) not in existing]
    if missing:
        raise PaystreamError(
            f"topic {', '.join(missing)} does not exist on {settings.kafka_bootstrap}: create the topics with"
            " `paystream topology apply`"
        )
