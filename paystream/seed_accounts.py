"""The demo world's customer accounts, opened and funded by account requests: never by SQL of their own.

Every payer is opened by an `account.open.requested` and funded by a
`deposit.requested` (a closed demo payer is opened and closed instead). Two
ways to apply them, one code path for the money:

- `publish_account_requests`: onto the payer-keyed request topic, for the
  stages to apply (`accounts seed`, `make demo`). Payments published after
  them for the same payer are applied after them, whether or not the workers
  are running yet.
- `apply_account_requests`: through the risk and funds stages' own code in one
  transaction, without Kafka (test and benchmark environments, which need the
  accounts in place before they start timing or asserting).

Request ids are fixed by the payer (`open:<id>`, `seed:<id>`, `close:<id>`), so
seeding again is answered like the first time: nothing is opened or paid twice.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tqdm import tqdm

from paystream.demo_data import DemoWorld
from paystream.errors import PaystreamError
from paystream.publisher import PaymentPublisher
from paystream.settings import Settings
from paystream.stage.contract import Accepted, Origin, Output, Refused
from schemas.accounts import (
    AccountCloseRequested,
    AccountOpenRequested,
    AccountOutcome,
    AccountRequest,
    DepositRequested,
)
from topology.topics import PAYMENTS_APPROVED
from workers.funds import FundsStage
from workers.risk_accounts import answer_account_requests

SEED_SOURCE_REF = "paystream-demo-seed"
CHUNK_REQUESTS = 2_000


@dataclass(frozen=True, slots=True)
class AppliedCounts:
    succeeded: int
    declined: int
    rejected: int

    def __str__(self) -> str:
        return f"{self.succeeded} succeeded, {self.declined} declined, {self.rejected} rejected"


def demo_account_requests(world: DemoWorld, created_at: datetime) -> list[AccountRequest]:
    """Each payer's requests in the order they must be applied: open, then deposit (or close)."""
    requests: list[AccountRequest] = []
    for payer in world.payers:
        requests.append(
            AccountOpenRequested(
                request_id=f"open:{payer.account_id}",
                account_id=payer.account_id,
                owner_id=payer.account_id,
                currency=payer.currency,  # type: ignore[arg-type]
                created_at=created_at,
            )
        )
        if payer.status == "closed":
            requests.append(
                AccountCloseRequested(
                    request_id=f"close:{payer.account_id}", account_id=payer.account_id, created_at=created_at
                )
            )
        elif payer.balance_minor > 0:
            requests.append(
                DepositRequested(
                    request_id=f"seed:{payer.account_id}",
                    account_id=payer.account_id,
                    amount_minor=payer.balance_minor,
                    currency=payer.currency,  # type: ignore[arg-type]
                    source_ref=SEED_SOURCE_REF,
                    created_at=created_at,
                )
            )
    return requests


async def publish_account_requests(settings: Settings, requests: Sequence[AccountRequest]) -> int:
    """Publish the requests (validated, keyed by account, acks=all); returns how many."""
    progress = tqdm(total=len(requests), unit="req", desc="publishing account requests", file=sys.stderr,
                    disable=len(requests) < CHUNK_REQUESTS)  # fmt: skip
    async with PaymentPublisher(settings, client_id="paystream-seed") as publisher:
        for request in requests:
            await publisher.publish_account_request(request)
            progress.update(1)
    progress.close()
    return len(requests)


async def apply_account_requests(connection: Any, requests: Sequence[AccountRequest], now: datetime) -> AppliedCounts:
    """Apply the requests through risk's and funds' own code, in one transaction, in order.

    A refusal (a request id already used for another body) raises: a seed that
    does not apply as written must not leave a half-seeded world.
    """
    succeeded = declined = rejected = 0
    async with connection.transaction():
        for start in range(0, len(requests), CHUNK_REQUESTS):
            chunk = requests[start : start + CHUNK_REQUESTS]
            records = [Accepted(Origin("seed", 0, start + i), r) for i, r in enumerate(chunk)]
            approved: list[Accepted[Any]] = []
            for answer in await answer_account_requests(connection, records, now):
                if isinstance(answer, Refused):
                    raise PaystreamError(f"seed request refused: {answer.field}: {answer.rule} ({answer.detail})")
                if answer.topic == PAYMENTS_APPROVED:
                    approved.append(Accepted(answer_origin(start, len(approved)), answer.event))
                else:
                    rejected += 1
            result = await FundsStage().apply(connection, approved, now)
            if result.refused:
                first = result.refused[0]
                raise PaystreamError(f"seed request refused by funds: {first.rule} ({first.detail})")
            for output in result.outputs:
                if _succeeded(output):
                    succeeded += 1
                else:
                    declined += 1
    return AppliedCounts(succeeded, declined, rejected)


def answer_origin(start: int, index: int) -> Origin:
    return Origin("seed.approved", 0, start + index)


def _succeeded(output: Output) -> bool:
    event = output.event
    return isinstance(event, AccountOutcome) and event.status == "succeeded"
