"""What the operator console reads of the gateway: :class:`ConsoleData`, which the composition
root wires (:mod:`gateway.console.wiring`), and the views of shelves and doors in it. Every page
and the live stream read the gateway through it only, so the console can be served with any
source (the tests serve it without a gateway).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.domain.receiving import ReceiptStatus
from gateway.domain.views import AlertView, DeviceStatusView, RecordedView, StockView

__all__ = ["ConsoleData", "DoorView", "ShelfView"]


@dataclass(frozen=True, slots=True)
class ShelfView:
    shelf_id: str
    location: str
    sku: str
    on_hand: int | None
    reorder_point: int | None
    unit_weight_g: float
    baseline_g: float | None
    phase: str


@dataclass(frozen=True, slots=True)
class DoorView:
    portal_id: str
    reader_id: str
    outside_antennas: tuple[int, ...]
    inside_antennas: tuple[int, ...]
    outside_location: str
    inside_location: str


@dataclass(frozen=True, slots=True)
class ConsoleData:
    """How the console reads the gateway (the composition root wires these)."""

    site: str
    devices: Callable[[], Awaitable[Sequence[DeviceStatusView]]]
    """Every device's last status (from the store)."""
    device_ids: Sequence[tuple[str, str]]
    """Every configured device as (id, type), so a silent one is listed too."""
    stock: Callable[[], Awaitable[Sequence[StockView]]]
    alerts: Callable[[], Awaitable[Sequence[AlertView]]]
    """Alert history, active and cleared (from the store)."""
    recent: Callable[[int], Awaitable[Sequence[RecordedView]]]
    """The last N movements, oldest first."""
    sync: Callable[[], Mapping[str, int]]
    """``last_seq`` and each sink's acknowledged seq."""
    shelves: Callable[[], list[ShelfView]]
    doors: Sequence[DoorView]
    antennas: Callable[[], Mapping[tuple[str, int], int]]
    """Reads since start per (reader, antenna)."""
    receipts: Callable[[], list[ReceiptStatus]] | None
    """None: no expected receipts configured (``receiving.expected_file``)."""
