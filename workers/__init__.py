"""The money stages, one module each: risk, funds, clearing, settlement."""

from __future__ import annotations

from typing import Any

from paystream.settings import Settings

STAGE_NAMES = ("risk", "funds", "clearing", "settlement")


def build_stage(name: str, settings: Settings) -> Any:
    """The stage object for `name`; imported lazily so one worker loads one module."""
    if name == "risk":
        from workers.risk import RiskStage

        return RiskStage(settings)
    if name == "funds":
        from workers.funds import FundsStage

        return FundsStage(settings)
    if name == "clearing":
        from workers.clearing import ClearingStage

        return ClearingStage()
    if name == "settlement":
        from workers.settlement import SettlementStage

        return SettlementStage(settings)
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
