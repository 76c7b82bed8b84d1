"""LLRP readers through sllurp: connect, watch, reconnect, and hand tag reads to the event loop.

Theory of operation
-------------------
One :class:`LlrpReaderAdapter` per configured reader, run as its own task. ``run()`` loops over
*sessions*: a session is one TCP connection served by one fresh sllurp ``LLRPReaderClient`` and its
reader thread. A session ends with a reason (a :class:`~gateway.errors.DeviceError`); the
adapter tears the session down, waits a capped exponential backoff with full jitter
(:mod:`gateway.adapters.backoff`) and starts a new one, until cancelled.

Threads. sllurp decodes on its own (non-daemon) thread. What runs there is pure: read the socket,
frame and decode (:class:`_ReaderClient`), convert each report's tag dicts to :class:`TagRead`
(:func:`tag_reads_from_sllurp`), and post events with ``loop.call_soon_threadsafe(...)``. All
state (counters, degraded/offline, watchdog, the queue) lives on the event loop. Blocking calls
(``connect``, the polite ``disconnect``, ``join``) run in the default executor. Every event
carries its session's number, so a late event from a torn-down client is ignored.

Cost. Ingest is bound by sllurp's pure-Python decoding (about 10 us a tag read); everything the
adapter adds must stay small beside it (``benchmarks/llrp_ingest.py`` measures the ratio). Hence:
the socket is read 64 KiB at a time (sllurp reads 4 KiB, less than one 100-tag report, and every
read releases the GIL to the other thread); a report is converted column by column and validated
once for all its reads (:meth:`TagRead.batch`), entry by entry only when something is wrong with
it; and the reports of one socket read are posted together, so the loop wakes once per read.

TLS (optional, per reader: LLRP over TLS, port 5085). Given an ``ssl.SSLContext``, the session
wraps its socket right after the TCP connect; the TLS handshake is part of ``connect`` (bounded by
``connect_timeout_s``) and its failure is a connect failure, named in plain words (untrusted
certificate, host name mismatch, a plain port: :func:`gateway.adapters.tls.describe_tls_error`).
The TLS socket is non-blocking: sllurp's thread reads until the SSL object asks for more bytes
and only then select()s (decrypted bytes buffered inside the SSL object do not wake select), and
every SSL call (reads, writes from the executor's polite disconnect, shutdown) holds one lock, as
OpenSSL forbids using one connection from two threads at once. The plain TCP path is unchanged.

Watchdog (the gateway's, not sllurp's). A session is torn down when
  * the TCP connect or the TLS handshake fails, or the LLRP handshake (capabilities, config,
    ROSpec) does not reach inventory within ``connect_timeout_s``;
  * nothing at all (report, keepalive, any message) arrives for ``2 * keepalive_s`` once
    inventorying; the ROSpec's reader config asks for a KEEPALIVE every ``keepalive_s``;
  * sllurp's reader thread exits or reports the connection lost;
  * a frame header is absurd (version, or a length outside [10, ``max_frame_bytes``]) or a
    message does not decode: the byte stream can no longer be trusted, so we do not resync;
  * the reader's capabilities cannot serve the configuration (fewer antennas than configured,
    no UTC clock, no regulatory capabilities), or it refuses a step inventory needs.

Dialects. Readers refuse what they do not implement (ERROR_MESSAGE naming the message ID, or a
non-success LLRPStatus). ``send_data`` notes which request each message ID is; ``_vet`` (sllurp's
thread) sorts each refusal by :data:`LLRP_STEPS`: a required step ends the session in the
reader's own words; an optional one is reported (logged once per adapter) and sllurp is shown
that step's response as successful, since its state machine knows no optional steps.

States (``on_status`` is called on changes only). ``online``: inventorying. ``degraded``: the link
is up but something is wrong (malformed tag entries, reports missing a requested field, the
hand-off queue dropping); it returns to ``online`` after ``degraded_hold_s`` without a new problem.
``offline``: no session. Going offline logs ONE error (reader id, host:port, reason); retries are
logged at debug level; recovery logs one info line.

Hand-off. Each RO_ACCESS_REPORT with at least one valid entry becomes one :class:`ReadBatch`, given
to a callback or put into a bounded ``asyncio.Queue``. When the queue is full the OLDEST batch is
dropped (fresh reads matter more to a portal than stale ones), counted in ``dropped_batches`` /
``dropped_reads``, and the reader is degraded while it keeps happening. Upstream of the queue, at
most ``MAX_HANDOVERS_IN_FLIGHT`` posts of reports wait for the loop; beyond that sllurp's thread
waits, and TCP pushes back on the reader.

sllurp 3.0.5 traps handled here: its own reconnect waits a fixed 60 s (we set ``reconnect=False``
and own reconnection); ``disconnect()`` can hang forever and never sends CLOSE_CONNECTION (we do
not use it: :meth:`_ReaderClient.goodbye` sends DELETE_ACCESSSPEC, DELETE_ROSPEC and
CLOSE_CONNECTION and waits, bounded, for the response); its thread is not a daemon (we interrupt,
join and verify the thread is gone); its ROSpec starts on an Immediate trigger and it never sends
START_ROSPEC (we send it after ENABLE_ROSPEC); its framing buffers
forever on an absurd length and silently skips bytes after a decode error (we frame with
:class:`gateway.llrp.codec.LlrpFramer`, the simulator's framer, and stop at the first bad frame);
its ROSpec omits AntennaID/PeakRSSI/FirstSeen and enables only antenna 1 unless told (we request
every field and antenna explicitly); its socket is IPv4 only (we reject IPv6 hosts up front).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import operator
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from sllurp.llrp import LLRPMessage, LLRPReaderClient, LLRPReaderConfig, LLRPReaderState
from sllurp.llrp_errors import LLRPError, ReaderConfigurationError

from gateway.adapters.backoff import Backoff
from gateway.adapters.journal import JournalWriter
from gateway.adapters.outage import Outage, OutageWords
from gateway.adapters.tls import describe_tls_error
from gateway.domain.model import DeviceId, DeviceState, DeviceStatus, Epc, TagRead
from gateway.errors import ConfigError, DeviceError, ProtocolError
from gateway.llrp import codec

logger = logging.getLogger(__name__)

DEVICE_TYPE: Final = "llrp_reader"

DEFAULT_MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
# Hand-overs of reports (those of one socket read each) posted to the loop but not yet taken.
# Beyond this, sllurp's thread waits (TCP then pushes back on the reader, which buffers) instead
# of piling callbacks up on a busy loop.
MAX_HANDOVERS_IN_FLIGHT: Final = 4
# Bytes taken from the socket per system call. sllurp takes 4 KiB, less than one 100-tag report
# (about 4.3 kB): two select()s and two recv()s per report, each releasing the GIL to the loop's
# thread and waiting to get it back. 64 KiB holds a dozen such reports.
RECV_BYTES: Final = 64 * 1024

# Exceptions sllurp's pure-Python decoders raise on bytes they cannot make sense of.
DECODE_ERRORS: Final = (LLRPError, struct.error, ValueError, KeyError, IndexError, TypeError)

# The TagReportData fields the ROSpec requests; a reader that omits one is degraded.
_REQUESTED_FIELDS: Final = frozenset(
    {"AntennaID", "PeakRSSI", "FirstSeenTimestampUTC", "LastSeenTimestampUTC", "TagSeenCount"}
)
_TAG_CONTENT_SELECTOR: Final[Mapping[str, bool]] = {
    "EnableROSpecID": False,
    "EnableSpecIndex": False,
    "EnableInventoryParameterSpecID": False,
    "EnableAntennaID": True,
    "EnableChannelIndex": False,
    "EnablePeakRSSI": True,
    "EnableFirstSeenTimestamp": True,
    "EnableLastSeenTimestamp": True,
    "EnableTagSeenCount": True,
    "EnableAccessSpecID": False,
}


# What the gateway sends a reader (through sllurp, or itself when closing), and whether inventory
# needs it. A refusal (ERROR_MESSAGE naming the request's message ID, or a response whose
# LLRPStatus is not Success) of an optional step is logged once and the session goes on; a refusal
# of a required step ends the session with the reader's own words. docs/llrp.md has this table.


@dataclass(frozen=True, slots=True)
class LlrpStep:
    """One request the gateway sends: its response (None: the spec defines none on success),
    whether inventory needs it, and what the session does without it."""

    request: str
    response: str | None
    required: bool
    without_it: str


LLRP_STEPS: Final[Mapping[str, LlrpStep]] = {
    step.request: step
    for step in (
        LlrpStep(
            "GET_READER_CAPABILITIES",
            "GET_READER_CAPABILITIES_RESPONSE",
            True,
            "nothing: antennas, clock and power table must be known",
        ),
        LlrpStep(
            "GET_READER_CONFIG",
            "GET_READER_CONFIG_RESPONSE",
            False,
            "the gateway reads nothing from it; goes on",
        ),
        LlrpStep(
            "ENABLE_EVENTS_AND_REPORTS",
            None,
            False,
            "the reader sends events and reports as it does by default",
        ),
        LlrpStep(
            "SET_READER_CONFIG",
            "SET_READER_CONFIG_RESPONSE",
            False,
            "no LLRP keepalives or antenna events: a dead link is found by TCP keepalives "
            "(every keepalive_s) instead of the silence limit",
        ),
        LlrpStep(
            "DELETE_ACCESSSPEC",
            "DELETE_ACCESSSPEC_RESPONSE",
            False,
            "stale AccessSpecs (none are used) stay",
        ),
        LlrpStep(
            "DELETE_ROSPEC",
            "DELETE_ROSPEC_RESPONSE",
            False,
            "a stale ROSpec may stay; ADD_ROSPEC then says whether it is in the way",
        ),
        LlrpStep("ADD_ROSPEC", "ADD_ROSPEC_RESPONSE", True, "no inventory: the session ends"),
        LlrpStep("ENABLE_ROSPEC", "ENABLE_ROSPEC_RESPONSE", True, "no inventory: the session ends"),
        LlrpStep(
            "START_ROSPEC",
            "START_ROSPEC_RESPONSE",
            False,
            "sent by the adapter after ENABLE_ROSPEC: refused (debug log) by a reader that "
            "started the ROSpec when enabled, as its Immediate start trigger asks",
        ),
        LlrpStep("KEEPALIVE_ACK", None, False, "the reader may close a link it thinks dead"),
        LlrpStep(
            "CLOSE_CONNECTION",
            "CLOSE_CONNECTION_RESPONSE",
            False,
            "the gateway closes the socket (it is stopping anyway)",
        ),
    )
}
_REQUEST_OF_RESPONSE: Final[Mapping[str, str]] = {
    step.response: step.request for step in LLRP_STEPS.values() if step.response is not None
}
# Requests remembered until answered (those without a response on success stay): the oldest are
# forgotten beyond this many.
_MAX_PENDING_REQUESTS: Final = 64
# The ROSpecID of the one ROSpec sllurp adds.
_SLLURP_ROSPEC_ID: Final = 1
# Message IDs of the adapter's own messages count down from the top; sllurp's count up from 1.
_OWN_ID_TOP: Final = 0xFFFFFFFF
# ConnectionAttemptEvent statuses (LLRP 1.0.1 section 13.2.6.11) in words.
_CONNECTION_REFUSALS: Final[Mapping[str, str]] = {  # sllurp's names for them
    "Failed (a Reader initiated connection already exists)": (
        "a reader-initiated connection already exists"
    ),
    "Failed (a Client initiated connection already exists)": (
        "another client is already connected to the reader"
    ),
    "Failed (any reason other than a connection already exists)": (
        "the reader refused it (not because of another connection)"
    ),
    "Another connection attempted": "another client tried to connect",
}


def llrp_status_text(status: object) -> str:
    """The reader's own words from a sllurp LLRPStatus dict, as plain text.

    ``{'StatusCode': 'UnsupportedMessage', 'ErrorDescription': b'no such thing'}`` becomes
    ``UnsupportedMessage: no such thing``; a FieldError or ParameterError is appended.
    """
    if not isinstance(status, Mapping):
        return "no LLRPStatus"
    code = str(status.get("StatusCode", "unknown status"))
    description = status.get("ErrorDescription", b"")
    if isinstance(description, bytes | bytearray | memoryview):
        description = bytes(description).decode("utf-8", errors="replace")
    text = code if not description else f"{code}: {description}"
    field_error = status.get("FieldError")
    if isinstance(field_error, Mapping):
        text += f" (field {field_error.get('FieldNum')}: {field_error.get('ErrorCode')})"
    parameter = status.get("ParameterError")
    if isinstance(parameter, Mapping):
        text += f" (parameter type {parameter.get('ParameterType')}: {parameter.get('ErrorCode')})"
    return text


def _succeeded(body: Mapping[str, Any]) -> bool:
    status = body.get("LLRPStatus")
    return isinstance(status, Mapping) and status.get("StatusCode") == "Success"


class _Substitute:
    """What sllurp is shown instead of the refusal of an optional step: that step's response,
    successful. sllurp's state machine knows no optional steps; without this it stalls (a refused
    DELETE_ROSPEC never starts inventory) or raises (an ERROR_MESSAGE while configuring)."""

    __slots__ = ("_name", "msgdict")

    def __init__(self, name: str, body: Mapping[str, Any]) -> None:
        self._name = name
        self.msgdict = {
            name: {**body, "LLRPStatus": {"StatusCode": "Success", "ErrorDescription": b""}}
        }

    def getName(self) -> str:  # sllurp's LLRPMessage interface
        return self._name

    def isSuccess(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<{self._name} substituted for a refusal>"


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """The valid tag reads of one RO_ACCESS_REPORT, as received on the event loop."""

    reader_id: DeviceId
    received_at_monotonic: float
    reads: tuple[TagRead, ...]


@dataclass(frozen=True, slots=True)
class ConvertedReport:
    """The tag entries of one RO_ACCESS_REPORT, converted: its valid reads and what was wrong.

    ``malformed`` entries were dropped (``first_problem`` says why for the first one);
    ``missing_fields`` are requested TagReportData fields the report's first entry lacks.
    """

    reads: tuple[TagRead, ...]
    malformed: int = 0
    first_problem: str | None = None
    missing_fields: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LlrpAdapterStats:
    """Counters of one adapter since it was created (a snapshot; the adapter keeps counting)."""

    reads: int = 0
    batches: int = 0
    malformed_reads: int = 0
    dropped_batches: int = 0
    dropped_reads: int = 0
    sessions_online: int = 0
    reconnects: int = 0
    last_error: str | None = None
    # Optional steps the reader refused (request -> the reader's words); the session went on.
    refused_steps: Mapping[str, str] = field(default_factory=dict)
    # The reader's UTC clock minus the gateway's, from its ConnectionAttemptEvent timestamp.
    clock_skew_s: float | None = None


def tag_read_from_sllurp(reader_id: DeviceId, entry: Mapping[str, Any]) -> TagRead:
    """Convert one sllurp TagReportData dict into a :class:`TagRead`.

    sllurp gives the EPC as lower-case hex ASCII bytes and timestamps in microseconds. A missing
    PeakRSSI becomes ``None``, a missing TagSeenCount 1, and a missing first/last-seen timestamp
    takes the other one; an entry without EPC, antenna or any UTC timestamp is malformed.

    Raises:
        ProtocolError: the entry cannot be a TagRead.
    """
    first = entry.get("FirstSeenTimestampUTC")
    last = entry.get("LastSeenTimestampUTC")
    if first is None:
        if last is None:
            raise ProtocolError("malformed TagReportData entry: no UTC timestamp")
        first = last
    elif last is None:
        last = first
    try:
        epc = entry["EPC"].decode("ascii").upper()
        rssi = entry.get("PeakRSSI")
        return TagRead(
            reader_id=reader_id,
            antenna=int(entry["AntennaID"]),
            epc=Epc(epc),
            rssi_dbm=None if rssi is None else float(rssi),
            first_seen_us=int(first),
            last_seen_us=int(last),
            seen_count=int(entry.get("TagSeenCount", 1)),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"malformed TagReportData entry: {exc!r}") from exc


# Column readers: ``map`` calls them from C, with no per-entry Python frame; each raises
# KeyError when its field is absent.
_EPC: Final = operator.itemgetter("EPC")
_ANTENNA: Final = operator.itemgetter("AntennaID")
_RSSI: Final = operator.itemgetter("PeakRSSI")
_FIRST_SEEN: Final = operator.itemgetter("FirstSeenTimestampUTC")
_LAST_SEEN: Final = operator.itemgetter("LastSeenTimestampUTC")
_SEEN_COUNT: Final = operator.itemgetter("TagSeenCount")


def tag_reads_from_sllurp(
    reader_id: DeviceId, entries: Sequence[Mapping[str, Any]]
) -> ConvertedReport:
    """Convert the TagReportData dicts of one report; malformed entries are dropped and counted.

    The result is what :func:`tag_read_from_sllurp` gives entry by entry. The usual report has
    every requested field in every entry and nothing wrong: it is converted column by column
    (``map`` over the entries, one ``join`` for the EPCs) and validated by
    :meth:`TagRead.batch`, less than half the cost of converting entry by entry. A report
    where any entry lacks a field, or where any value fails, is converted entry by entry, which
    keeps the fallbacks (missing PeakRSSI, TagSeenCount, one timestamp) and says which
    entries are malformed.
    """
    if not entries:
        return ConvertedReport(())
    # A reader applies one content selector to every entry: the first one tells.
    missing = _REQUESTED_FIELDS.difference(entries[0])
    if not missing:
        try:
            return ConvertedReport(_tag_reads_by_column(reader_id, entries))
        except (KeyError, ValueError, TypeError, AttributeError):
            pass  # some entry is incomplete or invalid: entry by entry says which
    reads = []
    malformed = 0
    first_problem: ProtocolError | None = None
    for entry in entries:
        try:
            reads.append(tag_read_from_sllurp(reader_id, entry))
        except ProtocolError as exc:
            malformed += 1
            first_problem = first_problem or exc
    return ConvertedReport(
        tuple(reads),
        malformed,
        None if first_problem is None else str(first_problem),
        frozenset(missing),
    )


def _tag_reads_by_column(
    reader_id: DeviceId, entries: Sequence[Mapping[str, Any]]
) -> tuple[TagRead, ...]:
    """The fast path of :func:`tag_reads_from_sllurp`: the same conversions, a column at a time."""
    # A space cannot occur in hex: an EPC holding one adds a piece, and TagRead.batch then
    # rejects the columns for their lengths (a non-bytes EPC makes join raise TypeError).
    epcs = b" ".join(map(_EPC, entries)).decode("ascii").upper().split(" ")
    return TagRead.batch(
        reader_id,
        antennas=list(map(int, map(_ANTENNA, entries))),
        epcs=epcs,
        rssi_dbm=list(map(float, map(_RSSI, entries))),
        first_seen_us=list(map(int, map(_FIRST_SEEN, entries))),
        last_seen_us=list(map(int, map(_LAST_SEEN, entries))),
        seen_counts=list(map(int, map(_SEEN_COUNT, entries))),
    )


def reader_config(
    *,
    antennas: Sequence[int],
    keepalive_s: float,
    report_every_ms: int,
    report_every_tags: int,
    tx_power_dbm: float | None,
) -> Any:
    """The sllurp ``LLRPReaderConfig`` of one session (sllurp mutates it: build one per session).

    Every TagReportData field the gateway uses is requested explicitly, every configured antenna is
    enabled, reports come every ``report_every_tags`` tags or ``report_every_ms`` ms, and the reader
    is asked for a KEEPALIVE every ``keepalive_s`` so silence can be detected.
    """
    return LLRPReaderConfig(
        {
            "antennas": list(antennas),
            "tx_power": 0,  # index 0: the reader's maximum, unless tx_power_dbm picks a level
            "tx_power_dbm": None if tx_power_dbm is None else float(tx_power_dbm),
            "report_every_n_tags": report_every_tags,
            "report_timeout_ms": report_every_ms,
            "tag_content_selector": dict(_TAG_CONTENT_SELECTOR),
            "keepalive_interval": round(keepalive_s * 1000),
            "reconnect": False,  # sllurp's reconnect sleeps a fixed 60 s; the adapter owns it
            "start_inventory": True,
            "reset_on_connect": True,  # delete stale ROSpecs/AccessSpecs a previous run left
            # AntennaEvent: a reader that notices a pulled cable says so (antenna health);
            # GPIEvent: photo eyes on the reader's inputs (the door pipeline's beams)
            "event_selector": {"AntennaEvent": True, "GPIEvent": True},
        }
    )


@dataclass(slots=True)
class LinkWatchdog:
    """When to give up on a session; pure (time is passed in), one instance per adapter.

    ``verdict(now)`` returns a reason to tear the session down, or ``None``; ``deadline()`` is the
    earliest time the verdict can change if nothing is heard meanwhile.
    """

    connect_timeout_s: float
    silence_limit_s: float
    started_at: float = 0.0
    inventory_at: float | None = None
    last_heard: float = 0.0
    # The last thing the reader refused in this session, named in the handshake verdict: a
    # reader that refuses a step sllurp waits on is otherwise only "silent".
    last_refusal: str | None = None
    # False once the reader refused SET_READER_CONFIG (no LLRP keepalives will come): silence
    # then proves nothing, and TCP keepalives find a dead peer instead.
    keepalives: bool = True

    def begin(self, now: float) -> None:
        self.started_at = now
        self.inventory_at = None
        self.last_heard = now
        self.last_refusal = None
        self.keepalives = True

    def heard(self, now: float) -> None:
        self.last_heard = max(self.last_heard, now)

    def inventorying(self, now: float) -> None:
        self.inventory_at = now
        self.heard(now)

    def deadline(self) -> float:
        if self.inventory_at is None:
            return self.started_at + self.connect_timeout_s
        if not self.keepalives:
            return math.inf
        return self.last_heard + self.silence_limit_s

    def verdict(self, now: float) -> str | None:
        if now < self.deadline():
            return None
        if self.inventory_at is None:
            if self.last_refusal is not None:
                return (
                    f"no LLRP handshake within {self.connect_timeout_s:g} s; "
                    f"the reader refused {self.last_refusal}"
                )
            return f"no LLRP handshake within {self.connect_timeout_s:g} s"
        return (
            f"no message from the reader for {now - self.last_heard:.1f} s "
            f"(limit {self.silence_limit_s:g} s, twice the keepalive period)"
        )


@dataclass(frozen=True, slots=True)
class _SessionSink:
    """The loop-side receivers of the events a :class:`_ReaderClient` posts."""

    reports: Callable[[int, list[ConvertedReport], Callable[[], None]], None]
    message: Callable[[int, str, Mapping[str, Any]], None]
    refused: Callable[[int, str | None, str], None]
    inventorying: Callable[[int], None]
    failed: Callable[[int, str, BaseException | None], None]
    disconnected: Callable[[int], None]
    thread_exited: Callable[[int], None]


class _ReaderClient(LLRPReaderClient):  # type: ignore[misc]  # sllurp ships no type hints
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
        sink: _SessionSink,
        reader_id: DeviceId,
        tls: ssl.SSLContext | None = None,
        tcp_keepalive_s: float | None = None,
        journal: JournalWriter | None = None,
    ) -> None:
        super().__init__(host, port, config=config, timeout=socket_timeout_s)
        self._reader_id = reader_id
        self._tls = tls
        self._tcp_keepalive_s = tcp_keepalive_s
        # Whole messages go out under this lock: sllurp's thread (KEEPALIVE_ACK, the next step)
        # and the executor (the goodbye) may send at once, and sendall() from two threads can
        # interleave their bytes.
        self._send_lock = threading.Lock()
        # message ID -> request name, for the requests of LLRP_STEPS not yet answered; written
        # by whoever sends, read by sllurp's thread (single dict operations: atomic).
        self._requests: dict[int, str] = {}
        self._own_ids: dict[int, str] = {}  # the adapter's own messages (the goodbye)
        self._next_own_id = _OWN_ID_TOP
        self._goodbye_answered = threading.Event()
        # The RO_ACCESS_REPORT frames of the current socket read, for the read journal.
        self._journal = journal
        self._journal_frames: list[bytes] = []
        # One SSL object must not be used by two threads at once (OpenSSL's rule): sllurp's
        # thread reads, and the executor's polite disconnect writes. Held only for non-blocking
        # calls, so neither side ever waits on the network while holding it.
        self._tls_lock = threading.Lock()
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
        """sllurp's receive loop, with a larger read per system call (see ``RECV_BYTES``).

        Like sllurp's: wait for the socket, read, frame; stop when asked to (after the read that
        woke it); on end of stream or a socket error, let sllurp's ``on_lost_connection`` reset
        its state and call the disconnected callbacks (``reconnect`` is off: it never retries).
        """
        self._worker = threading.current_thread()
        chunk = bytearray(RECV_BYTES)
        received = memoryview(chunk)
        sock = self._socket
        try:
            if sock is None:  # connect() starts this thread only once the socket is up
                self._give_up("sllurp reader thread started without a socket")
                return
            if isinstance(sock, ssl.SSLSocket):
                self._tls_loop(sock, chunk, received)
                return
            while True:
                select.select([sock], [], [])
                try:
                    size = sock.recv_into(chunk)
                except OSError as exc:
                    logger.debug("LLRP socket of %s:%s failed: %r", self._host, self._port, exc)
                    size = 0
                if size:
                    self.raw_data_received(received[:size])
                if self._stop_main_loop.is_set():
                    break
                if not size:
                    self.on_lost_connection()
                    break
        except Exception as exc:  # the thread's top level: a bug must not end it silently
            logger.exception("sllurp reader thread of %s:%s failed", self._host, self._port)
            self._give_up(f"sllurp reader thread failed: {exc!r}", exc)
        finally:
            self._socket_thread = None  # what sllurp's loop does on the way out
            self._emit(self._events.thread_exited, self._session_no)

    def _tls_loop(self, sock: ssl.SSLSocket, chunk: bytearray, received: memoryview) -> None:
        """``main_loop`` over TLS: the socket is non-blocking, and select() only follows a read
        that found nothing.

        select() sees the kernel's buffer, not the SSL object's: decrypted bytes of a record
        already taken from the socket (``sock.pending()``) would not wake it, and a handshake
        reply could wait there until the watchdog gives up. So read until the SSL object asks
        for more bytes (``SSLWantReadError``), and only then wait for the socket.
        """
        lock = self._tls_lock
        heard = False
        while True:
            try:
                with lock:
                    size = sock.recv_into(chunk)
            except ssl.SSLWantReadError:
                if self._stop_main_loop.is_set():
                    break
                select.select([sock], [], [])
                continue
            except ssl.SSLWantWriteError:  # TLS itself must send first (e.g. a key update)
                select.select([], [sock], [], 1.0)
                continue
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):  # an end of stream all the same
                size = 0
            except ssl.SSLError as exc:
                # An alert (a refused client certificate...) or a broken record: say which.
                self._give_up(
                    f"TLS error on the reader connection: {describe_tls_error(exc, peer='reader')}",
                    exc,
                )
                break
            except OSError as exc:
                logger.debug("LLRP socket of %s:%s failed: %r", self._host, self._port, exc)
                size = 0
            if size:
                heard = True
                self.raw_data_received(received[:size])
            if self._stop_main_loop.is_set():
                break
            if not size:
                if not heard:
                    # A reader that checks client certificates after the handshake (TLS 1.3)
                    # and dislikes ours may just close: the likeliest cause, worth saying.
                    self._give_up(
                        "the reader closed the TLS connection before sending anything (does it "
                        "require a client certificate? tls.cert_file and tls.key_file)"
                    )
                    break
                self.on_lost_connection()
                break

    def send_data(self, data: bytes) -> None:
        """sllurp's send, one whole message at a time; remembers which request has which
        message ID (an ERROR_MESSAGE names only the ID). Over TLS, non-blocking writes under
        the SSL lock (see ``_tls_lock``)."""
        if len(data) >= codec.HEADER_LENGTH:
            header = codec.decode_header(data)
            request = codec.message_name(header.msg_type)
            if request in LLRP_STEPS and request != "KEEPALIVE_ACK":
                requests = self._requests
                requests[header.msg_id] = request
                if len(requests) > _MAX_PENDING_REQUESTS:
                    requests.pop(next(iter(requests)), None)
        with self._send_lock:
            sock = self._socket
            if not isinstance(sock, ssl.SSLSocket):
                super().send_data(data)
                return
            self._send_tls(sock, data)

    def _send_tls(self, sock: ssl.SSLSocket, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + self._socktimeout
        while view:
            try:
                with self._tls_lock:
                    sent = sock.send(view)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            if sent:
                view = view[sent:]
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"sending to the LLRP reader timed out ({self._socktimeout:g} s)"
                )
            select.select([], [sock], [], min(remaining, 0.1))

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
        """Decide what a reply to one of our requests means (sllurp's thread).

        Returns what sllurp should be shown: the message itself, a :class:`_Substitute` for
        the refusal of an optional step that sllurp waits on, or ``None`` (nothing: a refusal
        of a step without response, an answer to the adapter's own messages, or a refusal of a
        required step, after which the stream is given up).
        """
        msg_id: int = body.get("ID", -1)
        if name == "ERROR_MESSAGE":
            request = self._requests.pop(msg_id, None)
        else:
            request = _REQUEST_OF_RESPONSE.get(name)
            if request is None:
                return message  # not a response: a report, an event, a keepalive
            self._requests.pop(msg_id, None)
        own = self._own_ids.pop(msg_id, None)
        if own is not None:
            if own == "CLOSE_CONNECTION":
                self._goodbye_answered.set()
            if name == "ERROR_MESSAGE" or not _succeeded(body):
                logger.debug(
                    "LLRP reader %s refused the adapter's %s: %s",
                    self._reader_id,
                    own,
                    llrp_status_text(body.get("LLRPStatus")),
                )
            return None
        if name != "ERROR_MESSAGE" and _succeeded(body):
            if name == "ENABLE_ROSPEC_RESPONSE":
                self._start_rospec()
            return message
        text = llrp_status_text(body.get("LLRPStatus"))
        step = None if request is None else LLRP_STEPS.get(request)
        if step is None:
            # An ERROR_MESSAGE answering no request we know of (message ID 0: a frame the reader
            # could not even parse). Reported; if it held a step up, the handshake deadline says.
            self._emit(self._events.refused, self._session_no, None, text)
            return None
        if step.required:
            self._give_up(f"the reader refused {step.request}: {text}")
            return None
        self._emit(self._events.refused, self._session_no, step.request, text)
        if step.response is None:
            return None
        return _Substitute(step.response, body if name == step.response else {"ID": msg_id})

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
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # sllurp 3.0.5 is IPv4 only
        try:
            sock.settimeout(self._socktimeout)
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
        self._socket = sock
        return True

    def _tls_handshake(self, sock: socket.socket) -> ssl.SSLSocket:
        """Wrap the connected socket (the handshake is bound by its timeout); then make it
        non-blocking for ``_tls_loop`` and ``send_data``."""
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
        # Wake the thread from select() without closing the socket under it (closing first
        # makes its next select() fail with a logged traceback); close once it has exited.
        self._stop_main_loop.set()
        sock = self._socket
        if sock is not None:
            try:
                with self._tls_lock:  # an SSL socket's shutdown drops its SSL object
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                logger.debug("shutdown of the LLRP socket failed: %r", exc)
        if worker is not None:
            worker.join(join_timeout_s)
        self.hard_disconnect()
        return worker is None or not worker.is_alive()

    def _own_frame(self, message: codec.LlrpMessage) -> bytes:
        """A message of the adapter's own (not sllurp's), encoded under the next of its own
        message IDs: its reply is the adapter's too."""
        msg_id = self._next_own_id
        self._next_own_id -= 1
        self._own_ids[msg_id] = message.name
        return replace(message, msg_id=msg_id).encode()

    def _start_rospec(self) -> None:
        """START_ROSPEC once sllurp's ROSpec is enabled (sllurp's thread).

        sllurp's ROSpec has an Immediate start trigger (LLRP: it starts when enabled) and sllurp
        never sends START_ROSPEC; some readers (llrpkit's emulator) only start a ROSpec on
        START_ROSPEC or a GPI edge. A reader that did start it answers with an error (the ROSpec
        is already active), which is expected and logged at debug level only.
        """
        try:
            self.send_data(self._own_frame(codec.StartROSpec(spec_id=_SLLURP_ROSPEC_ID)))
        except (OSError, LLRPError) as exc:
            self._give_up(f"connection lost while starting the ROSpec: {exc!r}", exc)

    def write_gpo(self, levels: Mapping[int, bool]) -> None:
        """SET_READER_CONFIG with one GPOWriteData per port (LLRP 1.0.1 section 12.2.6): set
        the reader's outputs (stack lights, horns). Its reply is the adapter's, not sllurp's."""
        message = codec.SetReaderConfig(
            gpo_write_data=tuple(
                codec.GPOWriteData(port, high) for port, high in sorted(levels.items())
            )
        )
        self.send_data(self._own_frame(message))

    def goodbye(self, timeout_s: float) -> bool:
        """Delete our AccessSpecs and ROSpecs and close the LLRP connection (LLRP 1.0.1
        section 12.1.5: the client sends CLOSE_CONNECTION); wait up to ``timeout_s`` for
        CLOSE_CONNECTION_RESPONSE. Returns whether it came.

        Not sllurp's ``disconnect()``: that sends DELETE_ACCESSSPEC before registering the
        handler of its reply (a fast reader wins the race and it waits for ever) and never sends
        CLOSE_CONNECTION. The three messages go in one write; replies come in order, so the
        last one answered means all were. Their replies are the adapter's, not sllurp's.
        """
        frames = (
            self._own_frame(codec.DeleteAccessSpec(spec_id=0)),  # 0: all of them
            self._own_frame(codec.DeleteROSpec(spec_id=0)),
            self._own_frame(codec.CloseConnection()),
        )
        try:
            self.send_data(b"".join(frames))
        except (OSError, LLRPError) as exc:
            logger.debug("LLRP goodbye to %s:%s failed: %r", self._host, self._port, exc)
            return False
        answered = self._goodbye_answered.wait(timeout_s)
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
        with self._tls_lock:
            super().hard_disconnect()

    def thread_alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LlrpReaderAdapter:
    """One LLRP reader: connect, watch, reconnect with backoff; hand reads to the event loop.

    ``run()`` never returns and raises nothing but ``CancelledError``; cancelling it stops the
    session politely (bounded), joins sllurp's thread and reports ``offline``.
    """

    def __init__(
        self,
        *,
        reader_id: str,
        host: str,
        port: int,
        antennas: Sequence[int],
        out: asyncio.Queue[ReadBatch] | Callable[[ReadBatch], None],
        on_status: Callable[[DeviceStatus], None],
        backoff: Backoff,
        keepalive_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        report_every_ms: int = 200,
        report_every_tags: int = 1000,
        tx_power_dbm: float | None = None,
        degraded_hold_s: float = 10.0,
        polite_disconnect_s: float = 1.0,
        thread_join_s: float = 3.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        tls: ssl.SSLContext | None = None,
        on_antenna: Callable[[DeviceId, int, bool], None] | None = None,
        on_gpi: Callable[[DeviceId, int, bool, int], None] | None = None,
        max_clock_skew_s: float = 2.0,
        journal: JournalWriter | None = None,
        clock: Callable[[], float] = time.monotonic,
        utcnow: Callable[[], datetime] = _utcnow,
    ) -> None:
        problems = []
        try:
            if ipaddress.ip_address(host).version == 6:
                problems.append(f"host {host!r} is IPv6; sllurp 3.0.5 connects over IPv4 only")
        except ValueError:
            pass  # a host name: resolved to IPv4 by sllurp's AF_INET socket
        if not 0 < port < 65536:
            problems.append(f"port {port} out of range")
        if not antennas or any(not 1 <= a <= 0xFFFF for a in antennas):
            problems.append(f"antennas must be a non-empty list of 1..65535, got {antennas!r}")
        if min(keepalive_s, connect_timeout_s, report_every_ms, report_every_tags) <= 0:
            problems.append(
                "keepalive_s, connect_timeout_s, report_every_ms and report_every_tags must be > 0"
            )
        if isinstance(out, asyncio.Queue) and out.maxsize <= 0:
            problems.append("the hand-off queue must be bounded (maxsize > 0)")
        if problems:
            raise ConfigError([f"reader {reader_id}: {p}" for p in problems])

        self.reader_id = DeviceId(reader_id)
        self.host = host
        self.port = port
        self.antennas = tuple(sorted(set(antennas)))
        self._out = out
        self._on_status = on_status
        self._backoff = backoff
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._report_every_ms = report_every_ms
        self._report_every_tags = report_every_tags
        self._tx_power_dbm = tx_power_dbm
        self._degraded_hold_s = degraded_hold_s
        self._polite_disconnect_s = polite_disconnect_s
        self._thread_join_s = thread_join_s
        self._max_frame_bytes = max_frame_bytes
        self._tls = tls
        self._on_antenna = on_antenna
        self._on_gpi = on_gpi
        self._client: _ReaderClient | None = None  # the session's, for GPO writes
        self._gpo_writes: set[asyncio.Future[None]] = set()
        self._journal = journal
        self._max_clock_skew_s = max_clock_skew_s
        self._clock = clock
        self._utcnow = utcnow

        self._watchdog = LinkWatchdog(connect_timeout_s, 2.0 * keepalive_s)
        self._session = 0
        self._failure: DeviceError | None = None
        self._wake = asyncio.Event()  # replaced in run(): an Event belongs to one loop
        self._running = False

        self._state: DeviceState | None = None
        # The outage policy (gateway.adapters.outage): one error when the reader goes offline,
        # a warning per new reason meanwhile, one line when it is back.
        self._outage = Outage(
            f"LLRP reader {reader_id} at {host}:{port}",
            log=logger,
            backoff=backoff,
            clock=clock,
            extra={"reader_id": self.reader_id},
            words=OutageWords(
                down="{link} is offline: {reason}",
                still="{link} still offline: {reason}",
                back="{link} is online again after {seconds:.1f} s offline ({attempts} attempts)",
            ),
        )
        # problem key -> (last time seen, detail); the reader is degraded while any is recent.
        self._problems: dict[str, tuple[float, str]] = {}
        self._warned: set[str] = set()
        # Optional steps the reader refused: request -> its words (last session that did), and
        # what was logged already (once per adapter, not per reconnect).
        self._refusals: dict[str, str] = {}
        self._refusals_logged: set[tuple[str, str]] = set()
        # Lasting conditions (key -> detail) that degrade the reader until cleared: an antenna
        # down (told by the app's antenna health), the reader's clock off (per session).
        self._conditions: dict[str, str] = {}
        self._degraded_keys: frozenset[str] = frozenset()
        self._clock_skew_s: float | None = None

        self._reads = 0
        self._batches = 0
        self._malformed = 0
        self._dropped_batches = 0
        self._dropped_reads = 0
        self._sessions_online = 0
        self._connects = 0
        self._last_error: str | None = None

    # -- public ---------------------------------------------------------------------------------

    @property
    def state(self) -> DeviceState | None:
        """The last state reported to ``on_status`` (``None`` before the first attempt ends)."""
        return self._state

    @property
    def stats(self) -> LlrpAdapterStats:
        return LlrpAdapterStats(
            reads=self._reads,
            batches=self._batches,
            malformed_reads=self._malformed,
            dropped_batches=self._dropped_batches,
            dropped_reads=self._dropped_reads,
            sessions_online=self._sessions_online,
            reconnects=max(0, self._connects - 1),
            last_error=self._last_error,
            refused_steps=dict(self._refusals),
            clock_skew_s=self._clock_skew_s,
        )

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def set_antenna_down(self, antenna: int, detail: str | None) -> None:
        """Mark the reader degraded while one of its antennas is down (``detail``), or clear it
        (``None``). Antenna health is judged by the portal's reads (``gateway.domain.antenna``)."""
        self._set_condition(f"antenna {antenna}", detail)

    def write_gpo(self, levels: Mapping[int, bool]) -> bool:
        """Set GPO ports (SET_READER_CONFIG GPOWriteData) now, from the loop: the write runs
        in the executor. Returns False (nothing sent) while the reader is not inventorying."""
        client = self._client
        if client is None or self._state not in (DeviceState.ONLINE, DeviceState.DEGRADED):
            return False
        future = asyncio.ensure_future(asyncio.to_thread(self._send_gpo, client, dict(levels)))
        self._gpo_writes.add(future)
        future.add_done_callback(self._gpo_writes.discard)
        return True

    def _send_gpo(self, client: _ReaderClient, levels: dict[int, bool]) -> None:
        try:
            client.write_gpo(levels)
        except (OSError, LLRPError) as exc:  # the watchdog finds a dead link; this is a light
            logger.debug("GPO write to %s failed: %r", self.reader_id, exc)

    def _set_condition(self, key: str, detail: str | None) -> None:
        if detail is None:
            if self._conditions.pop(key, None) is None:
                return
        elif self._conditions.get(key) == detail:
            return
        else:
            self._conditions[key] = detail
        if self._watchdog.inventory_at is not None and self._state is not DeviceState.OFFLINE:
            self._refresh_state(self._clock())

    async def run(self) -> None:
        if self._running:
            raise RuntimeError(f"LlrpReaderAdapter {self.reader_id} is already running")
        self._running = True
        self._wake = asyncio.Event()
        try:
            while True:
                # A bug (anything but a DeviceError) escapes to the gateway's supervisor, the
                # one place that logs a crash and restarts a part.
                try:
                    await self._session_once()
                except DeviceError as exc:
                    self._went_down(exc)
                await self._outage.pause()
        finally:
            self._running = False
            self._session += 1  # late events from the last client are now stale
            self._set_state(DeviceState.OFFLINE, "adapter stopped")

    # -- sessions -------------------------------------------------------------------------------

    async def _session_once(self) -> None:
        """Run one session until it fails (raises DeviceError) or the task is cancelled."""
        self._session += 1
        session = self._session
        self._failure = None
        self._problems.clear()
        self._conditions.pop("clock", None)
        self._wake.clear()
        self._connects += 1
        self._watchdog.begin(self._clock())
        loop = asyncio.get_running_loop()
        client = _ReaderClient(
            host=self.host,
            port=self.port,
            config=reader_config(
                antennas=self.antennas,
                keepalive_s=self._keepalive_s,
                report_every_ms=self._report_every_ms,
                report_every_tags=self._report_every_tags,
                tx_power_dbm=self._tx_power_dbm,
            ),
            socket_timeout_s=self._connect_timeout_s,
            max_frame_bytes=self._max_frame_bytes,
            post=lambda fn, *args: _post(loop, fn, *args),
            session=session,
            sink=self._sink(),
            reader_id=self.reader_id,
            tls=self._tls,
            tcp_keepalive_s=self._keepalive_s,
            journal=self._journal,
        )
        self._client = client
        connecting = asyncio.ensure_future(asyncio.to_thread(client.connect))
        connecting.add_done_callback(lambda _: self._wake.set())
        polite = False
        try:
            await self._watch(client, connecting)
        except asyncio.CancelledError:
            polite = self._state in (DeviceState.ONLINE, DeviceState.DEGRADED)
            raise
        finally:
            self._session += 1
            self._client = None
            await self._close(client, connecting, polite=polite)

    async def _watch(self, client: _ReaderClient, connecting: asyncio.Future[None]) -> None:
        while True:
            if self._failure is not None:
                raise self._failure
            if connecting.done():
                exc = connecting.exception()
                if exc is not None:
                    raise DeviceError(self.reader_id, f"cannot connect: {exc}") from exc
                if not client.thread_alive():
                    # A dying thread posts its reason first: let those callbacks run, so the
                    # cause is reported rather than its consequence.
                    await asyncio.sleep(0)
                    raise self._failure or DeviceError(
                        self.reader_id, "sllurp reader thread exited"
                    )
            now = self._clock()
            verdict = self._watchdog.verdict(now)
            if verdict is not None:
                raise DeviceError(self.reader_id, verdict)
            if self._watchdog.inventory_at is not None:
                self._refresh_state(now)
            wake_at = self._watchdog.deadline()
            if self._problems:
                wake_at = min(wake_at, self._problems_expire_at())
            self._wake.clear()
            try:
                delay = None if wake_at == math.inf else max(0.0, wake_at - now)
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _close(
        self, client: _ReaderClient, connecting: asyncio.Future[None], *, polite: bool
    ) -> None:
        """Tear a session down completely, even if cancelled meanwhile (then re-raise)."""
        # A connect still in flight would start sllurp's thread after we stopped it: let it end
        # first (it is bounded by the socket timeout, connect_timeout_s).
        cancelled = await _finish(connecting)
        closing = asyncio.ensure_future(
            asyncio.to_thread(
                client.close,
                polite_timeout_s=self._polite_disconnect_s if polite else 0.0,
                join_timeout_s=self._thread_join_s,
            )
        )
        cancelled = await _finish(closing) or cancelled
        failure = closing.exception()
        if failure is not None or not closing.result():
            logger.error(
                "LLRP reader %s at %s: sllurp's reader thread did not exit within %.1f s (%r)",
                self.reader_id,
                self.endpoint,
                self._thread_join_s,
                failure,
                extra={"reader_id": self.reader_id},
            )
        if cancelled:
            raise asyncio.CancelledError

    # -- events from sllurp's thread (run on the loop) ------------------------------------------

    def _sink(self) -> _SessionSink:
        return _SessionSink(
            reports=self._on_reports,
            message=self._on_message,
            refused=self._on_refused,
            inventorying=self._on_inventorying,
            failed=self._fail,
            disconnected=self._on_disconnected,
            thread_exited=self._on_thread_exited,
        )

    def _on_reports(
        self, session: int, reports: list[ConvertedReport], taken: Callable[[], None]
    ) -> None:
        taken()  # sllurp's thread may hand over more
        if session != self._session:
            return
        now = self._clock()
        self._watchdog.heard(now)
        for report in reports:
            self._on_report(report, now)

    def _on_report(self, report: ConvertedReport, now: float) -> None:
        if report.malformed:
            self._malformed += report.malformed
            self._problem(
                now,
                "malformed",
                f"{report.malformed} malformed tag entries in a report: {report.first_problem}",
            )
        elif report.missing_fields:
            # The ROSpec asked for these fields; a reader that drops one (e.g. PeakRSSI) still
            # yields reads, but the portal engine loses evidence.
            self._problem(
                now, "fields", f"reports lack requested fields {sorted(report.missing_fields)}"
            )
        if report.reads:
            self._deliver(ReadBatch(self.reader_id, now, report.reads), now)

    def _on_message(self, session: int, name: str, body: Mapping[str, Any]) -> None:
        if session != self._session:
            return
        self._watchdog.heard(self._clock())
        if name == "GET_READER_CAPABILITIES_RESPONSE":
            problem = self._capability_problem(body)
            if problem is not None:
                self._fail(session, problem)
        elif name == "READER_EVENT_NOTIFICATION":
            data = body.get("ReaderEventNotificationData", {})
            attempt = data.get("ConnectionAttemptEvent")
            if attempt is not None:
                self._check_clock(data.get("UTCTimestamp"))
            antenna_event = data.get("AntennaEvent")
            if isinstance(antenna_event, Mapping) and self._on_antenna is not None:
                self._on_antenna(
                    self.reader_id,
                    int(antenna_event.get("AntennaID", 0)),
                    antenna_event.get("EventType") == "Connected",
                )
            gpi_event = data.get("GPIEvent")
            if isinstance(gpi_event, Mapping) and self._on_gpi is not None:
                stamp = data.get("UTCTimestamp")
                at_us = stamp.get("Microseconds") if isinstance(stamp, Mapping) else None
                self._on_gpi(
                    self.reader_id,
                    int(gpi_event.get("GPIPortNumber", 0)),
                    bool(gpi_event.get("GPIEvent")),
                    at_us if isinstance(at_us, int) else round(self._utcnow().timestamp() * 1e6),
                )
            if attempt is not None and attempt.get("Status") != "Success":
                status = str(attempt.get("Status"))
                self._fail(
                    session,
                    f"reader refused the connection: {_CONNECTION_REFUSALS.get(status, status)}",
                )

    def _check_clock(self, stamp: object) -> None:
        """The reader's clock against the gateway's, from the connection event's UTCTimestamp
        (sent the moment the reader accepts us; a few ms of latency at most). Reads are dated
        by the reader: a skewed clock misdates every movement, and the portal engine's windows."""
        if not isinstance(stamp, Mapping) or not isinstance(stamp.get("Microseconds"), int):
            return
        skew = stamp["Microseconds"] / 1e6 - self._utcnow().timestamp()
        self._clock_skew_s = skew
        if abs(skew) <= self._max_clock_skew_s:
            return
        detail = (
            f"reader clock {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} the "
            f"gateway's (limit {self._max_clock_skew_s:g} s): reads are misdated"
        )
        logger.warning(
            "LLRP reader %s at %s: %s",
            self.reader_id,
            self.endpoint,
            detail,
            extra={"reader_id": self.reader_id, "clock_skew_s": round(skew, 3)},
        )
        self._conditions["clock"] = detail

    def _on_refused(self, session: int, request: str | None, text: str) -> None:
        """The reader refused an optional step (or sent an ERROR_MESSAGE answering nothing we
        sent): logged once per adapter for each step and reason; the session goes on."""
        if session != self._session:
            return
        self._watchdog.heard(self._clock())
        what = request or "a message (ERROR_MESSAGE naming no request of ours)"
        self._watchdog.last_refusal = f"{what}: {text}"
        self._refusals[what] = text
        if request == "SET_READER_CONFIG":
            self._watchdog.keepalives = False
        key = (what, text)
        if key in self._refusals_logged:
            logger.debug("LLRP reader %s refused %s again: %s", self.reader_id, what, text)
            return
        self._refusals_logged.add(key)
        step = LLRP_STEPS.get(request or "")
        logger.warning(
            "LLRP reader %s at %s refused %s: %s; going on without it (%s)",
            self.reader_id,
            self.endpoint,
            what,
            text,
            "optional" if step is None else step.without_it,
            extra={"reader_id": self.reader_id, "llrp_request": request, "llrp_status": text},
        )

    def _on_inventorying(self, session: int) -> None:
        if session != self._session:
            return
        now = self._clock()
        self._watchdog.inventorying(now)
        self._sessions_online += 1
        self._backoff.succeeded(now)
        self._refresh_state(now)
        self._wake.set()

    def _on_disconnected(self, session: int) -> None:
        self._fail(session, "connection closed")

    def _on_thread_exited(self, session: int) -> None:
        self._fail(session, "sllurp reader thread exited")

    def _fail(self, session: int, reason: str, cause: BaseException | None = None) -> None:
        # The first reason wins: it is the cause, later ones are consequences.
        if session == self._session and self._failure is None:
            self._failure = DeviceError(self.reader_id, reason)
            # What ``raise ... from cause`` records; the exception was caught on sllurp's thread.
            self._failure.__cause__ = cause
            self._wake.set()

    # -- capabilities, hand-off and state -------------------------------------------------------

    def _capability_problem(self, caps: Mapping[str, Any]) -> str | None:
        general = caps.get("GeneralDeviceCapabilities")
        if not isinstance(general, Mapping):
            return "reader capabilities lack GeneralDeviceCapabilities"
        max_antennas = general.get("MaxNumberOfAntennaSupported", 0)
        if max_antennas < max(self.antennas):
            return (
                f"reader supports {max_antennas} antenna(s) but antennas "
                f"{list(self.antennas)} are configured"
            )
        if not general.get("HasUTCClockCapability", False):
            return "reader has no UTC clock (FirstSeenTimestampUTC cannot be reported)"
        regulatory = caps.get("RegulatoryCapabilities")
        if not isinstance(regulatory, Mapping) or "UHFBandCapabilities" not in regulatory:
            return "reader capabilities lack RegulatoryCapabilities/UHFBandCapabilities"
        return None

    def _deliver(self, batch: ReadBatch, now: float) -> None:
        self._batches += 1
        self._reads += len(batch.reads)
        out = self._out
        if not isinstance(out, asyncio.Queue):
            out(batch)
            return
        try:
            out.put_nowait(batch)
        except asyncio.QueueFull:
            oldest = out.get_nowait()
            out.task_done()
            out.put_nowait(batch)
            self._dropped_batches += 1
            self._dropped_reads += len(oldest.reads)
            self._problem(now, "queue", "hand-off queue full: dropping the oldest batches")

    def _problem(self, now: float, key: str, detail: str) -> None:
        self._problems[key] = (now, detail)
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(
                "LLRP reader %s at %s is degraded: %s",
                self.reader_id,
                self.endpoint,
                detail,
                extra={"reader_id": self.reader_id},
            )
        if self._watchdog.inventory_at is not None:
            self._refresh_state(now)
            self._wake.set()  # re-arm the watch loop's timer for the problem's expiry

    def _problems_expire_at(self) -> float:
        return max(at for at, _ in self._problems.values()) + self._degraded_hold_s

    def _refresh_state(self, now: float) -> None:
        for key, (at, _) in list(self._problems.items()):
            if now - at >= self._degraded_hold_s:
                del self._problems[key]
        if self._problems or self._conditions:
            details = [*self._conditions.values(), *(d for _, d in self._problems.values())]
            keys = frozenset(self._problems).union(self._conditions)
            # A new kind of problem is news even while already degraded (a second antenna).
            renotify = keys != self._degraded_keys
            self._degraded_keys = keys
            self._set_state(DeviceState.DEGRADED, "; ".join(details), force=renotify)
            return
        self._degraded_keys = frozenset()
        if self._state is DeviceState.DEGRADED:
            logger.info(
                "LLRP reader %s at %s is no longer degraded",
                self.reader_id,
                self.endpoint,
                extra={"reader_id": self.reader_id},
            )
        self._warned.clear()
        self._set_state(DeviceState.ONLINE, "inventorying")

    def _went_down(self, exc: DeviceError) -> None:
        reason = _reason(exc)
        self._last_error = str(exc)
        # A new reason is news (e.g. "connection closed" first, then the retries find that the
        # reader lacks a capability); the same reason again is a retry, not worth a line.
        if self._outage.failed(reason) or self._state is not DeviceState.OFFLINE:
            self._set_state(DeviceState.OFFLINE, reason)

    def _set_state(self, state: DeviceState, detail: str, *, force: bool = False) -> None:
        if state is self._state and not force:
            return
        previous = self._state
        self._state = state
        if previous is DeviceState.OFFLINE and state is not DeviceState.OFFLINE:
            self._outage.recovered()
        elif previous is None and state is not DeviceState.OFFLINE:
            logger.info(
                "LLRP reader %s at %s is online%s",
                self.reader_id,
                self.endpoint,
                "" if self._tls is None else " (TLS)",
                extra={"reader_id": self.reader_id},
            )
        self._on_status(
            DeviceStatus(
                device_id=self.reader_id,
                device_type=DEVICE_TYPE,
                state=state,
                since=self._utcnow(),
                detail=detail,
            )
        )


def _reason(exc: DeviceError) -> str:
    """The reason without the ``device_id:`` prefix DeviceError adds (the log line names it)."""
    prefix = f"{exc.device_id}: "
    text = str(exc)
    return text[len(prefix) :] if text.startswith(prefix) else text


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
    """Hand an event from sllurp's thread to the loop; a closed loop has nobody left to tell."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


async def _finish(fut: asyncio.Future[Any]) -> bool:
    """Wait until ``fut`` is done even if this task is cancelled meanwhile.

    Returns whether a cancellation arrived while waiting; the caller re-raises it once its
    clean-up is complete. ``asyncio.wait`` neither raises the future's exception nor cancels it.
    """
    cancelled = False
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled
