"""Shelf engine, plateaus: where a shelf's weight is still, and whether goods or a hand hold it.

This module holds the part of :class:`gateway.domain.shelf.ShelfEngine` that looks at samples
only: the learned noise model and stability band, candidate plateaus and their settle times, the
quiet/tremor judgement and whether a candidate may be confirmed, and how far the transmitter's
stable bit can be trusted. It knows nothing of units, the anchor or the book; counting lives in
:mod:`gateway.domain.shelf`, whose module docstring is the theory of operation of both (the
sections "Noise model, learned", "Candidate plateau" and "Confirmation" are about this one).
Not an API: only the shelf engine uses it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.domain.model import WeightSample
from gateway.domain.params import ShelfParams

_MIN_WINDOW_SAMPLES = 3
_TRACE_S = 6.0

# The noise model.
_NOISE_HISTORY = 300
_QUIET_ENOUGH = 5
"""Differences inside confirmed plateaus needed before they alone give the noise."""
_QUIET_TRIMMED = 20
"""Differences inside confirmed plateaus needed before the largest tenth is trimmed."""
_FLICKER_STEPS = 8
"""Steps of an unsettled output enough to take the smallest common one for its division."""
_LATTICE_TOLERANCE_G = 0.02
"""How far a step may sit from a multiple of a division: the rounding of a float32 register
(in kg, a milligram) and of a scaled int32, far below the 0.1 g of the finest division."""
_LATTICE_UNIT_FRACTION = 0.1
"""The largest division a lattice of steps is taken for, as a share of a unit: a larger common
step is motion (two picks), not a division, and a band of 1.5 of it would hide a count."""
_LATTICE_NOISE_STEPS = 8
"""Before anything settled, differences beyond this many divisions are motion: noise of up to a
division (the most a transmitter's display shows) puts two consecutive samples that far apart
practically never (5.4 sigma of a difference of two)."""
_TRIM = 0.9
_TRIMMED_MEAN_OF_CHI2 = 0.623
"""The mean of the lowest 90 % of chi-square(1) values, over the mean of all of them."""
_TRIM_ALL = 0.7
_TRIMMED_MEAN_OF_CHI2_ALL = 0.310
"""The same for the lowest 70 % (before enough settled, more of the samples may be motion)."""

# The stability band.
_BAND_SIGMAS = 3.0
_BAND_RESOLUTIONS = 1.5
_SIGMA_BOUND_Z = -1.2816
"""The normal quantile of the band's bound on a learned sigma (10 %: the upper 90 % bound)."""
_MIN_HALF_BAND_G = 0.8
"""Most of a gram: a platform rings and a filter creeps by that much after any touch."""
_BAND_UNIT_FRACTION = 0.02
"""Motion below 2 % of a unit cannot change a count: the tail of a filter's ramp is settled."""

# Quiet or trembling.
_TREMOR_WINDOW_S = 1.0
_TREMOR_WINDOW_BLIND_S = 1.6
"""Without a trustworthy stable bit: a slow sway needs longer to go up and down."""
_RECENT_S = 2.0
_TREMOR_UNIT_FRACTION = 0.005
_MIN_TREMOR_G = 0.5
"""Half a gram of wobble is the platform, not a hand."""
_RING_S = 0.5
"""How long a platform rings after a load change (a damped oscillation of a fraction of a
second; a hand's tremor lasts as long as the hand)."""
_SHORT_SAMPLES = 10
"""A plateau of up to this many samples is short: its level is its later half's mean."""
_QUIET_SAMPLES = 5
"""A second of samples at 5 Hz: four can look like a filter's tail by chance, five rarely."""
_HAND_VISIBLE_NOISE_G = 2.5
"""Above this noise a resting hand's tremor (10 g and more, up and down) travels no further
over 1.6 s of 5 Hz samples than noise does (2.4 sigma a step): only a stable bit, or time,
tells a hand from goods."""
_RESTLESS_HALF_BANDS = 3.0
"""How far the samples since a count was first reached spread before its plateau is a hand's:
noise stays within about a band (3 sigma each way), a hand's tremor of 10 g and more goes
further (a 510 g hand on a 10 g band: 36 g)."""
_KNOCK_HALF_BANDS = 6.0
"""A sample further than this from the middle of a plateau's samples is a knock, not a tremor
(a hand trembles a few bands; a knock swings a third of a unit and more, 15 bands)."""
_QUIET_RUN = 3
"""Quiet judgements in a row before a candidate counts: a hand can look still for a moment."""
_TRAVEL_SIGMAS = 2.4
"""Noise alone makes 5 Hz samples travel 1.13 sigma a step on average, rarely above 2.4."""
_MIN_OBSERVED_S = 0.6
"""A candidate is confirmed only after this much of it was seen, however early it settled."""

# The stable bit.
_BIT_TRUST = 0.8
_BIT_MIN_OBSERVATIONS = 5
_BIT_RUN = 3
"""Samples in a row with the trusted stable bit set before it vouches for a plateau."""

# A late poll.
_STALL_INTERVALS = 2.0
"""A gap this many sample intervals long is a late poll (a busy host, a retried request)."""
_GLIMPSE_SPAN = 0.75
"""The two samples of a glimpse are at least this many usual intervals apart."""


def _common_step(a: float, b: float) -> float:
    """The greatest common divisor of two steps, to ``_LATTICE_TOLERANCE_G`` (Euclid's)."""
    while b > _LATTICE_TOLERANCE_G:
        a, b = b, math.fmod(a, b)
        if b > a - _LATTICE_TOLERANCE_G:  # a remainder a rounding short of a whole step
            b = 0.0
    return a


def _trimmed_sigma(deltas: Iterable[float], keep: float, kept_mean_of_chi2: float) -> float:
    """Sigma of one sample from differences of consecutive ones: the RMS of the smallest
    ``keep`` of them (the rest may be motion), scaled back by the mean of that share of
    chi-square(1) values; a difference of two samples has twice the variance of one."""
    squares = sorted(d * d for d in deltas)
    if not squares:
        return 0.0
    kept = squares[: max(1, int(keep * len(squares)))]
    return math.sqrt(math.fsum(kept) / len(kept) / kept_mean_of_chi2 / 2.0)


class NoiseModel:
    """What the engine has learned of one transmitter's noise and resolution.

    Differences between consecutive samples are learned from *quiet* samples (those of a
    confirmed plateau) once there are enough of them (a trimmed RMS); before that, from all
    samples (their median, which ignores the minority that is motion). The resolution is the
    smallest step of quiet samples, or before those the step a quantised output flickers by:
    the first step of a noise-free signal is motion, not a division.
    """

    def __init__(self, division_g: float | None, unit_weight_g: float = math.inf) -> None:
        self.division_g = division_g
        self._all: deque[float] = deque(maxlen=_NOISE_HISTORY)
        self._quiet: deque[float] = deque(maxlen=_NOISE_HISTORY)
        self._dirty = True
        self._sigma = 0.0
        self._sigma_n = 0
        """How many differences ``_sigma`` rests on."""
        self._resolution = division_g or 0.0
        self._lattice_cap_g = _LATTICE_UNIT_FRACTION * unit_weight_g
        self._lattice = 0.0
        """The greatest common step of every step seen (0: none yet, or none in common)."""

    def observe(self, delta_g: float, grams: float, *, quiet: bool) -> None:
        delta = abs(delta_g)
        self._all.append(delta)
        self._dirty = True
        if self.division_g is None and delta > _LATTICE_TOLERANCE_G and self._lattice >= 0.0:
            common = _common_step(self._lattice, delta) if self._lattice else delta
            # A float output's steps share no division: their common step dwindles to nothing.
            self._lattice = common if common > 2.5 * _LATTICE_TOLERANCE_G else -1.0
        if not quiet:
            return
        self._quiet.append(delta)
        # Float registers in kg carry rounding far below any division: ignore it.
        if (
            delta > 1e-6 * max(1.0, abs(grams))
            and self.division_g is None
            and (self._resolution == 0.0 or delta < self._resolution)
        ):
            self._resolution = delta

    def _refresh(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self._sigma_n = len(self._quiet)
        if len(self._quiet) >= _QUIET_ENOUGH:
            if len(self._quiet) >= _QUIET_TRIMMED:
                self._sigma = _trimmed_sigma(self._quiet, _TRIM, _TRIMMED_MEAN_OF_CHI2)
            else:
                # Too few to trim: the smallest share of a handful is not the share of a
                # distribution (five differences trimmed to four read a 0.8 g shelf as 0.23 g,
                # and its goods then trembled).
                self._sigma = _trimmed_sigma(self._quiet, 1.0, 1.0)
        else:
            # Before anything settled: more of the samples may be motion, so trim more. (Not the
            # median: a quantised output's differences are mostly 0 or one division, and their
            # median jumps between the two from one sample to the next.)
            self._sigma = _trimmed_sigma(self._all, _TRIM_ALL, _TRIMMED_MEAN_OF_CHI2_ALL)
            self._sigma_n = len(self._all)
            division = self._start_division()
            if division:
                # A quantised output's differences are mostly 0: the smallest 70 % of them are
                # nearly all 0 and read noise of most of a division as a fraction of it (a
                # shelf at 0.9 division of noise broke every candidate for seven seconds and
                # its first pick came before its opening count). All differences up to a few
                # divisions are noise here; motion is beyond them.
                bound = _LATTICE_NOISE_STEPS * division
                self._sigma = max(
                    self._sigma, _trimmed_sigma((d for d in self._all if d <= bound), 1.0, 1.0)
                )

    def still_noise_g(self) -> float:
        """The noise of still goods: as :meth:`noise_g` once confirmed plateaus gave it; before,
        from the first few differences inside them when there are two, since all samples count
        motion as noise (a few knocks after brief plateaus made a 0.8 g shelf look 19 g noisy)."""
        if len(self._quiet) >= _QUIET_ENOUGH or len(self._quiet) < 2:
            return self.noise_g()
        return max(
            _trimmed_sigma(self._quiet, 1.0, 1.0),
            self.resolution_g / math.sqrt(12.0),
            _MIN_HALF_BAND_G / 3.0,
        )

    @property
    def sigma_g(self) -> float:
        self._refresh()
        return self._sigma

    def _start_division(self) -> float:
        """Before anything settled: the configured division, or else the common step of every
        step seen, when there is one and it is small beside a unit (a quantised output moves in
        whole divisions, motion too)."""
        if self.division_g:
            return self.division_g
        if 0.0 < self._lattice <= self._lattice_cap_g:
            return self._lattice
        return 0.0

    @property
    def resolution_g(self) -> float:
        if self._resolution or self.division_g:
            return self._resolution
        # Nothing settled yet: a quantised output that flickers between divisions never holds
        # still in a band narrower than one. Every step it makes is a whole number of divisions,
        # the first flicker included: their common step is its division, known from the first
        # steps (a shelf that flickered twice in four seconds waited for eight, and a pick came
        # first). Otherwise the steps it flickers by; motion is a minority of them.
        division = self._start_division()
        if division:
            return division
        steps = sorted(d for d in self._all if d > 0)
        if len(steps) < _FLICKER_STEPS:
            return 0.0
        return steps[len(steps) // 10]

    def half_band_g(self, fixed_band_g: float | None, unit_weight_g: float) -> float:
        if fixed_band_g is not None:
            return 0.5 * fixed_band_g
        return max(
            _BAND_SIGMAS * self.sigma_g * self._few_differences_factor(),
            _BAND_RESOLUTIONS * self.resolution_g,
            _BAND_UNIT_FRACTION * unit_weight_g,
            _MIN_HALF_BAND_G,
        )

    def _few_differences_factor(self) -> float:
        """How much larger the noise may be than learned from the differences seen so far (the
        upper 90 % bound of a sigma estimated from n of them; Wilson-Hilferty's chi-square
        quantile). A dozen differences read a shelf of 8 g noise as 5.5 g, and its plateaus
        broke on every third sample until a pick was counted eight seconds late."""
        n = max(self._sigma_n, 1)
        h = 2.0 / (9.0 * n)
        cube = 1.0 - h + _SIGMA_BOUND_Z * math.sqrt(h)
        return 1.0 / math.sqrt(max(cube, 0.2) ** 3)

    def noise_g(self) -> float:
        """The spread a still shelf shows: noise, or quantisation when noise is below it."""
        return max(self.sigma_g, self.resolution_g / math.sqrt(12.0), _MIN_HALF_BAND_G / 3.0)


@dataclass(slots=True, eq=False)
class Plateau:
    """A run of samples within the band of their mean."""

    settled_at: float
    settled_utc: datetime
    detected_at: float
    n: int = 0
    total: float = 0.0
    bit_set: bool | None = None
    bit_run: int = 0
    """How many of its latest samples in a row had the stable bit set."""
    recent: deque[tuple[float, float]] = field(default_factory=deque)
    """The last ``_RECENT_S`` of samples: a hand trembles, goods do not."""
    quiet_run: int = 0
    """How many samples in a row its last second showed no tremor (a hand can look still for a
    moment by chance; goods stay still)."""
    quiet_seen: bool = False
    """At some moment its last second of samples showed no tremor (the start of the next
    gesture may join a plateau's band before it leaves it)."""
    knocked: bool = False
    """Rejoined after a knock: it settled before the knock, not where the trace says."""
    rejoined_at: float = -math.inf
    """When its part after the knock began: that part is judged on its own samples first."""
    rejoined: Plateau | None = None
    """The piece before the knock it rejoined (evidence that must not be lost with it)."""
    restless: bool = False
    """Its count was reached before and left by small motion (a piece of it broke and it came
    back), trembling in between: a hand resting, held ``hand_rest_s`` before it counts."""
    came_down: bool = False
    """A glimpse the weight came down to (the sample before it was heavier): after a pick."""
    glimpse: bool = False
    """Two samples beside a late poll (:meth:`Stability.glimpse`), or a piece too short to
    judge (:meth:`Stability.brief`): evidence only where it lies between the counts on either
    side of it."""

    @property
    def grams(self) -> float:
        return self.total / self.n

    def level(self, noise_g: float) -> float:
        """Where a short plateau lay, from its inner samples: not its first (the end of a
        filter's ramp or of the platform's ring, the earliest sample within the band) nor its
        last (motion ended it: that sample may be the next gesture's hand already pressing,
        still inside the band); the median of the later half of them when it differs from the
        earlier half by more than ``noise_g`` explains (a tail still creeping), else of all.
        A short plateau's mean is pulled by both ends (the three picks before a pick of one on
        an 8.5 g item: 0.7 g off, beyond the tolerance of a fit, and the two picks merged). A
        long plateau's mean has diluted both."""
        if self.n > _SHORT_SAMPLES or len(self.recent) != self.n:
            return self.grams
        if self.glimpse and self.n == 2:
            # Two samples beside a late poll: their mean, unless they differ by more than noise.
            # Then the later one (the earlier is further up a filter's tail); but where the
            # weight came down to them (a pick), the lower one: a later sample higher than the
            # earlier is the next gesture's hand pressing, never goods.
            first, second = self.recent[0][1], self.recent[1][1]
            if abs(second - first) <= 2.5 * noise_g * math.sqrt(2.0):
                return self.grams
            return min(first, second) if self.came_down else second
        if self.n < 4:
            return self.grams
        values = [g for _, g in self.recent][1:-1]
        half = len(values) // 2
        if half >= 2:
            earlier = statistics.median(values[:half])
            later = statistics.median(values[half:])
            # Two medians of about n/2 samples each differ by noise * 1.25 * sqrt(4/n) by chance.
            if abs(later - earlier) > 2.5 * noise_g * math.sqrt(4.0 / len(values)):
                return later
        return statistics.median(values)

    def excess_variation_g(
        self,
        window_s: float = _TREMOR_WINDOW_S,
        *,
        skip_last: int = 0,
        since: float = -math.inf,
    ) -> tuple[float, int]:
        """How far the recent samples (none before ``since``) travelled beyond their net change,
        and how many steps (leaving out the last ``skip_last`` samples).

        A filter's tail goes one way and slows down: it travels about as far as it gets. A
        hand goes up and down: it travels far and gets nowhere."""
        recent = list(self.recent)[: len(self.recent) - skip_last]
        last = recent[-1][0] if recent else 0.0
        start = max(last - window_s - 1e-9, since)
        values = [g for t, g in recent if t >= start]
        if len(values) < 3:
            return 0.0, 0
        travel = math.fsum(abs(b - a) for a, b in itertools.pairwise(values))
        return travel - abs(values[-1] - values[0]), len(values) - 1

    def add(self, at: float, grams: float, bit: bool | None) -> None:
        self.n += 1
        self.total += grams
        if bit is not None:
            self.bit_set = bit
            self.bit_run = self.bit_run + 1 if bit else 0
        self.recent.append((at, grams))
        while self.recent[0][0] < at - _RECENT_S:
            self.recent.popleft()

    def rejoin(self, earlier: Plateau) -> None:
        """The same plateau again after a knock: it settled when the first part did."""
        self.settled_at, self.settled_utc = earlier.settled_at, earlier.settled_utc
        self.knocked = True
        self.rejoined = earlier
        self.rejoined_at = self.recent[0][0] if self.recent else self.detected_at
        self.restless = self.restless or earlier.restless
        if earlier.quiet_seen:
            # It was seen still long enough before the knock: that counts towards confirming.
            self.detected_at = earlier.detected_at
            # Its level is of both parts (a one-sample knock, the next gesture's hand arriving,
            # left a plateau of three samples, the hand's among them, for one of seven).
            last = earlier.recent[-1][0] if earlier.recent else -math.inf
            later = [g for t, g in self.recent if t > last]
            self.n = earlier.n + len(later)
            self.total = earlier.total + math.fsum(later)
            self.recent = deque(sorted({*earlier.recent, *self.recent}))
            self.quiet_seen = earlier.quiet_seen
            self.quiet_run = earlier.quiet_run


class Stability:
    """Where one shelf's weight is still, and whether it is goods or a hand that hold it still.

    It keeps the last ``stable_hold_s`` of samples (the window: a candidate when they lie within
    the band) and a longer trace (the settle time), the learned noise model (the band), the
    observed sample interval (slower than polled: three samples make a candidate, a judgement
    takes fewer) and how often the stable bit is set on a confirmed plateau (its trust). It
    judges plateaus but holds none: the engine owns its candidate, counting owns the evidence.
    """

    def __init__(
        self, params: ShelfParams, *, unit_weight_g: float, division_g: float | None
    ) -> None:
        self.params = params
        self.unit_weight_g = unit_weight_g
        self.noise = NoiseModel(division_g, unit_weight_g)
        # (at, grams, stable bit): the last stable_hold_s, and a longer trace for the settle time.
        self._window: deque[tuple[float, float, bool | None]] = deque()
        self._trace: deque[tuple[float, float]] = deque()
        self._interval_s = params.poll_interval_s
        # The last few gaps between samples (their median: the usual one, whatever the late
        # polls among them), and the samples that came after a late poll.
        self._gaps: deque[float] = deque([params.poll_interval_s], maxlen=7)
        self._after_stall: deque[float] = deque(maxlen=4)
        self._bit_seen = 0
        self._bit_set = 0

    @property
    def bit_trusted(self) -> bool:
        """The stable bit was set on at least 80 % of the confirmed samples lately."""
        return (
            self._bit_seen >= _BIT_MIN_OBSERVATIONS and self._bit_set >= _BIT_TRUST * self._bit_seen
        )

    def clear(self) -> None:
        """A fault or an outage: nothing before it belongs to the next plateau."""
        self._window.clear()
        self._trace.clear()

    def append(self, sample: WeightSample) -> None:
        window = self._window
        if window:
            gap = sample.at - window[-1][0]
            if gap > _STALL_INTERVALS * self._usual_gap():
                self._after_stall.append(sample.at)
            self._gaps.append(gap)
            self._interval_s += 0.3 * (min(gap, self.params.outage_gap_s) - self._interval_s)
        window.append((sample.at, sample.grams, sample.stable))
        slack = 0.5 * self.params.poll_interval_s
        horizon = sample.at - self.params.stable_hold_s - slack
        # At least three samples stay: when they come slower than polled (a dead unit holding up
        # a shared Modbus line), three in a row within the band are a candidate all the same.
        while len(window) > _MIN_WINDOW_SAMPLES and window[0][0] < horizon:
            window.popleft()
        trace = self._trace
        trace.append((sample.at, sample.grams))
        while trace and trace[0][0] < sample.at - _TRACE_S:
            trace.popleft()

    def _usual_gap(self) -> float:
        """The median of the last few gaps between samples (late polls among them do not move
        it), and at least half the poll interval."""
        gaps = sorted(self._gaps)
        return max(gaps[len(gaps) // 2], 0.5 * self.params.poll_interval_s)

    def half_band(self) -> float:
        return self.noise.half_band_g(self.params.stable_band_g, self.unit_weight_g)

    def detect(self, sample: WeightSample, now_utc: datetime, half: float) -> Plateau | None:
        """A new candidate after ``sample`` (appended): the window spans ``stable_hold_s`` (or
        holds three samples that came slower) within ``half`` of its mean. It is dated from its
        settle time, and holds the window's samples from then on (not yet judged)."""
        window = self._window
        if len(window) < _MIN_WINDOW_SAMPLES:
            return None
        slack = 0.5 * self.params.poll_interval_s
        sparse = window[0][0] < sample.at - self.params.stable_hold_s - slack
        if not sparse and window[-1][0] - window[0][0] < self.params.stable_hold_s - slack:
            return None
        mean = math.fsum(g for _, g, _ in window) / len(window)
        if any(abs(g - mean) > half for _, g, _ in window):
            return None
        settled_at = self._settled_at(mean, half)
        plateau = Plateau(
            detected_at=sample.at,
            settled_at=settled_at,
            settled_utc=now_utc - timedelta(seconds=sample.at - settled_at),
        )
        for at, grams, bit in window:
            if at >= settled_at:
                plateau.add(at, grams, bit)
        return plateau

    def glimpse(self, sample: WeightSample, now_utc: datetime, half: float) -> Plateau | None:
        """Two samples before ``sample`` (appended, itself motion) that lay within ``half`` of
        each other, with a late poll just before, between or just after them: all that was seen of a
        plateau that the late poll hid (the short one between the two picks of a double pick,
        two samples of it where five were due). Too little to judge a hand by, so it is evidence
        only where its count lies between those on either side of it (``_Ledger``): it splits a
        pick or restock in two where it would have been counted as one; it never makes one."""
        trace = self._trace
        if len(trace) < 3 or not self._after_stall:
            return None
        (t1, g1), (t2, g2), (t3, g3) = trace[-3], trace[-2], trace[-1]
        if t3 != sample.at:
            return None
        if not any(t in self._after_stall for t in (t1, t2, t3)):
            return None
        if t2 - t1 < _GLIMPSE_SPAN * self._usual_gap():
            return None  # two samples close together span no time: nothing was seen still
        mean = 0.5 * (g1 + g2)
        if abs(g3 - mean) <= half:
            return None
        if abs(g1 - mean) > half:
            return self._turn((g1, t2, g2, t3, g3), now_utc, half)
        plateau = Plateau(
            detected_at=t2,
            settled_at=t1,
            settled_utc=now_utc - timedelta(seconds=t3 - t1),
            glimpse=True,
            came_down=len(trace) > 3 and trace[-4][1] > g1,
        )
        plateau.add(t1, g1, None)
        plateau.add(t2, g2, None)
        return plateau

    def _turn(
        self, last3: tuple[float, float, float, float, float], now_utc: datetime, half: float
    ) -> Plateau | None:
        """One sample at the bottom of a valley, beside a late poll: the end of a pick's
        filter tail coming down to it and, after the gap, the next gesture's hand pressing
        (a hand presses a shelf, it never lifts it: a valley is goods, a peak may be a hand).
        All a poller saw of the plateau between the two picks of a double pick when a dead
        unit on the same line held up its polls for a second: evidence where the weight lay,
        as a glimpse's. Not a sample on a ramp (one gesture seen three times goes one way)."""
        g1, t2, g2, t3, g3 = last3  # the last three traced samples (the first one's time unused)
        if t2 not in self._after_stall and t3 not in self._after_stall:
            return None
        if g1 - g2 <= half or g3 - g2 <= half:
            return None
        plateau = Plateau(
            detected_at=t2,
            settled_at=t2,
            settled_utc=now_utc - timedelta(seconds=t3 - t2),
            glimpse=True,
        )
        plateau.add(t2, g2, None)
        return plateau

    def same_weight(self, earlier: Plateau, plateau: Plateau) -> bool:
        """The same weight within what the noise lets two means differ by (goods knocked ring and
        come back to it; a resting hand's sway shows up as plateaus grams apart)."""
        noise = self.noise.noise_g()
        spread = 3.0 * noise * math.sqrt(1.0 / earlier.n + 1.0 / plateau.n)
        # The earlier part at its level: the knock may have cut it short in its filter's tail.
        return abs(plateau.grams - earlier.level(noise)) <= max(spread, self.noise.resolution_g)

    def judge(self, plateau: Plateau) -> None:
        """One more sample: is the plateau still quiet? (Too few samples to tell: no news.)"""
        if self.trembles(plateau):
            plateau.quiet_run = 0
        elif plateau.knocked and (
            sum(1 for t, _ in plateau.recent if t >= plateau.rejoined_at) < _QUIET_SAMPLES
        ):
            # Rejoined after a knock: no news until the part after it has five samples of its
            # own. The tremor window spans both parts and skips what came between, so a
            # resting hand whose sway left and came back to the same weight looked still.
            pass
        elif self._judgeable(plateau):
            plateau.quiet_run += 1
            plateau.quiet_seen = True

    def confirmable(self, plateau: Plateau, at: float) -> bool:
        """Held ``confirm_s``, spread like noise, quiet, and the trusted stable bit set. (The
        engine also asks, on a shelf blind to a hand, whether a hand may be resting on it.)"""
        if at - plateau.settled_at < self.params.confirm_s - 1e-9:
            return False
        if not plateau.knocked and at - self._settled_at(plateau.grams, self.half_band()) < (
            self.params.confirm_s - 1e-9
        ):
            # Judged again by the plateau's mean now rather than the mean of its first samples
            # (goods away for a moment before they are put back must not pass for settled).
            return False
        if at - plateau.detected_at < _MIN_OBSERVED_S - 1e-9:
            return False
        if plateau.quiet_run < (1 if self._sparse() else _QUIET_RUN):
            return False
        # A trusted bit must hold for a few polls: a hand's tremor makes a motion detector
        # flicker, and one poll that caught it set is no word that goods are still.
        return not (
            self.params.use_stable_bit
            and plateau.bit_set is not None
            and plateau.bit_run < _BIT_RUN
            and self.bit_trusted
        )

    def learn_bit(self, plateau: Plateau, sample: WeightSample) -> None:
        """While confirmed: learn the stable bit's worth."""
        if sample.stable is not None and sample.at - plateau.settled_at >= self.params.confirm_s:
            self._bit_seen += 1
            self._bit_set += sample.stable
            if self._bit_seen > 4 * _BIT_MIN_OBSERVATIONS:  # a moving judgement, not a lifetime
                self._bit_seen //= 2
                self._bit_set //= 2

    def hand_blind(self) -> bool:
        """Too noisy to see a resting hand tremble, and no trustworthy stable bit to say so."""
        return not self.bit_trusted and self.noise.still_noise_g() > _HAND_VISIBLE_NOISE_G

    def still(self, plateau: Plateau) -> bool:
        """Goods, not a hand: seen without tremor at some moment, or too short to judge and
        quiet up to the sample before motion ended it (that one may already be the next
        gesture's hand pressing, still inside the band)."""
        if plateau.quiet_seen:
            return True
        # Seen for less than a judgement needs (a short plateau between two picks, or a few
        # samples when a shared line held them up): quiet so far is all there is to know.
        if len(plateau.recent) <= _QUIET_SAMPLES:
            return not self.trembles(plateau, skip_last=1)
        # Longer, but its first half second was the platform's ring (heavy goods ring tens of
        # grams) and what came after it is still too short to judge (a late poll took a sample):
        # quiet after the ring is all there is to know.
        since = plateau.settled_at + _RING_S
        after_ring = sum(1 for t, _ in plateau.recent if t >= since) - 1
        if after_ring > _QUIET_SAMPLES:
            return False
        excess, steps = plateau.excess_variation_g(_RECENT_S, skip_last=1, since=since)
        return excess <= self._travel_allowed_g(steps)

    def brief(self, plateau: Plateau) -> bool:
        """Seen for fewer samples than a judgement needs (the short plateau between the two
        picks of a double pick): whether its spread is noise or a hand cannot be told from
        three or four samples (one sample 3 sigma off read as tremor, and the two picks
        merged). It is evidence only where it lies between the counts on either side of it,
        as a glimpse is: it can split a pick or restock in two, never make one."""
        return not plateau.knocked and len(plateau.recent) < _QUIET_SAMPLES

    def trembles(self, plateau: Plateau, *, skip_last: int = 0) -> bool:
        """The recent samples travel further than the transmitter's noise would take them: a
        hand (a filter's tail or slow drift travel one way, and about as far as they get)."""
        if self.params.stable_band_g is not None:
            return False
        window = self._window_s(plateau, skip_last)
        excess, steps = plateau.excess_variation_g(window, skip_last=skip_last)
        if excess <= self._travel_allowed_g(steps):
            return False
        # The platform rings for a moment after goods land on it or leave it, a damped
        # oscillation that crosses the final weight (heavy goods ring tens of grams): judged
        # again without that moment when enough samples are left. A hand goes on trembling.
        excess, steps = plateau.excess_variation_g(
            window, skip_last=skip_last, since=plateau.settled_at + _RING_S
        )
        return steps + 1 < _QUIET_SAMPLES or excess > self._travel_allowed_g(steps)

    def trembled_since(self, since: float) -> bool:
        """Every sample traced since ``since`` (after the platform's ring), the motion that
        broke plateaus between them included (a knock's far-off samples not), spread over more
        than one and a half bands and travelled further than noise takes them: a hand whose
        tremor broke its plateau and came back to the same weight. (One plateau's own samples
        may look still for a second between two of its swings; a quantised output flickering
        two divisions breaks a plateau too, but stays within about a band.)"""
        start = since + _RING_S
        half = self.half_band()
        values = [g for t, g in self._trace if t >= start]
        if values:
            # Samples far off are a knock (goods knocked swing hundreds of grams for a moment
            # and come back): the plateau on either side of it says nothing of a hand.
            middle = statistics.median(values)
            values = [g for g in values if abs(g - middle) <= _KNOCK_HALF_BANDS * half]
        if len(values) < _QUIET_SAMPLES:
            return False
        if max(values) - min(values) <= _RESTLESS_HALF_BANDS * half:
            return False
        travel = math.fsum(abs(b - a) for a, b in itertools.pairwise(values))
        excess = travel - abs(values[-1] - values[0])
        return excess > self._travel_allowed_g(len(values) - 1)

    def _travel_allowed_g(self, steps: int) -> float:
        """How far ``steps`` steps of a still shelf may travel beyond their net change: what
        noise lets a step travel, and at least one division (an output whose value sits at a
        division's edge flickers between the two steps, which is no tremor), plus half a
        percent of a unit (half a gram of wobble is the platform, not a hand)."""
        per_step = max(_TRAVEL_SIGMAS * self.noise.noise_g(), self.noise.resolution_g)
        return steps * per_step + max(_TREMOR_UNIT_FRACTION * self.unit_weight_g, _MIN_TREMOR_G)

    def _tremor_window_s(self) -> float:
        # Without a trustworthy stable bit, only the samples can show a hand's tremor: a slow
        # one (1-2 Hz) needs more than a second of them to go up and down.
        # And long enough for five samples when they come a little slower than polled (a busy
        # gateway's poller jitters): with four in the window a plateau was never judged, and
        # goods that stayed three seconds passed for a put-back.
        base = _TREMOR_WINDOW_S if self.bit_trusted else _TREMOR_WINDOW_BLIND_S
        return max(base, (_QUIET_SAMPLES - 0.5) * self._interval_s)

    def _window_s(self, plateau: Plateau, skip_last: int = 0) -> float:
        """The tremor window of ``plateau``: stretched to its last five samples when one poll
        came late (a busy host, a retried request), up to the two seconds it keeps. Otherwise a
        plateau with a gap in it never has five samples in a window and is never judged: the
        short plateau between the two picks of a double pick was not kept, and they merged."""
        window = self._tremor_window_s()
        recent = plateau.recent
        last = len(recent) - 1 - skip_last
        if last >= _QUIET_SAMPLES - 1:
            span = recent[last][0] - recent[last - _QUIET_SAMPLES + 1][0]
            if window < span <= _RECENT_S:
                return span
        return window

    def _judgeable(self, plateau: Plateau) -> bool:
        """Enough recent samples to tell a hand from goods: five at 5 Hz, three when samples
        come slower (a shared line held up by a dead unit)."""
        window = self._window_s(plateau)
        last = plateau.recent[-1][0]
        count = sum(1 for t, _ in plateau.recent if t >= last - window - 1e-9)
        return count >= (3 if self._sparse() else _QUIET_SAMPLES)

    def _sparse(self) -> bool:
        return self._interval_s >= 1.5 * self.params.poll_interval_s

    def _settled_at(self, mean: float, half: float) -> float:
        """The earliest time from which every traced sample is within the band of ``mean``."""
        settled = self._trace[-1][0]
        for at, grams in reversed(self._trace):
            if abs(grams - mean) > half:
                break
            settled = at
        return settled
