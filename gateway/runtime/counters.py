"""What the gateway did since it started: the periodic summary line's and the metrics' counts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.domain.model import MovementKind


@dataclass(slots=True)
class Timing:
    """A Prometheus summary without quantiles: how many, and their total in seconds."""

    count: int = 0
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds


@dataclass(slots=True)
class Counters:
    """What the gateway did since it started, for the periodic summary line and the metrics."""

    reads: int = 0
    reads_by_antenna: dict[tuple[str, int], int] = field(default_factory=dict)
    """Reads per configured (reader, antenna): a fixed set of keys, one series each."""
    unexpected_antenna: dict[str, int] = field(default_factory=dict)
    """Reads per reader on antennas it is not configured with (a hostile or misconfigured
    reader could report 65,536 antenna ids: one counter per reader, never a series each)."""
    movements: int = 0
    movements_by_kind: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(MovementKind, 0)
    )
    duplicates: int = 0
    alerts: int = 0
    store_record: Timing = field(default_factory=Timing)
    started: float = field(default_factory=time.monotonic)

    def watch_antennas(self, antennas: dict[str, tuple[int, ...]]) -> None:
        """Every configured antenna (reader id -> antennas) has a series, reads or not."""
        for reader_id, numbers in antennas.items():
            self.unexpected_antenna[reader_id] = 0
            for antenna in numbers:
                self.reads_by_antenna[reader_id, antenna] = 0
