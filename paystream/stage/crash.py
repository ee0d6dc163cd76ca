"""Deterministic crash points for crash-safety tests.

Off unless PAYSTREAM_CRASH_POINT is set. The check is one comparison on the
hot path; when it fires the process dies by SIGKILL, the way a power cut or
an OOM kill would end it: no finally blocks, no flush, no goodbye.
"""

from __future__ import annotations

import os
import signal
import sys

from paystream.settings import TICK_CRASH_POINTS, Settings


class CrashSwitch:
    def __init__(self, settings: Settings, stage: str) -> None:
        armed = settings.crash_point is not None and settings.crash_stage in (None, stage)
        self.point = settings.crash_point if armed else None
        self.after_batches = settings.crash_after_batches
        self.batches_seen = 0
        self.ticks_seen = 0

    def batch_started(self) -> None:
        if self.point is not None:
            self.batches_seen += 1

    def tick_started(self) -> None:
        """A timer's work (settlement's closes, funds' hold expiries) counts ticks that did something, not batches."""
        if self.point is not None:
            self.ticks_seen += 1

    def at(self, point: str) -> None:
        seen = self.ticks_seen if point in TICK_CRASH_POINTS else self.batches_seen
        if self.point == point and seen >= self.after_batches:
            print(f"paystream: crash point {point} reached, killing myself", file=sys.stderr)
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
