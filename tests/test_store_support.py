"""Builders shared by the edge store tests (no tests here).

A small catalog, a movement factory, ``open_store`` which opens a store on the
``database_url`` fixture's database with that catalog synced, and ``as_record``: what the store
gives back for a value the gateway gave it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from edge_store import EdgeStore, LocationRecord
from gateway.domain.model import (
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")

SITE = "dc-test"
T0 = datetime(2026, 1, 5, 8, 0, 0, 123456, tzinfo=UTC)

ITEMS = (
    CatalogItem(sku=Sku("SKU-1"), name="Widget", gtin="00614141123452", unit_weight_g=250.0),
    CatalogItem(sku=Sku("SKU-2"), name="Widget case", gtin="10614141123459", pack_size=12),
    CatalogItem(sku=Sku("SKU-3"), name="Gadget", reorder_point=5),
)
LOCATIONS = (
    LocationRecord("yard", "virtual"),
    LocationRecord("receiving", "dock"),
    LocationRecord("shelf-a1", "storage"),
    LocationRecord("customer", "virtual"),
)
SKUS = tuple(i.sku for i in ITEMS)
LOCATION_IDS = tuple(loc.id for loc in LOCATIONS)


def movement(
    movement_id: str,
    *,
    sku: str = "SKU-1",
    quantity: int = 1,
    src: str = "yard",
    dst: str = "receiving",
    kind: MovementKind = MovementKind.RECEIPT,
    at: datetime = T0,
    epcs: tuple[str, ...] = (),
    container: str | None = None,
    confidence: float = 0.95,
    source_type: SourceType = SourceType.RFID_PORTAL,
    source_id: str = "door-1",
) -> Movement:
    return Movement(
        movement_id=MovementId(movement_id),
        kind=kind,
        sku=Sku(sku),
        quantity=quantity,
        from_location=LocationId(src),
        to_location=LocationId(dst),
        source_type=source_type,
        source_id=source_id,
        observed_at=at,
        confidence=confidence,
        epcs=epcs,
        container=container,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def open_store(url: str, *, site: str = SITE) -> EdgeStore:
    store = EdgeStore.open(url, site=site)
    store.sync_catalog(ITEMS, LOCATIONS)
    return store


def as_record(value: object, record: type[R]) -> R:
    """The store's ``record`` (``MovementRecord``, ``AlertRecord``...) of the fields of a gateway
    ``value``: what reading ``value`` back from the store must give (a ``StrEnum`` member equals
    its str value, so the records compare equal to the store's)."""
    return record(**{f.name: getattr(value, f.name) for f in dataclasses.fields(record)})
