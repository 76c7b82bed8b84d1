"""Tuning parameters of the domain engines, with their defaults.

These are the ``debounce.portal``, ``debounce.shelf`` and ``debounce.antenna`` sections of the
config: the config loader validates keys and types against these dataclasses, so adding a field
here adds a config key.
Each engine module documents what its parameters mean in its theory of operation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PortalParams:
    """``debounce.portal``: how raw reads become door crossings (see ``gateway.domain.portal``)."""

    idle_close_s: float = 2.0
    """A tag's pass through a door closes when it has not been read for this long."""
    min_reads: int = 2
    """Reads (summed TagSeenCount) a pass needs before it can become a crossing."""
    min_confidence: float = 0.6
    """Crossings below this confidence produce no movement."""
    stray_dwell_s: float = 20.0
    """A tag read continuously for longer than this without a clear crossing is parked (stray)."""
    cross_read_margin_db: float = 3.0
    """Two doors hearing one tag: the one whose peak RSSI is higher by this margin wins."""
    horizon_s: float = 3600.0
    """Per-tag state is forgotten after this long without reads."""
    max_tags: int = 100_000
    """Upper bound on tags tracked at once; the least recently read are forgotten first."""
    group_window_s: float = 1.5
    """Crossings of one door in one direction whose crossing moments are this close (chained)
    are one load, e.g. a pallet: they become one movement per SKU."""
    quiet_close_s: float = 0.6
    """At a door both sides of which heard a tag, the side it left must be silent this long
    (while the other still hears it) for the crossing to be decided: the main lever of speed
    against certainty (``idle_close_s`` if that is shorter)."""
    settle_s: float = 0.4
    """A load is complete (its movements are made) once reader time is this far past the
    decision of its latest crossing and no pass that could still join it is open."""

    def __post_init__(self) -> None:
        for name in (
            "idle_close_s",
            "stray_dwell_s",
            "horizon_s",
            "group_window_s",
            "quiet_close_s",
            "settle_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"debounce.portal.{name} must be > 0, got {getattr(self, name)}")
        if self.stray_dwell_s <= self.idle_close_s:
            raise ValueError("debounce.portal.stray_dwell_s must be longer than idle_close_s")
        if self.min_reads < 1:
            raise ValueError(f"debounce.portal.min_reads must be >= 1, got {self.min_reads}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(
                f"debounce.portal.min_confidence must be within [0, 1], got {self.min_confidence}"
            )
        if self.cross_read_margin_db < 0:
            raise ValueError(
                "debounce.portal.cross_read_margin_db must be >= 0, "
                f"got {self.cross_read_margin_db}"
            )
        if self.max_tags < 1:
            raise ValueError(f"debounce.portal.max_tags must be >= 1, got {self.max_tags}")


@dataclass(frozen=True, slots=True)
class ShelfParams:
    """``debounce.shelf``: how weight samples become picks and restocks (see ``domain.shelf``)."""

    poll_interval_s: float = 0.2
    """How often each shelf's weighing transmitter is polled (5 Hz)."""
    stable_hold_s: float = 0.4
    """Samples within the stability band for this long make a candidate plateau."""
    confirm_s: float = 1.5
    """A candidate is confirmed (and counted) this long after it settled, if it held: a put-back
    or a hand coming back within it cancels out instead of making two movements."""
    stable_band_g: float | None = None
    """A fixed peak-to-peak stability band; None (default): learned per transmitter from its
    noise and division."""
    outage_gap_s: float = 2.0
    """No sample for this long is an outage: the next plateau is compared with the one before."""
    use_stable_bit: bool = True
    """Also require the transmitter's own stable bit when the shelf maps one and the bit has shown
    itself trustworthy (set on most settled samples): its motion detector runs at the conversion
    rate and sees a resting hand's tremor that 5 Hz polling can alias away."""
    zero_track_g_per_s: float = 0.5
    """While stable, slow drift up to this rate is absorbed into the baseline."""
    reconcile_after_s: float = 300.0
    """Weight-implied count and stock level disagreeing this long yields an adjustment."""
    low_stock_hysteresis: int = 2
    """A low-stock alert clears once on-hand is above reorder_point + this many units."""
    unexplained_after_s: float = 5.0
    """A stable weight change that is no whole number of units raises an alert after this long."""
    adjust_location: str = "adjustment"
    """The virtual location that reconciliation adjustments come from or go to."""
    hand_rest_s: float = 12.0
    """How long a hand may rest on a shelf. On a transmitter too noisy to show a hand's tremor
    and without a trustworthy stable bit, a weight increase counts only once it held this long
    (a hand lifts before); elsewhere the tremor or the bit tells a hand at once."""

    def __post_init__(self) -> None:
        positive = {
            "poll_interval_s": self.poll_interval_s,
            "hand_rest_s": self.hand_rest_s,
            "stable_hold_s": self.stable_hold_s,
            "confirm_s": self.confirm_s,
            "outage_gap_s": self.outage_gap_s,
        }
        if self.stable_band_g is not None and not self.stable_band_g > 0:
            raise ValueError(f"stable_band_g must be > 0, got {self.stable_band_g}")
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        non_negative = {
            "zero_track_g_per_s": self.zero_track_g_per_s,
            "reconcile_after_s": self.reconcile_after_s,
            "low_stock_hysteresis": self.low_stock_hysteresis,
            "unexplained_after_s": self.unexplained_after_s,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not self.adjust_location:
            raise ValueError("adjust_location must not be empty")


@dataclass(frozen=True, slots=True)
class AntennaParams:
    """``debounce.antenna``: when a portal antenna counts as down (see ``domain.antenna``)."""

    silence_s: float = 30.0
    """An antenna that has read nothing this long while its peers read arriving tags is down."""
    min_peer_tags: int = 3
    """Distinct tags that arrived at the portal and were read by its peers meanwhile."""
    forget_s: float = 60.0
    """A tag unread this long has left the portal; its next read is a new arrival."""
    rate_window_s: float = 10.0
    """Per-antenna read rates are counted over windows this long."""

    def __post_init__(self) -> None:
        for name in ("silence_s", "forget_s", "rate_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"debounce.antenna.{name} must be > 0, got {getattr(self, name)}")
        if self.min_peer_tags < 1:
            raise ValueError(
                f"debounce.antenna.min_peer_tags must be >= 1, got {self.min_peer_tags}"
            )
