"""One client connection of the simulated reader (:class:`Session`): framing, dispatch, faults.

A session is a fresh reader: its configuration (:class:`~simulators.llrp.settings.ReaderSettings`)
and ROSpecs (:class:`~simulators.llrp.rospecs.RoSpecBook`) live and die with the connection. It
reads frames, answers each request (the collaborators do the work and raise
:class:`~simulators.llrp.refusals.RequestRefused` to refuse) and holds the task group in which
inventories, triggers and keepalives run. The rules it applies to every frame (error messages,
unsupported versions, the frozen and forced-failure faults) are in :mod:`simulators.llrp.server`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from dockwatch_core.errors import ProtocolError
from gateway.llrp import codec as c
from simulators.llrp.inventory import Inventory
from simulators.llrp.link import Link
from simulators.llrp.refusals import RequestRefused, field_error
from simulators.llrp.reports import Keepalives, ReaderEvents, Reports
from simulators.llrp.rospecs import RoSpecBook
from simulators.llrp.settings import ReaderSettings

if TYPE_CHECKING:
    from simulators.llrp.server import LlrpReaderSimulator

logger = logging.getLogger(__name__)


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


class Session:
    """The reader as one client sees it (see :mod:`simulators.llrp.server` for the rules)."""

    def __init__(
        self, sim: LlrpReaderSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sim = sim
        self._reader = reader
        self._framer = c.LlrpFramer()
        self._tg: asyncio.TaskGroup | None = None
        self.link = Link(sim, writer)
        self.peer = self.link.peer
        self.settings = ReaderSettings(sim)
        self.events = ReaderEvents(self.link, self.settings, sim.clock)
        self.reports = Reports(sim, self.link, self.settings)
        self.keepalives = Keepalives(
            sim,
            self.link,
            self.settings,
            task_group=self._task_group,
            on_silent=lambda: self.close(announce=True),
        )
        self.rospecs = RoSpecBook(
            sim,
            self.link,
            self.settings,
            reports=self.reports,
            events=self.events,
            inventory=Inventory(sim, self.link, self.settings, self.reports, self.events),
            task_group=self._task_group,
        )

    def _task_group(self) -> asyncio.TaskGroup | None:
        return self._tg

    # -- what the simulator does to a session -------------------------------------------------

    async def write_raw(self, data: bytes) -> None:
        await self.link.write_raw(data)

    async def finish(self) -> None:
        """Let a graceful close flush (bounded), then make sure the socket is gone."""
        await self.link.finish()

    def abort(self) -> None:
        self.link.abort()

    def close(self, *, announce: bool) -> None:
        """Close gracefully: optionally a ConnectionCloseEvent first, then a flushed close."""
        if announce:
            self.events.connection_close()
        self.link.close()

    def gpi_edge(self, port: int, high: bool) -> None:
        """A GPI changed (``LlrpReaderSimulator.set_gpi``): event, then the GPI triggers."""
        if not self.settings.gpi_enabled(port):
            return
        self.events.gpi(port, high)
        self.rospecs.gpi_edge(port, high)

    def antenna_event(self, event: c.AntennaEvent) -> None:
        """Send an AntennaEvent if this client enabled them (ReaderEventNotificationSpec)."""
        self.events.antenna(event)

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
            self.events.connection_attempt(c.ConnectionAttemptEvent(status))
            await self.link.drain()
            self.close(announce=False)
            return
        logger.info("LLRP reader %s: client %s connected", self.sim.reader_id, self.peer)
        self.events.connection_attempt(c.ConnectionAttemptEvent())
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    await self._read_loop()
                finally:
                    self.keepalives.cancel()
                    self.rospecs.cancel_tasks()
        finally:
            logger.info("LLRP reader %s: client %s disconnected", self.sim.reader_id, self.peer)

    async def _read_loop(self) -> None:
        while not self.link.is_closing():
            try:
                data = await self._reader.read(65536)
            except (ConnectionError, OSError):
                return
            if not data:
                return
            try:
                frames = self._framer.feed(data)
            except ProtocolError as exc:
                self._on_broken_stream(exc)
                return
            for frame in frames:
                if self.link.is_closing():
                    return
                self._handle_frame(frame)
                self.sim._notify()
            await self.link.drain()

    def _on_broken_stream(self, exc: ProtocolError) -> None:
        self.sim._protocol_errors += 1
        logger.warning(
            "LLRP reader %s: %s sent a bad frame: %s", self.sim.reader_id, self.peer, exc
        )
        code = c.StatusCode.M_FIELD_ERROR
        if "version" in str(exc):
            code = c.StatusCode.M_UNSUPPORTED_VERSION
        self.link.send(c.ErrorMessage(msg_id=0, status=c.LLRPStatus(code, str(exc))))
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
            self.link.send(
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
        except RequestRefused as exc:
            logger.debug("LLRP reader %s: %s refused: %s", self.sim.reader_id, msg.name, exc)
            self._reply_status(header.msg_type, msg.msg_id, exc.status)

    def _reply_status(self, msg_type: int, msg_id: int, status: c.LLRPStatus) -> None:
        factory = _RESPONSES.get(msg_type)
        if factory is not None:
            self.link.send(factory(msg_id=msg_id, status=status))
        else:
            self.link.send(c.ErrorMessage(msg_id=msg_id, status=status))

    # -- dispatch -----------------------------------------------------------------------------

    def _dispatch(self, msg: c.LlrpMessage) -> None:
        ok = c.LLRPStatus()
        send, rospecs = self.link.send, self.rospecs
        match msg:
            case c.GetReaderCapabilities():
                send(self.sim.capabilities_response(msg.msg_id, msg.requested))
            case c.GetReaderConfig():
                send(self.settings.response(msg, rospecs.runs))
            case c.SetReaderConfig():
                self._set_reader_config(msg)
                send(c.SetReaderConfigResponse(msg_id=msg.msg_id, status=ok))
            case c.EnableEventsAndReports():
                pass  # no response by spec; events are never held by this reader
            case c.KeepaliveAck():
                self.keepalives.acked()
            case c.CloseConnection():
                send(c.CloseConnectionResponse(msg_id=msg.msg_id, status=ok))
                self.close(announce=False)
            case c.AddROSpec():
                rospecs.add(msg.rospec)
                send(c.AddROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.EnableROSpec():
                rospecs.enable(msg.spec_id)
                send(c.EnableROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.StartROSpec():
                rospecs.start(msg.spec_id)
                send(c.StartROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.StopROSpec():
                rospecs.stop(msg.spec_id)
                send(c.StopROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.DisableROSpec():
                rospecs.disable(msg.spec_id)
                send(c.DisableROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.DeleteROSpec():
                rospecs.delete(msg.spec_id)
                send(c.DeleteROSpecResponse(msg_id=msg.msg_id, status=ok))
            case c.GetROSpecs():
                send(
                    c.GetROSpecsResponse(msg_id=msg.msg_id, status=ok, rospecs=rospecs.described())
                )
            case c.DeleteAccessSpec() | c.EnableAccessSpec() | c.DisableAccessSpec():
                if msg.spec_id != 0:
                    raise field_error(c.StatusCode.A_INVALID, f"no AccessSpec {msg.spec_id}")
                self._reply_status(msg.TYPE, msg.msg_id, ok)
            case c.AddAccessSpec():
                raise RequestRefused(
                    c.LLRPStatus(
                        c.StatusCode.M_UNSUPPORTED_PARAMETER,
                        "this reader has no access operations (MaxNumAccessSpecs = 0)",
                        parameter_error=c.ParameterError(207, c.StatusCode.P_UNSUPPORTED_PARAMETER),
                    )
                )
            case c.GetAccessSpecs():
                send(c.GetAccessSpecsResponse(msg_id=msg.msg_id, status=ok))
            case c.GetReport():
                self.reports.send_held(rospecs.runs.values())
            case c.CustomMessage() if (
                self.sim.impinj_extensions
                and msg.vendor_id == c.VENDOR_IMPINJ
                and msg.subtype == c.IMPINJ_ENABLE_EXTENSIONS
            ):
                send(c.impinj_enable_extensions_response(msg.msg_id, ok))
            case _:
                raise RequestRefused(
                    c.LLRPStatus(
                        c.StatusCode.M_UNSUPPORTED_MESSAGE,
                        f"{msg.name} is not supported by this reader",
                    )
                )

    def _set_reader_config(self, msg: c.SetReaderConfig) -> None:
        self.settings.check(msg)  # a refused request changes nothing
        if msg.reset_to_factory_defaults:
            self.rospecs.delete_all()
            self.settings.reset()
            self.keepalives.restart()
        self.settings.apply(msg)
        if msg.keepalive is not None:
            self.keepalives.restart()
