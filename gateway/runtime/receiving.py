"""The receiving watcher: expected receipts from a file, matched against recorded movements.

Every ``EXPECTED_POLL_S`` the watcher checks the expected-receipts file
(``receiving.expected_file``) for changes and completes receipts idle for ``idle_close_s``; every
committed batch of movements is matched against the open receipts. A completed receipt raises its
alert and, when an EPCIS sink runs, its closure event follows its movements' (``on_closed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_store.records import RecordResult
from gateway.documents import RECEIPTS_LIMITS, DocumentError, gc_paused, read_yaml
from gateway.domain.catalog import Catalog
from gateway.domain.epcis import ReceiptClosed
from gateway.domain.model import Alert, Movement
from gateway.domain.receiving import ExpectedReceipt, PreparedReceipts, ReceivingTracker
from gateway.receipts_file import parse_expected

log = logging.getLogger(__name__)

EXPECTED_POLL_S = 5.0
"""How often the expected-receipts file is checked for changes and idle receipts completed."""


def load_expected(path: Path) -> list[ExpectedReceipt]:
    """Expected receipts from a YAML or JSON file (within ``RECEIPTS_LIMITS``: size, nesting,
    encoding); ValueError names the problem."""
    try:
        data = read_yaml(path, RECEIPTS_LIMITS)
    except DocumentError as exc:
        raise ValueError(exc.problem) from exc
    return [] if data is None else parse_expected(data)  # an empty file expects nothing


def prepare_expected(path: Path, tracker: ReceivingTracker) -> PreparedReceipts:
    """:func:`load_expected` resolved against the tracker's catalog: all the work of taking a
    file, for a worker thread (``tracker.prepare`` only reads the immutable catalog). The
    garbage collector is paused meanwhile (:func:`gateway.documents.gc_paused`: its full
    collections would hold the GIL, and so stall the event loop, for a quarter of a second)."""
    with gc_paused():
        return tracker.prepare(load_expected(path))


class ReceivingWatcher:
    """Keeps ``tracker`` fed from ``path`` and from the recorded movements."""

    def __init__(
        self,
        tracker: ReceivingTracker,
        *,
        path: Path,
        raise_alert: Callable[[Alert], Awaitable[None]],
        utcnow: Callable[[], datetime],
        on_closed: Callable[[ReceiptClosed], None] | None = None,
        poll_s: float = EXPECTED_POLL_S,
    ) -> None:
        self.tracker = tracker
        self._path = path
        self._raise_alert = raise_alert
        self._utcnow = utcnow
        self._on_closed = on_closed
        self._poll_s = poll_s
        self._mtime: float | None = None

    @classmethod
    def from_config(
        cls, expected_file: Path | None, *, catalog: Catalog, idle_close_s: float, **parts: Any
    ) -> ReceivingWatcher | None:
        """The watcher of ``receiving.expected_file`` (None without one); ``parts`` as the
        constructor takes them."""
        if expected_file is None:
            return None
        tracker = ReceivingTracker(catalog=catalog, idle_close_s=idle_close_s)
        return cls(tracker, path=expected_file, **parts)

    async def run(self) -> None:
        """Loads new expected receipts when the file changes; completes idle receipts."""
        while True:
            await self._load()
            for alert in self.tracker.advance(self._utcnow()):
                await self._closed(alert)
            await asyncio.sleep(self._poll_s)

    async def committed(self, result: RecordResult[Movement]) -> None:
        """Movements were recorded: they may complete receipts."""
        if not result.recorded:
            return
        moved = [r.movement for r in result.recorded]
        for alert in self.tracker.observe(moved, self._utcnow()):
            await self._closed(alert)

    async def _closed(self, alert: Alert) -> None:
        closed = ReceiptClosed.from_alert(alert) if self._on_closed is not None else None
        if self._on_closed is not None and closed is not None:
            self._on_closed(closed)
        await self._raise_alert(alert)

    async def _load(self) -> None:
        path = self._path
        try:
            mtime = (await asyncio.to_thread(path.stat)).st_mtime
        except OSError as exc:
            if self._mtime is not None:
                log.warning("expected receipts file %s unreadable: %s", path, exc)
                self._mtime = None
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        # Reading, parsing and resolving run in a worker thread; only the linear insertion of
        # what is new runs on the loop (a 10,000-receipt file must not stall the devices).
        try:
            prepared = await asyncio.to_thread(prepare_expected, path, self.tracker)
        except ValueError as exc:
            log.error("expected receipts file %s ignored: %s", path, exc)  # noqa: TRY400
            return
        new = self.tracker.add_prepared(prepared, skip_known=True)
        if new:
            log.info("loaded %s expected receipt(s) from %s", len(new), path)
