"""Receiving reconciliation: what arrived through the doors against what was expected (ASNs).

Theory of operation
-------------------
An *expected receipt* (an advance shipping notice) has an id, optionally the door it will arrive
at, and lines: either ``{sku, quantity}`` (quantity in eaches) or ``{epcs: [...]}`` listing the
tagged cases (pure-identity URNs or hex; their SKU comes from the catalog, or from an explicit
``sku``), which then count ``len(epcs) x pack_size`` eaches.

Receipt movements (kind ``receipt``, from ``gateway.domain.portal``) are attributed to an open
receipt, in this order of preference:

1. a receipt listing one of the movement's EPCs;
2. a receipt for the movement's door (``source_id``) already being received, then one expecting
   the movement's SKU, then the first one loaded;
3. the same among receipts without a door;
4. otherwise an *unplanned* receipt for that door is opened (everything in it is unexpected).

A non-receipt movement at a door (e.g. a shipment out) carrying EPCs an open receipt took in
reverses them (a pallet unloaded by mistake and put back on the truck).

A receipt that has begun *completes* once no movement has been attributed to it for
``idle_close_s`` (config ``receiving.idle_close_s``, default 300 s), measured from the
movements' own ``observed_at`` to the ``now`` passed in. Completion yields one ``Alert`` of kind
``receiving_discrepancy`` whose ``alert_id`` names the receipt: severity warning (active) listing
``over``, ``short`` and ``unexpected`` quantities per SKU and missing/unexpected EPCs, or severity
info (not active: no discrepancy) when everything matched. A completed receipt takes no more
movements; late arrivals open an unplanned receipt, so they are reported too.

Invariants: quantities are eaches; each movement is counted once (by ``movement_id``, so a
replayed movement adds nothing; the last 100,000 ids are remembered); memory is bounded: open
receipts, plus the last ``keep_completed`` completed ones (older ones are dropped).

Limits (what an expected-receipts file may say; files are read and checked against them by
``gateway.receipts_file``, outside this pure package): a receipt id is 1 to ``MAX_RECEIPT_ID_CHARS``
(128) letters, digits, ``.``, ``_``, ``:`` or ``-``, starting with a letter or digit (it names
an alert, appears in EPCIS ``bizTransaction`` URIs and in MQTT payloads); a door is a portal id
and a SKU a catalog SKU (at most 64 characters, the store's columns); a quantity is 1 to
``MAX_QUANTITY`` (2^31 - 1, what the store's movement quantity holds). Every check is linear in
the size of the document: a 10,000-receipt file is parsed and resolved in well under a second.

Loading is split so that a big file never stalls the caller's event loop: :meth:`prepare`
resolves receipts against the (immutable) catalog and may run in a worker thread;
:meth:`add_prepared` then only inserts them (linear, a few milliseconds for 10,000).
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.domain.catalog import Catalog
from gateway.domain.epc import encode_uri
from gateway.domain.model import Alert, AlertKind, Movement, MovementKind, Severity, Sku

__all__ = [
    "MAX_QUANTITY",
    "MAX_RECEIPT_ID_CHARS",
    "ExpectedLine",
    "ExpectedReceipt",
    "PreparedReceipts",
    "ReceiptProgress",
    "ReceiptState",
    "ReceiptStatus",
    "ReceivingTracker",
]


@dataclass(frozen=True, slots=True)
class ExpectedLine:
    """``quantity`` eaches of ``sku``, or the tagged cases ``epcs`` (pure-identity URNs)."""

    sku: Sku | None = None
    quantity: int | None = None
    epcs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.epcs and self.quantity is not None:
            raise ValueError("a line gives either quantity or epcs, not both")
        if not self.epcs and (self.sku is None or self.quantity is None):
            raise ValueError("a line needs sku and quantity, or epcs")
        if self.quantity is not None and not 0 < self.quantity <= MAX_QUANTITY:
            raise ValueError(
                f"quantity must be a number of eaches in 1..{MAX_QUANTITY}, got {self.quantity}"
            )


@dataclass(frozen=True, slots=True)
class ExpectedReceipt:
    receipt_id: str
    lines: tuple[ExpectedLine, ...]
    door: str | None = None
    po: str | None = None
    """The purchase order the shipment fills, when known (EPCIS ``bizTransactionList``)."""

    def __post_init__(self) -> None:
        if not self.receipt_id:
            raise ValueError("receipt_id must not be empty")
        if not self.lines:
            raise ValueError(f"receipt {self.receipt_id} has no lines")


MAX_QUANTITY = 2**31 - 1
"""The most eaches one line may expect: what the store's movement quantity column holds."""
MAX_RECEIPT_ID_CHARS = 128
_REMEMBERED_MOVEMENTS = 100_000


class ReceiptState(enum.StrEnum):
    EXPECTED = "expected"
    RECEIVING = "receiving"
    COMPLETE = "complete"


@dataclass(frozen=True, slots=True)
class ReceiptStatus:
    receipt_id: str
    door: str | None
    state: ReceiptState
    planned: bool
    expected: Mapping[str, int]
    received: Mapping[str, int]
    started_at: datetime | None
    last_activity_at: datetime | None
    completed_at: datetime | None


@dataclass(slots=True)
class _Receipt:
    receipt_id: str
    door: str | None
    planned: bool
    order: int
    expected: dict[str, int]
    expected_epcs: dict[str, str]  # urn -> sku
    po: str | None = None
    state: ReceiptState = ReceiptState.EXPECTED
    received: dict[str, int] = field(default_factory=dict)
    received_epcs: dict[str, str] = field(default_factory=dict)  # urn -> sku
    movement_ids: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    last_activity_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PreparedReceipts:
    """Expected receipts resolved against the catalog (:meth:`ReceivingTracker.prepare`),
    ready for :meth:`ReceivingTracker.add_prepared`, which takes them over: add them once."""

    receipts: tuple[_Receipt, ...]

    def __len__(self) -> int:
        return len(self.receipts)


@dataclass(frozen=True, slots=True)
class ReceiptProgress:
    """How a pass in progress compares with the open expected receipt it would go to (live
    receiving): eaches per SKU, as if its cases so far were received now."""

    receipt_id: str | None
    """None: no open expected receipt would take it (an unplanned receipt)."""
    expected: Mapping[str, int]
    seen: Mapping[str, int]
    """Received so far by the receipt, plus the pass."""
    over: Mapping[str, int]
    unexpected: Mapping[str, int]
    """Eaches of SKUs the receipt does not expect."""
    unexpected_epcs: int
    """Cases of the pass the receipt lists no EPC for, of SKUs it expects by EPC."""

    @property
    def matches(self) -> bool:
        """The pass fits the receipt so far: nothing over, nothing unexpected."""
        return (
            self.receipt_id is not None
            and not self.over
            and not self.unexpected
            and not self.unexpected_epcs
        )


class ReceivingTracker:
    """Reconciles receipt movements against expected receipts; see the module docstring."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        expected: Iterable[ExpectedReceipt] = (),
        idle_close_s: float = 300.0,
        keep_completed: int = 1000,
    ) -> None:
        if idle_close_s <= 0:
            raise ValueError(f"idle_close_s must be > 0, got {idle_close_s}")
        if keep_completed < 0:
            raise ValueError(f"keep_completed must be >= 0, got {keep_completed}")
        self._catalog = catalog
        self._idle = timedelta(seconds=idle_close_s)
        self._keep_completed = keep_completed
        self._receipts: dict[str, _Receipt] = {}
        self._completed: deque[str] = deque()
        # Movement ids already counted (a replay adds nothing), remembered up to a bound.
        self._counted: OrderedDict[str, None] = OrderedDict()
        self._order = 0
        self.add_expected(expected)

    def add_expected(self, receipts: Iterable[ExpectedReceipt]) -> None:
        """Load more expected receipts (ASNs arrive all day). ValueError names the problem;
        nothing is added then."""
        self.add_prepared(self.prepare(receipts))

    def prepare(self, receipts: Iterable[ExpectedReceipt]) -> PreparedReceipts:
        """Resolve ``receipts`` against the catalog (the costly part of loading them) without
        changing the tracker: it only reads the catalog, so it may run in a worker thread while
        the tracker is used elsewhere. ValueError names the problem (a receipt id given twice,
        an EPC or SKU that is not in the catalog)."""
        staged: dict[str, _Receipt] = {}
        for receipt in receipts:
            if receipt.receipt_id in staged:
                raise ValueError(f"receipt {receipt.receipt_id!r} is already expected")
            staged[receipt.receipt_id] = self._resolve(receipt)
        return PreparedReceipts(tuple(staged.values()))

    def add_prepared(self, prepared: PreparedReceipts, *, skip_known: bool = False) -> list[str]:
        """Add receipts from :meth:`prepare` (linear in their number); returns the ids added.

        A receipt id the tracker already has is a ValueError (nothing is added), or is skipped
        with ``skip_known`` (the gateway re-reads a file that only grows)."""
        known = self._receipts
        if not skip_known:
            for resolved in prepared.receipts:
                if resolved.receipt_id in known:
                    raise ValueError(f"receipt {resolved.receipt_id!r} is already expected")
        added: list[str] = []
        for resolved in prepared.receipts:
            if resolved.receipt_id in known:
                continue
            self._order += 1
            resolved.order = self._order  # prepared receipts are taken, not copied
            known[resolved.receipt_id] = resolved
            added.append(resolved.receipt_id)
        return added

    def __contains__(self, receipt_id: object) -> bool:
        return receipt_id in self._receipts

    def _resolve(self, receipt: ExpectedReceipt) -> _Receipt:
        expected: dict[str, int] = {}
        expected_epcs: dict[str, str] = {}
        for n, line in enumerate(receipt.lines):
            where = f"receipt {receipt.receipt_id} line {n}"
            if not line.epcs:
                assert line.sku is not None
                assert line.quantity is not None
                expected[line.sku] = expected.get(line.sku, 0) + line.quantity
                continue
            for urn in sorted(line.epcs):
                info = self._catalog.classify(encode_uri(urn))
                sku = line.sku or info.sku
                if sku is None:
                    raise ValueError(f"{where}: {urn} is not a catalog item; give the line a sku")
                if line.sku is not None and info.sku is not None and info.sku != line.sku:
                    raise ValueError(f"{where}: {urn} is {info.sku} in the catalog, not {line.sku}")
                item = self._catalog.by_sku(sku)
                if item is None:
                    raise ValueError(f"{where}: sku {sku!r} is not in the catalog")
                expected[sku] = expected.get(sku, 0) + item.pack_size
                expected_epcs[urn] = sku
        return _Receipt(
            receipt_id=receipt.receipt_id,
            door=receipt.door,
            planned=True,
            order=0,  # given when added
            expected=expected,
            expected_epcs=expected_epcs,
            po=receipt.po,
        )

    def status(self, receipt_id: str) -> ReceiptStatus:
        return self._status(self._receipts[receipt_id])

    @property
    def receipts(self) -> list[ReceiptStatus]:
        # Receipts are inserted in the order they are given: the dict is already in that order.
        return [self._status(r) for r in self._receipts.values()]

    @staticmethod
    def _status(receipt: _Receipt) -> ReceiptStatus:
        return ReceiptStatus(
            receipt_id=receipt.receipt_id,
            door=receipt.door,
            state=receipt.state,
            planned=receipt.planned,
            expected=dict(receipt.expected),
            received={sku: qty for sku, qty in receipt.received.items() if qty},
            started_at=receipt.started_at,
            last_activity_at=receipt.last_activity_at,
            completed_at=receipt.completed_at,
        )

    def observe(self, movements: Iterable[Movement], now: datetime) -> list[Alert]:
        """Attribute movements to receipts, then complete the receipts idle as of ``now``."""
        for movement in sorted(movements, key=lambda m: (m.observed_at, m.movement_id)):
            if movement.movement_id in self._counted:
                continue
            if movement.kind is MovementKind.RECEIPT:
                self._remember(movement.movement_id)
                self._take(self._attribute(movement), movement)
            elif movement.epcs and self._reverse(movement):
                self._remember(movement.movement_id)
        return self.advance(now)

    def progress(self, door: str, cases: Sequence[tuple[str, str, int]]) -> ReceiptProgress:
        """Where a pass in progress at ``door`` stands, without counting it: ``cases`` are its
        case tags so far as (EPC URN, SKU, eaches). The receipt is chosen as ``observe``
        would choose it for the pass's first SKU (an EPC listed by a receipt first)."""
        epcs = {urn for urn, _, _ in cases}
        sku = cases[0][1] if cases else ""
        receipt = self._choose(door, sku, epcs)
        if receipt is None or not receipt.planned:
            added: dict[str, int] = {}
            for _, case_sku, eaches in cases:
                added[case_sku] = added.get(case_sku, 0) + eaches
            return ReceiptProgress(None, {}, added, {}, added, 0)
        seen = {s: q for s, q in receipt.received.items() if q > 0}
        listed_skus = set(receipt.expected_epcs.values())
        unlisted = 0
        for urn, case_sku, eaches in cases:
            if urn in receipt.received_epcs:
                continue  # counted already (a replay)
            seen[case_sku] = seen.get(case_sku, 0) + eaches
            if case_sku in listed_skus and urn not in receipt.expected_epcs:
                unlisted += 1
        expected = dict(receipt.expected)
        return ReceiptProgress(
            receipt_id=receipt.receipt_id,
            expected=expected,
            seen=seen,
            over={s: seen[s] - q for s, q in expected.items() if seen.get(s, 0) > q},
            unexpected={s: q for s, q in seen.items() if s not in expected},
            unexpected_epcs=unlisted,
        )

    def _remember(self, movement_id: str) -> None:
        self._counted[movement_id] = None
        while len(self._counted) > _REMEMBERED_MOVEMENTS:
            self._counted.popitem(last=False)

    def advance(self, now: datetime) -> list[Alert]:
        """Complete every receipt that has been idle for ``idle_close_s``."""
        if now.tzinfo is None or now.utcoffset() != timedelta(0):
            raise ValueError(f"now must be a timezone-aware UTC datetime, got {now!r}")
        alerts = []
        for receipt in self._receipts.values():
            if (
                receipt.state is ReceiptState.RECEIVING
                and receipt.last_activity_at is not None
                and now - receipt.last_activity_at >= self._idle
            ):
                receipt.state = ReceiptState.COMPLETE
                receipt.completed_at = now
                alerts.append(self._report(receipt, now))
                self._completed.append(receipt.receipt_id)
        while len(self._completed) > self._keep_completed:
            del self._receipts[self._completed.popleft()]
        return alerts

    # --- attribution ------------------------------------------------------------------------

    def _open(self) -> list[_Receipt]:
        # In order: receipts are inserted as their order is given, and never moved.
        return [r for r in self._receipts.values() if r.state is not ReceiptState.COMPLETE]

    def _choose(self, door: str, sku: str, epcs: set[str]) -> _Receipt | None:
        candidates = self._open()
        for receipt in candidates:
            if receipt.planned and epcs & receipt.expected_epcs.keys():
                return receipt
        for pool in (
            [r for r in candidates if r.door == door],
            [r for r in candidates if r.door is None and r.planned],
        ):
            for preferred in (
                [r for r in pool if r.state is ReceiptState.RECEIVING and r.planned],
                [r for r in pool if r.planned and sku in r.expected],
                [r for r in pool if r.planned],
                pool,
            ):
                if preferred:
                    return preferred[0]
        return None

    def _attribute(self, movement: Movement) -> _Receipt:
        door = movement.source_id
        chosen = self._choose(door, movement.sku, set(movement.epcs))
        if chosen is not None:
            return chosen
        self._order += 1
        unplanned = _Receipt(
            receipt_id=f"unplanned:{door}:{movement.movement_id[:12]}",
            door=door,
            planned=False,
            order=self._order,
            expected={},
            expected_epcs={},
        )
        self._receipts[unplanned.receipt_id] = unplanned
        return unplanned

    def _take(self, receipt: _Receipt, movement: Movement) -> None:
        if receipt.state is ReceiptState.EXPECTED:
            receipt.state = ReceiptState.RECEIVING
            receipt.started_at = movement.observed_at
        receipt.received[movement.sku] = receipt.received.get(movement.sku, 0) + movement.quantity
        for urn in movement.epcs:
            receipt.received_epcs[urn] = movement.sku
        receipt.movement_ids.append(movement.movement_id)
        if receipt.last_activity_at is None or movement.observed_at > receipt.last_activity_at:
            receipt.last_activity_at = movement.observed_at

    def _reverse(self, movement: Movement) -> bool:
        """A non-receipt movement taking back EPCs an open receipt took in: subtract them."""
        per_epc = movement.quantity // len(movement.epcs)
        reversed_any = False
        for receipt in self._open():
            if receipt.door is not None and receipt.door != movement.source_id:
                continue
            back = [urn for urn in movement.epcs if urn in receipt.received_epcs]
            if not back:
                continue
            for urn in back:
                del receipt.received_epcs[urn]
            receipt.received[movement.sku] = receipt.received.get(movement.sku, 0) - per_epc * len(
                back
            )
            receipt.movement_ids.append(movement.movement_id)
            if receipt.last_activity_at is None or movement.observed_at > receipt.last_activity_at:
                receipt.last_activity_at = movement.observed_at
            reversed_any = True
        return reversed_any

    # --- completion -------------------------------------------------------------------------

    def _report(self, receipt: _Receipt, now: datetime) -> Alert:
        expected = receipt.expected
        received = {sku: qty for sku, qty in receipt.received.items() if qty > 0}
        over = {s: received[s] - q for s, q in expected.items() if received.get(s, 0) > q}
        short = {s: q - received.get(s, 0) for s, q in expected.items() if received.get(s, 0) < q}
        unexpected = {s: q for s, q in received.items() if s not in expected}
        listed_skus = set(receipt.expected_epcs.values())
        missing_epcs = sorted(set(receipt.expected_epcs) - set(receipt.received_epcs))
        unexpected_epcs = sorted(
            urn
            for urn, sku in receipt.received_epcs.items()
            if urn not in receipt.expected_epcs and (sku in listed_skus or sku not in expected)
        )
        discrepancy = bool(over or short or unexpected or missing_epcs or unexpected_epcs)
        where = f" at {receipt.door}" if receipt.door else ""
        if discrepancy:
            parts = [
                *(f"short {s} {q}" for s, q in sorted(short.items())),
                *(f"over {s} {q}" for s, q in sorted(over.items())),
                *(f"unexpected {s} {q}" for s, q in sorted(unexpected.items())),
            ]
            if missing_epcs:
                parts.append(f"{len(missing_epcs)} expected EPC(s) missing")
            if unexpected_epcs:
                parts.append(f"{len(unexpected_epcs)} unexpected EPC(s)")
            kind = "unplanned receipt" if not receipt.planned else "receipt"
            message = f"{kind} {receipt.receipt_id}{where}: " + ", ".join(parts)
        else:
            message = (
                f"receipt {receipt.receipt_id}{where} complete: all {len(expected)} SKU(s) matched"
            )
        details: dict[str, object] = {
            "receipt_id": receipt.receipt_id,
            "door": receipt.door,
            "po": receipt.po,
            "planned": receipt.planned,
            "expected": dict(sorted(expected.items())),
            "received": dict(sorted(received.items())),
            "over": dict(sorted(over.items())),
            "short": dict(sorted(short.items())),
            "unexpected": dict(sorted(unexpected.items())),
            "missing_epcs": missing_epcs,
            "unexpected_epcs": unexpected_epcs,
            "movement_ids": list(receipt.movement_ids),
            "started_at": receipt.started_at.isoformat() if receipt.started_at else None,
            "completed_at": now.isoformat(),
        }
        return Alert(
            alert_id=f"{AlertKind.RECEIVING_DISCREPANCY}:{receipt.receipt_id}",
            kind=AlertKind.RECEIVING_DISCREPANCY,
            severity=Severity.WARNING if discrepancy else Severity.INFO,
            subject=receipt.receipt_id,
            message=message,
            raised_at=now,
            active=discrepancy,
            details=details,
        )
