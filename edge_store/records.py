"""Values the edge store takes and returns that are not shared domain types.

Movements, stock levels, alerts, device statuses and catalog items are ``gateway.domain.model``
types; these are the locations the store keeps (so every movement's locations exist) and the
outcome of recording a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.model import MovementId, RecordedMovement, StockLevel


@dataclass(frozen=True, slots=True)
class LocationRecord:
    """A location. ``kind`` is descriptive (the config uses ``storage``, ``dock``, ``virtual``)."""

    id: str
    kind: str = "storage"

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("location id must not be empty")
        if not self.kind:
            raise ValueError(f"{self.id}: location kind must not be empty")


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What one ``EdgeStore.record`` call committed.

    ``recorded`` is in seq order; ``duplicates`` lists, in input order, every movement id that
    changed nothing (already stored, or repeated earlier in the same batch); ``stock`` holds the
    stock levels the batch changed, as committed, sorted by (location, sku).
    """

    recorded: tuple[RecordedMovement, ...]
    duplicates: tuple[MovementId, ...]
    stock: tuple[StockLevel, ...]
