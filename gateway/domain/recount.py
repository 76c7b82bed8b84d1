"""A re-count asked for by an operator: the shelf's book corrected to its weight, now.

The shelf engine corrects its book on its own once the weight has disagreed with it for
``reconcile_after_s`` (300 s). An operator who has just counted by hand, or who watches the
console's trace, may not want to wait: a re-count compares the engine's current reading
(``implied``: the settled weight as a whole number of units) with the book (``on_hand``) and, when
they differ, yields the same ADJUSTMENT with reason ``reconciliation`` the engine would record.
Pure: the caller passes the engine's figures and the time; nothing here reads a clock.

Refusals (:class:`RecountRefused`): no settled reading yet, a weight that is not a whole count
of units (something unexplained lies on the shelf), or no book to correct.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.model import (
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    MovementReason,
    Sku,
    SourceType,
)

__all__ = ["RecountRefused", "ShelfReading", "recount"]


class RecountRefused(ValueError):
    """The shelf cannot be re-counted now; the message says why (shown to the operator)."""


@dataclass(frozen=True, slots=True)
class ShelfReading:
    """What a re-count needs from a shelf engine at one moment."""

    shelf_id: str
    location: LocationId
    sku: Sku
    adjust_location: LocationId
    on_hand: int | None
    implied_units: int | None
    """The settled weight as whole units; None when there is no settled reading."""
    fits: bool
    confidence: float


def recount(reading: ShelfReading, now_utc: datetime) -> Movement | None:
    """The adjustment that brings the book to the weight, or None when they agree."""
    if reading.implied_units is None:
        raise RecountRefused(f"shelf {reading.shelf_id} has no settled weight yet")
    if not reading.fits or reading.implied_units < 0:
        raise RecountRefused(
            f"shelf {reading.shelf_id}: the weight is not a whole number of units "
            "(something unexplained is on the shelf)"
        )
    if reading.on_hand is None:
        raise RecountRefused(f"shelf {reading.shelf_id} has no book count yet")
    diff = reading.implied_units - reading.on_hand
    if diff == 0:
        return None
    evidence = f"recount|{reading.on_hand}|{reading.implied_units}|{now_utc.isoformat()}"
    digest = hashlib.sha256(f"{reading.shelf_id}|{evidence}".encode()).hexdigest()[:32]
    return Movement(
        movement_id=MovementId(f"ws-{digest}"),
        kind=MovementKind.ADJUSTMENT,
        sku=reading.sku,
        quantity=abs(diff),
        from_location=reading.adjust_location if diff > 0 else reading.location,
        to_location=reading.location if diff > 0 else reading.adjust_location,
        source_type=SourceType.WEIGHT_SHELF,
        source_id=reading.shelf_id,
        observed_at=now_utc,
        confidence=reading.confidence,
        reason=MovementReason.RECONCILIATION,
    )
