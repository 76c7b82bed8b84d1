"""``dockwatch simulate all``: the LLRP readers, Modbus shelves and central ingest together.

One command for a test bench or a gateway under development: every scenario given with
``--scenario`` starts the simulators it describes (its ``doors:`` an LLRP reader simulator, its
``shelves:`` a Modbus weighing-shelf simulator; a combined file both), plus the central inventory
simulator unless ``--no-central``. Each runs as a child process through its own command
(``dockwatch simulate llrp|modbus|central``, see docs/simulators.md), started and stopped by
:mod:`simulators.launcher`.

The scenarios are read here first, so a bad file is reported (exit 2) before anything starts,
and so the listening addresses can be printed: reader ports as the scenario names them, or
consecutive from ``--llrp-port``; one Modbus port per scenario with shelves, consecutive from
``--modbus-port``. Exit status: 0 after Ctrl-C, SIGTERM or ``--duration``; 1 when a simulator
fails to start or stops on its own (its last lines are printed); 2 for a usage or scenario error.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockwatch_core.errors import ConfigError, GatewayError
from gateway.adapters.tls import server_context_from_flags
from gateway.config import split_host_port
from gateway.documents import SCENARIO_LIMITS, DocumentError, read_yaml
from simulators.launcher import SimulatorSpec, launched

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# The simulators' own defaults, repeated so that --help stays fast (tests/test_cli.py checks them).
DEFAULT_LLRP_PORT = 5084  # simulators.llrp.server.DEFAULT_PORT
DEFAULT_MODBUS_PORT = 5020
DEFAULT_CENTRAL_LISTEN = "127.0.0.1:50070"  # simulators.central.DEFAULT_LISTEN
DEFAULT_CENTRAL_DB = "var/central.db"  # simulators.central.DEFAULT_DB
SECTIONS = {"doors": "llrp", "shelves": "modbus"}
"""Scenario sections and the simulator each one starts."""


class UsageError(ValueError):
    """A command-line or scenario problem: nothing was started."""


@dataclass(frozen=True, slots=True)
class Planned:
    """One simulator to start and the line that says where it listens."""

    spec: SimulatorSpec
    where: str


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        action="append",
        required=True,
        metavar="FILE",
        help="scenario YAML (repeatable): its doors start LLRP readers, its shelves a Modbus "
        "simulator; a bare name (demo, shelf_demo, clean, hard...) is a bundled scenario",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the devices listen on")
    parser.add_argument(
        "--llrp-port",
        type=int,
        default=DEFAULT_LLRP_PORT,
        metavar="N",
        help=f"first port for readers whose port the scenario does not name ({DEFAULT_LLRP_PORT})",
    )
    parser.add_argument(
        "--modbus-port",
        type=int,
        default=DEFAULT_MODBUS_PORT,
        metavar="N",
        help=f"Modbus port of the first scenario with shelves, then consecutive "
        f"({DEFAULT_MODBUS_PORT})",
    )
    parser.add_argument(
        "--central-listen",
        default=DEFAULT_CENTRAL_LISTEN,
        metavar="HOST:PORT",
        help=f"central ingest simulator address ({DEFAULT_CENTRAL_LISTEN})",
    )
    parser.add_argument(
        "--central-db",
        type=Path,
        metavar="FILE",
        help=f"central's SQLite ledger ({DEFAULT_CENTRAL_DB}, or central.db in --truth-dir)",
    )
    parser.add_argument("--no-central", action="store_true", help="no central ingest simulator")
    parser.add_argument(
        "--truth-dir",
        type=Path,
        metavar="DIR",
        help="write each scenario's ground truth (JSON Lines) into this directory",
    )
    parser.add_argument(
        "--logs",
        type=Path,
        metavar="DIR",
        help="each simulator's output to DIR/NAME.log instead of this terminal",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="scenario time per wall second")
    parser.add_argument("--seed", type=int, help="override every scenario's seed")
    parser.add_argument(
        "--duration", type=float, metavar="S", help="stop everything after S wall seconds"
    )
    parser.add_argument(
        "--log-level", default="INFO", metavar="LEVEL", help="the simulators' log level (INFO)"
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve every simulator over TLS with this PEM certificate chain: LLRP over TLS, "
        "Modbus/TCP Security and gRPC with TLS (ports as given); needs --tls-key",
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="PEM private key of --tls-cert"
    )
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="the LLRP and Modbus simulators require client certificates issued by this CA",
    )


def _tls_arguments(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The TLS options of the device simulators and of central. UsageError, before anything
    starts, for what the simulators would refuse: a bad combination, a file that cannot load."""
    try:
        context = server_context_from_flags(args.tls_cert, args.tls_key, args.tls_client_ca)
    except (ValueError, ConfigError) as exc:
        raise UsageError(str(exc)) from exc
    if context is None:
        return [], []
    central = ["--tls-cert", str(args.tls_cert), "--tls-key", str(args.tls_key)]
    devices = list(central)
    if args.tls_client_ca is not None:
        devices += ["--tls-client-ca", str(args.tls_client_ca)]
    return devices, central


def resolve_scenario(text: str) -> Path:
    """A file path, or the name of a bundled scenario (``demo`` -> scenarios/demo.yaml)."""
    path = Path(text)
    if path.exists() or "/" in text or path.suffix in {".yaml", ".yml", ".json"}:
        if not path.is_file():
            raise UsageError(f"--scenario {text}: no such file")
        return path
    bundled = SCENARIOS / f"{text}.yaml"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
    raise UsageError(f"--scenario {text}: no such file or bundled scenario (bundled: {names})")


def _listening_host(host: str) -> str:
    """Where to check that a server bound to ``host`` accepts connections."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def plan(args: argparse.Namespace) -> list[Planned]:
    """The simulators the command line asks for; UsageError names the first problem."""
    from simulators.scenario import load_scenario
    from simulators.shelf_scenario import load_shelf_scenario

    for name, port in (("--llrp-port", args.llrp_port), ("--modbus-port", args.modbus_port)):
        if not 1 <= port <= 65535:
            raise UsageError(f"{name} must be within 1..65535, got {port}")
    if args.speed <= 0:
        raise UsageError(f"--speed must be > 0, got {args.speed}")
    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration must be > 0, got {args.duration}")
    level = str(args.log_level).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise UsageError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {args.log_level}")
    common = ["--host", args.host, "--speed", str(args.speed), "--log-level", level]
    device_tls, central_tls = _tls_arguments(args)
    if args.seed is not None:
        common += ["--seed", str(args.seed)]
    next_llrp, next_modbus = args.llrp_port, args.modbus_port
    check = _listening_host(args.host)
    planned: list[Planned] = []
    scenarios = [(path, _sections(path)) for path in map(resolve_scenario, args.scenario)]
    stems = [path.stem for path, _ in scenarios]
    count = {kind: sum(kind in sections for _, sections in scenarios) for kind in SECTIONS}
    seen = dict.fromkeys(SECTIONS, 0)
    for n, (path, sections) in enumerate(scenarios, start=1):
        if not sections:
            raise UsageError(f"{path}: has neither doors: nor shelves: (nothing to simulate)")
        label = path.stem if stems.count(path.stem) == 1 else f"{path.stem}-{n}"
        names = {}
        for kind in sections:
            seen[kind] += 1
            names[kind] = SECTIONS[kind] if count[kind] == 1 else f"{SECTIONS[kind]}-{seen[kind]}"
        if "doors" in sections:
            try:
                scenario = load_scenario(path)
            except ConfigError as exc:
                raise UsageError(str(exc)) from exc
            first = next_llrp
            readers = []
            for door in scenario.doors:
                port = door.port
                if port is None:
                    port, next_llrp = next_llrp, next_llrp + 1
                antennas = ",".join(str(a) for a in door.antenna_ids)
                readers.append((door, port, antennas))
            name = names["doors"]
            cmd = ["llrp", "--scenario", str(path), "--port", str(first), *common, *device_tls]
            if args.truth_dir is not None:
                cmd += ["--truth", str(args.truth_dir / f"{label}.portal-truth.jsonl")]
            lines = [
                f"  {name:<8} reader {door.reader} ({door.id}, antennas {antennas}) on "
                f"{args.host}:{port}"
                for door, port, antennas in readers
            ]
            planned.append(
                Planned(
                    SimulatorSpec(
                        name,
                        tuple(cmd),
                        tuple((check, port) for _, port, _ in readers),
                        _log(args, name),
                    ),
                    "\n".join(lines),
                )
            )
        if "shelves" in sections:
            try:
                shelves = load_shelf_scenario(path)
            except (ConfigError, ValueError) as exc:
                raise UsageError(f"{path}: {exc}") from exc
            port, next_modbus = next_modbus, next_modbus + 1
            name = names["shelves"]
            cmd = ["modbus", "--scenario", str(path), "--port", str(port), *common, *device_tls]
            if args.truth_dir is not None:
                cmd += ["--truth", str(args.truth_dir / f"{label}.shelf-truth.jsonl")]
            units = ", ".join(f"unit {s.unit} ({s.shelf_id}, {s.sku})" for s in shelves.shelves)
            planned.append(
                Planned(
                    SimulatorSpec(name, tuple(cmd), ((check, port),), _log(args, name)),
                    f"  {name:<8} weighing shelves on {args.host}:{port}: {units}",
                )
            )
    if not args.no_central:
        try:
            host, port = split_host_port(args.central_listen)
        except ValueError as exc:
            raise UsageError(f"--central-listen: {exc}") from exc
        db = args.central_db
        if db is None:
            db = (
                args.truth_dir / "central.db"
                if args.truth_dir is not None
                else Path(DEFAULT_CENTRAL_DB)
            )
        cmd = ["central", "--listen", args.central_listen, "--db", str(db)]
        cmd += ["--log-level", level, *central_tls]
        planned.append(
            Planned(
                SimulatorSpec(
                    "central", tuple(cmd), ((_listening_host(host), port),), _log(args, "central")
                ),
                f"  {'central':<8} gRPC ingest on {args.central_listen}, ledger {db}",
            )
        )
    _check_distinct(planned)
    return planned


def _sections(path: Path) -> list[str]:
    try:
        data: Any = read_yaml(path, SCENARIO_LIMITS)
    except DocumentError as exc:
        raise UsageError(str(exc)) from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a scenario is a mapping at the top level")
    return [key for key in SECTIONS if data.get(key)]


def _log(args: argparse.Namespace, name: str) -> Path | None:
    return None if args.logs is None else args.logs / f"{name}.log"


def _check_distinct(planned: Sequence[Planned]) -> None:
    seen: dict[int, str] = {}
    for p in planned:
        for _, port in p.spec.endpoints:
            if port in seen:
                raise UsageError(
                    f"port {port} is used by both {seen[port]} and {p.spec.name}: "
                    "change the scenario's port or --llrp-port/--modbus-port/--central-listen"
                )
            seen[port] = p.spec.name


async def run(planned: Sequence[Planned], duration: float | None) -> None:
    """Start everything, say where it listens, run until cancelled, ``duration`` or a death."""
    async with launched([p.spec for p in planned]) as sims:
        print(
            f"dockwatch simulate all: {len(planned)} simulator(s) up (Ctrl-C stops them all):",
            flush=True,
        )
        for p in planned:
            print(p.where, flush=True)
        try:
            async with asyncio.timeout(duration):
                failed = await sims.wait_any_exit()
        except TimeoutError:
            return
        raise await sims.failure(failed)


async def _until_signalled(planned: Sequence[Planned], duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signalled: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        signalled.append(sig)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        await run(planned, duration)
    except asyncio.CancelledError:
        if not signalled:
            raise
        # The stop the user asked for (the launcher has stopped every simulator): a normal end.
        while task.uncancel():
            pass


def main(args: argparse.Namespace) -> int:
    try:
        planned = plan(args)
        for directory in (args.truth_dir, args.logs):
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
    except (UsageError, OSError) as exc:
        print(f"dockwatch simulate all: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_until_signalled(planned, args.duration))
    except GatewayError as exc:
        print(f"dockwatch simulate all: {exc}", file=sys.stderr)
        return 1
    print("dockwatch simulate all: stopped.", flush=True)
    return 0
