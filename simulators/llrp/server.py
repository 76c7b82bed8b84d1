"""LLRP reader simulator: an asyncio TCP server speaking the READER side of LLRP 1.0.1.

Public API (stable; the gateway's LLRP adapter and its tests build on it)::

    sim = LlrpReaderSimulator(port=0, antennas=(1, 2, 3, 4), source=TagPopulation(...))
    async with sim:                      # start() ... stop()
        sim.port                         # the bound port
        await sim.wait_for(lambda s: s.inventorying > 0, timeout_s=5)
        sim.stats                        # messages in/out by type, reports and tag reads sent
        await sim.drop_connections()     # fault: abort every client socket
        sim.cut_antenna(2, announce=True)   # fault: antenna 2 hears nothing (AntennaEvent)
        sim.set_gpi(1, True)                # stimulus: GPIEvent, GPI start/stop triggers
        sim.gpo_writes, sim.gpi_changes     # GPIO changes with their time, in order
        await sim.inject_bytes(b"...")   # fault: raw bytes to every client

Theory of operation
-------------------
Each TCP client gets its own :class:`_Session`: a fresh reader (configuration and ROSpecs live and
die with the connection, like a reader rebooted between clients). Like a reader, one client at a
time (``max_clients=1``); with ``max_clients=None`` several clients at once each see their own
reader. On connect the session sends READER_EVENT_NOTIFICATION with a
ConnectionAttemptEvent (Success, or "client connection exists" and a close when ``max_clients`` is
reached). Every request gets its response with an LLRPStatus; a message the reader does not
support, or a reader-to-client message sent the wrong way, gets ERROR_MESSAGE/M_UnsupportedMessage;
an LLRP 1.1 (version 2) message gets ERROR_MESSAGE/M_UnsupportedVersion (this reader speaks 1.0.1
and 1.1 needs version negotiation first); a body that fails to decode gets its response (or
ERROR_MESSAGE) with M_ParameterError naming what is wrong. A frame whose header is unusable
(unknown version, length < 10 or above 1 MiB) cannot be resynchronised: ERROR_MESSAGE, then close.

ROSpecs follow LLRP's state machine: ADD (Disabled) -> ENABLE (Inactive; an Immediate start trigger
starts it at once, a Periodic one after its offset and then every period) -> START (Active) ->
STOP (Inactive) -> DISABLE (Disabled) -> DELETE; ID 0 means "all" for ENABLE, DISABLE and DELETE
and is invalid for START and STOP; a wrong state or unknown ID is M_FieldError/A_Invalid. A GPI
start trigger starts an Inactive ROSpec on its GPI edge (``set_gpi``), a GPI_With_Timeout stop
trigger stops it on its edge or after its timeout.

An active ROSpec runs its AISpecs in turn, forever unless its ROSpecStopTrigger has a duration.
Each AISpec runs in inventory rounds of ``report_interval_s`` (0 = as fast as the client drains the
socket): each round asks the :class:`~simulators.llrp.source.ReadSource` for the window since the
last round, keeps the reads of the AISpec's antennas (0 = all), and merges them per (EPC, antenna
when AntennaID is selected, channel when ChannelIndex is selected): first seen = min, last seen =
max, TagSeenCount = sum, PeakRSSI = max. An AISpec ends by its AISpecStopTrigger: Duration,
Tag_Observation (N unique tags, no new tag for T ms, or N attempts, each with its timeout) or Null
(never: the AISpec lasts as long as the ROSpec). Reports follow the ROReportSpec (the ROSpec's, or
the reader's default set by SET_READER_CONFIG): N > 0 sends a report every N entries; trigger 1
also at the end of each AISpec, trigger 2 at the end of the ROSpec (duration, STOP, DISABLE,
DELETE); trigger 0 holds entries until GET_REPORT. Each entry carries the EPC (EPC-96 for 96-bit
EPCs, EPCData otherwise) and only the fields the TagReportContentSelector enables. Keepalives go
out at the KeepaliveSpec period; KEEPALIVE_ACKs are counted, and ``keepalive_ack_misses`` (if set)
closes a connection that leaves that many unanswered.

Writes are synchronous ``transport.write`` calls from one event loop, so messages never interleave;
report loops ``await drain()`` so a slow client slows the reader down instead of growing a buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Final, Self

from gateway.adapters.tls import server_context_from_flags
from gateway.errors import ConfigError, ProtocolError
from gateway.llrp import codec as c
from simulators.llrp.source import ReadSource, SimRead, TagPopulation

if TYPE_CHECKING:
    from simulators.scenario import Scenario

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5084
DEFAULT_TLS_PORT = 5085  # IANA encrypted-llrp
IMPINJ_PEN = c.VENDOR_IMPINJ
_SIM_MODEL = 1
_SIM_FIRMWARE = "dockwatch-sim 1.0"
_GPIO_PORTS = 4
# keeps one report well under the 1 MiB message cap (a TagReportData is at most ~60 bytes)
_MAX_TAGS_PER_REPORT = 5000


# --------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulatorStats:
    """Counters since the simulator was created; a stop and restart keeps them (message names
    as in the spec)."""

    messages_in: Mapping[str, int]
    messages_out: Mapping[str, int]
    reports_sent: int
    tag_reads_sent: int
    keepalives_sent: int
    keepalive_acks: int
    connections_total: int
    connections: int
    protocol_errors: int


@dataclass(frozen=True, slots=True)
class GpioChange:
    """A GPI level the simulator was driven to, or a GPO level a client wrote (SET_READER_CONFIG
    GPOWriteData), at ``at_s`` on the simulator's clock."""

    at_s: float
    port: int
    high: bool


CAPABILITY_SECTIONS = frozenset({"general", "llrp", "regulatory", "air_protocol"})


@dataclass(slots=True)
class _Accum:
    epc: bytes
    antenna: int
    channel: int
    spec_index: int
    ips_id: int
    first_us: int
    last_us: int
    count: int
    rssi: float


@dataclass(slots=True)
class _RoSpecRun:
    """A ROSpec held by a session, with its run state."""

    rospec: c.ROSpec
    state: c.ROSpecState = c.ROSpecState.DISABLED
    task: asyncio.Task[None] | None = None
    trigger_task: asyncio.Task[None] | None = None
    pending: dict[tuple[bytes, int, int, int], _Accum] = field(default_factory=dict)


@dataclass(slots=True)
class _ReaderConfig:
    """A session's reader configuration (what SET_READER_CONFIG changes)."""

    report_spec: c.ROReportSpec
    events: dict[int, bool]
    keepalive: c.KeepaliveSpec = field(default_factory=c.KeepaliveSpec)
    antenna_configs: dict[int, c.AntennaConfiguration] = field(default_factory=dict)
    events_and_reports: c.EventsAndReports = field(default_factory=c.EventsAndReports)
    gpi: dict[int, bool] = field(default_factory=dict)
    gpo: dict[int, bool] = field(default_factory=dict)
    access_report_trigger: int = 0


def default_report_spec() -> c.ROReportSpec:
    """The reader's ROReportSpec until a client sets one: report at the end of each AISpec with
    antenna, peak RSSI, first/last seen and seen count (what a dock portal needs)."""
    return c.ROReportSpec(
        trigger=c.ROReportTriggerType.UPON_N_TAGS_OR_END_OF_AISPEC,
        n=0,
        selector=c.TagReportContentSelector(
            antenna_id=True,
            peak_rssi=True,
            first_seen_timestamp=True,
            last_seen_timestamp=True,
            tag_seen_count=True,
        ),
    )


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class LlrpReaderSimulator:
    """An LLRP reader on TCP, driven by a :class:`ReadSource`.

    Keyword arguments:

    * ``host``, ``port`` (0 = any free port; read :attr:`port` after :meth:`start`);
    * ``reader_id``: used in logs and as the reader's Identification (MAC-style bytes);
    * ``antennas``: the antenna IDs this reader has (capabilities report ``max(antennas)``);
    * ``source``: what the antennas hear (None = nothing, the reader still inventories);
    * ``clock``: wall-clock seconds (UTC timestamps in events; the source's time base);
    * ``report_interval_s``: length of an inventory round; 0 = as fast as the socket drains;
    * ``max_clients``: refuse further connections (ConnectionAttemptEvent failure) beyond it;
    * ``max_rospecs``: LLRPCapabilities.MaxNumROSpecs;
    * ``keepalive_ack_misses``: close a connection after that many unacknowledged keepalives;
    * ``omit_capabilities``: fault: leave sections out of GET_READER_CAPABILITIES_RESPONSE, any of
      ``{"general", "llrp", "regulatory", "air_protocol"}`` (sllurp cannot connect without
      ``regulatory``);
    * ``capabilities``: replace the whole capabilities response (its msg_id is rewritten);
    * ``fail_requests``: fault: answer these request types (:class:`codec.MessageType`) with this
      non-success LLRPStatus instead of processing them;
    * ``impinj_extensions``: accept Impinj's IMPINJ_ENABLE_EXTENSIONS (vendor 25882 subtype 21);
    * ``tls``: serve LLRP over TLS with this server context (:func:`gateway.adapters.tls.
      server_context`; it requires client certificates when built with a client CA). A client
      whose handshake fails never becomes a session.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reader_id: str = "sim-reader",
        antennas: Sequence[int] = (1, 2, 3, 4),
        source: ReadSource | None = None,
        clock: Callable[[], float] = time.time,
        report_interval_s: float = 0.1,
        max_clients: int | None = 1,
        max_rospecs: int = 4,
        keepalive_ack_misses: int | None = None,
        omit_capabilities: Collection[str] = (),
        capabilities: c.GetReaderCapabilitiesResponse | None = None,
        fail_requests: Mapping[int, c.LLRPStatus] | None = None,
        impinj_extensions: bool = True,
        max_held_tags: int = 100_000,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not antennas or any(not 1 <= a <= 0xFFFF for a in antennas):
            raise ValueError(f"antennas must be IDs in 1..65535, got {antennas!r}")
        if report_interval_s < 0:
            raise ValueError(f"report_interval_s must be >= 0, got {report_interval_s}")
        unknown = set(omit_capabilities) - CAPABILITY_SECTIONS
        if unknown:
            raise ValueError(f"unknown capability sections {sorted(unknown)}")
        self.host = host
        self.reader_id = reader_id
        self.antennas: tuple[int, ...] = tuple(sorted(set(antennas)))
        self.source = source
        self.clock = clock
        self.report_interval_s = report_interval_s
        self.max_clients = max_clients
        self.max_rospecs = max_rospecs
        self.keepalive_ack_misses = keepalive_ack_misses
        self.omit_capabilities = frozenset(omit_capabilities)
        self.capabilities_override = capabilities
        self.fail_requests: dict[int, c.LLRPStatus] = dict(fail_requests or {})
        self.impinj_extensions = impinj_extensions
        self.max_held_tags = max_held_tags
        self.tls = tls
        self.requested_port = port
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._waiters: set[asyncio.Future[None]] = set()
        self._frozen = False
        self.cut_antennas: set[int] = set()  # fault: see cut_antenna()
        self.gpi_levels: dict[int, bool] = dict.fromkeys(range(1, _GPIO_PORTS + 1), False)
        self.gpi_changes: list[GpioChange] = []  # set_gpi(), in order
        self.gpo_writes: list[GpioChange] = []  # every GPOWriteData a client applied, in order
        self._rospecs_added: list[c.ROSpec] = []
        self._in: Counter[str] = Counter()
        self._out: Counter[str] = Counter()
        self._reports = 0
        self._tag_reads = 0
        self._keepalives = 0
        self._acks = 0
        self._connections_total = 0
        self._protocol_errors = 0
        self._started_mono = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._started_mono = time.monotonic()
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.requested_port, reuse_address=True, ssl=self.tls
        )
        logger.info(
            "LLRP reader %s listening on %s:%d%s",
            self.reader_id,
            self.host,
            self.port,
            "" if self.tls is None else " (TLS)",
        )

    async def stop(self) -> None:
        """Tell every client the reader is closing (ConnectionCloseEvent), close, stop listening."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for session in list(self._sessions):
            session.close(announce=True)
        with contextlib.suppress(TimeoutError):
            await self.wait_for(lambda s: s.connections == 0, timeout_s=5.0)
        await server.wait_closed()
        logger.info("LLRP reader %s stopped", self.reader_id)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- observation ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("simulator not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._sessions)

    @property
    def inventorying(self) -> int:
        """Active ROSpecs over all connections."""
        return sum(
            1
            for s in self._sessions
            for run in s.rospecs.values()
            if run.state == c.ROSpecState.ACTIVE
        )

    @property
    def rospecs_added(self) -> tuple[c.ROSpec, ...]:
        """Every ROSpec clients added successfully, in order (decoded, for assertions)."""
        return tuple(self._rospecs_added)

    @property
    def keepalive_intervals_ms(self) -> tuple[int, ...]:
        """The periodic keepalive interval each connected client configured (0 = none)."""
        return tuple(
            s.config.keepalive.interval_ms if s.config.keepalive.periodic else 0
            for s in self._sessions
        )

    @property
    def stats(self) -> SimulatorStats:
        return SimulatorStats(
            messages_in=MappingProxyType(dict(self._in)),
            messages_out=MappingProxyType(dict(self._out)),
            reports_sent=self._reports,
            tag_reads_sent=self._tag_reads,
            keepalives_sent=self._keepalives,
            keepalive_acks=self._acks,
            connections_total=self._connections_total,
            connections=len(self._sessions),
            protocol_errors=self._protocol_errors,
        )

    def summary(self) -> str:
        """One line for periodic logs."""
        st = self.stats
        return (
            f"reader {self.reader_id} :{self.port if self._server else '-'} "
            f"clients={st.connections} active_rospecs={self.inventorying} "
            f"reports={st.reports_sent} tag_reads={st.tag_reads_sent} "
            f"keepalives={st.keepalives_sent}/{st.keepalive_acks} acked "
            f"errors={st.protocol_errors}"
        )

    async def wait_for(self, predicate: Callable[[Self], bool], *, timeout_s: float) -> None:
        """Wait until ``predicate(self)`` holds; it is re-checked on every state change
        (connection, request handled, ROSpec state, report or keepalive sent).

        Raises :class:`TimeoutError` after ``timeout_s`` seconds."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while not predicate(self):
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.add(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.discard(waiter)

    # -- faults -----------------------------------------------------------------------------

    async def drop_connections(self) -> None:
        """Abort every client connection at once (no close handshake), e.g. mid-inventory."""
        sessions = list(self._sessions)
        for session in sessions:
            session.abort()
        logger.info("LLRP reader %s dropped %d connection(s)", self.reader_id, len(sessions))

    async def inject_bytes(self, data: bytes) -> None:
        """Write raw bytes (garbage, a truncated frame, an absurd length...) to every client."""
        for session in list(self._sessions):
            await session.write_raw(data)

    def set_frozen(self, frozen: bool) -> None:
        """Fault: a hung reader. While frozen the reader keeps sockets open but reads and ignores
        requests and sends nothing (no responses, reports or keepalives)."""
        self._frozen = frozen
        logger.info("LLRP reader %s %s", self.reader_id, "frozen" if frozen else "thawed")

    @property
    def frozen(self) -> bool:
        return self._frozen

    def set_gpi(self, port: int, high: bool) -> None:
        """Stimulus: drive general-purpose input ``port`` (1..4) high or low, e.g. a light
        barrier at the door. A change is recorded (``gpi_changes``) and, for each client, sent
        as a GPIEvent when it enabled GPI events and left the port's input enabled, and it
        starts ROSpecs armed with a matching GPI start trigger (and stops those with a matching
        GPI stop trigger)."""
        if not 1 <= port <= _GPIO_PORTS:
            raise ValueError(f"no GPI port {port} (ports 1..{_GPIO_PORTS})")
        if self.gpi_levels[port] == high:
            return
        self.gpi_levels[port] = high
        self.gpi_changes.append(GpioChange(self.clock(), port, high))
        logger.info("LLRP reader %s: GPI %d %s", self.reader_id, port, "high" if high else "low")
        for session in list(self._sessions):
            session.gpi_edge(port, high)

    def cut_antenna(self, antenna: int, *, cut: bool = True, announce: bool = False) -> None:
        """Fault: a knocked or cut antenna cable. The antenna hears nothing (its reads are
        dropped) until ``cut=False``. With ``announce`` the reader notices (as readers that
        sense the antenna's load do) and sends an AntennaEvent, disconnected or connected, to
        every client that enabled AntennaEvent notifications; without, it stays silent."""
        if antenna not in self.antennas:
            raise ValueError(f"no antenna {antenna} (antennas {self.antennas})")
        if cut:
            self.cut_antennas.add(antenna)
        else:
            self.cut_antennas.discard(antenna)
        logger.info(
            "LLRP reader %s: antenna %d %s",
            self.reader_id,
            antenna,
            "cut" if cut else "restored",
        )
        if announce:
            event = c.AntennaEvent(connected=not cut, antenna_id=antenna)
            for session in list(self._sessions):
                session.antenna_event(event)

    # -- internals used by sessions ---------------------------------------------------------

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def _count_in(self, name: str) -> None:
        self._in[name] += 1

    def _count_out(self, msg: c.LlrpMessage) -> None:
        self._out[msg.name] += 1
        if isinstance(msg, c.ROAccessReport):
            self._reports += 1
            self._tag_reads += len(msg.tags)
            self._notify()
        elif isinstance(msg, c.Keepalive):
            self._keepalives += 1
            self._notify()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        refuse = self.max_clients is not None and len(self._sessions) >= self.max_clients
        self._connections_total += 1
        self._sessions.add(session)
        self._notify()
        try:
            await session.run(refuse=refuse)
        except Exception:
            logger.exception("LLRP reader %s: session %s failed", self.reader_id, session.peer)
        finally:
            await session.finish()
            self._sessions.discard(session)
            self._notify()

    # -- capabilities -----------------------------------------------------------------------

    def capabilities_response(self, msg_id: int, requested: int) -> c.GetReaderCapabilitiesResponse:
        if self.capabilities_override is not None:
            return dataclasses.replace(self.capabilities_override, msg_id=msg_id)

        def want(section: str, code: int) -> bool:
            return section not in self.omit_capabilities and requested in (0, code)

        return c.GetReaderCapabilitiesResponse(
            msg_id=msg_id,
            general=self._general_capabilities()
            if want("general", c.CapabilitiesRequest.GENERAL_DEVICE)
            else None,
            llrp=self._llrp_capabilities() if want("llrp", c.CapabilitiesRequest.LLRP) else None,
            regulatory=self._regulatory_capabilities()
            if want("regulatory", c.CapabilitiesRequest.REGULATORY)
            else None,
            air_protocol=c.C1G2LLRPCapabilities(max_select_filters_per_query=2)
            if want("air_protocol", c.CapabilitiesRequest.AIR_PROTOCOL)
            else None,
        )

    def _general_capabilities(self) -> c.GeneralDeviceCapabilities:
        return c.GeneralDeviceCapabilities(
            max_antennas=max(self.antennas),
            can_set_antenna_properties=False,
            has_utc_clock=True,
            manufacturer=IMPINJ_PEN,
            model=_SIM_MODEL,
            firmware_version=_SIM_FIRMWARE,
            # receive sensitivity in dB relative to maximum, as Impinj readers list it
            receive_sensitivities=tuple(
                c.ReceiveSensitivityTableEntry(i + 1, v) for i, v in enumerate((0, 10, 20, 30))
            ),
            gpio=c.GPIOCapabilities(_GPIO_PORTS, _GPIO_PORTS),
            air_protocols=tuple(c.PerAntennaAirProtocol(a, (1,)) for a in self.antennas),
        )

    def _llrp_capabilities(self) -> c.LLRPCapabilities:
        return c.LLRPCapabilities(
            can_do_tag_inventory_state_aware_singulation=True,
            max_priority_levels=1,
            max_rospecs=self.max_rospecs,
            max_specs_per_rospec=8,
            max_inventory_parameter_specs_per_aispec=1,
            max_accessspecs=0,
            max_opspecs_per_accessspec=0,
        )

    def _regulatory_capabilities(self) -> c.RegulatoryCapabilities:
        # FCC part 15: 50 channels 902.75..927.25 MHz; power 10.00..30.00 dBm in 0.25 dB steps
        channels = tuple(902_750 + 500 * i for i in range(50))
        powers = tuple(c.TransmitPowerLevelTableEntry(i + 1, 1000 + 25 * i) for i in range(81))
        modes = (
            c.C1G2UHFRFModeTableEntry(
                mode_identifier=0, m=0, bdr=640_000, pie=1500, min_tari=6250, max_tari=6250
            ),
            c.C1G2UHFRFModeTableEntry(
                mode_identifier=1, m=1, bdr=640_000, pie=1500, min_tari=6250, max_tari=6250
            ),
            c.C1G2UHFRFModeTableEntry(
                mode_identifier=2, m=2, bdr=274_000, pie=2000, min_tari=20000, max_tari=20000
            ),
            c.C1G2UHFRFModeTableEntry(
                mode_identifier=3, m=3, bdr=170_600, pie=2000, min_tari=20000, max_tari=20000
            ),
        )
        return c.RegulatoryCapabilities(
            country_code=840,
            communications_standard=1,
            uhf_band=c.UHFBandCapabilities(
                power_levels=powers,
                frequency_information=c.FrequencyInformation(
                    hopping=True, hop_tables=(c.FrequencyHopTable(1, channels),)
                ),
                mode_tables=(c.C1G2UHFRFModeTable(modes),),
            ),
        )


# --------------------------------------------------------------------------------------------
# One connection
# --------------------------------------------------------------------------------------------


def _response_factories() -> dict[int, Callable[..., c.LlrpMessage]]:
    m = c.MessageType
    return {
        m.GET_READER_CAPABILITIES: c.GetReaderCapabilitiesResponse,
        m.GET_READER_CONFIG: c.GetReaderConfigResponse,
        m.SET_READER_CONFIG: c.SetReaderConfigResponse,
        m.CLOSE_CONNECTION: c.CloseConnectionResponse,
        m.ADD_ROSPEC: c.AddROSpecResponse,
        m.DELETE_ROSPEC: c.DeleteROSpecResponse,
        m.START_ROSPEC: c.StartROSpecResponse,
        m.STOP_ROSPEC: c.StopROSpecResponse,
        m.ENABLE_ROSPEC: c.EnableROSpecResponse,
        m.DISABLE_ROSPEC: c.DisableROSpecResponse,
        m.GET_ROSPECS: c.GetROSpecsResponse,
        m.ADD_ACCESSSPEC: c.AddAccessSpecResponse,
        m.DELETE_ACCESSSPEC: c.DeleteAccessSpecResponse,
        m.ENABLE_ACCESSSPEC: c.EnableAccessSpecResponse,
        m.DISABLE_ACCESSSPEC: c.DisableAccessSpecResponse,
        m.GET_ACCESSSPECS: c.GetAccessSpecsResponse,
    }


_RESPONSES = _response_factories()


class _RequestError(Exception):
    """A request the reader refuses; becomes the response's LLRPStatus."""

    def __init__(self, status: c.LLRPStatus) -> None:
        super().__init__(status.description)
        self.status = status


def _field_error(code: int, description: str, field_num: int = 0) -> _RequestError:
    return _RequestError(
        c.LLRPStatus(
            c.StatusCode.M_FIELD_ERROR, description, field_error=c.FieldError(field_num, code)
        )
    )


def _param_error(
    param_type: int, description: str, code: int = c.StatusCode.P_FIELD_ERROR, field_num: int = 0
) -> _RequestError:
    field_err = (
        c.FieldError(field_num, c.StatusCode.A_OUT_OF_RANGE)
        if code == c.StatusCode.P_FIELD_ERROR
        else None
    )
    return _RequestError(
        c.LLRPStatus(
            c.StatusCode.M_PARAMETER_ERROR,
            description,
            parameter_error=c.ParameterError(param_type, code, field_error=field_err),
        )
    )


class _Session:
    """The reader as one client sees it (see the module docstring for the rules)."""

    def __init__(
        self, sim: LlrpReaderSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sim = sim
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._framer = c.LlrpFramer()
        self._ids = itertools.count(1)
        self.rospecs: dict[int, _RoSpecRun] = {}
        self.config = self._default_config()
        self._held: list[c.TagReportData] = []
        self._keepalive_task: asyncio.Task[None] | None = None
        self._unacked = 0
        self._tg: asyncio.TaskGroup | None = None
        self._closing = False

    def _default_config(self) -> _ReaderConfig:
        return _ReaderConfig(
            report_spec=default_report_spec(), events=dict.fromkeys(c.EventType, False)
        )

    # -- I/O ----------------------------------------------------------------------------------

    def send(self, msg: c.LlrpMessage) -> None:
        if self._writer.is_closing() or self.sim.frozen:
            return
        self._writer.write(msg.encode())
        self.sim._count_out(msg)

    async def drain(self) -> None:
        if self._writer.is_closing():
            return
        try:
            await self._writer.drain()
        except ConnectionError:
            self.abort()

    async def write_raw(self, data: bytes) -> None:
        if self._writer.is_closing():
            return
        self._writer.write(data)
        await self.drain()

    def is_closing(self) -> bool:
        return self._closing

    async def finish(self) -> None:
        """Let a graceful close flush (bounded), then make sure the socket is gone."""
        self._closing = True
        if self._writer.transport.is_closing():
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._writer.wait_closed()
        self.abort()

    def abort(self) -> None:
        self._closing = True
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()

    def close(self, *, announce: bool) -> None:
        """Close gracefully: optionally a ConnectionCloseEvent first, then a flushed close."""
        if announce:
            self.send(self._event(connection_close=c.ConnectionCloseEvent()))
        self._closing = True
        self._writer.close()

    def _next_id(self) -> int:
        return next(self._ids) & 0xFFFFFFFF

    def _now_us(self) -> int:
        return int(self.sim.clock() * 1_000_000)

    def _event(
        self,
        *,
        connection_attempt: c.ConnectionAttemptEvent | None = None,
        connection_close: c.ConnectionCloseEvent | None = None,
        rospec_event: c.ROSpecEvent | None = None,
        aispec_event: c.AISpecEvent | None = None,
        antenna_event: c.AntennaEvent | None = None,
        gpi_event: c.GPIEvent | None = None,
    ) -> c.ReaderEventNotification:
        data = c.ReaderEventNotificationData(
            timestamp_us=self._now_us(),
            connection_attempt=connection_attempt,
            connection_close=connection_close,
            rospec_event=rospec_event,
            aispec_event=aispec_event,
            antenna_event=antenna_event,
            gpi_event=gpi_event,
        )
        return c.ReaderEventNotification(msg_id=self._next_id(), data=data)

    def gpi_edge(self, port: int, high: bool) -> None:
        """A GPI changed (``LlrpReaderSimulator.set_gpi``): event, then the GPI triggers."""
        if not self.config.gpi.get(port, True):
            return  # a disabled input reports and triggers nothing
        if self.config.events.get(c.EventType.GPI, False):
            self.send(self._event(gpi_event=c.GPIEvent(port, high)))
        for run in list(self.rospecs.values()):
            start, stop = run.rospec.boundary.start, run.rospec.boundary.stop
            if (
                run.state == c.ROSpecState.INACTIVE
                and start.trigger == c.ROSpecStartTriggerType.GPI
                and start.gpi is not None
                and (start.gpi.port, start.gpi.event) == (port, high)
            ):
                self._start(run)
            elif (
                run.state == c.ROSpecState.ACTIVE
                and stop.trigger == c.ROSpecStopTriggerType.GPI_WITH_TIMEOUT
                and stop.gpi is not None
                and (stop.gpi.port, stop.gpi.event) == (port, high)
            ):
                self._stop(run, c.ROSpecState.INACTIVE)

    def antenna_event(self, event: c.AntennaEvent) -> None:
        """Send an AntennaEvent if this client enabled them (ReaderEventNotificationSpec)."""
        if self.config.events.get(c.EventType.ANTENNA, False):
            self.send(self._event(antenna_event=event))

    # -- main loop ----------------------------------------------------------------------------

    async def run(self, *, refuse: bool) -> None:
        if refuse:
            logger.warning(
                "LLRP reader %s: refusing %s (max_clients=%s)",
                self.sim.reader_id,
                self.peer,
                self.sim.max_clients,
            )
            status = c.ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_CONNECTION_EXISTS
            self.send(self._event(connection_attempt=c.ConnectionAttemptEvent(status)))
            await self.drain()
            self.close(announce=False)
            return
        logger.info("LLRP reader %s: client %s connected", self.sim.reader_id, self.peer)
        self.send(self._event(connection_attempt=c.ConnectionAttemptEvent()))
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    await self._read_loop()
                finally:
                    self._cancel_tasks()
        finally:
            logger.info("LLRP reader %s: client %s disconnected", self.sim.reader_id, self.peer)

    async def _read_loop(self) -> None:
        while not self.is_closing():
            try:
                data = await self._reader.read(65536)
            except (ConnectionError, OSError):
                return
            if not data:
                return
            try:
                frames = self._framer.feed(data)
            except ProtocolError as exc:
                self._on_broken_stream(exc, data)
                return
            for frame in frames:
                if self.is_closing():
                    return
                self._handle_frame(frame)
                self.sim._notify()
            await self.drain()

    def _on_broken_stream(self, exc: ProtocolError, data: bytes) -> None:
        self.sim._protocol_errors += 1
        logger.warning(
            "LLRP reader %s: %s sent a bad frame: %s", self.sim.reader_id, self.peer, exc
        )
        code = c.StatusCode.M_FIELD_ERROR
        if "version" in str(exc):
            code = c.StatusCode.M_UNSUPPORTED_VERSION
        self.send(c.ErrorMessage(msg_id=0, status=c.LLRPStatus(code, str(exc))))
        self.close(announce=False)

    def _handle_frame(self, frame: bytes) -> None:
        header = c.decode_header(frame)
        self.sim._count_in(c.message_name(header.msg_type))
        if self.sim.frozen:
            return
        try:
            msg = c.decode_message(frame)
        except ProtocolError as exc:
            self.sim._protocol_errors += 1
            logger.warning(
                "LLRP reader %s: bad message from %s: %s", self.sim.reader_id, self.peer, exc
            )
            self._reply_status(
                header.msg_type,
                header.msg_id,
                c.LLRPStatus(c.StatusCode.M_PARAMETER_ERROR, str(exc)),
            )
            return
        if msg.version != 1:
            self.send(
                c.ErrorMessage(
                    msg_id=msg.msg_id,
                    status=c.LLRPStatus(
                        c.StatusCode.M_UNSUPPORTED_VERSION,
                        f"LLRP version {msg.version} not supported; this reader speaks 1",
                    ),
                )
            )
            return
        forced = self.sim.fail_requests.get(header.msg_type)
        if forced is not None:
            self._reply_status(header.msg_type, msg.msg_id, forced)
            return
        try:
            self._dispatch(msg)
        except _RequestError as exc:
            logger.debug("LLRP reader %s: %s refused: %s", self.sim.reader_id, msg.name, exc)
            self._reply_status(header.msg_type, msg.msg_id, exc.status)

    def _reply_status(self, msg_type: int, msg_id: int, status: c.LLRPStatus) -> None:
        factory = _RESPONSES.get(msg_type)
        if factory is not None:
            self.send(factory(msg_id=msg_id, status=status))
        else:
            self.send(c.ErrorMessage(msg_id=msg_id, status=status))

    # -- dispatch -----------------------------------------------------------------------------

    def _dispatch(self, msg: c.LlrpMessage) -> None:
        ok = c.LLRPStatus()
        match msg:
            case c.GetReaderCapabilities():
                self.send(self.sim.capabilities_response(msg.msg_id, msg.requested))
            case c.GetReaderConfig():
                self.send(self._reader_config_response(msg))
            case c.SetReaderConfig():
                self._set_reader_config(msg)
                self.send(c.SetReaderConfigResponse(msg_id=msg.msg_id, status=ok))
            case c.EnableEventsAndReports():
                pass  # no response by spec; events are never held by this reader
            case c.KeepaliveAck():
                self._unacked = 0
                self.sim._acks += 1
            case c.CloseConnection():
                self.send(c.CloseConnectionResponse(msg_id=msg.msg_id, status=ok))
                self.close(announce=False)
            case c.AddROSpec():
                self._add_rospec(msg.rospec)
                self.send(c.AddROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.EnableROSpec():
                for run in self._targets(msg.spec_id, allow_all=True):
                    self._enable(run)
                self.send(c.EnableROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.StartROSpec():
                (run,) = self._targets(msg.spec_id, allow_all=False)
                if run.state != c.ROSpecState.INACTIVE:
                    raise _field_error(
                        c.StatusCode.A_INVALID,
                        f"ROSpec {msg.spec_id} is {run.state.name}, START needs INACTIVE",
                    )
                self._start(run)
                self.send(c.StartROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.StopROSpec():
                (run,) = self._targets(msg.spec_id, allow_all=False)
                if run.state != c.ROSpecState.ACTIVE:
                    raise _field_error(
                        c.StatusCode.A_INVALID,
                        f"ROSpec {msg.spec_id} is {run.state.name}, STOP needs ACTIVE",
                    )
                self._stop(run, c.ROSpecState.INACTIVE)
                self.send(c.StopROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.DisableROSpec():
                for run in self._targets(msg.spec_id, allow_all=True):
                    self._stop(run, c.ROSpecState.DISABLED)
                self.send(c.DisableROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.DeleteROSpec():
                for run in self._targets(msg.spec_id, allow_all=True):
                    self._stop(run, c.ROSpecState.DISABLED)
                    del self.rospecs[run.rospec.rospec_id]
                self.send(c.DeleteROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.GetROSpecs():
                specs = tuple(_with_state(run.rospec, run.state) for run in self.rospecs.values())
                self.send(c.GetROSpecsResponse(msg_id=msg.msg_id, status=ok, rospecs=specs))
            case c.DeleteAccessSpec() | c.EnableAccessSpec() | c.DisableAccessSpec():
                if msg.spec_id != 0:
                    raise _field_error(c.StatusCode.A_INVALID, f"no AccessSpec {msg.spec_id}")
                self._reply_status(msg.TYPE, msg.msg_id, ok)
            case c.AddAccessSpec():
                raise _RequestError(
                    c.LLRPStatus(
                        c.StatusCode.M_UNSUPPORTED_PARAMETER,
                        "this reader has no access operations (MaxNumAccessSpecs = 0)",
                        parameter_error=c.ParameterError(207, c.StatusCode.P_UNSUPPORTED_PARAMETER),
                    )
                )
            case c.GetAccessSpecs():
                self.send(c.GetAccessSpecsResponse(msg_id=msg.msg_id, status=ok))
            case c.GetReport():
                self._send_held()
            case c.CustomMessage() if (
                self.sim.impinj_extensions
                and msg.vendor_id == c.VENDOR_IMPINJ
                and msg.subtype == c.IMPINJ_ENABLE_EXTENSIONS
            ):
                self.send(c.impinj_enable_extensions_response(msg.msg_id, ok))
            case _:
                raise _RequestError(
                    c.LLRPStatus(
                        c.StatusCode.M_UNSUPPORTED_MESSAGE,
                        f"{msg.name} is not supported by this reader",
                    )
                )

    # -- configuration ------------------------------------------------------------------------

    def _check_antenna(self, antenna_id: int, param_type: int) -> None:
        if antenna_id != 0 and antenna_id not in self.sim.antennas:
            raise _param_error(
                param_type, f"antenna {antenna_id} does not exist (antennas {self.sim.antennas})"
            )

    def _reader_config_response(self, msg: c.GetReaderConfig) -> c.GetReaderConfigResponse:
        req = c.ConfigRequest
        if msg.antenna_id != 0 and msg.antenna_id not in self.sim.antennas:
            raise _field_error(
                c.StatusCode.A_OUT_OF_RANGE, f"antenna {msg.antenna_id} does not exist"
            )
        if msg.requested > max(req):
            raise _field_error(
                c.StatusCode.A_OUT_OF_RANGE, f"RequestedData {msg.requested}", field_num=1
            )
        antennas = self.sim.antennas if msg.antenna_id == 0 else (msg.antenna_id,)
        cfg = self.config

        def want(code: int) -> bool:
            return msg.requested in (req.ALL, code)

        def gpio_ports(port: int) -> range:
            return range(1, _GPIO_PORTS + 1) if port == 0 else range(port, port + 1)

        return c.GetReaderConfigResponse(
            msg_id=msg.msg_id,
            identification=c.Identification(0, _eui64(self.sim.reader_id))
            if want(req.IDENTIFICATION)
            else None,
            antenna_properties=tuple(c.AntennaProperties(a, True, 600) for a in antennas)
            if want(req.ANTENNA_PROPERTIES)
            else (),
            antenna_configurations=tuple(self._antenna_config(a) for a in antennas)
            if want(req.ANTENNA_CONFIGURATION)
            else (),
            event_spec=c.ReaderEventNotificationSpec(
                tuple(c.EventNotificationState(t, on) for t, on in cfg.events.items() if t < 9)
            )
            if want(req.READER_EVENT_NOTIFICATION_SPEC)
            else None,
            report_spec=cfg.report_spec if want(req.RO_REPORT_SPEC) else None,
            access_report_spec=c.AccessReportSpec(cfg.access_report_trigger)
            if want(req.ACCESS_REPORT_SPEC)
            else None,
            configuration_state=c.LLRPConfigurationStateValue(self._configuration_state())
            if want(req.LLRP_CONFIGURATION_STATE_VALUE)
            else None,
            keepalive=cfg.keepalive if want(req.KEEPALIVE_SPEC) else None,
            gpi_port_states=tuple(
                c.GPIPortCurrentState(p, cfg.gpi.get(p, True), 0)
                for p in gpio_ports(msg.gpi_port)
                if p <= _GPIO_PORTS
            )
            if want(req.GPI_PORT_CURRENT_STATE)
            else (),
            gpo_write_data=tuple(
                c.GPOWriteData(p, cfg.gpo.get(p, False))
                for p in gpio_ports(msg.gpo_port)
                if p <= _GPIO_PORTS
            )
            if want(req.GPO_WRITE_DATA)
            else (),
            events_and_reports=cfg.events_and_reports if want(req.EVENTS_AND_REPORTS) else None,
        )

    def _configuration_state(self) -> int:
        """LLRPConfigurationStateValue: a value that changes
        whenever the reader's configuration does (SET_READER_CONFIG, ROSpecs added or
        deleted), so a client can tell whether to configure again: a digest of them."""
        state = (self.config, [(i, run.rospec) for i, run in sorted(self.rospecs.items())])
        return int.from_bytes(hashlib.blake2b(repr(state).encode(), digest_size=4).digest())

    def _antenna_config(self, antenna: int) -> c.AntennaConfiguration:
        configured = self.config.antenna_configs.get(antenna)
        if configured is not None:
            return configured
        return c.AntennaConfiguration(
            antenna_id=antenna,
            rf_receiver=c.RFReceiver(1),
            rf_transmitter=c.RFTransmitter(1, 1, 81),
            inventory_commands=(
                c.C1G2InventoryCommand(
                    rf_control=c.C1G2RFControl(2, 0),
                    singulation_control=c.C1G2SingulationControl(2, 32, 0),
                ),
            ),
        )

    def _set_reader_config(self, msg: c.SetReaderConfig) -> None:
        # validate everything first so a refused request changes nothing
        for props in msg.antenna_properties:
            self._check_antenna(props.antenna_id, c.AntennaProperties.TYPE)
        for ac in msg.antenna_configurations:
            self._check_antenna(ac.antenna_id, c.AntennaConfiguration.TYPE)
        for gpi in msg.gpi_port_states:
            if not 1 <= gpi.port <= _GPIO_PORTS:
                raise _param_error(c.GPIPortCurrentState.TYPE, f"no GPI port {gpi.port}")
        for gpo in msg.gpo_write_data:
            if not 1 <= gpo.port <= _GPIO_PORTS:
                raise _param_error(c.GPOWriteData.TYPE, f"no GPO port {gpo.port}")
        if msg.keepalive is not None and msg.keepalive.periodic and msg.keepalive.interval_ms == 0:
            raise _param_error(c.KeepaliveSpec.TYPE, "periodic keepalive with interval 0")
        if msg.reset_to_factory_defaults:
            for run in list(self.rospecs.values()):
                self._stop(run, c.ROSpecState.DISABLED)
            self.rospecs.clear()
            self.config = self._default_config()
            self._restart_keepalive()
        cfg = self.config
        if msg.event_spec is not None:
            for state in msg.event_spec.states:
                cfg.events[state.event_type] = state.enabled
        for ac in msg.antenna_configurations:
            targets = self.sim.antennas if ac.antenna_id == 0 else (ac.antenna_id,)
            for a in targets:
                cfg.antenna_configs[a] = c.AntennaConfiguration(
                    antenna_id=a,
                    rf_receiver=ac.rf_receiver,
                    rf_transmitter=ac.rf_transmitter,
                    inventory_commands=ac.inventory_commands,
                )
        if msg.report_spec is not None:
            cfg.report_spec = msg.report_spec
        if msg.access_report_spec is not None:
            cfg.access_report_trigger = msg.access_report_spec.trigger
        for gpi in msg.gpi_port_states:
            cfg.gpi[gpi.port] = gpi.enabled
        for gpo in msg.gpo_write_data:
            cfg.gpo[gpo.port] = gpo.data
            self.sim.gpo_writes.append(GpioChange(self.sim.clock(), gpo.port, gpo.data))
        if msg.events_and_reports is not None:
            cfg.events_and_reports = msg.events_and_reports
        if msg.keepalive is not None:
            cfg.keepalive = msg.keepalive
            self._restart_keepalive()

    # -- keepalive ----------------------------------------------------------------------------

    def _restart_keepalive(self) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        spec = self.config.keepalive
        if spec.periodic and spec.interval_ms > 0 and self._tg is not None:
            self._keepalive_task = self._tg.create_task(self._keepalive_loop(spec.interval_ms))

    async def _keepalive_loop(self, interval_ms: int) -> None:
        misses = self.sim.keepalive_ack_misses
        while True:
            await asyncio.sleep(interval_ms / 1000)
            if self.sim.frozen:
                continue
            if misses is not None and self._unacked >= misses:
                logger.warning(
                    "LLRP reader %s: %s left %d keepalives unanswered, closing",
                    self.sim.reader_id,
                    self.peer,
                    self._unacked,
                )
                self.close(announce=True)
                return
            self._unacked += 1
            self.send(c.Keepalive(msg_id=self._next_id()))
            await self.drain()

    # -- ROSpecs ------------------------------------------------------------------------------

    def _targets(self, spec_id: int, *, allow_all: bool) -> list[_RoSpecRun]:
        if spec_id == 0:
            if not allow_all:
                raise _field_error(c.StatusCode.A_INVALID, "ROSpecID 0 is not allowed here")
            return list(self.rospecs.values())
        run = self.rospecs.get(spec_id)
        if run is None:
            raise _field_error(c.StatusCode.A_INVALID, f"no ROSpec {spec_id}")
        return [run]

    def _add_rospec(self, rospec: c.ROSpec) -> None:
        ptype = c.ROSpec.TYPE
        if rospec.rospec_id == 0:
            raise _param_error(ptype, "ROSpecID 0 is reserved", c.StatusCode.P_FIELD_ERROR)
        if rospec.rospec_id in self.rospecs:
            raise _param_error(ptype, f"ROSpec {rospec.rospec_id} already exists")
        if rospec.current_state != c.ROSpecState.DISABLED:
            raise _param_error(ptype, "a new ROSpec must be Disabled", field_num=2)
        if len(self.rospecs) >= self.sim.max_rospecs:
            raise _param_error(
                ptype,
                f"this reader holds at most {self.sim.max_rospecs} ROSpecs",
                c.StatusCode.P_OVERFLOW_PARAMETER,
            )
        if rospec.priority >= 1:
            raise _param_error(ptype, f"priority {rospec.priority} > 0", field_num=1)
        if any(isinstance(p, c.RawParameter) for p in rospec.extensions):
            raise _param_error(
                ptype, "only AISpecs are supported", c.StatusCode.P_UNSUPPORTED_PARAMETER
            )
        if not rospec.ai_specs:
            raise _param_error(ptype, "ROSpec without AISpec", c.StatusCode.P_MISSING_PARAMETER)
        if len(rospec.ai_specs) > 8:
            raise _param_error(ptype, "more than 8 AISpecs", c.StatusCode.P_OVERFLOW_PARAMETER)
        boundary = rospec.boundary
        for trigger, gpi, ptype in (
            (
                boundary.start.trigger == c.ROSpecStartTriggerType.GPI,
                boundary.start.gpi,
                c.ROSpecStartTrigger.TYPE,
            ),
            (
                boundary.stop.trigger == c.ROSpecStopTriggerType.GPI_WITH_TIMEOUT,
                boundary.stop.gpi,
                c.ROSpecStopTrigger.TYPE,
            ),
        ):
            if trigger and (gpi is None or not 1 <= gpi.port <= _GPIO_PORTS):
                raise _param_error(
                    ptype,
                    f"GPI trigger without a GPI port 1..{_GPIO_PORTS}",
                    c.StatusCode.P_MISSING_PARAMETER if gpi is None else c.StatusCode.P_FIELD_ERROR,
                )
        for ai in rospec.ai_specs:
            if not ai.antenna_ids:
                raise _param_error(c.AISpec.TYPE, "AISpec without antennas")
            for a in ai.antenna_ids:
                self._check_antenna(a, c.AISpec.TYPE)
            if ai.stop.trigger not in (
                c.AISpecStopTriggerType.NULL,
                c.AISpecStopTriggerType.DURATION,
                c.AISpecStopTriggerType.TAG_OBSERVATION,
            ):
                raise _param_error(
                    c.AISpecStopTrigger.TYPE,
                    f"AISpec stop trigger {ai.stop.trigger} not supported",
                    c.StatusCode.P_UNSUPPORTED_PARAMETER,
                )
            for ips in ai.inventory_parameter_specs:
                if ips.protocol_id != 1:
                    raise _param_error(
                        c.InventoryParameterSpec.TYPE,
                        f"air protocol {ips.protocol_id} (only EPC C1G2 = 1)",
                        field_num=1,
                    )
                for ac in ips.antenna_configurations:
                    self._check_antenna(ac.antenna_id, c.AntennaConfiguration.TYPE)
                    for command in ac.inventory_commands:
                        _check_filters(command.filters)
        report = rospec.report_spec
        if (
            report is not None
            and report.trigger > c.ROReportTriggerType.UPON_N_TAGS_OR_END_OF_ROSPEC
        ):
            raise _param_error(c.ROReportSpec.TYPE, f"ROReportTrigger {report.trigger}")
        self.rospecs[rospec.rospec_id] = _RoSpecRun(rospec)
        self.sim._rospecs_added.append(rospec)
        logger.debug(
            "LLRP reader %s: %s added ROSpec %d", self.sim.reader_id, self.peer, rospec.rospec_id
        )

    def _enable(self, run: _RoSpecRun) -> None:
        if run.state != c.ROSpecState.DISABLED:
            return  # already enabled: enabling again changes nothing
        run.state = c.ROSpecState.INACTIVE
        start = run.rospec.boundary.start
        if start.trigger == c.ROSpecStartTriggerType.IMMEDIATE:
            self._start(run)
        elif start.trigger == c.ROSpecStartTriggerType.PERIODIC and self._tg is not None:
            assert start.periodic is not None  # the codec refuses Periodic without its value
            run.trigger_task = self._tg.create_task(self._periodic_trigger(run, start.periodic))

    async def _periodic_trigger(self, run: _RoSpecRun, periodic: c.PeriodicTriggerValue) -> None:
        await asyncio.sleep(periodic.offset_ms / 1000)
        while True:
            if run.state == c.ROSpecState.INACTIVE:
                self._start(run)
            if periodic.period_ms == 0:
                return
            await asyncio.sleep(periodic.period_ms / 1000)

    def _start(self, run: _RoSpecRun) -> None:
        if self._tg is None:
            return
        run.state = c.ROSpecState.ACTIVE
        run.task = self._tg.create_task(self._run_rospec(run))
        self._rospec_event(0, run.rospec.rospec_id)
        self.sim._notify()

    def _stop(self, run: _RoSpecRun, new_state: c.ROSpecState) -> None:
        """Stop ``run`` now (its end-of-ROSpec report goes out) and move it to ``new_state``."""
        was_active = run.state == c.ROSpecState.ACTIVE
        if run.task is not None:
            run.task.cancel()
            run.task = None
        if new_state == c.ROSpecState.DISABLED and run.trigger_task is not None:
            run.trigger_task.cancel()
            run.trigger_task = None
        if was_active:
            self._end_of_rospec(run)
        run.state = new_state
        self.sim._notify()

    def _end_of_rospec(self, run: _RoSpecRun) -> None:
        spec = self._report_spec(run)
        if spec.trigger == c.ROReportTriggerType.NONE:
            self._hold(run)
        else:
            self._flush(run, spec)
        self._rospec_event(1, run.rospec.rospec_id)

    def _rospec_event(self, event: int, rospec_id: int) -> None:
        if self.config.events.get(c.EventType.ROSPEC):
            self.send(self._event(rospec_event=c.ROSpecEvent(event, rospec_id)))

    def _report_spec(self, run: _RoSpecRun) -> c.ROReportSpec:
        return run.rospec.report_spec or self.config.report_spec

    async def _run_rospec(self, run: _RoSpecRun) -> None:
        loop = asyncio.get_running_loop()
        boundary = run.rospec.boundary
        deadline = None
        if boundary.stop.trigger == c.ROSpecStopTriggerType.DURATION:
            deadline = loop.time() + boundary.stop.duration_ms / 1000
        elif (
            boundary.stop.trigger == c.ROSpecStopTriggerType.GPI_WITH_TIMEOUT
            and boundary.stop.gpi is not None
            and boundary.stop.gpi.timeout_ms
        ):  # stopped by its GPI edge (gpi_edge), or by this timeout if none comes
            deadline = loop.time() + boundary.stop.gpi.timeout_ms / 1000
        spec = self._report_spec(run)
        t_prev = self.sim.clock()
        while deadline is None or loop.time() < deadline:
            for index, ai in enumerate(run.rospec.ai_specs, start=1):
                t_prev = await self._run_aispec(
                    run=run, spec=spec, index=index, ai=ai, t_prev=t_prev, rospec_deadline=deadline
                )
                if spec.trigger == c.ROReportTriggerType.UPON_N_TAGS_OR_END_OF_AISPEC:
                    self._flush(run, spec)
                    await self.drain()
                if self.config.events.get(c.EventType.AISPEC):
                    self.send(self._event(aispec_event=c.AISpecEvent(run.rospec.rospec_id, index)))
                if deadline is not None and loop.time() >= deadline:
                    break
        # the ROSpec's own duration ended it
        run.task = None
        run.state = c.ROSpecState.INACTIVE
        self._end_of_rospec(run)
        self.sim._notify()

    async def _run_aispec(
        self,
        *,
        run: _RoSpecRun,
        spec: c.ROReportSpec,
        index: int,
        ai: c.AISpec,
        t_prev: float,
        rospec_deadline: float | None,
    ) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stop = ai.stop
        deadline = rospec_deadline
        obs = stop.tag_observation
        if stop.trigger == c.AISpecStopTriggerType.DURATION:
            deadline = _earliest(deadline, started + stop.duration_ms / 1000)
        elif stop.trigger == c.AISpecStopTriggerType.TAG_OBSERVATION and obs and obs.timeout_ms:
            deadline = _earliest(deadline, started + obs.timeout_ms / 1000)
        antennas = self._antennas(ai)
        ips_id = ai.inventory_parameter_specs[0].spec_id if ai.inventory_parameter_specs else 0
        selects = _select_filters(ai)
        channels = {a: self._channel(ai, a) for a in antennas}
        unique: set[bytes] = set()
        last_new = started
        attempts = 0
        interval = self.sim.report_interval_s
        while True:
            if interval > 0:
                wake = loop.time() + interval
                await asyncio.sleep(max(0.0, _earliest(deadline, wake) - loop.time()))
            else:
                await asyncio.sleep(0)
            t_now = self.sim.clock()
            reads = self.sim.source.reads(t_prev, t_now) if self.sim.source else ()
            if self.sim.cut_antennas:
                reads = [r for r in reads if r.antenna not in self.sim.cut_antennas]
            if selects:
                reads = [r for r in reads if _selected(r, selects)]
            t_prev = t_now
            attempts += 1
            new = self._accumulate(
                run=run,
                spec=spec,
                index=index,
                ips_id=ips_id,
                reads=reads,
                channels=channels,
                unique=unique,
            )
            if new:
                last_new = loop.time()
            if spec.n and len(run.pending) >= spec.n and spec.trigger != c.ROReportTriggerType.NONE:
                self._flush(run, spec, limit=spec.n)
                await self.drain()
            elif spec.trigger == c.ROReportTriggerType.NONE:
                self._hold(run)
            now = loop.time()
            if deadline is not None and now >= deadline:
                return t_prev
            if stop.trigger == c.AISpecStopTriggerType.TAG_OBSERVATION and obs is not None:
                kind = obs.trigger
                if kind == 0 and obs.number_of_tags and len(unique) >= obs.number_of_tags:
                    return t_prev
                if kind == 1 and obs.t_ms and now - last_new >= obs.t_ms / 1000:
                    return t_prev
                if kind == 2 and obs.number_of_attempts and attempts >= obs.number_of_attempts:
                    return t_prev

    def _antennas(self, ai: c.AISpec) -> tuple[int, ...]:
        if 0 in ai.antenna_ids:
            return self.sim.antennas
        return tuple(a for a in ai.antenna_ids if a in self.sim.antennas)

    def _channel(self, ai: c.AISpec, antenna: int) -> int:
        for ips in ai.inventory_parameter_specs:
            for ac in ips.antenna_configurations:
                if ac.antenna_id in (0, antenna) and ac.rf_transmitter is not None:
                    return ac.rf_transmitter.channel_index
        configured = self.config.antenna_configs.get(antenna)
        if configured is not None and configured.rf_transmitter is not None:
            return configured.rf_transmitter.channel_index
        return 1

    def _accumulate(
        self,
        *,
        run: _RoSpecRun,
        spec: c.ROReportSpec,
        index: int,
        ips_id: int,
        reads: Sequence[SimRead],
        channels: Mapping[int, int],
        unique: set[bytes],
    ) -> bool:
        sel = spec.selector
        new = False
        for r in reads:
            channel = channels.get(r.antenna)
            if channel is None:
                continue  # not an antenna of this AISpec
            epc = r.epc_bytes
            if epc not in unique:
                unique.add(epc)
                new = True
            key = (
                epc,
                r.antenna if sel.antenna_id else 0,
                channel if sel.channel_index else 0,
                index if sel.spec_index else 0,
            )
            acc = run.pending.get(key)
            if acc is None:
                run.pending[key] = _Accum(
                    epc,
                    r.antenna,
                    channel,
                    index,
                    ips_id,
                    r.first_seen_us,
                    r.last_seen_us,
                    r.seen_count,
                    r.rssi_dbm,
                )
            else:
                acc.first_us = min(acc.first_us, r.first_seen_us)
                acc.last_us = max(acc.last_us, r.last_seen_us)
                acc.count += r.seen_count
                acc.rssi = max(acc.rssi, r.rssi_dbm)
        return new

    def _entries(
        self, run: _RoSpecRun, spec: c.ROReportSpec, limit: int | None
    ) -> list[c.TagReportData]:
        keys = list(run.pending)[: limit if limit else None]
        sel = spec.selector
        pc_bits, crc = sel.pc_bits, sel.crc  # properties scan the memory selectors: once per flush
        return [
            _tag_report(run.pending.pop(key), run.rospec.rospec_id, sel, pc_bits=pc_bits, crc=crc)
            for key in keys
        ]

    def _flush(self, run: _RoSpecRun, spec: c.ROReportSpec, limit: int | None = None) -> None:
        while run.pending:
            tags = self._entries(run, spec, limit or _MAX_TAGS_PER_REPORT)
            self.send(c.ROAccessReport(msg_id=self._next_id(), tags=tuple(tags)))
            if limit and len(run.pending) < limit:
                break  # the rest waits for the next N or the end of the spec

    def _hold(self, run: _RoSpecRun) -> None:
        self._held.extend(self._entries(run, self._report_spec(run), None))
        overflow = len(self._held) - self.sim.max_held_tags
        if overflow > 0:
            del self._held[:overflow]  # a real reader's buffer overflows too; oldest go first

    def _send_held(self) -> None:
        for run in self.rospecs.values():
            if self._report_spec(run).trigger == c.ROReportTriggerType.NONE:
                self._hold(run)
        held, self._held = self._held, []
        # GET_REPORT always answers with a report, even an empty one
        self.send(c.ROAccessReport(msg_id=self._next_id(), tags=tuple(held)))

    def _cancel_tasks(self) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        for run in self.rospecs.values():
            for task in (run.task, run.trigger_task):
                if task is not None:
                    task.cancel()


def _eui64(reader_id: str) -> bytes:
    """A stable, locally administered unicast EUI-64 derived from the reader's name: the
    Identification of IDType 0 ("MAC address") is an EUI-64 (LLRP 1.0.1 section 12.2.2)."""
    raw = bytearray(hashlib.blake2b(reader_id.encode(), digest_size=8).digest())
    raw[0] = (raw[0] | 0x02) & 0xFE
    return bytes(raw)


# Select filters (C1G2Filter) as Gen2 Select commands on the SL
# flag: each action says what a matching and a non-matching tag do (assert, deassert, negate,
# nothing); a state-unaware inventory then reads the tags whose SL is asserted. Only the EPC
# memory bank is modelled (CRC word, PC word, then the EPC); a filter on another bank is refused
# rather than ignored. The default action, without C1G2TagInventoryStateUnawareFilterAction, is 0.
_SL_ACTIONS: Final[Mapping[int, tuple[str, str]]] = {
    0: ("assert", "deassert"),
    1: ("assert", "nothing"),
    2: ("nothing", "deassert"),
    3: ("negate", "nothing"),
    4: ("deassert", "assert"),
    5: ("deassert", "nothing"),
    6: ("nothing", "assert"),
    7: ("nothing", "negate"),
}
_STATE_UNAWARE_ACTION = 334
_MAX_SELECT_FILTERS = 2  # what the capabilities advertise (MaxNumSelectFiltersPerQuery)
_EPC_BANK = 1


def _filter_action(flt: c.C1G2Filter) -> int:
    for ext in flt.extensions:
        if isinstance(ext, c.RawParameter) and ext.type == _STATE_UNAWARE_ACTION and ext.body:
            return ext.body[0]
    return 0


def _check_filters(filters: Sequence[c.C1G2Filter]) -> None:
    if len(filters) > _MAX_SELECT_FILTERS:
        raise _param_error(
            c.C1G2Filter.TYPE,
            f"{len(filters)} select filters, at most {_MAX_SELECT_FILTERS} per query",
            c.StatusCode.P_OVERFLOW_PARAMETER,
        )
    for flt in filters:
        if flt.mask.memory_bank != _EPC_BANK:
            raise _param_error(
                c.C1G2TagInventoryMask.TYPE,
                f"select filters on memory bank {flt.mask.memory_bank} are not supported "
                "(EPC bank only)",
                c.StatusCode.P_UNSUPPORTED_PARAMETER,
            )
        if _filter_action(flt) not in _SL_ACTIONS:
            raise _param_error(_STATE_UNAWARE_ACTION, f"filter action {_filter_action(flt)}")


def _select_filters(ai: c.AISpec) -> dict[int, tuple[c.C1G2Filter, ...]]:
    """Antenna -> the select filters of its inventory commands (antenna 0: every antenna)."""
    out: dict[int, tuple[c.C1G2Filter, ...]] = {}
    for ips in ai.inventory_parameter_specs:
        for ac in ips.antenna_configurations:
            filters = tuple(f for cmd in ac.inventory_commands for f in cmd.filters)
            if filters:
                out[ac.antenna_id] = out.get(ac.antenna_id, ()) + filters
    return out


def _mask_matches(epc: bytes, mask: c.C1G2TagInventoryMask) -> bool:
    pc = (len(epc) // 2) << 11
    bank = int.from_bytes(b"\x00\x00" + pc.to_bytes(2, "big") + epc, "big")
    bank_bits = 32 + 8 * len(epc)
    if mask.pointer + mask.mask_bits > bank_bits:
        return False  # the mask runs past the end of the bank: no match (Gen2)
    got = (bank >> (bank_bits - mask.pointer - mask.mask_bits)) & ((1 << mask.mask_bits) - 1)
    want = int.from_bytes(mask.mask, "big") >> (8 * len(mask.mask) - mask.mask_bits)
    return got == want


def _selected(read: SimRead, selects: Mapping[int, tuple[c.C1G2Filter, ...]]) -> bool:
    filters = selects.get(read.antenna, ()) + selects.get(0, ())
    if not filters:
        return True
    epc = read.epc_bytes
    sl = False
    for flt in filters:
        action = _SL_ACTIONS[_filter_action(flt)][0 if _mask_matches(epc, flt.mask) else 1]
        if action == "assert":
            sl = True
        elif action == "deassert":
            sl = False
        elif action == "negate":
            sl = not sl
    return sl


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _with_state(rospec: c.ROSpec, state: int) -> c.ROSpec:
    return c.ROSpec(
        rospec_id=rospec.rospec_id,
        priority=rospec.priority,
        current_state=state,
        boundary=rospec.boundary,
        ai_specs=rospec.ai_specs,
        report_spec=rospec.report_spec,
        extensions=rospec.extensions,
    )


def _tag_report(
    acc: _Accum, rospec_id: int, sel: c.TagReportContentSelector, *, pc_bits: bool, crc: bool
) -> c.TagReportData:
    pc = c.gen2_pc_word(8 * len(acc.epc))
    return c.TagReportData(
        epc=acc.epc,
        rospec_id=rospec_id if sel.rospec_id else None,
        spec_index=acc.spec_index if sel.spec_index else None,
        inventory_parameter_spec_id=acc.ips_id if sel.inventory_parameter_spec_id else None,
        antenna_id=acc.antenna if sel.antenna_id else None,
        peak_rssi=max(-128, min(127, round(acc.rssi))) if sel.peak_rssi else None,
        channel_index=acc.channel if sel.channel_index else None,
        first_seen_utc_us=acc.first_us if sel.first_seen_timestamp else None,
        last_seen_utc_us=acc.last_us if sel.last_seen_timestamp else None,
        tag_seen_count=min(acc.count, 0xFFFF) if sel.tag_seen_count else None,
        c1g2_pc=pc if pc_bits else None,
        c1g2_crc=c.gen2_crc16(pc.to_bytes(2, "big") + acc.epc) if crc else None,
        access_spec_id=0 if sel.access_spec_id else None,
    )


# --------------------------------------------------------------------------------------------
# Command line: dockwatch simulate llrp
# --------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port (default {DEFAULT_PORT}; with a scenario, the first of consecutive ports "
        "for readers whose port the scenario does not name)",
    )
    parser.add_argument(
        "--antennas",
        metavar="IDS",
        default="1,2,3,4",
        help="antenna IDs without a scenario (default 1,2,3,4)",
    )
    parser.add_argument(
        "--scenario", metavar="FILE", help="scenario YAML file (doors, readers, pallets...)"
    )
    parser.add_argument(
        "--truth", metavar="FILE", help="write the scenario's ground truth (JSONL) here"
    )
    parser.add_argument(
        "--speed", metavar="X", type=float, default=1.0, help="scenario time per wall second"
    )
    parser.add_argument(
        "--seed", metavar="N", type=int, default=None, help="override the scenario's seed"
    )
    parser.add_argument(
        "--tags",
        metavar="N",
        type=int,
        default=10,
        help="without a scenario: tags always in the field",
    )
    parser.add_argument(
        "--report-interval",
        metavar="S",
        type=float,
        default=0.1,
        help="inventory round in seconds (0 = as fast as the client reads)",
    )
    parser.add_argument(
        "--duration",
        metavar="S",
        type=float,
        default=None,
        help="stop after this many wall seconds",
    )
    parser.add_argument(
        "--summary-interval",
        metavar="S",
        type=float,
        default=10.0,
        help="seconds between summary lines",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help=f"PEM certificate (chain) of the reader: serve LLRP over TLS (default port "
        f"{DEFAULT_TLS_PORT}); needs --tls-key",
    )
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="require client certificates issued by this CA (PEM); needs --tls-cert",
    )
    parser.add_argument(
        "--log-level", metavar="LEVEL", default="INFO", help="DEBUG, INFO, WARNING..."
    )


def tls_from_args(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server context the ``--tls-*`` options ask for (None: plain TCP)."""
    try:
        return server_context_from_flags(args.tls_cert, args.tls_key, args.tls_client_ca)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    except ConfigError as exc:
        raise SystemExit(f"--tls-cert/--tls-key/--tls-client-ca: {exc}") from exc


def _parse_antennas(text: str) -> tuple[int, ...]:
    try:
        antennas = tuple(int(a) for a in text.split(",") if a.strip())
    except ValueError as exc:
        raise SystemExit(f"--antennas: not a comma-separated list of integers: {text!r}") from exc
    if not antennas:
        raise SystemExit("--antennas: empty")
    return antennas


def build_simulators(args: argparse.Namespace, *, t0_wall: float) -> list[LlrpReaderSimulator]:
    """The simulators the command line asks for (one per reader of the scenario)."""
    tls = tls_from_args(args)
    default_port = DEFAULT_PORT if tls is None else DEFAULT_TLS_PORT
    if not args.scenario:
        antennas = _parse_antennas(args.antennas)
        population = TagPopulation.sequential(args.tags, antennas=antennas, rssi_dbm=-58.0)
        port = default_port if args.port is None else args.port
        return [
            LlrpReaderSimulator(
                host=args.host,
                port=port,
                antennas=antennas,
                source=population,
                report_interval_s=args.report_interval,
                tls=tls,
            )
        ]
    from simulators.scenario import load_scenario

    scenario: Scenario = load_scenario(args.scenario)
    if args.seed is not None:
        scenario = scenario.with_seed(args.seed)
    if args.truth:
        scenario.write_truth(args.truth)
    next_port = default_port if args.port is None else args.port
    sims = []
    for door in scenario.doors:
        port = door.port
        if port is None:
            port = next_port
            next_port += 1
        sims.append(
            LlrpReaderSimulator(
                host=args.host,
                port=port,
                reader_id=door.reader,
                antennas=door.antenna_ids,
                source=scenario.read_source(door.reader, t0_wall, speed=args.speed),
                report_interval_s=args.report_interval,
                tls=tls,
            )
        )
    return sims


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        sims = build_simulators(args, t0_wall=time.time())
        async with contextlib.AsyncExitStack() as stack:
            for sim in sims:
                await stack.enter_async_context(sim)
            deadline = None if args.duration is None else loop.time() + args.duration
            while not stop.is_set():
                timeout = args.summary_interval
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - loop.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await stop.wait()
                for sim in sims:
                    logger.info("%s", sim.summary())
                if deadline is not None and loop.time() >= deadline:
                    break
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency; fall back if absent
        runner = asyncio.Runner()
    with runner:
        try:
            return runner.run(_serve(args))
        except ConfigError as exc:  # a missing or invalid scenario: a usage error
            print(f"dockwatch simulate llrp: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            logger.error("cannot serve: %s", exc)  # noqa: TRY400 - a bind error needs no traceback
            return 1
