"""The gateway's HTTP listener: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``, and the routes
of whatever else shares it (the operator console), on :mod:`aiohttp.web`.

Theory of operation
-------------------
An :class:`aiohttp.web.Application` run by an :class:`~aiohttp.web.AppRunner` inside the
gateway's loop. aiohttp parses HTTP; this module adds the rules a gateway's listener needs and
aiohttp leaves to the deployment, and treats every byte as hostile:

- one request per connection: every response carries ``Connection: close`` (a scrape every
  15 s gains nothing from keep-alive; a browser opens a few connections per page);
- each connection passes through a small guard (:class:`_Guard`) between the transport and
  aiohttp's protocol: the request line and headers must arrive within ``request_timeout_s``
  (else 408) and fit in ``max_request_bytes`` and ``MAX_HEADER_LINES`` lines (else 431); a
  request line that is not ``METHOD SP target SP HTTP/1.x`` with an ASCII target, or a request
  cut short by the client, is a 400 (aiohttp answers 400 to every other malformed request);
- liveness never waits for a slot: ``/healthz`` is answered whatever else is going on (a probe
  that sees 503 restarts a healthy process); ``/metrics``, ``/readyz`` and the console's pages
  are answered for at most ``max_connections`` requests at once, more get an immediate 503 ``too
  many connections``. A connection takes a slot only while its handler runs: idle connections
  and long-lived event streams take none (the console caps its streams itself);
- at most ``max_open`` connections are open at once; one more makes the listener drop the oldest
  connection that is idle (still sending its request, or closing after its answer), so idle
  connections can never lock out a probe;
- aiohttp closes after the answer with a "lingering close" (it discards what the client still
  sends for a while), so that closing with unread input cannot reset the answer on its way.

``/metrics`` goes through :mod:`prometheus_client`: ``collect()`` (a plain or async callable)
returns ``{name: (type, help, value)}`` at scrape time and :class:`SamplesCollector` turns it
into metric families for ``generate_latest``. A name may carry labels
(``dockwatch_sink_lag{sink="mqtt"}``, see :func:`labelled`); samples are grouped into families
by the name before ``{`` (a counter's name ends in ``_total``), families and samples sorted by
name. A ``summary`` is given as its ``X_sum`` and ``X_count`` samples (and optionally
``X{quantile="..."}``), which all belong to family ``X``. A ``collect`` that raises answers 500,
and is logged once when it starts failing and once when it recovers, not at every scrape.

``/healthz`` (liveness) answers 200 ``ok``, or 503 ``unhealthy`` when the optional ``health()``
says so. ``/readyz`` (readiness) answers 200 ``ready``, or 503 with the one-line reason the
optional ``ready()`` returns (without ``ready()`` it follows ``health()``). Neither needs the
token nor a client certificate even when they are configured: they say "alive" and "ready or why
not", and container health checks (Docker's ``HEALTHCHECK``, a kubelet's ``httpGet`` probe) have
neither secrets nor client certificates.

TLS (optional, ``tls``: a server-side :class:`ssl.SSLContext`, TLS 1.2 or later, built from
``api.tls`` by :func:`server_tls_context`): the endpoint then speaks HTTPS only. The handshake is
the loop's, bounded by ``request_timeout_s`` (a client that never finishes it is cut off then); a
handshake that fails (a plain-HTTP client, a client that does not trust the certificate, a
client certificate the CA did not sign) closes that connection and logs one line (INFO for the
first since start, DEBUG after: a misconfigured scraper retries every 15 s), and the listener
keeps serving. When the context verifies clients (``api.tls.client_ca_file``), client
certificates are OPTIONAL at the handshake, so that probes still reach ``/healthz`` and
``/readyz``, and REQUIRED for every other path (403 without one); a certificate that is
presented must be valid, or the handshake fails.

Every path but the probes follows the rules of the gRPC API (:func:`authorized`): every
configured mechanism applies (a bearer token: ``Authorization: Bearer <token>``, or for a
browser the same token in the ``dockwatch_token`` cookie the console's sign-in sets, 401
otherwise; client certificates: 403 without one), and an endpoint with neither may only listen
on loopback (:class:`ConfigError` otherwise; TLS alone encrypts but admits anyone). A token on a
non-loopback address without TLS is accepted with one warning: it travels in clear.

Defaults: ``request_timeout_s=5``, ``max_request_bytes=8192``, ``max_connections=16``,
``max_open=256``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from dockwatch_core.errors import ConfigError, GatewayError
from gateway.adapters.auth import (
    RefusalLog,
    bearer_matches,
    check_listener_auth,
    listen_host,
)

__all__ = [
    "CONTENT_TYPE",
    "TOKEN_COOKIE",
    "Collector",
    "MetricsServer",
    "Sample",
    "Samples",
    "SamplesCollector",
    "labelled",
    "plain",
    "render",
    "server_tls_context",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What ``generate_latest`` writes (prometheus_client's ``CONTENT_TYPE_PLAIN_0_0_4``)."""
METRIC_TYPES = frozenset({"counter", "gauge", "summary", "untyped"})
_CLIENT_TYPES = {"counter": "counter", "gauge": "gauge", "summary": "summary", "untyped": "unknown"}
_SUMMARY_SUFFIXES = ("_sum", "_count")
MAX_HEADER_LINES = 100
LINGER_S = 1.0
"""After answering, aiohttp discards what the client still sends for at most this long."""
TOKEN_COOKIE: Final = "dockwatch_token"  # noqa: S105 (a cookie name, not a secret)
"""The cookie a browser carries the API token in (set by the console's sign-in form)."""
PROBES: Final = frozenset({"/healthz", "/readyz"})

Sample = tuple[str, str, float]
"""(type, help, value): type is ``counter``, ``gauge``, ``summary`` or ``untyped``."""
Samples = Mapping[str, Sample]
Collector = Callable[[], Samples | Awaitable[Samples]]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_ONE_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)",?')
_SAMPLE_NAME = re.compile(rf"({_NAME})(?:\{{((?:{_LABEL}(?:,{_LABEL})*)?)\}})?")
_QUANTILE_LABEL = re.compile(r'[{,]quantile="')
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/1\.[01]\r")


# --- the text format, through prometheus_client ----------------------------------------------


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


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def _labels(text: str | None) -> dict[str, str]:
    return {m.group(1): _unescape(m.group(2)) for m in _ONE_LABEL.finditer(text or "")}


@dataclass(slots=True)
class _Family:
    type: str
    help: str
    samples: list[tuple[str, str, dict[str, str], float]] = field(default_factory=list)
    """(the sample as given, its name, its labels, its value)."""


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


def _families(samples: Samples) -> dict[str, _Family]:
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
        if kind == "counter" and not family_name.endswith("_total"):
            raise ValueError(f"{name}: a counter's name ends in _total")
        family.samples.append((name, match.group(1), _labels(match.group(2)), float(value)))
    return families


class SamplesCollector:
    """A prometheus_client collector over ``{name: (type, help, value)}``: ``source`` is called
    at every ``collect()`` (a scrape), so the families are the gateway's state at that moment."""

    def __init__(self, source: Callable[[], Samples]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        families = _families(self._source())
        for family_name in sorted(families):
            family = families[family_name]
            # prometheus_client names a counter's family without ``_total`` and adds it back.
            metric_name = (
                family_name.removesuffix("_total") if family.type == "counter" else family_name
            )
            metric = Metric(metric_name, family.help, _CLIENT_TYPES[family.type])
            for _, sample_name, labels, value in sorted(family.samples, key=lambda s: s[0]):
                metric.add_sample(sample_name, labels, value)
            yield metric


def render(samples: Samples) -> str:
    """The samples in the Prometheus text format; ValueError for an invalid name or type, a
    summary sample that is not ``X_sum``/``X_count``/``X{quantile=...}``, a counter not named
    ``X_total``, or two samples of one family that disagree on the type."""
    return generate_latest(SamplesCollector(lambda: samples)).decode("utf-8")


# --- HTTP ------------------------------------------------------------------------------------

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


def _raw_answer(status: int, text: str) -> bytes:
    """An answer written by the guard itself, before aiohttp has a request to answer."""
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
    )
    return head.encode("ascii") + body


def plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """A one-line ``text/plain`` answer (the probes', the errors')."""
    return web.Response(
        status=status, text=text + "\n", headers={"Cache-Control": "no-store", **(headers or {})}
    )


_HEAD_END = re.compile(rb"\r?\n\r?\n")


class _Guard(asyncio.Protocol):
    """One connection, between the transport and aiohttp's protocol: the request deadline and
    size limits of the module docstring, and which connections are idle (for ``max_open``)."""

    def __init__(self, server: MetricsServer, inner: asyncio.Protocol) -> None:
        self._server = server
        self._inner = inner
        self._head = b""
        self.state = "reading"
        """``reading`` its request, ``answering`` (a handler runs) or ``answered``."""
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        return self.state != "answering"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self._server._opened(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._server._timeout_s, self._expired)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.state == "reading":
            refusal = self._check(data)
            if refusal is not None:
                self._refuse(*refusal)
                return
        self._inner.data_received(data)

    def _check(self, data: bytes) -> tuple[int, str] | None:
        limit = self._server._max_request_bytes
        head = (self._head + data)[: limit + 1]
        stripped = head.lstrip(b"\r\n")  # RFC 9112: ignore empty lines before the request line
        end = _HEAD_END.search(stripped)
        fields = stripped if end is None else stripped[: end.start()]
        first, newline, _ = stripped.partition(b"\n")
        if (newline or end is not None) and not _REQUEST_LINE.fullmatch(first):
            return 400, "malformed request line"
        if fields.count(b"\n") > MAX_HEADER_LINES or (end is None and len(head) > limit):
            return 431, "request headers too large"
        lines = fields.split(b"\n")[1:]
        if end is None:
            lines = lines[:-1]  # the last one may still be arriving
        for line in lines:
            name, colon, _ = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                return 400, "malformed header"
        if end is not None and b" HTTP/1.1" in first:
            names = {line.partition(b":")[0].lower() for line in lines}
            if b"host" not in names:  # RFC 9112 3.2; aiohttp would log a traceback
                return 400, "missing Host header"
        self._head = head
        if end is not None:
            self.state = "received"
        return None

    def _refuse(self, status: int, text: str) -> None:
        self.state = "answered"
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_raw_answer(status, text))
            self.transport.close()

    def _expired(self) -> None:
        if self.state in ("reading", "received"):
            self._refuse(408, "request timeout")

    def eof_received(self) -> bool | None:
        if self.state == "reading" and self._head:
            self._refuse(400, "incomplete request")
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._server._closed(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _ClientFaultsAtDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, with the malformed requests it refuses (400, already answered)
    at DEBUG: any client could otherwise write a traceback into the gateway's log at will.
    Anything else it reports (a handler that raised: a bug) stays an error."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info"), HttpProcessingError):
            self.logger.debug(msg, *args, **kwargs)
        else:
            kwargs.setdefault("exc_info", True)
            self.logger.error(msg, *args, **kwargs)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Setup = Callable[[web.Application], None]


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
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``listen`` (``host:port``; port 0 picks one),
    and the routes ``setup`` adds to the application (the operator console).

    ``collect`` returns ``{name: (type, help, value)}`` (it may be async; it runs on the event
    loop, so it must not block: read the store through a worker thread). ``health`` (optional)
    returns whether the process is alive and well; ``ready`` (optional) returns None when the
    gateway is ready to do its job, else the reason it is not (one line, sent to unauthenticated
    clients: no secrets). Both run on the event loop and must not block.

    ``public`` paths (and paths under ``public_prefixes``) need neither token nor client
    certificate (the console's sign-in page and its static files); ``streams`` are long-lived
    answers (Server-Sent Events) that take no ``max_connections`` slot.

    ``tls`` (optional) is a server-side context (:func:`server_tls_context`); the server sets its
    ``sslobject_class`` to log failed handshakes, so give each server its own. A context that
    verifies clients (``verify_mode`` not ``CERT_NONE``) makes every path but the probes require
    a verified client certificate. Raises :class:`ConfigError` at construction for a
    non-loopback ``listen`` with neither ``token`` nor client certificates, ValueError for a
    context that is not a server one or allows less than TLS 1.2.
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
        setup: Setup | None = None,
        public: Iterable[str] = (),
        public_prefixes: Sequence[str] = (),
        streams: Iterable[str] = (),
        request_timeout_s: float = 5.0,
        max_request_bytes: int = 8192,
        max_connections: int = 16,
        max_open: int = 256,
        max_body_bytes: int = 1 << 20,
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
        self._setup = setup
        self._public = frozenset(public) | PROBES
        self._public_prefixes = tuple(public_prefixes)
        self._streams = frozenset(streams)
        self._timeout_s = request_timeout_s
        self._max_request_bytes = max_request_bytes
        self._max_connections = max_connections
        self._max_open = max_open
        self._max_body_bytes = max_body_bytes
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._open: dict[_Guard, None] = {}
        """Open connections, oldest first."""
        self._by_transport: dict[asyncio.BaseTransport, _Guard] = {}
        self.dropped_idle = 0
        """Idle connections dropped to make room for new ones (see ``max_open``)."""
        self._active = 0
        self._collect_ok = True
        self._refusals = RefusalLog(log, "metrics endpoint")
        self.port = 0
        """The bound port, once started (the first socket's, if the host has several)."""

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    def _application(self) -> web.Application:
        app = web.Application(middlewares=[self._guarded], client_max_size=self._max_body_bytes)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._setup is not None:
            self._setup(app)
        app.on_response_prepare.append(_close_after)
        return app

    async def start(self) -> int:
        """Bind and serve; returns the bound port. GatewayError when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("the metrics server is already started")
        host = listen_host(self._listen)
        port = int(self._listen.rpartition(":")[2])
        runner = web.AppRunner(
            self._application(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self._timeout_s,
            max_line_size=self._max_request_bytes,
            max_field_size=self._max_request_bytes,
            lingering_time=LINGER_S,
            logger=_ClientFaultsAtDebug(logging.getLogger(f"{__name__}.http")),
        )
        await runner.setup()
        handlers = runner.server
        assert handlers is not None  # set by setup()
        loop = asyncio.get_running_loop()
        try:
            # aiohttp's TCPSite with a guard between each transport and aiohttp's protocol.
            server = await loop.create_server(
                lambda: _Guard(self, handlers()),
                host,
                port,
                ssl=self._tls,
                # Without these a client that stalls the handshake or the closing exchange holds
                # its socket for the loop's defaults (60 s and 30 s).
                ssl_handshake_timeout=self._timeout_s if self._tls else None,
                ssl_shutdown_timeout=self._timeout_s if self._tls else None,
            )
        except OSError as exc:
            await runner.cleanup()
            raise GatewayError(f"metrics endpoint cannot listen on {self._listen}: {exc}") from exc
        self._server, self._runner = server, runner
        self.port = int(server.sockets[0].getsockname()[1])
        security = [
            "HTTPS" if self._tls is not None else "plain HTTP",
            *(["client certificates"] if self._client_certs else []),
            *(["bearer token"] if self._expected is not None else []),
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
        wrong scheme or CA retries at every interval). The connection is closed by the loop."""
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
        runner, self._runner = self._runner, None
        if server is None:
            return
        server.close()
        for guard in list(self._open):
            guard.abort()
        if runner is not None:
            await runner.cleanup()  # its on_shutdown ends the console's streams
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

    # --- connections -------------------------------------------------------------------------

    def _opened(self, guard: _Guard) -> None:
        if self._server is None:  # accepted just before stop(): nobody would ever close it
            guard.abort()
            return
        if len(self._open) >= self._max_open:
            self._drop_oldest_idle()
        self._open[guard] = None
        if guard.transport is not None:
            self._by_transport[guard.transport] = guard

    def _closed(self, guard: _Guard) -> None:
        self._open.pop(guard, None)
        if guard.transport is not None:
            self._by_transport.pop(guard.transport, None)

    def _drop_oldest_idle(self) -> None:
        """Make room for a new connection: abort the oldest one that is only waiting."""
        for guard in self._open:
            if guard.idle:
                self._closed(guard)
                guard.abort()
                self.dropped_idle += 1
                if self.dropped_idle == 1:
                    log.warning(
                        "metrics endpoint: %d connections are open, the most it keeps; dropping "
                        "the oldest idle one for each new one (logged once)",
                        self._max_open,
                    )
                return

    # --- requests ----------------------------------------------------------------------------

    @web.middleware
    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = self._by_transport.get(request.transport) if request.transport else None
        if guard is not None:
            guard.state = "answering"
        try:
            return await self._answer(request, handler)
        except web.HTTPException as exc:  # the router's 404 and 405, a handler's refusal
            headers = {}
            if "Allow" in exc.headers:
                headers["Allow"] = ", ".join(sorted(exc.headers["Allow"].split(",")))
            return plain(exc.status, (exc.reason or "error").lower(), headers)
        finally:
            if guard is not None:
                guard.state = "answered"

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/healthz" or request.match_info.http_exception is not None:
            return await handler(request)  # liveness never waits for a slot; 404 and 405
        if path in self._streams:
            return self._refusal(request) or await handler(request)
        if self._active >= self._max_connections:
            return plain(503, "too many connections")
        self._active += 1
        try:
            return self._refusal(request) or await handler(request)
        finally:
            self._active -= 1

    def _refusal(self, request: web.Request) -> web.Response | None:
        """None when the request may go on, else the answer (the rules of the gRPC API)."""
        path = request.path
        if path in self._public or path.startswith(self._public_prefixes):
            return None
        return self.refusal(request)

    def refusal(self, request: web.Request) -> web.Response | None:
        """None when ``request`` carries what the listener requires (a client certificate, the
        token in the ``Authorization`` header or the ``dockwatch_token`` cookie), else the
        401/403 answer; refusals are logged as state changes (:class:`RefusalLog`)."""
        # With CERT_OPTIONAL a certificate that was presented has been verified (else the
        # handshake failed); none gives None, and CERT_NONE contexts give {}.
        if self._client_certs and not request.get_extra_info("peercert"):
            self._refuse(request, "no client certificate")
            return plain(403, "client certificate required")
        if self._expected is None:
            return None
        header = request.headers.get("Authorization")
        cookie = request.cookies.get(TOKEN_COOKIE)
        if bearer_matches(self._expected, header) or (
            cookie is not None and bearer_matches(self._expected, "Bearer " + cookie)
        ):
            return None
        self._refuse(request, "no bearer token" if header is None else "wrong bearer token")
        challenge = {"WWW-Authenticate": 'Bearer realm="dockwatch"'}
        if "/login" in self._public and "text/html" in request.headers.get("Accept", ""):
            # A browser: a page that leads to the console's sign-in form.
            return web.Response(
                status=401,
                text=_SIGN_IN_FIRST,
                content_type="text/html",
                headers={**challenge, "Cache-Control": "no-store"},
            )
        return plain(401, "unauthorized", challenge)

    def _refuse(self, request: web.Request, reason: str) -> None:
        peer = request.get_extra_info("peername")
        self._refusals.refused(
            f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer), reason
        )

    def _healthy(self) -> bool:
        return self._health is None or self._health()

    async def _healthz(self, request: web.Request) -> web.Response:
        return plain(200, "ok") if self._healthy() else plain(503, "unhealthy")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready is not None:
            reason = self._ready()
        else:
            reason = None if self._healthy() else "unhealthy"
        if reason is None:
            return plain(200, "ready")
        return plain(503, " ".join(reason.split()) or "not ready")

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self._timeout_s):
                result = self._collect()
                samples = await result if inspect.isawaitable(result) else result
            body = generate_latest(SamplesCollector(lambda: samples))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken collector must not take the endpoint down
            if self._collect_ok:
                self._collect_ok = False
                log.exception("metrics endpoint: collecting the metrics failed")
            else:
                log.debug("metrics endpoint: collecting still fails: %s", exc)
            return plain(500, "collecting the metrics failed")
        if not self._collect_ok:
            self._collect_ok = True
            log.info("metrics endpoint: collecting works again")
        return web.Response(
            body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
        )


_SIGN_IN_FIRST = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>'
    '<body><p>This gateway requires its API token. <a href="/login">Sign in</a></p></body></html>\n'
)


async def _close_after(request: web.Request, response: web.StreamResponse) -> None:
    """One request per connection (see the module docstring)."""
    response.force_close()
    response.headers["Connection"] = "close"
