"""The operator console in a real browser: Debian's headless Chromium driven by Selenium, during a
simulated run (the project's LLRP and Modbus simulators, a real Gateway, a real broker).

- every page loads without console errors and is screenshotted (1280x800, one at tablet width)
  into ``test-artifacts/console/`` (docs/console.md shows some of them);
- the stock page shows what the gRPC API says;
- a movement recorded now appears on the movements page within 2 s, without a reload;
- a bad expected-receipts upload shows its error by key path; a good one loads;
- without the operator token (or with a wrong one) the actions are refused.

Chromium and chromedriver come from apt (``deploy/install-system-deps.sh test``); the test skips
without them locally and fails under CI=true. No browser is ever downloaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.app import Gateway
from gateway.config import load_config
from gateway.demo import DEMO_CONFIG, PORTAL_SCENARIO, simulator_specs
from gateway.domain.model import (
    Alert,
    AlertKind,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Severity,
    Sku,
    SourceType,
)
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc
from simulators.launcher import launched, port_free
from tests.conftest import missing
from tests.support.broker import MosquittoBroker
from tests.support.net import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
OPERATOR_TOKEN = "op-s3cret-token"
WAIT_S = 30.0
PAGES = ("", "doors", "shelves", "stock", "movements", "receipts", "alerts")


def _consecutive_free_ports() -> int:
    for _ in range(50):
        port = free_port()
        if port < 65000 and port_free("127.0.0.1", port + 1):
            return port
    raise RuntimeError("no two consecutive free ports")


@dataclass
class Run:
    url: str
    grpc_target: str
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    workdir: Path

    def call(self, coro: Any, timeout: float = WAIT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="module")
def run(mosquitto: MosquittoBroker) -> Iterator[Run]:
    """The demo's site on free ports, with an operator token and an expected-receipts file, run
    in a thread of its own (the browser is driven from the test's thread)."""
    workdir = Path(tempfile.mkdtemp(prefix="dockwatch-console-"))
    llrp, modbus = _consecutive_free_ports(), free_port()
    text = DEMO_CONFIG.read_text()
    text = text.replace("15084", str(llrp)).replace("15085", str(llrp + 1))
    text = text.replace("15020", str(modbus)).replace("11883", str(mosquitto.port))
    text = re.sub(r"\n  central: .*\n", "\n", text)
    metrics, grpc_port = free_port(), free_port()
    (workdir / "operator.token").write_text(OPERATOR_TOKEN + "\n")
    (workdir / "expected.json").write_text('{"receipts": []}\n')
    text = text.replace(
        'api: {grpc_listen: "127.0.0.1:50061", metrics_listen: "127.0.0.1:9108"}',
        f'api: {{grpc_listen: "127.0.0.1:{grpc_port}", metrics_listen: "127.0.0.1:{metrics}",'
        f' operator_token_file: "{workdir / "operator.token"}"}}\n'
        f'receiving: {{expected_file: "{workdir / "expected.json"}"}}',
    )
    text = text.replace("sqlite:///./var/demo.db", f"sqlite:///{workdir / 'edge.db'}")
    config_file = workdir / "gateway.yaml"
    config_file.write_text(text)
    config = load_config(config_file, environ={})
    assert config.sinks.central is None

    # The portal scenario names its readers' ports: a copy on this run's ports.
    scenario = workdir / "portal-scenario.yaml"
    scenario.write_text(
        PORTAL_SCENARIO.read_text().replace("15084", str(llrp)).replace("15085", str(llrp + 1))
    )
    specs = [
        dataclasses.replace(
            spec, args=tuple(str(scenario) if a == str(PORTAL_SCENARIO) else a for a in spec.args)
        )
        for spec in simulator_specs(config, workdir, "127.0.0.1:1")
    ]
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        box["loop"] = asyncio.get_running_loop()
        async with launched(specs):
            gateway = Gateway(config, environ={})
            box["gateway"] = gateway
            task = asyncio.get_running_loop().create_task(gateway.run())
            async with asyncio.timeout(WAIT_S):
                await gateway.ready.wait()
            started.set()
            await stop.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test through the box
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=thread_main, name="gateway", daemon=True)
    thread.start()
    assert started.wait(WAIT_S * 2), "the gateway did not start"
    if "error" in box:
        raise box["error"]
    yield Run(
        url=f"http://127.0.0.1:{metrics}/",
        grpc_target=f"127.0.0.1:{grpc_port}",
        gateway=box["gateway"],
        loop=box["loop"],
        workdir=workdir,
    )
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(WAIT_S)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        missing("chromium and chromium-driver (deploy/install-system-deps.sh test)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dockwatch-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver: Any, condition: Any, timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: d.find_element("id", "live").text == "live")


def _errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _grpc_stock(target: str) -> dict[tuple[str, str], int]:
    with grpc.insecure_channel(target) as channel:
        stub = edge_api_pb2_grpc.EdgeApiStub(channel)
        snapshot = stub.GetStock(edge_api_pb2.StockQuery(), timeout=10)
    return {(level.location, level.sku): level.on_hand for level in snapshot.levels}


def _page_stock(driver: Any) -> dict[tuple[str, str], int]:
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#stock tbody tr')).map(r => ["
        "r.querySelector('[data-field=location]').textContent,"
        "r.querySelector('[data-field=sku]').textContent,"
        "r.querySelector('[data-field=on_hand]').textContent])"
    )
    return {(loc, sku): int(n) for loc, sku, n in rows}


def _post(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


def test_every_page_loads_without_errors_and_is_screenshotted(run: Run, browser: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Let the scenarios play their first minute (a door pass, a pick, the low-stock alert on
    # shelf-a1): the pages are worth looking at then.
    feed = run.gateway.console_feed

    def eventful(_: object) -> bool:
        kinds = {(m["source_type"], m["kind"]) for m in list(feed.movements)}
        return (
            any(source == "rfid_portal" for source, _ in kinds)
            and ("weight_shelf", "pick") in kinds
            and bool(feed.active)
        )

    _wait(browser, eventful, 90.0)
    browser.set_window_size(1280, 800)
    for name in PAGES:
        _open(browser, run.url + name)
        assert _errors(browser) == [], name
        assert browser.find_element("css selector", "h1").text
        if name == "doors":  # the per-antenna strips fill once a second
            strip = browser.find_element("css selector", "#antennas td[data-field=strip]")
            _wait(browser, lambda _, cell=strip: len(cell.text) >= 5)
            # The reads of a pass, per antenna: the commissioning view.
            browser.find_element("css selector", "#passes td.reads button").click()
            _wait(browser, lambda d: d.find_elements("css selector", "#tag-reads line.mark"))
            assert "reads" in browser.find_element("id", "tag-legend").text
            browser.execute_script(
                "const top = document.getElementById('tag-form').getBoundingClientRect().top;"
                "window.scrollTo(0, top + window.scrollY - 140)"
            )
            browser.save_screenshot(str(ARTIFACTS / "doors-reads.png"))
            browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ARTIFACTS / f"{name or 'overview'}.png"))
    # Keyboard: the first Tab lands on a link of the page navigation.
    from selenium.webdriver.common.keys import Keys

    _open(browser, run.url)
    browser.find_element("css selector", "body").send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.tag_name == "a"
    browser.set_window_size(820, 1180)  # a tablet, portrait
    _open(browser, run.url + "shelves")
    browser.save_screenshot(str(ARTIFACTS / "shelves-tablet.png"))
    _open(browser, run.url + "stock")
    browser.save_screenshot(str(ARTIFACTS / "stock-tablet.png"))
    assert _errors(browser) == []
    browser.set_window_size(1280, 800)


def test_the_stock_page_shows_what_the_grpc_api_says(run: Run, browser: Any) -> None:
    _open(browser, run.url + "stock")
    # The scenario keeps moving goods: the page (updated live) and the API agree at some moment.
    # (Not empty: alone, this test may start before the scenario has moved anything.)
    _wait(browser, lambda d: (page := _page_stock(d)) and page == _grpc_stock(run.grpc_target))


def test_a_new_movement_appears_within_two_seconds_without_a_reload(run: Run, browser: Any) -> None:
    _open(browser, run.url + "movements")
    browser.execute_script("window.dockwatchNoReload = true")
    now = datetime.now(UTC)
    movement = Movement(
        movement_id=MovementId(f"console-test-{now.timestamp()}"),
        kind=MovementKind.TRANSFER,
        sku=Sku("SKU-1003"),
        quantity=3,
        from_location=LocationId("receiving"),
        to_location=LocationId("staging"),
        source_type=SourceType.MANUAL,
        source_id="console-test",
        observed_at=now,
        confidence=1.0,
    )
    result = run.call(run.gateway.record([movement]))
    recorded_at = time.monotonic()
    assert result is not None
    (recorded,) = [r for r in result.recorded if r.movement.movement_id == movement.movement_id]
    row = _wait(browser, lambda d: d.find_elements("id", f"movements-{recorded.seq}"), 2.0)
    assert time.monotonic() - recorded_at <= 2.0
    assert "console-test" in row[0].text
    assert browser.execute_script("return window.dockwatchNoReload") is True


def test_uploads_show_their_errors_and_actions_need_the_operator_token(
    run: Run, browser: Any, tmp_path: Path
) -> None:
    bad = tmp_path / "bad-asn.yaml"
    bad.write_text("receipts:\n  - id: ASN-1\n    lines:\n      - {sku: SKU-1001, quantity: -4}\n")
    good = tmp_path / "asn.yaml"
    good.write_text(
        "receipts:\n  - id: ASN-77\n    door: door-1\n    lines:\n"
        "      - {sku: SKU-1001, quantity: 24}\n"
    )
    _open(browser, run.url + "receipts")
    token = browser.find_element("id", "operator-token")
    out = browser.find_element("id", "upload-result")
    upload = browser.find_element("css selector", "#receipts-upload input[type=file]")
    submit = browser.find_element("css selector", "#receipts-upload button[type=submit]")

    upload.send_keys(str(bad))  # no token yet: refused
    submit.click()
    _wait(browser, lambda _: out.text.startswith("401"))

    token.send_keys(OPERATOR_TOKEN)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
    upload.send_keys(str(bad))
    submit.click()
    _wait(browser, lambda _: out.text.startswith("400"))
    assert "receipts[0].lines[0].quantity" in out.text
    assert "bad-asn.yaml" in out.text
    browser.save_screenshot(str(ARTIFACTS / "receipts-upload-error.png"))

    upload.send_keys(str(good))
    submit.click()
    _wait(browser, lambda _: out.text.startswith("loaded 1 receipt"))
    assert '"ASN-77"' in (run.workdir / "expected.json").read_text()
    # The gateway picks the file up (it polls it every few seconds) and the page shows the
    # receipt without a reload.
    _wait(browser, lambda d: d.find_elements("id", "receipts-ASN-77"))

    # Acknowledging the low-stock alert: refused without the token, done with it.
    alert = Alert(
        alert_id="low_stock:console-test",
        kind=AlertKind.LOW_STOCK,
        severity=Severity.WARNING,
        subject="console-test",
        message="raised by the console test",
        raised_at=datetime.now(UTC),
    )
    run.call(run.gateway.raise_alert(alert))
    _open(browser, run.url + "alerts")
    row = browser.find_element("id", f"alerts-{alert.alert_id}")
    button = row.find_element("css selector", "button.action")
    token = browser.find_element("id", "operator-token")
    token.clear()
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
    button.click()
    notice = browser.find_element("id", "notice")
    _wait(browser, lambda _: notice.text.startswith("401"))
    token.send_keys(OPERATOR_TOKEN)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
    button.click()
    _wait(browser, lambda _: "acknowledged" in notice.text)
    _wait(
        browser,
        lambda _: row.find_element("css selector", "[data-field=acknowledged]").text == "yes",
    )
    # The refusals above are logged by the browser as failed loads; nothing else may be.
    refused = "the server responded with a status of 40"
    assert [e for e in _errors(browser) if refused not in e] == []

    # Without the token (or with a wrong one), every action is refused.
    base = run.url.rstrip("/")
    for path in (
        "/actions/receipts",
        "/actions/alerts/x/acknowledge",
        "/actions/shelves/shelf-a1/recount",
    ):
        assert _post(base + path) == 401
        assert _post(base + path, {"X-Operator-Token": "wrong"}) == 403
    # With it, a re-count answers (the weight agrees with the book, or the book is corrected).
    assert _post(
        base + "/actions/shelves/shelf-a1/recount", {"X-Operator-Token": OPERATOR_TOKEN}
    ) in (200, 409)
    assert os.environ.get("DOCKWATCH_OPERATOR_TOKEN") is None  # nothing leaked into the env
