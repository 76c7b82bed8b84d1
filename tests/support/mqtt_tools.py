"""Helpers of the MQTT tests: an independent ``mosquitto_sub``, a throwaway PKI, a store.

Mosquitto drops its privileges to the ``mosquitto`` user when started as root, and pytest's
``tmp_path`` is private to the test user: files the broker must read (passwords, certificates)
or write (persistence) live in :func:`broker_dir`, a directory it can use.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_store.records import LocationRecord
from edge_store.repository import EdgeStore
from gateway.domain.model import (
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)
from tests.support.broker import MosquittoBroker

SITE = "dc-test"
T0 = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
LOCATIONS = ("yard", "receiving", "shelf-a1", "customer")
# (kind, from, to) cycled through by scenario(): receipts, put-away, picks, restocks.
FLOWS = (
    (MovementKind.RECEIPT, "yard", "receiving"),
    (MovementKind.TRANSFER, "receiving", "shelf-a1"),
    (MovementKind.PICK, "shelf-a1", "customer"),
    (MovementKind.RECEIPT, "yard", "receiving"),
    (MovementKind.RESTOCK, "receiving", "shelf-a1"),
)


def open_store(url: str) -> EdgeStore:
    store = EdgeStore.open(url, site=SITE)
    store.sync_catalog(
        [
            CatalogItem(sku=Sku("SKU-1001"), name="Widget"),
            CatalogItem(sku=Sku("SKU-2002"), name="Gadget", pack_size=12),
        ],
        [LocationRecord(loc) for loc in LOCATIONS],
    )
    return store


def scenario(start: int, count: int, *, tag: str = "m") -> list[Movement]:
    """``count`` movements with distinct ids, numbered from ``start``."""
    out = []
    for i in range(start, start + count):
        kind, src, dst = FLOWS[i % len(FLOWS)]
        rfid = kind is MovementKind.RECEIPT
        out.append(
            Movement(
                movement_id=MovementId(f"{tag}-{i:06d}"),
                kind=kind,
                sku=Sku("SKU-1001" if i % 3 else "SKU-2002"),
                quantity=1 + i % 12,
                from_location=LocationId(src),
                to_location=LocationId(dst),
                source_type=SourceType.RFID_PORTAL if rfid else SourceType.WEIGHT_SHELF,
                source_id="door-1" if rfid else "shelf-a1",
                observed_at=T0 + timedelta(milliseconds=250 * i),
                confidence=0.97 if rfid else 0.9,
                epcs=(f"urn:epc:id:sgtin:0614141.812345.{i}",) if rfid else (),
            )
        )
    return out


@contextmanager
def broker_dir() -> Iterator[Path]:
    """A scratch directory the (unprivileged) broker can read and write."""
    path = Path(tempfile.mkdtemp(prefix="dockwatch-mqtt-"))
    try:
        path.chmod(0o777)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


async def await_for(predicate: Callable[[], bool], *, within: float, what: str) -> None:
    """Wait (polling every 50 ms) until ``predicate()`` holds; fail after ``within`` s."""
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - the state lives in files and other processes
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retained: bool


class MosquittoSub:
    """An independent ``mosquitto_sub`` writing every message's raw bytes (hex) to a file.

    With ``persistent`` (the default) its session and subscriptions are registered with the
    broker before the constructor returns (``-c -E``), so it misses nothing published after
    that, across its own reconnects and, on a broker with persistence, broker restarts.
    """

    def __init__(
        self,
        broker: MosquittoBroker,
        topics: Sequence[str],
        out: Path,
        *,
        client_id: str,
        protocol: str = "5",
        persistent: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        version = "mqttv5" if protocol == "5" else "mqttv311"
        self._args = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1"]
        self._args += ["-V", version, "-i", client_id, *extra]
        if persistent:
            self._args.append("-c")
        for topic in topics:
            self._args += ["-t", topic]
        if persistent:
            subprocess.run([*self._args, "-E"], check=True, timeout=10, capture_output=True)
        self._out = out
        with out.open("wb") as sink:
            self._proc = subprocess.Popen(
                [*self._args, "-F", "%r %t %x"], stdout=sink, stderr=subprocess.DEVNULL
            )

    def messages(self) -> list[Received]:
        out = []
        for line in self._out.read_text().splitlines():
            if line.count(" ") < 2:
                continue  # a line still being written
            retained, topic, payload = line.split(" ", 2)
            out.append(Received(topic, bytes.fromhex(payload), retained == "1"))
        return out

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def __enter__(self) -> MosquittoSub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def retained_now(
    broker: MosquittoBroker, topics: Sequence[str], out: Path, *, expect: int
) -> list[Received]:
    """The retained messages a brand-new subscriber receives at once (``expect`` of them)."""
    args = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-F", "%r %t %x"]
    for topic in topics:
        args += ["-t", topic]
    with out.open("wb") as sink:
        subprocess.run([*args, "-C", str(expect), "-W", "5"], stdout=sink, check=False)
    got = []
    for line in out.read_text().splitlines():
        retained, topic, payload = line.split(" ", 2)
        got.append(Received(topic, bytes.fromhex(payload), retained == "1"))
    return got


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_pki(directory: Path) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1, a client certificate, and a second
    CA that signed none of them (a client trusting only it must reject the server)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    for ca in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN=dockwatch test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
        )  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip
    for path in directory.iterdir():
        path.chmod(0o644)  # a throwaway PKI the unprivileged broker must read
    return Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.crt",
    )
