"""The portal engine's crossing decision: when a window is judged, and what it decides.

Internal to :class:`~gateway.domain.portal.PortalEngine`; the rules (door, direction, confidence,
already there; quiet-side and photo-eye evidence) are stated in its theory of operation, and the
reasoning and calibration in docs/portal.md. Here:

- :class:`CrossingDecider` judges one evidence window (:meth:`CrossingDecider.decide`) at the
  instants the engine's rules name, as ``TagTracker`` finds them: a pass's end or eviction
  (``close_pass``), a quiet side (``quiet_side``), a window reaching ``stray_dwell_s``
  (``decide``). A crossing becomes a :class:`Decided`, which ``LoadAssembler`` chains into
  loads.
- :class:`PhotoEyes` keeps each door side's recent beam breaks and weighs a crossing by them.

The scoring weights and scales are the module constants below, calibrated against the LLRP
simulator's ground truth (``tests/test_portal_accuracy.py``, ``benchmarks/portal_accuracy.py``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gateway.domain.epc import DecodedEpc, decode_epc
from gateway.domain.params import PortalParams
from gateway.domain.portal_model import CrossingEvidence, DecidedBy, Direction
from gateway.domain.portal_state import (
    CLOSED,
    NEVER,
    NO_PEAK,
    Counters,
    DoorLayout,
    Tag,
    Window,
)

_SEPARATION: Final = 0.2  # a separation of this fraction of the shorter side's span votes fully
# ...and never less than this: two antenna cycles of a busy reader. Separations within it are
# read-timing jitter (a 4-antenna reader visits each side every 0.1-0.2 s, and misses reads).
_MIN_SCALE_US: Final = 400_000
_FLAT_DB: Final = 1.0  # RSSI spread (std dev) at or below this on both sides: no motion at all
_MOVING_DB: Final = 2.0  # ...and this much more: full motion
_TREND_REF: Final = 3e-4  # 3 dB/s expressed in centi-dB per microsecond (diagnostic only)
_W_MEAN, _W_PEAK = 0.6, 0.4  # timing agreement: mean RSSI-sample times, then peak times
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


@dataclass(frozen=True, slots=True)
class Decided:
    """A crossing decided, waiting in its load to be emitted as a ``TagCrossed``."""

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


class PhotoEyes:
    """Per code (portal, side): the light barrier's recent breaks, ``[start, end]`` (end
    ``NEVER`` while still broken), newest last, at most ``_MAX_BEAMS`` each."""

    __slots__ = ("_beams",)

    def __init__(self, n_codes: int) -> None:
        self._beams: list[deque[list[int]]] = [deque(maxlen=_MAX_BEAMS) for _ in range(n_codes)]

    def record(self, code: int, broken: bool, at_us: int) -> None:
        """The beam of ``code`` was broken or cleared at ``at_us`` (reader UTC microseconds)."""
        beams = self._beams[code]
        if broken:
            if not beams or beams[-1][1] != NEVER:
                beams.append([at_us, NEVER])  # broken until cleared
        elif beams and beams[-1][1] == NEVER:
            beams[-1][1] = at_us

    def evidence(
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


class CrossingDecider:
    """Judges evidence windows into crossings (rules 1 to 4 of the engine's theory of operation)
    and owns what they need beyond the window: the photo eyes' evidence and the locations
    assumed from before the engine started. A crossing (or a suppressed repeat) consumes its
    window: the tag's evidence starts afresh at the decision."""

    __slots__ = (
        "_assumed",
        "_c",
        "_eyes",
        "_horizon_us",
        "_idle_us",
        "_margin_cdb",
        "_min_confidence",
        "_min_reads",
        "_n_codes",
        "_portals",
        "_quiet_us",
    )

    def __init__(
        self, layout: DoorLayout, params: PortalParams, counters: Counters, eyes: PhotoEyes
    ) -> None:
        self._portals = layout.portals
        self._c = counters
        self._eyes = eyes
        self._n_codes = layout.n_codes
        self._min_reads = params.min_reads
        self._min_confidence = params.min_confidence
        self._idle_us = round(params.idle_close_s * 1e6)
        self._horizon_us = round(params.horizon_s * 1e6)
        self._margin_cdb = round(params.cross_read_margin_db * 100)
        # How long the side a tag left must have been silent (never longer than a pass's idle).
        self._quiet_us = round(min(params.quiet_close_s, params.idle_close_s) * 1e6)
        # EPC URI -> (location, crossing moment us) from crossings recorded before this engine
        # started (assume_locations); consulted once per tag, at its first decision.
        self._assumed: dict[str, tuple[str, int]] = {}

    def assume(self, locations: Mapping[str, tuple[str, int]]) -> None:
        """Remember where tags went before the engine started (``assume_locations``)."""
        self._assumed.update(locations)

    def quiet_side(self, tag: Tag, win: Window, t: int, decided: list[Decided]) -> Window:
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
                # Both fell silent together: no side went on hearing it yet. If one does later,
                # the other's silence counts from ``stale``: judge again from then on.
                hint = min(hint, stale)
                continue
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
            self.decide(tag, win, due, DecidedBy.QUIET_SIDE, decided)
            if tag.win is not win:
                return tag.win
            hint = min(hint, win.quiet_judged + step - quiet)
        win.quiet_hint = hint
        return win

    def close_pass(self, tag: Tag, decided_us: int, cause: DecidedBy, out: list[Decided]) -> None:
        """The tag's pass is over (idle, or evicted): judge its open window, if any, and leave
        the tag without one."""
        self._c.passes += 1
        if tag.win is not CLOSED:
            self.decide(tag, tag.win, decided_us, cause, out)
        tag.win = CLOSED
        tag.win2 = None

    def decide(
        self, tag: Tag, win: Window, decided_us: int, cause: DecidedBy, out: list[Decided]
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
                strength = NO_PEAK
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
            if winner[0] != NO_PEAK and runner_up[0] != NO_PEAK:
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
        if o.n + i.n < self._min_reads:
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
            confidence, beams = self._eyes.evidence(portal, direction, moment, confidence)
        confidence = round(confidence, 4)
        if confidence < self._min_confidence:
            if final:
                c.low_confidence += 1
            return
        # 3. The evidence is used up; 4. is the tag already there?
        spec = self._portals[portal]
        destination = spec.inside_location if direction is Direction.IN else spec.outside_location
        if cause is DecidedBy.QUIET_SIDE or cause is DecidedBy.DWELL_WINDOW:
            tag.win = Window(decided_us, self._n_codes, win.active(decided_us - self._idle_us))
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
            Decided(
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
