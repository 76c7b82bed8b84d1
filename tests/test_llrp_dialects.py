"""Readers that speak another LLRP dialect: refusals of optional steps, CLOSE_CONNECTION, and an
independent reader (llrpkit's emulator, as shipped on PyPI) end to end.

The refusal tests force each step the gateway sends to be refused by the simulator
(``fail_requests``: a response with a non-success LLRPStatus, or ERROR_MESSAGE for a message
without response); the llrpkit test runs its ``llrpkit emulate`` command behind a counting relay
(:mod:`tests.support.llrp_tap`) so the gateway's count can be compared with what the emulator sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.llrp import (
    LLRP_STEPS,
    LinkWatchdog,
    LlrpReaderAdapter,
    llrp_status_text,
)
from gateway.domain.model import DeviceState
from gateway.llrp import codec as c
from simulators.llrp.source import ScriptedReads, SimRead
from tests.support.llrp_tap import LlrpTap
from tests.test_llrp_adapter import (
    ADAPTER_LOGGER,
    gateway_errors,
    make_adapter,
    running,
    simulator,
    sllurp_threads,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "llrp.md"
REFUSAL = c.LLRPStatus(c.StatusCode.M_UNSUPPORTED_MESSAGE, "not in this firmware")


def _sessions_at_least(adapter: LlrpReaderAdapter, n: int) -> bool:
    return adapter.stats.sessions_online >= n


def _refusal_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == ADAPTER_LOGGER and r.levelno == logging.WARNING and "refused" in r.message
    ]


def test_status_text_is_the_readers_words_in_plain_text() -> None:
    status = {
        "StatusCode": "UnsupportedMessage",
        "ErrorDescription": b"emulator does not handle ENABLE_EVENTS_AND_REPORTS",
    }
    assert llrp_status_text(status) == (
        "UnsupportedMessage: emulator does not handle ENABLE_EVENTS_AND_REPORTS"
    )
    assert llrp_status_text({"StatusCode": "FieldError", "ErrorDescription": b""}) == "FieldError"
    with_field = {
        "StatusCode": "FieldError",
        "ErrorDescription": b"bad \xff id",
        "FieldError": {"FieldNum": 0, "ErrorCode": "FieldOutOfRange"},
    }
    assert llrp_status_text(with_field) == "FieldError: bad \ufffd id (field 0: FieldOutOfRange)"
    assert llrp_status_text(None) == "no LLRPStatus"


def test_watchdog_names_a_refusal_and_drops_the_silence_rule_without_keepalives() -> None:
    dog = LinkWatchdog(connect_timeout_s=10.0, silence_limit_s=4.0)
    dog.begin(0.0)
    refused: str | None = "GET_READER_CONFIG: UnsupportedMessage: no"
    dog.last_refusal = refused
    assert dog.verdict(10.0) == (
        "no LLRP handshake within 10 s; the reader refused GET_READER_CONFIG: "
        "UnsupportedMessage: no"
    )
    dog.begin(20.0)
    refused = dog.last_refusal
    assert refused is None
    assert dog.keepalives
    dog.keepalives = False  # SET_READER_CONFIG refused: no LLRP keepalives will come
    dog.inventorying(21.0)
    assert dog.deadline() == math.inf
    assert dog.verdict(1e9) is None
    dog.begin(30.0)  # a new session asks again
    assert dog.keepalives


def test_docs_table_names_every_step() -> None:
    table = DOCS.read_text(encoding="utf-8").split("## Dialects", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1) for m in re.finditer(r"^\| `(\w+)`", table, flags=re.MULTILINE)}
    assert rows == set(LLRP_STEPS)


OPTIONAL = sorted(
    step.request
    for step in LLRP_STEPS.values()
    # The adapter's own messages (START_ROSPEC, CLOSE_CONNECTION) are refused quietly;
    # KEEPALIVE_ACK needs a keepalive first (the watchdog test covers it).
    if not step.required
    and step.request not in {"KEEPALIVE_ACK", "CLOSE_CONNECTION", "START_ROSPEC"}
)
REQUIRED = sorted(step.request for step in LLRP_STEPS.values() if step.required)


@pytest.mark.integration
@pytest.mark.parametrize("request_name", OPTIONAL)
def test_a_refused_optional_step_is_logged_once_and_inventory_goes_on(
    request_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)

    async def scenario() -> None:
        forced = {c.MessageType[request_name]: REFUSAL}
        async with simulator(fail_requests=forced) as sim:
            adapter, rec = make_adapter(sim.port)
            async with running(adapter):
                await rec.until(lambda: len(rec.reads()) >= 4)
                # Reconnect twice: the refusal is logged once per adapter, not per session.
                for n in (2, 3):
                    await sim.drop_connections()
                    await rec.until(partial(_sessions_at_least, adapter, n))
                assert adapter.state is DeviceState.ONLINE
                assert adapter.stats.refused_steps == {
                    request_name: "UnsupportedMessage: not in this firmware"
                }
        (warning,) = _refusal_warnings(caplog)
        assert f"refused {request_name}: UnsupportedMessage: not in this firmware" in (
            warning.message
        )
        assert "going on without it" in warning.message

    asyncio.run(scenario())
    assert gateway_errors(caplog) == [
        r for r in gateway_errors(caplog) if "is offline: connection closed" in r.message
    ]


@pytest.mark.integration
@pytest.mark.parametrize("request_name", REQUIRED)
def test_a_refused_required_step_ends_the_session_in_the_readers_words(
    request_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)
    status = c.LLRPStatus(c.StatusCode.R_DEVICE_ERROR, "antenna hub fault")

    async def scenario() -> None:
        async with simulator(fail_requests={c.MessageType[request_name]: status}) as sim:
            adapter, rec = make_adapter(sim.port)
            async with running(adapter):
                await rec.until(lambda: adapter.stats.reconnects >= 2)
                await asyncio.sleep(0)
        expected = f"the reader refused {request_name}: DeviceError: antenna hub fault"
        assert rec.statuses[0].state is DeviceState.OFFLINE
        assert rec.statuses[0].detail == expected
        (error,) = gateway_errors(caplog)
        assert error.message.endswith(f"is offline: {expected}")
        assert "b'" not in error.message
        assert "{" not in error.message
        # Quick: no waiting for the handshake deadline (connect_timeout_s is 2 s).
        assert rec.status_at[0] - start < 1.5

    start = time.monotonic()
    asyncio.run(scenario())


@pytest.mark.integration
def test_shutdown_sends_close_connection_and_waits_for_its_response() -> None:
    async def scenario() -> float:
        async with simulator() as sim:
            adapter, rec = make_adapter(sim.port, polite_disconnect_s=1.0)
            async with running(adapter) as tasks:
                await rec.until(lambda: len(rec.reads()) >= 4)
                started = time.monotonic()
                tasks[0].cancel()
            stopped_in = time.monotonic() - started
            await sim.wait_for(lambda s: s.connections == 0, timeout_s=2)
            assert sim.stats.messages_in["CLOSE_CONNECTION"] == 1
            assert sim.stats.messages_out["CLOSE_CONNECTION_RESPONSE"] == 1
            assert sllurp_threads() == []
            assert rec.states() == ["online", "offline"]
            return stopped_in

    assert asyncio.run(scenario()) < 2.0


# -- llrpkit's emulator ---------------------------------------------------------------------------


class Emulator:
    """``llrpkit emulate`` in a child process (the command as shipped), restartable on its port."""

    def __init__(self, *, tags: int = 12, antennas: int = 4, rate: float = 200.0) -> None:
        command = shutil.which("llrpkit", path=str(Path(sys.executable).parent))
        if command is None:
            pytest.fail("llrpkit is a dev dependency: pip install -e '.[dev]'")
        self.command = command
        self.args = ["--tags", str(tags), "--antennas", str(antennas), "--rate", f"{rate:g}"]
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # our own venv's console script
            [self.command, "emulate", "--port", str(self.port), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # printed once it listens
        match = re.search(r"on port (\d+)", line)
        if match is None:
            self.stop()
            pytest.fail(f"llrpkit emulate did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
            self.process = None


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator()
    emu.start()
    yield emu
    emu.stop()


@pytest.mark.integration
def test_llrpkit_emulator_every_tag_report_is_counted_across_a_restart(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)

    async def scenario() -> float:
        async with LlrpTap(emulator.port) as tap:
            adapter, rec = make_adapter(tap.port, connect_timeout_s=5.0)
            async with running(adapter) as tasks:
                await rec.until(lambda: adapter.state is DeviceState.ONLINE)
                await rec.until(lambda: len(rec.reads()) >= 100)
                assert {r.antenna for r in rec.reads()} == {1, 2, 3, 4}

                # Restart the emulator: everything it sent before dying is counted.
                await asyncio.to_thread(emulator.stop)
                await rec.until(lambda: adapter.state is DeviceState.OFFLINE)
                await rec.until(lambda: adapter.stats.reads == tap.tag_entries, timeout_s=5)
                first_run = tap.tag_entries
                await asyncio.to_thread(emulator.start)
                await rec.until(lambda: adapter.stats.sessions_online == 2, timeout_s=15)
                await rec.until(lambda: len(rec.reads()) >= first_run + 100)

                stopping = time.monotonic()
                tasks[0].cancel()
            stopped_in = time.monotonic() - stopping
            # The goodbye went through the tap and was answered before the socket closed.
            assert tap.from_client[c.MessageType.CLOSE_CONNECTION] == 1
            assert tap.from_reader[c.MessageType.CLOSE_CONNECTION_RESPONSE] == 1
            # Every TagReportData the emulator sent became one TagRead, none more.
            assert adapter.stats.reads == tap.tag_entries == len(rec.reads())
            assert adapter.stats.malformed_reads == 0
            assert tap.connections == 2
        assert sllurp_threads() == []
        epcs = {r.epc for r in rec.reads()}
        assert epcs == {f"E2000017010B016210000{i:03X}" for i in range(12)}
        assert rec.states() == ["online", "offline", "online", "offline"]
        return stopped_in

    stopped_in = asyncio.run(scenario())
    assert stopped_in < 2.0
    # Its dialect, each refusal logged once: ENABLE_EVENTS_AND_REPORTS is unsupported and
    # DELETE_ROSPEC 0 ("all ROSpecs" in LLRP) is refused when it holds none.
    warnings = _refusal_warnings(caplog)
    refused = sorted(w.message.split(" refused ")[1].split(":")[0] for w in warnings)
    assert refused == ["DELETE_ROSPEC", "ENABLE_EVENTS_AND_REPORTS"]
    # One error for the restart (offline), nothing else.
    assert [r.message.split(" is ")[-1] for r in gateway_errors(caplog)] == [
        "offline: connection closed"
    ]


# -- other clients against the simulator ----------------------------------------------------------


def _script(start_s: float, count: int = 40) -> list[SimRead]:
    """Reads with distinct (EPC, antenna), so the simulator's per-round merge keeps each one."""
    start_us = int(start_s * 1_000_000)
    return [
        SimRead(
            antenna=1 + i % 4,
            epc=f"3074257BF7194E4000{i:06X}",
            rssi_dbm=float(-40 - i % 31),
            first_seen_us=start_us + i * 20_000,
            last_seen_us=start_us + i * 20_000 + 1_000 * (i % 7),
            seen_count=1 + i % 5,
        )
        for i in range(count)
    ]


@pytest.mark.integration
def test_llrpkit_client_decodes_exactly_the_simulators_ground_truth() -> None:
    from llrpkit import Reader

    async def scenario() -> None:
        script = _script(time.time() + 0.5)
        async with simulator(source=ScriptedReads(script)) as sim:
            async with Reader("127.0.0.1", sim.port) as reader:
                assert reader.max_antennas == 4
                assert reader.firmware == "dockwatch-sim 1.0"
                got = [
                    (
                        tag.epc.hex().upper(),
                        tag.antenna,
                        tag.rssi_dbm,
                        tag.first_seen_us,
                        tag.last_seen_us,
                        tag.seen_count,
                    )
                    async for tag in reader.inventory(max_tags=len(script), duration=10.0)
                ]
            assert sim.stats.tag_reads_sent == len(script)
        truth = [
            (r.epc_hex, r.antenna, r.rssi_dbm, r.first_seen_us, r.last_seen_us, r.seen_count)
            for r in script
        ]
        assert sorted(got) == sorted(truth)

    asyncio.run(scenario())


def _pyllrp_inventory(port: int, count: int) -> list[tuple[object, ...]]:
    """pyllrp's blocking client (its own thread): add, enable and listen to one ROSpec until
    ``count`` tag entries came; then CLOSE_CONNECTION (pyllrp's disconnect)."""
    from pyllrp import pyllrp as p
    from pyllrp.LLRPConnector import LLRPConnector

    got: list[tuple[object, ...]] = []
    enough = threading.Event()

    def on_report(_conn: object, report: Any) -> None:
        for entry in report.Parameters:
            if not isinstance(entry, p.TagReportData_Parameter):
                continue
            fields = {type(param).__name__: param for param in entry.Parameters}
            epc = fields.get("EPC_96_Parameter") or fields["EPCData_Parameter"]
            got.append(
                (
                    # EPC-96 decodes to an int, EPCData to bytes
                    f"{epc.EPC:024X}" if isinstance(epc.EPC, int) else bytes(epc.EPC).hex().upper(),
                    fields["AntennaID_Parameter"].AntennaID,
                    float(fields["PeakRSSI_Parameter"].PeakRSSI),
                    fields["FirstSeenTimestampUTC_Parameter"].Microseconds,
                    fields["LastSeenTimestampUTC_Parameter"].Microseconds,
                    fields["TagSeenCount_Parameter"].TagCount,
                )
            )
        if len(got) >= count:
            enough.set()

    conn = LLRPConnector()
    conn.TimeoutSecs = 0.5  # also how long its listener takes to notice a stop
    with warnings.catch_warnings():  # its connect calls utcfromtimestamp (deprecated in 3.12)
        warnings.simplefilter("ignore", DeprecationWarning)
        conn.connect("127.0.0.1", port)
    try:
        conn.addHandler(p.RO_ACCESS_REPORT_Message, on_report)
        rospec = p.ADD_ROSPEC_Message(
            Parameters=[
                p.ROSpec_Parameter(
                    ROSpecID=7,
                    CurrentState=p.ROSpecState.Disabled,
                    Parameters=[
                        p.ROBoundarySpec_Parameter(
                            Parameters=[
                                p.ROSpecStartTrigger_Parameter(
                                    ROSpecStartTriggerType=p.ROSpecStartTriggerType.Immediate
                                ),
                                p.ROSpecStopTrigger_Parameter(
                                    ROSpecStopTriggerType=p.ROSpecStopTriggerType.Null
                                ),
                            ]
                        ),
                        p.AISpec_Parameter(
                            AntennaIDs=[0],
                            Parameters=[
                                p.AISpecStopTrigger_Parameter(
                                    AISpecStopTriggerType=p.AISpecStopTriggerType.Null
                                ),
                                p.InventoryParameterSpec_Parameter(
                                    InventoryParameterSpecID=1,
                                    ProtocolID=p.AirProtocols.EPCGlobalClass1Gen2,
                                ),
                            ],
                        ),
                        p.ROReportSpec_Parameter(
                            ROReportTrigger=p.ROReportTriggerType.Upon_N_Tags_Or_End_Of_AISpec,
                            N=1,
                            Parameters=[
                                p.TagReportContentSelector_Parameter(
                                    EnableAntennaID=True,
                                    EnablePeakRSSI=True,
                                    EnableFirstSeenTimestamp=True,
                                    EnableLastSeenTimestamp=True,
                                    EnableTagSeenCount=True,
                                )
                            ],
                        ),
                    ],
                )
            ]
        )
        assert conn.transact(rospec).success()
        assert conn.transact(p.ENABLE_ROSPEC_Message(ROSpecID=7)).success()
        conn.startListener()
        assert enough.wait(10), f"{len(got)} of {count} tag entries"
    finally:
        closed = conn.disconnect()
    assert isinstance(closed, p.CLOSE_CONNECTION_RESPONSE_Message)
    return got


@pytest.mark.integration
def test_pyllrp_client_decodes_exactly_the_simulators_ground_truth() -> None:
    async def scenario() -> None:
        script = _script(time.time() + 0.5)
        async with simulator(source=ScriptedReads(script)) as sim:
            got = await asyncio.to_thread(_pyllrp_inventory, sim.port, len(script))
            assert sim.stats.tag_reads_sent == len(script)
            await sim.wait_for(lambda s: s.connections == 0, timeout_s=2)
            assert sim.stats.messages_in["CLOSE_CONNECTION"] == 1
        truth = [
            (r.epc_hex, r.antenna, r.rssi_dbm, r.first_seen_us, r.last_seen_us, r.seen_count)
            for r in script
        ]
        assert sorted(map(repr, got)) == sorted(map(repr, truth))

    asyncio.run(scenario())


@pytest.mark.integration
def test_the_device_down_alert_and_status_carry_the_readers_words(tmp_path: Path) -> None:
    from edge_store.repository import EdgeStore
    from gateway.app import Gateway
    from gateway.domain.model import AlertKind
    from tests.support.net import free_port
    from tests.test_antenna_down import config

    status = c.LLRPStatus(c.StatusCode.R_DEVICE_ERROR, "antenna hub fault")
    expected = "the reader refused ADD_ROSPEC: DeviceError: antenna hub fault"

    async def scenario() -> str:
        async with simulator(fail_requests={c.MessageType.ADD_ROSPEC: status}) as sim:
            gateway = Gateway(config(tmp_path, sim.port, free_port()))
            task = asyncio.create_task(gateway.run())
            try:
                async with asyncio.timeout(20):
                    while True:  # the store is the gateway's own record: poll it
                        worker = gateway.worker
                        if worker is not None and len(await worker.call(worker.store.alerts)):
                            break
                        await asyncio.sleep(0.05)
                statuses = await worker.call(worker.store.device_statuses)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        (reader,) = statuses
        return reader.detail

    detail = asyncio.run(scenario())
    assert detail == expected
    with EdgeStore.open(f"sqlite:///{tmp_path / 'edge.db'}", site="antenna-e2e") as store:
        (alert,) = store.alerts(active_only=True)
    assert alert.kind == AlertKind.DEVICE_DOWN
    assert alert.message == f"llrp_reader door-1-reader is offline: {expected}"
