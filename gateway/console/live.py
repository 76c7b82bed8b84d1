"""The console's live routes: ``/events`` (Server-Sent Events) and ``/doors/reads``.

Theory of operation
-------------------
Each open page holds one ``/events`` stream, a subscription to the
:class:`~gateway.console.feed.ConsoleFeed` (refused with 503 when ``subscribers_max`` streams are
open). The stream writes each event the feed hears as it comes (``movement``, ``stock``,
``alert``, ``device``; ``sample`` only to the shelves page, which draws them) and a ``tick``
every ``TICK_S`` however busy the feed is: what a page shows that changes without an event of
its own (each sink's lag behind ``last_seq``, the movements this minute, the reads per antenna
since the last tick and since start, and for the doors and receipts pages the receipts'
progress, at most ``TICK_RECEIPTS_MAX`` of them). A ``reload`` from the feed (the page fell
behind and was dropped) is written and ends the stream; the browser reconnects
(``retry: 2000``). When the listener shuts down (:meth:`LiveRoutes.close`), every stream ends
at its next event or tick.

A page that shows stock (``stock``, ``shelves``) first gets every level changed since start as
it is now: the page was rendered before its stream subscribed, and a level that changed in
between would otherwise stay wrong on it until it changed again.

``/doors/reads?epc=...`` answers the kept reads of up to ``MAX_TAGS`` tags (the last
``MAX_TAG_READS``) as JSON, for the doors page's strip of a pass or a tag.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.adapters.metrics import plain
from gateway.console.data import ConsoleData
from gateway.console.feed import ConsoleFeed, FeedFull
from gateway.console.render import receipt_row
from gateway.domain.receiving import ReceiptState

__all__ = ["LiveRoutes"]

TICK_S = 1.0
"""How often a stream gets the sync lag, the minute's movements and the antenna counters."""
_STOCK_PAGES = frozenset({"stock", "shelves"})
"""The pages that show stock levels (their stream starts with the levels changed since start)."""
MAX_TAGS = 100
"""At most this many tags in one read-strip request (a pallet's cases)."""
MAX_TAG_READS = 5000
TICK_RECEIPTS_MAX = 200
"""At most this many (the most recent) receipts in a tick."""


class LiveRoutes:
    """The handlers of ``/events`` and ``/doors/reads`` (see the module docstring)."""

    def __init__(self, data: ConsoleData, feed: ConsoleFeed, *, log: logging.Logger) -> None:
        """``log``: the console's logger, so that its lines keep the console's logger name."""
        self._data = data
        self._feed = feed
        self._log = log
        self._closing = asyncio.Event()

    def close(self) -> None:
        """The listener shuts down: end every stream."""
        self._closing.set()

    async def events(self, request: web.Request) -> web.StreamResponse:
        """One page's stream, for as long as the page holds it."""
        try:
            subscription = self._feed.subscribe()
            queue = subscription.__enter__()
        except FeedFull as exc:
            return plain(503, str(exc))
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
            )
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            antennas: dict[str, int] = {}
            page = request.query.get("page", "")
            if page in _STOCK_PAGES:
                # The page was rendered before this stream subscribed: a level that changed in
                # between would never reach it. The levels changed since start, as they are
                # now (later changes follow in the queue; a repeat sets the same value).
                for level in list(self._feed.stock.values()):
                    await response.write(_sse("stock", level))
            loop = asyncio.get_running_loop()
            next_tick = loop.time() + TICK_S
            kind: str
            data: Mapping[str, object]
            while not self._closing.is_set():
                # A tick every TICK_S however busy the feed is (samples arrive many times a
                # second); weight samples only to the page that draws them.
                if loop.time() >= next_tick:
                    next_tick = loop.time() + TICK_S
                    kind, data = "tick", self._tick(antennas, page)
                else:
                    try:
                        async with asyncio.timeout_at(next_tick):
                            kind, data = await queue.get()
                    except TimeoutError:
                        continue
                if kind == "sample" and page != "shelves":
                    continue
                await response.write(_sse(kind, data))
                if kind == "reload":
                    break
        except (ConnectionError, asyncio.CancelledError) as exc:
            self._log.debug("console stream ended: %r", exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            subscription.__exit__(None, None, None)
        return response

    async def tag_reads(self, request: web.Request) -> web.Response:
        """``?epc=...`` (repeated): the kept reads of those tags, for the doors page's strip."""
        epcs = request.query.getall("epc", [])[:MAX_TAGS]
        reads = self._feed.reads_of(epcs)[-MAX_TAG_READS:] if epcs else []
        return web.json_response({"reads": reads}, headers={"Cache-Control": "no-store"})

    def _tick(self, previous: dict[str, int], page: str) -> dict[str, object]:
        """What a page shows that changes without an event of its own: the sinks' progress,
        the reads per antenna, and (for the pages that show them) the receipts' progress."""
        sync = self._data.sync()
        last = sync.get("last_seq", 0)
        counts = {f"{r}:{a}": n for (r, a), n in self._data.antennas().items()}
        per_second = {k: n - previous.get(k, n) for k, n in counts.items()}
        previous.clear()
        previous.update(counts)
        receipts: list[dict[str, object]] = []
        if page in ("doors", "receipts") and self._data.receipts is not None:
            shown = self._data.receipts()
            if page == "doors":
                shown = [r for r in shown if r.state is not ReceiptState.COMPLETE]
            receipts = [receipt_row(r) for r in shown[-TICK_RECEIPTS_MAX:]]
        return {
            "receipts": receipts,
            "last_seq": last,
            "sinks": {k: max(0, last - v) for k, v in sync.items() if k != "last_seq"},
            "this_minute": self._feed.this_minute(),
            "antennas": per_second,
            "reads": counts,
        }


def _sse(kind: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
