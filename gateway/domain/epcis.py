"""Movements as GS1 EPCIS 2.0 events (JSON-LD), in the vocabulary of CBV 2.0.

Theory of operation
-------------------
Every recorded movement becomes one or two EPCIS events, a pure function of the movement and of
the site's identifiers (:class:`EpcisSite`), so a movement sent twice yields byte-identical
events with the same ``eventID`` (the canonical event hash, :mod:`gateway.domain.epcis_hash`).
The table below is the contract (docs/epcis.md has an example per row):

=============================== ===================== ==================== ======================
movement                        event(s)              bizStep              disposition
=============================== ===================== ==================== ======================
receipt (door, inward)          ObjectEvent OBSERVE   receiving            in_progress
shipment (door, outward)        ObjectEvent OBSERVE   shipping             in_transit
transfer (internal door)        ObjectEvent OBSERVE   entering_exiting     (unchanged)
return, into the building       ObjectEvent OBSERVE   receiving            returned
return, out of the building     ObjectEvent OBSERVE   shipping             returned
... with a pallet (SSCC) read   + AggregationEvent    as above             as above
                                OBSERVE, parentID the
                                SSCC, childEPCs cases
pick (weight shelf)             ObjectEvent OBSERVE,  picking              (unchanged)
                                quantityList
restock (weight shelf)          ObjectEvent OBSERVE,  stocking             sellable_accessible
                                quantityList
adjustment (opening count,      ObjectEvent OBSERVE,  cycle_counting       (unchanged)
offline change, reconciliation) quantityList,
                                dockwatch:reason
expected receipt closed         ObjectEvent OBSERVE,  receiving            completeness_verified
                                bizTransactionList                         or mismatch_*
=============================== ===================== ==================== ======================

- ``epcList`` holds the cases' SGTINs and the pallet's SSCC; a movement without EPCs (a shelf, a
  manual entry) has a ``quantityList``: its SKU's GTIN as a class (GS1 Digital Link
  ``https://id.gs1.org/01/<GTIN-14>``), the quantity in eaches, ``uom`` ``EA`` (UN/ECE Rec 20
  "each"), so a quantity never depends on how many eaches a GTIN's pack holds.
- ``readPoint`` is the portal's or shelf's SGLN, ``bizLocation`` the destination location's SGLN
  (none for a shipment or a pick: the goods are no longer anywhere on site), both from the
  optional ``sgln`` settings; without one, a fallback URI under ``base_uri`` (see
  :meth:`EpcisSite.read_point`). ``eventTime`` is ``observed_at`` (UTC, milliseconds) with
  ``eventTimeZoneOffset`` ``+00:00``.
- Extension fields, in the ``dockwatch`` namespace: ``dockwatch:movementId`` (every event: the
  way back to the movement), ``dockwatch:reason`` (a movement's ``reason``, when it has one),
  ``dockwatch:quantityChange`` (adjustments: signed eaches at the shelf), ``dockwatch:receiptId``.
- A closed expected receipt (:class:`ReceiptClosed`) is ``completeness_verified`` when nothing
  differs; otherwise ``mismatch_class`` when a SKU arrived that was not expected,
  ``mismatch_quantity`` when a SKU's quantity is over or short, else ``mismatch_instance``
  (same quantities, other serials). Its ``bizTransactionList`` holds the ASN (``desadv``) and the
  purchase order (``po``) when known.

Everything here is a pure function: no clock (``creation_date`` is passed in), no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

from gateway.domain.epcis_hash import event_hash, to_digital_link
from gateway.domain.model import Alert, AlertKind, MovementKind
from gateway.domain.views import RecordedView

__all__ = [
    "EPCIS_CONTEXT_URL",
    "EXTENSION_NAMESPACE",
    "EXTENSION_PREFIX",
    "EpcisSite",
    "ReceiptClosed",
    "document",
    "document_bytes",
    "movement_events",
    "receipt_closed_event",
]

EPCIS_CONTEXT_URL: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
EXTENSION_PREFIX: Final = "dockwatch"
EXTENSION_NAMESPACE: Final = "https://example.invalid/dockwatch/epcis/"
"""The namespace of dockwatch's extension fields (``dockwatch:reason``...)."""
DEFAULT_BASE_URI: Final = "https://example.invalid/dockwatch/site"
"""Fallback location URIs live under this when a site has no GLNs (``sinks.epcis.base_uri``)."""
CONTEXT: Final = (EPCIS_CONTEXT_URL, {EXTENSION_PREFIX: EXTENSION_NAMESPACE})
_NAMESPACES: Final = {EXTENSION_PREFIX: EXTENSION_NAMESPACE}
EACH: Final = "EA"
"""UN/ECE Recommendation 20 code for "each"."""

# kind -> (bizStep, disposition or None: unchanged). Keyed by the StrEnum members, which a stored
# movement's kind (their str value) finds as well.
_DOOR_STEPS: Final[Mapping[str, tuple[str, str | None]]] = {
    MovementKind.RECEIPT: ("receiving", "in_progress"),
    MovementKind.SHIPMENT: ("shipping", "in_transit"),
    MovementKind.TRANSFER: ("entering_exiting", None),
}
_SHELF_STEPS: Final[Mapping[str, tuple[str, str | None]]] = {
    MovementKind.PICK: ("picking", None),
    MovementKind.RESTOCK: ("stocking", "sellable_accessible"),
    MovementKind.ADJUSTMENT: ("cycle_counting", None),
}
# Movements after which the goods are no longer at a site location.
_LEFT_SITE: Final = frozenset({MovementKind.SHIPMENT, MovementKind.PICK})


def _sgln(value: str, what: str) -> str:
    if not value.startswith("urn:epc:id:sgln:") or to_digital_link(value) is None:
        raise ValueError(
            f"{what}: expected an SGLN URN such as urn:epc:id:sgln:0614141.00777.0 "
            f"(company prefix, location reference: 12 digits in all, extension), got {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class EpcisSite:
    """What the mapping needs to know about the site: ids, GTINs and optional SGLNs.

    ``read_points`` maps a portal or shelf id, ``locations`` a location id, to an SGLN URN;
    ``site_sgln`` stands for the site where nothing more precise is known. ``gtins`` maps a SKU
    to its GTIN-14; ``inside`` a portal id to its inside location (which way a return went);
    ``shelves`` a shelf id to its location (where an adjustment counted).
    """

    site: str
    base_uri: str = DEFAULT_BASE_URI
    site_sgln: str | None = None
    read_points: Mapping[str, str] = field(default_factory=dict)
    locations: Mapping[str, str] = field(default_factory=dict)
    gtins: Mapping[str, str] = field(default_factory=dict)
    inside: Mapping[str, str] = field(default_factory=dict)
    shelves: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.site:
            raise ValueError("site must not be empty")
        if not self.base_uri.startswith(("http://", "https://", "urn:")):
            raise ValueError(f"base_uri must be an http(s) or urn URI, got {self.base_uri!r}")
        object.__setattr__(self, "base_uri", self.base_uri.rstrip("/"))
        if self.site_sgln is not None:
            _sgln(self.site_sgln, "site_sgln")
        for name, table in (("read_points", self.read_points), ("locations", self.locations)):
            for key, value in table.items():
                _sgln(value, f"{name}[{key}]")
            object.__setattr__(self, name, dict(table))
        object.__setattr__(self, "gtins", dict(self.gtins))
        object.__setattr__(self, "inside", dict(self.inside))
        object.__setattr__(self, "shelves", dict(self.shelves))

    def _fallback(self, kind: str, ident: str) -> str:
        return f"{self.base_uri}/{quote(self.site, safe='')}/{kind}/{quote(ident, safe='')}"

    def read_point(self, source_id: str) -> str:
        """The portal's or shelf's SGLN, else ``{base_uri}/{site}/readpoint/{id}``."""
        return self.read_points.get(source_id) or self._fallback("readpoint", source_id)

    def location(self, location_id: str) -> str:
        """The location's SGLN, else ``{base_uri}/{site}/location/{id}``."""
        return self.locations.get(location_id) or self._fallback("location", location_id)

    def site_location(self) -> str:
        return self.site_sgln or self._fallback("location", "site")

    def transaction(self, kind: str, ident: str) -> str:
        """A business transaction id as a URI: ``{base_uri}/{site}/{desadv|po}/{id}``."""
        return self._fallback(kind, ident)

    def epc_class(self, sku: str) -> str:
        gtin = self.gtins.get(sku)
        if gtin is not None:
            return f"https://id.gs1.org/01/{gtin}"
        return self._fallback("sku", sku)  # a SKU outside the catalog: still traceable


def _time(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _finish(body: dict[str, object]) -> dict[str, object]:
    """The event with its ``eventID`` (the canonical hash of everything else) after ``type``."""
    ident = event_hash(body, _NAMESPACES)
    return {
        "type": body["type"],
        "eventID": ident,
        **{k: v for k, v in body.items() if k != "type"},
    }


def _base(kind: str, observed_at: datetime) -> dict[str, object]:
    return {"type": kind, "eventTime": _time(observed_at), "eventTimeZoneOffset": "+00:00"}


def _step(recorded: RecordedView, site: EpcisSite) -> tuple[str, str | None]:
    """(bizStep, disposition or None) of a movement."""
    m = recorded.movement
    if m.kind == MovementKind.RETURN:
        inward = site.inside.get(m.source_id) == m.to_location
        return ("receiving" if inward else "shipping", "returned")
    if m.kind in _DOOR_STEPS:
        return _DOOR_STEPS[m.kind]
    return _SHELF_STEPS.get(m.kind, ("other", None))


def movement_events(recorded: RecordedView, site: EpcisSite) -> list[dict[str, object]]:
    """The EPCIS events of one movement (see the module docstring's table)."""
    m = recorded.movement
    step, disposition = _step(recorded, site)
    where: dict[str, object] = {"readPoint": {"id": site.read_point(m.source_id)}}
    extensions: dict[str, object] = {f"{EXTENSION_PREFIX}:movementId": m.movement_id}
    if m.reason is not None:  # the 2026-12 contract extension
        extensions[f"{EXTENSION_PREFIX}:reason"] = str(m.reason)
    if m.kind == MovementKind.ADJUSTMENT:
        # A count corrects the stock of the place that was counted (the shelf): the event is
        # located there, and says by how much its stock changed (to += q, from -= q).
        counted = site.shelves.get(m.source_id, m.to_location)
        where["bizLocation"] = {"id": site.location(counted)}
        change = m.quantity if m.to_location == counted else -m.quantity
        extensions[f"{EXTENSION_PREFIX}:quantityChange"] = change
    elif m.kind not in _LEFT_SITE and step != "shipping":  # a return going out left too
        where["bizLocation"] = {"id": site.location(m.to_location)}

    event = _base("ObjectEvent", m.observed_at)
    epcs = list(m.epcs)
    if m.container is not None and m.container not in epcs:
        epcs.append(m.container)
    if epcs:
        event["epcList"] = epcs
    else:
        event["quantityList"] = [
            {"epcClass": site.epc_class(m.sku), "quantity": m.quantity, "uom": EACH}
        ]
    event["action"] = "OBSERVE"
    event["bizStep"] = step
    if disposition is not None:
        event["disposition"] = disposition
    event.update(where)
    event.update(extensions)
    events = [_finish(event)]

    if m.container is not None and m.epcs:
        aggregation = _base("AggregationEvent", m.observed_at)
        aggregation["parentID"] = m.container
        aggregation["childEPCs"] = [e for e in m.epcs if e != m.container]
        aggregation["action"] = "OBSERVE"
        aggregation["bizStep"] = step
        if disposition is not None:
            aggregation["disposition"] = disposition
        aggregation.update(where)
        aggregation[f"{EXTENSION_PREFIX}:movementId"] = m.movement_id
        events.append(_finish(aggregation))
    return events


@dataclass(frozen=True, slots=True)
class ReceiptClosed:
    """An expected receipt that completed (``gateway.domain.receiving``), as EPCIS sees it."""

    receipt_id: str
    completed_at: datetime
    door: str | None = None
    planned: bool = True
    received: Mapping[str, int] = field(default_factory=dict)
    over: Mapping[str, int] = field(default_factory=dict)
    short: Mapping[str, int] = field(default_factory=dict)
    unexpected: Mapping[str, int] = field(default_factory=dict)
    missing_epcs: tuple[str, ...] = ()
    unexpected_epcs: tuple[str, ...] = ()
    received_epcs: tuple[str, ...] = ()
    purchase_order: str | None = None
    movement_ids: tuple[str, ...] = ()

    @property
    def disposition(self) -> str:
        if self.unexpected:
            return "mismatch_class"
        if self.over or self.short:
            return "mismatch_quantity"
        if self.missing_epcs or self.unexpected_epcs:
            return "mismatch_instance"
        return "completeness_verified"

    @classmethod
    def from_alert(cls, alert: Alert) -> ReceiptClosed | None:
        """The closure a ``receiving_discrepancy`` alert reports (None for any other alert)."""
        if alert.kind is not AlertKind.RECEIVING_DISCREPANCY:
            return None
        d = alert.details

        def counts(key: str) -> dict[str, int]:
            value = d.get(key)
            if not isinstance(value, Mapping):
                return {}
            return {str(k): int(v) for k, v in value.items() if isinstance(v, int) and v}

        def strings(key: str) -> tuple[str, ...]:
            value = d.get(key)
            if not isinstance(value, list | tuple):
                return ()
            return tuple(str(v) for v in value)

        door = d.get("door")
        po = d.get("po")
        return cls(
            receipt_id=str(d.get("receipt_id") or alert.subject),
            completed_at=alert.raised_at,
            door=door if isinstance(door, str) else None,
            planned=bool(d.get("planned", True)),
            received=counts("received"),
            over=counts("over"),
            short=counts("short"),
            unexpected=counts("unexpected"),
            missing_epcs=strings("missing_epcs"),
            unexpected_epcs=strings("unexpected_epcs"),
            purchase_order=po if isinstance(po, str) and po else None,
            movement_ids=strings("movement_ids"),
        )


def receipt_closed_event(
    closed: ReceiptClosed, site: EpcisSite, *, received_epcs: Sequence[str] = ()
) -> dict[str, object]:
    """The ObjectEvent that closes an expected receipt (see the module docstring).

    ``received_epcs``: the EPCs the receipt took in (its movements' cases and pallets), when
    known; without them the event lists the received quantities by class.
    """
    event = _base("ObjectEvent", closed.completed_at)
    epcs = list(dict.fromkeys([*received_epcs, *closed.received_epcs]))
    quantities = [
        {"epcClass": site.epc_class(sku), "quantity": qty, "uom": EACH}
        for sku, qty in sorted(closed.received.items())
        if qty > 0
    ]
    if epcs or not quantities:
        event["epcList"] = epcs  # possibly empty: nothing arrived after all
    else:
        event["quantityList"] = quantities
    event["action"] = "OBSERVE"
    event["bizStep"] = "receiving"
    event["disposition"] = closed.disposition
    if closed.door is not None:
        event["readPoint"] = {"id": site.read_point(closed.door)}
        inside = site.inside.get(closed.door)
        event["bizLocation"] = {
            "id": site.location(inside) if inside is not None else site.site_location()
        }
    else:
        event["bizLocation"] = {"id": site.site_location()}
    transactions = []
    if closed.planned:
        transactions.append(
            {"type": "desadv", "bizTransaction": site.transaction("desadv", closed.receipt_id)}
        )
    if closed.purchase_order is not None:
        transactions.append(
            {"type": "po", "bizTransaction": site.transaction("po", closed.purchase_order)}
        )
    if transactions:
        event["bizTransactionList"] = transactions
    event[f"{EXTENSION_PREFIX}:receiptId"] = closed.receipt_id
    return _finish(event)


def document(
    events: Iterable[Mapping[str, object]], *, creation_date: datetime
) -> dict[str, object]:
    """An EPCISDocument (JSON-LD) holding ``events``, for the capture interface."""
    return {
        "@context": [CONTEXT[0], dict(CONTEXT[1])],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _time(creation_date),
        "epcisBody": {"eventList": list(events)},
    }


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def document_bytes(events: Iterable[Mapping[str, object]], *, creation_date: datetime) -> bytes:
    """:func:`document` as compact UTF-8 JSON."""
    return _ENCODER.encode(document(events, creation_date=creation_date)).encode("utf-8")
