"""``dockwatch stock`` and ``dockwatch movements`` against a real local API on a free port.

The API server runs on its own event loop in a thread; the commands run in-process through
``gateway.cli.main`` (their output captured), or as processes where a signal is part of the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_store import EdgeStore, LocationRecord
from gateway.adapters.grpc_api import EdgeApiServer
from gateway.api_cli import movement_line
from gateway.cli import main as dockwatch
from gateway.domain import payloads
from gateway.domain.model import (
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)
from tests.support.net import free_port
from tests.support.tls import self_signed_server

pytestmark = pytest.mark.integration

SITE = "dc-cli"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
TOKEN = "cli-t0ken"
WAIT_S = 20.0


def _movement(i: int) -> Movement:
    pick = i % 4 == 3
    return Movement(
        movement_id=MovementId(f"cli-{i:05d}"),
        kind=MovementKind.PICK if pick else MovementKind.RECEIPT,
        sku=Sku("SKU-2" if i % 2 else "SKU-1"),
        quantity=1 + i % 6,
        from_location=LocationId("shelf-a1" if pick else "yard"),
        to_location=LocationId("customer" if pick else "receiving"),
        source_type=SourceType.WEIGHT_SHELF if pick else SourceType.RFID_PORTAL,
        source_id="shelf-a1" if pick else "door-1",
        observed_at=T0 + timedelta(seconds=i),
        confidence=1.0 if pick else 0.95,
        epcs=() if pick else (f"urn:epc:id:sgtin:0614141.812345.{i}",),
    )


def _record(store: EdgeStore, first: int, count: int) -> None:
    for start in range(first, first + count, 1000):
        batch = range(start, min(start + 1000, first + count))
        store.record([_movement(i) for i in batch], now=T0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    with EdgeStore.open(f"sqlite:///{tmp_path / 'edge.db'}", site=SITE) as s:
        s.sync_catalog(
            [
                CatalogItem(sku=Sku("SKU-1"), name="Widget"),
                CatalogItem(sku=Sku("SKU-2"), name="Gadget"),
            ],
            [LocationRecord(id=x) for x in ("yard", "receiving", "shelf-a1", "customer")],
        )
        yield s


class ApiThread:
    """An EdgeApiServer serving from its own event loop in a thread."""

    def __init__(self, store: EdgeStore, **kwargs: Any) -> None:
        kwargs.setdefault("listen", "127.0.0.1:0")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server = EdgeApiServer(store, site=SITE, poll_interval_s=60.0, **kwargs)
        self.port = self._call(self.server.start())
        self.api = f"127.0.0.1:{self.port}"

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT_S)

    def notify(self) -> None:
        self._loop.call_soon_threadsafe(self.server.notify)

    def stop(self) -> None:
        if self._loop.is_running():
            self._call(self.server.stop(1.0))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(WAIT_S)
            self._loop.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def api(store: EdgeStore) -> Iterator[ApiThread]:
    server = ApiThread(store, token=TOKEN)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKWATCH_CONFIG", raising=False)
    monkeypatch.delenv("DOCKWATCH_API_TOKEN", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = dockwatch(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- dockwatch stock ---------------------------------------------------------------------------


def test_stock_prints_a_table_as_of_a_seq_and_json_lines(
    store: EdgeStore, api: ApiThread, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(store, 0, 10)
    levels = store.stock()
    conn = ("--api", api.api, "--token-file", str(token_file))

    code, out, err = run(capsys, "stock", *conn)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["LOCATION", "SKU", "ON_HAND", "LAST_SEQ", "UPDATED_AT"]
    assert [line.split() for line in lines[1:-1]] == [
        [lv.location, lv.sku, str(lv.on_hand), str(lv.last_seq), "2026-11-22T10:00:00.000Z"]
        for lv in levels
    ]
    assert lines[-1] == f"site {SITE}, as of seq 10: {len(levels)} level(s)"

    code, out, _ = run(capsys, "stock", *conn, "--location", "receiving", "--sku", "SKU-2")
    assert code == 0
    (row,) = [lv for lv in levels if (lv.location, lv.sku) == ("receiving", "SKU-2")]
    assert out.splitlines()[1].split()[:3] == ["receiving", "SKU-2", str(row.on_hand)]
    assert out.splitlines()[-1].endswith("1 level(s) (location receiving sku SKU-2)")

    code, out, _ = run(capsys, "stock", *conn, "--json")
    assert code == 0
    assert out.splitlines() == [payloads.stock_json(SITE, lv).decode() for lv in levels]


# --- dockwatch movements -----------------------------------------------------------------------


def test_movements_pages_through_everything_from_a_seq_up_to_a_limit(
    store: EdgeStore,
    api: ApiThread,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _record(store, 0, 2345)  # more than two pages of the command's 1000
    monkeypatch.setenv("DOCKWATCH_API_TOKEN", TOKEN)
    stored = store.movements_since(0, 5000)

    code, out, err = run(capsys, "movements", "--api", api.api, "--json")
    assert (code, err) == (0, "")
    assert out.splitlines() == [payloads.movement_json(r).decode() for r in stored]

    code, out, _ = run(capsys, "movements", "--api", api.api, "--after-seq", "2340")
    assert code == 0
    assert out.splitlines() == [movement_line(r) for r in stored[2340:]]
    assert out.splitlines()[0].split()[:4] == [
        "2341",
        "2026-11-22T10:39:00.000Z",
        "receipt",
        "SKU-1",
    ]

    code, out, _ = run(
        capsys, "movements", "--api", api.api, "--after-seq", "999", "--limit", "1002"
    )
    assert code == 0
    assert [int(line.split()[0]) for line in out.splitlines()] == list(range(1000, 2002))

    code, out, _ = run(capsys, "movements", "--api", api.api, "--after-seq", "2345")
    assert (code, out) == (0, "")


def test_address_and_token_come_from_the_config(
    store: EdgeStore,
    tmp_path: Path,
    token_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway listens on every interface; its config is all the command needs."""
    port = free_port()
    server = ApiThread(store, listen=f"0.0.0.0:{port}", token=TOKEN)
    try:
        _record(store, 0, 3)
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "site": {"id": SITE},
                    "api": {"grpc_listen": f"0.0.0.0:{port}", "token_file": str(token_file)},
                }
            )
        )
        code, out, err = run(capsys, "movements", "-c", str(config))
        assert (code, err) == (0, "")
        assert len(out.splitlines()) == 3
        monkeypatch.setenv("DOCKWATCH_CONFIG", str(config))
        code, out, err = run(capsys, "stock")
        assert (code, err) == (0, "")
        assert "as of seq 3" in out
    finally:
        server.stop()


def test_tls_with_a_ca_file(
    store: EdgeStore, tmp_path: Path, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = self_signed_server(tmp_path / "tls")
    server = ApiThread(
        store,
        listen="0.0.0.0:0",
        token=TOKEN,
        tls_cert_file=pem.cert_file,
        tls_key_file=pem.key_file,
    )
    try:
        _record(store, 0, 2)
        conn = ("--api", server.api, "--token-file", str(token_file))
        code, out, err = run(capsys, "stock", *conn, "--ca-file", str(pem.cert_file))
        assert (code, err) == (0, "")
        assert "as of seq 2" in out
        # Plaintext against a TLS server: unreachable, said in one line.
        code, out, err = run(capsys, "stock", *conn, "--timeout", "5")
        assert code == 1
        assert err.startswith(f"dockwatch stock: cannot reach the gateway API at {server.api}")
    finally:
        server.stop()


# --- failures and exit codes -------------------------------------------------------------------


def test_unreachable_or_refused_exits_1_with_one_line_naming_the_address(
    api: ApiThread, token_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "stock", "--api", nobody)
    assert (code, out) == (1, "")
    assert err.startswith(f"dockwatch stock: cannot reach the gateway API at {nobody}: UNAVAILABLE")
    assert len(err.splitlines()) == 1

    wrong = tmp_path / "wrong-token"
    wrong.write_text("nope")
    for extra in ((), ("--token-file", str(wrong))):
        code, out, err = run(capsys, "movements", "--api", api.api, *extra)
        assert (code, out) == (1, "")
        assert err == (
            f"dockwatch movements: the gateway API at {api.api} refused the call: bad or missing "
            "bearer token (give --token-file, $DOCKWATCH_API_TOKEN or -c CONFIG)\n"
        )

    code, _, err = run(
        capsys, "movements", "--api", api.api, "--token-file", str(token_file), "--after-seq", "7"
    )
    assert code == 1
    assert "OUT_OF_RANGE: after_seq 7 is beyond the last recorded seq 0" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("stock", "--api", "localhost"), "--api: must be 'host:port'"),
        (("stock", "--token-file", "/nonexistent/token"), "--token-file: cannot read"),
        (("stock", "--ca-file", __file__), "is not a PEM file"),
        (("stock", "--cert-file", __file__), "--cert-file and --key-file go together"),
        (("movements", "-c", "/nonexistent/gw.yaml"), "cannot read the config file"),
    ],
)
def test_usage_errors_exit_2(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert message in err


@pytest.mark.parametrize(
    "argv", [("movements", "--limit", "0"), ("movements", "--after-seq", "-1")]
)
def test_bad_numbers_are_usage_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as info:
        dockwatch(list(argv))
    assert info.value.code == 2


# --- --follow, as a process --------------------------------------------------------------------


def _follow(api: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "movements", "--api", api, "--follow", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DOCKWATCH_API_TOKEN": TOKEN},
    )


def _lines(process: subprocess.Popen[str], n: int) -> list[str]:
    assert process.stdout is not None
    return [process.stdout.readline().rstrip("\n") for _ in range(n)]


@pytest.mark.timeout(60)
def test_follow_prints_new_movements_until_ctrl_c_which_exits_0(
    store: EdgeStore, api: ApiThread
) -> None:
    _record(store, 0, 4)
    follower = _follow(api.api, "--json", "--after-seq", "1")
    try:
        assert [json.loads(line)["seq"] for line in _lines(follower, 3)] == [2, 3, 4]
        _record(store, 4, 3)
        api.notify()
        assert [json.loads(line)["seq"] for line in _lines(follower, 3)] == [5, 6, 7]
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=WAIT_S)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert (follower.returncode, out, err) == (0, "", "")


@pytest.mark.timeout(60)
def test_follow_ends_1_with_where_to_resume_when_the_gateway_stops(
    store: EdgeStore, api: ApiThread
) -> None:
    _record(store, 0, 2)
    follower = _follow(api.api)
    try:
        assert [line.split()[0] for line in _lines(follower, 2)] == ["1", "2"]
        # The command pages, then opens its watch: stop the gateway once the watch is open.
        deadline = time.monotonic() + WAIT_S
        while api.server.active_watches == 0:  # a server-side counter: nothing to await
            assert time.monotonic() < deadline, "the watch never opened"
            time.sleep(0.01)
        api.stop()
        out, err = follower.communicate(timeout=WAIT_S)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert (follower.returncode, out) == (1, "")
    assert err == (
        f"dockwatch movements: lost the gateway API at {api.api} (UNAVAILABLE: the gateway is "
        "stopping); resume with --after-seq 2\n"
    )


@pytest.mark.timeout(60)
def test_follow_with_a_limit_stops_inside_a_page_of_live_movements(
    store: EdgeStore, api: ApiThread
) -> None:
    _record(store, 0, 2)
    follower = _follow(api.api, "--limit", "5")
    try:
        assert [line.split()[0] for line in _lines(follower, 2)] == ["1", "2"]
        deadline = time.monotonic() + WAIT_S
        while api.server.active_watches == 0:  # a server-side counter: nothing to await
            assert time.monotonic() < deadline, "the watch never opened"
            time.sleep(0.01)
        _record(store, 2, 6)  # one commit: the watch sends the six in one response
        api.notify()
        out, err = follower.communicate(timeout=WAIT_S)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert (follower.returncode, err) == (0, "")
    assert [line.split()[0] for line in out.splitlines()] == ["3", "4", "5"]
