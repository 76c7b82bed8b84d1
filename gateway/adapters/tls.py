"""TLS on device links (LLRP readers, Modbus/TCP transmitters): contexts, failures in plain words.

Both device protocols have a secure variant that is the plain protocol inside TLS: LLRP over TLS
(IANA ``encrypted-llrp``, port 5085) and Modbus/TCP Security (IANA ``mbap-s``, port 802). Most
site devices stay on plain TCP, so TLS is chosen per device.

* :func:`client_context` builds the gateway's side from the ``tls:`` keys of a reader or shelf:
  the device's certificate is verified against ``ca_file`` (the system trust store without it),
  its host name is checked unless ``insecure`` (the chain is verified all the same: for a
  device's self-signed certificate, give that certificate as ``ca_file``), and a client
  certificate is presented when the device requires one.
* :func:`server_context` builds the device's side, for the simulators.
* :func:`describe_tls_error` turns an ``ssl`` exception into one line an operator can act on
  (untrusted certificate, host name mismatch, a plain port, a refused client certificate).
* asyncio (and uvloop) swallow the reason of a failed handshake when a library such as pymodbus
  only reports "not connected": :func:`report_handshake_failures` makes a context's connections
  record it, and :func:`handshake_failures` collects what the connections opened inside it
  recorded (a ``ContextVar``, so concurrent connections of other tasks do not mix).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Final

from dockwatch_core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "client_context",
    "describe_tls_error",
    "handshake_failures",
    "report_handshake_failures",
    "server_context",
]

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH: Final = frozenset({62, 64})
# Reasons OpenSSL gives when the bytes that came back are not TLS at all.
_NOT_TLS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)

_FAILURES: Final[ContextVar[list[ssl.SSLError] | None]] = ContextVar(
    "dockwatch_tls_handshake_failures", default=None
)


def warn_cleartext(key: str, host: str, what: str) -> None:
    """A secret sent without TLS: fine on loopback, worth one warning anywhere else."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    if host == "localhost":
        return
    log.warning("%s: %s goes to %s without TLS; configure tls to protect it", key, what, host)


def client_context(
    *,
    ca_file: Path | str | None,
    cert_file: Path | str | None,
    key_file: Path | str | None,
    check_hostname: bool = True,
    key: str = "tls",
) -> ssl.SSLContext:
    """The gateway's TLS context towards one device (TLS 1.2 or later).

    Raises:
        ConfigError: a file cannot be loaded (the message starts with ``key``, the config path).
    """
    if (cert_file is None) != (key_file is None):
        raise ConfigError(f"{key}: cert_file and key_file go together")
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
        if cert_file is not None and key_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"{key}: cannot load the certificates: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    return context


def server_context(
    cert_file: Path | str, key_file: Path | str, client_ca_file: Path | str | None = None
) -> ssl.SSLContext:
    """A device's TLS context: its certificate, and client certificates required when
    ``client_ca_file`` is given (only that CA is trusted for them).

    Raises:
        ConfigError: a file cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
        if client_ca_file is not None:
            context.load_verify_locations(cafile=str(client_ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the TLS certificates: {exc}") from exc
    return context


def server_context_from_flags(
    cert_file: Path | str | None,
    key_file: Path | str | None,
    client_ca_file: Path | str | None = None,
) -> ssl.SSLContext | None:
    """The server context a simulator's ``--tls-cert/--tls-key/--tls-client-ca`` ask for (None:
    plain TCP). ValueError for a combination that makes no sense; ConfigError for a file that
    cannot be loaded."""
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert_file is None or key_file is None:
        raise ValueError("--tls-cert and --tls-key go together")
    return server_context(cert_file, key_file, client_ca_file)


def describe_tls_error(exc: BaseException, *, peer: str = "device") -> str:
    """One line saying why a TLS connection to the ``peer`` failed, and what to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or exc.reason or str(exc)
        if exc.verify_code in _NAME_MISMATCH:
            return (
                f"the {peer}'s certificate does not name the host it was reached by: {message} "
                "(tls.insecure skips this check)"
            )
        return (
            f"the {peer}'s certificate is not trusted: {message} "
            "(is tls.ca_file the CA that issued it?)"
        )
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return f"the {peer} closed the connection during the TLS handshake"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _NOT_TLS:
            return f"the {peer} does not answer in TLS ({reason}): is this a plain TCP port?"
        if "ALERT" in reason:
            alert = reason.split("ALERT_", 1)[-1].replace("_", " ").lower()
            return (
                f"the {peer} refused the TLS connection: {alert} "
                "(if it requires a client certificate: tls.cert_file and tls.key_file)"
            )
        return f"TLS error: {reason or exc}"
    if isinstance(exc, TimeoutError):
        return f"the {peer} did not complete the TLS handshake in time"
    if isinstance(exc, ConnectionResetError):
        return f"the {peer} reset the connection during the TLS handshake"
    return str(exc) or type(exc).__name__


class _ReportingSSLObject(ssl.SSLObject):
    """An SSLObject whose failed handshake is recorded in :func:`handshake_failures`."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise  # not a failure: the handshake waits for the network
        except ssl.SSLError as exc:
            failures = _FAILURES.get()
            if failures is not None:
                failures.append(exc)
            raise


def report_handshake_failures(context: ssl.SSLContext) -> None:
    """Make the asyncio connections of ``context`` record why their handshake failed.

    Sets the context's ``sslobject_class`` unless the caller set one of their own (then nothing
    is recorded). Only memory-BIO connections (asyncio's and uvloop's) use that class.
    """
    if context.sslobject_class is ssl.SSLObject:
        context.sslobject_class = _ReportingSSLObject


@contextlib.contextmanager
def handshake_failures() -> Iterator[list[ssl.SSLError]]:
    """Collect the handshake failures of the connections opened inside the ``with`` block.

    The connection's callbacks run in a copy of the context it was opened in, so what they
    record lands in this block's list, not in another task's.
    """
    failures: list[ssl.SSLError] = []
    token = _FAILURES.set(failures)
    try:
        yield failures
    finally:
        _FAILURES.reset(token)
