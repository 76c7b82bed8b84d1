"""Modbus TCP weighing-shelf simulator: one or many transmitters (unit ids) on one port.

Each unit serves the register map of ``simulators.modbus.registers`` from the signal of
``simulators.modbus.physics``, which is a pure function of scenario time: a read at scenario time
``t`` is computed on the spot (pymodbus' ``SimDevice`` action hook), so there is no ticking update
loop and the simulator can run faster than real time (``speed``). Failures act per unit: an
EXCEPTION failure answers every read with a Modbus exception response, a SILENT one does not
answer at all; an unknown unit id gets exception 0x0B (gateway target failed to respond), as a
Modbus TCP gateway in front of an RS-485 line would answer.

Ground truth (``simulators.truth``) is written as events happen: a ``start`` line per shelf, then
``pick``/``restock`` (with ``units``), ``bump``, ``hand`` and ``failure`` lines at their scenario
time.

Command line: ``dockwatch simulate modbus --port 5020 --scenario FILE --truth FILE`` or, without a
scenario, ``--units N`` shelves with generated activity (``--servers K`` runs K such ports).
``--tls-cert FILE --tls-key FILE`` serves Modbus/TCP Security (the same register map inside TLS,
as pymodbus' TLS server frames it: MBAP header, no change to the PDUs); ``--tls-client-ca FILE``
also requires client certificates issued by that CA.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer, ModbusTlsServer
from pymodbus.simulator import DataType, SimData, SimDevice

from dockwatch_core.errors import ConfigError, GatewayError
from gateway.adapters.tls import server_context_from_flags
from simulators.modbus import registers
from simulators.modbus.physics import ShelfPhysics
from simulators.shelf_scenario import (
    FailureMode,
    ShelfEventKind,
    ShelfScenario,
    ShelfTrack,
    load_shelf_scenario,
    shelf_scenario_from_mapping,
)
from simulators.truth import GroundTruthWriter

log = logging.getLogger(__name__)

_WRITE_CODES = frozenset({6, 16, 22, 23})


class _Transmitter:
    """One unit: its physics plus the little state a real transmitter keeps (the tare)."""

    def __init__(self, track: ShelfTrack, seed: int, now: Callable[[], float]) -> None:
        self.track = track
        self.physics = ShelfPhysics(track, seed)
        self._now = now
        self.tare_g = track.tare_g
        self.tare_active = track.tare_g > 0

    def device(self) -> SimDevice:
        return SimDevice(
            id=self.track.unit,
            simdata=[
                SimData(registers.NET, count=8, datatype=DataType.REGISTERS, readonly=True),
                SimData(registers.COMMAND, datatype=DataType.REGISTERS),
                SimData(registers.FORMAT, count=3, datatype=DataType.REGISTERS, readonly=True),
            ],
            action=self.on_access,
        )

    async def on_access(
        self,
        function_code: int,
        start_address: int,
        _address: int,
        _count: int,
        current: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before serving a request; we refresh the registers in place."""
        t = self._now()
        failure = self.physics.failure_at(t)
        if failure is not None and failure.mode is FailureMode.EXCEPTION:
            return ExcCodes(failure.exception_code)
        if failure is not None and failure.mode is FailureMode.SILENT:
            # With ignore_missing_devices the server drops the request without an answer.
            raise NoSuchIdException(f"unit {self.track.unit} is silent")
        reading = self.physics.reading(t)
        if function_code in _WRITE_CODES and values is not None:
            return self._command([int(v) for v in values], reading.gross_g)
        registers.fill(
            current,
            registers.NET - start_address,
            reading,
            tare_g=self.tare_g,
            tare_active=self.tare_active,
            capacity_g=self.track.capacity_g,
            encoding=self.track.encoding,
        )
        return None

    def _command(self, values: list[int], gross_g: float) -> ExcCodes | None:
        command = values[0] if values else 0
        if command == registers.CMD_TARE:
            self.tare_g, self.tare_active = gross_g, True
        elif command == registers.CMD_CLEAR_TARE:
            self.tare_g, self.tare_active = 0.0, False
        else:
            return ExcCodes.ILLEGAL_VALUE
        return None


async def _no_such_unit(*_args: Any) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


def _scaled_monotonic(speed: float) -> Callable[[], float]:
    return lambda: time.monotonic() * speed


class ShelfSimulator:
    """A Modbus TCP server with one weighing transmitter per shelf track (unit id).

    Scenario time is ``clock() - clock()@start``: by default the monotonic clock times ``speed``.
    A test may pass its own ``clock`` (running at ``speed`` times real time) to share it with
    the gateway side. With ``tls`` (a server context, :func:`gateway.adapters.tls.server_context`)
    it serves Modbus/TCP Security instead of plain Modbus TCP.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        shelves: Sequence[ShelfTrack] = (),
        scenario: ShelfScenario | None = None,
        *,
        clock: Callable[[], float] | None = None,
        speed: float = 1.0,
        truth: Path | str | None = None,
        seed: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        tracks = list(scenario.shelves if scenario is not None else ()) + list(shelves)
        if not tracks:
            raise ValueError("a simulator needs at least one shelf")
        units = [t.unit for t in tracks]
        if len(set(units)) != len(units):
            raise ValueError(f"two shelves share a unit id: {sorted(units)}")
        self.host = host
        self.tls = tls
        self._requested_port = port
        # ``clock`` runs at scenario rate; ``speed`` is that rate over real time (for sleeping).
        self._clock = clock if clock is not None else _scaled_monotonic(speed)
        self.speed = speed
        self.seed = seed if seed is not None else (scenario.seed if scenario is not None else 0)
        self._truth_path = Path(truth) if truth is not None else None
        self._t0: float | None = None
        self.transmitters = {t.unit: _Transmitter(t, self.seed, self.scenario_time) for t in tracks}
        self._server: ModbusTcpServer | None = None
        self._port: int | None = None
        self._truth_task: asyncio.Task[None] | None = None

    @property
    def tracks(self) -> list[ShelfTrack]:
        return [tx.track for tx in self.transmitters.values()]

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    def scenario_time(self) -> float:
        """Seconds of scenario time since ``start()`` (0 before it)."""
        if self._t0 is None:
            return 0.0
        return self._clock() - self._t0

    async def sleep_until(self, t: float) -> None:
        """Sleep until scenario time ``t``."""
        # The clock may run slower than ``speed`` (a paced test clock): sleep, then look again.
        while (wait := (t - self.scenario_time()) / self.speed) > 0:  # noqa: ASYNC110 - see above
            await asyncio.sleep(wait)

    def physics(self, unit: int) -> ShelfPhysics:
        return self.transmitters[unit].physics

    async def start(self) -> None:
        devices = [tx.device() for tx in self.transmitters.values()]
        devices.append(
            SimDevice(
                id=0,
                simdata=[SimData(0, count=registers.MAP_SIZE, datatype=DataType.REGISTERS)],
                action=_no_such_unit,
            )
        )
        address = (self.host, self._requested_port)
        server = (
            ModbusTcpServer(devices, address=address, ignore_missing_devices=True)
            if self.tls is None
            else ModbusTlsServer(
                devices, address=address, sslctx=self.tls, ignore_missing_devices=True
            )
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise GatewayError(
                f"modbus simulator cannot listen on {self.host}:{self._requested_port}"
            ) from exc
        listener = cast(asyncio.Server, server.transport)
        self._port = int(listener.sockets[0].getsockname()[1])
        self._server = server
        self._t0 = self._clock()
        if self._truth_path is not None:
            writer = GroundTruthWriter(self._truth_path)
            self._truth_task = asyncio.create_task(self._write_truth(writer), name="shelf-truth")
        log.info(
            "modbus shelf simulator listening on %s:%s%s, units %s",
            self.host,
            self._port,
            "" if self.tls is None else " (TLS)",
            sorted(self.transmitters),
        )

    async def stop(self) -> None:
        task, self._truth_task = self._truth_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # its CancelledError stays inside it
        server, self._server = self._server, None
        if server is not None:
            # pymodbus leaves shutdown() unannotated.
            shutdown = cast(Callable[[], Awaitable[None]], server.shutdown)
            await shutdown()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _write_truth(self, writer: GroundTruthWriter) -> None:
        """Write each event's ground truth when its scenario time comes."""
        timeline = sorted(
            ((e.t, tx.track.unit, e) for tx in self.transmitters.values() for e in tx.track.events),
            key=lambda item: (item[0], item[1]),
        )
        try:
            for tx in self.transmitters.values():
                track = tx.track
                writer.write(
                    "start",
                    0.0,
                    shelf=track.shelf_id,
                    unit=track.unit,
                    sku=track.sku,
                    units=track.initial_units,
                    unit_weight_g=track.unit_weight_g,
                )
            for t, unit, event in timeline:
                await self.sleep_until(t)
                track = self.transmitters[unit].track
                fields: dict[str, Any] = {
                    "shelf": track.shelf_id,
                    "unit": unit,
                    "duration": round(event.duration, 3),
                }
                if event.kind in (ShelfEventKind.PICK, ShelfEventKind.RESTOCK):
                    fields["units"] = event.units
                    fields["sku"] = track.sku
                    fields["on_hand_after"] = self.physics(unit).units_at(event.end)
                elif event.kind in (ShelfEventKind.BUMP, ShelfEventKind.HAND):
                    fields["grams"] = round(event.grams, 1)
                else:
                    fields["mode"] = str(event.mode)
                writer.write(str(event.kind), t, **fields)
        finally:
            writer.close()


# -- command line ----------------------------------------------------------------------------------


def default_scenario(
    units: int, seed: int, *, first_unit: int = 1, events_per_shelf: int = 400
) -> ShelfScenario:
    """``units`` shelves with a slow stream of generated picks, restocks and bumps (demo use).

    One event every 15 to 45 s per shelf: 400 events last about three hours.
    """
    shelves = [
        {
            "id": f"shelf-{first_unit + i:03d}",
            "unit": first_unit + i,
            "noise_g": 0.8,
            "drift_g_per_min": 0.3,
            "random": {
                "start": 5.0 + i % 10,
                "count": events_per_shelf,
                "gap_s": [15.0, 45.0],
                "units": [1, 3],
                "mix": {"pick": 0.55, "restock": 0.3, "bump": 0.1, "hand": 0.05},
            },
        }
        for i in range(units)
    ]
    return shelf_scenario_from_mapping({"name": "generated", "seed": seed, "shelves": shelves})


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5020, help="TCP port (0: any free port)")
    parser.add_argument("--scenario", type=Path, help="scenario YAML file (its shelves: section)")
    parser.add_argument("--truth", type=Path, help="write ground truth (JSON Lines) here")
    parser.add_argument(
        "--units", type=int, default=1, help="shelves per port when no --scenario is given"
    )
    parser.add_argument(
        "--servers",
        type=int,
        default=1,
        help="ports to serve without --scenario (consecutive from --port, or any with --port 0)",
    )
    parser.add_argument("--seed", type=int, help="random seed (default: the scenario's, or 0)")
    parser.add_argument("--speed", type=float, default=1.0, help="scenario seconds per real second")
    parser.add_argument(
        "--duration", type=float, help="stop after this many scenario seconds (default: never)"
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="PEM certificate (chain) of the transmitter: serve Modbus/TCP Security (TLS); "
        "needs --tls-key",
    )
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="require client certificates issued by this CA (PEM); needs --tls-cert",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def main(args: argparse.Namespace) -> int:
    import uvloop

    from gateway.logs import configure_logging

    configure_logging(str(args.log_level).upper())
    # Clients come and go; pymodbus logs an answer to a client that just left as an error.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        simulators = _build(args)
    except ConfigError as exc:
        for problem in exc.problems:  # every problem of the scenario, one per line
            print(f"dockwatch simulate modbus: {problem}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"dockwatch simulate modbus: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(_serve(simulators, args.duration))
        except KeyboardInterrupt:
            return 0
        except GatewayError as exc:
            print(f"dockwatch simulate modbus: {exc}", file=sys.stderr)
            return 1


def _build(args: argparse.Namespace) -> list[ShelfSimulator]:
    if args.units < 1 or args.units > 247 or args.servers < 1:
        raise ValueError("--units must be within 1..247 and --servers >= 1")
    tls = server_context_from_flags(args.tls_cert, args.tls_key, args.tls_client_ca)
    if args.scenario is not None:
        scenario = load_shelf_scenario(args.scenario)
        seed = args.seed if args.seed is not None else scenario.seed
        return [
            ShelfSimulator(
                args.host,
                args.port,
                scenario=scenario,
                speed=args.speed,
                truth=args.truth,
                seed=seed,
                tls=tls,
            )
        ]
    seed = args.seed if args.seed is not None else 0
    sims = []
    for k in range(args.servers):
        scenario = default_scenario(args.units, seed + k)
        truth = args.truth
        if truth is not None and args.servers > 1:
            truth = truth.with_name(f"{truth.stem}-{k}{truth.suffix}")
        port = 0 if args.port == 0 else args.port + k
        sims.append(
            ShelfSimulator(
                args.host, port, scenario=scenario, speed=args.speed, truth=truth, tls=tls
            )
        )
    return sims


async def _serve(simulators: Sequence[ShelfSimulator], duration: float | None) -> int:
    started: list[ShelfSimulator] = []
    # SIGINT and SIGTERM (a service manager's, `simulate all`'s) stop it the same way; handled
    # from before the first "listening" line, which is what a supervisor waits for.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for sim in simulators:
            await sim.start()
            started.append(sim)
            units = sorted(sim.transmitters)
            where = f"{sim.host}:{sim.port}" + ("" if sim.tls is None else " (TLS)")
            print(
                f"modbus simulator listening on {where} units {units[0]}..{units[-1]}", flush=True
            )
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
        if duration is not None:
            waits.append(asyncio.ensure_future(simulators[0].sleep_until(duration)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
    finally:
        for sim in started:
            await sim.stop()
    return 0
