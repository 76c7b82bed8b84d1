"""``dockwatch demo``: the whole product on one machine, with no hardware.

It starts, in this order:

1. an MQTT broker: ``mosquitto`` when installed (a private instance on the demo port, never the
   system one), otherwise an embedded Python broker (amqtt, MQTT 3.1.1);
2. the simulators as child processes, through their own CLIs (``simulators.launcher``): the
   LLRP readers of both dock doors (``dockwatch simulate llrp --scenario ...``), the four Modbus
   weighing shelves (``dockwatch simulate modbus --scenario ...``), each writing its ground
   truth, and the central inventory (``dockwatch simulate central``), which the gateway streams
   its movements to over gRPC;
3. the gateway itself (``deploy/demo.yaml``, a fresh SQLite store in a temporary directory),
   with its local gRPC API and metrics endpoint on free ports;
4. a plain MQTT subscriber (like an integrator's) feeding a board of devices, sync state, active
   alerts, recent movements and stock on hand: redrawn in place on a terminal, printed as a log
   of events (and the board every few seconds) when the output is not a terminal.

Ctrl-C (or ``--seconds N``, which ``make demo`` passes from ``DEMO_SECONDS``) stops everything
and removes the temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

from dockwatch_core.errors import GatewayError
from gateway.app import Gateway, catalog_of
from gateway.config import GatewayConfig, load_config, split_host_port
from gateway.domain.model import (
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)
from gateway.logs import configure_logging
from simulators.launcher import Simulators, SimulatorSpec, launched, port_free, wait_port
from simulators.scenario import Scenario, load_scenario

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "deploy" / "demo.yaml"
PORTAL_SCENARIO = ROOT / "simulators" / "scenarios" / "demo.yaml"
SHELF_SCENARIO = ROOT / "simulators" / "scenarios" / "shelf_demo.yaml"
RECENT_MOVEMENTS = 12
REDRAW_EVERY_S = 1.0
BOARD_EVERY_S = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str | None:
    """The mosquitto binary (Debian installs it in /usr/sbin, often not on a user's PATH), or
    None: then the demo runs the embedded broker. ``DOCKWATCH_DEMO_BROKER=embedded`` asks for the
    embedded one even where mosquitto is installed (what a machine without it gets)."""
    if os.environ.get("DOCKWATCH_DEMO_BROKER") == "embedded":
        return None
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@contextlib.asynccontextmanager
async def broker(host: str, port: int, workdir: Path) -> AsyncIterator[str]:
    """A private broker on ``host:port``; yields its description."""
    binary = find_mosquitto()
    if binary is not None:
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            # stdout, not a log file: run as root, mosquitto drops to its own user, which may
            # not write into our private temporary directory.
            f"listener {port} {host}\nallow_anonymous true\npersistence false\nlog_dest stdout\n"
        )
        with (workdir / "mosquitto.log").open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                binary,
                "-c",
                str(conf),
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops it in order
            )
        try:
            async with asyncio.timeout(10):
                await wait_port(host, port)
            yield f"mosquitto ({binary}) on {host}:{port}"
        finally:
            await _stop(proc)
        return
    try:
        from amqtt.broker import Broker
    except ImportError as exc:
        raise GatewayError(
            "no MQTT broker: install mosquitto (apt-get install mosquitto) or amqtt"
        ) from exc
    embedded = Broker(
        {"listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}}},
    )
    await embedded.start()
    try:
        why = (
            "DOCKWATCH_DEMO_BROKER=embedded"
            if os.environ.get("DOCKWATCH_DEMO_BROKER") == "embedded"
            else "mosquitto not installed"
        )
        yield f"embedded amqtt broker on {host}:{port} ({why})"
    finally:
        await embedded.shutdown()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


def simulator_specs(
    config: GatewayConfig, workdir: Path, central_listen: str
) -> list[SimulatorSpec]:
    """The demo's devices and central inventory, each through its own ``dockwatch simulate``."""
    specs = []
    if config.readers:
        specs.append(
            SimulatorSpec(
                "llrp",
                ("llrp", "--scenario", str(PORTAL_SCENARIO),
                 "--port", str(min(r.port for r in config.readers)),
                 "--truth", str(workdir / "portal-truth.jsonl")),
                tuple((r.host, r.port) for r in config.readers),
                log=workdir / "llrp.log",
            )
        )  # fmt: skip
    if config.shelves:
        endpoints = sorted({(s.modbus.host, s.modbus.port) for s in config.shelves})
        specs.append(
            SimulatorSpec(
                "modbus",
                ("modbus", "--scenario", str(SHELF_SCENARIO), "--port", str(endpoints[0][1]),
                 "--truth", str(workdir / "shelf-truth.jsonl")),
                tuple(endpoints),
                log=workdir / "modbus.log",
            )
        )  # fmt: skip
    if config.sinks.central is not None:
        host, port = split_host_port(central_listen)
        specs.append(
            SimulatorSpec(
                "central",
                ("central", "--listen", central_listen, "--db", str(workdir / "central.db"),
                 "--summary-interval", "3600"),
                ((host, port),),
                log=workdir / "central.log",
            )
        )  # fmt: skip
    return specs


@dataclass
class Board:
    """What the demo shows: the integrator's view of the site, from MQTT, plus the sync state.

    ``handle`` takes every message the demo's subscriber receives and returns a one-line event
    for the scrolling view (None when the message only updates the state); ``render`` draws the
    whole board: devices, sync, active alerts, recent movements and stock on hand.
    """

    prefix: str
    shown_locations: frozenset[str] = frozenset()
    """Locations whose stock the table shows (storage, not docks or virtual places)."""
    seen_movements: set[str] = field(default_factory=set)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_MOVEMENTS))
    stock: dict[tuple[str, str], int] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    active_alerts: dict[str, str] = field(default_factory=dict)
    movements_by_kind: Counter[str] = field(default_factory=Counter)
    gateway: str = "?"

    def handle(self, topic: str, payload: bytes) -> str | None:
        rest = topic.removeprefix(self.prefix + "/")
        try:
            doc: Any = json.loads(payload) if payload else None
        except ValueError:
            doc = payload.decode(errors="replace")
        if rest.startswith("movements/") and isinstance(doc, dict):
            if doc["movement_id"] in self.seen_movements:
                return None  # published on both its from and to location topics
            self.seen_movements.add(doc["movement_id"])
            self.movements_by_kind[str(doc["kind"])] += 1
            line = _movement_line(doc)
            self.recent.append(line)
            return line
        if rest.startswith("stock/") and isinstance(doc, dict):
            self.stock[(doc["location"], doc["sku"])] = int(doc["on_hand"])
            return None
        if rest.startswith("active_alerts/"):
            subject = rest.removeprefix("active_alerts/")
            if isinstance(doc, dict):
                self.active_alerts[subject] = f"{doc['kind']}: {doc['message']}"
            else:  # an empty retained message: the alert cleared
                self.active_alerts.pop(subject, None)
            return None
        if rest.startswith("alerts/") and isinstance(doc, dict):
            state = "RAISED " if doc.get("active", True) else "cleared"
            return f"  ALERT {state} {doc['kind']}: {doc['message']}"
        if rest.startswith("devices/") and isinstance(doc, dict):
            detail = f" ({doc['detail']})" if doc.get("detail") else ""
            self.devices[str(doc["device_id"])] = f"{doc['state']}{detail}"
            return f"  device {doc['device_id']} {doc['state']}{detail}"
        if rest == "gateway/status":
            self.gateway = str(doc)
            return f"  gateway {doc}"
        return None

    def table(self) -> str:
        if not self.stock:
            return "  stock: (nothing recorded yet)"
        lines = ["  stock on hand:", f"    {'location':<12} {'sku':<10} {'on_hand':>8}"]
        for (location, sku), on_hand in sorted(self.stock.items()):
            if self.shown_locations and location not in self.shown_locations:
                continue
            lines.append(f"    {location:<12} {sku:<10} {on_hand:>8}")
        return "\n".join(lines)

    def render(self, sync: Mapping[str, int]) -> str:
        """The whole board; ``sync`` is the gateway's last seq and each sink's acknowledged seq."""
        devices = ", ".join(f"{d} {s}" for d, s in sorted(self.devices.items())) or "(none yet)"
        if all(state.startswith("online") for state in self.devices.values()):
            devices = f"all {len(self.devices)} online" if self.devices else "(none yet)"
        last = sync.get("last_seq", 0)
        sinks = ", ".join(
            f"{name} acked {seq}" + ("" if seq >= last else f" ({last - seq} behind)")
            for name, seq in sorted(sync.items())
            if name != "last_seq"
        )
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.movements_by_kind.items()))
        lines = [
            f"  gateway {self.gateway}; devices: {devices}",
            f"  sync: last seq {last}; {sinks or 'no sinks'}",
            f"  movements: {sum(self.movements_by_kind.values())} ({kinds or 'none yet'})",
            "  active alerts:" if self.active_alerts else "  active alerts: none",
        ]
        lines += [f"    {text}" for _, text in sorted(self.active_alerts.items())]
        lines.append("  recent movements:")
        lines += [f"    {line}" for line in self.recent] or ["    (none yet)"]
        lines.append(self.table())
        return "\n".join(lines)


def _movement_line(doc: Mapping[str, Any]) -> str:
    when = str(doc.get("observed_at", ""))[11:19]
    source = doc.get("source", {})
    line = (
        f"{when} #{doc['seq']:<4} {doc['kind']:<10} {doc['sku']:<9} x{doc['quantity']:<4} "
        f"{doc['from_location']} -> {doc['to_location']}  "
        f"[{source.get('id', '?')}, confidence {float(doc['confidence']):.2f}]"
    )
    if doc.get("container"):
        line += f" pallet {doc['container']}"
    return line


def _raw(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


class View:
    """Draws the board: redrawn in place on a terminal, as a log of events elsewhere.

    On a terminal the screen is redrawn every :data:`REDRAW_EVERY_S`; piped into a file or a CI
    log, every event is printed as one line as it arrives and the whole board every
    :data:`BOARD_EVERY_S` (and once at the end), so the output reads top to bottom.
    """

    def __init__(
        self,
        board: Board,
        header: str,
        sync: Callable[[], Mapping[str, int]],
        notes: Sequence[str] = (),
    ) -> None:
        self.board = board
        self.header = header
        self.notes = tuple(notes)
        """Lines the live view keeps under its title (what was printed before it took over)."""
        self.sync = sync
        self.live = sys.stdout.isatty()
        self.started = time.monotonic()

    def event(self, line: str) -> None:
        if not self.live:
            print(line, flush=True)

    def draw(self) -> None:
        elapsed = int(time.monotonic() - self.started)
        title = f"{self.header}  [{elapsed // 60:02d}:{elapsed % 60:02d}]"
        body = self.board.render(self.sync())
        if self.live:
            # Home, clear, board: one write, so the terminal never shows half a frame.
            notes = "".join(f"  {note}\n" for note in self.notes)
            sys.stdout.write(f"\x1b[H\x1b[2J{title}  (Ctrl-C stops)\n{notes}{body}\n")
            sys.stdout.flush()
        else:
            print(f"--- {title}\n{body}", flush=True)

    async def run(self) -> None:
        every = REDRAW_EVERY_S if self.live else BOARD_EVERY_S
        try:
            while True:
                await asyncio.sleep(every)
                self.draw()
        finally:
            self.draw()  # the final state, also when the demo ends


async def watch(host: str, port: int, board: Board, view: View, *, protocol: str) -> None:
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client(
        host, port, identifier="dockwatch-demo-viewer", protocol=version
    ) as c:
        await c.subscribe(f"{board.prefix}/#", qos=1)
        async for message in c.messages:
            line = board.handle(str(message.topic), _raw(message.payload))
            if line:
                view.event(line)


def _check_ports_free(config: GatewayConfig) -> None:
    mqtt = config.sinks.mqtt
    assert mqtt is not None
    busy = [
        f"{h}:{p}"
        for h, p in [(mqtt.host, mqtt.port)]
        + [(r.host, r.port) for r in config.readers]
        + [(s.modbus.host, s.modbus.port) for s in config.shelves]
        if not port_free(h, p)
    ]
    if busy:
        raise GatewayError(
            f"demo ports already in use: {', '.join(sorted(set(busy)))} (is another demo running?)"
        )


async def run_demo(seconds: float | None, keep: bool, log_level: str = "INFO") -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dockwatch-demo-"))
    # The gateway's own log goes to a file: on the screen it would tear the live board apart.
    log_file = (workdir / "gateway.log").open("a", encoding="utf-8")
    configure_logging(log_level, stream=log_file)
    try:
        environ = dict(os.environ)
        environ["DOCKWATCH_STORE_URL"] = f"sqlite:///{workdir / 'edge.db'}"
        # The local API, metrics and central on ports of their own: a real gateway on this
        # machine may hold the defaults.
        api_listen = f"127.0.0.1:{_free_port()}"
        environ["DOCKWATCH__API__GRPC_LISTEN"] = api_listen
        metrics_listen = f"127.0.0.1:{_free_port()}"
        environ["DOCKWATCH__API__METRICS_LISTEN"] = metrics_listen
        central_listen = f"127.0.0.1:{_free_port()}"
        environ["DOCKWATCH__SINKS__CENTRAL__TARGET"] = central_listen
        config = load_config(DEMO_CONFIG, environ=environ)
        mqtt = config.sinks.mqtt
        assert mqtt is not None, "deploy/demo.yaml configures an MQTT sink"
        _check_ports_free(config)
        async with broker(mqtt.host, mqtt.port, workdir) as description:
            print(f"dockwatch demo: site {config.site.id}", flush=True)
            protocol = mqtt.protocol if find_mosquitto() else "3.1.1"
            if protocol != mqtt.protocol:
                environ["DOCKWATCH__SINKS__MQTT__PROTOCOL"] = protocol
                config = load_config(DEMO_CONFIG, environ=environ)
            specs = simulator_specs(config, workdir, central_listen)
            async with launched(specs) as sims:
                notes = [
                    f"broker: {description}",
                    f"simulators: {len(config.readers)} LLRP readers, {len(config.shelves)} "
                    f"weighing shelves, central inventory on {central_listen}",
                    f"console: http://{metrics_listen}/ (operator console in a browser)",
                    f"metrics: http://{metrics_listen}/metrics (and /healthz, /readyz)",
                    f"local gRPC API: {api_listen} (try: dockwatch stock --api {api_listen})",
                    f"gateway log, simulator logs and ground truth: {workdir} (--keep keeps them)",
                ]
                for note in notes:
                    print(note, flush=True)
                print("movements as an MQTT subscriber sees them (Ctrl-C stops):", flush=True)
                gateway = Gateway(config, environ=environ)
                shown = frozenset(loc.id for loc in config.locations if loc.kind == "storage")
                board = Board(mqtt.topic_prefix, shown)
                view = View(
                    board,
                    f"dockwatch demo, site {config.site.id}",
                    gateway.sync_status,
                    notes=notes,
                )
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(gateway.run())
                    opening = opening_stock(config, load_scenario(PORTAL_SCENARIO))
                    tg.create_task(_record_opening_stock(gateway, opening))
                    tg.create_task(watch(mqtt.host, mqtt.port, board, view, protocol=protocol))
                    tg.create_task(view.run())
                    tg.create_task(_fail_when_one_exits(sims))
                    if seconds is not None:
                        tg.create_task(_stop_after(seconds))
    except* _DemoOver:
        pass
    except* GatewayError as group:
        # One part failing ends the demo; say why as the gateway would, not as a traceback.
        raise group.exceptions[0] from group
    finally:
        configure_logging("ERROR")
        log_file.close()
        if keep:
            print(f"demo files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def opening_stock(config: GatewayConfig, scenario: Scenario) -> list[Movement]:
    """Manual adjustments for the goods the scenario ships, as if counted before the demo began.

    The demo's store starts empty; without these, a shipment of goods the gateway never saw
    arrive would leave stock below zero (which the gateway records faithfully: it reports what
    crossed the door). Each pallet leaving through a portal whose outward crossing is a shipment
    brings its cases' eaches to that portal's inside location.
    """
    catalog = catalog_of(config)
    shipping_doors = {
        p.id: p.inside_location for p in config.portals if p.kinds.out is MovementKind.SHIPMENT
    }
    counted: Counter[tuple[str, str]] = Counter()
    for pallet in scenario.pallets:
        location = shipping_doors.get(pallet.door)
        if pallet.direction != "out" or location is None:
            continue
        for epc in pallet.load.case_epcs:
            item = catalog.classify(epc).item
            if item is not None:
                counted[(location, item.sku)] += item.pack_size
    at = datetime.now(UTC)
    return [
        Movement(
            movement_id=MovementId(f"demo-opening-stock:{location}:{sku}"),
            kind=MovementKind.ADJUSTMENT,
            sku=Sku(sku),
            quantity=quantity,
            from_location=LocationId("adjustment"),
            to_location=LocationId(location),
            source_type=SourceType.MANUAL,
            source_id="demo opening stock",
            observed_at=at,
            confidence=1.0,
        )
        for (location, sku), quantity in sorted(counted.items())
    ]


async def _record_opening_stock(gateway: Gateway, movements: Sequence[Movement]) -> None:
    await gateway.ready.wait()
    await gateway.record(movements)


async def _fail_when_one_exits(sims: Simulators) -> None:
    """A simulator that stops on its own ends the demo, with its last lines."""
    raise await sims.failure(await sims.wait_any_exit())


class _DemoOver(Exception):
    """Raised inside the task group to end the demo after ``--seconds``."""


async def _stop_after(seconds: float) -> None:
    await asyncio.sleep(seconds)
    raise _DemoOver


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--keep", action="store_true", help="keep the store, logs and ground truth afterwards"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="level of the gateway's log, which goes to gateway.log in the demo's directory "
        "(the screen shows what an MQTT subscriber sees) (INFO)",
    )


async def _until_signalled(seconds: float | None, keep: bool, log_level: str) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_demo(seconds, keep, log_level)


def main(args: argparse.Namespace) -> int:
    configure_logging("ERROR")  # until the demo's directory exists (see run_demo)
    try:
        import uvloop

        uvloop.run(_until_signalled(args.seconds, args.keep, args.log_level))
    except GatewayError as exc:
        print(f"dockwatch demo: {exc}", file=sys.stderr)
        return 1
    print("dockwatch demo stopped.")
    return 0
