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
module constants of ``gateway.domain.portal_decide``, calibrated against the LLRP simulator's
ground truth (``tests/test_portal_accuracy.py``, ``benchmarks/portal_accuracy.py``); the
reasoning and the figures are in docs/portal.md.

Code map. ``PortalEngine`` is a facade over collaborators that share one ``DoorLayout`` and one
set of counters (``portal_state``, with the evidence types ``Side``, ``Window``, ``Tag``):

- ``portal_tags.TagTracker``: the per-read hot loop (``take``) and the per-tag bookkeeping:
  dedup marks, opening and ending passes, dwell-window roll-over, ``max_tags`` and
  ``horizon_s``, the clock's look for idle passes and quiet sides; ``ReaderClocks``: reader time.
- ``portal_decide.CrossingDecider``: judging a window (door, direction, confidence, already
  there) at the instants above, quiet-side instants included; ``PhotoEyes``: beam evidence.
- ``portal_loads.LoadAssembler``: chaining crossings into loads, settling and emitting them, and
  the pass events.
- ``portal_model``: the value types, re-exported here (import them from this module).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Final

from gateway.domain.catalog import Catalog, EpcKind
from gateway.domain.model import (
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
    TagRead,
)
from gateway.domain.params import PortalParams
from gateway.domain.portal_decide import CrossingDecider, Decided, PhotoEyes
from gateway.domain.portal_loads import LoadAssembler
from gateway.domain.portal_model import (
    CrossingEvidence,
    DecidedBy,
    Direction,
    PassEvent,
    PassPhase,
    PortalSpec,
    PortalStats,
    TagCrossed,
)
from gateway.domain.portal_state import Counters, DoorLayout
from gateway.domain.portal_tags import ReaderClocks, TagTracker

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

_last_seen = attrgetter("last_seen_us")

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
    """Pure portal engine: ``feed`` reads, ``advance`` time; both return settled crossings.

    A facade over collaborators that share the door layout and the counters: a ``TagTracker``
    takes the reads into per-tag windows, a ``CrossingDecider`` judges the windows, a
    ``LoadAssembler`` chains the crossings into loads and emits them, ``ReaderClocks`` tells
    each reader's time."""

    def __init__(
        self,
        *,
        portals: Sequence[PortalSpec],
        catalog: Catalog,
        params: PortalParams = PortalParams(),  # noqa: B008 - frozen value object, safe default
    ) -> None:
        self._layout = layout = DoorLayout(portals)
        self._portals = layout.portals
        self._catalog = catalog
        self._params = params
        self._c = Counters()
        self._eyes = PhotoEyes(layout.n_codes)
        self._decider = CrossingDecider(layout, params, self._c, self._eyes)
        self._tags = TagTracker(layout, params, self._c, self._decider)
        self._clocks = ReaderClocks(layout, params)
        self._loads = LoadAssembler(layout, catalog, params, self._c, self._tags.pair_open)

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
        index = self._layout.index.get(portal_id)
        if index is None or side not in ("outside", "inside"):
            raise ValueError(f"no side {side!r} of a portal {portal_id!r}")
        self._eyes.record(2 * index + (side == "inside"), broken, at_us)

    @property
    def tracked_tags(self) -> int:
        """Tags whose state is held (open passes plus remembered idle tags); <= max_tags."""
        return self._tags.tracked

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
            tracked_tags=self._tags.tracked,
            open_passes=len(self._tags.open_tags),
            pending_crossings=self._loads.pending,
        )

    def known_location(self, epc: str) -> LocationId | None:
        """Where the tag's last crossing took it, while its state is remembered."""
        location = self._tags.known_location(epc)
        return LocationId(location) if location else None

    def assume_locations(self, locations: Mapping[str, tuple[str, int]]) -> None:
        """Where tags went in crossings recorded before this engine started (EPC URI ->
        (location, crossing moment in us)), e.g. by the gateway's previous run: the memory of
        rule 4 ("already there") a long-running engine would have, within ``horizon_s``. Replaying
        a read journal needs it: a pass whose first reads were trimmed from the journal can be
        decided differently from the first time, and must not become a second crossing."""
        self._decider.assume(locations)

    def feed(self, reads: Iterable[TagRead], now_us: int) -> list[TagCrossed]:
        """Take in one report's reads (any order) and return the crossings that settled.

        Reads are taken in timestamp order; every decision about a tag is made at the first read
        with a newer timestamp, before that read is added, so reads sharing a timestamp commute.
        """
        batch = sorted(reads, key=_last_seen)
        decided: list[Decided] = []
        touched = self._tags.take(batch, decided)
        self._clocks.observe(batch, touched, now_us)
        return self._settle(now_us, decided)

    def advance(self, now_us: int) -> list[TagCrossed]:
        """Let time pass: close idle passes, settle loads, forget old tags."""
        return self._settle(now_us, [])

    def take_pass_events(self) -> list[PassEvent]:
        """The pass events since the last call, in order (a load's STARTED, UPDATED...,
        DECIDED; DECIDED comes with the crossings ``feed``/``advance`` returned)."""
        return self._loads.take_events()

    def movements(self, crossings: Sequence[TagCrossed]) -> list[Movement]:
        """One movement per (load, SKU) among ``crossings``; see ``build_movements``."""
        return build_movements(crossings, self._catalog)

    def _settle(self, now_us: int, decided: list[Decided]) -> list[TagCrossed]:
        """The clock's decisions, in each reader's own time (quiet sides, idle passes, tags to
        forget), then the loads: returns the crossings of those that settled."""
        reader_now = self._clocks.now(now_us)
        tags = self._tags
        if tags.paired:
            tags.quiet_sides(reader_now, decided)
        tags.close_idle(reader_now, decided)
        tags.forget(reader_now)
        return self._loads.settle(decided, reader_now)


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
