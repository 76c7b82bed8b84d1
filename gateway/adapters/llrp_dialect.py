"""LLRP dialects: what the gateway asks of a reader, and what a refusal of it means.

Theory of operation
-------------------
Readers refuse what they do not implement (LLRP 1.0.1 section 14.1.1: an ERROR_MESSAGE naming
the request's message ID, or a response whose LLRPStatus is not Success). :data:`LLRP_STEPS` lists
every request the gateway sends and whether inventory needs it. A session's
:class:`RequestLedger` notes which request each message ID is as it is sent, and judges each
reply (:meth:`RequestLedger.vet`, on sllurp's thread) into a :class:`Verdict` the session's
client acts on: a required step refused ends the session in the reader's own words; an optional
one is reported, and sllurp is shown that step's response as successful (:class:`_Substitute`),
since its state machine knows no optional steps. Replies to the adapter's own messages (the
goodbye, START_ROSPEC, GPO writes: message IDs counting down from the top, where sllurp's count up
from 1) are never shown to sllurp. On the loop, the adapter's :class:`RefusalBook` keeps the
reader's words for its stats and logs each refusal once per adapter, not once per reconnect.
docs/llrp.md has the table of steps (a test checks it against :data:`LLRP_STEPS`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from gateway.domain.model import DeviceId
from gateway.llrp import codec

# The adapter's logger, whichever of its modules logs: log settings and filters name one logger
# for the LLRP readers.
logger = logging.getLogger("gateway.adapters.llrp")

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
# Message IDs of the adapter's own messages count down from the top; sllurp's count up from 1.
_OWN_ID_TOP: Final = 0xFFFFFFFF


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
class Verdict:
    """What one message from the reader means to the session: what sllurp is shown, and at most
    one thing the session's client does about it (before showing it)."""

    # The message itself, a _Substitute for the refusal of an optional step sllurp waits on, or
    # None: nothing (a refusal of a step without response, an answer to the adapter's own
    # messages, or a refusal of a required step).
    show: Any | None
    # A required step was refused: the session ends with these words.
    fatal: str | None = None
    # An optional step (``request``) was refused in these words; request None: an ERROR_MESSAGE
    # answering no request we know of.
    refused: str | None = None
    request: str | None = None
    # sllurp's ROSpec is enabled: time for the adapter's START_ROSPEC.
    rospec_enabled: bool = False


class RequestLedger:
    """Which request each message ID of one session is, and what a reply to it means.

    :meth:`sent` is called by whoever sends (sllurp's thread; the executor's goodbye and GPO
    writes), :meth:`vet` on sllurp's thread: single dict operations, atomic. It decides and
    sends nothing; the session's client acts on the :class:`Verdict`.
    """

    def __init__(self, reader_id: DeviceId) -> None:
        self._reader_id = reader_id
        # message ID -> request name, for the requests of LLRP_STEPS not yet answered.
        self._requests: dict[int, str] = {}
        self._own_ids: dict[int, str] = {}  # the adapter's own messages (the goodbye)
        self._next_own_id = _OWN_ID_TOP
        # Set when the reader answers the adapter's CLOSE_CONNECTION.
        self.goodbye_answered = threading.Event()

    def sent(self, data: bytes) -> None:
        """Note the request that starts ``data`` (an ERROR_MESSAGE names only its ID)."""
        if len(data) >= codec.HEADER_LENGTH:
            header = codec.decode_header(data)
            request = codec.message_name(header.msg_type)
            if request in LLRP_STEPS and request != "KEEPALIVE_ACK":
                requests = self._requests
                requests[header.msg_id] = request
                if len(requests) > _MAX_PENDING_REQUESTS:
                    requests.pop(next(iter(requests)), None)

    def own_frame(self, message: codec.LlrpMessage) -> bytes:
        """A message of the adapter's own (not sllurp's), encoded under the next of its own
        message IDs: its reply is the adapter's too."""
        msg_id = self._next_own_id
        self._next_own_id -= 1
        self._own_ids[msg_id] = message.name
        return replace(message, msg_id=msg_id).encode()

    def vet(self, message: Any, name: str, body: Mapping[str, Any]) -> Verdict:
        """Decide what a message that is not a report means (sllurp's thread)."""
        msg_id: int = body.get("ID", -1)
        if name == "ERROR_MESSAGE":
            request = self._requests.pop(msg_id, None)
        else:
            request = _REQUEST_OF_RESPONSE.get(name)
            if request is None:
                return Verdict(message)  # not a response: a report, an event, a keepalive
            self._requests.pop(msg_id, None)
        own = self._own_ids.pop(msg_id, None)
        if own is not None:
            if own == "CLOSE_CONNECTION":
                self.goodbye_answered.set()
            if name == "ERROR_MESSAGE" or not _succeeded(body):
                logger.debug(
                    "LLRP reader %s refused the adapter's %s: %s",
                    self._reader_id,
                    own,
                    llrp_status_text(body.get("LLRPStatus")),
                )
            return Verdict(None)
        if name != "ERROR_MESSAGE" and _succeeded(body):
            return Verdict(message, rospec_enabled=name == "ENABLE_ROSPEC_RESPONSE")
        text = llrp_status_text(body.get("LLRPStatus"))
        step = None if request is None else LLRP_STEPS.get(request)
        if step is None:
            # An ERROR_MESSAGE answering no request we know of (message ID 0: a frame the reader
            # could not even parse). Reported; if it held a step up, the handshake deadline says.
            return Verdict(None, refused=text)
        if step.required:
            return Verdict(None, fatal=f"the reader refused {step.request}: {text}")
        show = (
            None
            if step.response is None
            else _Substitute(step.response, body if name == step.response else {"ID": msg_id})
        )
        return Verdict(show, refused=text, request=step.request)


class RefusalBook:
    """The optional steps one reader refused, on the loop: the reader's words for each (the
    adapter's stats), and each refusal logged once per adapter, not once per reconnect."""

    def __init__(self, *, reader_id: DeviceId, endpoint: str) -> None:
        self._reader_id = reader_id
        self._endpoint = endpoint
        # request -> the reader's words (the last session that refused it)
        self.steps: dict[str, str] = {}
        self._logged: set[tuple[str, str]] = set()

    def note(self, request: str | None, text: str) -> str:
        """Keep and log (the first time) a refusal; return it in words, for the watchdog."""
        what = request or "a message (ERROR_MESSAGE naming no request of ours)"
        self.steps[what] = text
        key = (what, text)
        if key in self._logged:
            logger.debug("LLRP reader %s refused %s again: %s", self._reader_id, what, text)
            return f"{what}: {text}"
        self._logged.add(key)
        step = LLRP_STEPS.get(request or "")
        logger.warning(
            "LLRP reader %s at %s refused %s: %s; going on without it (%s)",
            self._reader_id,
            self._endpoint,
            what,
            text,
            "optional" if step is None else step.without_it,
            extra={"reader_id": self._reader_id, "llrp_request": request, "llrp_status": text},
        )
        return f"{what}: {text}"
