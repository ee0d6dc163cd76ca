"""The Python publisher for upstream systems.

Validates each payment or account request against its contract before
sending (a Struct built in code skips msgspec's checks, so it is encoded and
decoded once), keys it by the payer's account so one account's requests and
payments stay in order, and waits for acks=all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from paystream.errors import PaystreamError
from paystream.kafka import make_producer
from paystream.settings import Settings
from schemas.accounts import REQUEST_TYPES, AccountRequest, request_kind
from schemas.codec import Decoder, Invalid, encode
from schemas.payments import PaymentRequested
from topology.topics import PAYMENTS_REQUESTED

IN_FLIGHT_MAX = 5_000


class InvalidPaymentError(PaystreamError):
    """A payment or account request that breaks its contract; `what` names it ("payment pay-1", "deposit d-1")."""

    def __init__(self, payment_id: str, reason: Invalid, what: str = "payment") -> None:
        super().__init__(f"{what} {payment_id} is invalid: {reason}")
        self.reason = reason


class PaymentPublisher:
    def __init__(self, settings: Settings, client_id: str = "paystream-publisher") -> None:
        self.settings = settings
        self.topic = settings.topic(PAYMENTS_REQUESTED)
        self.producer = make_producer(settings, client_id)
        self.decoder: Decoder[PaymentRequested | AccountRequest] = Decoder(
            (PaymentRequested, *REQUEST_TYPES.values()), settings.record_bytes_max
        )
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

    def validate(self, event: PaymentRequested | AccountRequest) -> bytes:
        value = encode(event)
        checked = self.decoder.decode(value)
        if isinstance(checked, Invalid):
            if isinstance(event, PaymentRequested):
                raise InvalidPaymentError(event.payment_id, checked)
            raise InvalidPaymentError(event.request_id, checked, request_kind(event))
        return value

    async def publish(self, payment: PaymentRequested) -> None:
        """Queue one validated payment; `flush` (or leaving the context) waits for the acks."""
        await self.send_raw(payment.payer_account.encode(), self.validate(payment))

    async def publish_account_request(self, request: AccountRequest) -> None:
        """Queue one validated account request, keyed by its account like that account's payments."""
        await self.send_raw(request.account_id.encode(), self.validate(request))

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
