"""The state the portal engine keeps: its doors' layout, per-tag evidence windows, counters.

Internal to :class:`~gateway.domain.portal.PortalEngine` (whose docstring is the theory of
operation); shared by its collaborators, which all read and write the same objects.

- :class:`DoorLayout`: which reader antenna is which side of which door. A *code* numbers a
  (portal, side): ``portal index * 2 + side`` (0 outside, 1 inside), so ``code ^ 1`` is the other
  side of the same door and ``code >> 1`` the door.
- :class:`Side`: the evidence one side of one door gathered within a window. Every sum is an exact
  integer (microseconds, centi-dBm), so the evidence does not depend on the order reads were
  added.
- :class:`Window`: the evidence of one pass, or of one stretch of a long one, a :class:`Side` per
  code.
- :class:`Tag`: one EPC's state: its open pass's window(s), dedup marks, last known location.
- :class:`Counters`: the engine's statistics, bumped by every collaborator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.domain.portal_model import PortalSpec

NO_PEAK: Final = -(10**9)
"""The peak (centi-dBm) of a side without RSSI samples."""
NEVER: Final = 1 << 62
"""A time later than any read."""


class DoorLayout:
    """The portals, validated: reader -> (reader index, antenna -> code), portal -> reader."""

    __slots__ = ("index", "n_codes", "portal_reader", "portals", "readers")

    def __init__(self, portals: Sequence[PortalSpec]) -> None:
        self.portals = tuple(portals)
        ids = [p.portal_id for p in self.portals]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate portal ids: {sorted(i for i in ids if ids.count(i) > 1)}")
        # reader_id -> (reader index, antenna -> code), code = portal index * 2 + side (0 out, 1 in)
        self.readers: dict[str, tuple[int, dict[int, int]]] = {}
        self.portal_reader: list[int] = []
        for index, spec in enumerate(self.portals):
            entry = self.readers.get(spec.reader_id)
            if entry is None:
                entry = self.readers[spec.reader_id] = (len(self.readers), {})
            antennas = entry[1]
            for side, group in ((0, spec.outside_antennas), (1, spec.inside_antennas)):
                for antenna in sorted(group):
                    if antenna in antennas:
                        other = self.portals[antennas[antenna] >> 1].portal_id
                        raise ValueError(
                            f"antenna {antenna} of reader {spec.reader_id} is in portals "
                            f"{other} and {spec.portal_id}"
                        )
                    antennas[antenna] = index * 2 + side
            self.portal_reader.append(entry[0])
        self.n_codes = 2 * len(self.portals)
        self.index = {spec.portal_id: index for index, spec in enumerate(self.portals)}


class Side:
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
        self.peak = NO_PEAK
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


class Window:
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
        self.sides: list[Side | None] = [None] * n_codes
        self.pairs: list[int] = []  # portals both of whose sides heard the tag
        self.quiet_checked = -1  # S, the instant a side fell quiet, last judged...
        self.quiet_judged = -1  # ...and the last instant S + k x quiet_close_s it was judged at
        # A lower bound of the instant a side of a pair went quiet: the hot path calls
        # quiet_side only once quiet_close_s has passed since it.
        self.quiet_hint = NEVER

    def pair_formed(self, code: int) -> None:
        self.pairs.append(code >> 1)
        other = self.sides[code ^ 1]
        assert other is not None
        self.quiet_hint = min(self.quiet_hint, other.last)

    def add(self, code: int, first: int, last: int, count: int, rssi: float | None) -> None:
        """Add one read (``TagTracker.take`` has an inline copy of this for the primary window:
        a change here goes there too)."""
        side = self.sides[code]
        if side is None:
            side = self.sides[code] = Side(first, last)
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

    def active(self, since: int) -> int:
        """The sides that heard the tag at or after ``since`` (a bit per code): the ``carried``
        mask of a window that takes over from this one in the middle of a pass."""
        mask = 0
        for code, side in enumerate(self.sides):
            if side is not None and side.last >= since:
                mask |= 1 << code
        return mask


CLOSED: Final = Window(0, 0)
"""The window of a tag without an open pass (never added to)."""


class Tag:
    """One EPC's state, from its first read until it is forgotten or evicted."""

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
        self.win = Window(t, n_codes)
        self.win2: Window | None = None
        self.known_loc: str | None = None
        self.heap_key = t  # the key of this tag's live entry in the idle-deadline heap
        self.crossed = False  # this pass already produced a crossing (or a suppressed repeat)


@dataclass(slots=True)
class Counters:
    """What ``PortalEngine.stats`` reports, kept by whichever collaborator sees it happen."""

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
