"""Start device simulators as child processes, wait until they listen, stop them all.

Used by ``dockwatch simulate all`` and meant for ``dockwatch demo``. Each simulator runs through
its own command line (``python -m gateway.cli simulate KIND ...``), so what is launched here is
exactly what an operator would run by hand.

Theory of operation:

- Every child runs in a session of its own: Ctrl-C in the terminal reaches only the launching
  process, which then stops the children itself, in the reverse order of their start (as a site
  shuts down: consumers before devices). A child that exits on its own is therefore always news.
- A child's standard output and error are read line by line, written to its log file (or, with
  none, to our standard output behind the child's name), and the last :data:`TAIL_LINES` lines
  are kept so that a failure can say why.
- Nothing starts while an endpoint is taken (:func:`port_free`): the readiness probe could not
  tell the simulator from the program already listening there.
- Start-up waits until every endpoint a child should listen on accepts a TCP connection; a child
  that exits before that, or does not listen within ``start_timeout_s``, fails the whole launch
  with :class:`SimulatorFailed`, after the children already started are stopped.
- Stopping sends SIGTERM to the child's process group, waits ``stop_timeout_s``, then SIGKILL.
  A second cancellation while stopping (a second Ctrl-C) kills what is left at once: nothing is
  left running either way. A launcher that is itself SIGKILLed cannot stop its children.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from dockwatch_core.errors import GatewayError

TAIL_LINES = 20


class SimulatorFailed(GatewayError):
    """A simulator did not start, or stopped on its own; the message quotes its last lines."""


@dataclass(frozen=True, slots=True)
class SimulatorSpec:
    """One simulator process: ``dockwatch simulate <args...>`` and where it will listen."""

    name: str
    """Short name for messages and output prefixes, e.g. ``llrp``."""
    args: tuple[str, ...]
    """Arguments after ``dockwatch simulate``, e.g. ``("modbus", "--port", "5020")``."""
    endpoints: tuple[tuple[str, int], ...]
    """(host, port) pairs that accept TCP connections once the simulator is up."""
    log: Path | None = None
    """Write the simulator's output here; None: to our standard output behind its name."""

    def __post_init__(self) -> None:
        if not self.name or not self.args:
            raise ValueError("a simulator needs a name and its command arguments")


@dataclass(slots=True)
class RunningSimulator:
    spec: SimulatorSpec
    process: asyncio.subprocess.Process
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    relay: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_status(self) -> str:
        """How it ended, in words: ``exited with status 1``, ``was killed by SIGKILL``."""
        code = self.process.returncode
        if code is None:
            return "is running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    async def output_tail(self) -> str:
        """The last lines it printed (all of them, once it has exited)."""
        if self.process.returncode is not None and self.relay is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await asyncio.shield(self.relay)
        return "\n".join(f"  {line}" for line in self.tail) or "  (it printed nothing)"


class Simulators:
    """The running simulators of one launch (see :func:`launched`)."""

    def __init__(self, running: Sequence[RunningSimulator]) -> None:
        self.running = tuple(running)

    async def wait_any_exit(self) -> RunningSimulator:
        """Return the first simulator to exit (they are meant to run until stopped)."""
        waits = {asyncio.ensure_future(r.process.wait()): r for r in self.running}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waits:
                future.cancel()
        return waits[next(iter(done))]

    async def failure(self, sim: RunningSimulator) -> SimulatorFailed:
        """The error describing a simulator that stopped on its own."""
        return SimulatorFailed(
            f"simulator {sim.spec.name} {sim.exit_status()}; "
            f"its last lines:\n{await sim.output_tail()}"
        )


def simulate_command(*args: str) -> list[str]:
    """The argv of ``dockwatch simulate ARGS`` with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "gateway.cli", "simulate", *args]


@contextlib.asynccontextmanager
async def launched(
    specs: Sequence[SimulatorSpec],
    *,
    start_timeout_s: float = 15.0,
    stop_timeout_s: float = 5.0,
    out: TextIO | None = None,
) -> AsyncIterator[Simulators]:
    """Start ``specs`` in order, wait until each listens, yield them; stop all on exit."""
    busy = [
        f"{host}:{port} ({spec.name})"
        for spec in specs
        for host, port in spec.endpoints
        if not port_free(host, port)
    ]
    if busy:
        raise SimulatorFailed(f"already in use, so nothing was started: {', '.join(busy)}")
    running: list[RunningSimulator] = []
    try:
        for spec in specs:
            running.append(await _start(spec, out if out is not None else sys.stdout))
        for sim in running:
            await _wait_listening(sim, start_timeout_s)
        yield Simulators(running)
    finally:
        await _stop_all(running, stop_timeout_s)


def port_free(host: str, port: int) -> bool:
    """Whether a TCP server could listen on ``host:port`` now (the readiness probe cannot tell
    our simulator from another program that already listens there)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def _start(spec: SimulatorSpec, out: TextIO) -> RunningSimulator:
    process = await asyncio.create_subprocess_exec(
        *simulate_command(*spec.args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    sim = RunningSimulator(spec, process)
    sim.relay = asyncio.create_task(_relay(sim, out), name=f"relay-{spec.name}")
    return sim


async def _relay(sim: RunningSimulator, out: TextIO) -> None:
    """Copy the child's output line by line until it closes its end."""
    stream = sim.process.stdout
    assert stream is not None
    log_file: BinaryIO | None = None
    if sim.spec.log is not None:
        log_file = await asyncio.to_thread(sim.spec.log.open, "ab")
    relaying = True
    try:
        while raw := await stream.readline():
            line = raw.decode(errors="replace").rstrip("\r\n")
            sim.tail.append(line)
            if log_file is not None:
                log_file.write(raw)
                log_file.flush()
            elif relaying:
                try:
                    print(f"{sim.spec.name:<8}| {line}", file=out, flush=True)
                except OSError:  # our output is gone (a closed pipe): keep draining the child's
                    relaying = False
    finally:
        if log_file is not None:
            log_file.close()


async def _wait_listening(sim: RunningSimulator, within_s: float) -> None:
    exited = asyncio.ensure_future(sim.process.wait())
    listening: asyncio.Future[None] | None = None
    try:
        async with asyncio.timeout(within_s):
            for host, port in sim.spec.endpoints:
                listening = asyncio.ensure_future(wait_port(host, port))
                done, _ = await asyncio.wait(
                    {listening, exited}, return_when=asyncio.FIRST_COMPLETED
                )
                if listening not in done:
                    raise SimulatorFailed(
                        f"simulator {sim.spec.name} {sim.exit_status()} before listening on "
                        f"{host}:{port}; "
                        f"its last lines:\n{await sim.output_tail()}"
                    )
                listening.result()
    except TimeoutError as exc:
        endpoints = ", ".join(f"{h}:{p}" for h, p in sim.spec.endpoints)
        raise SimulatorFailed(
            f"simulator {sim.spec.name} did not listen on {endpoints} within {within_s:g} s; "
            f"its last lines:\n{await sim.output_tail()}"
        ) from exc
    finally:
        exited.cancel()
        if listening is not None:
            listening.cancel()  # still probing when the time ran out or the child exited


async def wait_port(host: str, port: int) -> None:
    """Return once ``host:port`` accepts a TCP connection (bound it with ``asyncio.timeout``)."""
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


async def _stop_all(running: list[RunningSimulator], stop_timeout_s: float) -> None:
    try:
        for sim in reversed(running):
            await _stop(sim, stop_timeout_s)
    except asyncio.CancelledError:
        for sim in running:
            _signal(sim, signal.SIGKILL)
        raise
    finally:
        for sim in running:
            if sim.relay is not None and not sim.relay.done():
                sim.relay.cancel()
        relays = [sim.relay for sim in running if sim.relay is not None]
        # Relays end at EOF: by now every child has exited, or was just killed.
        await asyncio.gather(*relays, return_exceptions=True)


async def _stop(sim: RunningSimulator, stop_timeout_s: float) -> None:
    if sim.process.returncode is not None:
        _signal(sim, signal.SIGKILL)  # the leader is gone; its group must go too
        return
    _signal(sim, signal.SIGTERM)
    try:
        async with asyncio.timeout(stop_timeout_s):
            await sim.process.wait()
    except TimeoutError:
        _signal(sim, signal.SIGKILL)
        await sim.process.wait()
    _signal(sim, signal.SIGKILL)  # anything it started and left behind in its group


def _signal(sim: RunningSimulator, sig: signal.Signals) -> None:
    """Signal the child's whole process group (its session: it leads both)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sim.pid, sig)
