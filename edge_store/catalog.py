"""The catalog: the items and locations that movements may name.

Movements refer to ``items.sku`` and ``locations.id`` by foreign key, so the gateway syncs its
configured catalog (with the virtual locations its engines use) at start-up, before the first
``record``. Syncing inserts and updates; it never deletes, because recorded history still refers
to items and locations that left the configuration.

When a batch fails on a foreign key, the database's message does not say which reference was
unknown; ``unknown_references`` looks them up so the ``StoreError`` can name them.

GTINs are kept as given. The store does not verify their GS1 check digit: its one caller, the
gateway, syncs its ``CatalogItem``s, whose GTINs the one GTIN rule (``gateway.domain.gs1``) has
already normalised to 14 digits and checked when the config was read; a second verifier here
would be a second copy of that rule, which the store cannot import. What the store enforces is
its schema's: a GTIN of at most 14 characters, unique, and ``pack_size >= 1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select

from edge_store.access import StoreAccess, table
from edge_store.models import Item, Location
from edge_store.records import CatalogItemFields, ItemRecord, LocationRecord, MovementFields


class Catalog:
    """Reads and writes the ``items`` and ``locations`` tables of one store."""

    __slots__ = ("_db",)

    def __init__(self, db: StoreAccess) -> None:
        self._db = db

    def sync(self, items: Iterable[CatalogItemFields], locations: Iterable[LocationRecord]) -> None:
        """Insert or update items and locations. Nothing is deleted: movements refer to them.

        Only the fields of ``CatalogItemFields`` are kept: the gateway's ``weight_tolerance_g``
        is the shelf engine's setting, read from the config, and ``items`` has no column for it.
        """
        item_rows = [
            {
                "sku": i.sku,
                "gtin": i.gtin,
                "name": i.name,
                "unit_weight_g": i.unit_weight_g,
                "pack_size": i.pack_size,
                "reorder_point": i.reorder_point,
            }
            for i in items
        ]
        location_rows = [{"id": loc.id, "kind": loc.kind} for loc in locations]
        with self._db.write("sync_catalog") as conn:
            if location_rows:
                conn.execute(self._db.upsert(table(Location), ("id",), ("kind",)), location_rows)
            if item_rows:
                columns = ("gtin", "name", "unit_weight_g", "pack_size", "reorder_point")
                conn.execute(self._db.upsert(table(Item), ("sku",), columns), item_rows)

    def items(self) -> list[ItemRecord]:
        """The catalog items, sorted by SKU."""
        items = table(Item)
        with self._db.read("items") as conn:
            rows = conn.execute(select(items).order_by(items.c.sku)).all()
        return [
            ItemRecord(
                sku=row.sku,
                name=row.name,
                pack_size=row.pack_size,
                gtin=row.gtin,
                unit_weight_g=row.unit_weight_g,
                reorder_point=row.reorder_point,
            )
            for row in rows
        ]

    def locations(self) -> list[LocationRecord]:
        """The locations, sorted by id."""
        locations = table(Location)
        with self._db.read("locations") as conn:
            rows = conn.execute(select(locations).order_by(locations.c.id)).all()
        return [LocationRecord(id=row.id, kind=row.kind) for row in rows]

    def unknown_references(self, movements: Sequence[MovementFields]) -> str:
        """Describe SKUs and locations the batch names that are not in the catalog ('' if none)."""
        skus = {m.sku for m in movements}
        locations = {m.from_location for m in movements} | {m.to_location for m in movements}
        items, places = table(Item), table(Location)
        with self._db.read("record") as conn:
            known_skus = set(
                conn.execute(select(items.c.sku).where(items.c.sku.in_(skus))).scalars()
            )
            known_locations = set(
                conn.execute(select(places.c.id).where(places.c.id.in_(locations))).scalars()
            )
        parts = []
        if skus - known_skus:
            parts.append(f"unknown sku {sorted(skus - known_skus)}")
        if locations - known_locations:
            parts.append(f"unknown location {sorted(locations - known_locations)}")
        return ", ".join(parts)
