"""A minimal Prometheus endpoint: ``GET /metrics`` (text format 0.0.4), ``/healthz``, ``/readyz``.

Theory of operation
-------------------
Built on ``asyncio.start_server`` so the gateway needs no HTTP dependency. It speaks the small
subset of HTTP/1.x a scraper, a probe and curl use, and treats every byte as hostile:

- one request per connection: every response carries ``Connection: close`` and the connection is
  closed after it (a scrape every 15 s gains nothing from keep-alive);
- the request line and headers must arrive within ``request_timeout_s`` (else 408) and fit in
  ``max_request_bytes`` (else 431); anything that is not ``METHOD SP target SP HTTP/1.x``
  followed by ``name: value`` lines is a 400; a body is never read (only GET and HEAD are
  served, others get 405);
- at most ``max_connections`` are served at once; more get an immediate 503;
- a response the client does not read within ``request_timeout_s`` aborts the connection;
- after answering, the server half-closes and discards what the client still sends for up to
  ``LINGER_S`` (a "lingering close"), so that closing with unread input, which makes the kernel
  reset the connection, cannot destroy the answer on its way.

``/metrics`` calls ``collect()`` (a plain or async callable) for ``{name: (type, help, value)}``.
A name may carry labels (``dockwatch_sink_lag{sink="mqtt"}``, see :func:`labelled`); samples are
grouped into families by the name before ``{``, each family printed once with its ``# HELP`` and
``# TYPE`` lines, families and samples sorted by name. A ``summary`` is given as its ``X_sum``
and ``X_count`` samples (and optionally ``X{quantile="..."}``), which all belong to family ``X``.
A ``collect`` that raises answers 500, and is logged once when it starts failing and once when it
recovers, not at every scrape.

``/healthz`` (liveness) answers 200 ``ok``, or 503 ``unhealthy`` when the optional ``health()``
says so. ``/readyz`` (readiness) answers 200 ``ready``, or 503 with the one-line reason the
optional ``ready()`` returns (without ``ready()`` it follows ``health()``). Neither needs the
token even when one is configured: they say "alive" and "ready or why not", and container health
checks must not need secrets. ``/metrics`` follows the rules of the gRPC API: with a token,
requests need ``Authorization: Bearer <token>`` (401 otherwise); without one the endpoint may
only listen on loopback (:class:`ConfigError` otherwise).

Defaults: ``request_timeout_s=5``, ``max_request_bytes=8192``, ``max_connections=16``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from gateway.adapters.grpc_api import (
    RefusalLog,
    bearer_matches,
    check_auth_rule,
    check_token,
    listen_host,
)
from gateway.errors import GatewayError

__all__ = ["CONTENT_TYPE", "Collector", "MetricsServer", "Sample", "Samples", "labelled", "render"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRIC_TYPES = frozenset({"counter", "gauge", "summary", "untyped"})
_SUMMARY_SUFFIXES = ("_sum", "_count")
MAX_HEADER_LINES = 100
LINGER_S = 1.0
"""After answering, read and discard what the client still sends for at most this long."""
LINGER_BYTES = 65_536

Sample = tuple[str, str, float]
"""(type, help, value): type is ``counter``, ``gauge``, ``summary`` or ``untyped``."""
Samples = Mapping[str, Sample]
Collector = Callable[[], Samples | Awaitable[Samples]]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE_NAME = re.compile(rf"({_NAME})(?:\{{(?:{_LABEL}(?:,{_LABEL})*)?\}})?")
_QUANTILE_LABEL = re.compile(r'[{,]quantile="')
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


# --- the text format -------------------------------------------------------------------------


def labelled(name: str, **labels: str) -> str:
    """``name{k="v",...}`` with the values escaped as the text format wants."""
    if not re.fullmatch(_NAME, name):
        raise ValueError(f"not a metric name: {name!r}")
    if not labels:
        return name
    parts = []
    for key, value in labels.items():
        if not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
            raise ValueError(f"not a label name: {key!r}")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{key}="{escaped}"')
    return f"{name}{{{','.join(parts)}}}"


def _format_value(value: float) -> str:
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number.is_integer() and abs(number) < 2**63:
        return str(int(number))
    return repr(number)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


@dataclass(slots=True)
class _Family:
    type: str
    help: str
    samples: list[tuple[str, float]] = field(default_factory=list)


def _family_name(name: str, base: str, kind: str) -> str:
    """The family a sample belongs to: its name, less ``_sum``/``_count`` for a summary."""
    if kind != "summary":
        return base
    for suffix in _SUMMARY_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    if not _QUANTILE_LABEL.search(name):
        raise ValueError(f"{name}: a summary sample is X_sum, X_count or X with a quantile label")
    return base


def render(samples: Samples) -> str:
    """The samples in the Prometheus text format; ValueError for an invalid name or type, a
    summary sample that is not ``X_sum``/``X_count``/``X{quantile=...}``, or two samples of one
    family that disagree on the type."""
    families: dict[str, _Family] = {}
    for name, (kind, help_text, value) in samples.items():
        match = _SAMPLE_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"not a valid sample name: {name!r}")
        if kind not in METRIC_TYPES:
            raise ValueError(f"{name}: type must be one of {sorted(METRIC_TYPES)}, got {kind!r}")
        family_name = _family_name(name, match.group(1), kind)
        family = families.setdefault(family_name, _Family(kind, help_text))
        if family.type != kind:
            raise ValueError(f"{name}: type {kind!r} differs from its family's {family.type!r}")
        family.samples.append((name, value))
    lines: list[str] = []
    for family_name in sorted(families):
        family = families[family_name]
        lines.append(f"# HELP {family_name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family_name} {family.type}")
        lines.extend(f"{n} {_format_value(v)}" for n, v in sorted(family.samples))
    return "".join(line + "\n" for line in lines)


# --- HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, *, head: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS[self.status]}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            "Cache-Control: no-store",
            *(f"{k}: {v}" for k, v in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (b"" if head else self.body)


def _plain(status: int, text: str, *headers: tuple[str, str]) -> _Response:
    return _Response(status, (text + "\n").encode(), headers=headers)


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Request:
    method: bytes
    path: bytes
    authorization: bytes | None


async def _read_request(reader: asyncio.StreamReader, max_bytes: int) -> _Request:
    """The request line and headers (``_BadRequest`` when they break the rules above)."""
    lines: list[bytes] = []
    total = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError as exc:  # a line longer than the stream's limit
            raise _BadRequest(431, "request line or header too long") from exc
        total += len(line)
        if total > max_bytes or len(lines) > MAX_HEADER_LINES:
            raise _BadRequest(431, "request headers too large")
        if not line.endswith(b"\n"):
            raise _BadRequest(400, "incomplete request")
        line = line.rstrip(b"\r\n")
        if not line:
            if lines:
                break
            continue  # RFC 9112: ignore empty lines before the request line
        lines.append(line)
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.0", b"HTTP/1.1") or not target.isascii():
        raise _BadRequest(400, "malformed request line")
    authorization = None
    for header in lines[1:]:
        name, colon, value = header.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _BadRequest(400, "malformed header")
        if name.lower() == b"authorization":
            authorization = value.strip()
    return _Request(method, target.partition(b"?")[0], authorization)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then drain the client's leftovers before closing ("lingering close").

    Closing a socket with unread input makes the kernel send RST, which can destroy the
    response still in flight to the client (an error answer to a request we did not read
    whole, or a client turned away while it was still sending).
    """
    if writer.can_write_eof():
        writer.write_eof()
    discarded = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_S):
            while discarded < LINGER_BYTES and (chunk := await reader.read(4096)):
                discarded += len(chunk)


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``listen`` (``host:port``; port 0 picks one).

    ``collect`` returns ``{name: (type, help, value)}`` (it may be async; it runs on the event
    loop, so it must not block: read the store through a worker thread). ``health`` (optional)
    returns whether the process is alive and well; ``ready`` (optional) returns None when the
    gateway is ready to do its job, else the reason it is not (one line, sent to unauthenticated
    clients: no secrets). Both run on the event loop and must not block. Raises
    :class:`ConfigError` at construction for a non-loopback ``listen`` without ``token``.
    """

    def __init__(
        self,
        listen: str,
        collect: Collector,
        token: str | None = None,
        *,
        health: Callable[[], bool] | None = None,
        ready: Callable[[], str | None] | None = None,
        request_timeout_s: float = 5.0,
        max_request_bytes: int = 8192,
        max_connections: int = 16,
    ) -> None:
        if request_timeout_s <= 0 or max_request_bytes < 256 or max_connections < 1:
            raise ValueError(
                "request_timeout_s must be > 0, max_request_bytes >= 256, max_connections >= 1"
            )
        self._expected = check_token(token, "api.token")
        check_auth_rule(
            listen=listen,
            key="api.metrics_listen",
            authenticated=self._expected is not None,
            what="metrics endpoint",
            logger=log,
        )
        self._listen = listen
        self._collect = collect
        self._health = health
        self._ready = ready
        self._timeout_s = request_timeout_s
        self._max_request_bytes = max_request_bytes
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[object], asyncio.StreamWriter] = {}
        self._active = 0
        self._collect_ok = True
        self._refusals = RefusalLog(log, "metrics endpoint")
        self.port = 0
        """The bound port, once started (the first socket's, if the host has several)."""

    async def start(self) -> int:
        """Bind and serve; returns the bound port. GatewayError when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("the metrics server is already started")
        host = listen_host(self._listen)
        port = int(self._listen.rpartition(":")[2])
        try:
            server = await asyncio.start_server(
                self._serve, host, port, limit=self._max_request_bytes
            )
        except OSError as exc:
            raise GatewayError(f"metrics endpoint cannot listen on {self._listen}: {exc}") from exc
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        log.info(
            "metrics endpoint listening on %s (port %d%s)",
            self._listen,
            self.port,
            ", bearer token" if self._expected else "",
        )
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop connections still being served. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Aborting a connection ends its task on its own; cancelling the task instead would make
        # asyncio's stream machinery log the CancelledError as an unhandled exception.
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            await asyncio.wait(self._connections, timeout=self._timeout_s)
        await server.wait_closed()
        log.info("metrics endpoint on %s stopped", self._listen)

    async def run(self) -> None:
        """Serve until cancelled, then stop. Starts the server unless :meth:`start` already did
        (start first to fail fast on an address that cannot be bound)."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await self.stop()

    # --- one connection ----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before stop(): nobody would ever close it
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = writer
        try:
            if self._active >= self._max_connections:
                await self._send(writer, _plain(503, "too many connections"), head=False)
                await _linger(reader, writer)
                return
            self._active += 1
            try:
                response, head = await self._answer(reader, writer)
                await self._send(writer, response, head=head)
            finally:
                self._active -= 1
            await _linger(reader, writer)
        except (ConnectionError, TimeoutError):
            writer.transport.abort()  # the client left, or does not read what we send
        except Exception:  # the top of a connection's task: log it, keep serving others
            log.exception("metrics endpoint: request failed")
            writer.transport.abort()
        finally:
            writer.close()
            if task is not None:
                self._connections.pop(task, None)

    async def _send(self, writer: asyncio.StreamWriter, response: _Response, *, head: bool) -> None:
        writer.write(response.encode(head=head))
        async with asyncio.timeout(self._timeout_s):
            await writer.drain()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[_Response, bool]:
        try:
            async with asyncio.timeout(self._timeout_s):
                request = await _read_request(reader, self._max_request_bytes)
        except TimeoutError:
            return _plain(408, "request timeout"), False
        except _BadRequest as exc:
            return _plain(exc.status, str(exc)), False
        head = request.method == b"HEAD"
        if request.path not in (b"/metrics", b"/healthz", b"/readyz"):
            return _plain(404, "not found"), head
        if request.method not in (b"GET", b"HEAD"):
            return _plain(405, "method not allowed", ("Allow", "GET, HEAD")), False
        if request.path == b"/healthz":
            return (_plain(200, "ok") if self._healthy() else _plain(503, "unhealthy")), head
        if request.path == b"/readyz":
            reason = self._not_ready()
            return (_plain(200, "ready") if reason is None else _plain(503, reason)), head
        if self._expected is not None and not bearer_matches(self._expected, request.authorization):
            peer = writer.get_extra_info("peername")
            reason = "no bearer token" if request.authorization is None else "wrong bearer token"
            self._refusals.refused(
                f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer), reason
            )
            return _plain(
                401, "unauthorized", ("WWW-Authenticate", 'Bearer realm="dockwatch"')
            ), head
        return await self._metrics(), head

    def _healthy(self) -> bool:
        return self._health is None or self._health()

    def _not_ready(self) -> str | None:
        """None when ready, else the reason on one line."""
        if self._ready is not None:
            reason = self._ready()
        else:
            reason = None if self._healthy() else "unhealthy"
        if reason is None:
            return None
        return " ".join(reason.split()) or "not ready"

    async def _metrics(self) -> _Response:
        try:
            async with asyncio.timeout(self._timeout_s):
                result = self._collect()
                samples = await result if inspect.isawaitable(result) else result
            body = render(samples).encode("utf-8")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken collector must not take the endpoint down
            if self._collect_ok:
                self._collect_ok = False
                log.exception("metrics endpoint: collecting the metrics failed")
            else:
                log.debug("metrics endpoint: collecting still fails: %s", exc)
            return _plain(500, "collecting the metrics failed")
        if not self._collect_ok:
            self._collect_ok = True
            log.info("metrics endpoint: collecting works again")
        return _Response(200, body, CONTENT_TYPE)
