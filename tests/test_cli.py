"""The ``dockwatch`` command line as an operator meets it: help, version, errors, and
``dockwatch simulate all`` bringing up real LLRP, Modbus and gRPC servers and taking them down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from gateway import __version__
from gateway.cli import COMMANDS, build_parser, main
from tests.support.net import free_port
from tests.support.tls import self_signed_server

DOCKWATCH = [sys.executable, "-m", "gateway.cli"]


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    code = exited.value.code
    assert isinstance(code, int)
    return code


@pytest.mark.parametrize("words", sorted({w for w, _, _ in COMMANDS}), ids=" ".join)
def test_every_command_answers_help(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code([*words, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: dockwatch {' '.join(words)}")
    (help_text,) = [h for w, _, h in COMMANDS if w == words]
    assert help_text in " ".join(out.split())


def test_command_groups_list_their_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--help"]) == 0
    top = capsys.readouterr().out
    groups = {
        w[0]: [v[1] for v, _, _ in COMMANDS if v[0] == w[0] and len(v) > 1] for w, _, _ in COMMANDS
    }
    for first, subs in groups.items():
        assert first in top
        if subs:
            assert _exit_code([first, "--help"]) == 0
            out = capsys.readouterr().out
            for sub in subs:
                assert sub in out


def test_version_from_the_installed_command() -> None:
    script = Path(sys.executable).parent / "dockwatch"
    assert script.is_file(), "dockwatch is not installed in this environment (pip install -e .)"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dockwatch {__version__}\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["simulate", "teleport"], "invalid choice: 'teleport'"),
        ([], "required: COMMAND"),
        (["receipts", "load", "a.yaml", "--no-such-option"], "unrecognized arguments"),
    ],
)
def test_a_wrong_command_line_exits_2_and_says_why(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "usage: dockwatch" in err


def test_simulate_all_defaults_are_the_simulators_own() -> None:
    from simulators import all as sim_all
    from simulators import central
    from simulators.llrp import server as llrp

    assert sim_all.DEFAULT_LLRP_PORT == llrp.DEFAULT_PORT
    assert sim_all.DEFAULT_CENTRAL_LISTEN == central.DEFAULT_LISTEN
    assert sim_all.DEFAULT_CENTRAL_DB == central.DEFAULT_DB
    modbus = build_parser(["simulate", "modbus"]).parse_args(["simulate", "modbus"])
    assert modbus.port == sim_all.DEFAULT_MODBUS_PORT


def test_simulate_all_refuses_a_bad_scenario_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "all", "--scenario", "no-such-scenario"]) == 2
    err = capsys.readouterr().err
    assert "no such file or bundled scenario" in err
    assert "demo" in err  # the bundled names are listed
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: nothing\n")
    assert main(["simulate", "all", "--scenario", str(empty)]) == 2
    assert "neither doors: nor shelves:" in capsys.readouterr().err
    clash = ["--scenario", "shelf_demo", "--modbus-port", "50070", "--central-listen"]
    assert main(["simulate", "all", *clash, "127.0.0.1:50070"]) == 2
    assert "port 50070 is used by both modbus and central" in capsys.readouterr().err


# --- dockwatch simulate all, for real ---------------------------------------------------------


def _scenario(tmp_path: Path) -> Path:
    """One door and one weight shelf in a single combined scenario, ports left to the CLI."""
    path = tmp_path / "bench.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "bench",
                "seed": 7,
                "duration_s": 600,
                "doors": [{"id": "door-1", "reader": "door-1-reader"}],
                "shelves": [
                    {
                        "id": "shelf-1",
                        "unit": 1,
                        "sku": "SKU-1001",
                        "unit_weight_g": 250.0,
                        "initial_units": 12,
                        "item_sigma_g": 0.0,
                        "noise_g": 0.0,
                    }
                ],
            }
        )
    )
    return path


def _processes_mentioning(marker: str) -> dict[int, str]:
    """Live processes whose command line contains ``marker`` (pid -> command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found[int(entry.name)] = cmdline
    return found


def _children(pid: int) -> dict[int, str]:
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if ppid == pid:
            out[int(entry.name)] = cmdline
    return out


class _Lines:
    """A child's output lines, read on a thread so the test can wait for one with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {text!r} within {timeout} s:\n" + self.dump())
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"output ended before {text!r}:\n" + self.dump())
            self.seen.append(line)
            if text in line:
                return line

    def rest(self, timeout: float) -> list[str]:
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.seen
            if line is not None:
                self.seen.append(line)

    def dump(self) -> str:
        return "\n".join(self.seen)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the reader closed the connection"
        data += chunk
    return data


def _tlv_params(body: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, value) of the TLV parameters in ``body``, depth first (LLRP 1.1 section 4.3)."""
    offset = 0
    while offset + 4 <= len(body):
        ptype, length = struct.unpack_from("!HH", body, offset)
        assert not ptype & 0x8000, "a TV parameter where only TLVs are expected"
        assert length >= 4, length
        value = body[offset + 4 : offset + length]
        yield ptype & 0x3FF, value
        if ptype & 0x3FF in (246,):  # ReaderEventNotificationData holds more parameters
            yield from _tlv_params(value)
        offset += length


def _llrp_greeting(port: int) -> int:
    """Connect as a client does and return the ConnectionAttemptEvent status the reader sends."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        header = _read_exactly(sock, 10)
        word, length, _msg_id = struct.unpack("!HII", header)
        assert (word >> 10) & 0x7 == 1, "LLRP version 1.0.1"
        assert word & 0x3FF == 63, "READER_EVENT_NOTIFICATION"
        body = _read_exactly(sock, length - 10)
    statuses: list[int] = [
        struct.unpack("!H", value)[0] for ptype, value in _tlv_params(body) if ptype == 256
    ]
    assert len(statuses) == 1, body.hex()
    return statuses[0]


def _modbus_net_weight(port: int) -> float:
    async def read() -> float:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        assert await client.connect()
        try:
            rr = await client.read_holding_registers(0, count=2, device_id=1)
            assert not rr.isError(), rr
            value = client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32)
        finally:
            client.close()
        assert isinstance(value, float)
        return value

    return asyncio.run(read())


@contextlib.contextmanager
def _simulate_all(*args: str) -> Iterator[tuple[subprocess.Popen[str], _Lines]]:
    """``dockwatch simulate all ARGS`` running; killed at the end if the test left it running."""
    proc = subprocess.Popen(
        [*DOCKWATCH, "simulate", "all", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = _Lines(proc.stdout)
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        lines.rest(timeout=5)
        proc.stdout.close()


@pytest.mark.integration
def test_simulate_all_serves_every_device_and_stops_them_all_on_ctrl_c(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    llrp, modbus, central = free_port(), free_port(), free_port()
    truth = tmp_path / "truth"
    with _simulate_all(
        "--scenario", str(scenario), "--llrp-port", str(llrp), "--modbus-port", str(modbus),
        "--central-listen", f"127.0.0.1:{central}", "--truth-dir", str(truth),
    ) as (proc, lines):  # fmt: skip
        lines.wait_for("simulator(s) up", timeout=60)
        listing = [lines.wait_for(text, timeout=5) for text in ("llrp ", "modbus ", "central ")]
        assert f"reader door-1-reader (door-1, antennas 1,2,3,4) on 127.0.0.1:{llrp}" in listing[0]
        assert f"127.0.0.1:{modbus}: unit 1 (shelf-1, SKU-1001)" in listing[1]
        assert f"gRPC ingest on 127.0.0.1:{central}, ledger {truth / 'central.db'}" in listing[2]

        children = _children(proc.pid)
        kinds = sorted(cmd.split(" simulate ")[1].split()[0] for cmd in children.values())
        assert kinds == ["central", "llrp", "modbus"], children

        # Each simulator answers as the real device would.
        assert _llrp_greeting(llrp) == 0  # ConnectionAttemptEvent: Success
        assert _modbus_net_weight(modbus) == pytest.approx(12 * 250.0, abs=1.0)
        with grpc.insecure_channel(f"127.0.0.1:{central}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, lines.dump()
    output = lines.seen
    assert output[-1] == "dockwatch simulate all: stopped.", "\n".join(output)
    assert not _processes_mentioning(str(scenario)), "a simulator outlived simulate all"
    assert (truth / "bench.portal-truth.jsonl").is_file()
    assert (truth / "bench.shelf-truth.jsonl").is_file()


@pytest.mark.integration
def test_simulate_all_exits_1_with_the_error_of_a_simulator_that_cannot_start(
    tmp_path: Path,
) -> None:
    scenario = _scenario(tmp_path)
    not_a_file = tmp_path / "ledger"  # central cannot open a directory as its SQLite ledger
    not_a_file.mkdir()
    result = subprocess.run(
        [
            *DOCKWATCH, "simulate", "all", "--scenario", str(scenario),
            "--llrp-port", str(free_port()), "--modbus-port", str(free_port()),
            "--central-listen", f"127.0.0.1:{free_port()}", "--central-db", str(not_a_file),
            "--logs", str(tmp_path / "logs"),
        ],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "simulator central exited with status 1 before listening" in result.stderr
    assert "dockwatch simulate central: unable to open database file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not _processes_mentioning(str(scenario)), "a simulator outlived simulate all"
    assert "listening" in (tmp_path / "logs" / "llrp.log").read_text()


def test_simulate_all_starts_nothing_when_a_port_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The readiness probe would take the other program for the simulator: refuse up front."""
    scenario = _scenario(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["simulate", "all", "--scenario", str(scenario), "--modbus-port", str(port)]
        assert main([*argv, "--llrp-port", str(free_port()), "--no-central"]) == 1
    err = capsys.readouterr().err
    assert f"already in use, so nothing was started: 127.0.0.1:{port} (modbus)" in err
    assert not _processes_mentioning(str(scenario))


@pytest.mark.integration
def test_simulate_all_stops_on_sigterm_too(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    with _simulate_all(
        "--scenario", str(scenario), "--no-central", "--llrp-port", str(free_port()),
        "--modbus-port", str(free_port()), "--logs", str(tmp_path / "logs"),
    ) as (proc, lines):  # fmt: skip
        lines.wait_for("2 simulator(s) up", timeout=60)
        assert len(_children(proc.pid)) == 2
        proc.terminate()
        assert proc.wait(timeout=30) == 0, lines.dump()
    assert not _processes_mentioning(str(scenario))
    assert sorted(os.listdir(tmp_path / "logs")) == ["llrp.log", "modbus.log"]


@pytest.mark.integration
def test_simulate_all_serves_tls_when_given_a_certificate(tmp_path: Path) -> None:
    """``--tls-cert/--tls-key``: LLRP over TLS, Modbus/TCP Security and gRPC with TLS."""
    server = self_signed_server(tmp_path / "pki")
    scenario = _scenario(tmp_path)
    llrp, modbus, central = free_port(), free_port(), free_port()
    with _simulate_all(
        "--scenario", str(scenario), "--llrp-port", str(llrp), "--modbus-port", str(modbus),
        "--central-listen", f"127.0.0.1:{central}", "--truth-dir", str(tmp_path / "truth"),
        "--tls-cert", str(server.cert_file), "--tls-key", str(server.key_file),
    ) as (proc, lines):  # fmt: skip
        lines.wait_for("simulator(s) up", timeout=60)
        context = ssl.create_default_context(cafile=str(server.cert_file))
        for port in (llrp, modbus):
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                assert tls.version() in {"TLSv1.2", "TLSv1.3"}
                if port == llrp:  # the reader greets inside TLS: READER_EVENT_NOTIFICATION
                    word, _length, _msg_id = struct.unpack("!HII", _read_exactly(tls, 10))
                    assert word & 0x3FF == 63
        credentials = grpc.ssl_channel_credentials(server.cert_file.read_bytes())
        with grpc.secure_channel(f"localhost:{central}", credentials) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, lines.dump()


def test_simulate_all_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    result = subprocess.run(
        [*DOCKWATCH, "simulate", "all", "--scenario", str(scenario), "--tls-cert", "x.pem"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in result.stderr


@pytest.mark.parametrize("kind", ["llrp", "modbus"])
def test_a_simulator_given_a_missing_scenario_exits_2_without_a_traceback(kind: str) -> None:
    result = subprocess.run(
        [*DOCKWATCH, "simulate", kind, "--scenario", "no-such-scenario.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "no-such-scenario.yaml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_modbus_simulator_stops_cleanly_on_sigint_and_sigterm(sig: signal.Signals) -> None:
    port = free_port()
    with subprocess.Popen(
        [*DOCKWATCH, "simulate", "modbus", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
