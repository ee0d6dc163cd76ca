"""Merchant onboarding and configuration: validated operations shared by the command line and code.

`model` validates (ids, names, fee schedules, cycles, their text forms);
`store` writes and reads PostgreSQL; `csv_import` parses an import file.
"""

from __future__ import annotations

from paystream.merchants.model import (
    FeeSchedule,
    MerchantInputError,
    MerchantSpec,
    describe_cycle,
    merchant_spec,
    parse_cycle,
    parse_fee,
    spec_from_demo,
)
from paystream.merchants.store import (
    KEEP,
    Merchant,
    MerchantChange,
    MerchantRefused,
    OnboardReport,
    add,
    fetch_merchants,
    list_merchants,
    onboard,
    set_status,
    update,
)

__all__ = [
    "KEEP",
    "FeeSchedule",
    "Merchant",
    "MerchantChange",
    "MerchantInputError",
    "MerchantRefused",
    "MerchantSpec",
    "OnboardReport",
    "add",
    "describe_cycle",
    "fetch_merchants",
    "list_merchants",
    "merchant_spec",
    "onboard",
    "parse_cycle",
    "parse_fee",
    "set_status",
    "spec_from_demo",
    "update",
]
