"""Values the edge store takes and returns that are not shared domain types.

Movements, stock levels, alerts and device statuses are ``dockwatch_core.model`` types; these are
the catalog rows the store keeps (so every movement's SKU and locations exist) and the outcome of
recording a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockwatch_core.model import MovementId, RecordedMovement, StockLevel


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One catalog item. ``pack_size`` is informative here: movements arrive already in eaches."""

    sku: str
    name: str
    pack_size: int = 1
    gtin: str | None = None
    unit_weight_g: float | None = None
    reorder_point: int | None = None

    def __post_init__(self) -> None:
        if not self.sku:
            raise ValueError("sku must not be empty")
        if self.pack_size < 1:
            raise ValueError(f"{self.sku}: pack_size must be >= 1, got {self.pack_size}")
        if self.gtin is not None and not (self.gtin.isdigit() and 8 <= len(self.gtin) <= 14):
            raise ValueError(f"{self.sku}: gtin must be 8 to 14 digits, got {self.gtin!r}")
        if self.unit_weight_g is not None and self.unit_weight_g <= 0:
            raise ValueError(f"{self.sku}: unit_weight_g must be positive")
        if self.reorder_point is not None and self.reorder_point < 0:
            raise ValueError(f"{self.sku}: reorder_point must be >= 0")


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
