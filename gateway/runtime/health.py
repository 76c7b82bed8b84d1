"""Health and sync (docs/metrics.md): readiness, each sink's lag, and the ``sync_behind`` alert.

``/healthz`` is liveness (200 while the process serves); ``/readyz`` is 503 with the reason
while starting, stopping, restarting a crashed part, or while the edge store fails (a failing
``record`` until it succeeds again, or the store check below).

Every ``check_every_s`` (5 s) one task pings the store (``last_seq``) and compares each sink's
lag with its ``lag_alert_s``: the lag in seconds is the age of the oldest movement the sink has
not acknowledged. Record times are kept in memory (:class:`RecordTimes`: one ``(last seq,
monotonic time)`` entry per ``record`` call, dropped once every sink acknowledged it, at most
``RECORD_TIMES_MAX``); a movement older than that (recorded before this process started, or
dropped from the bounded memory) is dated by the store's ``recorded_at``. A sink behind by more
than ``lag_alert_s`` raises a ``sync_behind`` alert (stored, published, listed like every alert)
that clears once the lag is below half the threshold.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from dockwatch_core.errors import StoreError
from edge_store.records import RecordResult
from gateway.adapters.sink import Sink
from gateway.domain.model import Alert, AlertKind, Movement, Severity
from gateway.runtime.recorder import Recorder

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0
"""How often the store is pinged for readiness and each sink's lag compared with its threshold."""
STORE_CHECK_TIMEOUT_S = 10.0
"""A store ping unanswered for this long makes /readyz say the store is not answering."""
RECORD_TIMES_MAX = 65_536
"""Record times kept in memory for the sinks' lag in seconds (one per ``record`` call)."""


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RecordTimes:
    """When movements were committed, on the monotonic clock: the sinks' lag in seconds.

    One ``(last seq, time)`` entry per ``record`` call, oldest first; an entry dates every seq
    above the previous entry's. Entries every sink acknowledged are forgotten, and at most
    ``limit`` are kept (the oldest go). Seqs at or below ``floor`` (committed before this
    process started, or forgotten) are not in memory: :meth:`missing` names them, and the caller
    dates them from the store with :meth:`dated`; until then they count from ``started``.
    """

    def __init__(self, *, started: float, limit: int = RECORD_TIMES_MAX) -> None:
        self._started = started
        self._limit = limit
        self._entries: deque[tuple[int, float]] = deque()
        self._floor = 0
        self._from_store: dict[int, float] = {}

    def start_after(self, seq: int) -> None:
        """Seqs up to ``seq`` were committed before this process started."""
        self._floor = seq

    def recorded(self, last_seq: int, at: float) -> None:
        self._entries.append((last_seq, at))
        if len(self._entries) > self._limit:
            self._floor = self._entries.popleft()[0]

    def forget_through(self, seq: int) -> None:
        """Every sink acknowledged everything up to ``seq``."""
        while self._entries and self._entries[0][0] <= seq:
            self._floor = self._entries.popleft()[0]

    def _index(self, seq: int) -> int | None:
        if seq <= self._floor:
            return None
        i = bisect.bisect_left(self._entries, seq, key=lambda entry: entry[0])
        return i if i < len(self._entries) else None

    def missing(self, seq: int) -> bool:
        """Memory cannot date ``seq``: look it up in the store."""
        return self._index(seq) is None

    def dated(self, times: dict[int, float]) -> None:
        """Times of seqs memory misses, from the store (replaces the previous ones)."""
        self._from_store = times

    def at(self, seq: int, now: float) -> float:
        """When ``seq`` was committed (a seq above everything recorded here: ``now``)."""
        i = self._index(seq)
        if i is not None:
            return self._entries[i][1]
        return self._from_store.get(seq, self._started if seq <= self._floor else now)

    def stored_time(self, seq: int) -> float | None:
        return self._from_store.get(seq)


class Health:
    """Readiness, the sinks' lag and the ``sync_behind`` alerts (see the module docstring)."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        sinks: Sequence[Sink],
        lag_alert_s: Mapping[str, float],
        restarting: set[str],
        ready: asyncio.Event,
        utcnow: Callable[[], datetime],
        started: float,
        check_every_s: float = CHECK_EVERY_S,
        check_timeout_s: float = STORE_CHECK_TIMEOUT_S,
    ) -> None:
        if not check_every_s > 0:
            raise ValueError(f"check_every_s must be > 0, got {check_every_s}")
        self._recorder = recorder
        self.sinks = {sink.name: sink for sink in sinks}
        self._lag_alert_s = dict(lag_alert_s)
        self._restarting = restarting
        self._utcnow = utcnow
        self._check_every_s = check_every_s
        self._check_timeout_s = check_timeout_s
        self._cursors: dict[str, int] = {}
        self._ping: asyncio.Future[int] | None = None
        self.ready = ready
        self.stopping = False
        self.record_times = RecordTimes(started=started)
        self._serving: list[Callable[[bool], None]] = []

    def started_after(self, last_seq: int, cursors: Mapping[str, int]) -> None:
        """At start: the store's highest seq and the sinks' stored cursors."""
        self.record_times.start_after(last_seq)
        self._cursors = dict(cursors)

    def on_serving(self, tell: Callable[[bool], None]) -> None:
        """``tell(ready)`` after every check (the gRPC health service)."""
        self._serving.append(tell)

    async def committed(self, result: RecordResult[Movement]) -> None:
        """A ``record`` committed ``result``: date it for the sinks' lag."""
        if result.recorded and self.sinks:
            self.record_times.recorded(result.recorded[-1].seq, time.monotonic())

    # -- what the probes and the API read ---------------------------------------------------

    def not_ready(self) -> str | None:
        """None when the gateway is ready to do its job, else why not (one line, no secrets)."""
        if self.stopping:
            return "stopping"
        if not self.ready.is_set():
            return "starting"
        problems = self._recorder.problems
        if problems:
            return f"store unavailable: {next(iter(problems.values()))}"
        if self._restarting:
            return f"restarting after a crash: {', '.join(sorted(self._restarting))}"
        return None

    def connected(self) -> dict[str, bool]:
        return {name: sink.connected for name, sink in self.sinks.items()}

    def acked(self, sink: str) -> int:
        """The sink's acknowledged position: live from the sink, or its stored cursor while
        the sink has not read it yet (a sink starts at 0 until its first connection)."""
        acked = self._cursors.get(sink, 0)
        live = self.sinks.get(sink)
        return acked if live is None else max(acked, live.acked_seq)

    def sync_status(self) -> dict[str, int]:
        """``last_seq`` (the store's highest seq) and each sink's acknowledged seq, by name."""
        status = {"last_seq": self._recorder.last_seq}
        for name in self.sinks:
            status[name] = self.acked(name)
        return status

    def lag(self, sink: str, now: float) -> tuple[int, float, int]:
        """(movements not acknowledged, age in seconds of the oldest, its seq or 0)."""
        last = self._recorder.last_seq
        acked = self.acked(sink)
        if acked >= last:
            return 0, 0.0, 0
        oldest = acked + 1
        return last - acked, max(0.0, now - self.record_times.at(oldest, now)), oldest

    def cursors_seen(self, cursors: Mapping[str, int]) -> None:
        """The sinks' stored cursors, as the store last said."""
        self._cursors = dict(cursors)

    # -- the check ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._check_every_s)

    async def check(self) -> None:
        """Ping the store (readiness), date the sinks' backlogs, raise or clear sync alerts;
        then tell the serving listeners whether the gateway is ready."""
        try:
            await self._check_store_and_sync()
        finally:
            ready = self.not_ready() is None
            for tell in self._serving:
                tell(ready)

    def _forget_acknowledged(self) -> None:
        """Drop the record times every sink has acknowledged."""
        if self.sinks:
            self.record_times.forget_through(min(self.acked(sink) for sink in self.sinks))

    async def _date_from_store(self) -> None:
        """Look up in the store the record time of each sink's oldest unacknowledged movement
        that memory does not hold (recorded before this process started, or forgotten)."""
        worker = self._recorder.worker
        times = self.record_times
        found: dict[int, float] = {}
        for sink in self.sinks:
            acked = self.acked(sink)
            seq = acked + 1
            if acked >= self._recorder.last_seq or not times.missing(seq):
                continue
            known = times.stored_time(seq)
            if known is None:
                recorded = await worker.call(worker.store.recorded_at, seq)
                known = time.monotonic()
                if recorded is not None:  # None: not committed when we looked, so just now
                    known -= max(0.0, (self._utcnow() - recorded).total_seconds())
            found[seq] = known
        times.dated(found)

    async def _check_store_and_sync(self) -> None:
        recorder = self._recorder
        worker = recorder.worker
        problems = recorder.problems
        # One ping at a time: a store that hangs (rather than fails) keeps its ping, and the
        # checks that follow wait for that same one instead of queueing more behind it.
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(worker.call(worker.store.last_seq))
        try:
            async with asyncio.timeout(self._check_timeout_s):
                last = await asyncio.shield(self._ping)
                recorder.last_seq = max(recorder.last_seq, last)
                await self._date_from_store()
        except TimeoutError:
            if "check" not in problems:
                log.error(  # noqa: TRY400 - a timeout has no traceback worth printing
                    "edge store has not answered for %.0f s", self._check_timeout_s
                )
            problems["check"] = f"not answering within {self._check_timeout_s:g} s"
            return
        except StoreError as exc:
            if "check" not in problems:
                log.error("edge store check failed: %s", exc)  # noqa: TRY400 - one line says it
            problems["check"] = worker.reason(exc)
            return
        if problems.pop("check", None) is not None:
            log.info("edge store answers again")
        self._forget_acknowledged()
        now = time.monotonic()
        for sink, threshold_s in self._lag_alert_s.items():
            await self._sync_alert(sink, threshold_s, now)
        for alert_id in sorted(recorder.active):
            kind, _, sink = alert_id.partition(":")
            if kind == AlertKind.SYNC_BEHIND and sink not in self._lag_alert_s:
                # Raised by a run whose config watched this sink: nothing would ever clear it.
                await recorder.raise_alert(self._sync_behind(alert_id, sink, None, now))

    async def _sync_alert(self, sink: str, threshold_s: float, now: float) -> None:
        """Raise ``sync_behind`` when the lag exceeds the threshold; clear it below half."""
        alert_id = f"{AlertKind.SYNC_BEHIND}:{sink}"
        active = alert_id in self._recorder.active
        _, lag_s, _ = self.lag(sink, now)
        if (not active and lag_s > threshold_s) or (active and lag_s <= threshold_s / 2):
            await self._recorder.raise_alert(self._sync_behind(alert_id, sink, threshold_s, now))

    def _sync_behind(
        self, alert_id: str, sink: str, threshold_s: float | None, now: float
    ) -> Alert:
        """The sync_behind alert of ``sink``: raised when it is not active, else cleared."""
        lag, lag_s, oldest = self.lag(sink, now)
        raising = alert_id not in self._recorder.active
        if raising:
            message = (
                f"{sink} is behind: {lag} movement(s) not acknowledged, the oldest "
                f"(seq {oldest}) recorded {duration(lag_s)} ago (threshold {threshold_s:g} s)"
            )
        elif threshold_s is None:
            message = f"{sink} is no longer watched for lag"
        elif lag == 0:
            message = f"{sink} caught up"
        else:
            message = (
                f"{sink} is catching up: {lag} movement(s) not acknowledged, the oldest "
                f"recorded {duration(lag_s)} ago"
            )
        details: dict[str, object] = {
            "sink": sink,
            "lag_movements": lag,
            "lag_seconds": round(lag_s, 3),
            "oldest_unacknowledged_seq": oldest,
            "connected": self.connected().get(sink, False),
        }
        if threshold_s is not None:
            details["threshold_s"] = threshold_s
        return Alert(
            alert_id=alert_id,
            kind=AlertKind.SYNC_BEHIND,
            severity=Severity.WARNING if raising else Severity.INFO,
            subject=sink,
            message=message,
            raised_at=self._utcnow(),
            active=raising,
            details=details,
        )
