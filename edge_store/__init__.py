"""The edge store: SQLAlchemy models, repository and Alembic migrations.

``EdgeStore.open(url, site=...)`` is the entry point; see ``edge_store.repository`` for the
guarantees (gap-free seq, idempotent ``record``, one transaction per batch) and ``docs/store.md``.
``EdgeStore`` delegates the catalog to ``edge_store.catalog`` and alerts and device statuses to
``edge_store.status``; all of them reach the database through one ``edge_store.access.StoreAccess``.
The store imports nothing of the gateway: it takes what it stores by its fields and gives back
records of its own (``edge_store.records``).
"""

from edge_store.engine import redact_url
from edge_store.records import (
    AlertRecord,
    DeviceRecord,
    ItemRecord,
    LocationRecord,
    MovementRecord,
    RecordResult,
    StockRecord,
    StoredMovement,
)
from edge_store.repository import EdgeStore

__all__ = [
    "AlertRecord",
    "DeviceRecord",
    "EdgeStore",
    "ItemRecord",
    "LocationRecord",
    "MovementRecord",
    "RecordResult",
    "StockRecord",
    "StoredMovement",
    "redact_url",
]
