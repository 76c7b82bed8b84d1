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
Each TCP client gets its own :class:`~simulators.llrp.session.Session`: a fresh reader
(configuration and ROSpecs live and die with the connection, like a reader rebooted between
clients). Like a reader, one client at a time (``max_clients=1``); with ``max_clients=None``
several clients at once each see their own reader. On connect the session sends
READER_EVENT_NOTIFICATION with a ConnectionAttemptEvent (Success, or "client connection exists"
and a close when ``max_clients`` is reached). Every request gets its response with an LLRPStatus;
a message the reader does not support, or a reader-to-client message sent the wrong way, gets
ERROR_MESSAGE/M_UnsupportedMessage; an LLRP 1.1 (version 2) message gets
ERROR_MESSAGE/M_UnsupportedVersion (this reader speaks 1.0.1 and 1.1 needs version negotiation
first); a body that fails to decode gets its response (or ERROR_MESSAGE) with M_ParameterError
naming what is wrong. A frame whose header is unusable (unknown version, length < 10 or above
1 MiB) cannot be resynchronised: ERROR_MESSAGE, then close.

A session delegates to one collaborator per job, each in its own module:

* :mod:`~simulators.llrp.session`: framing, the rules above, dispatch, fault injection (frozen,
  ``fail_requests``) and the task group the session's tasks run in;
* :mod:`~simulators.llrp.link`: the socket's write side, message IDs, drain and close;
* :mod:`~simulators.llrp.settings`: GET/SET_READER_CONFIG (each GPO write it applies goes to
  the simulator's ``gpo_writes``);
* :mod:`~simulators.llrp.rospecs`: the ROSpec state machine, its start and stop triggers
  (immediate, periodic, GPI) and what ADD_ROSPEC accepts;
* :mod:`~simulators.llrp.inventory`: an active ROSpec's AISpecs in inventory rounds, reads merged
  per tag (select filters: :mod:`~simulators.llrp.filters`);
* :mod:`~simulators.llrp.reports`: RO_ACCESS_REPORTs by the ROReportSpec, reader events (ROSpec,
  AISpec, antenna, GPI, connection) and keepalives;
* :mod:`~simulators.llrp.capabilities`: what the reader advertises and the limits it enforces;
* :mod:`~simulators.llrp.refusals`: the LLRPStatus of a refused request.

The simulator itself holds what outlives a connection: the antennas, GPI levels and cut
antennas, the faults it injects into every session, the counters behind :attr:`stats`, and the
GPIO history (``gpi_changes``, ``gpo_writes``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Self

from dockwatch_core.errors import ConfigError
from gateway.adapters.tls import server_context_from_flags
from gateway.llrp import codec as c
from simulators.llrp.capabilities import (
    CAPABILITY_SECTIONS,
    GPIO_PORTS,
    IMPINJ_PEN,
    capabilities_response,
)
from simulators.llrp.session import Session
from simulators.llrp.settings import default_report_spec
from simulators.llrp.source import ReadSource, TagPopulation

if TYPE_CHECKING:
    from simulators.scenario import Scenario

__all__ = [
    "CAPABILITY_SECTIONS",
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "IMPINJ_PEN",
    "GpioChange",
    "LlrpReaderSimulator",
    "SimulatorStats",
    "build_simulators",
    "configure_parser",
    "default_report_spec",
    "main",
    "tls_from_args",
]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5084
DEFAULT_TLS_PORT = 5085  # IANA encrypted-llrp


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
        self._sessions: set[Session] = set()
        self._waiters: set[asyncio.Future[None]] = set()
        self._frozen = False
        self.cut_antennas: set[int] = set()  # fault: see cut_antenna()
        self.gpi_levels: dict[int, bool] = dict.fromkeys(range(1, GPIO_PORTS + 1), False)
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
        return sum(s.rospecs.active for s in self._sessions)

    @property
    def rospecs_added(self) -> tuple[c.ROSpec, ...]:
        """Every ROSpec clients added successfully, in order (decoded, for assertions)."""
        return tuple(self._rospecs_added)

    @property
    def keepalive_intervals_ms(self) -> tuple[int, ...]:
        """The periodic keepalive interval each connected client configured (0 = none)."""
        return tuple(
            s.settings.config.keepalive.interval_ms if s.settings.config.keepalive.periodic else 0
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
        if not 1 <= port <= GPIO_PORTS:
            raise ValueError(f"no GPI port {port} (ports 1..{GPIO_PORTS})")
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

    def _record_gpo(self, port: int, high: bool) -> None:
        self.gpo_writes.append(GpioChange(self.clock(), port, high))

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
        session = Session(self, reader, writer)
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
        """GET_READER_CAPABILITIES_RESPONSE as this reader (and its faults) answers it."""
        return capabilities_response(
            msg_id,
            requested,
            antennas=self.antennas,
            max_rospecs=self.max_rospecs,
            omit=self.omit_capabilities,
            override=self.capabilities_override,
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
