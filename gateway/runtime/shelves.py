"""The shelf pipeline: weight samples -> shelf engines -> movements and alerts.

``ModbusShelfPoller`` puts each weight sample in a bounded :class:`SampleQueue` (its policy when
full: drop the oldest); :meth:`ShelfPipeline.run` feeds them, in order, to the engine of their
shelf and hands what comes out to ``record`` (movements) and ``raise_alert`` (alerts). The book
flows back: every committed stock level of a shelf's (location, sku) sets that engine's
``on_hand`` and goes through the low-stock monitor (:meth:`stock_changed`).

A sample is dated when it was taken (``taken(sample.at)``), not when it reached the engine: a
store that was slow to take the last movement must not shift the next one's ``observed_at``.
The gateway and the accuracy harnesses (simulators/modbus/accuracy.py, zoo_run.py) run this
same object; only ``taken`` (the wall clock or the scenario clock) and what ``record`` does
differ.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from dockwatch_core.errors import ConfigError
from gateway.adapters.modbus import (
    ModbusShelfPoller,
    PollerSettings,
    RegisterField,
    RegisterTable,
    SampleQueue,
    ShelfPoint,
    StatusWord,
    ValueType,
    WordOrder,
)
from gateway.domain.model import (
    Alert,
    AlertKind,
    DeviceId,
    DeviceStatus,
    LocationId,
    Movement,
    Severity,
    Sku,
    WeightSample,
)
from gateway.domain.params import ShelfParams
from gateway.domain.shelf import ShelfEngine
from gateway.domain.stock import LowStockMonitor
from gateway.domain.views import AlertView, StockView
from gateway.runtime.site import device_tls

if TYPE_CHECKING:
    from gateway.config import ShelfConfig

SHELF_ENGINE_ALERTS = frozenset({AlertKind.IMPLAUSIBLE_WEIGHT, AlertKind.UNEXPLAINED_WEIGHT_CHANGE})
"""Alerts whose condition lives in a shelf engine's memory: raised again after a restart if still
true, so those a previous run left active are cleared at start."""


class _Item(Protocol):
    """What a shelf engine needs of a catalog item (``catalog.items[]``)."""

    @property
    def sku(self) -> str: ...
    @property
    def unit_weight_g(self) -> float | None: ...
    @property
    def weight_tolerance_g(self) -> float | None: ...
    @property
    def reorder_point(self) -> int | None: ...


def shelf_engines(
    shelves: Sequence[ShelfConfig], items: Sequence[_Item], params: ShelfParams
) -> dict[str, ShelfEngine]:
    """One engine per configured shelf (``shelves``, the catalog's ``items``, ``debounce.shelf``);
    what the config leaves out (``weight_tolerance_g``...) is the engine's default."""
    by_sku = {item.sku: item for item in items}
    engines = {}
    for shelf in shelves:
        item = by_sku[shelf.sku]
        if item.unit_weight_g is None:  # config validation refuses this; keep mypy honest
            raise ConfigError(f"shelves[{shelf.id}]: item {shelf.sku} has no unit_weight_g")
        engines[shelf.id] = ShelfEngine(
            shelf.id,
            location=LocationId(shelf.location),
            sku=Sku(shelf.sku),
            unit_weight_g=item.unit_weight_g,
            tolerance_g=item.weight_tolerance_g,
            pick_to=LocationId(shelf.pick_to),
            restock_from=LocationId(shelf.restock_from),
            params=params,
            division_g=shelf.division_g,
            capacity_g=shelf.capacity_g,
        )
    return engines


def shelf_point(shelf: ShelfConfig, tls: ssl.SSLContext | None = None) -> ShelfPoint:
    """What the Modbus poller reads for one configured shelf."""
    weight = RegisterField(
        table=RegisterTable(shelf.weight.table),
        address=shelf.weight.address,
        type=ValueType(shelf.weight.type),
        word_order=WordOrder(shelf.weight.word_order),
        scale=shelf.weight.grams_per_count,
    )
    status = None
    if shelf.status is not None:
        status = StatusWord(
            table=RegisterTable(shelf.status.table),
            address=shelf.status.address,
            stable_bit=shelf.status.stable_bit,
            overload_bit=shelf.status.overload_bit,
            error_bit=shelf.status.error_bit,
        )
    return ShelfPoint(
        shelf_id=DeviceId(shelf.id),
        host=shelf.modbus.host,
        port=shelf.modbus.port,
        unit=shelf.modbus.unit,
        weight=weight,
        status=status,
        tls=tls,
    )


def shelf_poller(
    shelves: Sequence[ShelfConfig],
    params: ShelfParams,
    *,
    on_sample: Callable[[WeightSample], None],
    on_status: Callable[[DeviceStatus], None],
) -> ModbusShelfPoller | None:
    """The poller of every configured shelf (None without shelves). One TLS context per
    connection: the shelves behind it share it (config checks they agree on their tls block)."""
    if not shelves:
        return None
    contexts: dict[tuple[str, int], ssl.SSLContext | None] = {}
    for i, shelf in enumerate(shelves):
        connection = (shelf.modbus.host, shelf.modbus.port)
        if connection not in contexts:
            contexts[connection] = device_tls(shelf.modbus.tls, f"shelves[{i}].modbus.tls")
    return ModbusShelfPoller(
        [shelf_point(s, contexts[(s.modbus.host, s.modbus.port)]) for s in shelves],
        on_sample=on_sample,
        on_status=on_status,
        settings=PollerSettings(
            poll_interval_s=params.poll_interval_s,
            timeout_s=max(s.modbus.timeout_s for s in shelves),
        ),
    )


class ShelfPipeline:
    """Samples in, movements and alerts out (see the module docstring)."""

    def __init__(
        self,
        engines: Mapping[str, ShelfEngine],
        *,
        record: Callable[[Sequence[Movement]], Awaitable[object]],
        raise_alert: Callable[[Alert], Awaitable[None]],
        taken: Callable[[float], datetime],
        low_stock: LowStockMonitor | None = None,
        samples: SampleQueue | None = None,
        on_sample: Callable[[WeightSample, Sequence[Movement]], None] | None = None,
        on_implausible: Callable[[Alert], None] | None = None,
    ) -> None:
        self.engines = dict(engines)
        self.samples = samples if samples is not None else SampleQueue()
        self.low_stock = low_stock if low_stock is not None else LowStockMonitor({})
        self._record = record
        self._raise_alert = raise_alert
        self._taken = taken
        self._on_sample = on_sample
        self._on_implausible = on_implausible
        self._shelf_at: dict[tuple[str, str], str] = {
            (e.location, e.sku): shelf_id for shelf_id, e in self.engines.items()
        }
        self.fed = 0
        """Samples fed to an engine so far."""

    @classmethod
    def from_config(
        cls,
        shelves: Sequence[ShelfConfig],
        items: Sequence[_Item],
        params: ShelfParams,
        **parts: Any,
    ) -> ShelfPipeline:
        """The pipeline of ``shelves`` (the catalog's ``items``, ``debounce.shelf``); ``parts``
        as the constructor takes them."""
        low_stock = LowStockMonitor(
            {Sku(i.sku): i.reorder_point for i in items if i.reorder_point is not None},
            hysteresis=params.low_stock_hysteresis,
        )
        return cls(shelf_engines(shelves, items, params), low_stock=low_stock, **parts)

    def cleared_at_start(self, active: Iterable[AlertView], now: datetime) -> list[Alert]:
        """The clearing of the alerts a previous run left active whose condition lives in an
        engine's memory: the engines start afresh and raise them again if still true; left
        active, a condition that ended while the gateway was down would never clear."""
        return [
            Alert(
                alert_id=alert.alert_id,
                kind=AlertKind(alert.kind),
                severity=Severity(alert.severity),
                subject=alert.subject,
                message=f"{alert.subject}: cleared at start (raised again if still true)",
                raised_at=now,
                active=False,
                details=alert.details,
            )
            for alert in active
            if alert.kind in SHELF_ENGINE_ALERTS and alert.subject in self.engines
        ]

    async def run(self) -> None:
        while True:
            await self.handle(await self.samples.get())

    async def handle(self, sample: WeightSample) -> None:
        """Feed one sample to its shelf's engine; record and raise what comes out."""
        engine = self.engines.get(sample.shelf_id)
        if engine is None:
            return
        self.fed += 1
        movements: list[Movement] = []
        for event in engine.feed(sample, self._taken(sample.at)):
            if isinstance(event, Movement):
                movements.append(event)
                continue
            if event.kind is AlertKind.IMPLAUSIBLE_WEIGHT and self._on_implausible is not None:
                self._on_implausible(event)
            await self._raise_alert(event)
        if self._on_sample is not None:
            self._on_sample(sample, movements)
        if movements:
            await self._record(movements)

    def opened(self, levels: Iterable[StockView]) -> None:
        """The store's stock levels at start. A shelf the store has no level for has no book:
        its first settled weight is its opening count. One with a level compares its first
        settled weight with it (offline changes)."""
        for level in levels:
            shelf_id = self._shelf_at.get((level.location, level.sku))
            if shelf_id is not None:
                self.engines[shelf_id].set_on_hand(level.on_hand)
            self.low_stock.observe(level)

    async def stock_changed(self, levels: Iterable[StockView]) -> None:
        """Committed stock levels: the shelves' books, and low-stock alerts."""
        for level in levels:
            shelf_id = self._shelf_at.get((level.location, level.sku))
            if shelf_id is None:
                continue  # low stock is a shelf concept: docks and yards are not replenished
            self.engines[shelf_id].set_on_hand(level.on_hand)
            alert = self.low_stock.observe(level)
            if alert is not None:
                await self._raise_alert(alert)
