"""Antenna health of dock portals: an antenna that stops reading while its door reads on.

Theory of operation
-------------------
A knocked or cut cable is the commonest silent failure of a portal: the door keeps reading on its
other antennas, so the reader looks healthy, and direction quietly degrades (an empty side cannot
tell in from out). Silence alone proves nothing (no traffic, no reads), so an antenna is judged
against its *peers*: the other antennas of its side of the door when that side has more than one
(they cover the same opening), else every other antenna of the portal.

An antenna is **down** when either

* the reader said so (an AntennaEvent "disconnected"), or
* it has read nothing for ``silence_s`` while its peers read at least ``min_peer_tags`` distinct
  tags that *arrived at the portal after its last read*. Only arrivals count: tags parked by the
  door (read by one antenna for hours) are no evidence that another antenna should read anything.
  A tag's arrival is its first read by the portal after ``forget_s`` without any.

It is **up** again on its next read (or an AntennaEvent "connected"). Each change is one event
(:class:`AntennaDown`, :class:`AntennaUp`); :meth:`AntennaHealth.advance` finds silences, so a
caller that ticks every T seconds raises ``antenna_down`` within ``silence_s + T`` of the last read
once the evidence is there (default 30 s).

Read rates: reads per antenna over the last completed ``rate_window_s`` window (a tumbling
window; the rate of a window in progress would under-count).

Pure: time (seconds, any monotonic origin) is passed in. Memory is bounded by the tags the
portals heard within ``forget_s`` (a dict entry each) and the configured antennas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.domain.model import DeviceId, TagRead
from gateway.domain.params import AntennaParams
from gateway.domain.portal import PortalSpec

_CHECK_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class AntennaDown:
    """An antenna stopped reading (``silent_s`` since its last read, ``peer_tags`` arrivals its
    peers read meanwhile), or the reader reported it disconnected (``reported``)."""

    reader_id: DeviceId
    antenna: int
    portal_id: str
    silent_s: float
    peer_tags: int
    reported: bool = False

    @property
    def detail(self) -> str:
        if self.reported:
            return f"the reader reports antenna {self.antenna} disconnected"
        return (
            f"antenna {self.antenna} has read nothing for {self.silent_s:.0f} s while "
            f"{self.peer_tags} tag(s) passed its peers at portal {self.portal_id}"
        )


@dataclass(frozen=True, slots=True)
class AntennaUp:
    """An antenna that was down reads again (or the reader reported it connected)."""

    reader_id: DeviceId
    antenna: int
    portal_id: str
    down_s: float


AntennaEvent = AntennaDown | AntennaUp


@dataclass(slots=True)
class _Antenna:
    reader_id: DeviceId
    antenna: int
    portal_id: str
    peers: tuple[int, ...]
    last_read: float
    down: AntennaDown | None = None
    down_at: float = 0.0
    reported_down: bool = False
    window_reads: int = 0
    rate: float = 0.0
    checked_at: float = float("-inf")


@dataclass(slots=True)
class _Portal:
    # epc -> (arrived at, last read), arrival reset after forget_s without reads
    tags: dict[str, tuple[float, float]] = field(default_factory=dict)
    # epc -> antenna -> last time that antenna read it (only for tags present)
    seen_by: dict[str, dict[int, float]] = field(default_factory=dict)


class AntennaHealth:
    """Per-antenna health and read rates of the portals' antennas."""

    def __init__(self, portals: Sequence[PortalSpec], params: AntennaParams, now: float) -> None:
        self.params = params
        self._antennas: dict[tuple[DeviceId, int], _Antenna] = {}
        self._portals: dict[str, _Portal] = {}
        self._portal_of: dict[tuple[DeviceId, int], str] = {}
        for spec in portals:
            self._portals[spec.portal_id] = _Portal()
            sides = (sorted(spec.outside_antennas), sorted(spec.inside_antennas))
            everyone = sorted(spec.outside_antennas | spec.inside_antennas)
            for side in sides:
                for antenna in side:
                    pool = side if len(side) > 1 else everyone
                    key = (spec.reader_id, antenna)
                    self._portal_of[key] = spec.portal_id
                    self._antennas[key] = _Antenna(
                        reader_id=spec.reader_id,
                        antenna=antenna,
                        portal_id=spec.portal_id,
                        peers=tuple(a for a in pool if a != antenna),
                        last_read=now,
                    )
        self._window_start = now

    # -- input ------------------------------------------------------------------------------

    def feed(self, reads: Iterable[TagRead], now: float) -> list[AntennaEvent]:
        """Account reads (received at ``now``); returns :class:`AntennaUp` for antennas that
        were down and read again."""
        events: list[AntennaEvent] = []
        forget = self.params.forget_s
        for read in reads:
            key = (read.reader_id, read.antenna)
            state = self._antennas.get(key)
            if state is None:
                continue  # an antenna no portal uses
            state.last_read = now
            state.window_reads += 1
            if state.down is not None:
                events.append(self._up(state, now))
            portal = self._portals[state.portal_id]
            epc = read.epc
            known = portal.tags.get(epc)
            if known is None or now - known[1] > forget:
                portal.tags[epc] = (now, now)
                portal.seen_by[epc] = {read.antenna: now}
            else:
                portal.tags[epc] = (known[0], now)
                portal.seen_by[epc][read.antenna] = now
        return events

    def reported(
        self, reader_id: DeviceId, antenna: int, connected: bool, now: float
    ) -> list[AntennaEvent]:
        """The reader's AntennaEvent: disconnected is down at once; connected is up."""
        state = self._antennas.get((reader_id, antenna))
        if state is None:
            return []
        if connected:
            state.reported_down = False
            if state.down is not None and state.down.reported:
                return [self._up(state, now)]
            return []
        state.reported_down = True
        if state.down is not None:
            return []  # already down (silent): one alert per outage
        state.down = AntennaDown(
            reader_id, antenna, state.portal_id, now - state.last_read, 0, reported=True
        )
        state.down_at = now
        return [state.down]

    def restore_down(self, reader_id: DeviceId, antenna: int, now: float) -> None:
        """An antenna a previous run left down (its alert is still open): down, without an
        event, so that its next read is an :class:`AntennaUp` that clears the alert."""
        state = self._antennas.get((reader_id, antenna))
        if state is not None and state.down is None:
            state.down = AntennaDown(reader_id, antenna, state.portal_id, 0.0, 0)
            state.down_at = now

    def advance(self, now: float) -> list[AntennaEvent]:
        """Find antennas silent long enough with evidence; roll the rate window; forget tags."""
        if now - self._window_start >= self.params.rate_window_s:
            span = now - self._window_start
            for state in self._antennas.values():
                state.rate = state.window_reads / span
                state.window_reads = 0
            self._window_start = now
        forget = self.params.forget_s
        for portal in self._portals.values():
            gone = [epc for epc, (_, last) in portal.tags.items() if now - last > forget]
            for epc in gone:
                del portal.tags[epc]
                del portal.seen_by[epc]
        events: list[AntennaEvent] = []
        silence = self.params.silence_s
        for state in self._antennas.values():
            if state.down is not None or now - state.last_read < silence:
                continue
            if now - state.checked_at < _CHECK_EVERY_S:
                continue  # counting arrivals walks the portal's tags: once a second is enough
            state.checked_at = now
            evidence = self._arrivals_read_by_peers(state)
            if evidence >= self.params.min_peer_tags:
                state.down = AntennaDown(
                    state.reader_id,
                    state.antenna,
                    state.portal_id,
                    now - state.last_read,
                    evidence,
                )
                state.down_at = now
                events.append(state.down)
        return events

    # -- output -----------------------------------------------------------------------------

    def rates(self) -> Mapping[tuple[DeviceId, int], float]:
        """Reads per second of each antenna over the last completed window."""
        return {key: state.rate for key, state in self._antennas.items()}

    def down(self) -> Mapping[tuple[DeviceId, int], AntennaDown]:
        """Antennas down now."""
        return {key: s.down for key, s in self._antennas.items() if s.down is not None}

    def seconds_since_read(self, now: float) -> Mapping[tuple[DeviceId, int], float]:
        return {key: max(0.0, now - s.last_read) for key, s in self._antennas.items()}

    # -- internals --------------------------------------------------------------------------

    def _arrivals_read_by_peers(self, state: _Antenna) -> int:
        portal = self._portals[state.portal_id]
        since = state.last_read
        count = 0
        for epc, (arrived, _) in portal.tags.items():
            if arrived <= since:
                continue
            seen = portal.seen_by[epc]
            if any(seen.get(peer, -1.0) > since for peer in state.peers):
                count += 1
        return count

    def _up(self, state: _Antenna, now: float) -> AntennaUp:
        event = AntennaUp(state.reader_id, state.antenna, state.portal_id, now - state.down_at)
        state.down = None
        state.reported_down = False
        return event
