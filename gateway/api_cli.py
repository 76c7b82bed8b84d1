"""``dockwatch stock`` and ``dockwatch movements``: command-line clients of a gateway's local API.

Both talk to the ``dockwatch.edge.v1.EdgeApi`` gRPC service of a running gateway (see
docs/api.md), so they work on the gateway's host or anywhere its API is reachable:

- ``dockwatch stock [--location L] [--sku S] [--json]``: the on-hand quantity per location and
  SKU (``GetStock``), a table ending with the ``as_of_seq`` the levels include.
- ``dockwatch movements [--after-seq N] [--limit N] [--follow] [--json]``: the stored movements
  after seq N, paged with ``ListMovements``; ``--follow`` then keeps printing new ones as they are
  committed (``WatchMovements`` from the last seq printed) until Ctrl-C, which ends it cleanly
  (exit 0).

``--json`` prints the MQTT payloads (docs/mqtt.md), one JSON document per line, so scripts get
the same contract from the API as from the broker.

Where the API is: ``--api HOST:PORT``, else the ``api.grpc_listen`` of the config file
(``-c CONFIG``, else ``$DOCKWATCH_CONFIG`` when set; a wildcard address such as ``0.0.0.0`` is
reached through loopback), else ``127.0.0.1:50061``. The bearer token: ``--token-file``, else
``$DOCKWATCH_API_TOKEN``, else the config's ``api.token_file``/``api.token_env``. TLS:
``--ca-file`` (the CA that signed the gateway's certificate), or the system trust store when the
config enables ``api.tls`` and no CA is given; ``--cert-file``/``--key-file`` for mutual TLS.

Exit status: 0 done (or Ctrl-C while following), 1 the API could not be reached or refused the
call (one line on stderr naming the address and the reason), 2 a usage error (bad arguments,
unreadable token or certificate file, invalid config).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc

from dockwatch_core.errors import ConfigError, ProtocolError
from gateway.adapters.auth import listen_host
from gateway.adapters.proto_convert import movement_from_proto, stock_level_from_proto
from gateway.domain import payloads
from gateway.domain.views import RecordedView
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc, types_pb2

DEFAULT_API = "127.0.0.1:50061"
TOKEN_ENV = "DOCKWATCH_API_TOKEN"  # noqa: S105 - the variable name, not a token
EXIT_OK, EXIT_API, EXIT_USAGE = 0, 1, 2
PAGE_SIZE = 1000
"""Movements asked for per ListMovements call (the server answers at most 5000)."""
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_LOST = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
"""How a followed stream ends when the gateway stops (CANCELLED: it stopped before the watch
had started) or the connection is lost."""


class UsageError(Exception):
    """The command line (or a file it names) is unusable: exit 2."""


class ApiFailure(Exception):
    """The API was unreachable or refused the call: exit 1 with this one-line message."""


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to reach the API."""

    api: str
    token: str | None
    credentials: grpc.ChannelCredentials | None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self.token is None else (("authorization", f"Bearer {self.token}"),)

    def channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.api)
        return grpc.aio.secure_channel(self.api, self.credentials)


# --- command line ------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    command = parser.prog.rsplit(" ", 1)[-1]
    if command not in {"stock", "movements"}:
        raise ValueError(f"gateway.api_cli serves 'stock' and 'movements', not {command!r}")
    parser.set_defaults(api_command=command)
    if command == "stock":
        parser.add_argument("--location", help="only this location")
        parser.add_argument("--sku", help="only this SKU")
    else:
        parser.add_argument(
            "--after-seq",
            type=_non_negative,
            default=0,
            metavar="N",
            help="start after this seq (0: from the first stored movement)",
        )
        parser.add_argument(
            "--limit", type=_positive, metavar="N", help="stop after N movements (default: all)"
        )
        parser.add_argument(
            "--follow",
            "-f",
            action="store_true",
            help="after the stored movements, print new ones as they happen (Ctrl-C ends)",
        )
    parser.add_argument(
        "--json", action="store_true", help="one JSON document per line (the MQTT payloads)"
    )
    api = parser.add_argument_group("connection")
    api.add_argument(
        "--api",
        metavar="HOST:PORT",
        help=f"the gateway's gRPC API (default: api.grpc_listen of the config, else {DEFAULT_API})",
    )
    api.add_argument(
        "--config", "-c", type=Path, help="gateway config to take the address and token from"
    )
    api.add_argument(
        "--token-file", type=Path, help=f"file holding the bearer token (else ${TOKEN_ENV})"
    )
    api.add_argument("--ca-file", type=Path, help="CA certificate (PEM): speak TLS, trusting it")
    api.add_argument("--cert-file", type=Path, help="client certificate (PEM) for mutual TLS")
    api.add_argument("--key-file", type=Path, help="private key (PEM) of --cert-file")
    api.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="give up on a call after S seconds (10)",
    )


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(args: argparse.Namespace) -> int:
    name = f"dockwatch {args.api_command}"
    try:
        connection = connection_from_args(args, os.environ)
    except UsageError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.api_command == "stock":
            return asyncio.run(_run(print_stock(connection, args, sys.stdout)))
        return asyncio.run(_run(print_movements(connection, args, sys.stdout)))
    except ApiFailure as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_API
    except (KeyboardInterrupt, asyncio.CancelledError):
        return EXIT_OK  # Ctrl-C (or SIGTERM) while following: the user is done
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, without a second error at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


async def _run(work: Coroutine[object, object, int]) -> int:
    """Run ``work`` with SIGTERM cancelling it, as Ctrl-C (SIGINT) does under asyncio.run."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


# --- where the API is --------------------------------------------------------------------------


def connection_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Connection:
    """The address, token and TLS credentials the arguments, environment and config give."""
    config_path: Path | None = args.config
    if config_path is None and environ.get("DOCKWATCH_CONFIG"):
        config_path = Path(environ["DOCKWATCH_CONFIG"])
    config = None
    if config_path is not None:
        from gateway.config import load_config

        try:
            config = load_config(config_path, environ=environ).api
        except ConfigError as exc:
            raise UsageError(f"{config_path}: {exc}") from exc
    api = args.api
    if api is None:
        api = DEFAULT_API if config is None else _reachable(config.grpc_listen)
    try:
        listen_host(api)
    except ValueError as exc:
        raise UsageError(f"--api: {exc}") from exc

    token: str | None = None
    if args.token_file is not None:
        token = _read_text(args.token_file, "--token-file").strip()
        if not token:
            raise UsageError(f"--token-file: {args.token_file} is empty")
    elif environ.get(TOKEN_ENV):
        token = environ[TOKEN_ENV].strip()
    elif config is not None and config.token is not None:
        try:
            token = config.token.reveal(environ)
        except ConfigError as exc:
            raise UsageError(f"{config_path}: {exc}") from exc

    if (args.cert_file is None) != (args.key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    tls = args.ca_file is not None or args.cert_file is not None
    if tls or (config is not None and config.tls is not None):
        ca, key, cert = (
            None if path is None else _read_pem(path, option)
            for path, option in (
                (args.ca_file, "--ca-file"),
                (args.key_file, "--key-file"),
                (args.cert_file, "--cert-file"),
            )
        )
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
        return Connection(api, token, credentials)
    return Connection(api, token, None)


def _reachable(listen: str) -> str:
    """A listen address as an address to connect to: wildcards become loopback."""
    host = listen_host(listen)
    if host not in _WILDCARDS:
        return listen
    host, port = _WILDCARDS[host], listen.rpartition(":")[2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _read_text(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UsageError(f"{option}: cannot read {path}: {reason}") from exc


def _read_pem(path: Path, option: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{option}: cannot read {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN " not in data:
        raise UsageError(f"{option}: {path} is not a PEM file")
    return data


def _failure(exc: grpc.aio.AioRpcError, api: str) -> ApiFailure:
    code, details = exc.code(), exc.details() or ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ApiFailure(f"cannot reach the gateway API at {api}: {code.name}: {details}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ApiFailure(
            f"the gateway API at {api} refused the call: bad or missing bearer token "
            f"(give --token-file, ${TOKEN_ENV} or -c CONFIG)"
        )
    return ApiFailure(f"the gateway API at {api} answered {code.name}: {details}")


# --- dockwatch stock ---------------------------------------------------------------------------


async def print_stock(connection: Connection, args: argparse.Namespace, out: TextIO) -> int:
    query = edge_api_pb2.StockQuery(location=args.location or "", sku=args.sku or "")
    async with connection.channel() as channel:
        stub = edge_api_pb2_grpc.EdgeApiStub(channel)
        try:
            snapshot = await stub.GetStock(
                query, metadata=connection.metadata, timeout=args.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, connection.api) from exc
    try:
        levels = [stock_level_from_proto(pb) for pb in snapshot.levels]
    except ProtocolError as exc:
        raise ApiFailure(f"the gateway API at {connection.api} sent a bad level: {exc}") from exc
    if args.json:
        for level in levels:
            out.write(payloads.stock_json(snapshot.site, level).decode() + "\n")
        out.flush()
        return EXIT_OK
    rows = [
        (
            level.location,
            level.sku,
            str(level.on_hand),
            str(level.last_seq),
            payloads.format_timestamp(level.updated_at),
        )
        for level in levels
    ]
    out.write(_table(("LOCATION", "SKU", "ON_HAND", "LAST_SEQ", "UPDATED_AT"), rows, {2, 3}))
    narrowed = " ".join(
        f"{key} {value}" for key, value in (("location", args.location), ("sku", args.sku)) if value
    )
    out.write(
        f"site {snapshot.site}, as of seq {snapshot.as_of_seq}: {len(rows)} level(s)"
        + (f" ({narrowed})" if narrowed else "")
        + "\n"
    )
    out.flush()
    return EXIT_OK


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines) + "\n"


# --- dockwatch movements -----------------------------------------------------------------------


def movement_line(recorded: RecordedView) -> str:
    """One movement as one line for people."""
    m = recorded.movement
    return (
        f"{recorded.seq:>6}  {payloads.format_timestamp(m.observed_at)}  {m.kind:<10}  {m.sku}  "
        f"x{m.quantity}  {m.from_location} -> {m.to_location}  "
        f"({m.source_type} {m.source_id}, confidence {m.confidence:.2f})  {m.movement_id}"
    )


class _Printer:
    def __init__(self, out: TextIO, *, as_json: bool, api: str) -> None:
        self._out = out
        self._json = as_json
        self._api = api
        self.last_seq: int | None = None

    def write(self, pb: types_pb2.Movement) -> None:
        try:
            recorded = movement_from_proto(pb)
        except ProtocolError as exc:
            raise ApiFailure(f"the gateway API at {self._api} sent a bad movement: {exc}") from exc
        if self._json:
            self._out.write(payloads.movement_json(recorded).decode() + "\n")
        else:
            self._out.write(movement_line(recorded) + "\n")
        self.last_seq = recorded.seq


async def print_movements(connection: Connection, args: argparse.Namespace, out: TextIO) -> int:
    printer = _Printer(out, as_json=args.json, api=connection.api)
    left: int | None = args.limit
    after = args.after_seq
    async with connection.channel() as channel:
        stub = edge_api_pb2_grpc.EdgeApiStub(channel)
        while left is None or left > 0:
            size = PAGE_SIZE if left is None else min(left, PAGE_SIZE)
            try:
                page = await stub.ListMovements(
                    edge_api_pb2.ListMovementsRequest(after_seq=after, page_size=size),
                    metadata=connection.metadata,
                    timeout=args.timeout,
                )
            except grpc.aio.AioRpcError as exc:
                raise _failure(exc, connection.api) from exc
            for pb in page.movements:
                printer.write(pb)
            out.flush()
            if left is not None:
                left -= len(page.movements)
            after = page.next_after_seq
            if after >= page.last_seq:
                break
        if not args.follow or left == 0:
            return EXIT_OK
        watch = stub.WatchMovements(
            edge_api_pb2.WatchRequest(after_seq=after), metadata=connection.metadata
        )
        try:
            async for response in watch:
                # A response is a page of movements: the backlog in pages, live ones as they come.
                batch: Sequence[types_pb2.Movement] = response.movements
                if left is not None:
                    batch = batch[:left]
                    left -= len(batch)
                for pb in batch:
                    printer.write(pb)
                out.flush()
                if left == 0:
                    break
        except grpc.aio.AioRpcError as exc:
            resume = after if printer.last_seq is None else printer.last_seq
            code = exc.code()
            if code in _LOST:  # the gateway stopped (or the network went): say where we were
                failure = ApiFailure(
                    f"lost the gateway API at {connection.api} ({code.name}: {exc.details()})"
                )
            else:
                failure = _failure(exc, connection.api)
            raise ApiFailure(f"{failure}; resume with --after-seq {resume}") from exc
        finally:
            watch.cancel()
    return EXIT_OK
