"""The console built from a running :class:`~gateway.app.Gateway`: what it reads, what its
actions call. Kept out of ``app.py`` so the composition root only says "there is a console".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from dockwatch_core.errors import GatewayError
from gateway.config import resolve_secret
from gateway.console.feed import ConsoleFeed
from gateway.console.web import Console, ConsoleData, DoorView, ShelfView
from gateway.domain.model import LocationId
from gateway.domain.recount import ShelfReading, recount
from gateway.domain.views import AlertView, DeviceStatusView, RecordedView, StockView

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.runtime.recorder import StoreWorker

__all__ = ["build_console"]


class ReceiptsRefused(ValueError):
    """An upload ``dockwatch receipts load`` would refuse; ``problems`` by key path."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def build_console(
    gateway: Gateway, *, utcnow: Callable[[], datetime], environ: Mapping[str, str] | None = None
) -> Console:
    """The console of ``gateway`` (its feed is ``gateway.console_feed``)."""
    config = gateway.config
    feed: ConsoleFeed = gateway.console_feed

    def worker() -> StoreWorker:
        if gateway.worker is None:
            raise GatewayError("the edge store is not open")
        return gateway.worker

    async def devices() -> Sequence[DeviceStatusView]:
        w = worker()
        return await w.call(w.store.device_statuses)

    async def stock() -> Sequence[StockView]:
        w = worker()
        return await w.call(w.store.stock)

    async def alerts() -> Sequence[AlertView]:
        w = worker()
        return await w.call(w.store.alerts, active_only=False)

    async def recent(count: int) -> Sequence[RecordedView]:
        w = worker()
        last = gateway.sync_status()["last_seq"]
        return await w.call(w.store.movements_since, max(0, last - count), count)

    items = {i.sku: i for i in config.catalog.items}

    def shelves() -> list[ShelfView]:
        views = []
        for shelf in config.shelves:
            engine = gateway.shelves.engines[shelf.id]
            item = items[shelf.sku]
            views.append(
                ShelfView(
                    shelf_id=shelf.id,
                    location=shelf.location,
                    sku=shelf.sku,
                    on_hand=engine.on_hand,
                    reorder_point=item.reorder_point,
                    unit_weight_g=item.unit_weight_g or 0.0,
                    baseline_g=engine.baseline_g,
                    phase=str(engine.phase),
                )
            )
        return views

    tracker = gateway.receiving
    shelf_configs = {s.id: s for s in config.shelves}
    expected_file = config.receiving.expected_file

    async def load(path: Path, name: str) -> str:
        # Imported here: receiving_cli imports gateway.app, which builds consoles.
        from gateway.receiving_cli import LoadRefused, load_receipts

        try:
            return await asyncio.to_thread(load_receipts, path, name, config)
        except LoadRefused as exc:
            raise ReceiptsRefused(exc.problems) from exc

    async def recount_shelf(shelf_id: str) -> str:
        shelf = shelf_configs.get(shelf_id)
        if shelf is None or shelf_id not in gateway.shelves.engines:
            raise KeyError(shelf_id)
        engine = gateway.shelves.engines[shelf_id]
        implied = engine.implied_units
        reading = ShelfReading(
            shelf_id=shelf_id,
            location=LocationId(shelf.location),
            sku=engine.sku,
            adjust_location=LocationId(engine.params.adjust_location),
            on_hand=engine.on_hand,
            implied_units=None if implied is None else implied.units,
            fits=implied is not None and implied.fits,
            confidence=1.0 if implied is None else implied.confidence,
        )
        movement = recount(reading, utcnow())
        if movement is None:
            return f"shelf {shelf_id}: the weight agrees with the book ({engine.on_hand})"
        await gateway.record([movement])
        return (
            f"shelf {shelf_id}: book corrected from {reading.on_hand} to "
            f"{reading.implied_units} (seq {gateway.sync_status()['last_seq']})"
        )

    device_ids = [(r.id, "reader") for r in config.readers] + [
        (s.id, "shelf") for s in config.shelves
    ]
    data = ConsoleData(
        site=config.site.id,
        devices=devices,
        device_ids=device_ids,
        stock=stock,
        alerts=alerts,
        recent=recent,
        sync=gateway.sync_status,
        shelves=shelves,
        doors=[
            DoorView(
                portal_id=p.id,
                reader_id=p.reader,
                outside_antennas=tuple(p.outside_antennas),
                inside_antennas=tuple(p.inside_antennas),
                outside_location=p.outside_location,
                inside_location=p.inside_location,
            )
            for p in config.portals
        ],
        antennas=lambda: gateway.counters.reads_by_antenna,
        receipts=(lambda: tracker.receipts) if tracker is not None else None,
    )
    token = resolve_secret(config.api.operator_token, environ=environ)
    return Console(
        data,
        feed,
        operator_token=token,
        load_receipts=load if expected_file is not None else None,
        recount=recount_shelf if config.shelves else None,
    )
