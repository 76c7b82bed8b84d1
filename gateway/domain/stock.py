"""Low-stock alerts: raised when on-hand falls to the reorder point, cleared with hysteresis.

Theory of operation
-------------------
For each (location, SKU) whose item has a ``reorder_point``, the monitor keeps one boolean: low or
not. It is *raised* when on-hand falls to the reorder point or below, and *cleared* only once
on-hand rises above ``reorder_point + hysteresis`` (``debounce.shelf.low_stock_hysteresis``,
default 2). The gap keeps a shelf that hovers around its reorder point (pick one, restock one)
from flapping the alert on and off.

``update`` returns an Alert only when the state changes. The first observation of a pair always
returns one (raised or cleared): after a restart this overwrites whatever retained state the
MQTT broker still holds from before. The alert id is stable per (location, SKU)
(``low_stock:{location}:{sku}``), so the retained topic always holds the current state.

The monitor only sees the levels it is given: the caller decides which locations are watched
(typically the shelf locations, not receiving or the virtual ``picked`` location).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from gateway.domain.model import Alert, AlertKind, LocationId, Severity, Sku
from gateway.domain.views import StockView


def low_stock_alert_id(location: str, sku: str) -> str:
    """The stable id of the low-stock alert of one (location, SKU)."""
    return f"{AlertKind.LOW_STOCK}:{location}:{sku}"


class LowStockMonitor:
    """Low-stock state per (location, SKU); pure, time is passed in."""

    def __init__(self, reorder_points: Mapping[Sku, int], hysteresis: int = 2) -> None:
        if hysteresis < 0:
            raise ValueError(f"hysteresis must be >= 0, got {hysteresis}")
        for sku, point in reorder_points.items():
            if point < 0:
                raise ValueError(f"reorder_point of {sku} must be >= 0, got {point}")
        self._reorder_points = dict(reorder_points)
        self._hysteresis = hysteresis
        self._low: dict[tuple[LocationId, Sku], bool] = {}

    def is_low(self, location: LocationId, sku: Sku) -> bool | None:
        """The current state; None if the pair was never observed or has no reorder point."""
        return self._low.get((location, sku))

    def observe(self, level: StockView) -> Alert | None:
        """``update`` from a stock level as the store reports it."""
        return self.update(
            LocationId(level.location), Sku(level.sku), level.on_hand, level.updated_at
        )

    def update(self, location: LocationId, sku: Sku, on_hand: int, at: datetime) -> Alert | None:
        """Return the alert (raised or cleared) if the state of (location, sku) changed."""
        point = self._reorder_points.get(sku)
        if point is None:
            return None
        key = (location, sku)
        was_low = self._low.get(key)
        if on_hand <= point:
            low = True
        elif on_hand > point + self._hysteresis:
            low = False
        else:
            # Inside the hysteresis band: keep the state; a first observation here is not low
            # (the level has not fallen to the reorder point).
            low = was_low if was_low is not None else False
        self._low[key] = low
        if was_low is low:
            return None
        if low:
            message = f"{sku} at {location}: {on_hand} on hand, reorder point {point}"
        else:
            message = f"{sku} at {location}: {on_hand} on hand, back above reorder point {point}"
        return Alert(
            alert_id=low_stock_alert_id(location, sku),
            kind=AlertKind.LOW_STOCK,
            severity=Severity.WARNING,
            subject=f"{location}/{sku}",
            message=message,
            raised_at=at,
            active=low,
            details={
                "location": location,
                "sku": sku,
                "on_hand": on_hand,
                "reorder_point": point,
                "clear_above": point + self._hysteresis,
            },
        )
