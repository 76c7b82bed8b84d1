"""The portal engine's per-tag bookkeeping: which window each read goes into, and reader time.

Internal to :class:`~gateway.domain.portal.PortalEngine`, whose docstring is the theory of
operation ("Evidence", "Reader time" and the invariants). Here:

- :class:`TagTracker` takes a report's reads in timestamp order (``take``, the engine's hot loop):
  it drops duplicates by per-antenna marks, opens, continues and ends passes, rolls a long pass's
  window over (with a staggered second one), holds at most ``max_tags`` tags (evicting idle ones
  first) and forgets idle ones after ``horizon_s``. At each instant where a rule says a window is
  judged, it asks the :class:`~gateway.domain.portal_decide.CrossingDecider`, always before the
  read that reveals the instant is added, so reads sharing a timestamp commute.
- :class:`ReaderClocks` tells each reader's present time from its newest read and its offset.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence

from gateway.domain.model import TagRead
from gateway.domain.params import PortalParams
from gateway.domain.portal_decide import CrossingDecider, Decided
from gateway.domain.portal_model import DecidedBy
from gateway.domain.portal_state import NEVER, Counters, DoorLayout, Side, Tag, Window


class ReaderClocks:
    """Each reader's own time: reader clocks may be skewed and reports arrive late."""

    __slots__ = ("_idle_us", "_newest", "_offset", "_readers")

    def __init__(self, layout: DoorLayout, params: PortalParams) -> None:
        self._readers = layout.readers
        n_readers = len(layout.readers)
        self._newest: list[int | None] = [None] * n_readers
        self._offset: list[int] = [0] * n_readers
        self._idle_us = round(params.idle_close_s * 1e6)

    def observe(self, batch: Sequence[TagRead], touched: set[int], now_us: int) -> None:
        """After a report: each ``touched`` reader's newest read (its last one in the
        time-ordered ``batch``) and its offset from ``now_us``."""
        readers = self._readers
        newest = self._newest
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

    def now(self, now_us: int) -> list[int]:
        """Each reader's present time. It is the newest read delivered, or, when the reader has
        been silent, ``now_us`` less its offset less ``idle_close_s`` of allowance for reports
        still on their way (a pass must not close before a late report that continues it)."""
        return [
            -NEVER if newest is None else max(newest, now_us - offset - self._idle_us)
            for newest, offset in zip(self._newest, self._offset, strict=True)
        ]


class TagTracker:
    """The tags the engine holds: open passes (``open_tags``), remembered idle tags
    (``idle_tags``, oldest first), per reader a heap of idle deadlines, and the open tags whose
    window may hold a pair (``paired``: both sides of a door heard them; the ones the clock
    looks at for quiet sides, pruned lazily)."""

    __slots__ = (
        "_c",
        "_deadlines",
        "_decider",
        "_gen",
        "_horizon_us",
        "_idle_us",
        "_layout",
        "_max_tags",
        "_n_codes",
        "_quiet_us",
        "_window_us",
        "idle_tags",
        "open_tags",
        "paired",
    )

    def __init__(
        self,
        layout: DoorLayout,
        params: PortalParams,
        counters: Counters,
        decider: CrossingDecider,
    ) -> None:
        self._layout = layout
        self._c = counters
        self._decider = decider
        self._n_codes = layout.n_codes
        self._max_tags = params.max_tags
        self._idle_us = round(params.idle_close_s * 1e6)
        self._window_us = round(params.stray_dwell_s * 1e6)
        self._horizon_us = round(params.horizon_s * 1e6)
        self._quiet_us = round(min(params.quiet_close_s, params.idle_close_s) * 1e6)
        self.open_tags: dict[str, Tag] = {}
        # Per reader, a heap of (last read time when pushed, epc): one live entry per open tag,
        # refreshed lazily so the hot path never touches it; entries whose key no longer matches
        # the tag's heap_key are stale.
        self._deadlines: list[list[tuple[int, str]]] = [[] for _ in range(len(layout.readers))]
        self.idle_tags: OrderedDict[str, Tag] = OrderedDict()
        self.paired: dict[str, Tag] = {}
        self._gen = 0  # feed generation: a read equal to a mark is new only within its report

    @property
    def tracked(self) -> int:
        """Tags whose state is held (open passes plus remembered idle tags); <= max_tags."""
        return len(self.open_tags) + len(self.idle_tags)

    def known_location(self, epc: str) -> str | None:
        """Where the tag's last crossing took it, while its state is remembered."""
        tag = self.open_tags.get(epc) or self.idle_tags.get(epc)
        return tag.known_loc if tag is not None else None

    def take(self, batch: Sequence[TagRead], decided: list[Decided]) -> set[int]:
        """Take in one report's reads, sorted by ``last_seen_us``; crossings decided on the way
        go to ``decided``. Returns the indexes of the readers that delivered reads.

        Every decision about a tag is made at its first read with a newer timestamp, before
        that read is added, so reads sharing a timestamp commute."""
        self._gen += 1
        gen = self._gen
        idle_us = self._idle_us
        quiet_us = self._quiet_us
        window_us = self._window_us
        half_window = window_us >> 1
        n_codes = self._n_codes
        readers = self._layout.readers
        open_get = self.open_tags.get
        paired = self.paired
        quiet_side = self._decider.quiet_side
        close_pass = self._decider.close_pass
        long_pass = self._long_pass
        reopen = self._reopen
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
                        win = quiet_side(tag, win, t, decided)
                    if t - last > idle_us:
                        # The previous pass ended before this read: decide it, start a new one.
                        close_pass(tag, last + idle_us, DecidedBy.IDLE, decided)
                        win = tag.win = Window(t, n_codes)
                        tag.crossed = False
                    else:
                        age = t - win.start
                        if age > half_window and (tag.win2 is None or age > window_us):
                            win = long_pass(tag, t, decided)
                    tag.last_us = t
                    tag.rdr = ridx
                elif t == last and ridx < tag.rdr:
                    tag.rdr = ridx  # ties between readers: the lowest index, whatever the order
            else:
                opened = reopen(epc, code, t, gen=gen, ridx=ridx, decided=decided)
                if opened is None:
                    duplicates += 1
                    continue
                tag = opened
                win = tag.win
            # Accumulate: an inline copy of Window.add, as this is the hot path.
            sides = win.sides
            side = sides[code]
            f = r.first_seen_us
            if side is None:
                side = sides[code] = Side(f, t)
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
        return touched

    def _reopen(
        self, epc: str, code: int, t: int, *, gen: int, ridx: int, decided: list[Decided]
    ) -> Tag | None:
        """A read for a tag without an open pass: revive it from the idle tags or create it."""
        tag = self.idle_tags.get(epc)
        if tag is not None:
            mark = tag.marks.get(code)
            if mark is not None and (t < mark[0] or (t == mark[0] and mark[1] != gen)):
                return None
            del self.idle_tags[epc]
            tag.win = Window(t, self._n_codes)
            tag.crossed = False
            tag.win2 = None
            tag.last_us = t
            tag.rdr = ridx
        else:
            self._make_room(decided)
            tag = Tag(epc, t, ridx, self._n_codes)
        tag.marks[code] = (t, gen)
        tag.heap_key = t
        heapq.heappush(self._deadlines[ridx], (t, epc))
        self.open_tags[epc] = tag
        return tag

    def _make_room(self, decided: list[Decided]) -> None:
        """Evict to stay within max_tags: the longest-idle remembered tag, else the open pass
        read least recently (decided first, so its evidence is not silently lost)."""
        while len(self.open_tags) + len(self.idle_tags) >= self._max_tags:
            self._c.evicted_tags += 1
            if self.idle_tags:
                self.idle_tags.popitem(last=False)
                continue
            victim = self._pop_deadline()
            self._decider.close_pass(
                victim, victim.last_us + self._idle_us, DecidedBy.EVICTED, decided
            )

    def _pop_deadline(self) -> Tag:
        """Remove and return the open tag read least recently (ties: lowest EPC)."""
        while True:
            heap = min((h for h in self._deadlines if h), key=lambda h: h[0])
            key, epc = heapq.heappop(heap)
            tag = self.open_tags.get(epc)
            if tag is None or tag.heap_key != key:
                continue  # stale entry
            if tag.last_us != key:
                tag.heap_key = tag.last_us
                heapq.heappush(self._deadlines[tag.rdr], (tag.last_us, epc))
                continue
            del self.open_tags[epc]
            return tag

    def _long_pass(self, tag: Tag, t: int, decided: list[Decided]) -> Window:
        """A pass older than half a window: roll the window over, keep a staggered second one.

        A window reaching ``stray_dwell_s`` is judged (decision (c)); without a crossing it is
        a stray window, and the staggered one, started half-way, takes over, so a crossing at
        the end of a long dwell is seen whole in one window."""
        win = tag.win
        if t - win.start > self._window_us:
            before = len(decided)
            self._decider.decide(tag, win, t, DecidedBy.DWELL_WINDOW, decided)
            if len(decided) == before and tag.win is win:
                self._c.stray_windows += 1
                if tag.win2 is not None:
                    tag.win = tag.win2
                    if tag.win.pairs:
                        self.paired[tag.epc] = tag
                else:
                    tag.win = Window(t, self._n_codes, win.active(t - self._idle_us))
                tag.win2 = None
        win = tag.win
        if tag.win2 is None and t - win.start > self._window_us >> 1:
            tag.win2 = Window(t, self._n_codes, win.active(t - self._idle_us))
        return win

    def quiet_sides(self, reader_now: list[int], decided: list[Decided]) -> None:
        """The clock's look at quiet sides: passes heard on both sides of a door whose next
        quiet-side instant has passed in their reader's time, with no read since to find it."""
        quiet = self._quiet_us
        paired = self.paired
        for epc, tag in list(paired.items()):
            win = tag.win
            if not win.pairs or self.open_tags.get(epc) is not tag:
                del paired[epc]
                continue
            now = reader_now[tag.rdr]
            if now - win.quiet_hint > quiet and now > tag.last_us:
                win = self._decider.quiet_side(tag, win, now, decided)
                if not win.pairs:
                    del paired[epc]

    def close_idle(self, reader_now: list[int], decided: list[Decided]) -> None:
        """Close the passes idle in their own reader's time, least recently read first."""
        idle_us = self._idle_us
        for reader, heap in enumerate(self._deadlines):
            cut = reader_now[reader] - idle_us
            while heap and heap[0][0] < cut:
                key, epc = heapq.heappop(heap)
                tag = self.open_tags.get(epc)
                if tag is None or tag.heap_key != key:
                    continue  # stale entry
                if tag.last_us != key or tag.rdr != reader:
                    # Read since, or now last read by another reader: requeue where it belongs.
                    tag.heap_key = tag.last_us
                    heapq.heappush(self._deadlines[tag.rdr], (tag.last_us, epc))
                    continue
                del self.open_tags[epc]
                self._decider.close_pass(tag, key + idle_us, DecidedBy.IDLE, decided)
                self.idle_tags[epc] = tag

    def forget(self, reader_now: list[int]) -> None:
        """Forget the idle tags last read more than ``horizon_s`` ago in their reader's time."""
        horizon = self._horizon_us
        idle = self.idle_tags
        while idle:
            epc, tag = next(iter(idle.items()))
            if tag.last_us >= reader_now[tag.rdr] - horizon:
                break
            del idle[epc]
            self._c.forgotten_tags += 1

    def pair_open(self, portal: int, readers: set[int]) -> bool:
        """Whether an open pass heard on both sides of ``portal`` was last read by one of
        ``readers`` (its decision may still be on its way)."""
        for tag in self.open_tags.values():
            if tag.rdr in readers and (
                portal in tag.win.pairs or (tag.win2 is not None and portal in tag.win2.pairs)
            ):
                return True
        return False
