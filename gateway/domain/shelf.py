"""Shelf engine: weight samples -> settled plateaus -> picks, restocks, counts and alerts.

Theory of operation
-------------------
A shelf sits on load cells behind a weighing transmitter that the gateway polls (5 Hz by default).
Everything that moves goods on or off the shelf also moves a hand, so the signal is a series of
*plateaus* separated by *motion*. The engine only ever reasons about plateaus, and it assumes
nothing about the transmitter that it has not measured:

* **Plausibility.** A reading that is not a finite number, is below ``-max(half a unit, 10
  divisions)`` or above the shelf's capacity (``capacity_g`` x 1.1, or 2,000 kg when not set; see
  :func:`plausible_range_g`) is garbage: a wrapped integer, a float register read in the wrong word
  order, a transmitter in trouble. Like a sample flagged ``error`` or ``overload`` it is a *fault*:
  nothing measured across it is trusted, no movement comes from it, and the first plateau after it
  is compared with the last one before it. An implausible reading also raises one
  ``implausible_weight`` alert per episode, cleared by the first sane settled weight.
* **Noise model, learned.** Transmitters differ by orders of magnitude: a 0.1 g division with 0.02
  g of noise, a 10 g division that flicks between two steps, a float in kilograms. The engine
  learns each one online from the differences between consecutive samples: ``sigma`` is their
  trimmed RMS until plateaus have been confirmed, then the RMS of the last 300 differences inside
  confirmed plateaus, trimmed of the largest tenth once there are 20 (a quantised output counts its
  flicker as noise, which it is); the *resolution* (division) is the smallest step of those, or
  ``division_g`` when configured. Before anything settled, a quantised output is known by its
  steps: every one is a whole number of divisions, so their common step (when it is below a tenth
  of a unit) is the division from the first flicker on, and differences up to 8 divisions give
  sigma untrimmed (mostly 0, the smallest 70 % of them read most of a division of noise as a
  fraction of one); else the step it flickers by once it has flickered 8 times. The stability
  half-band is ``max(3 sigma', 1.5 resolution, 2 % of a unit, 0.8 g)``, where sigma' is the upper
  90 % bound of a sigma learned from n differences (x1.43 at 10, x1.06 at 300: a dozen
  differences can read 8 g of noise as 5.5 g). Motion below 2 % of a unit cannot change a count:
  the tail of a filter's ramp is settled. ``stable_band_g`` overrides the band (peak-to-peak) for
  an installer who wants a fixed one.
* **Candidate plateau.** Three or more samples over the last ``stable_hold_s`` (0.4 s), all within
  the half-band of their mean, make a *candidate* (three in a row also when samples come slower
  than polled). Its *settle time* is found by looking back over the trace: the earliest sample
  from which every later one lies within the band. That is when the weight settled (a
  transmitter's internal filter turns a step into a ramp; the settle time is its end), and it is
  the ``observed_at`` of the movement it leads to. A candidate absorbs samples while they stay in
  its band.
* **Confirmation.** A candidate is *confirmed* ``confirm_s`` (1.5 s) after it settled, once three
  evaluations in a row found its last second of samples (1.6 s while no trustworthy stable bit
  helps: a slow tremor needs longer to go up and down) *quiet*: they travel (the sum of their
  steps) no further beyond their net change than 2.4 sigma, and at least one division, a step (the
  window stretches to hold five samples when they come slower than polled). A filter's tail goes
  one way and travels about as far as it gets; a resting hand trembles up and down. The platform's
  ring after a load change crosses the final weight too but dies within half a second: a candidate
  that trembles is judged again without its first 0.5 s when five samples are left. At confirmation
  the settle time is checked again against the candidate's mean so far. When the transmitter maps a
  stable bit and the bit has shown itself trustworthy (set on at least 80 % of confirmed samples),
  it must be set too, on three samples in a row; a bit that is never set (a motion detector
  stricter than its own noise) is ignored, not obeyed.
* **A hand that comes back.** A resting hand's tremor breaks its plateau and the weight comes
  back to the same count, each piece still for the second it lasts. A candidate heavier than the
  level before it (by up to 2.5 kg) at a count that evidence since the anchor reached before (the
  last pieces of the evidence, or the piece it rejoined) is *restless* when every sample since
  the count was first reached (after the ring's half second, the samples that broke the pieces
  included, a knock's far-off ones not) spread over more than three half-bands and travelled
  further than noise takes them: it waits ``hand_rest_s`` as on a shelf blind to a hand.
* **Shelves blind to a hand.** Where the learned noise is above 2.5 g and no trustworthy stable
  bit helps, no 5 Hz series shows a hand's tremor: a candidate heavier than the level before it
  by at most 2.5 kg (what a hand presses) is confirmed only once it held ``hand_rest_s`` (12 s),
  dated at its settle time all the same; a fault or an outage meanwhile keeps it as evidence.
* **Counting.** A candidate that motion interrupts before it is confirmed, and that was quiet, is
  kept as evidence. When a candidate is confirmed, the plateaus since the last confirmed one (the
  *anchor*) are resolved: each is expressed as a whole number of units from the anchor (``n =
  round(delta / unit_weight_g)``, accepted within ``max(weight_tolerance_g * sqrt(|n|), the
  half-band)``, capped below half a unit; ``weight_tolerance_g`` defaults to 6 % of the unit),
  plateaus that fit no whole number are dropped, and every *loop* removed: a return to a count seen
  before removes what lies between (a repeat, one plateau split by a bump; an excursion, items
  picked and put back or a parcel put down for a moment; a resting hand whose sway held still at two
  counts); every remaining change of count becomes one movement dated at its own settle time: ``n <
  0`` a PICK (location -> ``pick_to``), ``n > 0`` a RESTOCK (``restock_from`` -> location). So a
  double pick 1.5 s apart is two picks, a put-back within ``confirm_s`` is nothing, a bump is
  nothing (its plateau equals the anchor; the candidate after a knock rejoins the one before it when
  both agree within the noise). Evidence is counted early when what follows proves it was no
  put-back: a new candidate further along from the anchor in the same direction, or motion carrying
  the weight beyond it by more than half a unit plus a hand's press; the pieces after it at the same
  count (one plateau split in two) are the same goods, and the anchor takes the level of the piece
  seen longest. Evidence of up to ten samples lies at the median of its inner samples (not the
  first, the end of a ramp or ring; not the last, maybe the next gesture's hand), of their later
  half when a tail still crept. Evidence of fewer than five samples (too few to judge) is kept
  as a glimpse is (below). A piece's fit allows for the noise of its level (2 sigma / sqrt(n)
  more tolerance, still below half a unit). A candidate that rejoins the piece before a knock
  takes its samples too. Confidence falls from 1.0 for a perfect fit to 0.5 at the edge of the
  tolerance.
* **Late polls.** A gap of two usual sample intervals (against the median of the last seven) is
  a late poll. Two samples within the band beside one, with motion after them, are a *glimpse*
  of a plateau the gap hid (the one between the two picks of a double pick): evidence only where
  its count lies strictly between the counts before and after it, so it can split one movement
  into the two it was and never makes one of its own (motion beyond it counts it early only
  when it lies further from the anchor than the count before it). Its level is the later
  sample when the two differ by more than noise (the lower one where the weight came down to
  it: a later sample higher than the earlier is the next hand pressing). One sample beside a
  late poll at the bottom of a valley (a pick's tail coming down to it, the next hand's press
  going up from it) is a glimpse too: a hand never lifts a shelf, so a valley is goods. The
  tremor window stretches across a late poll to the plateau's last five samples (up to 2 s).
* **Unexplained changes.** A confirmed plateau that fits no whole number of units from the anchor
  is *pending*: nothing is recorded, because a hand resting on the shelf or a parcel put down for
  a while looks exactly like that. Items moved while it rests are counted from the pending plateau
  (the anchor moves by the same amount). After ``unexplained_after_s`` one
  ``unexplained_weight_change`` alert is raised; it clears when the weight is explained again.
* **The book.** ``set_on_hand(n)`` tells the engine the stock level the store holds (None: the
  store has none). With no book, the first confirmed plateau whose absolute weight
  (``grams - empty_g``) is a whole number of units is an *opening count*: an ADJUSTMENT with reason
  ``opening_count``. At start (a restart of the gateway) and after a fault or an outage (no sample
  for ``outage_gap_s``), the first confirmed plateau is compared with the book (at start, by its
  absolute count) or with the plateau before the fault: a difference is recorded at once as a
  pick or restock with reason ``offline_change``. A slow disagreement between book and weight
  (``reconcile_after_s``, 300 s) becomes an ADJUSTMENT with reason ``reconciliation``.
* **Drift.** While confirmed, the anchor follows the plateau's mean at no more than
  ``zero_track_g_per_s``: load-cell creep and temperature drift are absorbed, while any change
  fast enough to matter is motion and goes through counting.

Invariants: no movement comes from a fault sample or a plateau equal to the anchor; no quantity
exceeds what the shelf's plausible range can hold (so never beyond the store's 32-bit column);
replaying the same samples with the same timestamps yields the same movement ids (each id is a
hash of the shelf id, the kind and the UTC times of the two plateaus it joins).

Parameters (``debounce.shelf``, see ``gateway.domain.params.ShelfParams``): ``stable_hold_s``
0.4, ``confirm_s`` 1.5, ``stable_band_g`` None (learned), ``poll_interval_s`` 0.2 (sets a
half-interval slack on the window), ``outage_gap_s`` 2.0, ``use_stable_bit`` True,
``zero_track_g_per_s`` 0.5, ``unexplained_after_s`` 5.0, ``reconcile_after_s`` 300,
``adjust_location`` "adjustment", ``hand_rest_s`` 12. Per shelf: ``division_g`` and
``capacity_g`` (both optional).

Layout: :class:`ShelfEngine` checks plausibility, notices faults and outages, and runs the
settling/stable state machine over its one candidate plateau. It composes three parts, each of
which holds its own state: :class:`~gateway.domain.shelf_plateaus.Stability` (module
``shelf_plateaus``: the noise model, the window and trace, candidate detection, the quiet/tremor
judgement, what confirmation needs of a plateau itself, and the stable bit's trust); ``_Ledger``
(the anchor and its evidence, the pending weight, the book: counting, the hand-rest rule,
unexplained changes, opening counts, offline changes, reconciliation, drift); ``_Emitter``
(movements and alerts with their ids). This docstring is the theory of operation of all of them.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain.model import (
    MAX_QUANTITY,
    Alert,
    AlertKind,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    MovementReason,
    Severity,
    Sku,
    SourceType,
    WeightSample,
)
from gateway.domain.params import ShelfParams
from gateway.domain.shelf_plateaus import Plateau, Stability

PICKED = LocationId("picked")
"""Default ``pick_to``: the virtual location picked goods go to."""
BACKROOM = LocationId("backroom")
"""Default ``restock_from``."""

DEFAULT_CAPACITY_G = 2_000_000.0
"""The plausible ceiling of a shelf without ``capacity_g``: 2,000 kg (a pallet-rack load cell)."""
DEFAULT_TOLERANCE_FRACTION = 0.06
"""An item's ``weight_tolerance_g`` when the catalog gives none: 6 % of its unit weight (items
vary by 1-2 %; a looser default lets a hand of about a unit's weight pass as one)."""
CAPACITY_OVERSHOOT = 1.1
"""A transmitter reads a little above its nominal capacity before it flags overload."""

_MAX_FRACTION_OF_UNIT = 0.45
"""Tolerances are capped below half a unit so that rounding to a count is never ambiguous."""

# Evidence. (What makes a plateau, and judges it, is in gateway.domain.shelf_plateaus.)
_HAND_MAX_G = 2500.0
"""The most a hand or forearm resting on a shelf presses: a heavier increase is goods."""
_BEYOND_UNITS = 0.6
_HAND_PRESS_G = 150.0
"""What a hand pressing on a shelf while it takes or puts goods may add (see commit_beyond)."""
_MAX_CHAIN = 12
"""Unconfirmed plateaus kept as evidence (a tray rocking for minutes would otherwise grow it)."""


class ShelfPhase(enum.StrEnum):
    SETTLING = "settling"
    """Motion, or a candidate plateau not confirmed yet."""
    STABLE = "stable"
    """A confirmed plateau."""
    FAULT = "fault"
    """The last sample was an error, an overload or implausible."""


@dataclass(frozen=True, slots=True)
class CountFit:
    """How well a weight change is explained by a whole number of units."""

    units: int
    residual_g: float
    tolerance_g: float

    @property
    def fits(self) -> bool:
        return abs(self.residual_g) <= self.tolerance_g

    @property
    def confidence(self) -> float:
        """1.0 for a perfect fit, 0.5 at the edge of the tolerance (quadratic in between)."""
        if self.tolerance_g <= 0:
            return 1.0 if self.residual_g == 0 else 0.5
        ratio = min(1.0, abs(self.residual_g) / self.tolerance_g)
        return round(1.0 - 0.5 * ratio * ratio, 4)


def unit_tolerance_g(
    units: int, unit_weight_g: float, tolerance_g: float, measurement_g: float = 0.0
) -> float:
    """The tolerance for a change of ``units`` items: per-item tolerance times sqrt(units)
    (item weights vary independently), at least what the scale itself cannot resolve."""
    scaled = max(tolerance_g * math.sqrt(max(1, abs(units))), measurement_g)
    return min(scaled, _MAX_FRACTION_OF_UNIT * unit_weight_g)


def fit_units(
    delta_g: float, unit_weight_g: float, tolerance_g: float, measurement_g: float = 0.0
) -> CountFit:
    """Explain ``delta_g`` as a whole number of units of ``unit_weight_g``."""
    units = round(delta_g / unit_weight_g)
    return CountFit(
        units=units,
        residual_g=delta_g - units * unit_weight_g,
        tolerance_g=unit_tolerance_g(units, unit_weight_g, tolerance_g, measurement_g),
    )


def plausible_range_g(
    unit_weight_g: float, *, capacity_g: float | None = None, division_g: float | None = None
) -> tuple[float, float]:
    """The net weights a shelf can really read; anything outside is a device fault."""
    low = -max(0.5 * unit_weight_g, 10.0 * (division_g or 1.0))
    high = CAPACITY_OVERSHOOT * capacity_g if capacity_g else DEFAULT_CAPACITY_G
    return low, high


def _between(steps: list[tuple[int, Plateau | None]]) -> list[tuple[int, Plateau | None]]:
    """``steps`` without the glimpses whose count does not lie strictly between the counts
    before and after them (a glimpse that is last stays: what follows it is not seen yet)."""
    kept = steps[:1]
    for i in range(1, len(steps)):
        units, plateau = steps[i]
        if plateau is not None and plateau.glimpse and i + 1 < len(steps):
            before, after = kept[-1][0], steps[i + 1][0]
            if not (before < units < after or before > units > after):
                continue
        kept.append(steps[i])
    return kept


def _piece_fit(fit: CountFit, noise_g: float, samples: int, unit_weight_g: float) -> CountFit:
    """``fit`` for a piece of evidence of ``samples`` samples: it knows its level only to noise /
    sqrt(n), and the tolerance allows for that (a pick of four on a 5 g-division shelf with 4.7 g
    of noise read 16 g off from four samples, beyond the 15.7 g tolerance, and merged with the
    pick after it). Still capped below half a unit."""
    spread = 2.0 * noise_g / math.sqrt(max(1, samples))
    cap = _MAX_FRACTION_OF_UNIT * unit_weight_g
    return dataclasses.replace(fit, tolerance_g=min(fit.tolerance_g + spread, cap))


def _index(chain: list[Plateau], plateau: Plateau) -> int | None:
    """Where ``plateau`` itself (not an equal one) is in ``chain``."""
    return next((i for i, p in enumerate(chain) if p is plateau), None)


@dataclass(slots=True)
class _Pending:
    """A confirmed plateau that fits no whole number of units from the anchor."""

    since_at: float
    grams: float
    alerted: bool = False


@dataclass(slots=True)
class _Anchor:
    """The last confirmed, explained plateau: what the next change is counted from."""

    grams: float
    utc: datetime
    chain: list[Plateau] = field(default_factory=list)
    """Candidates since the anchor that motion interrupted before they were confirmed."""


class _Emitter:
    """Builds one shelf's movements and alerts. A movement's id is a hash of the shelf id and
    its evidence (the kind and the UTC times of the plateaus it joins, or what an adjustment
    is about), so replaying the same samples with the same timestamps yields the same ids."""

    def __init__(
        self,
        shelf_id: str,
        *,
        location: LocationId,
        sku: Sku,
        unit_weight_g: float,
        pick_to: LocationId,
        restock_from: LocationId,
        adjust_location: LocationId,
        plausible_g: tuple[float, float],
    ) -> None:
        self.shelf_id = shelf_id
        self.location = location
        self.sku = sku
        self.unit_weight_g = unit_weight_g
        self.pick_to = pick_to
        self.restock_from = restock_from
        self.adjust_location = adjust_location
        self.plausible_g = plausible_g

    def adjustment(
        self,
        units: int,
        confidence: float,
        observed_utc: datetime,
        reason: MovementReason,
        *,
        evidence: str,
    ) -> Movement:
        return Movement(
            movement_id=self._movement_id(evidence),
            kind=MovementKind.ADJUSTMENT,
            sku=self.sku,
            quantity=abs(units),
            from_location=self.adjust_location if units > 0 else self.location,
            to_location=self.location if units > 0 else self.adjust_location,
            source_type=SourceType.WEIGHT_SHELF,
            source_id=self.shelf_id,
            observed_at=observed_utc,
            confidence=confidence,
            reason=reason,
        )

    def movement(
        self,
        units: int,
        fit: CountFit,
        from_utc: datetime | None,
        observed_utc: datetime,
        reason: MovementReason | None,
        *,
        evidence: str | None = None,
    ) -> Movement:
        """A pick (``units`` < 0) or a restock between the plateaus settled at ``from_utc`` and
        ``observed_utc`` (the id's evidence unless ``evidence`` says otherwise)."""
        kind = MovementKind.RESTOCK if units > 0 else MovementKind.PICK
        return Movement(
            movement_id=self._movement_id(evidence or f"{kind}|{from_utc}|{observed_utc}"),
            kind=kind,
            sku=self.sku,
            quantity=abs(units),
            from_location=self.restock_from if units > 0 else self.location,
            to_location=self.location if units > 0 else self.pick_to,
            source_type=SourceType.WEIGHT_SHELF,
            source_id=self.shelf_id,
            observed_at=observed_utc,
            confidence=fit.confidence,
            reason=reason,
        )

    def _movement_id(self, evidence: str) -> MovementId:
        digest = hashlib.sha256(f"{self.shelf_id}|{evidence}".encode()).hexdigest()[:32]
        return MovementId(f"ws-{digest}")

    def unexplained_alert(self, now_utc: datetime, *, active: bool, delta_g: float) -> Alert:
        if active:
            message = (
                f"shelf {self.shelf_id}: weight changed by {delta_g:+.1f} g, not a whole number "
                f"of {self.unit_weight_g:g} g units of {self.sku}"
            )
        else:
            message = f"shelf {self.shelf_id}: weight explained again"
        details = {
            "shelf_id": self.shelf_id,
            "location": self.location,
            "sku": self.sku,
            "delta_g": round(delta_g, 1) if math.isfinite(delta_g) else None,
            "unit_weight_g": self.unit_weight_g,
        }
        return self._alert(AlertKind.UNEXPLAINED_WEIGHT_CHANGE, message, now_utc, active, details)

    def implausible_alert(self, now_utc: datetime, grams: float, *, active: bool) -> Alert:
        low, high = self.plausible_g
        if active:
            shown = f"{grams:.6g} g" if math.isfinite(grams) else str(grams)
            message = (
                f"shelf {self.shelf_id}: implausible weight {shown} (plausible {low:g}..{high:g} g)"
                "; not counting until the transmitter reads a sane settled weight"
            )
        else:
            message = f"shelf {self.shelf_id}: weight plausible again, counting resumed"
        details = {"shelf_id": self.shelf_id, "plausible_g": [low, high]}
        return self._alert(AlertKind.IMPLAUSIBLE_WEIGHT, message, now_utc, active, details)

    def _alert(
        self,
        kind: AlertKind,
        message: str,
        now_utc: datetime,
        active: bool,
        details: Mapping[str, object],
    ) -> Alert:
        """One of the shelf's alerts: a warning about the shelf, one id per kind and shelf."""
        return Alert(
            alert_id=f"{kind}:{self.shelf_id}",
            kind=kind,
            severity=Severity.WARNING,
            subject=self.shelf_id,
            message=message,
            raised_at=now_utc,
            active=active,
            details=details,
        )


class _Ledger:
    """What has been counted on one shelf, and what counts next: the anchor and the evidence
    since it, a pending unexplained weight, the book (``on_hand``) and the empty-shelf reading.

    It turns confirmed plateaus (and evidence that what followed proved) into movements, and
    raises the unexplained-weight alert; it asks :class:`Stability` only for the band (the
    tolerance of a fit) and whether the shelf is blind to a resting hand. Every movement it
    records moves the book with it.
    """

    def __init__(
        self,
        *,
        stability: Stability,
        emit: _Emitter,
        params: ShelfParams,
        unit_weight_g: float,
        tolerance_g: float,
        max_units: int,
        empty_g: float,
        on_hand: int | None,
    ) -> None:
        self._stability = stability
        self._emit = emit
        self.params = params
        self.unit_weight_g = unit_weight_g
        self.tolerance_g = tolerance_g
        self._max_units = max_units
        self.anchor: _Anchor | None = None
        self.pending: _Pending | None = None
        self.on_hand = on_hand
        self._empty_g = empty_g
        self._disagree_since: float | None = None
        # Compare the first confirmed plateau with the book (start) or the pre-fault anchor.
        self._resync = True
        self._seen_before_fault: Plateau | None = None

    def fit(self, delta_g: float) -> CountFit:
        return fit_units(delta_g, self.unit_weight_g, self.tolerance_g, self._stability.half_band())

    def fit_piece(self, delta_g: float, piece: Plateau) -> CountFit:
        """:meth:`fit` for evidence (:func:`_piece_fit`)."""
        noise = self._stability.noise.noise_g()
        return _piece_fit(self.fit(delta_g), noise, piece.n, self.unit_weight_g)

    @property
    def implied_units(self) -> CountFit | None:
        """The count implied by the explained weight, or None before the first plateau."""
        if self.anchor is None:
            return None
        return self.fit(self.anchor.grams - self._empty_g)

    def set_on_hand(self, on_hand: int | None) -> None:
        self.on_hand = on_hand
        self._disagree_since = None

    def keep(self, plateau: Plateau) -> None:
        """Motion ended an unconfirmed candidate that was still (no hand on it): evidence."""
        if self.anchor is None:
            return
        chain = self.anchor.chain
        chain.append(plateau)
        if len(chain) > _MAX_CHAIN:
            # A tray rocking between two levels for minutes: the oldest evidence goes (what
            # counts is where it ends up), and the work per sample stays bounded.
            del chain[0]

    def keep_glimpse(self, glimpse: Plateau) -> None:
        """Two samples beside a late poll: evidence, in place of the glimpse before it when the
        two share a sample (a filter's tail: the later pair is nearer where it settled)."""
        chain = self.anchor.chain if self.anchor is not None else []
        if chain and chain[-1].glimpse and chain[-1].recent[-1][0] >= glimpse.settled_at:
            chain.pop()
        self.keep(glimpse)

    def interrupt(self, held: Plateau | None) -> None:
        """A fault or an outage: compare the next confirmed plateau with before, and forget the
        evidence, except ``held`` (a quiet plateau that only ``hand_rest_s`` kept from
        counting), which stays with the evidence before it, all seen before the fault."""
        anchor = self.anchor
        self._disagree_since = None
        self._resync = True
        if anchor is None:
            return
        if held is not None:
            anchor.chain.append(held)
            self._seen_before_fault = held
        elif not any(p is self._seen_before_fault for p in anchor.chain):
            # Nothing held from before this fault (its later samples interrupt again): forget.
            anchor.chain.clear()
            self._seen_before_fault = None

    def track_drift(self, plateau: Plateau) -> None:
        """While confirmed: the anchor follows slow drift."""
        anchor = self.anchor
        if anchor is None or self.pending is not None:
            return
        limit = self.params.zero_track_g_per_s * self.params.poll_interval_s
        step = max(-limit, min(limit, plateau.grams - anchor.grams))
        anchor.grams += step
        # Drift moves the whole reading: the empty-shelf reading moves with it, so the implied
        # count does not creep.
        self._empty_g += step

    def heavier_than_before(self, plateau: Plateau) -> bool:
        """Heavier than the level before it (the last piece of evidence of another count, or the
        anchor), by no more than a hand presses: what a hand resting on the shelf looks like.
        (A pick after an unconfirmed restock is lighter than what came before: it confirms at
        once, and counts the restock with it.)"""
        anchor = self.anchor
        if anchor is None:
            return False
        units = self.fit(plateau.grams - anchor.grams).units
        before = next(
            (
                p.grams
                for p in reversed(anchor.chain)
                if self.fit(p.grams - anchor.grams).units != units
            ),
            anchor.grams,
        )
        return self._stability.half_band() < plateau.grams - before <= _HAND_MAX_G

    def commit_progress(self, plateau: Plateau, now_utc: datetime) -> list[Movement | Alert]:
        """A new candidate further along from the anchor than the unconfirmed ones before it
        (a second pick after a first): those were not put back; count them now, not later."""
        anchor = self.anchor
        if anchor is None or not anchor.chain or self.pending is not None:
            return []
        new = self.fit(plateau.grams - anchor.grams)
        if not new.fits or new.units == 0:
            return []
        steps = self._steps(anchor, None)
        if not steps:
            return []
        last_units, last = steps[-1]
        if last_units == 0 or (new.units - last_units) * last_units <= 0:
            return []
        if last_units > 0 and self._stability.hand_blind():
            return []  # a resting hand pressing harder looks the same: wait for hand_rest_s
        if not last.quiet_seen:
            return []  # never judged still: wait for the confirmed plateau, which may undo it
        return self.resolve(last, None, now_utc)

    def commit_beyond(self, grams: float, now_utc: datetime) -> list[Movement | Alert]:
        """Motion that carries the weight on past the last unconfirmed plateau, in the direction
        it moved from the anchor (goods leaving after a pick, beyond any hand's press): that
        plateau was no put-back; count it now instead of after the next plateau."""
        anchor = self.anchor
        if anchor is None or not anchor.chain or self.pending is not None:
            return []
        steps = self._steps(anchor, None)
        if not steps:
            return []
        units, last = steps[-1]
        # Every plateau in the chain was still when motion left it (``Stability.still``). After a
        # restock, only one judged quiet counts here: a hand pressing while it put goods down
        # looks like more goods. After a pick, a short quiet one is enough: the weight then
        # falling past it by more than half a unit is a second pick under way, and the first
        # pick of a double pick counts about a second sooner (p95 latency over 100 zoo stores
        # 2.22 -> 2.02 s, no new phantom). The price: a hand resting still on the shelf for
        # less than a second right after a pick, then lifted, splits the pick in two (the book
        # stays right).
        if units == 0 or (units > 0 and (not last.quiet_seen or self._stability.hand_blind())):
            return []
        before = steps[-2][0] if len(steps) > 1 else 0
        if last.glimpse and (units - before) * units <= 0:
            # A glimpse counts only between the counts on either side of it: motion beyond it
            # is the other side only when it lies further from the anchor than the one before
            # (a late poll left two samples of the next gesture's hand pressing: no restock).
            return []
        beyond = (grams - last.level(self._stability.noise.noise_g())) * (1 if units > 0 else -1)
        # A hand can press a shelf down (heavier), never lift it: past a pick's plateau the
        # weight only drops further when goods leave.
        press = _HAND_PRESS_G if units > 0 else self._stability.half_band()
        if beyond <= _BEYOND_UNITS * self.unit_weight_g + press:
            return []
        return self.resolve(last, None, now_utc)

    def resolve(
        self, plateau: Plateau, at: float | None, now_utc: datetime
    ) -> list[Movement | Alert]:
        """A confirmed plateau (or, ``at`` None, one proven by what came after): count what
        happened since the anchor; it becomes the anchor."""
        anchor = self.anchor
        resync, self._resync = self._resync, False
        if anchor is None:
            assert at is not None
            return self._first_plateau(plateau, at, now_utc, resync=resync)
        # Evidence (``at`` None) is where its later samples lay: it may have been cut short
        # while a filter's tail still crept towards its level.
        noise = self._stability.noise.noise_g()
        grams = plateau.grams if at is not None else plateau.level(noise)
        fit = (
            self.fit(grams - anchor.grams)
            if at is not None
            else self.fit_piece(grams - anchor.grams, plateau)
        )
        if not fit.fits or abs(fit.units) > self._max_units:
            assert at is not None
            return self._unexplained(plateau, at, now_utc)
        out: list[Movement | Alert] = []
        if self.pending is not None:
            if self.pending.alerted:
                out.append(self._emit.unexplained_alert(now_utc, active=False, delta_g=0.0))
            self.pending = None
        reason = MovementReason.OFFLINE_CHANGE if resync else None
        before_fault, self._seen_before_fault = self._seen_before_fault, None
        steps = self._steps(anchor, plateau)
        index = _index(anchor.chain, plateau)
        later = anchor.chain[index + 1 :] if index is not None else []
        if fit.units == 0:
            # The same count at a slightly different weight: that difference is the zero
            # drifting (or a bump's offset), so the empty-shelf reading moves with it and the
            # implied count does not creep towards a wrong reconciliation.
            self._empty_g += grams - anchor.grams
        previous_units, previous_utc = 0, anchor.utc
        for units, step in steps:
            change = units - previous_units
            if change:
                level = step.grams if step is plateau and at is not None else step.level(noise)
                step_fit = self.fit(level - anchor.grams - previous_units * self.unit_weight_g)
                why = None if step is before_fault else reason
                out.append(self._record(change, step_fit, previous_utc, step.settled_utc, why))
            previous_units, previous_utc = units, step.settled_utc
        # Evidence counted early may be one piece of a plateau split in two (a filter's tail
        # taken for a plateau of its own, or the next gesture's hand arriving): the pieces after
        # it at the same count are the same goods. The anchor takes the level of the piece seen
        # longest (a pick of three counted from a tail's three samples at 3,719 g, for the six
        # at 3,715 g after them, was 11 g off the fit and went unexplained; a hand's first
        # three samples as far the other way); the count keeps its settle time.
        samples = plateau.n
        while later and self.fit(later[0].level(noise) - anchor.grams).units == fit.units:
            if later[0].n >= samples:
                grams, samples = later[0].level(noise), later[0].n
            later = later[1:]
        self.anchor = _Anchor(grams=grams, utc=plateau.settled_utc, chain=later)
        return out

    def _steps(self, anchor: _Anchor, confirmed: Plateau | None) -> list[tuple[int, Plateau]]:
        """The counts the anchor's evidence passed through, excursions and repeats removed."""
        steps: list[tuple[int, Plateau | None]] = [(0, None)]
        noise = self._stability.noise.noise_g()
        evidence = anchor.chain if confirmed is None else [*anchor.chain, confirmed]
        index = None if confirmed is None else _index(anchor.chain, confirmed)
        if index is not None:
            evidence = anchor.chain[: index + 1]
        for plateau in evidence:
            level = plateau.grams if plateau is confirmed else plateau.level(noise)
            if plateau is confirmed:
                fit = self.fit(level - anchor.grams)
            else:
                fit = self.fit_piece(level - anchor.grams, plateau)
            if plateau is confirmed or (fit.fits and abs(fit.units) <= self._max_units):
                steps.append((fit.units, plateau))
        steps = _between(steps)
        # A return to a count seen before removes everything in between: a repeat (one
        # plateau split by a bump: the earlier one is when it settled), an excursion there and
        # back again (a put-back, a parcel put down a moment), or a longer loop (a resting
        # hand whose sway held still at two counts before it was lifted).
        i = 1
        while i < len(steps):
            units = steps[i][0]
            j = next((k for k in range(i) if steps[k][0] == units), None)
            if j is None:
                i += 1
            else:
                del steps[j + 1 : i + 1]
                i = j + 1
        return [(units, plateau) for units, plateau in steps[1:] if plateau is not None]

    def _first_plateau(
        self, plateau: Plateau, at: float, now_utc: datetime, *, resync: bool
    ) -> list[Movement | Alert]:
        """The first confirmed plateau: an opening count, or a restart's offline change."""
        absolute = self.fit(plateau.grams - self._empty_g)
        if not absolute.fits or absolute.units < 0 or absolute.units > self._max_units:
            if self.on_hand is None:
                # No book and no whole count: the tare or the item is wrong. Say so, wait.
                return self._unexplained(plateau, at, now_utc)
            self.anchor = _Anchor(grams=plateau.grams, utc=plateau.settled_utc)
            return []
        out: list[Movement | Alert] = []
        if self.pending is not None:
            if self.pending.alerted:
                out.append(self._emit.unexplained_alert(now_utc, active=False, delta_g=0.0))
            self.pending = None
        self.anchor = _Anchor(grams=plateau.grams, utc=plateau.settled_utc)
        if self.on_hand is None:
            self.on_hand = absolute.units
            if absolute.units:
                out.append(
                    self._emit.adjustment(
                        absolute.units,
                        absolute.confidence,
                        plateau.settled_utc,
                        MovementReason.OPENING_COUNT,
                        evidence=f"opening|{plateau.settled_utc}|{absolute.units}",
                    )
                )
            return out
        change = absolute.units - self.on_hand
        # A book beyond anything the shelf can hold (a typo in a manual count) is no basis for
        # a movement: it would be as absurd as the book. Reconciliation will not touch it either.
        if change and resync and abs(change) <= self._max_units:
            out.append(
                self._record(
                    change,
                    absolute,
                    None,
                    plateau.settled_utc,
                    MovementReason.OFFLINE_CHANGE,
                    evidence=f"restart|{self.on_hand}|{absolute.units}|{plateau.settled_utc}",
                )
            )
        return out

    def _unexplained(
        self, plateau: Plateau, at: float, now_utc: datetime
    ) -> list[Movement | Alert]:
        out: list[Movement | Alert] = []
        pending = self.pending
        anchor = self.anchor
        if pending is not None and anchor is not None:
            # Items moved while something unexplained still rests on the shelf: count them from
            # the pending plateau, and move the explained weight by the measured change.
            fit = self.fit(plateau.grams - pending.grams)
            if fit.fits and fit.units and abs(fit.units) <= self._max_units:
                out.append(self._record(fit.units, fit, anchor.utc, plateau.settled_utc, None))
                anchor.grams += plateau.grams - pending.grams
                anchor.utc = plateau.settled_utc
            pending.grams = plateau.grams
        elif pending is None:
            self.pending = _Pending(since_at=plateau.settled_at, grams=plateau.grams)
        else:
            pending.grams = plateau.grams
        if anchor is not None:
            anchor.chain.clear()
        return out

    def check_pending(self, at: float, now_utc: datetime) -> list[Movement | Alert]:
        pending = self.pending
        if pending is None or pending.alerted:
            return []
        if at - pending.since_at < self.params.unexplained_after_s:
            return []
        pending.alerted = True
        base = self._empty_g if self.anchor is None else self.anchor.grams
        return [self._emit.unexplained_alert(now_utc, active=True, delta_g=pending.grams - base)]

    def reconcile(self, at: float, now_utc: datetime) -> list[Movement | Alert]:
        implied = self.implied_units
        if (
            self.on_hand is None
            or self.pending is not None
            or implied is None
            or not implied.fits
            or implied.units < 0
            or implied.units == self.on_hand
            or abs(implied.units - self.on_hand) > self._max_units
        ):
            self._disagree_since = None
            return []
        if self._disagree_since is None:
            self._disagree_since = at
            return []
        if at - self._disagree_since < self.params.reconcile_after_s:
            return []
        assert self.anchor is not None
        diff = implied.units - self.on_hand
        movement = self._emit.adjustment(
            diff,
            implied.confidence,
            now_utc,
            MovementReason.RECONCILIATION,
            evidence=f"adjust|{self.anchor.utc}|{self.on_hand}|{implied.units}|{now_utc}",
        )
        self.on_hand = implied.units
        self._disagree_since = None
        return [movement]

    def _record(
        self,
        units: int,
        fit: CountFit,
        from_utc: datetime | None,
        observed_utc: datetime,
        reason: MovementReason | None,
        *,
        evidence: str | None = None,
    ) -> Movement:
        """A pick or a restock, and the book moved by it."""
        if self.on_hand is not None:
            self.on_hand += units
        self._disagree_since = None
        return self._emit.movement(units, fit, from_utc, observed_utc, reason, evidence=evidence)


class ShelfEngine:
    """Turns one shelf's weight samples into movements and alerts (pure; time is passed in).

    It runs the state machine (settling, stable, fault) over its current candidate plateau and
    composes three parts: :class:`Stability` finds candidates and judges them still or
    trembling, ``_Ledger`` counts confirmed ones from the anchor and against the book,
    ``_Emitter`` builds the movements and alerts. The parts take their settings once, here: the
    public attributes (``unit_weight_g``, ``params``...) describe the engine, they do not steer it.
    """

    def __init__(
        self,
        shelf_id: str,
        *,
        location: LocationId,
        sku: Sku,
        unit_weight_g: float,
        tolerance_g: float | None = None,
        pick_to: LocationId = PICKED,
        restock_from: LocationId = BACKROOM,
        params: ShelfParams | None = None,
        empty_g: float = 0.0,
        on_hand: int | None = None,
        division_g: float | None = None,
        capacity_g: float | None = None,
    ) -> None:
        if not unit_weight_g > 0 or not math.isfinite(unit_weight_g):
            raise ValueError(f"unit_weight_g must be > 0, got {unit_weight_g}")
        if tolerance_g is None:
            tolerance_g = DEFAULT_TOLERANCE_FRACTION * unit_weight_g
        if not tolerance_g >= 0:
            raise ValueError(f"tolerance_g must be >= 0, got {tolerance_g}")
        if location in (pick_to, restock_from):
            raise ValueError(f"pick_to/restock_from must differ from the shelf location {location}")
        for name, value in (("division_g", division_g), ("capacity_g", capacity_g)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be > 0, got {value}")
        self.shelf_id = shelf_id
        self.location = location
        self.sku = sku
        self.unit_weight_g = unit_weight_g
        self.tolerance_g = tolerance_g
        self.pick_to = pick_to
        self.restock_from = restock_from
        self.params = params if params is not None else ShelfParams()
        adjust_location = LocationId(self.params.adjust_location)
        if adjust_location == location:
            raise ValueError(f"adjust_location must differ from the shelf location {location}")
        self.plausible_g = plausible_range_g(
            unit_weight_g, capacity_g=capacity_g, division_g=division_g
        )
        self._stability = Stability(self.params, unit_weight_g=unit_weight_g, division_g=division_g)
        self._emit = _Emitter(
            shelf_id,
            location=location,
            sku=sku,
            unit_weight_g=unit_weight_g,
            pick_to=pick_to,
            restock_from=restock_from,
            adjust_location=adjust_location,
            plausible_g=self.plausible_g,
        )
        self._ledger = _Ledger(
            stability=self._stability,
            emit=self._emit,
            params=self.params,
            unit_weight_g=unit_weight_g,
            tolerance_g=tolerance_g,
            max_units=min(MAX_QUANTITY, math.ceil(self.plausible_g[1] / unit_weight_g) + 1),
            empty_g=empty_g,
            on_hand=on_hand,
        )
        self._phase = ShelfPhase.SETTLING
        self._last_at: float | None = None
        self._last_sane_g: float | None = None
        self._candidate: Plateau | None = None
        self._confirmed = False
        self._implausible_alerted = False

    # -- observation ------------------------------------------------------------------------------

    @property
    def phase(self) -> ShelfPhase:
        return self._phase

    @property
    def on_hand(self) -> int | None:
        """The stock level as the engine believes it (None: no book yet)."""
        return self._ledger.on_hand

    @property
    def baseline_g(self) -> float | None:
        """The last explained plateau (drift-tracked), or None before the first one."""
        anchor = self._ledger.anchor
        return None if anchor is None else anchor.grams

    @property
    def implied_units(self) -> CountFit | None:
        """The count implied by the explained weight, or None before the first plateau."""
        return self._ledger.implied_units

    @property
    def unexplained(self) -> bool:
        return self._ledger.pending is not None

    @property
    def resolution_g(self) -> float:
        """The transmitter's division as configured or learned so far (0: none seen)."""
        return self._stability.noise.resolution_g

    @property
    def stable_bit_trusted(self) -> bool:
        return self._stability.bit_trusted

    def set_on_hand(self, on_hand: int | None) -> None:
        """The stock level the store holds for this shelf's location and SKU (None: none)."""
        self._ledger.set_on_hand(on_hand)

    # -- input ------------------------------------------------------------------------------------

    def feed(self, sample: WeightSample, now_utc: datetime) -> list[Movement | Alert]:
        """Take one sample (``now_utc`` is when it was taken) and return what it concluded."""
        if sample.shelf_id != self.shelf_id:
            raise ValueError(f"sample of {sample.shelf_id!r} fed to shelf {self.shelf_id!r}")
        if self._last_at is not None and not sample.at > self._last_at:
            return []  # late or duplicated sample: time only moves forward
        gap = None if self._last_at is None else sample.at - self._last_at
        self._last_at = sample.at
        out: list[Movement | Alert] = []
        grams = sample.grams
        low, high = self.plausible_g
        implausible = not (math.isfinite(grams) and low <= grams <= high)
        if implausible and not self._implausible_alerted:
            self._implausible_alerted = True
            out.append(self._emit.implausible_alert(now_utc, grams, active=True))
        if implausible or sample.error or sample.overload:
            self._interrupt()
            self._phase = ShelfPhase.FAULT
            return out
        previous = self._last_sane_g
        if gap is not None and gap > self.params.outage_gap_s:
            self._interrupt()  # nobody saw what happened meanwhile
            previous = None
        self._last_sane_g = grams
        self._stability.append(sample)
        out.extend(self._step(sample, now_utc))
        if previous is not None:
            quiet = self._confirmed and self._candidate is not None
            self._stability.noise.observe(grams - previous, grams, quiet=quiet)
        if self._phase is ShelfPhase.STABLE:
            if self._implausible_alerted:
                self._implausible_alerted = False
                out.append(self._emit.implausible_alert(now_utc, grams, active=False))
            out.extend(self._ledger.check_pending(sample.at, now_utc))
            out.extend(self._ledger.reconcile(sample.at, now_utc))
        return out

    # -- internals --------------------------------------------------------------------------------

    def _interrupt(self) -> None:
        """A fault or an outage: forget the unconfirmed, compare the next plateau with before.

        Except a quiet plateau that only ``hand_rest_s`` kept from counting (a restock on a
        shelf blind to a hand's tremor): it stays as evidence (with the evidence before it),
        seen before the fault. If the weight after the fault is the same, it was goods, and
        counts as seen then, not as an offline change."""
        held = self._candidate
        keep = (
            held is not None
            and not self._confirmed
            and held.quiet_seen
            and self._stability.hand_blind()
            and self._ledger.heavier_than_before(held)
        )
        self._stability.clear()
        self._candidate = None
        self._confirmed = False
        self._last_sane_g = None
        self._ledger.interrupt(held if keep else None)

    def _step(self, sample: WeightSample, now_utc: datetime) -> list[Movement | Alert]:
        stability, ledger = self._stability, self._ledger
        half = stability.half_band()
        candidate = self._candidate
        if candidate is not None:
            if abs(sample.grams - candidate.grams) <= half:
                candidate.add(sample.at, sample.grams, sample.stable)
                stability.judge(candidate)
                if self._confirmed:
                    stability.learn_bit(candidate, sample)
                    ledger.track_drift(candidate)
                    return []
                if self._ready(candidate, sample.at):
                    self._confirmed = True
                    self._phase = ShelfPhase.STABLE
                    return ledger.resolve(candidate, sample.at, now_utc)
                return []
            # Motion: an unconfirmed candidate that was still (no hand on it) stays as evidence.
            if not self._confirmed and ledger.anchor is not None:
                if stability.still(candidate):
                    ledger.keep(candidate)
                elif stability.brief(candidate):
                    # Too few samples to judge, and one of them off by noise: a glimpse.
                    candidate.glimpse = True
                    ledger.keep(candidate)
                elif candidate.rejoined is not None:
                    # Not still after it rejoined the piece before a knock: that piece was
                    # evidence before, and stays evidence (a rejoin never loses what was seen).
                    ledger.keep(candidate.rejoined)
            self._candidate = None
            self._confirmed = False
            self._phase = ShelfPhase.SETTLING
        glimpse = stability.glimpse(sample, now_utc, half)
        if glimpse is not None:
            ledger.keep_glimpse(glimpse)
        out = ledger.commit_beyond(sample.grams, now_utc)
        plateau = stability.detect(sample, now_utc, half)
        if plateau is None:
            return out
        evidence = ledger.anchor.chain if ledger.anchor is not None else []
        if evidence and stability.same_weight(evidence[-1], plateau):
            plateau.rejoin(evidence.pop())
        stability.judge(plateau)
        self._candidate = plateau
        out.extend(ledger.commit_progress(plateau, now_utc))
        if self._ready(plateau, sample.at):
            self._confirmed = True
            self._phase = ShelfPhase.STABLE
            out.extend(ledger.resolve(plateau, sample.at, now_utc))
        return out

    def _first_reached(self, plateau: Plateau) -> float | None:
        """When the weight first settled at ``plateau``'s count, when a piece of evidence at that
        count came before it (motion broke the count and it came back: the last pieces of the
        evidence, or the piece it rejoined after a knock); None when it is the first."""
        ledger = self._ledger
        anchor = ledger.anchor
        if anchor is None:
            return None
        units = ledger.fit(plateau.grams - anchor.grams).units
        first = plateau.rejoined.settled_at if plateau.rejoined is not None else None
        for piece in reversed(anchor.chain):
            if piece is plateau or ledger.fit(piece.grams - anchor.grams).units != units:
                break
            first = piece.settled_at
        return first

    def _ready(self, plateau: Plateau, at: float) -> bool:
        """Confirmed: confirmable (held, quiet, the trusted bit set); heavier than the level
        before it on a shelf blind to a hand's tremor: held ``hand_rest_s`` too."""
        stability = self._stability
        if not stability.confirmable(plateau, at):
            return False
        if at - plateau.settled_at >= self.params.hand_rest_s - 1e-9:
            return True
        if not self._ledger.heavier_than_before(plateau):
            return True
        if stability.hand_blind():
            return False
        if not plateau.restless:
            first = self._first_reached(plateau)
            plateau.restless = first is not None and stability.trembled_since(first)
        return not plateau.restless
