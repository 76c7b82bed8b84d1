"""The edge store's contract on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dockwatch_core.errors import StoreError
from edge_store import (
    AlertRecord,
    DeviceRecord,
    EdgeStore,
    ItemRecord,
    LocationRecord,
    MovementRecord,
    StockRecord,
    StoredMovement,
    redact_url,
)
from gateway.domain.model import (
    Alert,
    AlertKind,
    CatalogItem,
    DeviceId,
    DeviceState,
    DeviceStatus,
    Movement,
    MovementKind,
    Severity,
    Sku,
    SourceType,
)
from tests.test_store_support import (
    ITEMS,
    LOCATIONS,
    SITE,
    T0,
    as_record,
    at,
    movement,
    open_store,
)


@pytest.fixture
def store(database_url: str) -> Iterator[EdgeStore]:
    with open_store(database_url) as s:
        yield s


def seqs(store: EdgeStore) -> list[int]:
    return [r.seq for r in store.movements_since(0, limit=10_000)]


def levels(store: EdgeStore) -> dict[tuple[str, str], int]:
    return {(lv.location, lv.sku): lv.on_hand for lv in store.stock()}


def test_empty_store(store: EdgeStore) -> None:
    assert store.last_seq() == 0
    assert store.movements_since(0) == []
    assert store.stock() == []
    assert store.cursors() == {}
    assert store.get_cursor("mqtt") == 0
    assert store.alerts(active_only=False) == []
    assert store.device_statuses() == []
    assert store.site == SITE


def test_seq_is_gap_free_across_batches_and_reopen(database_url: str) -> None:
    with open_store(database_url) as s:
        first = s.record([movement("a"), movement("b"), movement("c")], now=at(1))
        second = s.record([movement("d")], now=at(2))
        assert [r.seq for r in first.recorded] == [1, 2, 3]
        assert [r.seq for r in second.recorded] == [4]
    with EdgeStore.open(database_url, site=SITE) as s:
        assert s.last_seq() == 4
        third = s.record([movement("e"), movement("f")], now=at(3))
        assert [r.seq for r in third.recorded] == [5, 6]
        assert seqs(s) == [1, 2, 3, 4, 5, 6]
        assert [r.movement.movement_id for r in s.movements_since(0)] == list("abcdef")
        assert all(r.site == SITE for r in s.movements_since(0))


def test_repeat_in_a_later_batch_changes_nothing(store: EdgeStore) -> None:
    store.record([movement("a", quantity=5), movement("b", quantity=2)], now=at(1))
    result = store.record([movement("b", quantity=2), movement("c", quantity=1)], now=at(2))
    assert result.duplicates == ("b",)
    assert [(r.seq, r.movement.movement_id) for r in result.recorded] == [(3, "c")]
    assert levels(store)[("receiving", "SKU-1")] == 8
    only_dups = store.record([movement("a", quantity=5), movement("c")], now=at(3))
    assert only_dups.recorded == ()
    assert only_dups.duplicates == ("a", "c")
    assert only_dups.stock == ()
    assert store.last_seq() == 3
    # A batch of duplicates touched no level: updated_at is still the last real change.
    assert store.stock(location="receiving")[0].updated_at == at(2)


def test_repeat_within_a_batch_is_recorded_once(store: EdgeStore) -> None:
    result = store.record(
        [movement("a", quantity=3), movement("a", quantity=3), movement("b"), movement("a")],
        now=at(1),
    )
    assert [(r.seq, r.movement.movement_id) for r in result.recorded] == [(1, "a"), (2, "b")]
    assert result.duplicates == ("a", "a")
    assert levels(store) == {("receiving", "SKU-1"): 4, ("yard", "SKU-1"): -4}


def test_stock_arithmetic(store: EdgeStore) -> None:
    # Two cases of 12 arrive: the caller already converted them to 24 eaches.
    receipt = store.record(
        [movement("r1", sku="SKU-2", quantity=24, epcs=("3074257BF7194E4000001A85",))],
        now=at(1),
    )
    assert receipt.stock == (
        StockRecord("receiving", "SKU-2", 24, at(1), 1),
        StockRecord("yard", "SKU-2", -24, at(1), 1),
    )
    moved = store.record(
        [
            movement("t1", sku="SKU-2", quantity=10, src="receiving", dst="shelf-a1",
                     kind=MovementKind.TRANSFER),
            movement("p1", sku="SKU-2", quantity=3, src="shelf-a1", dst="customer",
                     kind=MovementKind.PICK, source_type=SourceType.WEIGHT_SHELF,
                     source_id="shelf-a1"),
            movement("p2", sku="SKU-2", quantity=2, src="shelf-a1", dst="customer",
                     kind=MovementKind.PICK),
            movement("x1", sku="SKU-1", quantity=1, src="yard", dst="shelf-a1"),
        ],
        now=at(2),
    )  # fmt: skip
    assert [(lv.location, lv.sku, lv.on_hand, lv.last_seq) for lv in moved.stock] == [
        ("customer", "SKU-2", 5, 4),
        ("receiving", "SKU-2", 14, 2),
        ("shelf-a1", "SKU-1", 1, 5),
        ("shelf-a1", "SKU-2", 5, 4),
        ("yard", "SKU-1", -1, 5),
    ]
    assert all(lv.updated_at == at(2) for lv in moved.stock)
    # The yard is a counterparty: it goes negative, and the store says so rather than clamping.
    assert levels(store) == {
        ("customer", "SKU-2"): 5,
        ("receiving", "SKU-2"): 14,
        ("shelf-a1", "SKU-1"): 1,
        ("shelf-a1", "SKU-2"): 5,
        ("yard", "SKU-1"): -1,
        ("yard", "SKU-2"): -24,
    }
    assert [lv.sku for lv in store.stock(location="shelf-a1")] == ["SKU-1", "SKU-2"]
    assert [lv.location for lv in store.stock(sku="SKU-2")] == [
        "customer", "receiving", "shelf-a1", "yard"
    ]  # fmt: skip
    assert store.stock(location="shelf-a1", sku="SKU-1")[0].on_hand == 1
    assert store.stock(location="nowhere") == []
    # Every movement's quantity leaves one place and arrives at another: stock is conserved.
    assert sum(levels(store).values()) == 0


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (movement("bad", sku="NO-SUCH-SKU"), "unknown sku ['NO-SUCH-SKU']"),
        (movement("bad", dst="dock-9"), "unknown location ['dock-9']"),
    ],
)
def test_failing_batch_rolls_back_entirely_and_burns_no_seq(
    store: EdgeStore, bad: Movement, named: str
) -> None:
    store.record([movement("a", quantity=2)], now=at(1))
    before_stock = store.stock()
    with pytest.raises(StoreError) as err:
        store.record([movement("b"), movement("c"), bad, movement("d")], now=at(2))
    assert named in str(err.value)
    assert "record failed on" in str(err.value)
    assert store.last_seq() == 1
    assert seqs(store) == [1]
    assert store.movement_by_id("b") is None
    assert store.stock() == before_stock
    after = store.record([movement("b"), movement("c")], now=at(3))
    assert [r.seq for r in after.recorded] == [2, 3]


def test_movements_since_pages_in_seq_order(store: EdgeStore) -> None:
    for batch in range(5):
        store.record([movement(f"m{batch}-{i}", at=at(batch)) for i in range(5)], now=at(batch))
    pages, cursor = [], 0
    while page := store.movements_since(cursor, limit=7):
        pages.append([r.seq for r in page])
        cursor = page[-1].seq
    assert pages == [list(range(1, 8)), list(range(8, 15)), list(range(15, 22)), [22, 23, 24, 25]]
    assert [r.seq for r in store.movements_since(5, limit=2)] == [6, 7]
    assert store.movements_since(25) == []
    assert len(store.movements_since(0)) == 25
    with pytest.raises(ValueError, match="limit"):
        store.movements_since(0, limit=0)


def test_movement_round_trips_every_field(store: EdgeStore) -> None:
    original = movement(
        "door-1:3074257BF7194E4000001A85:1767600000",
        sku="SKU-2",
        quantity=12,
        kind=MovementKind.SHIPMENT,
        src="receiving",
        dst="yard",
        at=datetime(2026, 1, 5, 23, 59, 59, 999999, tzinfo=UTC),
        epcs=("3074257BF7194E4000001A85", "3074257BF7194E4000001A86"),
        container="urn:epc:id:sscc:0614141.1234567890",
        confidence=0.5,
        source_type=SourceType.MANUAL,
        source_id="operator-7",
    )
    [recorded] = store.record([original], now=at(1)).recorded
    assert recorded.movement is original  # record gives back the very movement it was given
    fetched = store.movement_by_id(original.movement_id)
    assert fetched is not None
    assert fetched == StoredMovement(recorded.seq, SITE, as_record(original, MovementRecord))
    assert fetched.movement.observed_at.tzinfo is not None
    assert fetched.movement.observed_at.utcoffset() == timedelta(0)
    assert store.movements_since(0) == [fetched]
    assert store.movement_by_id("missing") is None


def test_aware_datetimes_round_trip(store: EdgeStore) -> None:
    # The same instant written with a UTC tzinfo other than datetime.UTC comes back equal.
    other_utc = datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(0), "Z"))
    store.record([movement("a", at=other_utc)], now=other_utc)
    [level] = store.stock(location="receiving")
    for value in (level.updated_at, store.movements_since(0)[0].movement.observed_at):
        assert value == other_utc
        assert value.utcoffset() == timedelta(0)
    store.set_device_status(
        DeviceStatus(DeviceId("door-1-reader"), "llrp_reader", DeviceState.ONLINE, other_utc)
    )
    assert store.device_statuses()[0].since == other_utc
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record([movement("b")], now=datetime(2026, 1, 1))  # noqa: DTZ001 - the point
    with pytest.raises(ValueError, match="timezone-aware"):
        store.advance_cursor("mqtt", 1, now=datetime(2026, 1, 1))  # noqa: DTZ001 - the point


def test_cursors_only_move_forward(database_url: str) -> None:
    with open_store(database_url) as store:
        store.record([movement(f"m{i}") for i in range(5)], now=at(1))
        store.advance_cursor("mqtt", 3, now=at(2))
        store.advance_cursor("mqtt", 2, now=at(3))  # a late, lower ack
        store.advance_cursor("central", 5, now=at(3))
        store.advance_cursor("central", 5, now=at(4))
        assert store.get_cursor("mqtt") == 3
        assert store.cursors() == {"central": 5, "mqtt": 3}
        with pytest.raises(ValueError, match="last recorded seq is 5"):
            store.advance_cursor("mqtt", 6, now=at(5))
        with pytest.raises(ValueError, match=">= 0"):
            store.advance_cursor("mqtt", -1, now=at(5))
        assert store.get_cursor("mqtt") == 3
    with EdgeStore.open(database_url, site=SITE) as store:
        assert store.cursors() == {"central": 5, "mqtt": 3}
        assert store.get_cursor("never-acked") == 0


def test_alerts_upsert_and_clear(store: EdgeStore) -> None:
    low = Alert(
        alert_id="low_stock:shelf-a1:SKU-1",
        kind=AlertKind.LOW_STOCK,
        severity=Severity.WARNING,
        subject="shelf-a1/SKU-1",
        message="on hand 4 <= reorder point 5",
        raised_at=at(1),
        details={"on_hand": 4, "reorder_point": 5, "epcs": ["A", "B"], "ratio": 0.8},
    )
    down = Alert(
        alert_id="device_down:door-1-reader",
        kind=AlertKind.DEVICE_DOWN,
        severity=Severity.CRITICAL,
        subject="door-1-reader",
        message="no keepalive for 30 s",
        raised_at=at(2),
    )
    store.upsert_alert(low)
    store.upsert_alert(down)
    assert store.alerts() == [as_record(a, AlertRecord) for a in (low, down)]
    worse = Alert(
        alert_id=low.alert_id,
        kind=low.kind,
        severity=Severity.CRITICAL,
        subject=low.subject,
        message="on hand 0 <= reorder point 5",
        raised_at=at(3),
        details={"on_hand": 0},
    )
    store.upsert_alert(worse)
    assert store.alerts() == [as_record(a, AlertRecord) for a in (down, worse)]
    cleared = Alert(
        alert_id=down.alert_id,
        kind=down.kind,
        severity=Severity.INFO,
        subject=down.subject,
        message="back online",
        raised_at=at(4),
        active=False,
    )
    store.upsert_alert(cleared)
    assert store.alerts() == [as_record(worse, AlertRecord)]
    assert store.alerts(active_only=False) == [as_record(a, AlertRecord) for a in (worse, cleared)]


def test_device_status_upserts_per_device(store: EdgeStore) -> None:
    reader = DeviceStatus(DeviceId("door-1-reader"), "llrp_reader", DeviceState.ONLINE, at(1))
    shelf = DeviceStatus(
        DeviceId("shelf-a1"), "modbus_shelf", DeviceState.DEGRADED, at(2), "2 timeouts in 10 s"
    )
    store.set_device_status(shelf)
    store.set_device_status(reader)
    assert store.device_statuses() == [as_record(d, DeviceRecord) for d in (reader, shelf)]
    offline = DeviceStatus(
        DeviceId("door-1-reader"), "llrp_reader", DeviceState.OFFLINE, at(3), "connection refused"
    )
    store.set_device_status(offline)
    assert store.device_statuses() == [as_record(d, DeviceRecord) for d in (offline, shelf)]


def test_sync_catalog_upserts_and_keeps_what_is_gone(store: EdgeStore) -> None:
    assert store.items() == [as_record(i, ItemRecord) for i in sorted(ITEMS, key=lambda i: i.sku)]
    assert store.locations() == sorted(LOCATIONS, key=lambda loc: loc.id)
    renamed = CatalogItem(
        sku=Sku("SKU-1"), name="Widget v2", gtin="00614141123452", reorder_point=3
    )
    store.sync_catalog(
        [renamed, CatalogItem(sku=Sku("SKU-9"), name="New")], [LocationRecord("dock-2")]
    )
    items = {i.sku: i for i in store.items()}
    assert items["SKU-1"] == as_record(renamed, ItemRecord)
    assert set(items) == {"SKU-1", "SKU-2", "SKU-3", "SKU-9"}
    assert [loc.id for loc in store.locations()] == [
        "customer", "dock-2", "receiving", "shelf-a1", "yard"
    ]  # fmt: skip
    result = store.record([movement("n", sku="SKU-9", src="dock-2", dst="shelf-a1")], now=at(1))
    assert [r.seq for r in result.recorded] == [1]


def test_the_store_holds_only_gtins_that_pass_the_one_rule(store: EdgeStore) -> None:
    """The store keeps a GTIN as given; the gateway gives it CatalogItems, which normalise and
    check it (the one GTIN rule), so a wrong check digit never gets that far, and the error
    names the item and the digit."""
    with pytest.raises(ValueError, match=r"gtin of SKU-7: GTIN '614141999997' has check digit 7, "):
        store.sync_catalog([CatalogItem(sku=Sku("SKU-7"), gtin="614141999997")], [])
    assert "SKU-7" not in {i.sku for i in store.items()}
    store.sync_catalog([CatalogItem(sku=Sku("SKU-7"), gtin="614141999996")], [])
    assert [i.gtin for i in store.items() if i.sku == "SKU-7"] == ["00614141999996"]


def test_store_belongs_to_one_site(database_url: str) -> None:
    open_store(database_url).close()
    with pytest.raises(StoreError, match="belongs to site 'dc-test', not 'dc-west'"):
        EdgeStore.open(database_url, site="dc-west")


def test_without_upgrade_an_empty_database_is_refused(database_url: str) -> None:
    with pytest.raises(StoreError, match="dockwatch db upgrade"):
        EdgeStore.open(database_url, site=SITE, upgrade=False)
    open_store(database_url).close()
    with EdgeStore.open(database_url, site=SITE, upgrade=False) as s:
        assert s.last_seq() == 0


def test_closed_store_raises(database_url: str) -> None:
    s = open_store(database_url)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.last_seq()


def test_unreachable_database_error_names_url_without_password() -> None:
    url = "postgresql+psycopg://dock:s3cr3t-pw@127.0.0.1:1/edge?connect_timeout=2"
    with pytest.raises(StoreError) as err:
        EdgeStore.open(url, site=SITE)
    message = str(err.value)
    assert "s3cr3t-pw" not in message
    assert "dock:***@127.0.0.1:1/edge" in message
    assert "schema upgrade failed" in message


def test_unusable_url_is_a_store_error_without_password() -> None:
    with pytest.raises(StoreError) as err:
        EdgeStore.open("nosuchdb+driver://u:hunter2@h/db", site=SITE)
    assert "hunter2" not in str(err.value)
    with pytest.raises(StoreError) as err:
        EdgeStore.open("not a url://u:hunter2@h", site=SITE)
    assert "hunter2" not in str(err.value)


def test_redact_url() -> None:
    assert redact_url("postgresql+psycopg://u:p%40ss@db:5432/edge") == (
        "postgresql+psycopg://u:***@db:5432/edge"
    )
    assert redact_url("postgresql+psycopg://u@db/edge?password=x&sslmode=require") == (
        "postgresql+psycopg://u@db/edge?password=***&sslmode=require"
    )
    assert redact_url("sqlite:///./var/edge.db") == "sqlite:///./var/edge.db"
    assert "pw" not in redact_url("::garbage://user:pw@host")


def test_in_memory_sqlite_is_one_database_for_every_thread() -> None:
    with EdgeStore.open("sqlite://", site=SITE) as s:
        s.sync_catalog(ITEMS, LOCATIONS)
        worker = threading.Thread(target=lambda: s.record([movement("a")], now=T0))
        worker.start()
        worker.join()
        assert [r.movement.movement_id for r in s.movements_since(0)] == ["a"]


def test_now_in_another_zone_is_refused(store: EdgeStore) -> None:
    paris = timezone(timedelta(hours=1))
    with pytest.raises(ValueError, match="UTC"):
        store.record([movement("a")], now=datetime(2026, 1, 1, tzinfo=paris))
    assert store.last_seq() == 0


def test_the_store_takes_any_value_with_the_fields_it_reads(store: EdgeStore) -> None:
    """Nothing of the gateway is needed to record: the store's own record will do, and a
    movement read back has plain strings where the gateway's values have its StrEnums."""
    mine = MovementRecord(
        movement_id="plain-1",
        kind="transfer",
        sku="SKU-1",
        quantity=2,
        from_location="receiving",
        to_location="shelf-a1",
        source_type="manual",
        source_id="operator-7",
        observed_at=at(1),
        confidence=1.0,
        reason="reconciliation",
    )
    [recorded] = store.record([mine], now=at(2)).recorded
    assert store.movements_since(0) == [recorded]
    kinds = [(type(r.movement.kind), r.movement.kind) for r in store.movements_since(0)]
    assert kinds == [(str, "transfer")]


NAIVE = datetime(2026, 1, 5, 8)  # noqa: DTZ001 - naive on purpose
UTC_PLUS_1 = datetime(2026, 1, 5, 9, tzinfo=timezone(timedelta(hours=1)))


@pytest.mark.parametrize("observed_at", [NAIVE, UTC_PLUS_1], ids=["naive", "utc+1"])
def test_a_movement_not_in_utc_is_refused_and_nothing_is_stored(
    store: EdgeStore, observed_at: datetime
) -> None:
    """The store keeps UTC (on SQLite as text without an offset): what it is given must be."""
    fine = movement("fine")
    odd = movement("odd")
    object.__setattr__(odd, "observed_at", observed_at)  # past Movement's own UTC check
    with pytest.raises(ValueError, match="timezone-aware UTC"):
        store.record([fine, odd], now=at(1))
    assert store.movements_since(0) == []
    assert store.stock() == []
