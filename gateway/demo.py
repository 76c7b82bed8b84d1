"""``dockwatch demo``: the whole product on one machine, with no hardware.

It starts, in this order:

1. an MQTT broker: ``mosquitto`` when installed (a private instance on the demo port, never the
   system one), otherwise an embedded Python broker (amqtt, MQTT 3.1.1);
2. the simulators as child processes, through their own CLIs: one LLRP reader per dock door
   (``dockwatch simulate llrp --scenario ...``) and the Modbus weighing shelves
   (``dockwatch simulate modbus --scenario ...``), each writing its ground truth;
3. the gateway itself (``deploy/demo.yaml``, a fresh SQLite store in a temporary directory);
4. a plain MQTT subscriber (like an integrator's) that prints every movement, alert and device
   status as it arrives, and the stock table every few seconds.

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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.app import Gateway
from gateway.config import GatewayConfig, load_config
from gateway.errors import GatewayError
from gateway.logs import configure_logging

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "deploy" / "demo.yaml"
PORTAL_SCENARIO = ROOT / "simulators" / "scenarios" / "demo.yaml"
SHELF_SCENARIO = ROOT / "simulators" / "scenarios" / "shelf_demo.yaml"
STOCK_EVERY_S = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def _wait_port(host: str, port: int, within_s: float) -> None:
    async with asyncio.timeout(within_s):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


def find_mosquitto() -> str | None:
    """The mosquitto binary (Debian installs it in /usr/sbin, often not on a user's PATH)."""
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
            await _wait_port(host, port, 10)
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
        yield f"embedded amqtt broker on {host}:{port} (mosquitto not installed)"
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


@contextlib.asynccontextmanager
async def simulators(config: GatewayConfig, workdir: Path) -> AsyncIterator[None]:
    """The LLRP readers and Modbus shelves of the demo scenario, as child processes.

    Each runs in its own session so that Ctrl-C in the terminal reaches only the demo, which
    stops the gateway first and the devices after it (as a site would shut down)."""
    exe = [sys.executable, "-m", "gateway.cli", "simulate"]
    procs: list[asyncio.subprocess.Process] = []
    endpoints: list[tuple[str, int]] = []
    try:
        if config.readers:
            first = min(r.port for r in config.readers)
            procs.append(
                await asyncio.create_subprocess_exec(
                    *exe, "llrp", "--scenario", str(PORTAL_SCENARIO), "--port", str(first),
                    "--truth", str(workdir / "portal-truth.jsonl"),
                    stdout=(workdir / "llrp.log").open("wb"), stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
            endpoints += [(r.host, r.port) for r in config.readers]
        if config.shelves:
            port = config.shelves[0].modbus.port
            procs.append(
                await asyncio.create_subprocess_exec(
                    *exe, "modbus", "--scenario", str(SHELF_SCENARIO), "--port", str(port),
                    "--truth", str(workdir / "shelf-truth.jsonl"),
                    stdout=(workdir / "modbus.log").open("wb"), stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
            endpoints += sorted({(s.modbus.host, s.modbus.port) for s in config.shelves})
        for host, port in endpoints:
            try:
                await _wait_port(host, port, 15)
            except TimeoutError as exc:
                raise GatewayError(
                    f"a simulator did not start listening on {host}:{port}; its log:\n"
                    + _tails(workdir)
                ) from exc
        yield
    finally:
        for proc in procs:
            await _stop(proc)


def _tails(workdir: Path) -> str:
    out = []
    for name in ("llrp.log", "modbus.log"):
        path = workdir / name
        if path.exists():
            lines = path.read_text(errors="replace").splitlines()[-10:]
            out.append(f"--- {name}\n" + "\n".join(lines))
    return "\n".join(out)


@dataclass
class Board:
    """What the demo's subscriber has seen: the integrator's view of the site."""

    prefix: str
    shown_locations: frozenset[str] = frozenset()
    """Locations whose stock the table shows (storage, not docks or virtual places)."""
    seen_movements: set[str] = field(default_factory=set)
    stock: dict[tuple[str, str], int] = field(default_factory=dict)

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
            return _movement_line(doc)
        if rest.startswith("stock/") and isinstance(doc, dict):
            self.stock[(doc["location"], doc["sku"])] = int(doc["on_hand"])
            return None
        if rest.startswith("alerts/") and isinstance(doc, dict):
            state = "RAISED " if doc.get("active", True) else "cleared"
            return f"  ALERT {state} {doc['kind']}: {doc['message']}"
        if rest.startswith("devices/") and isinstance(doc, dict):
            detail = f" ({doc['detail']})" if doc.get("detail") else ""
            return f"  device {doc['device_id']} {doc['state']}{detail}"
        if rest == "gateway/status":
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


async def watch(
    host: str, port: int, prefix: str, *, protocol: str, shown: frozenset[str] = frozenset()
) -> None:
    board = Board(prefix, shown)
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client(
        host, port, identifier="dockwatch-demo-viewer", protocol=version
    ) as c:
        await c.subscribe(f"{prefix}/#", qos=1)

        async def stock_table() -> None:
            while True:
                await asyncio.sleep(STOCK_EVERY_S)
                print(board.table(), flush=True)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(stock_table())
            async for message in c.messages:
                line = board.handle(str(message.topic), _raw(message.payload))
                if line:
                    print(line, flush=True)


def _check_ports_free(config: GatewayConfig) -> None:
    mqtt = config.sinks.mqtt
    assert mqtt is not None
    busy = [
        f"{h}:{p}"
        for h, p in [(mqtt.host, mqtt.port)]
        + [(r.host, r.port) for r in config.readers]
        + [(s.modbus.host, s.modbus.port) for s in config.shelves]
        if not _port_free(h, p)
    ]
    if busy:
        raise GatewayError(
            f"demo ports already in use: {', '.join(sorted(set(busy)))} (is another demo running?)"
        )


async def run_demo(seconds: float | None, keep: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dockwatch-demo-"))
    try:
        environ = dict(os.environ)
        environ["DOCKWATCH_STORE_URL"] = f"sqlite:///{workdir / 'edge.db'}"
        # The local API and metrics on ports of their own: a real gateway on this machine may
        # hold the defaults.
        environ["DOCKWATCH__API__GRPC_LISTEN"] = f"127.0.0.1:{_free_port()}"
        environ["DOCKWATCH__API__METRICS_LISTEN"] = f"127.0.0.1:{_free_port()}"
        config = load_config(DEMO_CONFIG, environ=environ)
        mqtt = config.sinks.mqtt
        assert mqtt is not None, "deploy/demo.yaml configures an MQTT sink"
        _check_ports_free(config)
        async with broker(mqtt.host, mqtt.port, workdir) as description:
            print(f"dockwatch demo: site {config.site.id}; broker: {description}", flush=True)
            protocol = mqtt.protocol if find_mosquitto() else "3.1.1"
            if protocol != mqtt.protocol:
                environ["DOCKWATCH__SINKS__MQTT__PROTOCOL"] = protocol
                config = load_config(DEMO_CONFIG, environ=environ)
            async with simulators(config, workdir):
                print(
                    f"simulators up: {len(config.readers)} LLRP reader(s), "
                    f"{len(config.shelves)} weighing shelf(ves); logs and ground truth in "
                    f"{workdir}",
                    flush=True,
                )
                print("movements as an MQTT subscriber sees them (Ctrl-C stops):", flush=True)
                gateway = Gateway(config, environ=environ)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(gateway.run())
                    shown = frozenset(loc.id for loc in config.locations if loc.kind == "storage")
                    tg.create_task(
                        watch(
                            mqtt.host, mqtt.port, mqtt.topic_prefix, protocol=protocol, shown=shown
                        )
                    )
                    if seconds is not None:
                        tg.create_task(_stop_after(seconds))
    except* _DemoOver:
        pass
    except* GatewayError as group:
        # One part failing ends the demo; say why as the gateway would, not as a traceback.
        raise group.exceptions[0] from group
    finally:
        if keep:
            print(f"demo files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


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
        default="ERROR",
        help="gateway log level (default ERROR: the demo shows "
        "what an MQTT subscriber sees; INFO adds the gateway's own log)",
    )


async def _until_signalled(seconds: float | None, keep: bool) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_demo(seconds, keep)


def main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        import uvloop

        uvloop.run(_until_signalled(args.seconds, args.keep))
    except GatewayError as exc:
        print(f"dockwatch demo: {exc}", file=sys.stderr)
        return 1
    print("dockwatch demo stopped.")
    return 0
