"""The recorder: every movement and alert goes through here to the edge store, then to the sinks.

Every movement is committed to the store (movement, stock level and outbox position in one
transaction) before any sink sees it; sinks read the outbox with their own cursors. The gateway's
own store calls run on ONE worker thread (:class:`StoreWorker`), so its writes keep their order
and the event loop never blocks on I/O (the sinks and the API read through the default executor).

A store that fails (disk full, PostgreSQL restarting) does not lose movements: :meth:`record`
keeps retrying the same batch with capped backoff while the engines wait, and a replay is
harmless because ``movement_id`` makes recording idempotent. The outage is logged once when it
starts and once when it ends (:class:`~gateway.adapters.outage.Outage`), and ``problems`` says
why meanwhile (``/readyz``).

The alert book: :meth:`raise_alert` stores an alert (raised or cleared) and tells the state
sinks and the console; ``active`` holds the ids of the alerts active now, so that clearing
what was never raised is nothing at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import ParamSpec, TypeVar

from dockwatch_core.errors import StoreError
from edge_store.engine import with_password
from edge_store.records import LocationRecord, RecordResult
from edge_store.repository import EdgeStore
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.outage import Outage, OutageWords
from gateway.adapters.sink import Sink, StateSink
from gateway.console.feed import ConsoleFeed
from gateway.domain.model import Alert, CatalogItem, Movement
from gateway.logs import redact
from gateway.runtime.counters import Counters

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

STORE_RETRY = BackoffPolicy(initial_s=0.2, max_s=10.0)
"""Backoff of a store call retried until the store takes it."""


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


class StoreWorker:
    """Runs EdgeStore calls on one thread: writes are serialised and the loop never blocks."""

    def __init__(self, store: EdgeStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-store")
        self.errors = 0
        """Calls that failed with a StoreError."""

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))
        except StoreError:
            self.errors += 1
            raise

    async def timed(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, float]:
        """``call``, and how long ``fn`` itself ran on the store's thread (queueing excluded)."""
        return await self.call(_timed, partial(fn, *args, **kwargs))

    @staticmethod
    def reason(exc: StoreError) -> str:
        """The failed operation and the driver's error class, for an unauthenticated /readyz:
        the message itself names the database server and stays in the log."""
        operation = str(exc).split(" ", 1)[0]
        cause = exc.__cause__
        source = getattr(cause, "orig", None) or cause
        what = type(source).__name__ if source is not None else "StoreError"
        prefix = f"{operation} failed: " if operation.isidentifier() else ""
        return f"{prefix}{what} (details in the gateway log)"

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()


async def open_store(
    url: str,
    password: str | None,
    site: str,
    catalog: tuple[Sequence[CatalogItem], Sequence[LocationRecord]],
) -> StoreWorker:
    """The edge store at ``url`` (its schema upgraded), its ``catalog`` (items, locations)
    synced, on its worker thread."""
    log.info("opening edge store %s (upgrading its schema)", redact(url))
    store = await asyncio.to_thread(EdgeStore.open, with_password(url, password), site=site)
    worker = StoreWorker(store)
    await worker.call(store.sync_catalog, *catalog)
    return worker


Committed = Callable[[RecordResult[Movement]], Awaitable[None]]
"""Told, in subscription order, what each ``record`` committed."""


class Recorder:
    """Commits movements and alerts, retrying while the store fails; tells the sinks after."""

    def __init__(
        self,
        worker: StoreWorker,
        *,
        counters: Counters,
        sinks: Sequence[Sink],
        feed: ConsoleFeed,
        utcnow: Callable[[], datetime],
        last_seq: int = 0,
    ) -> None:
        self.worker = worker
        self.counters = counters
        self.sinks = tuple(sinks)
        self._state_sinks = tuple(s for s in sinks if isinstance(s, StateSink))
        self._feed = feed
        self._utcnow = utcnow
        self.last_seq = last_seq
        """The store's highest seq as far as this process knows."""
        self.active: set[str] = set()
        """Ids of the alerts active now (from the store at start, then as raised/cleared)."""
        self.problems: dict[str, str] = {}
        """Why the store is not usable, by what found out ("record", "alert", "check")."""
        self._lock = asyncio.Lock()
        self._committed: list[Committed] = []
        self._notify: list[Callable[[], None]] = []

    def on_committed(self, listener: Committed) -> None:
        """``listener`` is told every committed batch (after the sinks were notified)."""
        self._committed.append(listener)

    def on_notify(self, wake: Callable[[], None]) -> None:
        """``wake()`` after every commit, like a sink's ``notify`` (the API's watchers)."""
        self._notify.append(wake)

    # -- movements --------------------------------------------------------------------------

    async def record(self, movements: Sequence[Movement]) -> RecordResult[Movement] | None:
        """Commit movements, then tell the sinks and the listeners what changed."""
        if not movements:
            return None
        async with self._lock:
            result = await self._record_until_stored(movements)
        counters = self.counters
        counters.movements += len(result.recorded)
        counters.duplicates += len(result.duplicates)
        if result.recorded:
            self.last_seq = max(self.last_seq, result.recorded[-1].seq)
        by_kind = counters.movements_by_kind
        for recorded in result.recorded:
            m = recorded.movement
            by_kind[m.kind] = by_kind.get(m.kind, 0) + 1
            log.info(
                "movement seq=%s %s %s x%s %s -> %s (%s %s, confidence %.2f)",
                recorded.seq,
                m.kind,
                m.sku,
                m.quantity,
                m.from_location,
                m.to_location,
                m.source_type,
                m.source_id,
                m.confidence,
                extra={"movement_id": m.movement_id},
            )
        for sink in self.sinks:
            sink.notify()
        for state in self._state_sinks:
            state.publish_stock(result.stock)
        for wake in self._notify:
            wake()
        self._feed.recorded(result.recorded, result.stock)
        for listener in self._committed:
            await listener(result)
        return result

    async def _record_until_stored(self, movements: Sequence[Movement]) -> RecordResult[Movement]:
        """Record, retrying for as long as the store refuses: the engines cannot derive these
        movements again, so giving up would lose them."""
        worker = self.worker
        result, seconds = await self.until_stored(
            "record",
            f"record {len(movements)} movement(s)",
            partial(worker.timed, worker.store.record, movements, now=self._utcnow()),
        )
        self.counters.store_record.observe(seconds)
        return result

    async def until_stored(self, key: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` until the store takes it, with capped backoff; one error line when it
        starts failing, one when it works again; ``/readyz`` says why meanwhile (``key``)."""
        outage = Outage(
            what,
            log=log,
            backoff=Backoff(STORE_RETRY),
            words=OutageWords(
                down="cannot {link}; retrying until the store takes it: {reason}",
                back="edge store took it after {seconds:.1f} s: {link}",
            ),
        )
        while True:
            try:
                result = await call()
            except StoreError as exc:
                self.problems[key] = self.worker.reason(exc)
                outage.failed(str(exc))
                await outage.pause()
                continue
            if outage.recovered() is not None:
                self.problems.pop(key, None)
            return result

    # -- alerts -----------------------------------------------------------------------------

    async def raise_alert(self, alert: Alert) -> None:
        """Store an alert raised or cleared, then tell the state sinks and the console."""
        if alert.active:
            self.active.add(alert.alert_id)
        elif alert.alert_id in self.active:
            self.active.discard(alert.alert_id)
        else:
            return  # clearing what was never raised: nothing to store, publish or say
        self.counters.alerts += 1
        log.log(
            logging.WARNING if alert.active else logging.INFO,
            "alert %s %s: %s",
            alert.kind,
            "raised" if alert.active else "cleared",
            alert.message,
        )
        worker = self.worker
        await self.until_stored(
            "alert",
            f"store the {alert.kind} alert",
            partial(worker.call, worker.store.upsert_alert, alert),
        )
        for state in self._state_sinks:
            state.publish_alert(alert)
        self._feed.alert(alert)
