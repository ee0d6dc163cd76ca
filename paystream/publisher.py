"""The Python publisher for upstream systems.

Validates each payment against the contract before sending (a Struct built
in code skips msgspec's checks, so it is encoded and decoded once), keys it
by payer so one payer's payments stay in order, and waits for acks=all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from paystream.errors import PaystreamError
from paystream.kafka import make_producer
from paystream.settings import Settings
from schemas.codec import Decoder, Invalid, encode
from schemas.payments import PaymentRequested
from topology.topics import PAYMENTS_REQUESTED

IN_FLIGHT_MAX = 5_000


class InvalidPaymentError(PaystreamError):
    def __init__(self, payment_id: str, reason: Invalid) -> None:
        super().__init__(f"payment {payment_id} is invalid: {reason}")
        self.reason = reason


class PaymentPublisher:
    def __init__(self, settings: Settings, client_id: str = "paystream-publisher") -> None:
        self.settings = settings
        self.topic = settings.topic(PAYMENTS_REQUESTED)
        self.producer = make_producer(settings, client_id)
        self.decoder = Decoder(PaymentRequested, settings.record_bytes_max)
        self._pending: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> PaymentPublisher:
        await self.producer.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc is None:
                await self.flush()
        finally:
            await self.producer.stop()

    def validate(self, payment: PaymentRequested) -> bytes:
        value = encode(payment)
        checked = self.decoder.decode(value)
        if isinstance(checked, Invalid):
            raise InvalidPaymentError(payment.payment_id, checked)
        return value

    async def publish(self, payment: PaymentRequested) -> None:
        """Queue one validated payment; `flush` (or leaving the context) waits for the acks."""
        await self.send_raw(payment.payer_account.encode(), self.validate(payment))

    async def publish_many(self, payments: Iterable[PaymentRequested]) -> int:
        count = 0
        for payment in payments:
            await self.publish(payment)
            count += 1
        await self.flush()
        return count

    async def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Send bytes as they are: for replays and for testing how bad input is handled."""
        self._pending.append(await self.producer.send(self.topic, value=value, key=key))
        if len(self._pending) >= IN_FLIGHT_MAX:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
