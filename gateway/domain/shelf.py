"""Shelf engine: weight samples -> stable plateaus -> picks, restocks, adjustments and alerts.

Theory of operation
-------------------
A shelf sits on load cells behind a weighing transmitter that the gateway polls (5 Hz by default).
Everything that moves goods on or off the shelf also moves a hand, so the signal is a series of
*plateaus* separated by *motion*. The engine only ever reasons about plateaus:

* **Stability.** The last ``stable_hold_s`` of samples form the window. The shelf is *stable* when
  the window spans the hold time, holds at least three samples and its peak-to-peak spread is
  within ``stable_band_g`` and, when ``use_stable_bit`` is set and the shelf maps a status word,
  every sample in it carries the transmitter's stable bit (the transmitter's motion detector runs
  at its conversion rate, so it sees the tremor of a resting hand that 5 Hz polling can alias
  into a few flat-looking samples). The plateau's value is the window mean, which averages the
  transmitter's noise down.
  A sample flagged ``error`` or ``overload`` empties the window: nothing measured across a fault is
  trusted, so the first plateau after it is compared with the last one before it (picks during a
  device outage come out as one movement when the device returns).
* **Counting.** When the shelf becomes stable again, the change ``delta`` from the reference
  plateau is divided by the item's unit weight: ``n = round(delta / unit_weight_g)``. It is
  accepted when ``|delta - n * unit_weight_g|`` is within the tolerance for ``n`` units,
  ``weight_tolerance_g * sqrt(|n|)`` (item weights vary independently, so their spread adds in
  quadrature), capped below half a unit so that ``n`` is never ambiguous. ``n < 0`` is a PICK
  (location -> ``pick_to``), ``n > 0`` a RESTOCK (``restock_from`` -> location), ``n == 0`` with
  ``|delta| <= weight_tolerance_g`` is no change at all (a bump, a hand lifted again). Confidence
  falls from 1.0 for a perfect fit to 0.5 at the edge of the tolerance.
* **Unexplained changes.** A plateau that fits no whole number of units is *pending*: nothing is
  recorded, because a hand resting on the shelf or a parcel put down for a moment looks exactly
  like that. The engine keeps two references: the last plateau (``ref``) and the last *explained*
  weight (``baseline``). The next plateau is first compared with the baseline (the hand went away,
  possibly taking items with it), then with the last plateau (items picked while the hand stays).
  If the pending change is still there after ``unexplained_after_s`` of stability, an
  ``unexplained_weight_change`` Alert is raised once; it is cleared when the shelf is explained
  again. Hence a resting hand or a bump produces no movement: it either never settles (a hand is
  never still to within a few grams) or it settles on a weight that is not a unit count, and it
  returns to the baseline when it leaves.
* **Drift.** While stable, the references follow the window mean at no more than
  ``zero_track_g_per_s``: load-cell creep and temperature drift are absorbed, while any change fast
  enough to matter is motion and goes through counting.
* **Reconciliation.** ``set_on_hand(n)`` tells the engine the stock level the store holds. The
  count implied by the explained weight, ``(baseline - empty_g) / unit_weight_g`` (``empty_g`` is
  the reading of the empty shelf, 0 for a transmitter that tared its tray), is compared with it.
  When they disagree, with the implied count fitting within tolerance, for ``reconcile_after_s``,
  an ADJUSTMENT movement sets the level right (from/to ``adjust_location``).

Invariants: a plateau equal to the reference (within tolerance) never yields a movement; replaying
the same samples with the same timestamps yields the same movement ids (each id is a hash of the
shelf id, the kind and the UTC times of the two plateaus it joins).

Parameters (``debounce.shelf``, see ``gateway.domain.params.ShelfParams``): ``stable_band_g`` 4.0,
``stable_hold_s`` 0.8, ``poll_interval_s`` 0.2 (sets a half-interval slack on the window),
``use_stable_bit`` True, ``zero_track_g_per_s`` 0.5, ``unexplained_after_s`` 5.0,
``reconcile_after_s`` 300, ``adjust_location`` "adjustment".
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.model import (
    Alert,
    AlertKind,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Severity,
    Sku,
    SourceType,
    WeightSample,
)
from gateway.domain.params import ShelfParams

PICKED = LocationId("picked")
"""Default ``pick_to``: the virtual location picked goods go to."""
BACKROOM = LocationId("backroom")
"""Default ``restock_from``."""

_MIN_WINDOW_SAMPLES = 3
_MAX_FRACTION_OF_UNIT = 0.45
"""Tolerances are capped below half a unit so that rounding to a count is never ambiguous."""


class ShelfPhase(enum.StrEnum):
    SETTLING = "settling"
    STABLE = "stable"
    FAULT = "fault"


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


def unit_tolerance_g(units: int, unit_weight_g: float, tolerance_g: float) -> float:
    """The tolerance for a change of ``units`` items: per-item tolerance times sqrt(units)."""
    scaled = tolerance_g * math.sqrt(max(1, abs(units)))
    return min(scaled, _MAX_FRACTION_OF_UNIT * unit_weight_g)


def fit_units(delta_g: float, unit_weight_g: float, tolerance_g: float) -> CountFit:
    """Explain ``delta_g`` as a whole number of units of ``unit_weight_g``."""
    units = round(delta_g / unit_weight_g)
    return CountFit(
        units=units,
        residual_g=delta_g - units * unit_weight_g,
        tolerance_g=unit_tolerance_g(units, unit_weight_g, tolerance_g),
    )


@dataclass(slots=True)
class _Pending:
    """An unexplained plateau: when it started and by how much it differs from the baseline."""

    since_at: float
    delta_g: float
    alerted: bool = False


class ShelfEngine:
    """Turns one shelf's weight samples into movements and alerts (pure; time is passed in)."""

    def __init__(
        self,
        shelf_id: str,
        *,
        location: LocationId,
        sku: Sku,
        unit_weight_g: float,
        tolerance_g: float,
        pick_to: LocationId = PICKED,
        restock_from: LocationId = BACKROOM,
        params: ShelfParams | None = None,
        empty_g: float = 0.0,
        on_hand: int | None = None,
    ) -> None:
        if not unit_weight_g > 0:
            raise ValueError(f"unit_weight_g must be > 0, got {unit_weight_g}")
        if tolerance_g < 0:
            raise ValueError(f"tolerance_g must be >= 0, got {tolerance_g}")
        if location in (pick_to, restock_from):
            raise ValueError(f"pick_to/restock_from must differ from the shelf location {location}")
        self.shelf_id = shelf_id
        self.location = location
        self.sku = sku
        self.unit_weight_g = unit_weight_g
        self.tolerance_g = tolerance_g
        self.pick_to = pick_to
        self.restock_from = restock_from
        self.params = params if params is not None else ShelfParams()
        self._adjust_location = LocationId(self.params.adjust_location)
        if self._adjust_location == location:
            raise ValueError(f"adjust_location must differ from the shelf location {location}")
        # (at, grams, transmitter stable bit or None)
        self._window: deque[tuple[float, float, bool | None]] = deque()
        self._phase = ShelfPhase.SETTLING
        self._last_at: float | None = None
        self._ref_g: float | None = None
        self._ref_utc: datetime | None = None
        self._baseline_g: float | None = None
        self._baseline_utc: datetime | None = None
        self._empty_g = empty_g
        self._pending: _Pending | None = None
        self._on_hand = on_hand
        self._disagree_since: float | None = None

    # -- observation ------------------------------------------------------------------------------

    @property
    def phase(self) -> ShelfPhase:
        return self._phase

    @property
    def on_hand(self) -> int | None:
        """The stock level as the engine believes it (None until ``set_on_hand``)."""
        return self._on_hand

    @property
    def baseline_g(self) -> float | None:
        """The last explained plateau (drift-tracked), or None before the first plateau."""
        return self._baseline_g

    @property
    def implied_units(self) -> CountFit | None:
        """The count implied by the explained weight, or None before the first plateau."""
        if self._baseline_g is None:
            return None
        return fit_units(self._baseline_g - self._empty_g, self.unit_weight_g, self.tolerance_g)

    @property
    def unexplained(self) -> bool:
        return self._pending is not None

    def set_on_hand(self, on_hand: int) -> None:
        """The stock level the store holds for this shelf's location and SKU."""
        self._on_hand = on_hand
        self._disagree_since = None

    # -- input ------------------------------------------------------------------------------------

    def feed(self, sample: WeightSample, now_utc: datetime) -> list[Movement | Alert]:
        """Take one sample (``now_utc`` is when it was taken) and return what it concluded."""
        if sample.shelf_id != self.shelf_id:
            raise ValueError(f"sample of {sample.shelf_id!r} fed to shelf {self.shelf_id!r}")
        if self._last_at is not None and sample.at <= self._last_at:
            return []  # late or duplicated sample: time only moves forward
        dt = 0.0 if self._last_at is None else sample.at - self._last_at
        self._last_at = sample.at
        if sample.error or sample.overload:
            self._window.clear()
            self._phase = ShelfPhase.FAULT
            self._disagree_since = None
            return []
        self._append(sample)
        if not self._stable():
            if self._phase is not ShelfPhase.SETTLING:
                self._phase = ShelfPhase.SETTLING
            return []
        mean = math.fsum(g for _, g, _ in self._window) / len(self._window)
        out: list[Movement | Alert] = []
        if self._phase is ShelfPhase.STABLE:
            self._track_drift(mean, dt)
        else:
            self._phase = ShelfPhase.STABLE
            out.extend(self._settle(mean, now_utc))
        out.extend(self._check_pending(sample.at, now_utc))
        out.extend(self._reconcile(sample.at, now_utc))
        return out

    # -- internals --------------------------------------------------------------------------------

    def _append(self, sample: WeightSample) -> None:
        window = self._window
        window.append((sample.at, sample.grams, sample.stable))
        slack = 0.5 * self.params.poll_interval_s
        horizon = sample.at - self.params.stable_hold_s - slack
        while window and window[0][0] < horizon:
            window.popleft()

    def _stable(self) -> bool:
        window = self._window
        if len(window) < _MIN_WINDOW_SAMPLES:
            return False
        slack = 0.5 * self.params.poll_interval_s
        if window[-1][0] - window[0][0] < self.params.stable_hold_s - slack:
            return False
        if self.params.use_stable_bit and any(bit is False for _, _, bit in window):
            return False
        grams = [g for _, g, _ in window]
        return max(grams) - min(grams) <= self.params.stable_band_g

    def _fit(self, delta_g: float) -> CountFit:
        return fit_units(delta_g, self.unit_weight_g, self.tolerance_g)

    def _settle(self, mean: float, now_utc: datetime) -> list[Movement | Alert]:
        """A new plateau: explain it against the baseline and the last plateau."""
        if self._ref_g is None or self._baseline_g is None:
            self._ref_g = self._baseline_g = mean
            self._ref_utc = self._baseline_utc = now_utc
            return []
        out: list[Movement | Alert] = []
        if self._pending is not None:
            from_baseline = self._fit(mean - self._baseline_g)
            if from_baseline.fits:
                if self._pending.alerted:
                    out.append(self._unexplained_alert(now_utc, active=False, delta_g=0.0))
                self._pending = None
                if from_baseline.units:
                    out.append(self._movement(from_baseline, self._baseline_utc, now_utc))
                self._ref_g = self._baseline_g = mean
                self._ref_utc = self._baseline_utc = now_utc
                return out
        from_ref = self._fit(mean - self._ref_g)
        if from_ref.fits:
            if from_ref.units == 0:
                return out  # same plateau as before: a bump, a touch, a hand lifted again
            out.append(self._movement(from_ref, self._ref_utc, now_utc))
            if self._pending is None:
                self._baseline_g = mean
            else:
                # Items moved while something unexplained still rests on the shelf: the
                # explained weight moves by the measured change, the offset stays pending.
                self._baseline_g += mean - self._ref_g
                self._pending.delta_g = mean - self._baseline_g
            self._baseline_utc = now_utc
            self._ref_g, self._ref_utc = mean, now_utc
            return out
        if self._pending is None:
            assert self._last_at is not None
            self._pending = _Pending(since_at=self._last_at, delta_g=mean - self._baseline_g)
        else:
            self._pending.delta_g = mean - self._baseline_g
        self._ref_g, self._ref_utc = mean, now_utc
        return out

    def _track_drift(self, mean: float, dt: float) -> None:
        assert self._ref_g is not None
        assert self._baseline_g is not None
        limit = self.params.zero_track_g_per_s * dt
        step = max(-limit, min(limit, mean - self._ref_g))
        self._ref_g += step
        if self._pending is None:
            # Drift moves the whole reading: the empty-shelf reading moves with the baseline, so
            # the implied count does not creep.
            self._baseline_g += step
            self._empty_g += step

    def _check_pending(self, at: float, now_utc: datetime) -> list[Movement | Alert]:
        pending = self._pending
        if pending is None or pending.alerted:
            return []
        if at - pending.since_at < self.params.unexplained_after_s:
            return []
        pending.alerted = True
        return [self._unexplained_alert(now_utc, active=True, delta_g=pending.delta_g)]

    def _reconcile(self, at: float, now_utc: datetime) -> list[Movement | Alert]:
        implied = self.implied_units
        if (
            self._on_hand is None
            or self._pending is not None
            or implied is None
            or not implied.fits
            or implied.units < 0
            or implied.units == self._on_hand
        ):
            self._disagree_since = None
            return []
        if self._disagree_since is None:
            self._disagree_since = at
            return []
        if at - self._disagree_since < self.params.reconcile_after_s:
            return []
        diff = implied.units - self._on_hand
        evidence = f"adjust|{self._baseline_utc}|{self._on_hand}|{implied.units}|{now_utc}"
        movement = Movement(
            movement_id=self._movement_id(evidence),
            kind=MovementKind.ADJUSTMENT,
            sku=self.sku,
            quantity=abs(diff),
            from_location=self._adjust_location if diff > 0 else self.location,
            to_location=self.location if diff > 0 else self._adjust_location,
            source_type=SourceType.WEIGHT_SHELF,
            source_id=self.shelf_id,
            observed_at=now_utc,
            confidence=implied.confidence,
        )
        self._on_hand = implied.units
        self._disagree_since = None
        return [movement]

    def _movement(self, fit: CountFit, ref_utc: datetime | None, now_utc: datetime) -> Movement:
        kind = MovementKind.RESTOCK if fit.units > 0 else MovementKind.PICK
        if self._on_hand is not None:
            self._on_hand += fit.units
        self._disagree_since = None
        return Movement(
            movement_id=self._movement_id(f"{kind}|{ref_utc}|{now_utc}"),
            kind=kind,
            sku=self.sku,
            quantity=abs(fit.units),
            from_location=self.restock_from if fit.units > 0 else self.location,
            to_location=self.location if fit.units > 0 else self.pick_to,
            source_type=SourceType.WEIGHT_SHELF,
            source_id=self.shelf_id,
            observed_at=now_utc,
            confidence=fit.confidence,
        )

    def _movement_id(self, evidence: str) -> MovementId:
        digest = hashlib.sha256(f"{self.shelf_id}|{evidence}".encode()).hexdigest()[:32]
        return MovementId(f"ws-{digest}")

    def _unexplained_alert(self, now_utc: datetime, *, active: bool, delta_g: float) -> Alert:
        if active:
            message = (
                f"shelf {self.shelf_id}: weight changed by {delta_g:+.1f} g, not a whole number "
                f"of {self.unit_weight_g:g} g units of {self.sku}"
            )
        else:
            message = f"shelf {self.shelf_id}: weight explained again"
        return Alert(
            alert_id=f"{AlertKind.UNEXPLAINED_WEIGHT_CHANGE}:{self.shelf_id}",
            kind=AlertKind.UNEXPLAINED_WEIGHT_CHANGE,
            severity=Severity.WARNING,
            subject=self.shelf_id,
            message=message,
            raised_at=now_utc,
            active=active,
            details={
                "shelf_id": self.shelf_id,
                "location": self.location,
                "sku": self.sku,
                "delta_g": round(delta_g, 1),
                "unit_weight_g": self.unit_weight_g,
            },
        )
