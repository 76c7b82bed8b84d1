"""One LLRP session on sllurp's thread: the socket, the framing, and the hand-over to the loop.

Theory of operation
-------------------
A session is one TCP (or TLS) connection served by one :class:`ReaderClient`, sllurp's
``LLRPReaderClient`` with our framing and a thread we can interrupt and join; the adapter
(:mod:`gateway.adapters.llrp`, whose docstring tells the whole story) makes a fresh one per
session and runs ``connect`` and ``close`` in the executor.

What runs on sllurp's thread is pure: :class:`ReaderSocket` reads the socket ``RECV_BYTES`` at a
time; the client frames with :class:`gateway.llrp.codec.LlrpFramer` and stops at the first bad
frame (the byte stream can no longer be trusted); sllurp decodes; each RO_ACCESS_REPORT is
converted (:func:`~gateway.adapters.llrp_reports.tag_reads_from_sllurp`) and journaled, and every
other message is vetted by the session's :class:`~gateway.adapters.llrp_dialect.RequestLedger`
before sllurp sees it. The reports of one socket read are posted to the loop together, through
``post`` (``call_soon_threadsafe``), the client's only contact with the loop; at most
``MAX_HANDOVERS_IN_FLIGHT`` such posts wait for the loop, beyond which sllurp's thread waits and
TCP pushes back on the reader. Every event carries the session's number and goes to the loop-side
receivers of a :class:`SessionSink`; an event is posted after the reports that came before it.

Sends (sllurp's handshake steps and KEEPALIVE_ACKs from its thread; the adapter's own goodbye and
GPO writes from the executor) go out whole under one lock, and each is noted in the ledger: an
ERROR_MESSAGE names only the message ID of what it refuses.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sllurp.llrp import LLRPMessage, LLRPReaderClient, LLRPReaderState
from sllurp.llrp_errors import LLRPError, ReaderConfigurationError

from dockwatch_core.errors import ProtocolError
from gateway.adapters.journal import JournalWriter
from gateway.adapters.llrp_dialect import RequestLedger
from gateway.adapters.llrp_reports import DECODE_ERRORS, ConvertedReport, tag_reads_from_sllurp
from gateway.adapters.tls import describe_tls_error
from gateway.domain.model import DeviceId
from gateway.llrp import codec

# The adapter's logger, whichever of its modules logs: log settings and filters name one logger
# for the LLRP readers.
logger = logging.getLogger("gateway.adapters.llrp")

# Hand-overs of reports (those of one socket read each) posted to the loop but not yet taken.
# Beyond this, sllurp's thread waits (TCP then pushes back on the reader, which buffers) instead
# of piling callbacks up on a busy loop.
MAX_HANDOVERS_IN_FLIGHT: Final = 4
# Bytes taken from the socket per system call. sllurp takes 4 KiB, less than one 100-tag report
# (about 4.3 kB): two select()s and two recv()s per report, each releasing the GIL to the loop's
# thread and waiting to get it back. 64 KiB holds a dozen such reports.
RECV_BYTES: Final = 64 * 1024
# The ROSpecID of the one ROSpec sllurp adds.
_SLLURP_ROSPEC_ID: Final = 1


@dataclass(frozen=True, slots=True)
class SessionSink:
    """The loop-side receivers of the events a :class:`ReaderClient` posts."""

    reports: Callable[[int, list[ConvertedReport], Callable[[], None]], None]
    message: Callable[[int, str, Mapping[str, Any]], None]
    refused: Callable[[int, str | None, str], None]
    inventorying: Callable[[int], None]
    failed: Callable[[int, str, BaseException | None], None]
    disconnected: Callable[[int], None]
    thread_exited: Callable[[int], None]


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How :meth:`ReaderSocket.receive` ended: asked to stop (nothing set), the connection lost
    (``lost``), or a failure worth its own words (``failure``, caused by ``cause``)."""

    lost: bool = False
    failure: str | None = None
    cause: BaseException | None = None


_STOPPED: Final = StreamEnd()
_LOST: Final = StreamEnd(lost=True)


class ReaderSocket:
    """The session's socket below LLRP: connect (TCP keepalives, the TLS handshake), the
    receive loop of sllurp's thread, writes over TLS, and the shutdown that wakes that loop.

    One SSL object must not be used by two threads at once (OpenSSL's rule): sllurp's thread
    reads, and the executor's polite disconnect writes. Every SSL call holds ``lock``, and only
    non-blocking ones do, so neither side ever waits on the network while holding it. The plain
    TCP path takes no lock.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        timeout_s: float,
        tls: ssl.SSLContext | None,
        tcp_keepalive_s: float | None,
    ) -> None:
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._tls = tls
        self._tcp_keepalive_s = tcp_keepalive_s
        self.lock = threading.Lock()

    def open(self) -> socket.socket:
        """A connected socket (sllurp 3.0.5 is IPv4 only), closed again if anything fails."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._timeout_s)
            sock.connect((self._host, self._port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tcp_keepalive_s is not None and hasattr(socket, "TCP_KEEPIDLE"):
                # The kernel's probes find a dead peer even when the reader refused LLRP
                # keepalives (SET_READER_CONFIG): about 3 periods of silence.
                period = max(1, round(self._tcp_keepalive_s))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, period)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, period)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
            if self._tls is not None:
                sock = self._tls_handshake(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def _tls_handshake(self, sock: socket.socket) -> ssl.SSLSocket:
        """Wrap the connected socket (the handshake is bound by its timeout); then make it
        non-blocking for ``_receive_tls`` and ``send_tls``."""
        assert self._tls is not None
        try:
            # The host checked against the certificate (unless check_hostname is off), and
            # sent as SNI when it is a name. On failure the SSL socket closes itself.
            tls_sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise ConnectionError(
                f"TLS handshake failed: {describe_tls_error(exc, peer='reader')}"
            ) from exc
        tls_sock.setblocking(False)
        return tls_sock

    def receive(
        self,
        sock: socket.socket,
        on_data: Callable[[memoryview], None],
        stop: threading.Event,
    ) -> StreamEnd:
        """sllurp's receive loop, with a larger read per system call (see ``RECV_BYTES``).

        Like sllurp's: wait for the socket, read, hand the bytes to ``on_data``; stop when asked
        to (after the read that woke it); end of stream or a socket error is a lost connection.
        """
        chunk = bytearray(RECV_BYTES)
        received = memoryview(chunk)
        if isinstance(sock, ssl.SSLSocket):
            return self._receive_tls(sock, chunk, received, on_data, stop)
        while True:
            select.select([sock], [], [])
            try:
                size = sock.recv_into(chunk)
            except OSError as exc:
                logger.debug("LLRP socket of %s:%s failed: %r", self._host, self._port, exc)
                size = 0
            if size:
                on_data(received[:size])
            if stop.is_set():
                return _STOPPED
            if not size:
                return _LOST

    def _receive_tls(
        self,
        sock: ssl.SSLSocket,
        chunk: bytearray,
        received: memoryview,
        on_data: Callable[[memoryview], None],
        stop: threading.Event,
    ) -> StreamEnd:
        """``receive`` over TLS: the socket is non-blocking, and select() only follows a read
        that found nothing.

        select() sees the kernel's buffer, not the SSL object's: decrypted bytes of a record
        already taken from the socket (``sock.pending()``) would not wake it, and a handshake
        reply could wait there until the watchdog gives up. So read until the SSL object asks
        for more bytes (``SSLWantReadError``), and only then wait for the socket.
        """
        lock = self.lock
        heard = False
        while True:
            try:
                with lock:
                    size = sock.recv_into(chunk)
            except ssl.SSLWantReadError:
                if stop.is_set():
                    return _STOPPED
                select.select([sock], [], [])
                continue
            except ssl.SSLWantWriteError:  # TLS itself must send first (e.g. a key update)
                select.select([], [sock], [], 1.0)
                continue
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):  # an end of stream all the same
                size = 0
            except ssl.SSLError as exc:
                # An alert (a refused client certificate...) or a broken record: say which.
                return StreamEnd(
                    failure="TLS error on the reader connection: "
                    f"{describe_tls_error(exc, peer='reader')}",
                    cause=exc,
                )
            except OSError as exc:
                logger.debug("LLRP socket of %s:%s failed: %r", self._host, self._port, exc)
                size = 0
            if size:
                heard = True
                on_data(received[:size])
            if stop.is_set():
                return _STOPPED
            if not size:
                if not heard:
                    # A reader that checks client certificates after the handshake (TLS 1.3)
                    # and dislikes ours may just close: the likeliest cause, worth saying.
                    return StreamEnd(
                        failure="the reader closed the TLS connection before sending anything "
                        "(does it require a client certificate? tls.cert_file and tls.key_file)"
                    )
                return _LOST

    def send_tls(self, sock: ssl.SSLSocket, data: bytes) -> None:
        """Send all of ``data`` with non-blocking writes under the SSL lock, within the socket
        timeout."""
        view = memoryview(data)
        deadline = time.monotonic() + self._timeout_s
        while view:
            try:
                with self.lock:
                    sent = sock.send(view)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            if sent:
                view = view[sent:]
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"sending to the LLRP reader timed out ({self._timeout_s:g} s)")
            select.select([], [sock], [], min(remaining, 0.1))

    def shutdown(self, sock: socket.socket) -> None:
        """Wake the receive loop from select() without closing the socket under it (closing
        first makes its next select() fail with a logged traceback)."""
        try:
            with self.lock:  # an SSL socket's shutdown drops its SSL object
                sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            logger.debug("shutdown of the LLRP socket failed: %r", exc)


class ReaderClient(LLRPReaderClient):  # type: ignore[misc]  # sllurp ships no type hints
    """sllurp's client with our framing and a thread we can interrupt and join.

    Runs on sllurp's reader thread except :meth:`close` (executor) and :meth:`connect` (executor).
    Its only contact with the event loop is ``post`` (``call_soon_threadsafe``). It uses the sllurp
    attributes declared below; every name it adds must stay clear of sllurp's private ones, which
    sllurp calls on ``self`` (``_on_disconnected``...).
    """

    _host: str
    _port: int
    _socktimeout: float
    _socket: socket.socket | None
    _socket_thread: threading.Thread | None
    _stop_main_loop: threading.Event

    def __init__(
        self,
        *,
        host: str,
        port: int,
        config: Any,
        socket_timeout_s: float,
        max_frame_bytes: int,
        post: Callable[..., None],
        session: int,
        sink: SessionSink,
        reader_id: DeviceId,
        tls: ssl.SSLContext | None = None,
        tcp_keepalive_s: float | None = None,
        journal: JournalWriter | None = None,
    ) -> None:
        super().__init__(host, port, config=config, timeout=socket_timeout_s)
        self._reader_id = reader_id
        self._link = ReaderSocket(
            host=host,
            port=port,
            timeout_s=socket_timeout_s,
            tls=tls,
            tcp_keepalive_s=tcp_keepalive_s,
        )
        # Whole messages go out under this lock: sllurp's thread (KEEPALIVE_ACK, the next step)
        # and the executor (the goodbye) may send at once, and sendall() from two threads can
        # interleave their bytes.
        self._send_lock = threading.Lock()
        self._ledger = RequestLedger(reader_id)
        # The RO_ACCESS_REPORT frames of the current socket read, for the read journal.
        self._journal = journal
        self._journal_frames: list[bytes] = []
        self._post_event = post
        self._session_no = session
        self._events = sink
        self._framer = codec.LlrpFramer(max_length=max_frame_bytes)
        self._stream_failed = False
        self._worker: threading.Thread | None = None
        self._in_flight = threading.BoundedSemaphore(MAX_HANDOVERS_IN_FLIGHT)
        # Reports converted from the current socket read, posted together at its end: one
        # wake-up of the loop per read rather than per report. Only sllurp's thread touches it.
        self._pending_reports: list[ConvertedReport] = []
        self.add_state_callback(LLRPReaderState.STATE_INVENTORYING, self._notify_inventorying)
        self.add_disconnected_callback(self._notify_disconnected)

    # -- sllurp thread -------------------------------------------------------------------------

    def main_loop(self) -> None:
        """sllurp's receive loop (:meth:`ReaderSocket.receive`); on end of stream or a socket
        error, let sllurp's ``on_lost_connection`` reset its state and call the disconnected
        callbacks (``reconnect`` is off: it never retries)."""
        self._worker = threading.current_thread()
        sock = self._socket
        try:
            if sock is None:  # connect() starts this thread only once the socket is up
                self._give_up("sllurp reader thread started without a socket")
                return
            end = self._link.receive(sock, self.raw_data_received, self._stop_main_loop)
            if end.failure is not None:
                self._give_up(end.failure, end.cause)
            elif end.lost:
                self.on_lost_connection()
        except Exception as exc:  # the thread's top level: a bug must not end it silently
            logger.exception("sllurp reader thread of %s:%s failed", self._host, self._port)
            self._give_up(f"sllurp reader thread failed: {exc!r}", exc)
        finally:
            self._socket_thread = None  # what sllurp's loop does on the way out
            self._emit(self._events.thread_exited, self._session_no)

    def send_data(self, data: bytes) -> None:
        """sllurp's send, one whole message at a time; notes which request has which message
        ID in the ledger. Over TLS, non-blocking writes under the SSL lock."""
        self._ledger.sent(data)
        with self._send_lock:
            sock = self._socket
            if not isinstance(sock, ssl.SSLSocket):
                super().send_data(data)
                return
            self._link.send_tls(sock, data)

    def raw_data_received(self, data: bytes | memoryview) -> None:
        """Frame LLRP messages; unlike sllurp, give up on the stream at the first bad frame."""
        if self._stream_failed:
            return
        try:
            self._frame(data)
        finally:
            if self._journal_frames:
                # Journaled before the loop sees them: whatever reached the gateway survives.
                assert self._journal is not None
                self._journal.append(self._journal.wall_us(), b"".join(self._journal_frames))
                self._journal_frames.clear()
            self._hand_over()

    def _frame(self, data: bytes | memoryview) -> None:
        # Frame by frame: the frames before a bad header are handled before the stream is given
        # up, and nothing after a refusal that ends the session is.
        frames = self._framer.frames(data)
        while True:
            try:
                frame = next(frames, None)
            except ProtocolError as exc:
                self._give_up(f"malformed LLRP frame header: {exc}", exc)
                return
            if frame is None:
                return
            try:
                message = LLRPMessage(msgbytes=frame)
            except DECODE_ERRORS as exc:
                name = codec.message_name(codec.decode_header(frame).msg_type)
                self._give_up(f"undecodable LLRP message ({name}): {exc!r}", exc)
                return
            name = message.getName()
            body = message.msgdict[name]
            if name == "RO_ACCESS_REPORT":
                # Converted here, while the loop may still be busy with earlier reports: the
                # loop then only accounts and enqueues.
                self._pending_reports.append(
                    tag_reads_from_sllurp(self._reader_id, body["TagReportData"])
                )
                if self._journal is not None:
                    self._journal_frames.append(frame)
            else:
                vetted = self._vet(message, name, body)
                if self._stream_failed:
                    return
                if vetted is None:
                    continue
                message = vetted
                self._emit(self._events.message, self._session_no, name, body)
            try:
                self.llrp.handleMessage(message)
            except DECODE_ERRORS as exc:
                # ReaderConfigurationError (an LLRPError) when the reader refuses a handshake
                # step; KeyError & co. when a capability sllurp expects is missing.
                self._give_up(f"LLRP handshake failed in sllurp: {exc!r}", exc)
                return
            except OSError as exc:
                # sllurp answers some messages at once (KEEPALIVE_ACK, the next handshake step):
                # a connection that broke meanwhile is a lost connection, not a crash.
                self._give_up(f"connection lost while answering the reader: {exc!r}", exc)
                return

    def _vet(self, message: Any, name: str, body: Mapping[str, Any]) -> Any | None:
        """Act on the ledger's verdict on a message (sllurp's thread); return what sllurp should
        be shown (``None``: nothing; after a required step's refusal the stream is given up)."""
        verdict = self._ledger.vet(message, name, body)
        if verdict.fatal is not None:
            self._give_up(verdict.fatal)
        elif verdict.refused is not None:
            self._emit(self._events.refused, self._session_no, verdict.request, verdict.refused)
        elif verdict.rospec_enabled:
            self._start_rospec()
        return verdict.show

    def _hand_over(self) -> None:
        """Post the pending reports, once the loop has taken enough earlier hand-overs."""
        reports = self._pending_reports
        if not reports:
            return
        self._pending_reports = []
        while not self._in_flight.acquire(timeout=0.1):
            if self._stop_main_loop.is_set():
                return  # the session is stopping: nobody will take them
        self._post_event(self._events.reports, self._session_no, reports, self._in_flight.release)

    def _emit(self, fn: Callable[..., None], *args: object) -> None:
        """Post an event after the reports that came before it (sllurp's thread only)."""
        self._hand_over()
        self._post_event(fn, *args)

    def _give_up(self, reason: str, cause: BaseException | None = None) -> None:
        self._stream_failed = True
        self._emit(self._events.failed, self._session_no, reason, cause)
        # main_loop checks this flag after each read and exits; the socket is closed by close().
        self._stop_main_loop.set()

    def _start_rospec(self) -> None:
        """START_ROSPEC once sllurp's ROSpec is enabled (sllurp's thread).

        sllurp's ROSpec has an Immediate start trigger (LLRP: it starts when enabled) and sllurp
        never sends START_ROSPEC; some readers (llrpkit's emulator) only start a ROSpec on
        START_ROSPEC or a GPI edge. A reader that did start it answers with an error (the ROSpec
        is already active), which is expected and logged at debug level only.
        """
        try:
            self.send_data(self._ledger.own_frame(codec.StartROSpec(spec_id=_SLLURP_ROSPEC_ID)))
        except (OSError, LLRPError) as exc:
            self._give_up(f"connection lost while starting the ROSpec: {exc!r}", exc)

    # sllurp's callbacks post directly: they do not depend on the order of reports, and
    # ``_emit`` (which touches ``_pending_reports``) must not run off sllurp's thread.

    def _notify_inventorying(self, _client: object, _state: int) -> None:
        self._post_event(self._events.inventorying, self._session_no)

    def _notify_disconnected(self, _client: object) -> None:
        self._post_event(self._events.disconnected, self._session_no)

    # -- executor -------------------------------------------------------------------------------

    def connect(self, start_main_loop: bool = True) -> None:
        super().connect(start_main_loop)
        if self._worker is None:
            # sllurp forgets its thread when main_loop returns; keep it to join it.
            self._worker = self._socket_thread

    def _connect_socket(self) -> bool:
        # Replaces sllurp's: on a failed connect it drops the socket without closing it (one
        # leaked descriptor and a ResourceWarning per retry against a dead reader).
        if self._socket is not None:
            raise ReaderConfigurationError("Already connected")
        self._socket = self._link.open()
        return True

    def close(self, *, polite_timeout_s: float, join_timeout_s: float) -> bool:
        """Stop the session's thread and close its socket; return whether the thread is gone.

        ``polite_timeout_s > 0`` first says goodbye (:meth:`goodbye`), bounded by it.
        """
        worker = self._worker
        if (
            polite_timeout_s > 0
            and worker is not None
            and worker.is_alive()
            and not self._stream_failed
        ):
            self.goodbye(polite_timeout_s)
        # Wake the thread from select(); close the socket once it has exited.
        self._stop_main_loop.set()
        sock = self._socket
        if sock is not None:
            self._link.shutdown(sock)
        if worker is not None:
            worker.join(join_timeout_s)
        self.hard_disconnect()
        return worker is None or not worker.is_alive()

    def write_gpo(self, levels: Mapping[int, bool]) -> None:
        """SET_READER_CONFIG with one GPOWriteData per port (LLRP 1.0.1 section 12.2.6): set
        the reader's outputs (stack lights, horns). Its reply is the adapter's, not sllurp's."""
        message = codec.SetReaderConfig(
            gpo_write_data=tuple(
                codec.GPOWriteData(port, high) for port, high in sorted(levels.items())
            )
        )
        self.send_data(self._ledger.own_frame(message))

    def goodbye(self, timeout_s: float) -> bool:
        """Delete our AccessSpecs and ROSpecs and close the LLRP connection (LLRP 1.0.1
        section 12.1.5: the client sends CLOSE_CONNECTION); wait up to ``timeout_s`` for
        CLOSE_CONNECTION_RESPONSE. Returns whether it came.

        Not sllurp's ``disconnect()``: that sends DELETE_ACCESSSPEC before registering the
        handler of its reply (a fast reader wins the race and it waits for ever) and never sends
        CLOSE_CONNECTION. The three messages go in one write; replies come in order, so the
        last one answered means all were. Their replies are the adapter's, not sllurp's.
        """
        own_frame = self._ledger.own_frame
        frames = (
            own_frame(codec.DeleteAccessSpec(spec_id=0)),  # 0: all of them
            own_frame(codec.DeleteROSpec(spec_id=0)),
            own_frame(codec.CloseConnection()),
        )
        try:
            self.send_data(b"".join(frames))
        except (OSError, LLRPError) as exc:
            logger.debug("LLRP goodbye to %s:%s failed: %r", self._host, self._port, exc)
            return False
        answered = self._ledger.goodbye_answered.wait(timeout_s)
        if not answered:
            logger.debug(
                "LLRP reader %s:%s did not answer CLOSE_CONNECTION within %.1f s",
                self._host,
                self._port,
                timeout_s,
            )
        return answered

    def hard_disconnect(self) -> None:
        # sllurp's, under the SSL lock: it drops the SSL object another thread may be using
        # (sllurp's thread calls this on a lost connection while a polite disconnect sends).
        with self._link.lock:
            super().hard_disconnect()

    def thread_alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()
