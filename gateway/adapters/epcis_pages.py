"""The EPCIS sink's documents: outbox pages and receipt closures, mapped and encoded.

Theory of operation
-------------------
:class:`PageBuilder` turns what the relay (:mod:`gateway.adapters.epcis`) must send into
:class:`Page` objects: a page holds one :class:`Item` per movement (its events, from
:func:`gateway.domain.epcis.movement_events`, deterministic, so a re-sent movement carries the
same ``eventID``) or per closed expected receipt, in seq order, and, when it was prepared ahead,
the encoded EPCISDocument of all of them. :meth:`PageBuilder.page_after` reads and maps one page
of the outbox and encodes it; it runs in a worker thread, so the relay can prepare the next page
while one is in flight. When the relay splits a page, :meth:`PageBuilder.encode` encodes the
part again.

Closed receipts (:meth:`PageBuilder.receipt_closed`) wait in memory, in the order they closed,
until the outbox is drained past every movement recorded before the closure
(:meth:`PageBuilder.closing`): their ObjectEvent follows the receipts' own events. The store
is read for the EPCs the receipt's movements carried.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.domain.epcis import (
    EpcisSite,
    ReceiptClosed,
    document_bytes,
    movement_events,
    receipt_closed_event,
)
from gateway.domain.views import RecordedView

__all__ = ["Event", "Item", "MovementReader", "Page", "PageBuilder", "last_seq"]

Event = dict[str, object]


class MovementReader(Protocol):
    """What the page builder reads from the edge store."""

    def movements_since(self, after_seq: int, limit: int) -> Sequence[RecordedView]: ...

    def movement_by_id(self, movement_id: str) -> RecordedView | None: ...


@dataclass(frozen=True, slots=True)
class Item:
    """The events of one movement (``seq``), or of a receipt closure (``seq`` None)."""

    seq: int | None
    movement_id: str
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[Item, ...]
    body: bytes | None = None
    """The encoded document of every item, when prepared ahead."""


def last_seq(page: Page) -> int | None:
    return page.items[-1].seq if page.items else None


class PageBuilder:
    """Outbox pages and receipt closures as EPCIS documents (see the module docstring)."""

    def __init__(
        self,
        source: MovementReader,
        *,
        site: EpcisSite,
        batch_size: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._source = source
        self._site = site
        self._batch_size = batch_size
        self._clock = clock
        self._closures: collections.deque[tuple[int, ReceiptClosed]] = collections.deque()

    def page_after(self, after: int) -> Page:
        """The next page after ``after``, mapped and encoded (runs in a worker thread)."""
        movements = self._source.movements_since(after, self._batch_size)
        items = tuple(
            Item(r.seq, r.movement.movement_id, tuple(movement_events(r, self._site)))
            for r in movements
        )
        if not items:
            return Page(())
        events = [e for item in items for e in item.events]
        return Page(items, document_bytes(events, creation_date=self._clock()))

    async def encode(self, events: Sequence[Event]) -> bytes:
        """The document of ``events`` (part of a page), encoded in a worker thread."""
        return await asyncio.to_thread(document_bytes, events, creation_date=self._clock())

    def receipt_closed(self, closed: ReceiptClosed, *, after_seq: int) -> None:
        """Keep ``closed`` until every movement up to ``after_seq`` is delivered."""
        self._closures.append((after_seq, closed))

    async def closing(self, delivered_through: int) -> Page | None:
        """Once the outbox is drained: the closure events now due, as a page of their own."""
        closures = self._due_closures(delivered_through)
        return await asyncio.to_thread(self._closure_page, closures) if closures else None

    def _due_closures(self, delivered_through: int) -> list[ReceiptClosed]:
        due = []
        while self._closures and self._closures[0][0] <= delivered_through:
            due.append(self._closures.popleft()[1])
        return due

    def _closure_page(self, closures: Sequence[ReceiptClosed]) -> Page:
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
            items.append(Item(None, f"receipt {closed.receipt_id}", (event,)))
        return Page(tuple(items))
