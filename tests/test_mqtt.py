"""The MQTT sink against real Mosquitto brokers, independent ``mosquitto_sub`` subscribers and
the real edge store: byte-exact movements, retained state, credentials, TLS, the relay window."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from dockwatch_core.errors import ConfigError, PublishError
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.mqtt import BrokerAddress, MovementRelay, MqttSink
from gateway.adapters.mqtt_client import Done, PublishRefused
from gateway.domain import payloads
from gateway.domain.model import (
    Alert,
    AlertKind,
    DeviceId,
    DeviceState,
    DeviceStatus,
    Severity,
)
from gateway.domain.views import StockView
from tests.support.broker import MosquittoBroker
from tests.support.mqtt_tools import (
    SITE,
    T0,
    MosquittoSub,
    Received,
    await_for,
    broker_dir,
    make_pki,
    open_store,
    retained_now,
    scenario,
    wait_for,
)
from tests.support.net import free_port

pytestmark = pytest.mark.integration
MQTT_LOGGER = "gateway.adapters.mqtt"


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def running(sink: MqttSink) -> AsyncIterator[asyncio.Task[None]]:
    """``sink.run()`` as a task for the duration of the block, then cancelled (a shutdown)."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sink.run())
        try:
            yield task
        finally:
            task.cancel()


def sink_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == MQTT_LOGGER and r.levelno == level]


# --------------------------------------------------------------------------------------------


def test_settings_are_validated_before_any_connection() -> None:
    assert BrokerAddress.from_url("mqtt://broker.local") == BrokerAddress(
        "broker.local", 1883, False
    )
    assert BrokerAddress.from_url("mqtts://[::1]") == BrokerAddress("::1", 8883, True)
    assert str(BrokerAddress.from_url("mqtts://[::1]:9000")) == "[::1]:9000"
    bad_urls = {
        "http://broker": "scheme",
        "mqtt://gw:hunter2@broker": "credentials",
        "mqtt://": "no host",
        "mqtt://broker:99999": "bad port",
    }
    for url, words in bad_urls.items():
        with pytest.raises(ConfigError, match=words) as caught:
            BrokerAddress.from_url(url)
        assert "hunter2" not in str(caught.value)
    store = open_store("sqlite://")
    try:
        good = {"store": store, "site": SITE, "url": "mqtt://127.0.0.1:1", "topic_prefix": "dw/x"}
        for override, key in (
            ({"topic_prefix": "dw/#"}, "topic_prefix"),
            ({"qos": 3}, "qos"),
            ({"protocol": "4"}, "protocol"),
            ({"inflight_max": 0}, "inflight_max"),
            ({"tls_cert_file": "/x.crt"}, "key_file"),
        ):
            with pytest.raises(ConfigError, match=key):
                MqttSink(**{**good, **override})  # type: ignore[arg-type]  # deliberately bad
        sink = MqttSink(**good, username="gw", password="hunter2")  # type: ignore[arg-type]
        assert "hunter2" not in repr(sink)
    finally:
        store.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_every_movement_reaches_an_independent_subscriber_byte_for_byte(
    mosquitto: MosquittoBroker, database_url: str, tmp_path: Path, protocol: str
) -> None:
    prefix = unique("dockwatch/bytes")
    store = open_store(database_url)
    try:
        with (
            MosquittoSub(
                mosquitto,
                [f"{prefix}/movements/#"],
                tmp_path / "all.txt",
                client_id=unique("all"),
                protocol=protocol,
            ) as everything,
            MosquittoSub(
                mosquitto,
                [f"{prefix}/movements/shelf-a1"],
                tmp_path / "shelf.txt",
                client_id=unique("shelf"),
                protocol=protocol,
            ) as shelf,
        ):
            store.record(scenario(0, 25), now=T0)  # a backlog before the sink starts

            async def stream() -> None:
                sink = MqttSink(
                    store=store,
                    site=SITE,
                    url=mosquitto.url,
                    topic_prefix=prefix,
                    protocol=protocol,  # type: ignore[arg-type]  # parametrised literal
                    client_id=unique("gw"),
                    inflight_max=8,
                )
                async with running(sink):
                    await await_for(lambda: sink.relay.acked_seq == 25, within=10, what="backlog")
                    for batch in range(3):  # live movements, woken by notify()
                        store.record(scenario(25 + 10 * batch, 10), now=T0)
                        sink.notify()
                    await await_for(lambda: sink.relay.persisted_seq == 55, within=10, what="all")

            asyncio.run(stream())
            recorded = store.movements_since(0, 1000)
            assert [r.seq for r in recorded] == list(range(1, 56))
            expected = [
                Received(topic, payloads.movement_json(r), retained=False)
                for r in recorded
                for topic in payloads.movement_topics(prefix, r)
            ]
            wait_for(
                lambda: len(everything.messages()) >= len(expected), timeout=10, what="delivery"
            )
            assert everything.messages() == expected
            # A subscriber to one shelf sees stock arriving on it AND leaving it (picks).
            on_shelf = [m for m in expected if m.topic == f"{prefix}/movements/shelf-a1"]
            kinds = {json.loads(m.payload)["kind"] for m in on_shelf}
            assert kinds == {"transfer", "pick", "restock"}
            wait_for(lambda: len(shelf.messages()) >= len(on_shelf), timeout=10, what="shelf")
            assert shelf.messages() == on_shelf
        assert store.get_cursor("mqtt") == 55
    finally:
        store.close()


def test_new_subscribers_see_the_present_state_at_once(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    prefix = unique("dockwatch/state")
    store = open_store(f"sqlite:///{tmp_path / 'edge.db'}")
    reader = DeviceStatus(DeviceId("door-1-reader"), "llrp_reader", DeviceState.ONLINE, T0, "")
    shelf = DeviceStatus(DeviceId("shelf-a1"), "weight_shelf", DeviceState.DEGRADED, T0, "noisy")
    low = Alert(
        alert_id="low_stock:shelf-a1:SKU-1001",
        kind=AlertKind.LOW_STOCK,
        severity=Severity.WARNING,
        subject="shelf-a1/SKU-1001",
        message="2 left, reorder point 10",
        raised_at=T0,
        details={"on_hand": 2, "reorder_point": 10},
    )
    gone = Alert(
        alert_id="receiving_discrepancy:door-1",
        kind=AlertKind.RECEIVING_DISCREPANCY,
        severity=Severity.WARNING,
        subject="door-1",
        message="resolved",
        raised_at=T0,
        active=False,
    )
    state_topics = [
        f"{prefix}/stock/#",
        f"{prefix}/devices/#",
        f"{prefix}/active_alerts/#",
        f"{prefix}/gateway/status",
    ]
    try:
        store.record(scenario(0, 10), now=T0)
        for status in (reader, shelf):
            store.set_device_status(status)
        for alert in (low, gone):
            store.upsert_alert(alert)
        levels = store.stock()

        def stock_msg(level: StockView) -> Received:
            topic = payloads.stock_topic(prefix, level.location, level.sku)
            return Received(topic, payloads.stock_json(SITE, level), retained=True)

        def device_msg(status: DeviceStatus) -> Received:
            topic = payloads.device_status_topic(prefix, status.device_id)
            return Received(topic, payloads.device_status_json(SITE, status), retained=True)

        def alert_msg(alert: Alert) -> Received:
            topic = payloads.active_alert_topic(prefix, alert.kind, alert.subject)
            return Received(topic, payloads.alert_json(SITE, alert), retained=True)

        online = Received(f"{prefix}/gateway/status", b"online", retained=True)
        expected = {stock_msg(lv) for lv in levels} | {
            device_msg(reader),
            device_msg(shelf),
            alert_msg(low),
            online,
        }
        with MosquittoSub(
            mosquitto, [f"{prefix}/#"], tmp_path / "live.txt", client_id=unique("live")
        ) as live:

            def live_topics() -> set[str]:
                return {m.topic for m in live.messages()}

            async def scenario_run() -> None:
                sink = MqttSink(
                    store=store, site=SITE, url=mosquitto.url, topic_prefix=prefix,
                    client_id=unique("gw"),
                )  # fmt: skip
                async with running(sink):
                    gone_topic = payloads.active_alert_topic(prefix, gone.kind, gone.subject)
                    wanted = {m.topic for m in expected} | {gone_topic}
                    await await_for(lambda: wanted <= live_topics(), within=10, what="snapshot")
                    first = await asyncio.to_thread(
                        retained_now, mosquitto, state_topics, tmp_path / "new1.txt",
                        expect=len(expected),
                    )  # fmt: skip
                    assert set(first) == expected
                    assert len(first) == len(expected)

                    # Runtime updates: a new level, the low-stock alert cleared, a device down.
                    result = store.record(scenario(10, 1), now=T0)
                    sink.notify()
                    sink.publish_stock(result.stock)
                    sink.publish_stock(levels)  # stale levels (lower last_seq) are ignored
                    cleared = replace(low, active=False, message="restocked")
                    sink.publish_alert(cleared)
                    down = replace(reader, state=DeviceState.OFFLINE, detail="no keepalive")
                    sink.publish_device_status(down)
                    event_topic = payloads.alert_topic(prefix, AlertKind.LOW_STOCK)
                    await await_for(
                        lambda: event_topic in live_topics(), within=10, what="alert event"
                    )
                    await await_for(lambda: sink.relay.acked_seq == 11, within=10, what="relay")
                    after = {stock_msg(lv) for lv in store.stock()} | {
                        device_msg(down),
                        device_msg(shelf),
                        online,
                    }
                    second = await asyncio.to_thread(
                        retained_now, mosquitto, state_topics, tmp_path / "new2.txt",
                        expect=len(after),
                    )  # fmt: skip
                    assert set(second) == after  # the cleared alert's retained state is gone
                    events = [m for m in live.messages() if m.topic == event_topic]
                    assert [json.loads(m.payload)["active"] for m in events] == [False]
                    assert events[0].payload == payloads.alert_json(SITE, cleared)

            asyncio.run(scenario_run())
            status_topic = f"{prefix}/gateway/status"
            wait_for(
                lambda: (
                    [m.payload for m in live.messages() if m.topic == status_topic][-1:]
                    == [b"offline"]
                ),
                timeout=10,
                what="offline on graceful shutdown",
            )
    finally:
        store.close()


class ScriptedBroker:
    """The relay's port to a connection, acknowledged by hand (the real one is tested above)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Done]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool, done: Done) -> None:
        assert (qos, retain) == (1, False)
        self.sent.append((json.loads(payload)["seq"], done))

    async def publish_wait(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        raise AssertionError("the relay never waits on a single publish")

    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.sent]

    def ack(self, *indices: int, error: PublishError | None = None) -> None:
        for i in indices:
            self.sent[i][1](error)


def test_cursor_advances_only_over_contiguously_acknowledged_movements(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The window is bounded and the cursor never passes an un-acknowledged movement."""
    store = open_store(f"sqlite:///{tmp_path / 'edge.db'}")
    store.record(scenario(0, 6), now=T0)

    async def drive() -> None:
        broker = ScriptedBroker()
        relay = MovementRelay(store=store, topic_prefix="p", cursor_flush_s=0)
        seen_cursor: list[int] = []
        async with asyncio.TaskGroup() as tg:
            keeper = tg.create_task(relay.persist_cursor())
            serving = tg.create_task(relay.serve(broker, window=4))
            await await_for(lambda: len(broker.sent) == 4, within=5, what="a full window")
            await asyncio.sleep(0.1)
            assert broker.seqs() == [1, 1, 2, 2]  # a window of 4 copies: no more
            broker.ack(3, 2, 0)  # movement 2 complete, movement 1 half-acked
            await await_for(lambda: len(broker.sent) == 7, within=5, what="three freed slots")
            seen_cursor.append(relay.acked_seq)
            broker.ack(1)  # movement 1 complete: the cursor slides over 1 AND 2
            await await_for(lambda: store.get_cursor("mqtt") == 2, within=5, what="cursor 2")
            broker.ack(4, 6)  # 3 and 4 half-acked
            await asyncio.sleep(0.1)
            seen_cursor.append(relay.acked_seq)
            serving.cancel()  # the connection died with 3 and 4 in flight
            keeper.cancel()
        assert seen_cursor == [0, 2]
        assert store.get_cursor("mqtt") == 2

        # A new relay (a restarted process) resumes from the durable cursor; a refused
        # publish (MQTT 5 failure reason code) is not an ack: serve() fails with it.
        broker = ScriptedBroker()
        resumed = MovementRelay(store=store, topic_prefix="p")
        serving = asyncio.create_task(resumed.serve(broker, window=100))
        await await_for(lambda: len(broker.sent) == 8, within=5, what="the rest")
        assert broker.seqs() == [3, 3, 4, 4, 5, 5, 6, 6]
        broker.ack(0, 1, 2)
        refused = PublishRefused("p/movements/x", "Not authorized (reason code 0x87)")
        broker.ack(3, error=refused)
        broker.ack(4, 5, 6, 7)
        with pytest.raises(ExceptionGroup) as caught:
            await serving
        assert caught.group_contains(PublishRefused)
        assert resumed.acked_seq == 3

    try:
        asyncio.run(drive())
    finally:
        store.close()
    refusals = sink_logs(caplog, logging.ERROR)
    assert len(refusals) == 1
    assert "refuses movement seq 4" in refusals[0]
    assert "Not authorized" in refusals[0]


class LogTimes(logging.Handler):
    """The sink's log lines matching ``pattern``, stamped with ``time.monotonic()`` when logged.

    caplog's records carry wall-clock times, which may jump; intervals are measured here. The sink
    logs from the event loop's thread, so the test reads these lists on the same thread.
    """

    def __init__(self, pattern: str) -> None:
        super().__init__(logging.DEBUG)
        self._pattern = re.compile(pattern)
        self.lines: list[tuple[float, re.Match[str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = self._pattern.search(record.getMessage())
        if match:
            self.lines.append((time.monotonic(), match))


@contextmanager
def log_times(pattern: str) -> Iterator[LogTimes]:
    """Collect the MQTT sink's lines matching ``pattern`` (its logger must be at DEBUG)."""
    handler = LogTimes(pattern)
    logger = logging.getLogger(MQTT_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


NEXT_ATTEMPT = r"next MQTT connection attempt .* in ([0-9.]+) s"


def announced(attempts: LogTimes) -> list[tuple[float, float]]:
    """(monotonic time, announced delay) of every 'next attempt' line."""
    return [(when, float(match.group(1))) for when, match in attempts.lines]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_credentials_give_one_clear_error_and_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=MQTT_LOGGER)
    store = open_store(f"sqlite:///{tmp_path / 'edge.db'}")
    with broker_dir() as shared:
        passwords = shared / "passwd"
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(passwords), "gateway", "right-pw-4711"],
            check=True,
        )
        passwords.chmod(0o644)
        broker = MosquittoBroker(
            shared / "broker", allow_anonymous=False, extra_conf=f"password_file {passwords}"
        )
        broker.start()

        def sink(password: str, backoff: Backoff | None = None) -> MqttSink:
            return MqttSink(
                store=store, site=SITE, url=broker.url, topic_prefix=unique("dw/auth"),
                protocol=protocol, client_id=unique("gw"),  # type: ignore[arg-type]
                username="gateway", password=password, backoff=backoff,
            )  # fmt: skip

        # rng=1.0 makes every delay its ceiling: 0.1, 0.2, 0.4, 0.4, 0.4
        policy = BackoffPolicy(initial_s=0.1, max_s=0.4)
        expected = [policy.ceiling(n) for n in range(5)]

        async def attempts() -> list[tuple[float, float]]:
            with log_times(NEXT_ATTEMPT) as tries:
                wrong = sink("wrong-pw-0815", Backoff(policy, rng=lambda: 1.0))
                async with running(wrong):
                    # Five refusals, 1.1 s of backoff; the deadline only bounds a broken run.
                    await await_for(
                        lambda: len(tries.lines) >= len(expected), within=20, what="5 refusals"
                    )
                    assert not wrong.connected
            right = sink("right-pw-4711")
            async with running(right):
                await await_for(lambda: right.connected, within=10, what="the right password")
            return announced(tries)

        try:
            delays = asyncio.run(attempts())
        finally:
            broker.stop()
            store.close()
    errors = sink_logs(caplog, logging.ERROR)
    assert len(errors) == 1, errors
    assert f"127.0.0.1:{broker.port}" in errors[0]
    assert "not authorized" in errors[0].lower()
    # The announced delays follow the policy: growing, then capped at max_s.
    assert [d for _, d in delays[: len(expected)]] == expected
    assert [d for _, d in delays] == sorted(d for _, d in delays)
    assert max(d for _, d in delays) == policy.max_s
    # ...and the sink really waits them: the next attempt fails no sooner than announced. A
    # loaded machine only makes the gaps longer, so no upper bound here; the deadline above
    # bounds the whole sequence.
    for (when, delay), (next_when, _) in itertools.pairwise(delays):
        assert next_when - when >= delay - 0.01, (delay, next_when - when)
    assert "wrong-pw-0815" not in caplog.text
    assert "right-pw-4711" not in caplog.text


def test_tls_with_client_certificate_and_an_untrusted_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=MQTT_LOGGER)
    store = open_store(f"sqlite:///{tmp_path / 'edge.db'}")
    store.record(scenario(0, 3), now=T0)
    prefix = unique("dockwatch/tls")
    with broker_dir() as shared:
        pki = make_pki(shared)
        tls_port = free_port()
        broker = MosquittoBroker(
            shared / "broker",
            extra_conf="\n".join(
                [
                    f"listener {tls_port} 127.0.0.1",
                    f"cafile {pki.ca}",
                    f"certfile {pki.server_cert}",
                    f"keyfile {pki.server_key}",
                    "require_certificate true",
                ]
            ),
        )
        broker.start()
        try:
            with MosquittoSub(
                broker, [f"{prefix}/movements/#"], tmp_path / "sub.txt", client_id="tls-sub"
            ) as sub:

                def sink(ca: Path) -> MqttSink:
                    return MqttSink(
                        store=store, site=SITE, url=f"mqtts://127.0.0.1:{tls_port}",
                        topic_prefix=prefix, client_id=unique("gw"), tls_ca_file=str(ca),
                        tls_cert_file=str(pki.client_cert), tls_key_file=str(pki.client_key),
                        backoff=Backoff(BackoffPolicy(initial_s=0.1, max_s=0.2)),
                    )  # fmt: skip

                async def connect() -> None:
                    good = sink(pki.ca)
                    async with running(good):
                        await await_for(lambda: good.relay.acked_seq == 3, within=10, what="tls")
                    untrusting = sink(pki.other_ca)
                    with log_times(NEXT_ATTEMPT) as tries:
                        async with running(untrusting):
                            # It keeps retrying (with backoff) and never connects.
                            await await_for(
                                lambda: len(tries.lines) >= 3, within=20, what="three retries"
                            )
                            assert not untrusting.connected

                asyncio.run(connect())
                wait_for(lambda: len(sub.messages()) == 6, timeout=10, what="tls delivery")
                assert [m.payload for m in sub.messages()] == [
                    payloads.movement_json(r) for r in store.movements_since(0, 10) for _ in "ft"
                ]
        finally:
            broker.stop()
            store.close()
    errors = sink_logs(caplog, logging.ERROR)
    assert len(errors) == 1, errors
    assert f"127.0.0.1:{tls_port}" in errors[0]
    assert "TLS certificate verification failed" in errors[0]
    assert any(
        f"connected to MQTT broker 127.0.0.1:{tls_port}" in m
        for m in sink_logs(caplog, logging.INFO)
    )


def test_a_topic_refused_by_the_broker_acl_holds_the_cursor_until_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MQTT 5: a PUBACK with 'not authorized' is not an ack; once the ACL allows, all flows."""
    caplog.set_level(logging.DEBUG, logger=MQTT_LOGGER)
    prefix = "dockwatch/acl"
    store = open_store(f"sqlite:///{tmp_path / 'edge.db'}")
    store.record(scenario(0, 5), now=T0)  # seq 2 is a transfer receiving -> shelf-a1
    with broker_dir() as shared:
        acl = shared / "acl"
        allowed = ["gateway/#", "stock/#", "devices/#", "movements/yard", "movements/receiving"]
        acl.write_text("".join(f"topic readwrite {prefix}/{t}\n" for t in allowed))
        acl.chmod(0o644)
        broker = MosquittoBroker(shared / "broker", extra_conf=f"acl_file {acl}")
        broker.start()

        async def run() -> None:
            sink = MqttSink(
                store=store, site=SITE, url=broker.url, topic_prefix=prefix,
                client_id=unique("gw"), reconnect_initial_s=0.05, reconnect_max_s=0.2,
            )  # fmt: skip
            with log_times("reconnecting to .* after a refused publish") as refused:
                async with running(sink):
                    await await_for(lambda: sink.relay.acked_seq == 1, within=10, what="seq 1")
                    await await_for(
                        lambda: len(refused.lines) >= 3, within=20, what="three refused attempts"
                    )
                    assert sink.relay.acked_seq == 1
                    assert store.get_cursor("mqtt") == 1
                    acl.write_text(f"topic readwrite {prefix}/#\n")
                    await asyncio.to_thread(broker.restart)
                    await await_for(lambda: sink.relay.persisted_seq == 5, within=10, what="all")

        try:
            asyncio.run(run())
        finally:
            broker.stop()
            store.close()
    errors = sink_logs(caplog, logging.ERROR)
    refusals = [e for e in errors if "refuses movement" in e]
    assert len(refusals) == 1, errors
    assert "seq 2" in refusals[0]
    assert "Not authorized" in refusals[0]
    assert "shelf-a1" in refusals[0]
    infos = sink_logs(caplog, logging.INFO)
    assert any("accepts movements again" in m for m in infos)
    # Reconnecting after a refusal is deliberate: no "connected" line per retry.
    assert len([m for m in infos if m.startswith("connected to MQTT broker")]) == 1
