"""Fresh payment ids for a replay, so the pipeline treats it as new traffic instead of duplicates.

The new id is `rp-` and 24 hex digits of BLAKE2b over the salt and the
recorded id: the same file and salt always give the same ids (a run can be
repeated exactly), another salt gives other ids, and one recorded payment
sent twice stays one payment. `created_at` becomes the send time, so latency
is measured from when the replay offered the payment. Values that are not a
valid payment.requested are sent untouched: they reach the dead letters as
the recorded ones did.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime

import msgspec

from paystream.errors import PaystreamError
from schemas.codec import Decoder, Invalid, encode
from schemas.payments import PaymentRequested

ID_PREFIX = "rp-"
ID_DIGEST_BYTES = 12
SALT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


def new_salt() -> str:
    """A salt for one run: a second replay of the same file is new traffic again."""
    return secrets.token_hex(4)


def check_salt(salt: str) -> str:
    if not SALT_PATTERN.match(salt):
        raise PaystreamError(f"--id-salt {salt!r} must be 1 to 64 of A-Z a-z 0-9 _ . -")
    return salt


def derived_payment_id(salt: str, payment_id: str) -> str:
    digest = hashlib.blake2b(f"{salt}\x00{payment_id}".encode(), digest_size=ID_DIGEST_BYTES).hexdigest()
    return f"{ID_PREFIX}{digest}"


class IdRewriter:
    """Rewrites payments.requested values one by one and counts what it did.

    `ids`, when tracking, holds every new payment id: a load test waits for
    one outcome per distinct id.
    """

    def __init__(self, salt: str, record_bytes_max: int, track_ids: bool = False) -> None:
        self.salt = check_salt(salt)
        self.decoder = Decoder(PaymentRequested, record_bytes_max)
        self.rewritten = 0
        self.untouched = 0
        self.ids: set[str] | None = set() if track_ids else None

    def rewrite(self, value: bytes | None, now: datetime) -> bytes | None:
        payment = self.decoder.decode(value)
        if isinstance(payment, Invalid):
            self.untouched += 1
            return value
        payment_id = derived_payment_id(self.salt, payment.payment_id)
        self.rewritten += 1
        if self.ids is not None:
            self.ids.add(payment_id)
        return encode(msgspec.structs.replace(payment, payment_id=payment_id, created_at=now))
