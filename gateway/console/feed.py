"""What the operator console shows live: a bounded memory of recent events and a fan-out to
every open page.

Theory of operation
-------------------
The gateway tells the feed what it tells MQTT, at the same places and in the same order:
movements recorded with their stock levels (after the store committed them), alerts raised and
cleared, device statuses; and, for the shelf page, every weight sample with what the shelf
engine made of it. The feed keeps a bounded window of each (``movements_kept`` movements,
``alerts_kept`` alerts, ``samples_kept`` samples per shelf, an hour of movements-per-minute
buckets) so that a page opened now starts from recent history, and pushes each event as a small
JSON-ready dict to every subscriber.

Subscribers are pages holding a Server-Sent Events stream. Each has a bounded queue
(``queue_max``); a page that does not keep up (a laptop asleep on its stream) is dropped rather
than slowing the gateway or growing memory: its queue gets one last ``reload`` event and the
browser reconnects and starts from the window again. At most ``subscribers_max`` streams are
open; one more is refused (the console answers 503).

Nothing here does I/O or reads a clock: times come with the events (``utcnow`` only dates the
movements-per-minute buckets, and is injected).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.domain.epc import decode_epc
from gateway.domain.model import Movement, TagRead, WeightSample
from gateway.domain.views import AlertView, DeviceStatusView, RecordedView, StockView

__all__ = ["ConsoleFeed", "Event", "FeedFull", "ShelfTrace", "alert_dict", "movement_dict"]

Event = tuple[str, Mapping[str, object]]
"""(kind, data): kind is ``movement``, ``stock``, ``alert``, ``device``, ``sample`` or
``reload``."""

MINUTES_KEPT = 60


class FeedFull(Exception):
    """``subscribers_max`` streams are open already."""


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def movement_dict(recorded: RecordedView) -> dict[str, object]:
    m = recorded.movement
    return {
        "seq": recorded.seq,
        "movement_id": m.movement_id,
        "kind": str(m.kind),
        "sku": m.sku,
        "quantity": m.quantity,
        "from_location": m.from_location,
        "to_location": m.to_location,
        "source_type": str(m.source_type),
        "source_id": m.source_id,
        "observed_at": _iso(m.observed_at),
        "confidence": round(m.confidence, 4),
        "cases": len(m.epcs),
        "epcs": list(m.epcs),
        "reason": None if m.reason is None else str(m.reason),
    }


def alert_dict(alert: AlertView, *, acknowledged: bool = False) -> dict[str, object]:
    return {
        "alert_id": alert.alert_id,
        "kind": str(alert.kind),
        "severity": str(alert.severity),
        "subject": alert.subject,
        "message": alert.message,
        "raised_at": _iso(alert.raised_at),
        "active": alert.active,
        "acknowledged": acknowledged,
    }


def device_dict(status: DeviceStatusView) -> dict[str, object]:
    return {
        "device_id": status.device_id,
        "device_type": status.device_type,
        "state": str(status.state),
        "since": _iso(status.since),
        "detail": status.detail,
    }


def stock_dict(level: StockView) -> dict[str, object]:
    return {
        "location": level.location,
        "sku": level.sku,
        "on_hand": level.on_hand,
        "updated_at": _iso(level.updated_at),
        "last_seq": level.last_seq,
    }


@dataclass(slots=True)
class ShelfTrace:
    """A shelf's recent weight samples and the picks and restocks found in them."""

    samples: deque[tuple[float, float | None, bool | None]]
    """(the sample's time, grams or None for garbage, the transmitter's stable bit)."""
    marks: deque[tuple[float, str, int]] = field(default_factory=lambda: deque(maxlen=200))
    """(the time of the sample that settled it, movement kind, quantity)."""


class ConsoleFeed:
    """Recent events and the open streams (see the module docstring)."""

    def __init__(
        self,
        *,
        utcnow: Callable[[], datetime],
        movements_kept: int = 500,
        alerts_kept: int = 500,
        samples_kept: int = 1200,
        reads_kept: int = 20_000,
        subscribers_max: int = 32,
        queue_max: int = 1024,
    ) -> None:
        self._utcnow = utcnow
        self.movements: deque[dict[str, object]] = deque(maxlen=movements_kept)
        self.alerts: deque[dict[str, object]] = deque(maxlen=alerts_kept)
        """Alerts raised and cleared since start, newest last."""
        self.active: dict[str, dict[str, object]] = {}
        """Active alerts by id."""
        self.acknowledged: set[str] = set()
        self.devices: dict[str, dict[str, object]] = {}
        self.stock: dict[tuple[str, str], dict[str, object]] = {}
        """Stock levels changed since start (the page reads the store for the rest)."""
        self.shelves: dict[str, ShelfTrace] = {}
        self._samples_kept = samples_kept
        self._reads: deque[TagRead] = deque(maxlen=reads_kept)
        """The most recent tag reads of every reader (for the doors page's read strip)."""
        self._urns: dict[str, str] = {}
        self._per_minute: deque[tuple[datetime, int]] = deque(maxlen=MINUTES_KEPT)
        self._subscribers: dict[asyncio.Queue[Event], None] = {}
        self._subscribers_max = subscribers_max
        self._queue_max = queue_max

    # --- what the gateway tells ----------------------------------------------------------------

    def recorded(self, recorded: Sequence[RecordedView], levels: Sequence[StockView]) -> None:
        """Movements committed with the stock levels they changed (what MQTT publishes)."""
        if recorded:
            minute = self._utcnow().replace(second=0, microsecond=0)
            if self._per_minute and self._per_minute[-1][0] == minute:
                self._per_minute[-1] = (minute, self._per_minute[-1][1] + len(recorded))
            else:
                self._per_minute.append((minute, len(recorded)))
        for one in recorded:
            data = movement_dict(one)
            self.movements.append(data)
            self._publish(("movement", data))
        for level in levels:
            data = stock_dict(level)
            self.stock[level.location, level.sku] = data
            self._publish(("stock", data))

    def alert(self, alert: AlertView) -> None:
        if alert.active:
            self.acknowledged.discard(alert.alert_id)  # raised again: to be seen again
        data = alert_dict(alert)
        self.alerts.append(data)
        if alert.active:
            self.active[alert.alert_id] = data
        else:
            self.active.pop(alert.alert_id, None)
        self._publish(("alert", data))

    def device(self, status: DeviceStatusView) -> None:
        data = device_dict(status)
        self.devices[status.device_id] = data
        self._publish(("device", data))

    def sample(self, sample: WeightSample, movements: Sequence[Movement]) -> None:
        """A shelf's weight sample and the picks/restocks the engine found on receiving it."""
        trace = self.shelves.get(sample.shelf_id)
        if trace is None:
            trace = self.shelves[sample.shelf_id] = ShelfTrace(deque(maxlen=self._samples_kept))
        # A transmitter reading garbage sends NaN or 1e30: the trace shows a gap, and JSON (which
        # has no NaN) stays valid for the page.
        grams = sample.grams if math.isfinite(sample.grams) and abs(sample.grams) < 1e12 else None
        trace.samples.append((sample.at, grams, sample.stable))
        marks = [(sample.at, str(m.kind), m.quantity) for m in movements]
        trace.marks.extend(marks)
        self._publish(
            (
                "sample",
                {
                    "shelf_id": sample.shelf_id,
                    "at": sample.at,
                    "grams": grams,
                    "stable": sample.stable,
                    "marks": [{"kind": k, "quantity": q} for _, k, q in marks],
                },
            )
        )

    def reads(self, reads: Sequence[TagRead]) -> None:
        """Tag reads as they reach the portal engine (kept, not pushed: a page asks for the
        reads of one pass or tag)."""
        self._reads.extend(reads)

    # --- what the console asks -----------------------------------------------------------------

    def reads_of(self, epcs: Sequence[str]) -> list[dict[str, object]]:
        """The kept reads of these EPCs (pure-identity URNs or hex), oldest first."""
        wanted = set(epcs)
        out = []
        for read in list(self._reads):
            urn = self._urns.get(read.epc)
            if urn is None:
                if len(self._urns) > 4 * (self._reads.maxlen or 1):
                    self._urns.clear()  # bounded: tags come and go
                urn = self._urns[read.epc] = decode_epc(read.epc).uri
            if urn in wanted or read.epc in wanted:
                out.append(
                    {
                        "reader": read.reader_id,
                        "antenna": read.antenna,
                        "epc": urn,
                        "rssi": read.rssi_dbm,
                        "at_us": read.first_seen_us,
                        "count": read.seen_count,
                    }
                )
        return out

    def acknowledge(self, alert_id: str) -> bool:
        """Mark an active alert acknowledged (until it is raised again); False if not active."""
        data = self.active.get(alert_id)
        if data is None:
            return False
        self.acknowledged.add(alert_id)
        data = {**data, "acknowledged": True}
        self.active[alert_id] = data
        self._publish(("alert", data))
        return True

    def movements_per_minute(self) -> list[tuple[datetime, int]]:
        return list(self._per_minute)

    def this_minute(self) -> int:
        """Movements recorded in the current minute."""
        now = self._utcnow().replace(second=0, microsecond=0)
        if self._per_minute and self._per_minute[-1][0] == now:
            return self._per_minute[-1][1]
        return 0

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Event]]:
        """A queue of the events from now on, while the block runs (:class:`FeedFull` when
        ``subscribers_max`` are open)."""
        if len(self._subscribers) >= self._subscribers_max:
            raise FeedFull(f"{self._subscribers_max} console streams are open already")
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=self._queue_max)
        self._subscribers[queue] = None
        try:
            yield queue
        finally:
            self._subscribers.pop(queue, None)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _publish(self, event: Event) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() >= self._queue_max - 1:
                # Too slow: one last event tells the page to reload, and the stream ends.
                self._subscribers.pop(queue, None)
                queue.put_nowait(("reload", {"reason": "the page fell behind"}))
                continue
            queue.put_nowait(event)
