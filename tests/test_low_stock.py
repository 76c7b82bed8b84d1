"""Low-stock alerts: raised at the reorder point, cleared above it plus hysteresis, stable ids."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.model import AlertKind, LocationId, Sku, StockLevel
from gateway.domain.stock import LowStockMonitor, low_stock_alert_id

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SHELF = LocationId("shelf-a1")
SKU = Sku("SKU-1001")


def monitor(hysteresis: int = 2) -> LowStockMonitor:
    return LowStockMonitor({SKU: 10}, hysteresis=hysteresis)


def test_falling_to_the_reorder_point_raises_once() -> None:
    m = monitor()
    first = m.update(SHELF, SKU, 14, T0)
    assert first is not None
    assert not first.active  # the first observation states the current state (retained on MQTT)
    assert m.update(SHELF, SKU, 11, T0) is None
    raised = m.update(SHELF, SKU, 10, T0 + timedelta(seconds=1))
    assert raised is not None
    assert raised.active
    assert raised.kind is AlertKind.LOW_STOCK
    assert raised.alert_id == low_stock_alert_id(SHELF, SKU) == "low_stock:shelf-a1:SKU-1001"
    assert raised.details["on_hand"] == 10
    assert raised.details["reorder_point"] == 10
    assert raised.raised_at == T0 + timedelta(seconds=1)
    assert m.update(SHELF, SKU, 7, T0) is None
    assert m.is_low(SHELF, SKU) is True


def test_clearing_needs_the_hysteresis_margin() -> None:
    m = monitor(hysteresis=2)
    assert m.update(SHELF, SKU, 9, T0) is not None
    assert m.update(SHELF, SKU, 11, T0) is None  # restocked a little: still low
    assert m.update(SHELF, SKU, 12, T0) is None  # reorder point + hysteresis: still low
    cleared = m.update(SHELF, SKU, 13, T0)
    assert cleared is not None
    assert not cleared.active
    assert cleared.alert_id == low_stock_alert_id(SHELF, SKU)
    assert m.update(SHELF, SKU, 11, T0) is None  # back into the band from above: not low
    assert m.update(SHELF, SKU, 10, T0) is not None


def test_first_observation_inside_the_band_is_not_low() -> None:
    m = monitor()
    alert = m.update(SHELF, SKU, 11, T0)
    assert alert is not None
    assert not alert.active


def test_items_without_reorder_point_never_alert() -> None:
    m = monitor()
    assert m.update(SHELF, Sku("SKU-2"), 0, T0) is None
    assert m.is_low(SHELF, Sku("SKU-2")) is None


def test_locations_are_independent_and_observe_takes_stock_levels() -> None:
    m = monitor()
    other = LocationId("shelf-b2")
    a = m.observe(StockLevel(SHELF, SKU, 3, T0, last_seq=5))
    b = m.observe(StockLevel(other, SKU, 30, T0, last_seq=5))
    assert a is not None
    assert a.active
    assert b is not None
    assert not b.active
    assert a.alert_id != b.alert_id


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        LowStockMonitor({SKU: 1}, hysteresis=-1)
    with pytest.raises(ValueError, match="reorder_point"):
        LowStockMonitor({SKU: -1})


@given(
    levels=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=60),
    point=st.integers(min_value=0, max_value=15),
    hysteresis=st.integers(min_value=0, max_value=5),
)
def test_property_state_follows_the_rule_and_alerts_alternate(
    levels: list[int], point: int, hysteresis: int
) -> None:
    m = LowStockMonitor({SKU: point}, hysteresis=hysteresis)
    states: list[bool] = []
    low: bool | None = None
    for i, level in enumerate(levels):
        alert = m.update(SHELF, SKU, level, T0 + timedelta(seconds=i))
        if level <= point:
            expected = True
        elif level > point + hysteresis:
            expected = False
        else:
            expected = bool(low)
        assert (alert is not None) == (low is not expected)
        if alert is not None:
            assert alert.active is expected
            states.append(alert.active)
        low = expected
        assert m.is_low(SHELF, SKU) is expected
    assert all(a != b for a, b in itertools.pairwise(states))
