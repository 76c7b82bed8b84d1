"""What a weighing transmitter reads, as a pure function of scenario time.

Theory of operation
-------------------
The load on the cells at time ``t`` is the sum of

* the tray (``tare_g``) and the goods on it. Each pick or restock moves ``n`` items whose weights
  differ from the nominal unit weight (Gaussian, ``item_sigma_g`` each, drawn once per event from
  the seed), so a restock of 6 weighs ``6 * unit_weight_g`` plus or minus a few grams;
* the hand doing it: during a pick or restock the goods go from the old to the new weight along a
  smooth step while the hand presses on the shelf (a half-sine of ``HAND_PRESS_G``), and after it
  the platform rings (a damped oscillation, a few per cent of the change, time constant 0.12 s);
* bumps: a knock is a short oscillation under a half-sine envelope of ``grams`` that ends where it
  started;
* a resting hand: ``grams`` ramped on and off in 0.25 s, plus tremor (two slow sines, amplitude
  ``max(10 g, 4 %)``: a hand is never still to within a few grams);
* drift: ``drift_g_per_min`` times minutes since the start;
* noise: Gaussian with sigma ``noise_g``, constant between two conversions of the transmitter
  (``CONVERSION_HZ``), derived by hashing (seed, unit, conversion index) so that it is a pure
  function of time too.

The transmitter (``ShelfTrack.transmitter``) updates its output ``update_hz`` times a second
(independent of how often it is polled), passes the load through an internal first-order filter
(``filter_tau_s``; a step becomes a ramp), adds its noise, and quantises to ``division_g``. Its
*stable* bit is its own motion detector: with ``StableRule.MOTION`` set when the noiseless load
moved less than ``MOTION_BAND_G`` over the last ``MOTION_WINDOW_S``; with ``StableRule.DIVISION``
when the noiseless filtered output moved no more than one division in the last second.
A put-back lifts items (a gesture of ``GESTURE_S``), holds them, and returns the very same items.
*Overload* is gross above capacity.
The heartbeat counts conversions at ``HEARTBEAT_HZ`` (mod 2**16). A FROZEN failure returns the
reading of the instant the failure began (heartbeat included); an ADC_ERROR failure sets the error
bit and reads zero. EXCEPTION and SILENT failures are the server's business (no reading at all).

Nothing here reads a clock or keeps mutable state: ``reading(t)`` for the same ``t`` is always the
same, which is what makes the simulator testable.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import struct
from dataclasses import dataclass

from simulators.shelf_scenario import (
    GESTURE_S,
    FailureMode,
    Garbage,
    ShelfEvent,
    ShelfEventKind,
    ShelfTrack,
    StableRule,
)

CONVERSION_HZ = 50.0
HEARTBEAT_HZ = 10.0
MOTION_BAND_G = 2.0
MOTION_WINDOW_S = 0.4
HAND_PRESS_G = 120.0
RING_TAU_S = 0.12
RING_HZ = 6.0
RING_LENGTH_S = 1.0
_MOTION_POINTS = 5
_DIVISION_WINDOW_S = 1.0
_FILTER_MEMORY_TAUS = 12.0


@dataclass(frozen=True, slots=True)
class Reading:
    """What the transmitter reports at one instant."""

    gross_g: float
    stable: bool
    overload: bool
    adc_error: bool
    heartbeat: int
    failure: FailureMode | None = None
    garbage: Garbage | None = None
    """With a GARBAGE failure: what nonsense the weight registers hold."""


@dataclass(frozen=True, slots=True)
class _Step:
    """One pick or restock: the goods weigh ``before_g`` until ``t``, ``after_g`` from ``end``."""

    t: float
    end: float
    before_g: float
    after_g: float
    units_after: int


class ShelfPhysics:
    """The deterministic signal of one shelf (see the module docstring)."""

    def __init__(self, track: ShelfTrack, seed: int) -> None:
        self.track = track
        self._noise_key = hashlib.blake2b(
            f"{seed}:{track.shelf_id}:{track.unit}".encode(), digest_size=16
        ).digest()
        rng = random.Random(f"{seed}:{track.shelf_id}:items")
        goods = track.initial_units * track.unit_weight_g
        units = track.initial_units
        self._initial_goods_g = goods
        self._steps: list[_Step] = []
        for event in track.events:
            if event.kind not in (
                ShelfEventKind.PICK,
                ShelfEventKind.RESTOCK,
                ShelfEventKind.PUTBACK,
            ):
                continue
            sign = 1 if event.kind is ShelfEventKind.RESTOCK else -1
            moved = sum(
                track.unit_weight_g + rng.gauss(0.0, track.item_sigma_g) for _ in range(event.units)
            )
            after = goods + sign * moved
            if event.kind is ShelfEventKind.PUTBACK:
                # The same items go and come back: two steps, and the count never changes.
                lifted = event.t + GESTURE_S
                self._steps.append(_Step(event.t, lifted, goods, after, units))
                self._steps.append(_Step(event.end - GESTURE_S, event.end, after, goods, units))
                continue
            units += sign * event.units
            self._steps.append(_Step(event.t, event.end, goods, after, units))
            goods = after
        tx = track.transmitter
        self._hz = tx.update_hz if tx.filter_tau_s or tx.division_g else CONVERSION_HZ
        self._alpha = (
            1.0 - math.exp(-1.0 / (self._hz * tx.filter_tau_s)) if tx.filter_tau_s else 1.0
        )
        self._filtered: dict[int, float] = {}
        self._step_starts = [s.t for s in self._steps]
        self._transients = [e for e in track.events if e.physical]
        self._transient_starts = [e.t for e in self._transients]
        self._failures = [e for e in track.events if e.kind is ShelfEventKind.FAILURE]
        self._failure_starts = [e.t for e in self._failures]

    # -- the goods --------------------------------------------------------------------------------

    def units_at(self, t: float) -> int:
        """Items on the shelf at ``t`` (a pick counts once it has ended)."""
        i = bisect.bisect_right(self._step_starts, t) - 1
        while i >= 0 and self._steps[i].end > t:
            i -= 1
        return self.track.initial_units if i < 0 else self._steps[i].units_after

    def _goods_g(self, t: float) -> float:
        i = bisect.bisect_right(self._step_starts, t) - 1
        if i < 0:
            return self._initial_goods_g
        step = self._steps[i]
        if t >= step.end:
            return step.after_g
        x = (t - step.t) / (step.end - step.t)
        # The goods leave (or land) in the middle of the gesture: smooth step over x in 0.3..0.7.
        s = min(1.0, max(0.0, (x - 0.3) / 0.4))
        s = s * s * (3.0 - 2.0 * s)
        return step.before_g + s * (step.after_g - step.before_g)

    # -- everything but noise ---------------------------------------------------------------------

    def load_g(self, t: float) -> float:
        """The noiseless gross load at ``t``: tray, goods, hands, bumps and drift."""
        value = self.track.tare_g + self._goods_g(t) + self.track.drift_g_per_min * t / 60.0
        i = bisect.bisect_right(self._transient_starts, t) - 1
        if i >= 0:
            value += self._transient_g(self._transients[i], t)
        return value

    def _transient_g(self, event: ShelfEvent, t: float) -> float:
        tau = t - event.t
        if event.kind is ShelfEventKind.PUTBACK:
            back = event.duration - GESTURE_S
            if tau < GESTURE_S:
                return HAND_PRESS_G * math.sin(math.pi * tau / GESTURE_S)
            if back <= tau < event.duration:
                return HAND_PRESS_G * math.sin(math.pi * (tau - back) / GESTURE_S)
            return 0.0
        if event.kind in (ShelfEventKind.PICK, ShelfEventKind.RESTOCK):
            if tau < event.duration:
                return HAND_PRESS_G * math.sin(math.pi * tau / event.duration)
            after = tau - event.duration
            if after >= RING_LENGTH_S:
                return 0.0
            amplitude = 0.02 * event.units * self.track.unit_weight_g + 8.0
            decay = math.exp(-after / RING_TAU_S)
            return amplitude * decay * math.sin(2.0 * math.pi * RING_HZ * after)
        if tau >= event.duration:
            return 0.0
        if event.kind is ShelfEventKind.BUMP:
            envelope = math.sin(math.pi * tau / event.duration)
            return event.grams * envelope * math.cos(2.0 * math.pi * 7.0 * tau)
        # A resting hand: ramped on and off, never perfectly still: the arm's tremor (1.3 and
        # 3.1 Hz), a slow sway of the body (0.3-0.8 Hz, 3 % of the force) and physiological
        # tremor (8-12 Hz, 1.5 %, at least 3 g), their frequencies drawn from the event.
        ramp = min(1.0, tau / 0.25, (event.duration - tau) / 0.25)
        tremor_g = max(10.0, 0.04 * event.grams)
        tremor = tremor_g * (
            0.6 * math.sin(2.0 * math.pi * 1.3 * t + 0.7) + 0.4 * math.sin(2.0 * math.pi * 3.1 * t)
        )
        sway_hz = 0.3 + 0.5 * ((event.t * 7.31) % 1.0)
        fast_hz = 8.0 + 4.0 * ((event.t * 3.17) % 1.0)
        sway = 0.03 * event.grams * math.sin(2.0 * math.pi * sway_hz * tau)
        fast = max(3.0, 0.015 * event.grams) * math.sin(2.0 * math.pi * fast_hz * tau + 1.1)
        return max(0.0, ramp) * (event.grams + tremor + sway + fast)

    def filtered_g(self, k: int) -> float:
        """The noiseless output of update ``k``: the load through the internal filter.

        A pure function of ``k``; updates are memoised (the last few seconds of them), since
        reads come in time order and the stable bit looks one second back.
        """
        if self._alpha >= 1.0:
            return self.load_g(k / self._hz)
        cached = self._filtered.get(k)
        if cached is not None:
            return cached
        memory = math.ceil(_FILTER_MEMORY_TAUS * self.track.transmitter.filter_tau_s * self._hz)
        j = k - 1
        while j > k - memory and j not in self._filtered:
            j -= 1
        if j in self._filtered:
            y = self._filtered[j]
        else:
            j = k - memory
            y = self.load_g(j / self._hz)
        while j < k:
            j += 1
            y += self._alpha * (self.load_g(j / self._hz) - y)
            self._filtered[j] = y
        if len(self._filtered) > 8 * memory + 4 * self._hz:
            horizon = k - 2 * memory - 2 * self._hz
            for old in [i for i in self._filtered if i < horizon]:
                del self._filtered[old]
        return y

    def settled_at(self, event: ShelfEvent, until: float, *, strict: bool = False) -> float:
        """When the transmitter's output settled after ``event`` (before ``until``): from then on
        its noiseless output stays within max(1 division, 2 % of a unit, 0.5 g) of its final
        value, what a person counting items on the display would call "it stopped moving";
        ``strict``: within max(1 division, 0.5 g), "the display stopped changing"."""
        tx = self.track.transmitter
        unit_share = 0.0 if strict else 0.02 * self.track.unit_weight_g
        band = max(tx.division_g, unit_share, 0.5)
        first = math.ceil(event.end * self._hz)
        last = max(first, math.floor(until * self._hz))
        final = self.filtered_g(last)
        settled = last
        for k in range(last, first - 1, -1):
            if abs(self.filtered_g(k) - final) > band:
                break
            settled = k
        return settled / self._hz

    def noise_g(self, t: float) -> float:
        """Gaussian noise, constant within one update period, a pure function of ``t``."""
        if self.track.noise_g == 0:
            return 0.0
        k = math.floor(t * self._hz)
        digest = hashlib.blake2b(struct.pack(">q", k), digest_size=8, key=self._noise_key).digest()
        a, b = struct.unpack(">II", digest)
        u1 = (a + 1) / 4294967297.0  # (0, 1]: log() is defined
        u2 = b / 4294967296.0
        return self.track.noise_g * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)

    def failure_at(self, t: float) -> ShelfEvent | None:
        i = bisect.bisect_right(self._failure_starts, t) - 1
        if i >= 0 and t < self._failures[i].end:
            return self._failures[i]
        return None

    def reading(self, t: float) -> Reading:
        """What the transmitter reports at ``t`` (see the module docstring for failures)."""
        failure = self.failure_at(t)
        if failure is not None and failure.mode is FailureMode.FROZEN:
            frozen = self._healthy_reading(failure.t)
            return Reading(
                gross_g=frozen.gross_g,
                stable=frozen.stable,
                overload=frozen.overload,
                adc_error=False,
                heartbeat=frozen.heartbeat,
                failure=FailureMode.FROZEN,
            )
        if failure is not None and failure.mode is FailureMode.ADC_ERROR:
            return Reading(
                gross_g=0.0,
                stable=False,
                overload=False,
                adc_error=True,
                heartbeat=self._heartbeat(t),
                failure=FailureMode.ADC_ERROR,
            )
        healthy = self._healthy_reading(t)
        if failure is None:
            return healthy
        return Reading(
            gross_g=healthy.gross_g,
            stable=healthy.stable,
            overload=healthy.overload,
            adc_error=healthy.adc_error,
            heartbeat=healthy.heartbeat,
            failure=failure.mode,
            garbage=failure.garbage if failure.mode is FailureMode.GARBAGE else None,
        )

    def _healthy_reading(self, t: float) -> Reading:
        tx = self.track.transmitter
        if tx.stable_rule is StableRule.DIVISION or tx.filter_tau_s or tx.division_g:
            return self._transmitter_reading(t)
        # The transmitter converts at CONVERSION_HZ: a read between conversions sees the last one.
        t_conv = math.floor(t * CONVERSION_HZ) / CONVERSION_HZ
        load = self.load_g(t_conv)
        history = [
            self.load_g(t_conv - MOTION_WINDOW_S * i / (_MOTION_POINTS - 1))
            for i in range(1, _MOTION_POINTS)
        ]
        history.append(load)
        stable = max(history) - min(history) <= MOTION_BAND_G
        gross = load + self.noise_g(t_conv)
        return Reading(
            gross_g=gross,
            stable=stable,
            overload=gross > self.track.capacity_g,
            adc_error=False,
            heartbeat=self._heartbeat(t),
        )

    def _transmitter_reading(self, t: float) -> Reading:
        """A transmitter with its own update rate, filter, quantisation and stable rule."""
        tx = self.track.transmitter
        k = math.floor(t * self._hz)
        value = self.filtered_g(k)
        if tx.stable_rule is StableRule.DIVISION:
            back = max(1, round(_DIVISION_WINDOW_S * self._hz))
            points = [self.filtered_g(k - back * i // 8) for i in range(9)]
            stable = max(points) - min(points) <= max(tx.division_g, 0.1)
        else:
            history = [
                self.load_g((k / self._hz) - MOTION_WINDOW_S * i / (_MOTION_POINTS - 1))
                for i in range(_MOTION_POINTS)
            ]
            stable = max(history) - min(history) <= MOTION_BAND_G
        gross = value + self.noise_g(k / self._hz)
        if tx.division_g:
            gross = round(gross / tx.division_g) * tx.division_g
        return Reading(
            gross_g=gross,
            stable=stable,
            overload=gross > self.track.capacity_g,
            adc_error=False,
            heartbeat=self._heartbeat(t),
        )

    @staticmethod
    def _heartbeat(t: float) -> int:
        return math.floor(t * HEARTBEAT_HZ) & 0xFFFF
