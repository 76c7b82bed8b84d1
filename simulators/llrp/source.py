"""What an LLRP reader simulator hears: the :class:`ReadSource` port and two simple sources.

A source answers "which tags did each antenna observe between t0 and t1?" with :class:`SimRead`
values, already aggregated per (EPC, antenna) over that window: first/last seen, how many times and
the strongest RSSI. The simulator polls its source once per inventory round and turns the reads into
TagReportData. Times are whatever the simulator's clock returns (seconds since the Unix epoch by
default); ``first_seen_us``/``last_seen_us`` are microseconds on that same clock, LLRP's unit.

The scenario model (:mod:`simulators.scenario`) is the realistic source; the two here are for tests
and benchmarks: :class:`TagPopulation` (a fixed set of tags heard on every round, e.g. 100 tags per
report for throughput runs) and :class:`ScriptedReads` (exact reads at exact times).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SimRead:
    """One tag as one antenna observed it during a polling window.

    ``epc`` is the EPC bank as bytes or as hex (upper or lower case); :attr:`epc_bytes` gives
    bytes either way.
    """

    antenna: int
    epc: bytes | str
    rssi_dbm: float
    first_seen_us: int
    last_seen_us: int
    seen_count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.antenna <= 0xFFFF:
            raise ValueError(f"antenna must be 1..65535, got {self.antenna}")
        if isinstance(self.epc, str):
            try:
                bytes.fromhex(self.epc)
            except ValueError as exc:
                raise ValueError(f"EPC is not hex: {self.epc!r}") from exc
        if not self.epc:
            raise ValueError("EPC must not be empty")
        if self.last_seen_us < self.first_seen_us:
            raise ValueError("last_seen_us is before first_seen_us")
        if self.seen_count < 1:
            raise ValueError(f"seen_count must be >= 1, got {self.seen_count}")

    @property
    def epc_bytes(self) -> bytes:
        return bytes.fromhex(self.epc) if isinstance(self.epc, str) else self.epc

    @property
    def epc_hex(self) -> str:
        return self.epc_bytes.hex().upper()


class ReadSource(Protocol):
    """Tags observed in the window ``(t0, t1]`` (the simulator's clock, seconds)."""

    def reads(self, t0: float, t1: float) -> Sequence[SimRead]: ...


class TagPopulation:
    """Every tag on every listed antenna, once per poll, at a fixed RSSI (benchmarks, smoke tests).

    Each poll reports each (tag, antenna) once with ``first_seen = last_seen = t1``.
    """

    def __init__(
        self,
        epcs: Iterable[bytes | str],
        *,
        antennas: Sequence[int] = (1,),
        rssi_dbm: float = -55.0,
    ) -> None:
        self.epcs = tuple(bytes.fromhex(e) if isinstance(e, str) else e for e in epcs)
        self.antennas = tuple(antennas)
        self.rssi_dbm = rssi_dbm

    @classmethod
    def sequential(
        cls,
        count: int,
        *,
        prefix: str = "30",
        antennas: Sequence[int] = (1,),
        rssi_dbm: float = -55.0,
    ) -> TagPopulation:
        """``count`` distinct 96-bit EPCs: ``prefix`` then a zero-padded hex counter."""
        width = 24 - len(prefix)
        epcs = [f"{prefix}{i:0{width}X}" for i in range(count)]
        return cls(epcs, antennas=antennas, rssi_dbm=rssi_dbm)

    def reads(self, t0: float, t1: float) -> Sequence[SimRead]:
        stamp = int(t1 * 1_000_000)
        return [
            SimRead(antenna, epc, self.rssi_dbm, stamp, stamp)
            for epc in self.epcs
            for antenna in self.antennas
        ]


class ScriptedReads:
    """Exact reads: each :class:`SimRead` comes in the window holding its ``last_seen_us``."""

    def __init__(self, reads: Iterable[SimRead]) -> None:
        self._reads = sorted(reads, key=lambda r: r.last_seen_us)

    def reads(self, t0: float, t1: float) -> Sequence[SimRead]:
        lo, hi = t0 * 1_000_000, t1 * 1_000_000
        return [r for r in self._reads if lo < r.last_seen_us <= hi]
