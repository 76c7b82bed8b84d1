"""EPCIS sink: the store's movements, as EPCIS 2.0 events, POSTed to a repository's capture URL.

Theory of operation
-------------------
One :class:`EpcisRelay` runs for the life of the process. Its durable position is the store's
``epcis`` cursor: every movement up to it is in the repository. A reader task pages
``movements_since(cursor)`` in a worker thread, maps each movement to its events
(:func:`gateway.domain.epcis.movement_events`: deterministic, so a re-sent movement carries the
same ``eventID``) and encodes one EPCISDocument per page; a bounded queue (two pages) lets the
next page be prepared while this one is in flight. The sender POSTs one document at a time, in
seq order, and reads the answer:

- **2xx**: captured; the cursor moves to the page's last seq.
- **409** (an ``eventID`` already captured, e.g. a page re-sent after its acknowledgement was
  lost): delivered. A repository that captures documents atomically refuses the whole document,
  so what was new in it is sent again: without the ids the 409 names (the capture simulator
  lists them in its problem details), or, when it names none, by halves, down to single
  movements, whose 409 then means "already there".
- **other 4xx**: the repository refuses something. A document of several movements is split in
  halves until the refused movement is alone; the movements before it are delivered, and that
  one is *held*: ONE alert (``sync_behind`` kind, id ``epcis_rejected:<movement_id>``, critical,
  naming the movement, its seq and the repository's reason) and one error line, then the same
  document is retried with backoff (capped at ``hold_retry_max_s``) until the repository takes
  it (the alert is cleared then). Nothing after it is sent meanwhile: skipping would break the
  seq order and hide the problem. 401/403 (a wrong token) hold the whole sink the same way.
  413 (too large) splits the document.
- **5xx, 429, timeouts, refused connections**: back off (capped, jittered exponential,
  :mod:`gateway.adapters.backoff`) and retry the same document; ONE error line when the
  repository becomes unreachable, one when it is back.

Closed expected receipts (:meth:`EpcisRelay.receipt_closed`) are sent once the cursor covers
every movement recorded before the closure (their ObjectEvent follows the receipts' own events).
They are kept in memory only: a closure still pending when the process stops is not sent
(the movements' events are, from the store).

Lag: ``acked_seq`` is read by the application for ``dockwatch_sink_lag*`` and ``sync_behind``,
like the other sinks. Store calls and the mapping run in worker threads.

Defaults: ``batch_size=500`` movements, ``request_timeout_s=30``, ``poll_interval_s=1``,
``hold_retry_max_s=60``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, ParamSpec, Protocol, TypeVar

import aiohttp

from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.outage import Outage, OutageWords
from gateway.adapters.sink import OutboxPager
from gateway.adapters.tls import client_context, warn_cleartext
from gateway.domain.epcis import (
    EpcisSite,
    ReceiptClosed,
    document_bytes,
    movement_events,
    receipt_closed_event,
)
from gateway.domain.model import Alert, AlertKind, RecordedMovement, Severity
from gateway.errors import StoreError

if TYPE_CHECKING:
    from gateway.config import EpcisSinkConfig

log = logging.getLogger(__name__)

SINK: Final = "epcis"
"""The name of this sink's cursor in the store."""
_HEADERS: Final = {
    "Content-Type": "application/ld+json",
    "GS1-EPCIS-Version": "2.0.0",
    "GS1-CBV-Version": "2.0.0",
}
_RETRY_STATUSES: Final = frozenset({408, 425, 429})
_AUTH_STATUSES: Final = frozenset({401, 403})

Event = dict[str, object]
P = ParamSpec("P")
T = TypeVar("T")


class MovementSource(Protocol):
    """What the relay needs from the edge store (``edge_store.EdgeStore`` provides it)."""

    def movements_since(self, after_seq: int, limit: int) -> Sequence[RecordedMovement]: ...

    def get_cursor(self, sink: str) -> int: ...

    def advance_cursor(self, sink: str, seq: int, *, now: datetime) -> None: ...

    def movement_by_id(self, movement_id: str) -> RecordedMovement | None: ...


@dataclass(frozen=True, slots=True)
class _Item:
    """The events of one movement (``seq``), or of a receipt closure (``seq`` None)."""

    seq: int | None
    movement_id: str
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class _Page:
    items: tuple[_Item, ...]
    body: bytes | None = None
    """The encoded document of every item, when prepared ahead."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    text: str


def _last_seq(page: _Page) -> int | None:
    return page.items[-1].seq if page.items else None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _subject(alert_id: str) -> str:
    """``epcis:<movement id>`` (or ``epcis:authorization``) for ``epcis_rejected:<...>``."""
    return f"{SINK}:{alert_id.removeprefix('epcis_rejected:')}"


def _event_ids(events: Sequence[Event]) -> list[str]:
    return [str(e.get("eventID")) for e in events]


def _problems(text: str) -> tuple[str, list[str]]:
    """(title, details) of an RFC 7807 problem document, or the raw text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:300], []
    if not isinstance(body, dict):
        return text.strip()[:300], []
    detail = body.get("detail")
    details = [str(d) for d in detail] if isinstance(detail, list) else []
    if isinstance(detail, str):
        details = [detail]
    return str(body.get("title") or body.get("type") or ""), details


class EpcisRelay:
    """POSTs the store's movements as EPCIS documents in seq order; the cursor moves on 2xx/409."""

    def __init__(
        self,
        source: MovementSource,
        *,
        site: EpcisSite,
        capture_url: str,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        batch_size: int = 500,
        request_timeout_s: float = 30.0,
        poll_interval_s: float = 1.0,
        hold_retry_max_s: float = 60.0,
        backoff: Backoff | None = None,
        on_alert: Callable[[Alert], Awaitable[None]] | None = None,
        cursor_name: str = SINK,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not capture_url.startswith(("http://", "https://")):
            raise ValueError(f"capture_url must be http:// or https://, got {capture_url!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if min(request_timeout_s, poll_interval_s, hold_retry_max_s) <= 0:
            raise ValueError("timeouts, poll_interval_s and hold_retry_max_s must be > 0")
        self._source = source
        self._cursor = cursor_name
        self._site = site
        self._url = capture_url
        self._headers = dict(_HEADERS)
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ssl = ssl_context
        self._batch_size = batch_size
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._hold_backoff = Backoff(
            BackoffPolicy(initial_s=min(1.0, hold_retry_max_s), max_s=hold_retry_max_s)
        )
        self._backoff = backoff if backoff is not None else Backoff()
        self._outage = Outage(
            f"EPCIS repository {capture_url}",
            log=log,
            backoff=self._backoff,
            clock=monotonic,
            words=OutageWords(
                down="{link} unreachable or failing: {reason}; retrying with backoff",
                back="{link} answers again after {seconds:.1f}s",
            ),
        )
        self._on_alert = on_alert
        self._clock = clock
        self._monotonic = monotonic
        self._pager = OutboxPager(
            self._read_page, _last_seq, poll_interval_s=poll_interval_s, when_idle=self._closing
        )
        self._acked = asyncio.Condition()
        self._acked_seq = 0
        self._loaded = False
        self._connected = False
        self._held: str | None = None  # alert id of the movement being held
        self._closures: collections.deque[tuple[int, ReceiptClosed]] = collections.deque()
        self.counters: dict[str, int] = collections.Counter()

    @classmethod
    def from_config(
        cls,
        config: EpcisSinkConfig,
        source: MovementSource,
        *,
        site: EpcisSite,
        on_alert: Callable[[Alert], Awaitable[None]] | None = None,
    ) -> EpcisRelay:
        """A relay for the ``sinks.epcis`` config slice (reads its TLS files and token now)."""
        if config.token is not None and not config.use_tls:
            warn_cleartext("sinks.epcis", config.host, "the EPCIS repository token")
        context = None
        tls = config.tls
        if tls is not None or config.capture_url.startswith("https://"):
            context = client_context(
                ca_file=None if tls is None else tls.ca_file,
                cert_file=None if tls is None else tls.cert_file,
                key_file=None if tls is None else tls.key_file,
                check_hostname=not (tls is not None and tls.insecure),
                key="sinks.epcis.tls",
            )
            if tls is not None and tls.insecure:
                context.verify_mode = ssl.CERT_NONE
        return cls(
            source,
            site=site,
            capture_url=config.capture_url,
            token=None if config.token is None else config.token.reveal(),
            ssl_context=context,
            batch_size=config.batch_max,
            request_timeout_s=config.request_timeout_s,
            backoff=Backoff(
                BackoffPolicy(initial_s=config.reconnect.initial_s, max_s=config.reconnect.max_s)
            ),
            on_alert=on_alert,
        )

    def __repr__(self) -> str:
        return f"EpcisRelay(capture_url={self._url!r})"

    # --- state others read -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._cursor

    @property
    def connected(self) -> bool:
        """The repository answered the last request (2xx or 4xx)."""
        return self._connected

    @property
    def acked_seq(self) -> int:
        """Every movement up to this seq is in the repository."""
        return self._acked_seq

    @property
    def held(self) -> bool:
        """A movement the repository refuses holds delivery (see the module docstring)."""
        return self._held is not None

    def notify(self) -> None:
        """New movements were recorded: look at the store now. Call from the event loop."""
        self._pager.notify()

    def receipt_closed(self, closed: ReceiptClosed, *, after_seq: int) -> None:
        """Send ``closed``'s event once every movement up to ``after_seq`` is delivered."""
        self._closures.append((after_seq, closed))
        self._pager.notify()

    async def wait_acked(self, seq: int) -> None:
        """Return once every movement up to ``seq`` is in the repository."""
        async with self._acked:
            await self._acked.wait_for(lambda: self._acked_seq >= seq)

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver for ever (until cancelled)."""
        if not self._loaded:
            cursor = await self._store(self._source.get_cursor, self._cursor)
            await self._note_acked(cursor)
            self._loaded = True
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True, limit=2)
        async with aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers
        ) as session:
            await self._probe(session)
            pages: asyncio.Queue[_Page] = asyncio.Queue(maxsize=2)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._pager.run(self._acked_seq, pages.put))
                await self._send(session, pages)

    async def _probe(self, session: aiohttp.ClientSession) -> None:
        """``OPTIONS capture_url`` (EPCIS 2.0's discovery request) once at start, so that
        ``connected`` and the log tell at once whether the repository answers, before any
        movement needs it; deliveries retry on their own."""
        try:
            async with session.options(self._url) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._down(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        if status < 500:
            self._up()
            log.info("EPCIS repository %s answers (OPTIONS: HTTP %d)", self._url, status)
        else:
            self._down(f"HTTP {status}")

    async def _store(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call in a worker thread, retried with backoff while the store fails."""
        outage = Outage(
            "epcis relay: the edge store",
            log=log,
            backoff=Backoff(BackoffPolicy(initial_s=0.2, max_s=10.0)),
            clock=self._monotonic,
            words=OutageWords(
                down="{link} failed: {reason}; retrying",
                back="{link} answers again after {seconds:.1f}s",
                down_level=logging.WARNING,
            ),
        )
        while True:
            try:
                result = await asyncio.to_thread(fn, *args, **kwargs)
            except StoreError as exc:
                outage.failed(str(exc))
                await outage.pause()
                continue
            outage.recovered()
            return result

    async def _read_page(self, after: int) -> _Page:
        return await self._store(self._page, after)

    async def _closing(self, delivered_through: int) -> _Page | None:
        """Once the outbox is drained: the closure events now due, as a page of their own."""
        closures = self._due_closures(delivered_through)
        return await asyncio.to_thread(self._closure_page, closures) if closures else None

    def _page(self, after: int) -> _Page:
        """The next page after ``after``, mapped and encoded (runs in a worker thread)."""
        movements = self._source.movements_since(after, self._batch_size)
        items = tuple(
            _Item(r.seq, r.movement.movement_id, tuple(movement_events(r, self._site)))
            for r in movements
        )
        if not items:
            return _Page(())
        events = [e for item in items for e in item.events]
        return _Page(items, document_bytes(events, creation_date=self._clock()))

    def _due_closures(self, delivered_through: int) -> list[ReceiptClosed]:
        due = []
        while self._closures and self._closures[0][0] <= delivered_through:
            due.append(self._closures.popleft()[1])
        return due

    def _closure_page(self, closures: Sequence[ReceiptClosed]) -> _Page:
        items = []
        for closed in closures:
            epcs: list[str] = []
            for movement_id in closed.movement_ids:
                recorded = self._source.movement_by_id(movement_id)
                if recorded is not None:
                    m = recorded.movement
                    epcs.extend(m.epcs)
                    if m.container is not None:
                        epcs.append(m.container)
            event = receipt_closed_event(closed, self._site, received_epcs=epcs)
            items.append(_Item(None, f"receipt {closed.receipt_id}", (event,)))
        return _Page(tuple(items))

    async def _send(self, session: aiohttp.ClientSession, pages: asyncio.Queue[_Page]) -> None:
        while True:
            page = await pages.get()
            await self._deliver(session, page)

    async def _deliver(self, session: aiohttp.ClientSession, page: _Page) -> None:
        """Deliver every item of ``page``, in order; return once all are in the repository."""
        parts: list[tuple[list[_Item], bytes | None]] = [(list(page.items), page.body)]
        while parts:
            items, body = parts.pop()
            events = [e for item in items for e in item.events]
            if not events:
                await self._delivered(items)
                continue
            if body is None:
                body = await asyncio.to_thread(document_bytes, events, creation_date=self._clock())
            answer = await self._post_until_answered(session, body, len(events))
            status = answer.status
            if 200 <= status < 300:
                self.counters["captured_events"] += len(events)
                await self._delivered(items)
                continue
            if status == 409:
                remaining = self._without_duplicates(items, answer.text)
                if remaining is not None:
                    self.counters["duplicate_events"] += len(events) - sum(
                        len(i.events) for i in remaining
                    )
                    if not any(i.events for i in remaining):
                        await self._delivered(items)
                    else:
                        parts.append((remaining, None))
                    continue
                if len(items) == 1:  # the repository has it: that is delivery
                    self.counters["duplicate_events"] += len(events)
                    await self._delivered(items)
                    continue
            elif status in _AUTH_STATUSES or len(items) == 1:
                await self._hold(items, answer)
                parts.append((items, body))
                continue
            # Several movements and an answer that does not say which one: halve.
            middle = len(items) // 2
            parts.append((items[middle:], None))
            parts.append((items[:middle], None))

    @staticmethod
    def _without_duplicates(items: list[_Item], text: str) -> list[_Item] | None:
        """``items`` without the events a 409 names; None when it names none of ours."""
        _, named = _problems(text)
        duplicates = set(named)
        ours = {event_id for item in items for event_id in _event_ids(item.events)}
        if not duplicates & ours:
            return None
        return [
            _Item(
                i.seq,
                i.movement_id,
                tuple(e for e in i.events if e.get("eventID") not in duplicates),
            )
            for i in items
        ]

    async def _post_until_answered(
        self, session: aiohttp.ClientSession, body: bytes, count: int
    ) -> _Answer:
        """POST until the repository gives an answer about the document (2xx or 4xx)."""
        while True:
            try:
                async with session.post(self._url, data=body) as response:
                    text = (await response.read()).decode("utf-8", errors="replace")
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._down(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            else:
                if status < 500 and status not in _RETRY_STATUSES:
                    self._up()
                    return _Answer(status, text)
                self._down(f"HTTP {status}: {_problems(text)[0]}")
            self.counters["retries"] += 1
            log.debug("epcis %s: %d event(s) wait for the next attempt", self._url, count)
            await self._outage.pause()

    def _up(self) -> None:
        self._connected = True
        self._outage.recovered()

    def _down(self, reason: str) -> None:
        self._connected = False
        self._outage.failed(reason)

    async def _hold(self, items: list[_Item], answer: _Answer) -> None:
        """The repository refuses ``items`` (one movement, or all for 401/403): alert once,
        then wait before the same document is tried again."""
        item = items[0]
        title, details = _problems(answer.text)
        reason = f"HTTP {answer.status}: {title}" + (f" ({details[0]})" if details else "")
        alert_id = (
            f"epcis_rejected:{item.movement_id}"
            if answer.status not in _AUTH_STATUSES
            else "epcis_rejected:authorization"
        )
        if self._held != alert_id:
            self._held = alert_id
            self.counters["holds"] += 1
            what = (
                f"movement seq {item.seq} ({item.movement_id})"
                if item.seq is not None and answer.status not in _AUTH_STATUSES
                else item.movement_id
                if answer.status not in _AUTH_STATUSES
                else "every movement"
            )
            log.error(
                "EPCIS repository %s refuses %s: %s; delivery is held there (nothing after it "
                "is sent, nothing is skipped) and retried with backoff",
                self._url,
                what,
                reason,
            )
            await self._alert(
                Alert(
                    alert_id=alert_id,
                    kind=AlertKind.SYNC_BEHIND,
                    severity=Severity.CRITICAL,
                    # Not the bare sink name: that is the lag alert's subject, and both would
                    # share one retained MQTT topic (active_alerts/<kind>/<subject>).
                    subject=_subject(alert_id),
                    message=f"EPCIS repository refuses {what}: {reason}; delivery held",
                    raised_at=self._clock(),
                    details={
                        "sink": SINK,
                        "seq": item.seq,
                        "movement_id": item.movement_id,
                        "status": answer.status,
                        "problems": details[:10],
                        "acked_seq": self._acked_seq,
                    },
                )
            )
        await asyncio.sleep(self._hold_backoff.next_delay(self._monotonic()))

    async def _alert(self, alert: Alert) -> None:
        if self._on_alert is not None:
            await self._on_alert(alert)

    async def _delivered(self, items: Sequence[_Item]) -> None:
        if self._held is not None:
            alert_id, self._held = self._held, None
            self._hold_backoff.reset()
            log.info("EPCIS repository %s takes deliveries again", self._url)
            await self._alert(
                Alert(
                    alert_id=alert_id,
                    kind=AlertKind.SYNC_BEHIND,
                    severity=Severity.INFO,
                    subject=_subject(alert_id),
                    message="EPCIS repository accepted the held movement; delivery resumed",
                    raised_at=self._clock(),
                    active=False,
                    details={"sink": SINK},
                )
            )
        seqs = [item.seq for item in items if item.seq is not None]
        if not seqs:
            return
        last = max(seqs)
        self.counters["delivered_movements"] += len(seqs)
        await self._store(self._source.advance_cursor, self._cursor, last, now=self._clock())
        await self._note_acked(last)

    async def _note_acked(self, seq: int) -> None:
        async with self._acked:
            if seq > self._acked_seq:
                self._acked_seq = seq
                self._acked.notify_all()
