"""Tuning parameters of the domain engines, with their defaults.

These are the ``debounce.portal`` and ``debounce.shelf`` sections of the config: the config loader
validates keys and types against these dataclasses, so adding a field here adds a config key.
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


@dataclass(frozen=True, slots=True)
class ShelfParams:
    """``debounce.shelf``: how weight samples become picks and restocks (see ``domain.shelf``)."""

    poll_interval_s: float = 0.2
    """How often each shelf's weighing transmitter is polled (5 Hz)."""
    stable_band_g: float = 4.0
    """A plateau is stable while its peak-to-peak spread stays within this band..."""
    stable_hold_s: float = 0.8
    """...for at least this long."""
    use_stable_bit: bool = False
    """Also require the transmitter's own stable bit when the shelf config maps one."""
    zero_track_g_per_s: float = 0.5
    """While stable, slow drift up to this rate is absorbed into the baseline."""
    reconcile_after_s: float = 300.0
    """Weight-implied count and stock level disagreeing this long yields an adjustment."""
    low_stock_hysteresis: int = 2
    """A low-stock alert clears once on-hand is above reorder_point + this many units."""
