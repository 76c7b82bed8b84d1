"""The authentication rules of the gateway's listeners, shared by the gRPC API and the HTTP
listener (metrics, probes, the operator console): which addresses count as loopback, the bearer
token's form and its constant-time comparison, and :func:`check_listener_auth`, the rule that no
listener serves without authentication (a token or client certificates) off loopback. Refused
calls and bad requests are logged as state changes, never one line per call.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from dockwatch_core.errors import ConfigError

REFUSAL_LOG_EVERY_S = 60.0
"""At most one log line per this many seconds about refused (unauthenticated) calls."""
INVALID_LOG_EVERY_S = 60.0
"""At most one log line per client (host) per this many seconds about invalid requests."""
INVALID_LOG_CLIENTS_MAX = 1024
"""Clients whose last invalid request is remembered (the oldest is forgotten beyond)."""


def listen_host(listen: str) -> str:
    """The host part of ``host:port`` / ``[v6]:port`` (port 0 allowed); ValueError if malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be 'host:port', got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    if ":" in host:
        raise ValueError(f"an IPv6 address must be in brackets, got {listen!r}")
    return host


def is_loopback_listen(listen: str) -> bool:
    """Whether ``listen`` binds only loopback. Host names other than ``localhost`` are not
    resolved and count as non-loopback (they could resolve to anything later)."""
    host = listen_host(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(token: str | None, key: str) -> bytes | None:
    """The token as bytes for :func:`bearer_matches`; ConfigError if it cannot be a bearer token."""
    if token is None:
        return None
    if not token or token != token.strip() or any(c.isspace() for c in token):
        raise ConfigError(f"{key}: the API token must be non-empty and contain no blanks")
    if not token.isascii() or not token.isprintable():
        raise ConfigError(f"{key}: the API token must be printable ASCII")
    return token.encode("ascii")


def bearer_matches(expected: bytes, header: str | bytes | None) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <expected>`` (scheme case-insensitive).

    The token comparison takes the same time wherever the first difference is.
    """
    if header is None:
        return False
    raw = header if isinstance(header, bytes) else header.encode("utf-8", "replace")
    scheme, _, credentials = raw.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), expected)


class RefusalLog:
    """Logs refused calls as state changes: one line, then a count at most every ``every_s``."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        every_s: float = REFUSAL_LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0
        self.total = 0

    def refused(self, peer: str, reason: str) -> None:
        self.total += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._every_s:
            self._suppressed += 1
            return
        self._log.warning(
            "%s refused a call from %s: %s (%d more refused since the last report; "
            "next report in %.0f s at the earliest)",
            self._what,
            peer,
            reason,
            self._suppressed,
            self._every_s,
        )
        self._last = now
        self._suppressed = 0


def client_host(peer: str) -> str:
    """The host of a gRPC peer (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``, ``unix:...``): one
    client however many connections it opens."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, sep, _port = rest.rpartition(":")
        return host if sep else rest
    return peer


class PerClientLog:
    """Logs a kind of bad request at most once per client per ``every_s``, with a count of the
    ones not logged; remembers at most ``max_clients`` clients (the oldest are forgotten)."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        every_s: float = INVALID_LOG_EVERY_S,
        max_clients: int = INVALID_LOG_CLIENTS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._every_s = every_s
        self._max_clients = max_clients
        self._clock = clock
        self._clients: OrderedDict[str, list[float]] = OrderedDict()  # host -> [last, suppressed]
        self.total = 0

    def report(self, peer: str, reason: str) -> None:
        self.total += 1
        host = client_host(peer)
        now = self._clock()
        entry = self._clients.get(host)
        if entry is not None and now - entry[0] < self._every_s:
            entry[1] += 1
            return
        suppressed = 0 if entry is None else int(entry[1])
        self._clients[host] = [now, 0]
        self._clients.move_to_end(host)
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)
        self._log.warning(
            "%s from %s: %s (%d more from this client since its last report; next report in "
            "%.0f s at the earliest)",
            self._what,
            host,
            reason,
            suppressed,
            self._every_s,
        )


def check_listener_auth(
    *,
    listen: str,
    key: str,
    what: str,
    token: str | None,
    client_certs: bool,
    encrypted: bool,
    logger: logging.Logger,
) -> bytes | None:
    """The rules every authenticated listener of the gateway applies (the gRPC API and the
    metrics endpoint); returns the expected token (:func:`check_token`).

    ConfigError for an unusable token, or for an unauthenticated service (no token, no client
    certificates) on a non-loopback address. Warnings, once: an unauthenticated service on
    loopback (fine for a bench, worth saying), and a token that travels unencrypted off loopback.
    """
    expected = check_token(token, "api.token")
    try:
        loopback = is_loopback_listen(listen)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    if expected is None and not client_certs:
        if not loopback:
            raise ConfigError(
                f"{key}: refusing to serve the {what} without authentication on {listen!r}, a "
                "non-loopback address: configure a token (api.token_file or api.token_env)"
                " or client certificates (api.tls.client_ca_file), or listen on 127.0.0.1"
            )
        logger.warning(
            "%s on %s requires no authentication: it listens on loopback only, so only local "
            "processes can reach it",
            what,
            listen,
        )
    if expected is not None and not encrypted and not loopback:
        logger.warning(
            "%s on %s: the bearer token travels unencrypted (no api.tls); anyone on the path "
            "can read it",
            what,
            listen,
        )
    return expected
