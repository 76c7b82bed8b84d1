"""Wireshark's LLRP dissector reads what the simulator and real sllurp put on the wire.

tshark captures loopback traffic on the simulator's port while real sllurp connects, inventories
and disconnects, and while a raw client drives the message types sllurp never sends (START, STOP,
DISABLE, GET_ROSPECS, GET_REPORT, GET_ACCESSSPECS, CLOSE_CONNECTION, an ERROR_MESSAGE reply). The
capture is then dissected with ``-d tcp.port==<port>,llrp``: no frame may be malformed or carry an
expert error, and every message type used must be one the dissector names.

One dissector bug is tolerated, narrowly: tshark 4.0 measures the Identification parameter's
ReaderID (a ``u8v``: 16-bit count, then the bytes; LLRP 1.0.1 section 13.2.2, the LTK definitions
and sllurp all agree) two bytes short, and flags GET_READER_CONFIG_RESPONSE as malformed for it.
That exact signature is allowed; anything else fails.
"""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from gateway.llrp import codec as c
from simulators.llrp.server import LlrpReaderSimulator
from simulators.llrp.source import TagPopulation
from tests.conftest import missing
from tests.support.net import free_port
from tests.test_llrp_simulator import RawClient, SllurpHarness, full_selector, rospec, run

EXPERT_ERROR = 0x800000  # _ws.expert.severity of "Error"
IDENTIFICATION_BUG = re.compile(r"Incorrect length of parameter: (\d+) bytes decoded, but (\d+)")


def _drain(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")  # EOF


class Capture:
    """``tshark -i lo -f 'tcp port N' -w FILE``, started before any traffic and stopped with
    SIGINT so it flushes."""

    def __init__(self, tshark: str, port: int, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [tshark, "-i", "lo", "-f", f"tcp port {port}", "-w", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(
            target=_drain, args=(self.proc.stderr, self.lines), daemon=True
        )
        self.reader.start()

    def wait_started(self, timeout: float = 20.0) -> None:
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"tshark did not start capturing: {seen}") from None
            if not line:
                missing(f"a tshark capture on lo ({' '.join(seen).strip()})")
            seen.append(line)
            if "Capture started" in line:
                return

    def wait_for_frame(self, tshark: str, port: int, display_filter: str, timeout: float) -> None:
        """Wait until the capture file holds a frame matching ``display_filter``.

        libpcap hands packets to dumpcap in blocks (up to a second late), and a SIGINT before the
        block arrives loses them; reading the file until the session's last frame is there makes
        the stop safe without guessing a delay."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.path.exists():
                found = subprocess.run(
                    [
                        tshark,
                        "-r",
                        str(self.path),
                        "-d",
                        f"tcp.port=={port},llrp",
                        "-Y",
                        display_filter,
                        "-T",
                        "fields",
                        "-e",
                        "frame.number",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,  # a file still being written may end mid-packet
                )
                if found.stdout.strip():
                    return
            time.sleep(0.2)  # polling a file another process writes; nothing to await
        raise AssertionError(f"no frame matching {display_filter!r} in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


async def _traffic(port: int) -> None:
    population = TagPopulation.sequential(4, antennas=(1, 2, 3, 4), rssi_dbm=-60.0)
    async with LlrpReaderSimulator(port=port, source=population, report_interval_s=0.03) as sim:
        # real sllurp with Impinj extensions (CUSTOM_MESSAGE) and fast keepalives
        harness = SllurpHarness(port, keepalive_interval=100, impinj_search_mode=2)
        try:
            await asyncio.to_thread(harness.client.connect)
            await harness.wait_for_tags(lambda tags: len(tags) >= 16)
            await sim.wait_for(lambda s: s.stats.keepalive_acks >= 1, timeout_s=5)
        finally:
            await harness.shutdown()
        await sim.wait_for(lambda s: s.connections == 0, timeout_s=5)

        # what sllurp never sends
        client = await RawClient.connect(port)
        report = c.ROReportSpec(trigger=2, n=4, selector=full_selector())
        assert (await client.status(c.AddROSpec(rospec=rospec(report=report)))).ok
        assert (await client.status(c.EnableROSpec(spec_id=1))).ok
        assert (await client.status(c.StartROSpec(spec_id=1))).ok
        await client.recv_type(c.ROAccessReport)
        assert isinstance(await client.request(c.GetROSpecs()), c.GetROSpecsResponse)
        assert (await client.status(c.StopROSpec(spec_id=1))).ok
        assert (await client.status(c.DisableROSpec(spec_id=1))).ok
        await client.send_bytes(c.GetReport(msg_id=90).encode())
        await client.recv_type(c.ROAccessReport)
        assert (await client.status(c.GetAccessSpecs())).ok
        assert (await client.status(c.EnableAccessSpec(spec_id=0))).ok
        assert (await client.status(c.DisableAccessSpec(spec_id=0))).ok
        assert (await client.status(c.GetReaderConfig(requested=c.ConfigRequest.KEEPALIVE_SPEC))).ok
        error = await client.request(c.Keepalive())  # a reader-to-client message sent the wrong way
        assert isinstance(error, c.ErrorMessage)
        assert (await client.status(c.CloseConnection())).ok
        await client.close()
        await sim.wait_for(lambda s: s.connections == 0, timeout_s=5)


def _dissect(tshark: str, pcap: Path, port: int, *extra: str) -> str:
    result = subprocess.run(
        [tshark, "-r", str(pcap), "-d", f"tcp.port=={port},llrp", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_tshark_dissects_the_whole_session_without_errors(tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        missing("tshark")
    assert tshark is not None
    port = free_port()
    pcap = tmp_path / "llrp.pcapng"
    capture = Capture(tshark, port, pcap)
    try:
        capture.wait_started()
        run(lambda: _traffic(port), timeout=40)
        closing = f"llrp.type == {int(c.MessageType.CLOSE_CONNECTION_RESPONSE)}"
        capture.wait_for_frame(tshark, port, closing, timeout=20)
    finally:
        capture.stop()

    fields = _dissect(
        tshark,
        pcap,
        port,
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-e",
        "frame.number",
        "-e",
        "llrp.type",
        "-e",
        "_ws.malformed",
        "-e",
        "_ws.expert.severity",
        "-e",
        "_ws.expert.message",
    )
    types: set[int] = set()
    problems: list[str] = []
    for line in fields.splitlines():
        number, llrp_types, malformed, severities, messages = (line.split("\t") + [""] * 5)[:5]
        frame_types = {int(t) for t in llrp_types.split(",") if t}
        types |= frame_types
        errors = [s for s in severities.split(",") if s and int(s) >= EXPERT_ERROR]
        if not (malformed or errors):
            continue
        bug = IDENTIFICATION_BUG.search(messages)
        known = (
            bug is not None
            and len(errors) == 1
            and int(bug.group(2)) - int(bug.group(1)) == 2
            and c.MessageType.GET_READER_CONFIG_RESPONSE in frame_types
        )
        if not known:
            problems.append(f"frame {number}: types {sorted(frame_types)}: {messages}")
    assert problems == []

    m = c.MessageType
    expected = {
        m.READER_EVENT_NOTIFICATION,
        m.CUSTOM_MESSAGE,
        m.GET_READER_CAPABILITIES,
        m.GET_READER_CAPABILITIES_RESPONSE,
        m.GET_READER_CONFIG,
        m.GET_READER_CONFIG_RESPONSE,
        m.SET_READER_CONFIG,
        m.SET_READER_CONFIG_RESPONSE,
        m.ENABLE_EVENTS_AND_REPORTS,
        m.DELETE_ACCESSSPEC,
        m.DELETE_ACCESSSPEC_RESPONSE,
        m.DELETE_ROSPEC,
        m.DELETE_ROSPEC_RESPONSE,
        m.ADD_ROSPEC,
        m.ADD_ROSPEC_RESPONSE,
        m.ENABLE_ROSPEC,
        m.ENABLE_ROSPEC_RESPONSE,
        m.START_ROSPEC,
        m.START_ROSPEC_RESPONSE,
        m.STOP_ROSPEC,
        m.STOP_ROSPEC_RESPONSE,
        m.DISABLE_ROSPEC,
        m.DISABLE_ROSPEC_RESPONSE,
        m.GET_ROSPECS,
        m.GET_ROSPECS_RESPONSE,
        m.GET_REPORT,
        m.RO_ACCESS_REPORT,
        m.GET_ACCESSSPECS,
        m.GET_ACCESSSPECS_RESPONSE,
        m.ENABLE_ACCESSSPEC,
        m.ENABLE_ACCESSSPEC_RESPONSE,
        m.DISABLE_ACCESSSPEC,
        m.DISABLE_ACCESSSPEC_RESPONSE,
        m.KEEPALIVE,
        m.KEEPALIVE_ACK,
        m.ERROR_MESSAGE,
        m.CLOSE_CONNECTION,
        m.CLOSE_CONNECTION_RESPONSE,
    }
    assert types >= {int(t) for t in expected}, sorted(expected - types)

    # every message type is one the dissector knows by name
    verbose = _dissect(tshark, pcap, port, "-V")
    names = {
        int(num): name
        for name, num in re.findall(r"^    \S.* = Type: (.+) \((\d+)\)$", verbose, re.M)
    }
    assert set(names) >= {int(t) for t in expected}
    unnamed = {num: name for num, name in names.items() if "unknown" in name.lower()}
    assert unnamed == {}
    # the reports carry what the selector asked for, as the dissector reads them
    assert "EPC-96" in verbose
    for field in ("Antenna ID:", "Peak RSSI:", "First Seen Timestamp UTC", "Tag count:"):
        assert field in verbose
