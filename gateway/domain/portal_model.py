"""The portal engine's value types: door specs in, crossings, pass news and counters out.

They are re-exported by :mod:`gateway.domain.portal`, which is where callers import them from and
whose docstring says what they mean; they live here so that the engine's collaborators
(``portal_decide``, ``portal_loads``) can build them without importing the engine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.domain.model import DeviceId, Epc, LocationId, MovementKind

__all__ = [
    "CrossingEvidence",
    "DecidedBy",
    "Direction",
    "PassEvent",
    "PassPhase",
    "PortalSpec",
    "PortalStats",
    "TagCrossed",
]


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class DecidedBy(enum.StrEnum):
    IDLE = "idle"
    """The tag went silent for idle_close_s."""
    QUIET_SIDE = "quiet_side"
    """One side went silent for idle_close_s while the other still heard the tag."""
    DWELL_WINDOW = "dwell_window"
    """The evidence window reached stray_dwell_s."""
    EVICTED = "evicted"
    """The tag was evicted to keep within max_tags."""


@dataclass(frozen=True, slots=True)
class PortalSpec:
    """One door: its reader, which antennas face out and in, and where each side is."""

    portal_id: str
    reader_id: DeviceId
    outside_antennas: frozenset[int]
    inside_antennas: frozenset[int]
    outside_location: LocationId
    inside_location: LocationId
    kind_in: MovementKind = MovementKind.RECEIPT
    kind_out: MovementKind = MovementKind.SHIPMENT
    photo_eyes: bool = False
    """A light barrier on each side of the door reports to ``PortalEngine.beam``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "outside_antennas", frozenset(self.outside_antennas))
        object.__setattr__(self, "inside_antennas", frozenset(self.inside_antennas))
        if not self.portal_id:
            raise ValueError("portal_id must not be empty")
        if not self.outside_antennas or not self.inside_antennas:
            raise ValueError(f"portal {self.portal_id}: both sides need at least one antenna")
        if self.outside_antennas & self.inside_antennas:
            both = sorted(self.outside_antennas & self.inside_antennas)
            raise ValueError(f"portal {self.portal_id}: antennas {both} are on both sides")
        for antenna in self.outside_antennas | self.inside_antennas:
            if not 0 <= antenna <= 0xFFFF:
                raise ValueError(f"portal {self.portal_id}: antenna {antenna} out of range")
        if self.outside_location == self.inside_location:
            raise ValueError(
                f"portal {self.portal_id}: outside and inside are both {self.outside_location!r}"
            )


@dataclass(frozen=True, slots=True)
class CrossingEvidence:
    """Why the engine believes a crossing happened (for traces and tuning)."""

    reads_outside: int
    reads_inside: int
    peak_rssi_outside: float | None
    peak_rssi_inside: float | None
    transition: float
    """T in [-1, 1]: the hand-over between the sides, positive for outside-then-inside."""
    trend: float | None
    """R in [-1, 1]: RSSI slopes, positive for rising outside and falling inside. A trace
    only: its sign depends on where the antennas aim, so it does not vote."""
    support: float
    motion: float
    """1.0 unless both sides saw a flat RSSI (a still tag); 0.0 for a fully flat one."""
    runner_up: str | None
    """Another portal that heard the tag in the same window (a cross-read), if any."""
    runner_up_gap_db: float | None
    """Winner's strength minus the runner-up's, in dB (negative if the winner won on read
    count). Strength: the mean of the two sides' peak RSSI, or the one side's peak."""
    decided_by: DecidedBy
    beams: str | None = None
    """At a portal with photo eyes: ``agree``/``disagree`` (beam order against the reads'
    direction), ``one_side`` (one beam broken near the moment), ``none`` (no beam broken)."""


@dataclass(frozen=True, slots=True)
class TagCrossed:
    """One tag crossed one door. Crossings of one load share ``pass_id``."""

    epc: Epc
    uri: str
    portal_id: str
    direction: Direction
    kind: MovementKind
    from_location: LocationId
    to_location: LocationId
    confidence: float
    first_seen_us: int
    last_seen_us: int
    moment_us: int
    """Estimated moment the tag crossed the door plane (reader UTC microseconds)."""
    reads: int
    pass_id: str
    evidence: CrossingEvidence


class PassPhase(enum.StrEnum):
    STARTED = "started"
    """The first crossing of a new load was decided: direction known, more cases may come."""
    UPDATED = "updated"
    """Another crossing joined the load."""
    DECIDED = "decided"
    """The load settled: its ``TagCrossed`` (and movements) are emitted in the same call."""


@dataclass(frozen=True, slots=True)
class PassEvent:
    """Fast news of a load (a pass: a pallet through a door) ahead of its settled crossings."""

    pass_key: str
    """Stable for one load from STARTED to DECIDED (the first crossing's door, direction, EPC
    and moment); the settled crossings carry ``pass_id`` instead, known only at DECIDED."""
    portal_id: str
    phase: PassPhase
    direction: Direction
    at_us: int
    """Reader time of the decision (or, for DECIDED, of the settling) that caused the event."""
    moment_us: int
    """The load's earliest crossing moment so far."""
    epcs: tuple[str, ...]
    """The EPCs (hex) decided so far, in the order decided."""
    confidence: float
    """Mean crossing confidence so far."""
    pass_id: str | None = None
    """On DECIDED: the ``pass_id`` of the load's ``TagCrossed`` events."""


@dataclass(frozen=True, slots=True)
class PortalStats:
    """Counters since the engine started (a snapshot)."""

    reads: int
    ignored_reads: int
    """Reads from a reader/antenna that belongs to no portal."""
    duplicate_reads: int
    passes: int
    crossings: int
    """Crossings decided (emitted as TagCrossed once their load settles)."""
    low_confidence: int
    """Passes whose best evidence stayed below min_confidence (and which crossed nothing)."""
    one_sided: int
    """Passes heard on one side only of their door (and which crossed nothing): often a reader
    or antenna that was offline."""
    ambiguous: int
    too_few_reads: int
    stray_windows: int
    """Evidence windows of long dwells rolled over without a crossing (parked tags)."""
    repeats_suppressed: int
    cross_reads_resolved: int
    unknown_crossings: int
    """Crossings of EPCs that are not catalog items, pallets or assets (no movement)."""
    evicted_tags: int
    forgotten_tags: int
    tracked_tags: int
    open_passes: int
    pending_crossings: int
