"""What a reader of movements, stock levels, alerts and device statuses reads: read-only views.

The payload builders (``payloads``), the EPCIS mapping (``epcis``), the low-stock monitor
(``stock``) and the adapters that publish (MQTT, gRPC, central, the console) only read fields.
They take these Protocols rather than the value types of ``model``, because what they read comes
from two places: the gateway's own values (a movement just recorded, an alert just raised) and
the records the edge store gives back (``edge_store.records``: a page of the outbox, the stock,
the alerts and devices at start or on request). Both satisfy the views as they are, with no
conversion on the way out of the store: the outbox pagers read every movement, and building a
``Movement`` again from each record would cost more than the store spends reading it.

A view's enumerations are ``str``: the domain's enums are ``StrEnum``s and the store gives back
their values. So a reader compares them with ``==`` (``kind == MovementKind.RETURN``, true for the
member and for its value) and never with ``is``, and writes them as they are (a ``StrEnum``'s
``str`` is its value) rather than through ``.value`` or ``.name``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol


class MovementView(Protocol):
    """A movement (``model.Movement`` or a stored record of one)."""

    @property
    def movement_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def sku(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def from_location(self) -> str: ...
    @property
    def to_location(self) -> str: ...
    @property
    def source_type(self) -> str: ...
    @property
    def source_id(self) -> str: ...
    @property
    def observed_at(self) -> datetime: ...
    @property
    def confidence(self) -> float: ...
    @property
    def epcs(self) -> Sequence[str]: ...
    @property
    def container(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...


class RecordedView(Protocol):
    """A movement as committed, with its ``seq`` (``model.RecordedMovement`` or the store's)."""

    @property
    def seq(self) -> int: ...
    @property
    def site(self) -> str: ...
    @property
    def movement(self) -> MovementView: ...


class StockView(Protocol):
    """A committed stock level (``model.StockLevel`` or the store's record)."""

    @property
    def location(self) -> str: ...
    @property
    def sku(self) -> str: ...
    @property
    def on_hand(self) -> int: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def last_seq(self) -> int: ...


class AlertView(Protocol):
    """An alert, raised or cleared (``model.Alert`` or the store's record)."""

    @property
    def alert_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def raised_at(self) -> datetime: ...
    @property
    def active(self) -> bool: ...
    @property
    def details(self) -> Mapping[str, object]: ...


class DeviceStatusView(Protocol):
    """A device's state (``model.DeviceStatus`` or the store's record)."""

    @property
    def device_id(self) -> str: ...
    @property
    def device_type(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def since(self) -> datetime: ...
    @property
    def detail(self) -> str: ...
