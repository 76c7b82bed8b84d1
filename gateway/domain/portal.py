"""Dock-door portal engine: raw tag reads in, door crossings and stock movements out.

Theory of operation (the long version, with the reasoning, is docs/portal.md)
------------------------------------------------------------------------------
A portal is a door watched by one reader whose antennas are split in two sides: *outside*
antennas (facing the yard or trailer) and *inside* antennas (facing the building). A tag carried
through the door is heard first, and strongly, by one side, then by both, then by the other side
only: the side it leaves stops hearing it. How its RSSI evolves within a side depends on where
the antennas aim (aimed away from the door, the side it leaves hears it fade and the side it
enters hears it grow), so RSSI slopes are kept for traces but do not vote. A tag parked near the
door is heard for minutes by one side (or both), the other side at most now and then, weakly,
through a back lobe. A tag passing one door is often heard by the neighbouring door's reader (a
cross-read), sometimes as loudly on one side when its antennas aim across.

**Evidence.** Per EPC the engine keeps a *pass*: its reads with no gap over ``idle_close_s``. Reads
are summed into a *window*, per (portal, side): read count (summed TagSeenCount), first and last
read time, and over the RSSI samples their count, mean time, peak and its time, least-squares
slope and spread. All sums are integers (microseconds, centi-dBm), so the evidence does not
depend on the order reads are added. A window never spans more than ``stray_dwell_s``: a longer
pass rolls it over, a second window started half-way keeps any crossing of a long dwell inside
one window. A window opened in the middle of a pass remembers which sides were hearing the tag
then (within ``idle_close_s``): for those, its first read is an artefact of the cut, not an
arrival.

**Deciding** a window happens when (a) the pass has been silent for ``idle_close_s``; (b) at a door
both sides of which heard the tag, one side fell silent at S while the other heard it after S:
judged at S + ``quiet_close_s`` and every 0.2 s after while it stays so, on the reads up to
then, whether found by the tag's next read or by the clock (``advance``), so the outcome does
not depend on the cadence;
the side entered needs 3 reads (a single back-lobe read of a parked tag does not decide). This
is the usual, fast decision: a pallet carried in is decided ``quiet_close_s`` after its outside
fell silent, while the inside still hears it; (c) the window reaches ``stray_dwell_s``; (d) the
tag is evicted. Then:

1. *Door*: each portal that heard the tag has a strength: the mean of its two sides' peak RSSI if
   it heard both (a crossing passes close to both; a neighbour's beam reaches one side of the
   lane), else its one side's peak (it cannot be credited with a crossing, but still outranks
   weaker doors, so a reader offline for half a pass does not hand the tag to a neighbour). The
   strongest wins; within ``cross_read_margin_db`` of it the one with more reads wins, and
   confidence is multiplied by 0.5 + 0.5 x max(strength gap / margin, log2 of the read ratio),
   clipped to [0.5, 1]: x0.5 for a tie on both, x1 once either is decisive (the margin, twice
   the reads).
2. *Direction*: both sides of the winner must have heard the tag (else: no direction, counted
   ``one_sided``) with ``min_reads`` reads in all. Separations between the sides are divided by
   20 % of the shorter side's span, at least 0.4 s (two antenna cycles of a busy reader: less is
   read-timing jitter), and clipped to [-1, 1]: F for which side heard it first, L for which
   stopped first, and the timing agreement A = 0.6 x (mean RSSI-sample times) + 0.4 x (peak
   times). A crossing is a hand-over: F and L must agree; a side that hears the tag before and
   after the other brackets it (a parked tag) and gives no direction (``ambiguous``). The
   transition T = sign x min(|F|, |L|) x (1 + sign x A) / 2, positive for outside-then-inside.
   The side the tag left must have been silent for ``quiet_close_s`` when the window is decided
   (always so for (a) and (b); at (c) the hand-over may still be under way, and a later window
   sees it whole).
3. *Confidence* = |T| x support x cross-read factor x motion. support = m / (m + 0.5), m the read
   count of the weaker side (one read: 0.67, ten: 0.95). motion is 1 unless both sides saw a flat
   RSSI: it falls from 1 at a 3 dB spread (standard deviation) to 0 at 1 dB (a side of two
   antennas at different ranges is rarely that flat, even for a parked tag: the hand-over rule
   is what rejects those). Below ``min_confidence`` nothing is emitted; each rolled-over window
   without a crossing is counted as a ``stray`` window.
4. *Already there*: each EPC remembers where its last crossing took it; a crossing to the
   location it is already in (re-reads, a pallet jostled in the door) is suppressed.

**Loads.** Crossings of one door in one direction are chained while their crossing moments (for an
inward crossing: half-way between the last outside read and the first inside read) are within
``group_window_s``; a load spans at most ``stray_dwell_s``. A load settles once reader time passes
its latest member's decision + ``settle_s`` (a pallet's cases are decided within a few antenna
cycles of each other, as the pallet's back clears the door) and no open pass heard on both sides
of its door is last read by a reader whose clock has not reached that time (its decision may
still be on its way); its crossings are then emitted together as ``TagCrossed`` sharing one
``pass_id``. A crossing decided after that settle time starts a new load, so the grouping
depends only on the reads, not on how often ``feed``/``advance`` are called. Each load also
gives ``PassEvent`` news (``take_pass_events``): STARTED at its first decision, UPDATED as
members join, DECIDED when it settles. A portal with photo eyes (``PortalSpec.photo_eyes``,
``beam``) weighs each crossing by its beams: both broken near the moment in the direction's
order halve the doubt; the contrary order, or no beam broken at all (a parked tag, a
neighbour's pallet), halve the confidence. ``movements()`` makes one movement per
(load, SKU): quantity = cases x pack_size eaches, the pallet's SSCC as ``container``, a
``movement_id`` recomputable from the movement itself.

**Reader time.** Reader clocks may be skewed and reports arrive late, so idle decisions use each
reader's own time: its newest read, or, once it has been silent, ``now_us`` minus its offset
(measured at each ``feed``) minus ``idle_close_s`` of allowance for reports still on their way. A
pass waits on the clock of the reader that read it last.

**Reader offline during a crossing.** If only one side of the winning door heard the tag, no
direction is guessed: no crossing, no movement, counted as ``one_sided``. Inferring it from the
tag's last known location would turn back-lobe reads of a tag staged by the door into phantom
shipments; a missed receipt surfaces instead as a shortage in receiving reconciliation
(``gateway.domain.receiving``), where a person can act on it.

Invariants (property-tested): reads are taken in timestamp order whatever order a report lists
them in, and every decision about a tag is made at its first read with a newer timestamp, before
that read is added, so reads sharing a timestamp commute; a read not newer than what earlier
``feed`` calls took in from the same antenna is a duplicate and ignored, so feeding a report twice
adds nothing; at most ``max_tags`` tags are held (remembered idle tags are evicted first, oldest
first, then the open pass read least recently, decided before it goes); idle tags are forgotten
after ``horizon_s``; ids are pure functions of the evidence.

Parameters: ``PortalParams`` (config ``debounce.portal``): idle_close_s 2.0, min_reads 2,
min_confidence 0.6, stray_dwell_s 20.0, cross_read_margin_db 3.0, horizon_s 3600, max_tags 100000,
group_window_s 1.5, quiet_close_s 0.6, settle_s 0.4. The scoring weights and scales above are
module constants, calibrated against the LLRP simulator's ground truth
(``tests/test_portal_accuracy.py``, ``benchmarks/portal_accuracy.py``); the reasoning and the
figures are in docs/portal.md.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Final

from gateway.domain.catalog import Catalog, CatalogItem, EpcKind
from gateway.domain.epc import DecodedEpc, decode_epc
from gateway.domain.model import (
    DeviceId,
    Epc,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
    TagRead,
)
from gateway.domain.params import PortalParams

__all__ = [
    "CrossingEvidence",
    "DecidedBy",
    "Direction",
    "PassEvent",
    "PassPhase",
    "PortalEngine",
    "PortalSpec",
    "PortalStats",
    "TagCrossed",
    "build_movements",
    "portal_movement_id",
    "us_to_datetime",
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


# --- internal state -------------------------------------------------------------------------

_NO_PEAK: Final = -(10**9)
_NEVER: Final = 1 << 62
_SEPARATION: Final = 0.2  # a separation of this fraction of the shorter side's span votes fully
# ...and never less than this: two antenna cycles of a busy reader. Separations within it are
# read-timing jitter (a 4-antenna reader visits each side every 0.1-0.2 s, and misses reads).
_MIN_SCALE_US: Final = 400_000
_FLAT_DB: Final = 1.0  # RSSI spread (std dev) at or below this on both sides: no motion at all
_MOVING_DB: Final = 2.0  # ...and this much more: full motion
_TREND_REF: Final = 3e-4  # 3 dB/s expressed in centi-dB per microsecond (diagnostic only)
_W_MEAN, _W_PEAK = 0.6, 0.4  # timing agreement: mean RSSI-sample times, then peak times
_last_seen = attrgetter("last_seen_us")
_MAX_PASS_EVENTS: Final = 10_000
_BEAM_WINDOW_US: Final = 2_000_000  # beam breaks this close to a crossing moment are its
_MAX_BEAMS: Final = 64  # beam breaks remembered per door side
_QUIET_MIN_READS: Final = 3  # reads the side entered needs for a quiet-side decision
# After its first look, a quiet side is judged again this often while it stays quiet (about an
# antenna cycle of a 4-antenna reader: the new side's evidence grows by a read or so).
_REJUDGE_US: Final = 200_000


def _by_strength(heard: tuple[int, int, int]) -> tuple[int, int, int]:
    peak, reads, portal = heard
    return (-peak, -reads, portal)


def _by_reads(heard: tuple[int, int, int]) -> tuple[int, int, int]:
    peak, reads, portal = heard
    return (reads, peak, -portal)


def _vote(delta_us: float, scale: float) -> float:
    """A separation between the sides as a vote in [-1, 1] (positive: outside first)."""
    return max(-1.0, min(1.0, delta_us / scale))


class _Side:
    """Evidence from one side of one portal within a window. Times of RSSI samples (x) are
    microseconds from the window start (the middle of the read's first/last seen); RSSI (y) is
    centi-dBm; every sum is an exact integer, so the evidence does not depend on the order reads
    were added."""

    __slots__ = ("first", "k", "last", "n", "peak", "peak_x", "sx", "sxx", "sxy", "sy", "syy")

    def __init__(self, first: int, last: int) -> None:
        self.n = 0
        self.first = first
        self.last = last
        self.k = 0
        self.sx = 0
        self.sxx = 0
        self.sy = 0
        self.sxy = 0
        self.syy = 0
        self.peak = _NO_PEAK
        self.peak_x = 0

    def spread_db(self) -> float | None:
        """Standard deviation of the RSSI samples in dB, None below three samples."""
        k = self.k
        if k < 3:
            return None
        return math.sqrt(max(0, k * self.syy - self.sy * self.sy)) / k / 100

    def slope(self) -> float | None:
        """RSSI slope in centi-dB per microsecond, None without two distinct sample times."""
        k = self.k
        denominator = k * self.sxx - self.sx * self.sx
        if k < 2 or denominator == 0:
            return None
        return (k * self.sxy - self.sx * self.sy) / denominator


class _Window:
    """The evidence of one pass (or of one stretch of a long one): a side per (portal, side)."""

    __slots__ = (
        "carried",
        "pairs",
        "quiet_checked",
        "quiet_hint",
        "quiet_judged",
        "sides",
        "start",
    )

    def __init__(self, start: int, n_codes: int, carried: int = 0) -> None:
        self.start = start
        # Sides (bit per code) that were hearing the tag when this window was opened in the
        # middle of a pass: for them the window's first read is an artefact of the cut.
        self.carried = carried
        self.sides: list[_Side | None] = [None] * n_codes
        self.pairs: list[int] = []  # portals both of whose sides heard the tag
        self.quiet_checked = -1  # S, the instant a side fell quiet, last judged...
        self.quiet_judged = -1  # ...and the last instant S + k x quiet_close_s it was judged at
        # A lower bound of the instant a side of a pair went quiet: the hot path calls
        # _quiet_side only once idle_close_s has passed since it.
        self.quiet_hint = _NEVER

    def pair_formed(self, code: int) -> None:
        self.pairs.append(code >> 1)
        other = self.sides[code ^ 1]
        assert other is not None
        self.quiet_hint = min(self.quiet_hint, other.last)

    def add(self, code: int, first: int, last: int, count: int, rssi: float | None) -> None:
        side = self.sides[code]
        if side is None:
            side = self.sides[code] = _Side(first, last)
            if self.sides[code ^ 1] is not None:
                self.pair_formed(code)
        else:
            if first < side.first:  # noqa: PLR1730 - runs per read of long passes: no call
                side.first = first
            if last > side.last:  # noqa: PLR1730 - runs per read of long passes: no call
                side.last = last
        side.n += count
        if rssi is not None:
            x = ((first + last) >> 1) - self.start
            y = int(rssi * 100.0)
            side.k += 1
            side.sx += x
            side.sxx += x * x
            side.sy += y
            side.sxy += x * y
            side.syy += y * y
            if y > side.peak or (y == side.peak and x < side.peak_x):
                side.peak = y
                side.peak_x = x


_CLOSED: Final = _Window(0, 0)  # the window of a tag without an open pass (never added to)


class _Tag:
    __slots__ = (
        "crossed",
        "epc",
        "heap_key",
        "known_loc",
        "last_us",
        "marks",
        "rdr",
        "win",
        "win2",
    )

    def __init__(self, epc: str, t: int, rdr: int, n_codes: int) -> None:
        self.epc = epc
        self.last_us = t
        self.rdr = rdr
        # code -> (newest last_seen_us taken in, feed generation that took it): the dedup marks.
        self.marks: dict[int, tuple[int, int]] = {}
        self.win = _Window(t, n_codes)
        self.win2: _Window | None = None
        self.known_loc: str | None = None
        self.heap_key = t  # the key of this tag's live entry in the idle-deadline heap
        self.crossed = False  # this pass already produced a crossing (or a suppressed repeat)


@dataclass(frozen=True, slots=True)
class _Decided:
    epc: str
    decoded: DecodedEpc
    portal: int
    direction: Direction
    confidence: float
    first_us: int
    last_us: int
    moment_us: int
    reads: int
    decided_us: int
    evidence: CrossingEvidence


class _Load:
    __slots__ = ("direction", "key", "m_max", "m_min", "members", "portal", "settle_at")

    def __init__(self, first: _Decided, settle_pad: int, key: str) -> None:
        self.key = key
        self.portal = first.portal
        self.direction = first.direction
        self.members = [first]
        self.m_min = first.moment_us
        self.m_max = first.moment_us
        self.settle_at = first.decided_us + settle_pad


@dataclass(slots=True)
class _Counters:
    reads: int = 0
    ignored_reads: int = 0
    duplicate_reads: int = 0
    passes: int = 0
    crossings: int = 0
    low_confidence: int = 0
    one_sided: int = 0
    ambiguous: int = 0
    too_few_reads: int = 0
    stray_windows: int = 0
    repeats_suppressed: int = 0
    cross_reads_resolved: int = 0
    unknown_crossings: int = 0
    evicted_tags: int = 0
    forgotten_tags: int = 0


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def us_to_datetime(us: int) -> datetime:
    """UTC microseconds since the epoch (LLRP timestamps) as an aware datetime, exactly."""
    return _EPOCH + timedelta(microseconds=us)


def portal_movement_id(
    *,
    source_id: str,
    kind: MovementKind,
    from_location: str,
    to_location: str,
    sku: str,
    observed_at: datetime,
    epcs: Iterable[str],
) -> MovementId:
    """The movement id recipe: recomputable from the published movement itself.

    SHA-256 over the source (door), kind, from, to, SKU, the whole UTC second of ``observed_at``
    and the sorted EPC URNs; the first 32 hex digits. The same evidence always gives the same id;
    two loads differ in their EPCs, or (the same cases crossing the same door again) in time.
    """
    second = (observed_at - _EPOCH) // timedelta(seconds=1)
    text = "\n".join(
        [
            "dockwatch/portal-movement/v1",
            source_id,
            str(kind),
            from_location,
            to_location,
            sku,
            str(second),
            *sorted(epcs),
        ]
    )
    return MovementId(hashlib.sha256(text.encode()).hexdigest()[:32])


class PortalEngine:
    """Pure portal engine: ``feed`` reads, ``advance`` time; both return settled crossings."""

    def __init__(
        self,
        *,
        portals: Sequence[PortalSpec],
        catalog: Catalog,
        params: PortalParams = PortalParams(),  # noqa: B008 - frozen value object, safe default
    ) -> None:
        self._portals = tuple(portals)
        self._catalog = catalog
        self._params = params
        ids = [p.portal_id for p in self._portals]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate portal ids: {sorted(i for i in ids if ids.count(i) > 1)}")
        # reader_id -> (reader index, antenna -> code), code = portal index * 2 + side (0 out, 1 in)
        self._readers: dict[str, tuple[int, dict[int, int]]] = {}
        self._portal_reader: list[int] = []
        for index, spec in enumerate(self._portals):
            entry = self._readers.get(spec.reader_id)
            if entry is None:
                entry = self._readers[spec.reader_id] = (len(self._readers), {})
            antennas = entry[1]
            for side, group in ((0, spec.outside_antennas), (1, spec.inside_antennas)):
                for antenna in sorted(group):
                    if antenna in antennas:
                        other = self._portals[antennas[antenna] >> 1].portal_id
                        raise ValueError(
                            f"antenna {antenna} of reader {spec.reader_id} is in portals "
                            f"{other} and {spec.portal_id}"
                        )
                    antennas[antenna] = index * 2 + side
            self._portal_reader.append(entry[0])
        self._n_codes = 2 * len(self._portals)
        self._index = {spec.portal_id: index for index, spec in enumerate(self._portals)}
        # Per code (portal, side): photo-eye beam breaks [start, end (_NEVER: still broken)],
        # newest last.
        self._beams: list[deque[list[int]]] = [
            deque(maxlen=_MAX_BEAMS) for _ in range(self._n_codes)
        ]
        n_readers = len(self._readers)
        self._newest: list[int | None] = [None] * n_readers
        self._offset: list[int] = [0] * n_readers
        self._idle_us = round(params.idle_close_s * 1e6)
        self._window_us = round(params.stray_dwell_s * 1e6)
        self._group_us = round(params.group_window_s * 1e6)
        self._horizon_us = round(params.horizon_s * 1e6)
        self._margin_cdb = round(params.cross_read_margin_db * 100)
        # A case is decided at most about 2 x idle after its crossing moment (its origin side goes
        # quiet for idle, or it goes silent within idle of that); a load waits that long, plus
        # the chaining window, for its last members.
        self._quiet_us = round(min(params.quiet_close_s, params.idle_close_s) * 1e6)
        # A load is complete settle_s after its latest member was decided: a pallet's cases are
        # decided within a few antenna cycles of each other (their origin side falls silent as
        # the pallet's back clears the door). A member decided later starts a new load.
        self._settle_pad_us = round(params.settle_s * 1e6)
        self._open: dict[str, _Tag] = {}
        # Per reader, a heap of (last read time when pushed, epc): one live entry per open tag,
        # refreshed lazily so the hot path never touches it; entries whose key no longer matches
        # the tag's heap_key are stale.
        self._deadlines: list[list[tuple[int, str]]] = [[] for _ in range(n_readers)]
        self._idle: OrderedDict[str, _Tag] = OrderedDict()
        # Open tags whose window may hold a pair (both sides of a door heard them): the ones
        # the clock looks at for quiet sides. Pruned lazily.
        self._paired: dict[str, _Tag] = {}
        self._loads: list[_Load] = []
        # Taken by take_pass_events(); a caller that never takes them keeps only the newest.
        self._passes: deque[PassEvent] = deque(maxlen=_MAX_PASS_EVENTS)
        # EPC URI -> (location, crossing moment us) from crossings recorded before this engine
        # started (assume_locations); consulted once per tag, at its first decision.
        self._assumed: dict[str, tuple[str, int]] = {}
        self._gen = 0
        self._c = _Counters()

    # --- public API -----------------------------------------------------------------------

    @property
    def params(self) -> PortalParams:
        return self._params

    @property
    def portals(self) -> tuple[PortalSpec, ...]:
        return self._portals

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def beam(self, portal_id: str, side: str, broken: bool, at_us: int) -> None:
        """A photo eye on ``side`` (``outside``/``inside``) of a portal was broken or cleared
        at ``at_us`` (reader UTC microseconds): evidence for its next decisions."""
        index = self._index.get(portal_id)
        if index is None or side not in ("outside", "inside"):
            raise ValueError(f"no side {side!r} of a portal {portal_id!r}")
        beams = self._beams[2 * index + (side == "inside")]
        if broken:
            if not beams or beams[-1][1] != _NEVER:
                beams.append([at_us, _NEVER])  # broken until cleared
        elif beams and beams[-1][1] == _NEVER:
            beams[-1][1] = at_us

    def _beam_evidence(
        self, portal: int, direction: Direction, moment: int, confidence: float
    ) -> tuple[float, str]:
        """Photo eyes: a pallet crossing the door plane breaks both beams, in its direction's
        order, around the moment the reads say it crossed; a parked tag or a neighbour's
        pallet breaks none. Beam order agreeing halves the doubt, disagreeing halves the
        confidence, no beam near the moment halves it too (one beam: no vote)."""
        near = []
        for code in (2 * portal, 2 * portal + 1):
            starts = [
                start
                for start, end in self._beams[code]
                if start <= moment + _BEAM_WINDOW_US and end >= moment - _BEAM_WINDOW_US
            ]
            near.append(min(starts, key=lambda t: abs(t - moment)) if starts else None)
        outside, inside = near
        if outside is None and inside is None:
            return confidence * 0.5, "none"
        if outside is None or inside is None or outside == inside:
            return confidence, "one_side"
        if (outside < inside) == (direction is Direction.IN):
            return confidence + (1.0 - confidence) / 2, "agree"
        return confidence * 0.5, "disagree"

    @property
    def tracked_tags(self) -> int:
        """Tags whose state is held (open passes plus remembered idle tags); <= max_tags."""
        return len(self._open) + len(self._idle)

    @property
    def stats(self) -> PortalStats:
        c = self._c
        return PortalStats(
            reads=c.reads,
            ignored_reads=c.ignored_reads,
            duplicate_reads=c.duplicate_reads,
            passes=c.passes,
            crossings=c.crossings,
            low_confidence=c.low_confidence,
            one_sided=c.one_sided,
            ambiguous=c.ambiguous,
            too_few_reads=c.too_few_reads,
            stray_windows=c.stray_windows,
            repeats_suppressed=c.repeats_suppressed,
            cross_reads_resolved=c.cross_reads_resolved,
            unknown_crossings=c.unknown_crossings,
            evicted_tags=c.evicted_tags,
            forgotten_tags=c.forgotten_tags,
            tracked_tags=self.tracked_tags,
            open_passes=len(self._open),
            pending_crossings=sum(len(load.members) for load in self._loads),
        )

    def known_location(self, epc: str) -> LocationId | None:
        """Where the tag's last crossing took it, while its state is remembered."""
        tag = self._open.get(epc) or self._idle.get(epc)
        return LocationId(tag.known_loc) if tag is not None and tag.known_loc else None

    def assume_locations(self, locations: Mapping[str, tuple[str, int]]) -> None:
        """Where tags went in crossings recorded before this engine started (EPC URI ->
        (location, crossing moment in us)), e.g. by the gateway's previous run: the memory of
        rule 4 ("already there") a long-running engine would have, within ``horizon_s``. Replaying
        a read journal needs it: a pass whose first reads were trimmed from the journal can be
        decided differently from the first time, and must not become a second crossing."""
        self._assumed.update(locations)

    def feed(self, reads: Iterable[TagRead], now_us: int) -> list[TagCrossed]:
        """Take in one report's reads (any order) and return the crossings that settled.

        Reads are taken in timestamp order; every decision about a tag is made at the first read
        with a newer timestamp, before that read is added, so reads sharing a timestamp commute.
        """
        batch = sorted(reads, key=_last_seen)
        self._gen += 1
        gen = self._gen
        decided: list[_Decided] = []
        idle_us = self._idle_us
        quiet_us = self._quiet_us
        window_us = self._window_us
        half_window = window_us >> 1
        n_codes = self._n_codes
        readers = self._readers
        newest = self._newest
        open_get = self._open.get
        paired = self._paired
        ignored = duplicates = 0
        last_rid: str | None = None
        entry: tuple[int, dict[int, int]] | None = None
        touched: set[int] = set()
        for r in batch:
            rid = r.reader_id
            if rid != last_rid:
                entry = readers.get(rid)
                last_rid = rid
                if entry is not None:
                    touched.add(entry[0])
            if entry is None:
                ignored += 1
                continue
            ridx, antennas = entry
            code = antennas.get(r.antenna)
            if code is None:
                ignored += 1
                continue
            t = r.last_seen_us
            epc = r.epc
            tag = open_get(epc)
            if tag is not None:
                marks = tag.marks
                mark = marks.get(code)
                if mark is None:
                    marks[code] = (t, gen)
                else:
                    mt = mark[0]
                    if t < mt or (t == mt and mark[1] != gen):
                        duplicates += 1
                        continue
                    if t > mt:
                        marks[code] = (t, gen)
                win = tag.win
                last = tag.last_us
                if t > last:
                    # Decisions in the order of their instants: a quiet side's (the instant
                    # its side fell silent plus quiet_close_s) comes before the pass's end.
                    if t - win.quiet_hint > quiet_us:
                        win = self._quiet_side(tag, win, t, decided)
                    if t - last > idle_us:
                        # The previous pass ended before this read: decide it, start a new one.
                        self._close_pass(tag, last + idle_us, DecidedBy.IDLE, decided)
                        win = tag.win = _Window(t, n_codes)
                        tag.crossed = False
                    else:
                        age = t - win.start
                        if age > half_window and (tag.win2 is None or age > window_us):
                            win = self._long_pass(tag, t, decided)
                    tag.last_us = t
                    tag.rdr = ridx
                elif t == last and ridx < tag.rdr:
                    tag.rdr = ridx  # ties between readers: the lowest index, whatever the order
            else:
                opened = self._reopen(epc, code, t, gen=gen, ridx=ridx, decided=decided)
                if opened is None:
                    duplicates += 1
                    continue
                tag = opened
                win = tag.win
            # Accumulate: an inline copy of _Window.add, as this is the hot path.
            sides = win.sides
            side = sides[code]
            f = r.first_seen_us
            if side is None:
                side = sides[code] = _Side(f, t)
                if sides[code ^ 1] is not None:
                    win.pair_formed(code)
                    paired[epc] = tag
            else:
                if f < side.first:  # noqa: PLR1730 - hot path: a compare beats calling min()
                    side.first = f
                if t > side.last:  # noqa: PLR1730 - hot path: a compare beats calling max()
                    side.last = t
            side.n += r.seen_count
            rssi = r.rssi_dbm
            if rssi is not None:
                x = ((f + t) >> 1) - win.start
                y = int(rssi * 100.0)
                side.k += 1
                side.sx += x
                side.sxx += x * x
                side.sy += y
                side.sxy += x * y
                side.syy += y * y
                if y > side.peak or (y == side.peak and x < side.peak_x):
                    side.peak = y
                    side.peak_x = x
            win2 = tag.win2
            if win2 is not None:
                win2.add(code, f, t, r.seen_count, rssi)
        c = self._c
        c.reads += len(batch)
        c.ignored_reads += ignored
        c.duplicate_reads += duplicates
        # Each reader's newest read is its last one in the (time-ordered) batch.
        for r in reversed(batch):
            if not touched:
                break
            entry = readers.get(r.reader_id)
            if entry is not None and entry[0] in touched:
                index = entry[0]
                touched.discard(index)
                seen = newest[index]
                if seen is None or r.last_seen_us > seen:
                    newest[index] = seen = r.last_seen_us
                self._offset[index] = now_us - seen
        return self._settle(now_us, decided)

    def advance(self, now_us: int) -> list[TagCrossed]:
        """Let time pass: close idle passes, settle loads, forget old tags."""
        return self._settle(now_us, [])

    def take_pass_events(self) -> list[PassEvent]:
        """The pass events since the last call, in order (a load's STARTED, UPDATED...,
        DECIDED; DECIDED comes with the crossings ``feed``/``advance`` returned)."""
        events = list(self._passes)
        self._passes.clear()
        return events

    def movements(self, crossings: Sequence[TagCrossed]) -> list[Movement]:
        """One movement per (load, SKU) among ``crossings``; see ``build_movements``."""
        return build_movements(crossings, self._catalog)

    # --- internals ------------------------------------------------------------------------

    def _reopen(
        self, epc: str, code: int, t: int, *, gen: int, ridx: int, decided: list[_Decided]
    ) -> _Tag | None:
        """A read for a tag without an open pass: revive it from the idle tags or create it."""
        tag = self._idle.get(epc)
        if tag is not None:
            mark = tag.marks.get(code)
            if mark is not None and (t < mark[0] or (t == mark[0] and mark[1] != gen)):
                return None
            del self._idle[epc]
            tag.win = _Window(t, self._n_codes)
            tag.crossed = False
            tag.win2 = None
            tag.last_us = t
            tag.rdr = ridx
        else:
            self._make_room(decided)
            tag = _Tag(epc, t, ridx, self._n_codes)
        tag.marks[code] = (t, gen)
        tag.heap_key = t
        heapq.heappush(self._deadlines[ridx], (t, epc))
        self._open[epc] = tag
        return tag

    def _make_room(self, decided: list[_Decided]) -> None:
        """Evict to stay within max_tags: the longest-idle remembered tag, else the open pass
        read least recently (decided first, so its evidence is not silently lost)."""
        while len(self._open) + len(self._idle) >= self._params.max_tags:
            self._c.evicted_tags += 1
            if self._idle:
                self._idle.popitem(last=False)
                continue
            victim = self._pop_deadline()
            self._c.passes += 1
            self._evaluate_and_reset(
                victim, victim.last_us + self._idle_us, DecidedBy.EVICTED, decided
            )

    def _pop_deadline(self) -> _Tag:
        """Remove and return the open tag read least recently (ties: lowest EPC)."""
        while True:
            heap = min((h for h in self._deadlines if h), key=lambda h: h[0])
            key, epc = heapq.heappop(heap)
            tag = self._open.get(epc)
            if tag is None or tag.heap_key != key:
                continue  # stale entry
            if tag.last_us != key:
                tag.heap_key = tag.last_us
                heapq.heappush(self._deadlines[tag.rdr], (tag.last_us, epc))
                continue
            del self._open[epc]
            return tag

    def _long_pass(self, tag: _Tag, t: int, decided: list[_Decided]) -> _Window:
        """A pass older than half a window: roll the window over, keep a staggered second one."""
        win = tag.win
        if t - win.start > self._window_us:
            before = len(decided)
            self._decide(tag, win, t, DecidedBy.DWELL_WINDOW, decided)
            if len(decided) == before and tag.win is win:
                self._c.stray_windows += 1
                if tag.win2 is not None:
                    tag.win = tag.win2
                    if tag.win.pairs:
                        self._paired[tag.epc] = tag
                else:
                    tag.win = _Window(t, self._n_codes, self._active(win, t))
                tag.win2 = None
        win = tag.win
        if tag.win2 is None and t - win.start > self._window_us >> 1:
            tag.win2 = _Window(t, self._n_codes, self._active(win, t))
        return win

    def _active(self, win: _Window, t: int) -> int:
        """The sides of ``win`` that heard the tag within idle_close_s before ``t`` (a mask)."""
        cut = t - self._idle_us
        mask = 0
        for code, side in enumerate(win.sides):
            if side is not None and side.last >= cut:
                mask |= 1 << code
        return mask

    def _quiet_side(self, tag: _Tag, win: _Window, t: int, decided: list[_Decided]) -> _Window:
        """Decide early if, at a portal both of whose sides heard the tag, one side went silent
        at S while the other heard it after S.

        It is judged at S + quiet_close_s + k x 0.2 s (k = 0, 1, ...: every antenna cycle of a
        busy reader) while that side stays silent, on
        the reads up to that instant, and the decision is dated so: a first look often has
        too little of the new side to be sure, a later one more. Each instant is judged at the
        first look after it, whether that is the tag's next read (before the read is added) or
        the clock (``advance``, with no read since), as the hint is a lower bound of every
        unjudged instant less quiet_close_s; instants with no read between them hold the same
        evidence and are judged once. So the outcome does not depend on how often the engine
        is called."""
        quiet = self._quiet_us
        step = _REJUDGE_US
        hint = t  # all judged: the next instant comes from a read at or after t
        for portal in win.pairs:
            out_side = win.sides[2 * portal]
            in_side = win.sides[2 * portal + 1]
            assert out_side is not None
            assert in_side is not None
            stale = min(out_side.last, in_side.last)
            if stale == max(out_side.last, in_side.last):
                continue  # both fell silent together: no side went on hearing it
            if stale != win.quiet_checked:
                win.quiet_checked = stale
                win.quiet_judged = stale
            first = stale + quiet
            judged = win.quiet_judged
            due = first if judged < first else first + ((judged - first) // step + 1) * step
            if t <= due:
                hint = min(hint, due - quiet)
                continue
            win.quiet_judged = first + ((t - 1 - first) // step) * step
            self._decide(tag, win, due, DecidedBy.QUIET_SIDE, decided)
            if tag.win is not win:
                return tag.win
            hint = min(hint, win.quiet_judged + step - quiet)
        win.quiet_hint = hint
        return win

    def _quiet_sides(self, reader_now: list[int], decided: list[_Decided]) -> None:
        """The clock's look at quiet sides: passes heard on both sides of a door whose next
        quiet-side instant has passed in their reader's time, with no read since to find it."""
        quiet = self._quiet_us
        paired = self._paired
        for epc, tag in list(paired.items()):
            win = tag.win
            if not win.pairs or self._open.get(epc) is not tag:
                del paired[epc]
                continue
            now = reader_now[tag.rdr]
            if now - win.quiet_hint > quiet and now > tag.last_us:
                win = self._quiet_side(tag, win, now, decided)
                if not win.pairs:
                    del paired[epc]

    def _close_pass(
        self, tag: _Tag, decided_us: int, cause: DecidedBy, out: list[_Decided]
    ) -> None:
        self._c.passes += 1
        self._evaluate_and_reset(tag, decided_us, cause, out)

    def _evaluate_and_reset(
        self, tag: _Tag, decided_us: int, cause: DecidedBy, out: list[_Decided]
    ) -> None:
        if tag.win is not _CLOSED:
            self._decide(tag, tag.win, decided_us, cause, out)
        tag.win = _CLOSED
        tag.win2 = None

    def _decide(
        self, tag: _Tag, win: _Window, decided_us: int, cause: DecidedBy, out: list[_Decided]
    ) -> None:
        """Judge one window. A crossing (or a suppressed repeat) consumes the evidence: fresh
        windows start at ``decided_us``."""
        sides = win.sides
        c = self._c
        # End-of-pass outcomes are counted for passes without a crossing, not for the tail of
        # reads that follows an early (quiet-side) decision.
        final = (cause is DecidedBy.IDLE or cause is DecidedBy.EVICTED) and not tag.crossed
        # 1. Which door. A tag carried through a door passes close to both of its sides, so a
        # door that heard both is as strong as the mean of their peaks: a neighbour's beam
        # reaches one side of the lane, rarely both. A door that heard one side only cannot be
        # credited with a crossing, but its peak still outranks weaker doors (no guessing when
        # a reader was offline). Within the margin, the door that heard the tag more often wins.
        heard: list[tuple[int, int, int]] = []  # (strength, reads, portal)
        for portal in range(len(self._portals)):
            out_side = sides[2 * portal]
            in_side = sides[2 * portal + 1]
            if out_side is None:
                if in_side is not None:
                    heard.append((in_side.peak, in_side.n, portal))
            elif in_side is None:
                heard.append((out_side.peak, out_side.n, portal))
            else:
                strength = _NO_PEAK
                if out_side.k and in_side.k:
                    strength = (out_side.peak + in_side.peak) >> 1
                heard.append((strength, out_side.n + in_side.n, portal))
        if not heard:
            return
        winner = heard[0]
        runner_up: tuple[int, int, int] | None = None
        cross_factor = 1.0
        gap_db: float | None = None
        if len(heard) > 1:
            heard.sort(key=_by_strength)
            top = heard[0][0]
            close = [h for h in heard if top - h[0] < self._margin_cdb]
            winner = max(close, key=_by_reads)
            runner_up = next(h for h in heard if h is not winner)
            gap = winner[0] - runner_up[0]
            if winner[0] != _NO_PEAK and runner_up[0] != _NO_PEAK:
                gap_db = gap / 100
            if gap < self._margin_cdb:
                # Decisive in strength or in reads (twice as many count fully).
                by_strength = max(0, gap) / max(1, self._margin_cdb)
                by_reads = min(1.0, max(0.0, math.log2(winner[1] / max(1, runner_up[1]))))
                cross_factor = 0.5 + 0.5 * max(by_strength, by_reads)
        portal = winner[2]
        o = sides[2 * portal]
        i = sides[2 * portal + 1]
        # 2. Which direction.
        if o is None or i is None:
            if final:
                c.one_sided += 1
            return
        if o.n + i.n < self._params.min_reads:
            if final:
                c.too_few_reads += 1
            return
        # Separations are judged against the shorter side's span: a long dwell on one side
        # must not dilute the crossing at its end.
        scale = max(_MIN_SCALE_US, _SEPARATION * min(o.last - o.first, i.last - i.first))
        carried = win.carried >> (2 * portal)
        o_first = win.start if carried & 1 else o.first
        i_first = win.start if carried & 2 else i.first
        v_first = _vote(i_first - o_first, scale)
        v_last = _vote(i.last - o.last, scale)
        if o.k and i.k:
            timing = _W_MEAN * _vote(i.sx / i.k - o.sx / o.k, scale)
            timing += _W_PEAK * _vote(i.peak_x - o.peak_x, scale)
        else:
            timing = _vote(((i.first + i.last) - (o.first + o.last)) / 2, scale)
        # A crossing hands the tag over: the side it leaves hears it first AND stops hearing it
        # first. A side that hears it before and after the other (brackets it) has it parked in
        # its field, whatever the other side's few reads say.
        transition = 0.0
        if v_first * v_last > 0:
            sign = 1.0 if v_first > 0 else -1.0
            transition = sign * min(abs(v_first), abs(v_last)) * (1.0 + sign * timing) / 2
        if transition == 0.0:
            if final:
                c.ambiguous += 1
            return
        direction = Direction.IN if transition > 0 else Direction.OUT
        # The side the tag left must have stopped hearing it. Idle and quiet-side decisions
        # ensure it; at a dwell-window decision the hand-over may still be under way (or be a
        # gap in a parked tag's reads), and a later, staggered window sees it whole.
        left = o.last if direction is Direction.IN else i.last
        if decided_us - left < self._quiet_us:
            return
        # Early (quiet-side) decisions want the side entered to be hearing the tag, not one
        # read through a back lobe while the side it "left" missed a few cycles (a parked
        # tag); a real crossing has it by the next look, or by the pass's end.
        entered = i.n if direction is Direction.IN else o.n
        if cause is DecidedBy.QUIET_SIDE and entered < _QUIET_MIN_READS:
            return
        slope_o = o.slope()
        slope_i = i.slope()
        trend: float | None = None
        if slope_o is not None and slope_i is not None:
            trend = max(-1.0, min(1.0, (slope_o - slope_i) / (2 * _TREND_REF)))
        weaker = min(o.n, i.n)
        support = weaker / (weaker + 0.5)
        # Flat RSSI on both sides (well sampled) means nothing moved: a parked tag.
        spreads = [d for d in (o.spread_db(), i.spread_db()) if d is not None]
        motion = 1.0
        if len(spreads) == 2:
            motion = max(0.0, min(1.0, (max(spreads) - _FLAT_DB) / _MOVING_DB))
        confidence = abs(transition) * support * cross_factor * motion
        # The crossing moment: between leaving one side's field and entering the other's.
        moment = ((o.last + i.first) if direction is Direction.IN else (i.last + o.first)) >> 1
        first = min(o.first, i.first)
        last = max(o.last, i.last)
        moment = min(max(moment, first), last)
        beams: str | None = None
        if self._portals[portal].photo_eyes:
            confidence, beams = self._beam_evidence(portal, direction, moment, confidence)
        confidence = round(confidence, 4)
        if confidence < self._params.min_confidence:
            if final:
                c.low_confidence += 1
            return
        # 3. The evidence is used up; 4. is the tag already there?
        spec = self._portals[portal]
        destination = spec.inside_location if direction is Direction.IN else spec.outside_location
        if cause is DecidedBy.QUIET_SIDE or cause is DecidedBy.DWELL_WINDOW:
            tag.win = _Window(decided_us, self._n_codes, self._active(win, decided_us))
            tag.win2 = None
        tag.crossed = True
        if tag.known_loc is None and self._assumed:
            assumed = self._assumed.pop(decode_epc(tag.epc).uri, None)
            if assumed is not None and decided_us - assumed[1] <= self._horizon_us:
                tag.known_loc = assumed[0]
        if tag.known_loc == destination:
            c.repeats_suppressed += 1
            return
        tag.known_loc = destination
        if runner_up is not None:
            c.cross_reads_resolved += 1
        evidence = CrossingEvidence(
            reads_outside=o.n,
            reads_inside=i.n,
            peak_rssi_outside=o.peak / 100 if o.k else None,
            peak_rssi_inside=i.peak / 100 if i.k else None,
            transition=round(transition, 4),
            trend=round(trend, 4) if trend is not None else None,
            support=round(support, 4),
            motion=round(motion, 4),
            runner_up=self._portals[runner_up[2]].portal_id if runner_up is not None else None,
            runner_up_gap_db=gap_db,
            decided_by=cause,
            beams=beams,
        )
        c.crossings += 1
        out.append(
            _Decided(
                epc=tag.epc,
                decoded=decode_epc(tag.epc),
                portal=portal,
                direction=direction,
                confidence=confidence,
                first_us=first,
                last_us=last,
                moment_us=moment,
                reads=o.n + i.n,
                decided_us=decided_us,
                evidence=evidence,
            )
        )

    def _reader_now(self, now_us: int) -> list[int]:
        """Each reader's present time. It is the newest read delivered, or, when the reader has
        been silent, ``now_us`` less its offset less ``idle_close_s`` of allowance for reports
        still on their way (a pass must not close before a late report that continues it)."""
        return [
            -_NEVER if newest is None else max(newest, now_us - offset - self._idle_us)
            for newest, offset in zip(self._newest, self._offset, strict=True)
        ]

    def _settle(self, now_us: int, decided: list[_Decided]) -> list[TagCrossed]:
        reader_now = self._reader_now(now_us)
        if self._paired:
            self._quiet_sides(reader_now, decided)
        self._close_idle(reader_now, decided)
        self._forget(reader_now)
        emitted: list[TagCrossed] = []
        decided.sort(key=lambda d: (d.decided_us, d.epc))
        for crossing in decided:
            self._offer(crossing, emitted)
        for load in list(self._loads):
            if load.settle_at <= reader_now[
                self._portal_reader[load.portal]
            ] and not self._may_still_join(load, reader_now):
                self._loads.remove(load)
                self._emit(load, emitted)
        emitted.sort(key=lambda x: (x.moment_us, x.portal_id, x.epc))
        return emitted

    def _may_still_join(self, load: _Load, reader_now: list[int]) -> bool:
        """Whether an open pass heard on both sides of the load's door could still be decided
        at or before the load's settle time: one last read by a reader whose clock has not
        reached that time yet (its reports still on their way, or, when it is silent, its clock
        lagging by the in-flight allowance), so its decision is not known yet. Only readers
        behind are looked at: with one reader per door, a due load never waits."""
        at = load.settle_at
        lagging = {r for r, t in enumerate(reader_now) if t < at}
        if not lagging:
            return False
        portal = load.portal
        for tag in self._open.values():
            if tag.rdr in lagging and (
                portal in tag.win.pairs or (tag.win2 is not None and portal in tag.win2.pairs)
            ):
                return True
        return False

    def _close_idle(self, reader_now: list[int], decided: list[_Decided]) -> None:
        """Close the passes idle in their own reader's time, least recently read first."""
        idle_us = self._idle_us
        for reader, heap in enumerate(self._deadlines):
            cut = reader_now[reader] - idle_us
            while heap and heap[0][0] < cut:
                key, epc = heapq.heappop(heap)
                tag = self._open.get(epc)
                if tag is None or tag.heap_key != key:
                    continue  # stale entry
                if tag.last_us != key or tag.rdr != reader:
                    # Read since, or now last read by another reader: requeue where it belongs.
                    tag.heap_key = tag.last_us
                    heapq.heappush(self._deadlines[tag.rdr], (tag.last_us, epc))
                    continue
                del self._open[epc]
                self._close_pass(tag, key + idle_us, DecidedBy.IDLE, decided)
                self._idle[epc] = tag

    def _forget(self, reader_now: list[int]) -> None:
        horizon = self._horizon_us
        idle = self._idle
        while idle:
            epc, tag = next(iter(idle.items()))
            if tag.last_us >= reader_now[tag.rdr] - horizon:
                break
            del idle[epc]
            self._c.forgotten_tags += 1

    def _offer(self, crossing: _Decided, emitted: list[TagCrossed]) -> None:
        group = self._group_us
        for load in list(self._loads):
            if load.portal != crossing.portal or load.direction is not crossing.direction:
                continue
            if load.settle_at < crossing.decided_us:
                # Reader time passed this load's settle time before the crossing was decided.
                self._loads.remove(load)
                self._emit(load, emitted)
                continue
            moment = crossing.moment_us
            if (
                load.m_min - group <= moment <= load.m_max + group
                and max(load.m_max, moment) - min(load.m_min, moment) <= self._window_us
            ):
                load.members.append(crossing)
                load.m_min = min(load.m_min, moment)
                load.m_max = max(load.m_max, moment)
                load.settle_at = max(load.settle_at, crossing.decided_us + self._settle_pad_us)
                self._pass_event(load, PassPhase.UPDATED, crossing.decided_us)
                return
        spec = self._portals[crossing.portal]
        digest = hashlib.sha256(
            f"{spec.portal_id}\n{crossing.direction}\n{crossing.epc}\n{crossing.moment_us}".encode()
        ).hexdigest()
        load = _Load(crossing, self._settle_pad_us, f"{spec.portal_id}:{digest[:12]}")
        self._loads.append(load)
        self._pass_event(load, PassPhase.STARTED, crossing.decided_us)

    def _pass_event(
        self, load: _Load, phase: PassPhase, at_us: int, pass_id: str | None = None
    ) -> None:
        members = load.members
        self._passes.append(
            PassEvent(
                pass_key=load.key,
                portal_id=self._portals[load.portal].portal_id,
                phase=phase,
                direction=load.direction,
                at_us=at_us,
                moment_us=load.m_min,
                epcs=tuple(d.epc for d in members),
                confidence=round(sum(d.confidence for d in members) / len(members), 4),
                pass_id=pass_id,
            )
        )

    def _emit(self, load: _Load, emitted: list[TagCrossed]) -> None:
        spec = self._portals[load.portal]
        members = sorted(load.members, key=lambda d: d.epc)
        digest = hashlib.sha256(
            "\n".join(
                [
                    spec.portal_id,
                    str(load.direction),
                    str(load.m_min // 1_000_000),
                    *(d.epc for d in members),
                ]
            ).encode()
        ).hexdigest()
        pass_id = f"{spec.portal_id}:{digest[:20]}"
        self._pass_event(load, PassPhase.DECIDED, load.settle_at, pass_id)
        inward = load.direction is Direction.IN
        for d in members:
            if self._catalog.classify(d.decoded).kind is EpcKind.UNKNOWN:
                self._c.unknown_crossings += 1
            emitted.append(
                TagCrossed(
                    epc=Epc(d.epc),
                    uri=d.decoded.uri,
                    portal_id=spec.portal_id,
                    direction=load.direction,
                    kind=spec.kind_in if inward else spec.kind_out,
                    from_location=spec.outside_location if inward else spec.inside_location,
                    to_location=spec.inside_location if inward else spec.outside_location,
                    confidence=d.confidence,
                    first_seen_us=d.first_us,
                    last_seen_us=d.last_us,
                    moment_us=d.moment_us,
                    reads=d.reads,
                    pass_id=pass_id,
                    evidence=d.evidence,
                )
            )


def build_movements(crossings: Sequence[TagCrossed], catalog: Catalog) -> list[Movement]:
    """Movements from crossings: one per (load ``pass_id``, SKU), in a deterministic order.

    Case tags (SGTIN of a catalog item) give quantity = cases x pack_size eaches; a load with
    exactly one pallet tag (SSCC) records it as ``container`` (several: None, since which case
    sat on which pallet is unknown). Pallet-only, asset, location and unknown tags give no
    movement. ``observed_at`` is the load's earliest crossing moment; ``confidence`` is the mean
    of the case crossings'. Order-insensitive: the same crossings in any order give equal output.
    """
    loads: dict[str, list[TagCrossed]] = {}
    for crossing in crossings:
        loads.setdefault(crossing.pass_id, []).append(crossing)
    movements: list[Movement] = []
    for pass_id in sorted(loads):
        members = sorted(loads[pass_id], key=lambda x: x.epc)
        head = members[0]
        observed_at = us_to_datetime(min(m.moment_us for m in members))
        containers: set[str] = set()
        cases: dict[str, list[TagCrossed]] = {}
        items: dict[str, CatalogItem] = {}
        for crossing in members:
            info = catalog.classify(crossing.epc)
            if info.kind is EpcKind.PALLET:
                containers.add(info.uri)
            elif info.kind is EpcKind.CASE and info.item is not None:
                cases.setdefault(info.item.sku, []).append(crossing)
                items[info.item.sku] = info.item
        container = next(iter(containers)) if len(containers) == 1 else None
        for sku in sorted(cases):
            group = cases[sku]
            epcs = tuple(sorted(x.uri for x in group))
            confidence = round(sum(x.confidence for x in group) / len(group), 4)
            movements.append(
                Movement(
                    movement_id=portal_movement_id(
                        source_id=head.portal_id,
                        kind=head.kind,
                        from_location=head.from_location,
                        to_location=head.to_location,
                        sku=sku,
                        observed_at=observed_at,
                        epcs=epcs,
                    ),
                    kind=head.kind,
                    sku=Sku(sku),
                    quantity=Catalog.eaches(items[sku], len(group)),
                    from_location=head.from_location,
                    to_location=head.to_location,
                    source_type=SourceType.RFID_PORTAL,
                    source_id=head.portal_id,
                    observed_at=observed_at,
                    confidence=confidence,
                    epcs=epcs,
                    container=container,
                )
            )
    return movements
