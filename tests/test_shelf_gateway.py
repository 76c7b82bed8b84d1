"""The gateway (``dockwatch run``'s Gateway) against the real Modbus shelf simulator: opening
count, the count after a restart, and garbage from the transmitter.

Real time (speed 1): each test runs a short scenario and waits on the store for what it expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from edge_store import AlertRecord, DeviceRecord, EdgeStore, MovementRecord, StoredMovement
from gateway.app import Gateway
from gateway.config import GatewayConfig, parse_config
from gateway.domain.model import (
    AlertKind,
    DeviceState,
    MovementKind,
    MovementReason,
)
from simulators.modbus.server import ShelfSimulator
from simulators.shelf_scenario import ShelfScenario, shelf_scenario_from_mapping
from tests.support.net import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNIT_G = 250.0
REORDER_POINT = 10


def scenario(initial: int, events: list[dict[str, Any]]) -> ShelfScenario:
    return shelf_scenario_from_mapping(
        {
            "name": "gateway-shelf",
            "seed": 7,
            "duration_s": 120,
            "shelves": [
                {
                    "id": "shelf-a1",
                    "unit": 1,
                    "sku": "SKU-1001",
                    "unit_weight_g": UNIT_G,
                    "item_sigma_g": 2.0,
                    "initial_units": initial,
                    "noise_g": 0.8,
                    "encoding": {"type": "float32", "word_order": "big", "scale": 1.0},
                    "events": events,
                }
            ],
        }
    )


def config(tmp_path: Path, modbus_port: int, *, status: bool = True) -> GatewayConfig:
    shelf: dict[str, Any] = {
        "id": "shelf-a1",
        "location": "shelf-a1",
        "sku": "SKU-1001",
        "modbus": {"host": "127.0.0.1", "port": modbus_port, "unit": 1, "timeout_s": 0.5},
        "weight": {"table": "holding", "address": 0, "type": "float32"},
        "capacity_g": 30_000.0,
    }
    if status:
        shelf["status"] = {"table": "holding", "address": 2, "stable_bit": 0}
    return parse_config(
        {
            "site": {"id": "shelf-gw"},
            "store": {"url": f"sqlite:///{tmp_path / 'edge.db'}"},
            "catalog": {
                "items": [
                    {
                        "sku": "SKU-1001",
                        "gtin": "00614141123452",
                        "name": "Widget",
                        "unit_weight_g": UNIT_G,
                        "reorder_point": REORDER_POINT,
                    }
                ]
            },
            "locations": [{"id": "shelf-a1"}],
            "shelves": [shelf],
            "api": {
                "grpc_listen": f"127.0.0.1:{free_port()}",
                "metrics_listen": f"127.0.0.1:{free_port()}",
            },
        }
    )


@contextlib.asynccontextmanager
async def running(cfg: GatewayConfig) -> AsyncIterator[Gateway]:
    gateway = Gateway(cfg)
    task = asyncio.create_task(gateway.run())
    try:
        yield gateway
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def stored(cfg: GatewayConfig) -> tuple[list[StoredMovement[MovementRecord]], list[AlertRecord]]:
    with EdgeStore.open(cfg.store.url, site="shelf-gw") as store:
        return store.movements_since(0), store.alerts(active_only=False)


async def until(
    cfg: GatewayConfig,
    predicate: Callable[[list[StoredMovement[MovementRecord]], list[AlertRecord]], bool],
    within_s: float,
) -> tuple[list[StoredMovement[MovementRecord]], list[AlertRecord]]:
    deadline = time.monotonic() + within_s
    while True:
        movements, alerts = await asyncio.to_thread(stored, cfg)
        if predicate(movements, alerts):
            return movements, alerts
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {movements} {alerts}")
        await asyncio.sleep(0.2)


def test_an_empty_store_is_opened_from_the_weight_and_low_stock_follows_the_pick(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        sim = ShelfSimulator(scenario=scenario(12, [{"t": 6.0, "pick": 4}]))
        async with sim:
            cfg = config(tmp_path, sim.port)
            async with running(cfg):
                movements, alerts = await until(cfg, lambda m, _a: len(m) >= 1, 10.0)
                opening = movements[0].movement
                assert (opening.kind, opening.quantity, opening.reason) == (
                    MovementKind.ADJUSTMENT,
                    12,
                    MovementReason.OPENING_COUNT,
                )
                # Counted from the first settled weight, seconds after start, not minutes.
                assert sim.scenario_time() < 5.0
                # 12 on hand is above the reorder point: no alert at start (once "-1 on hand").
                assert not [a for a in alerts if a.kind == AlertKind.LOW_STOCK and a.active]
                movements, alerts = await until(
                    cfg,
                    lambda m, a: any(x.kind == AlertKind.LOW_STOCK and x.active for x in a),
                    12.0,
                )
                # The pick ends at 6.8 s; the alert follows it within 3 s of the weight settling.
                assert sim.scenario_time() < 6.8 + 3.5
        pick = movements[1].movement
        assert (pick.kind, pick.quantity, pick.reason) == (MovementKind.PICK, 4, None)
        [low] = [a for a in alerts if a.kind == AlertKind.LOW_STOCK]
        assert "8 on hand" in low.message

    uvloop.run(go())


def test_a_restart_records_what_changed_while_the_gateway_was_down_at_once(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        # The pick happens at 8 s, while the gateway is stopped.
        sim = ShelfSimulator(scenario=scenario(30, [{"t": 8.0, "pick": 3}]))
        async with sim:
            cfg = config(tmp_path, sim.port)
            async with running(cfg):
                await until(cfg, lambda m, _a: len(m) >= 1, 10.0)
            while sim.scenario_time() < 10.0:  # noqa: ASYNC110 - waiting for scenario time
                await asyncio.sleep(0.1)
            restarted = sim.scenario_time()
            async with running(cfg):
                movements, _ = await until(cfg, lambda m, _a: len(m) >= 2, 10.0)
                # At once: the first settled weight after start, not reconcile_after_s later.
                assert sim.scenario_time() - restarted < 4.0
        change = movements[1].movement
        assert (change.kind, change.quantity, change.reason) == (
            MovementKind.PICK,
            3,
            MovementReason.OFFLINE_CHANGE,
        )
        assert len(movements) == 2

    uvloop.run(go())


@pytest.mark.parametrize("status", [True, False], ids=["status-word", "weight-only"])
def test_garbage_from_the_transmitter_is_one_device_fault_never_a_movement(
    tmp_path: Path, status: bool, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[dict[str, Any]] = [
        {"t": 4.0, "failure": "garbage", "garbage": "huge", "duration": 1.5},
        {"t": 8.0, "failure": "garbage", "garbage": "negative", "duration": 1.5},
        {"t": 12.0, "failure": "garbage", "garbage": "nan", "duration": 1.5},
        {"t": 16.0, "failure": "garbage", "garbage": "wrapped", "duration": 1.5},
        {"t": 20.0, "pick": 2},
    ]
    caplog.set_level(logging.INFO)

    async def go() -> tuple[list[StoredMovement[MovementRecord]], list[DeviceRecord]]:
        sim = ShelfSimulator(scenario=scenario(20, events))
        async with sim:
            cfg = config(tmp_path, sim.port, status=status)
            async with running(cfg):
                movements, _ = await until(
                    cfg, lambda m, _a: any(x.movement.kind == MovementKind.PICK for x in m), 30.0
                )
                statuses = await asyncio.to_thread(_statuses, cfg)
        return movements, statuses

    movements, statuses = uvloop.run(go())
    # Counting goes on after the garbage: the opening count, then the pick, and nothing else.
    assert [(m.movement.kind, m.movement.quantity) for m in movements] == [
        (MovementKind.ADJUSTMENT, 20),
        (MovementKind.PICK, 2),
    ]
    raised = [
        r.getMessage()
        for r in caplog.records
        if "implausible weight" in r.getMessage() and r.levelno >= logging.WARNING
    ]
    # One line per episode, naming the value and the plausible range.
    assert len(raised) == 4, raised
    assert any("1e+30" in line for line in raised), raised
    assert any("nan" in line for line in raised), raised
    assert all("plausible -" in line for line in raised), raised
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"
    # Degraded while it read garbage, online again once it read a sane settled weight.
    [shelf] = [s for s in statuses if s.device_id == "shelf-a1"]
    assert shelf.state == DeviceState.ONLINE


def _statuses(cfg: GatewayConfig) -> list[DeviceRecord]:
    with EdgeStore.open(cfg.store.url, site="shelf-gw") as store:
        return store.device_statuses()
