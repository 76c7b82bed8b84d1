"""LLRP faults: real sllurp against the simulator misbehaving on purpose.

Each fault test runs two readers in one event loop: ``reader-a`` meets the fault, ``reader-b`` is
healthy and must keep delivering throughout. Settings are short (keepalive 1 s, 0.5 s for the
watchdog test; backoff capped at 0.4 s) so each test takes a few seconds.

Tests wait on conditions, never for a fixed time. Where a time limit is the behaviour under test,
it is measured with ``time.monotonic()`` around the event and bounded by the configured period
plus slack for a loaded machine; a lower bound, where one matters, needs no slack.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.domain.model import DeviceState
from gateway.llrp import codec
from simulators.llrp.server import LlrpReaderSimulator
from tests.support.net import free_port
from tests.test_llrp_adapter import (
    ADAPTER_LOGGER,
    FAST_BACKOFF,
    Recorder,
    RecordingBackoff,
    gateway_errors,
    make_adapter,
    running,
    simulator,
    sllurp_threads,
)

pytestmark = pytest.mark.integration

RECOVERY_LIMIT_S = 5.0  # the figure


def _online(rec: Recorder) -> Callable[[], bool]:
    return lambda: bool(rec.statuses) and rec.statuses[-1].state is DeviceState.ONLINE


def _offline(rec: Recorder) -> Callable[[], bool]:
    return lambda: bool(rec.statuses) and rec.statuses[-1].state is DeviceState.OFFLINE


def _still_offline(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "still offline" in r.getMessage()]


def _assert_one_error(caplog: pytest.LogCaptureFixture, *fragments: str) -> None:
    errors = gateway_errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    for fragment in ("reader-a", *fragments):
        assert fragment in message, message
    assert getattr(errors[0], "reader_id", None) == "reader-a"


def _assert_recovery_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    recovered = [r for r in caplog.records if "is online again" in r.getMessage()]
    assert len(recovered) == 1
    assert recovered[0].levelno == logging.INFO


# -- the connection drops ----------------------------------------------------------------------


def test_reads_flow_again_within_5_s_of_the_reader_accepting_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)

    async def scenario() -> float:
        sim = simulator()
        await sim.start()
        port = sim.port
        adapter, rec = make_adapter(port, "reader-a")
        try:
            async with running(adapter):
                await rec.until(lambda: len(rec.batches) >= 3)
                # Mid-inventory: the reader drops the link and is away for a moment.
                await sim.drop_connections()
                await sim.stop()
                await rec.until(_offline(rec))
                # The reader is really down for a while: the gateway tries and is refused twice.
                tried = adapter.stats.reconnects
                await rec.until(lambda: adapter.stats.reconnects >= tried + 2)
                sim = simulator(port)
                # Counted from before start(): it may accept as soon as it is listening.
                back_at = time.monotonic()
                await sim.start()
                # The deadline only bounds a broken run; the limit is asserted on the measure.
                await rec.until(lambda: rec.batches_after(back_at) > 0, 3 * RECOVERY_LIMIT_S)
                first = min(
                    b.received_at_monotonic
                    for b in rec.batches
                    if b.received_at_monotonic > back_at
                )
                return first - back_at
        finally:
            await sim.stop()

    recovered_in = asyncio.run(scenario())
    print(f"reads flowed again {recovered_in:.3f} s after the simulator accepted connections")
    assert recovered_in < RECOVERY_LIMIT_S
    _assert_one_error(caplog, "offline", "connection closed", "127.0.0.1:")
    _assert_recovery_logged_once(caplog)
    assert sllurp_threads() == []


# -- protocol faults: the byte stream can no longer be trusted ----------------------------------

PROTOCOL_FAULTS: dict[str, tuple[bytes, str]] = {
    # 0xDEAD... reads as version 7: no LLRP version has that
    "garbage": (b"\xde\xad\xbe\xef" * 8, "malformed LLRP frame header"),
    # An RO_ACCESS_REPORT header announcing 50 bytes, cut after 25: the next messages' bytes
    # complete it and it no longer decodes.
    "truncated_frame": (
        codec.encode_frame(codec.MessageType.RO_ACCESS_REPORT, b"\x00" * 40)[:25],
        "undecodable LLRP message",
    ),
    "absurd_length": (
        struct.pack("!HII", (1 << 10) | codec.MessageType.RO_ACCESS_REPORT, 0xFFFF_FFF0, 7),
        "length 4294967280",
    ),
}


@pytest.mark.parametrize("fault", sorted(PROTOCOL_FAULTS))
def test_protocol_fault_takes_one_reader_offline_once_and_it_recovers(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)
    data, reason = PROTOCOL_FAULTS[fault]

    async def scenario() -> None:
        async with simulator() as sim_a, simulator(prefix="32") as sim_b:
            adapter_a, rec_a = make_adapter(sim_a.port, "reader-a")
            adapter_b, rec_b = make_adapter(sim_b.port, "reader-b")
            async with running(adapter_a, adapter_b):
                await rec_a.until(_online(rec_a))
                await rec_b.until(_online(rec_b))
                await sim_a.inject_bytes(data)
                await rec_a.until(_offline(rec_a))
                down_at = time.monotonic()
                assert reason in rec_a.statuses[-1].detail
                await rec_a.until(_online(rec_a))
                up_at = time.monotonic()
                await rec_a.until(lambda: rec_a.batches_after(up_at) > 0)
                # The other reader delivered through the whole episode and never flinched.
                await rec_b.until(lambda: rec_b.batches_after(up_at) > 0)
                assert rec_b.batches_after(down_at) >= 1
                assert rec_b.states() == ["online"]
            assert sim_a.stats.connections_total == 2
        assert rec_a.states() == ["online", "offline", "online", "offline"]
        assert adapter_a.stats.reconnects == 1
        assert reason in (adapter_a.stats.last_error or "")

    asyncio.run(scenario())
    _assert_one_error(caplog, "offline", reason, "127.0.0.1:")
    _assert_recovery_logged_once(caplog)
    assert sllurp_threads() == []


def test_reads_framed_before_a_bad_header_are_delivered() -> None:
    # A report and garbage in one write: the stream is given up at the garbage, but the report
    # before it was whole and is delivered (the framer hands frames over one by one).
    now_us = time.time_ns() // 1000
    epcs = [f"E2{i:022X}" for i in range(5)]
    report = codec.ROAccessReport(
        msg_id=4242,
        tags=tuple(
            codec.TagReportData(
                epc=bytes.fromhex(epc),
                antenna_id=1,
                peak_rssi=-50,
                first_seen_utc_us=now_us,
                last_seen_utc_us=now_us,
                tag_seen_count=1,
            )
            for epc in epcs
        ),
    ).encode()

    async def scenario() -> Recorder:
        async with simulator() as sim:
            adapter, rec = make_adapter(sim.port, "reader-a")
            async with running(adapter):
                await rec.until(_online(rec))
                await sim.inject_bytes(report + b"\xde\xad\xbe\xef" * 8)
                await rec.until(_offline(rec))
                assert "malformed LLRP frame header" in rec.statuses[-1].detail
        return rec

    rec = asyncio.run(scenario())
    assert set(epcs) <= {read.epc for read in rec.reads()}


def test_malformed_tag_entries_degrade_without_dropping_the_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)
    # A well-framed report whose entries lack the antenna and every timestamp.
    bad_report = codec.ROAccessReport(
        tags=tuple(codec.TagReportData(epc=bytes([0x30, i]) * 6, peak_rssi=-40) for i in range(3))
    ).encode()

    async def scenario() -> None:
        async with simulator() as sim:
            adapter, rec = make_adapter(sim.port, "reader-a")
            async with running(adapter):
                await rec.until(_online(rec))
                await sim.inject_bytes(bad_report)
                await sim.inject_bytes(bad_report)
                await rec.until(lambda: adapter.stats.malformed_reads == 6)
                assert adapter.state is DeviceState.DEGRADED
                assert "malformed" in rec.statuses[-1].detail
                # Valid reads keep flowing meanwhile; the reader recovers by itself.
                await rec.until(_online(rec))
            assert sim.stats.connections_total == 1
        assert rec.states() == ["online", "degraded", "online", "offline"]

    asyncio.run(scenario())
    assert gateway_errors(caplog) == []
    degraded = [r for r in caplog.records if "is degraded" in r.getMessage()]
    assert len(degraded) == 1  # two bad reports, one warning
    assert degraded[0].levelno == logging.WARNING


# -- the reader cannot serve the configuration -----------------------------------------------------

CAPABILITY_FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "no_regulatory_capabilities": (
        {"omit_capabilities": {"regulatory"}},
        "lack RegulatoryCapabilities",
    ),
    "too_few_antennas": ({"antennas": (1, 2)}, "supports 2 antenna(s)"),
}


@pytest.mark.parametrize("fault", sorted(CAPABILITY_FAULTS))
def test_missing_capability_keeps_one_reader_offline_until_fixed(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)
    overrides, reason = CAPABILITY_FAULTS[fault]

    async def scenario() -> None:
        sim_a = simulator(**overrides)
        await sim_a.start()
        port = sim_a.port
        try:
            async with simulator(prefix="32") as sim_b:
                adapter_a, rec_a = make_adapter(port, "reader-a")
                adapter_b, rec_b = make_adapter(sim_b.port, "reader-b")
                async with running(adapter_a, adapter_b):
                    await rec_a.until(_offline(rec_a))
                    down_at = time.monotonic()
                    assert reason in rec_a.statuses[-1].detail
                    # The healthy reader keeps delivering while the other is down.
                    await rec_b.until(lambda: rec_b.batches_after(down_at) >= 3)
                    # It keeps retrying (with backoff), quietly.
                    await rec_a.until(lambda: sim_a.stats.connections_total >= 3)
                    assert rec_a.states() == ["offline"]
                    assert rec_b.states() == ["online"]
                    # The reader is fixed (replaced by a healthy one on the same port).
                    await sim_a.stop()
                    sim_a = simulator(port)
                    await sim_a.start()
                    fixed_at = time.monotonic()
                    await rec_a.until(lambda: rec_a.batches_after(fixed_at) > 0)
                    assert rec_b.batches_after(fixed_at) >= 1
                    assert rec_b.states() == ["online"]
            assert rec_a.states() == ["offline", "online", "offline"]
        finally:
            await sim_a.stop()

    asyncio.run(scenario())
    _assert_one_error(caplog, "offline", reason)
    _assert_recovery_logged_once(caplog)
    assert sllurp_threads() == []


# -- silence and absence --------------------------------------------------------------------------


def test_a_silent_reader_is_detected_by_the_keepalive_watchdog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)

    keepalive_s = 0.5
    silence_limit_s = 2 * keepalive_s  # the watchdog's documented rule

    async def scenario() -> tuple[float, float]:
        async with simulator() as sim:
            adapter, rec = make_adapter(sim.port, "reader-a", keepalive_s=keepalive_s)
            async with running(adapter):
                await rec.until(lambda: len(rec.batches) >= 2)  # inventorying
                sim.set_frozen(True)  # socket open, nothing sent: a hung reader
                frozen_at = time.monotonic()
                await rec.until(_offline(rec))
                offline_at = rec.status_at[-1]
                assert "no message from the reader" in rec.statuses[-1].detail
                last_heard = max(b.received_at_monotonic for b in rec.batches)
                # Handshakes time out too while it stays hung: one warning says so.
                await rec.until(lambda: bool(_still_offline(caplog)))
                sim.set_frozen(False)
                await rec.until(_online(rec))
        assert rec.states() == ["online", "offline", "online", "offline"]
        return offline_at - last_heard, offline_at - frozen_at

    silent_for, detected_in = asyncio.run(scenario())
    print(f"offline {detected_in:.3f} s after the freeze, {silent_for:.3f} s after the last report")
    # Never before the limit: the last report counts as heard (keepalives only push it later).
    assert silent_for >= silence_limit_s - 0.001
    # And soon after it: the limit plus slack for a loaded machine, far below what TCP or sllurp
    # would notice (never, for a reader that keeps its socket open).
    assert detected_in <= silence_limit_s + 2.0
    _assert_one_error(caplog, "no message from the reader")
    # A handshake timeout is a new reason while offline: one warning, not one per retry.
    still = _still_offline(caplog)
    assert [r.levelno for r in still] == [logging.WARNING]
    assert "no LLRP handshake within 2 s" in still[0].getMessage()


def test_reader_down_at_start_is_retried_with_backoff_until_it_appears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)
    port = free_port()

    # Every delay the ceiling of its attempt: 0.05, 0.1, 0.2, 0.4, 0.4 s.
    backoff = RecordingBackoff(FAST_BACKOFF, rng=lambda: 1.0)

    async def scenario() -> float:
        adapter, rec = make_adapter(port, "reader-a", backoff=backoff)
        sim: LlrpReaderSimulator | None = None
        try:
            async with running(adapter):
                await rec.until(_offline(rec))
                assert "Connection refused" in rec.statuses[-1].detail
                # Several attempts, each after its backoff delay.
                await rec.until(lambda: adapter.stats.reconnects >= 5)
                assert rec.states() == ["offline"]
                sim = simulator(port)
                started_at = time.monotonic()
                await sim.start()
                await rec.until(lambda: rec.batches_after(started_at) > 0, 3 * RECOVERY_LIMIT_S)
                return time.monotonic() - started_at
        finally:
            if sim is not None:
                await sim.stop()

    online_in = asyncio.run(scenario())
    assert online_in < RECOVERY_LIMIT_S
    # Backoff: growing delays capped at 0.4 s, each waited out before the next attempt. A loaded
    # machine only lengthens the gaps, so they get a lower bound only; the recovery limit above
    # bounds how long a retry may take.
    refused = backoff.delays[:5]
    assert [delay for _, delay in refused] == [FAST_BACKOFF.ceiling(n) for n in range(5)]
    for (when, delay), (next_when, _) in itertools.pairwise(refused):
        assert next_when - when >= delay - 0.001, (delay, next_when - when)
    _assert_one_error(caplog, "offline", "cannot connect")
    _assert_recovery_logged_once(caplog)
    assert sllurp_threads() == []
