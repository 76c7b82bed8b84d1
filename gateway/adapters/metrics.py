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
- liveness never waits for a slot: ``/healthz`` is answered whatever else is going on (a probe
  that sees 503 restarts a healthy process); ``/metrics`` and ``/readyz`` are answered for at most
  ``max_connections`` requests at once, more get an immediate 503 ``too many connections`` (a
  scraper retries at its next interval). A connection takes a slot only once its request is
  read: idle connections take none;
- at most ``max_open`` connections are open at once (each costs a task and a buffer of at most
  ``max_request_bytes``); one more makes the server drop the oldest connection that is idle
  (still sending its request, or lingering after its answer), so idle connections can never
  lock out a probe;
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
token nor a client certificate even when they are configured: they say "alive" and "ready or why
not", and container health checks (Docker's ``HEALTHCHECK``, a kubelet's ``httpGet`` probe) have
neither secrets nor client certificates.

TLS (optional, ``tls``: a server-side :class:`ssl.SSLContext`, TLS 1.2 or later, built from
``api.tls`` by :func:`server_tls_context`): the endpoint then speaks HTTPS only. The handshake is
asyncio's, bounded by ``request_timeout_s`` (a client that never finishes it is cut off then); a
handshake that fails (a plain-HTTP client, a client that does not trust the certificate, a
client certificate the CA did not sign) closes that connection and logs one line (INFO for the
first since start, DEBUG after: a misconfigured scraper retries every 15 s), and the server
keeps serving. When the context verifies clients (``api.tls.client_ca_file``), client
certificates are OPTIONAL at the handshake, so that probes still reach ``/healthz`` and
``/readyz``, and REQUIRED for ``/metrics`` (403 without one); a certificate that is presented
must be valid, or the handshake fails.

``/metrics`` follows the rules of the gRPC API: every configured mechanism applies (a bearer
token: ``Authorization: Bearer <token>``, 401 otherwise; client certificates: 403 without one),
and an endpoint with neither may only listen on loopback (:class:`ConfigError` otherwise; TLS
alone encrypts but admits anyone). A token on a non-loopback address without TLS is accepted
with one warning: it travels in clear.

Defaults: ``request_timeout_s=5``, ``max_request_bytes=8192``, ``max_connections=16``,
``max_open=256``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.adapters.grpc_api import (
    RefusalLog,
    bearer_matches,
    check_listener_auth,
    listen_host,
)
from gateway.errors import ConfigError, GatewayError

__all__ = [
    "CONTENT_TYPE",
    "Collector",
    "MetricsServer",
    "Sample",
    "Samples",
    "labelled",
    "render",
    "server_tls_context",
]

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
    403: "Forbidden",
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

    TLS has no half-close (``can_write_eof()`` is False): the drain alone runs, so a client
    that reads until EOF sees it when it closes or after ``LINGER_S``; HTTP clients stop at
    ``Content-Length`` and close first.
    """
    if writer.can_write_eof():
        writer.write_eof()
    discarded = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_S):
            while discarded < LINGER_BYTES and (chunk := await reader.read(4096)):
                discarded += len(chunk)


# --- TLS -------------------------------------------------------------------------------------


class _EncryptedKey(Exception):
    """The key file asked for a password (raised from OpenSSL's password callback)."""


def _refuse_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and a service would hang there.
    raise _EncryptedKey


def _check_pem(path: Path, marker: bytes, key: str, what: str) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc
    if marker not in data:
        raise ConfigError(f"{key}: {path} is not a PEM {what}")


def server_tls_context(
    cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path | None = None
) -> ssl.SSLContext:
    """The server-side context for ``api.tls`` (TLS 1.2 or later): the certificate chain and its
    key, and with ``client_ca_file`` client certificates verified against that CA but optional
    at the handshake (see the module docstring). ConfigError naming the ``api.tls`` key for a
    file that cannot be read or used, an encrypted key, or a key that does not match."""
    cert, key = Path(cert_file), Path(key_file)
    _check_pem(cert, b"-----BEGIN CERTIFICATE-----", "api.tls.cert_file", "certificate")
    _check_pem(key, b"PRIVATE KEY-----", "api.tls.key_file", "private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key, password=_refuse_password)
    except _EncryptedKey as exc:
        raise ConfigError(
            f"api.tls.key_file: {key} is encrypted; the gateway needs an unencrypted key "
            "(protect it with file permissions; `openssl pkey -in KEY -out KEY.plain` decrypts it)"
        ) from exc
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"api.tls.cert_file/api.tls.key_file: cannot use {cert} with {key}: {exc}"
        ) from exc
    if client_ca_file is not None:
        ca = Path(client_ca_file)
        _check_pem(ca, b"-----BEGIN CERTIFICATE-----", "api.tls.client_ca_file", "certificate")
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"api.tls.client_ca_file: cannot use {ca}: {exc}") from exc
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


_PLAIN_HTTP_HINT = {"HTTP_REQUEST": "the client speaks plain HTTP to this HTTPS port"}


def _reporting_handshake_failures(
    report: Callable[[ssl.SSLError], None],
) -> type[ssl.SSLObject]:
    """An :class:`ssl.SSLObject` class that reports a failed handshake before failing it.

    asyncio (and uvloop) run the handshake inside the transport and close a connection whose
    handshake fails without telling the server (it is an ``OSError``: logged only in the
    loop's debug mode). ``SSLContext.sslobject_class`` is the documented hook on the objects
    they create.
    """

    class _SSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # the handshake waits for the peer: not a failure
            except ssl.SSLError as exc:
                report(exc)
                raise

    return _SSLObject


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``listen`` (``host:port``; port 0 picks one).

    ``collect`` returns ``{name: (type, help, value)}`` (it may be async; it runs on the event
    loop, so it must not block: read the store through a worker thread). ``health`` (optional)
    returns whether the process is alive and well; ``ready`` (optional) returns None when the
    gateway is ready to do its job, else the reason it is not (one line, sent to unauthenticated
    clients: no secrets). Both run on the event loop and must not block.

    ``tls`` (optional) is a server-side context (:func:`server_tls_context`); the server sets its
    ``sslobject_class`` to log failed handshakes, so give each server its own. A context that
    verifies clients (``verify_mode`` not ``CERT_NONE``) makes ``/metrics`` require a verified
    client certificate. Raises :class:`ConfigError` at construction for a non-loopback
    ``listen`` with neither ``token`` nor client certificates, ValueError for a context that is
    not a server one or allows less than TLS 1.2.
    """

    def __init__(
        self,
        listen: str,
        collect: Collector,
        token: str | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        health: Callable[[], bool] | None = None,
        ready: Callable[[], str | None] | None = None,
        request_timeout_s: float = 5.0,
        max_request_bytes: int = 8192,
        max_connections: int = 16,
        max_open: int = 256,
    ) -> None:
        if request_timeout_s <= 0 or max_request_bytes < 256 or max_connections < 1:
            raise ValueError(
                "request_timeout_s must be > 0, max_request_bytes >= 256, max_connections >= 1"
            )
        if max_open < max_connections + 1:
            raise ValueError("max_open must be larger than max_connections")
        if tls is not None:
            if tls.protocol != ssl.PROTOCOL_TLS_SERVER:
                raise ValueError("tls must be a server-side context (ssl.PROTOCOL_TLS_SERVER)")
            if tls.minimum_version not in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                raise ValueError("tls must require TLS 1.2 or later (minimum_version)")
            tls.sslobject_class = _reporting_handshake_failures(self._handshake_failed)
        self._tls = tls
        self._client_certs = tls is not None and tls.verify_mode != ssl.CERT_NONE
        self._expected = check_listener_auth(
            listen=listen,
            key="api.metrics_listen",
            what="metrics endpoint",
            token=token,
            client_certs=self._client_certs,
            encrypted=tls is not None,
            logger=log,
        )
        self._handshake_failures = 0
        self._listen = listen
        self._collect = collect
        self._health = health
        self._ready = ready
        self._timeout_s = request_timeout_s
        self._max_request_bytes = max_request_bytes
        self._max_connections = max_connections
        self._max_open = max_open
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[object], asyncio.StreamWriter] = {}
        self._idle: dict[asyncio.Task[object], asyncio.StreamWriter] = {}
        """Open connections not being answered (reading a request, or lingering), oldest first."""
        self.dropped_idle = 0
        """Idle connections dropped to make room for new ones (see ``max_open``)."""
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
                self._serve,
                host,
                port,
                limit=self._max_request_bytes,
                ssl=self._tls,
                # Without these a client that stalls the handshake or the closing exchange holds
                # its socket for asyncio's defaults (60 s and 30 s).
                ssl_handshake_timeout=self._timeout_s if self._tls else None,
                ssl_shutdown_timeout=self._timeout_s if self._tls else None,
            )
        except OSError as exc:
            raise GatewayError(f"metrics endpoint cannot listen on {self._listen}: {exc}") from exc
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        security = [
            "HTTPS" if self._tls is not None else "plain HTTP",
            *(["client certificates for /metrics"] if self._client_certs else []),
            *(["bearer token for /metrics"] if self._expected is not None else []),
        ]
        log.info(
            "metrics endpoint listening on %s (port %d, %s)",
            self._listen,
            self.port,
            ", ".join(security),
        )
        return self.port

    @property
    def handshake_failures(self) -> int:
        """TLS handshakes that failed since construction (plain HTTP, untrusted certificates)."""
        return self._handshake_failures

    def _handshake_failed(self, exc: ssl.SSLError) -> None:
        """One line per failed handshake: INFO the first time, DEBUG after (a scraper with the
        wrong scheme or CA retries at every interval). The connection is closed by asyncio."""
        self._handshake_failures += 1
        reason = _PLAIN_HTTP_HINT.get(exc.reason or "", str(exc))
        if self._handshake_failures == 1:
            log.info(
                "metrics endpoint: a TLS handshake failed, connection closed: %s (further "
                "failures are logged at DEBUG level)",
                reason,
            )
        else:
            log.debug("metrics endpoint: a TLS handshake failed, connection closed: %s", reason)

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
            if len(self._connections) >= self._max_open:
                self._drop_oldest_idle()
            self._connections[task] = writer
            self._idle[task] = writer
        try:
            response, head = await self._answer(reader, writer, task)
            await self._send(writer, response, head=head)
            if task is not None:
                self._idle[task] = writer
            await _linger(reader, writer)
        except (OSError, TimeoutError) as exc:
            # The client left (a reset, or gone before the half-close: ENOTCONN), does not read
            # what we send, or broke the TLS session (ssl.SSLError is an OSError).
            log.debug("metrics endpoint: connection dropped: %r", exc)
            writer.transport.abort()
        except Exception:  # the top of a connection's task: log it, keep serving others
            log.exception("metrics endpoint: request failed")
            writer.transport.abort()
        finally:
            writer.close()
            if task is not None:
                self._connections.pop(task, None)
                self._idle.pop(task, None)

    def _drop_oldest_idle(self) -> None:
        """Make room for a new connection: abort the oldest one that is only waiting."""
        for task, writer in self._idle.items():
            del self._idle[task]
            writer.transport.abort()
            self.dropped_idle += 1
            if self.dropped_idle == 1:
                log.warning(
                    "metrics endpoint: %d connections are open, the most it keeps; dropping the "
                    "oldest idle one for each new one (logged once)",
                    self._max_open,
                )
            return

    async def _send(self, writer: asyncio.StreamWriter, response: _Response, *, head: bool) -> None:
        writer.write(response.encode(head=head))
        async with asyncio.timeout(self._timeout_s):
            await writer.drain()

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        task: asyncio.Task[object] | None,
    ) -> tuple[_Response, bool]:
        try:
            async with asyncio.timeout(self._timeout_s):
                request = await _read_request(reader, self._max_request_bytes)
        except TimeoutError:
            return _plain(408, "request timeout"), False
        except _BadRequest as exc:
            return _plain(exc.status, str(exc)), False
        if task is not None:
            self._idle.pop(task, None)  # being answered: not to be dropped
        head = request.method == b"HEAD"
        if request.path not in (b"/metrics", b"/healthz", b"/readyz"):
            return _plain(404, "not found"), head
        if request.method not in (b"GET", b"HEAD"):
            return _plain(405, "method not allowed", ("Allow", "GET, HEAD")), False
        if request.path == b"/healthz":  # liveness: never waits for a slot, never refused
            return (_plain(200, "ok") if self._healthy() else _plain(503, "unhealthy")), head
        if self._active >= self._max_connections:
            return _plain(503, "too many connections"), head
        self._active += 1
        try:
            return await self._answer_slotted(request, writer), head
        finally:
            self._active -= 1

    async def _answer_slotted(self, request: _Request, writer: asyncio.StreamWriter) -> _Response:
        """``/readyz`` and ``/metrics``, within the ``max_connections`` slots."""
        if request.path == b"/readyz":
            reason = self._not_ready()
            return _plain(200, "ready") if reason is None else _plain(503, reason)
        # With CERT_OPTIONAL a certificate that was presented has been verified (else the
        # handshake failed); none gives None, and CERT_NONE contexts give {}.
        if self._client_certs and not writer.get_extra_info("peercert"):
            self._refuse(writer, "no client certificate")
            return _plain(403, "client certificate required")
        if self._expected is not None and not bearer_matches(self._expected, request.authorization):
            reason = "no bearer token" if request.authorization is None else "wrong bearer token"
            self._refuse(writer, reason)
            return _plain(401, "unauthorized", ("WWW-Authenticate", 'Bearer realm="dockwatch"'))
        return await self._metrics()

    def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        peer = writer.get_extra_info("peername")
        self._refusals.refused(
            f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer), reason
        )

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
