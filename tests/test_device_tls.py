"""TLS towards devices: LLRP over TLS and Modbus/TCP Security, against the simulators serving TLS.

Real sockets and real certificates (tests/support/tls.py): a site CA, a CA the gateway does not
trust, reader/transmitter certificates for localhost and 127.0.0.1, and a client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvloop

from dockwatch_core.errors import ConfigError
from gateway.adapters import llrp_session
from gateway.adapters.modbus import ModbusShelfPoller, ShelfPoint
from gateway.adapters.tls import client_context, describe_tls_error, server_context
from gateway.app import Gateway, device_tls
from gateway.config import parse_config
from gateway.domain.model import DeviceId, DeviceState
from simulators.llrp.server import LlrpReaderSimulator
from simulators.modbus import registers
from simulators.modbus.accuracy import point_for
from simulators.modbus.server import ShelfSimulator
from tests.support.net import free_port
from tests.support.tls import Pem, certificate_authority, issue
from tests.test_llrp_adapter import (
    ADAPTER_LOGGER,
    gateway_errors,
    make_adapter,
    running,
    simulator,
    sllurp_threads,
)
from tests.test_modbus_adapter import WITHIN_S, Recorder, poll_until, poller_for, quiet_track

LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}
MODBUS_LOGGER = "gateway.adapters.modbus"


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Pem
    device: Pem  # issued by ca, for localhost / 127.0.0.1
    client: Pem  # issued by ca
    rogue: Pem  # a CA the gateway does not trust...
    rogue_device: Pem  # ...and a device certificate it issued

    def device_side(self, *, rogue: bool = False, client_ca: bool = False) -> ssl.SSLContext:
        pem = self.rogue_device if rogue else self.device
        return server_context(pem.cert_file, pem.key_file, self.ca.cert_file if client_ca else None)

    def gateway_side(
        self, *, client_cert: bool = False, check_hostname: bool = True
    ) -> ssl.SSLContext:
        return client_context(
            ca_file=self.ca.cert_file,
            cert_file=self.client.cert_file if client_cert else None,
            key_file=self.client.key_file if client_cert else None,
            check_hostname=check_hostname,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = certificate_authority(root / "ca", "dockwatch site CA")
    rogue = certificate_authority(root / "rogue", "somebody else's CA")
    return Pki(
        ca=ca,
        device=issue(ca, root / "device", "device", server=True),
        client=issue(ca, root / "client", "gateway", server=False),
        rogue=rogue,
        rogue_device=issue(rogue, root / "rogue-device", "device", server=True),
    )


# -- LLRP over TLS ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tls_reader(
    pki: Pki, *, port: int = 0, host: str = "127.0.0.1", **device: bool
) -> AsyncIterator[LlrpReaderSimulator]:
    async with simulator(port, host=host, tls=pki.device_side(**device)) as sim:
        yield sim


@pytest.mark.integration
@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_llrp_reads_arrive_over_tls(loop: str, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)

    async def scenario() -> None:
        async with tls_reader(pki) as sim:
            adapter, rec = make_adapter(sim.port, tls=pki.gateway_side(), polite_disconnect_s=1.0)
            async with running(adapter) as tasks:
                await rec.until(
                    lambda: {r.antenna for r in rec.reads()} == {1, 2, 3, 4}, timeout_s=10
                )
                assert rec.states() == ["online"]
                assert {r.epc for r in rec.reads()} == {f"30{i:022X}" for i in range(3)}
                tasks[0].cancel()
            assert sllurp_threads() == []
            # The polite disconnect was written over TLS from the executor's thread while
            # sllurp's thread was reading: the reader decoded it.
            assert sim.stats.messages_in.get("DELETE_ACCESSSPEC", 0) == 2
        assert rec.states() == ["online", "offline"]

    LOOPS[loop](scenario())
    assert gateway_errors(caplog) == []
    assert any("is online (TLS)" in r.getMessage() for r in caplog.records)


@pytest.mark.integration
def test_llrp_over_tls_does_not_wait_on_bytes_held_inside_the_ssl_object(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reads far smaller than one TLS record leave most of every record decrypted inside the SSL
    # object, where select() cannot see it: a loop that select()ed before each read would sit
    # on the handshake replies until the watchdog gave up.
    monkeypatch.setattr(llrp_session, "RECV_BYTES", 64)

    async def scenario() -> None:
        async with tls_reader(pki) as sim:
            adapter, rec = make_adapter(sim.port, tls=pki.gateway_side())
            async with running(adapter):
                await rec.until(lambda: len(rec.reads()) >= 12, timeout_s=10)
        assert rec.states() == ["online", "offline"]

    asyncio.run(scenario())


@pytest.mark.integration
def test_llrp_tls_connection_dropped_mid_inventory_is_reconnected(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)

    async def scenario() -> list[str]:
        async with tls_reader(pki) as sim:
            adapter, rec = make_adapter(sim.port, tls=pki.gateway_side())
            async with running(adapter):
                await rec.until(lambda: bool(rec.reads()))
                await sim.drop_connections()
                await rec.until(lambda: rec.states()[-1:] == ["offline"])
                dropped_at = len(rec.batches)
                await rec.until(
                    lambda: rec.states()[-1:] == ["online"] and len(rec.batches) > dropped_at
                )
            assert sim.stats.connections_total == 2
        return [s.detail for s in rec.statuses]

    details = asyncio.run(scenario())
    assert details == ["inventorying", "connection closed", "inventorying", "adapter stopped"]
    [error] = gateway_errors(caplog)
    assert "is offline: connection closed" in error.getMessage()


@pytest.mark.integration
def test_llrp_untrusted_certificate_is_one_error_then_the_reader_recovers(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ADAPTER_LOGGER)

    async def scenario() -> list[str]:
        async with tls_reader(pki, rogue=True) as rogue:
            port = rogue.port
            adapter, rec = make_adapter(port, tls=pki.gateway_side())
            async with running(adapter):
                await rec.until(lambda: rec.states() == ["offline"])
                # Retried with backoff, not given up on: three more handshakes fail quietly.
                await rec.until(lambda: adapter.stats.reconnects >= 3)
                await rogue.stop()
                # The reader gets a certificate from the site CA: the next attempt succeeds.
                async with tls_reader(pki, port=port):
                    await rec.until(lambda: len(rec.reads()) >= 4)
        return rec.states()

    states = asyncio.run(scenario())
    assert states == ["offline", "online", "offline"]
    [error] = gateway_errors(caplog)
    message = error.getMessage()
    assert "door-1-reader" in message
    assert "TLS handshake failed: the reader's certificate is not trusted" in message
    assert "tls.ca_file" in message
    assert sum("online again" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.integration
def test_llrp_host_name_is_checked_unless_insecure(pki: Pki) -> None:
    # The certificate names localhost and 127.0.0.1; the reader is reached as 127.0.0.2.
    async def scenario() -> tuple[list[str], str, list[str]]:
        async with tls_reader(pki, host="127.0.0.2") as sim:
            strict, strict_rec = make_adapter(sim.port, host="127.0.0.2", tls=pki.gateway_side())
            async with running(strict):
                await strict_rec.until(lambda: bool(strict_rec.statuses))
            lax, lax_rec = make_adapter(
                sim.port, host="127.0.0.2", tls=pki.gateway_side(check_hostname=False)
            )
            async with running(lax):
                await lax_rec.until(lambda: bool(lax_rec.reads()))
        return strict_rec.states(), strict_rec.statuses[0].detail, lax_rec.states()

    strict, detail, lax = asyncio.run(scenario())
    assert strict[0] == "offline"
    assert "the reader's certificate does not name the host" in detail
    assert "127.0.0.2" in detail
    assert lax == ["online", "offline"]


@pytest.mark.integration
def test_llrp_reader_requiring_client_certificates(pki: Pki) -> None:
    async def scenario() -> tuple[list[str], str, list[str]]:
        async with tls_reader(pki, client_ca=True) as sim:
            anonymous, anonymous_rec = make_adapter(sim.port, tls=pki.gateway_side())
            async with running(anonymous):
                await anonymous_rec.until(lambda: bool(anonymous_rec.statuses))
            known, known_rec = make_adapter(sim.port, tls=pki.gateway_side(client_cert=True))
            async with running(known):
                await known_rec.until(lambda: bool(known_rec.reads()))
        return anonymous_rec.states(), anonymous_rec.statuses[0].detail, known_rec.states()

    anonymous, detail, known = asyncio.run(scenario())
    assert anonymous[0] == "offline"
    assert "client certificate" in detail
    assert "tls.cert_file" in detail
    assert known == ["online", "offline"]


@pytest.mark.integration
def test_llrp_tls_to_a_plain_reader_says_so(pki: Pki) -> None:
    async def scenario() -> str:
        async with simulator() as plain:
            adapter, rec = make_adapter(plain.port, tls=pki.gateway_side())
            async with running(adapter):
                await rec.until(lambda: bool(rec.statuses))
        return rec.statuses[0].detail

    detail = asyncio.run(scenario())
    assert "TLS handshake failed: the reader does not answer in TLS" in detail
    assert "plain TCP port" in detail


# -- Modbus/TCP Security ---------------------------------------------------------------------------


def tls_point(track_unit: int, shelf: str, port: int, tls: ssl.SSLContext) -> ShelfPoint:
    return replace(point_for(quiet_track(track_unit, shelf), "127.0.0.1", port), tls=tls)


@pytest.mark.integration
@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_modbus_samples_arrive_over_tls(loop: str, pki: Pki) -> None:
    tracks = [quiet_track(1, "s1"), quiet_track(2, "s2", initial_units=7)]

    async def scenario() -> Recorder:
        async with ShelfSimulator(shelves=tracks, tls=pki.device_side()) as sim:
            tls = pki.gateway_side()  # one connection, one context for both shelves
            points = [replace(point_for(t, sim.host, sim.port), tls=tls) for t in tracks]
            return await poll_until(
                points,
                lambda rec: min(len(rec.of("s1")), len(rec.of("s2"))) >= 5,
                "5 samples of each shelf over TLS",
            )

    rec = LOOPS[loop](scenario())
    assert all(s.grams == pytest.approx(20 * 250.0) for s in rec.of("s1"))
    assert all(s.grams == pytest.approx(7 * 250.0) for s in rec.of("s2"))
    assert rec.states("s1") == rec.states("s2") == [DeviceState.ONLINE]


@pytest.mark.integration
@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_modbus_untrusted_certificate_is_one_error_then_the_shelf_recovers(
    loop: str, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> Recorder:
        rogue = ShelfSimulator(shelves=[quiet_track(1, "s1")], tls=pki.device_side(rogue=True))
        await rogue.start()
        port = rogue.port
        rec = Recorder()
        task = asyncio.create_task(
            poller_for([tls_point(1, "s1", port, pki.gateway_side())], rec).run()
        )
        try:
            await rec.until(lambda: bool(rec.statuses), within=WITHIN_S, what="offline")
            await rogue.stop()
            fixed = ShelfSimulator(port=port, shelves=[quiet_track(1, "s1")], tls=pki.device_side())
            async with fixed:
                await rec.until(lambda: bool(rec.samples), within=WITHIN_S, what="samples")
        finally:
            task.cancel()
            await asyncio.wait([task])
            await rogue.stop()  # a no-op once stopped
        return rec

    with caplog.at_level(logging.INFO, logger=MODBUS_LOGGER):
        rec = LOOPS[loop](scenario())
    assert rec.states("s1") == [DeviceState.OFFLINE, DeviceState.ONLINE]
    detail = rec.statuses[0].detail
    assert "TLS handshake failed: the transmitter's certificate is not trusted" in detail
    assert "unable to get local issuer certificate" in detail
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("gateway") and r.levelno >= logging.ERROR
    ]
    assert len(errors) == 1
    assert "shelf s1" in errors[0]
    assert "certificate is not trusted" in errors[0]
    assert sum("recovered" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.integration
def test_modbus_transmitter_requiring_client_certificates(pki: Pki) -> None:
    async def scenario() -> tuple[Recorder, Recorder]:
        async with ShelfSimulator(
            shelves=[quiet_track(1, "s1")], tls=pki.device_side(client_ca=True)
        ) as sim:
            anonymous = await poll_until(
                [tls_point(1, "s1", sim.port, pki.gateway_side())],
                lambda rec: bool(rec.statuses),
                "the shelf to go offline",
            )
            known = await poll_until(
                [tls_point(1, "s1", sim.port, pki.gateway_side(client_cert=True))],
                lambda rec: len(rec.samples) >= 3,
                "samples with a client certificate",
            )
        return anonymous, known

    anonymous, known = asyncio.run(scenario())
    assert anonymous.states("s1") == [DeviceState.OFFLINE]
    detail = anonymous.statuses[0].detail
    assert "closed the TLS connection before answering" in detail
    assert "client certificate" in detail
    assert known.states("s1") == [DeviceState.ONLINE]


def test_shelves_of_one_connection_share_one_tls_context(pki: Pki) -> None:
    a = tls_point(1, "a", 802, pki.gateway_side())
    b = tls_point(2, "b", 802, pki.gateway_side())
    with pytest.raises(ValueError, match=r"shelves a, b share the connection 127.0.0.1:802"):
        ModbusShelfPoller([a, b], on_sample=lambda _s: None)
    ModbusShelfPoller([a, replace(b, tls=a.tls)], on_sample=lambda _s: None)


# -- configuration and wiring ----------------------------------------------------------------------


def _config(*, readers: list[Any], shelves: list[Any]) -> dict[str, Any]:
    return {
        "site": {"id": "tls"},
        "catalog": {
            "items": [
                {
                    "sku": "SKU-1001",
                    "gtin": "00614141123452",
                    "name": "Widget",
                    "unit_weight_g": 250.0,
                }
            ]
        },
        "locations": [{"id": "yard", "kind": "dock"}, {"id": "receiving"}, {"id": "shelf-a"}],
        "readers": readers,
        "shelves": shelves,
        "api": {"grpc_listen": f"127.0.0.1:{free_port()}", "metrics_listen": None},
    }


def _shelf(shelf_id: str, unit: int, modbus: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": shelf_id,
        "location": "shelf-a",
        "sku": "SKU-1001",
        "modbus": {"host": "127.0.0.1", "unit": unit, **modbus},
        "weight": {"address": registers.NET, "type": "float32"},
    }


def test_tls_blocks_are_validated_and_choose_the_secure_ports(pki: Pki) -> None:
    ca = str(pki.ca.cert_file)
    raw = _config(
        readers=[
            {"id": "r-tls", "host": "127.0.0.1", "antennas": [1], "tls": {"ca_file": ca}},
            {"id": "r-plain", "host": "127.0.0.1", "antennas": [1]},
            {"id": "r-port", "host": "127.0.0.1", "antennas": [1], "port": 6000, "tls": {}},
        ],
        shelves=[
            _shelf("s-tls", 1, {"tls": {"ca_file": ca, "insecure": True}}),
            _shelf("s-plain", 1, {}),
        ],
    )
    cfg = parse_config(raw, environ={})
    assert [(r.port, r.tls is not None) for r in cfg.readers] == [
        (5085, True),
        (5084, False),
        (6000, True),
    ]
    assert cfg.readers[0].tls is not None
    assert cfg.readers[0].tls.ca_file == pki.ca.cert_file
    assert [(s.modbus.port, s.modbus.tls is not None) for s in cfg.shelves] == [
        (802, True),
        (502, False),
    ]
    assert cfg.shelves[0].modbus.tls is not None
    assert cfg.shelves[0].modbus.tls.insecure is True

    raw["readers"][0]["tls"] = {"cert_file": str(pki.client.cert_file), "colour": "blue"}
    raw["shelves"][0]["modbus"]["tls"] = {"ca_file": "/no/such/ca.pem"}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={})
    problems = "\n".join(caught.value.problems)
    assert "readers[0].tls.key_file: cert_file and key_file go together" in problems
    assert "readers[0].tls.colour: unknown key" in problems
    assert "shelves[0].modbus.tls.ca_file" in problems


def test_shelves_sharing_a_modbus_connection_must_agree_on_tls(pki: Pki) -> None:
    ca = str(pki.ca.cert_file)
    raw = _config(
        readers=[],
        shelves=[
            _shelf("s1", 1, {"port": 802, "tls": {"ca_file": ca}}),
            _shelf("s2", 2, {"port": 802}),
            _shelf("s3", 3, {"port": 802, "tls": {"ca_file": ca}}),
        ],
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={})
    [problem] = caught.value.problems
    assert problem.startswith("shelves[1].modbus.tls: differs from shelves[0].modbus.tls")
    assert "127.0.0.1:802" in problem
    raw["shelves"][1]["modbus"]["tls"] = {"ca_file": ca}
    parse_config(raw, environ={})


def test_unloadable_certificates_name_their_key(tmp_path: Path, pki: Pki) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    raw = _config(
        readers=[
            {"id": "r1", "host": "127.0.0.1", "antennas": [1], "tls": {"ca_file": str(garbage)}}
        ],
        shelves=[],
    )
    cfg = parse_config(raw, environ={})  # the file exists: what is in it is checked at start
    with pytest.raises(ConfigError, match=r"^readers\[0\]\.tls: cannot load the certificates"):
        device_tls(cfg.readers[0].tls, "readers[0].tls")


def test_tls_failures_read_as_what_to_check() -> None:
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code = 62
    mismatch.verify_message = "Hostname mismatch, certificate is not valid for 'x'."
    assert describe_tls_error(mismatch, peer="reader").startswith(
        "the reader's certificate does not name the host it was reached by: Hostname mismatch"
    )
    assert "insecure" in describe_tls_error(mismatch)
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    assert describe_tls_error(alert) == (
        "the device refused the TLS connection: unknown ca "
        "(if it requires a client certificate: tls.cert_file and tls.key_file)"
    )
    assert describe_tls_error(TimeoutError(), peer="reader") == (
        "the reader did not complete the TLS handshake in time"
    )


@pytest.mark.integration
def test_the_gateway_reaches_tls_readers_and_shelves_from_its_config(
    tmp_path: Path, pki: Pki
) -> None:
    async def scenario() -> None:
        async with (
            tls_reader(pki) as reader,
            ShelfSimulator(
                shelves=[quiet_track(1, "s1"), quiet_track(2, "s2")], tls=pki.device_side()
            ) as shelves,
        ):
            tls = {"ca_file": str(pki.ca.cert_file)}
            modbus = {"port": shelves.port, "tls": tls, "timeout_s": 0.5}
            raw = _config(
                readers=[
                    {
                        "id": "door-1-reader",
                        "host": "127.0.0.1",
                        "port": reader.port,
                        "antennas": [1, 2, 3, 4],
                        "tls": tls,
                    }
                ],
                shelves=[_shelf("s1", 1, modbus), _shelf("s2", 2, modbus)],
            )
            raw["store"] = {"url": f"sqlite:///{tmp_path / 'edge.db'}"}
            gateway = Gateway(parse_config(raw, environ={}))
            task = asyncio.create_task(gateway.run())
            try:
                async with asyncio.timeout(WITHIN_S):
                    while not (
                        gateway.shelf_poller is not None
                        and gateway.readers["door-1-reader"].state is DeviceState.ONLINE
                        and gateway.shelf_poller.state(DeviceId("s1")) is DeviceState.ONLINE
                        and gateway.shelf_poller.state(DeviceId("s2")) is DeviceState.ONLINE
                    ):
                        if task.done():
                            task.result()  # start-up failed: raise its error here
                        await asyncio.sleep(0.05)
                assert reader.connections == 1
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    uvloop.run(scenario())
