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

Parts: :class:`EpcisRelay` holds the cursor and the delivery rules above (what each answer
means, the halving); it pages the outbox with the shared
:class:`~gateway.adapters.sink.OutboxPager`. Three collaborators do the rest:
:class:`~gateway.adapters.epcis_pages.PageBuilder` maps and encodes the pages and keeps the
pending closures; :class:`~gateway.adapters.epcis_capture.CaptureClient` speaks HTTP (headers,
token, TLS, timeouts) and retries until the repository gives an answer, owning the outage lines
and ``connected``; :class:`_Hold` raises and clears the hold's alert and paces its retries.

Defaults: ``batch_size=500`` movements, ``request_timeout_s=30``, ``poll_interval_s=1``,
``hold_retry_max_s=60``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, ParamSpec, Protocol, TypeVar

from dockwatch_core.errors import StoreError
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.epcis_capture import Answer, CaptureClient, problems
from gateway.adapters.epcis_pages import Event, Item, Page, PageBuilder, last_seq
from gateway.adapters.outage import Outage, OutageWords
from gateway.adapters.sink import OutboxPager
from gateway.adapters.tls import client_context, warn_cleartext
from gateway.domain.epcis import EpcisSite, ReceiptClosed
from gateway.domain.model import Alert, AlertKind, Severity
from gateway.domain.views import RecordedView

if TYPE_CHECKING:
    import aiohttp

    from gateway.config import EpcisSinkConfig

log = logging.getLogger(__name__)

SINK: Final = "epcis"
"""The name of this sink's cursor in the store."""
_AUTH_STATUSES: Final = frozenset({401, 403})

P = ParamSpec("P")
T = TypeVar("T")


class MovementSource(Protocol):
    """What the relay needs from the edge store (``edge_store.EdgeStore`` provides it)."""

    def movements_since(self, after_seq: int, limit: int) -> Sequence[RecordedView]: ...

    def get_cursor(self, sink: str) -> int: ...

    def advance_cursor(self, sink: str, seq: int, *, now: datetime) -> None: ...

    def movement_by_id(self, movement_id: str) -> RecordedView | None: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _subject(alert_id: str) -> str:
    """``epcis:<movement id>`` (or ``epcis:authorization``) for ``epcis_rejected:<...>``."""
    return f"{SINK}:{alert_id.removeprefix('epcis_rejected:')}"


def _event_ids(events: Sequence[Event]) -> list[str]:
    return [str(e.get("eventID")) for e in events]


def _without_duplicates(items: list[Item], text: str) -> list[Item] | None:
    """``items`` without the events a 409 names; None when it names none of ours."""
    _, named = problems(text)
    duplicates = set(named)
    ours = {event_id for item in items for event_id in _event_ids(item.events)}
    if not duplicates & ours:
        return None
    return [
        Item(
            i.seq,
            i.movement_id,
            tuple(e for e in i.events if e.get("eventID") not in duplicates),
        )
        for i in items
    ]


class _Hold:
    """A refused movement (or a refused token) holding delivery: ONE alert and one error line
    when it starts, a wait before each retry of the same document, and the alert cleared when
    the repository takes a delivery again (see the module docstring)."""

    def __init__(
        self,
        capture_url: str,
        *,
        retry_max_s: float,
        on_alert: Callable[[Alert], Awaitable[None]] | None,
        counters: collections.Counter[str],
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
    ) -> None:
        self._url = capture_url
        self._backoff = Backoff(BackoffPolicy(initial_s=min(1.0, retry_max_s), max_s=retry_max_s))
        self._on_alert = on_alert
        self._counters = counters
        self._clock = clock
        self._monotonic = monotonic
        self._held: str | None = None  # alert id of the movement being held

    @property
    def active(self) -> bool:
        return self._held is not None

    async def hold(self, items: list[Item], answer: Answer, *, acked_seq: int) -> None:
        """The repository refuses ``items`` (one movement, or all for 401/403): alert once,
        then wait before the same document is tried again."""
        item = items[0]
        title, details = problems(answer.text)
        reason = f"HTTP {answer.status}: {title}" + (f" ({details[0]})" if details else "")
        alert_id = (
            f"epcis_rejected:{item.movement_id}"
            if answer.status not in _AUTH_STATUSES
            else "epcis_rejected:authorization"
        )
        if self._held != alert_id:
            self._held = alert_id
            self._counters["holds"] += 1
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
                        "acked_seq": acked_seq,
                    },
                )
            )
        await asyncio.sleep(self._backoff.next_delay(self._monotonic()))

    async def release(self) -> None:
        """A delivery went through: end the hold, if there is one, and clear its alert."""
        if self._held is None:
            return
        alert_id, self._held = self._held, None
        self._backoff.reset()
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

    async def _alert(self, alert: Alert) -> None:
        if self._on_alert is not None:
            await self._on_alert(alert)


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
        self._url = capture_url
        self._clock = clock
        self._monotonic = monotonic
        counters: collections.Counter[str] = collections.Counter()
        self.counters: dict[str, int] = counters
        self._capture = CaptureClient(
            capture_url,
            token=token,
            ssl_context=ssl_context,
            request_timeout_s=request_timeout_s,
            backoff=backoff if backoff is not None else Backoff(),
            monotonic=monotonic,
            counters=counters,
            log=log,
        )
        self._hold = _Hold(
            capture_url,
            retry_max_s=hold_retry_max_s,
            on_alert=on_alert,
            counters=counters,
            clock=clock,
            monotonic=monotonic,
        )
        self._pages = PageBuilder(source, site=site, batch_size=batch_size, clock=clock)
        self._pager = OutboxPager(
            self._read_page,
            last_seq,
            poll_interval_s=poll_interval_s,
            when_idle=self._pages.closing,
        )
        self._acked = asyncio.Condition()
        self._acked_seq = 0
        self._loaded = False

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
        return self._capture.connected

    @property
    def acked_seq(self) -> int:
        """Every movement up to this seq is in the repository."""
        return self._acked_seq

    @property
    def held(self) -> bool:
        """A movement the repository refuses holds delivery (see the module docstring)."""
        return self._hold.active

    def notify(self) -> None:
        """New movements were recorded: look at the store now. Call from the event loop."""
        self._pager.notify()

    def receipt_closed(self, closed: ReceiptClosed, *, after_seq: int) -> None:
        """Send ``closed``'s event once every movement up to ``after_seq`` is delivered."""
        self._pages.receipt_closed(closed, after_seq=after_seq)
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
        async with self._capture.session() as session:
            await self._capture.probe(session)
            pages: asyncio.Queue[Page] = asyncio.Queue(maxsize=2)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._pager.run(self._acked_seq, pages.put))
                await self._send(session, pages)

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

    async def _read_page(self, after: int) -> Page:
        return await self._store(self._pages.page_after, after)

    async def _send(self, session: aiohttp.ClientSession, pages: asyncio.Queue[Page]) -> None:
        while True:
            page = await pages.get()
            await self._deliver(session, page)

    async def _deliver(self, session: aiohttp.ClientSession, page: Page) -> None:
        """Deliver every item of ``page``, in order; return once all are in the repository."""
        parts: list[tuple[list[Item], bytes | None]] = [(list(page.items), page.body)]
        while parts:
            items, body = parts.pop()
            events = [e for item in items for e in item.events]
            if not events:
                await self._delivered(items)
                continue
            if body is None:
                body = await self._pages.encode(events)
            answer = await self._capture.post(session, body, len(events))
            status = answer.status
            if 200 <= status < 300:
                self.counters["captured_events"] += len(events)
                await self._delivered(items)
                continue
            if status == 409:
                remaining = _without_duplicates(items, answer.text)
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
                await self._hold.hold(items, answer, acked_seq=self._acked_seq)
                parts.append((items, body))
                continue
            # Several movements and an answer that does not say which one: halve.
            middle = len(items) // 2
            parts.append((items[middle:], None))
            parts.append((items[:middle], None))

    async def _delivered(self, items: Sequence[Item]) -> None:
        await self._hold.release()
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
