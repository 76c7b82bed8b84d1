"""The Prometheus endpoint over real sockets: a real HTTP client, and raw bytes for abuse."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import math
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from dockwatch_core.errors import ConfigError, GatewayError
from gateway.adapters.metrics import (
    CONTENT_TYPE,
    MetricsServer,
    Samples,
    labelled,
    render,
    server_tls_context,
)
from tests.conftest import missing
from tests.support.tls import Pem, certificate_authority, issue

pytestmark = pytest.mark.integration

TOKEN = "m3trics-token"
LOGGER = "gateway.adapters.metrics"
WAIT_S = 10.0

SAMPLES: Samples = {
    "dockwatch_movements_total": ("counter", "Movements recorded since start.", 42),
    labelled("dockwatch_sink_lag", sink="mqtt"): ("gauge", "Movements not yet acknowledged.", 3),
    labelled("dockwatch_sink_lag", sink="central"): ("gauge", "Movements not yet acknowledged.", 0),
    labelled("dockwatch_device_up", device='odd "door"\\1\nb'): ("gauge", "1 when online.", 1),
    "dockwatch_confidence_mean": ("gauge", "A help text with a \\ and a\nnewline.", 0.9375),
    "dockwatch_nan": ("untyped", "Not a number.", math.nan),
    "dockwatch_inf": ("gauge", "Infinite.", -math.inf),
}


# --- a strict reader of the text format (what a scraper does) -------------------------------

_SAMPLE_LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    type: str = ""
    help: str = ""
    samples: dict[Labels, float] | None = None
    suffixed: dict[str, dict[Labels, float]] = field(default_factory=dict)
    """A summary's ``_sum`` and ``_count`` samples, by suffix."""


def parse_exposition(text: str) -> dict[str, Family]:
    """Families by name; AssertionError where the text breaks the format."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in families, f"family {name} appears twice"
            families[name] = Family(help=_unescape(doc), samples={})
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current, line
            assert not families[name].type, f"second TYPE line for {name}"
            families[name].type = kind
        else:
            match = _SAMPLE_LINE.fullmatch(line)
            assert match is not None, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            suffix = ""
            if current is not None and families[current].type == "summary":
                suffix = name.removeprefix(current)
                assert suffix in ("", "_sum", "_count"), f"{name} in summary {current}"
                name = current
            assert name == current, f"{name} outside its family"
            assert families[name].type, f"{name} before its TYPE line"
            pairs: list[tuple[str, str]] = []
            body = (labels or "{}")[1:-1]
            while body:
                label = _LABEL.match(body)
                assert label is not None, f"bad labels in {line!r}"
                pairs.append((label.group(1), _unescape(label.group(2))))
                body = body[label.end() :]
            samples = families[name].samples
            assert samples is not None
            if suffix:
                samples = families[name].suffixed.setdefault(suffix, {})
            samples[tuple(pairs)] = float(value)
    return families


# --- helpers -------------------------------------------------------------------------------


@asynccontextmanager
async def serving(server: MetricsServer) -> AsyncIterator[int]:
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def _get(
    port: int,
    path: str,
    *,
    token: str | None = None,
    method: str = "GET",
    tls: ssl.SSLContext | None = None,
) -> tuple[int, Mapping[str, str], bytes]:
    """A real HTTP client (urllib), in a worker thread; HTTPS with the client context ``tls``."""
    scheme = "http" if tls is None else "https"
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S, context=tls) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


async def get(port: int, path: str, **kwargs: Any) -> tuple[int, Mapping[str, str], bytes]:
    return await asyncio.to_thread(_get, port, path, **kwargs)


async def raw(
    port: int, data: bytes, *, half_close: bool = False, head: bool = False
) -> Reply | None:
    """Send ``data`` as is and read until the server closes; None when it sent nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        await writer.drain()
        async with asyncio.timeout(WAIT_S):
            answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    if not answer:
        return None
    fields, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = fields.decode("ascii").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version in ("HTTP/1.0", "HTTP/1.1")  # aiohttp answers in the request's version
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body) or (head and not body)
    return Reply(int(status), headers, body)


# --- the format ----------------------------------------------------------------------------


def test_metrics_are_served_in_the_prometheus_text_format() -> None:
    async def scenario() -> None:
        async with serving(MetricsServer("127.0.0.1:0", lambda: SAMPLES)) as port:
            status, headers, body = await get(port, "/metrics")
        assert status == 200
        assert headers["Content-Type"] == CONTENT_TYPE
        families = parse_exposition(body.decode("utf-8"))
        assert list(families) == sorted(families)
        lag = families["dockwatch_sink_lag"]
        assert (lag.type, lag.help) == ("gauge", "Movements not yet acknowledged.")
        assert lag.samples == {(("sink", "central"),): 0.0, (("sink", "mqtt"),): 3.0}
        assert families["dockwatch_movements_total"].samples == {(): 42.0}
        assert families["dockwatch_movements_total"].type == "counter"
        assert families["dockwatch_device_up"].samples == {(("device", 'odd "door"\\1\nb'),): 1.0}
        mean = families["dockwatch_confidence_mean"]
        assert mean.help == "A help text with a \\ and a\nnewline."
        assert mean.samples == {(): 0.9375}
        nan = families["dockwatch_nan"].samples
        assert nan is not None
        assert math.isnan(nan[()])
        assert families["dockwatch_inf"].samples == {(): -math.inf}

    asyncio.run(scenario())


def test_an_async_collector_is_awaited() -> None:
    async def collect() -> Samples:
        await asyncio.sleep(0)
        return {"dockwatch_last_seq": ("gauge", "Highest committed seq.", 7)}

    async def scenario() -> None:
        async with serving(MetricsServer("127.0.0.1:0", collect)) as port:
            status, _, body = await get(port, "/metrics")
        assert status == 200
        assert parse_exposition(body.decode())["dockwatch_last_seq"].samples == {(): 7.0}

    asyncio.run(scenario())


def test_render_refuses_what_a_scraper_would_reject() -> None:
    with pytest.raises(ValueError, match="sample name"):
        render({"9lives": ("gauge", "", 1)})
    with pytest.raises(ValueError, match="sample name"):
        render({'x{a="unterminated}': ("gauge", "", 1)})
    with pytest.raises(ValueError, match="type"):
        render({"x": ("histogram", "", 1)})
    with pytest.raises(ValueError, match="family"):
        render({'x{a="1"}': ("gauge", "", 1), 'x{a="2"}': ("counter", "", 1)})
    with pytest.raises(ValueError, match="label name"):
        labelled("x", **{"__reserved": "1"})
    assert render({}) == ""


def test_a_summary_is_one_family_of_its_sum_and_count() -> None:
    rtt = "Round-trip time."
    samples: Samples = {
        labelled("dockwatch_rtt_seconds_sum", endpoint="a:502"): ("summary", rtt, 0.25),
        labelled("dockwatch_rtt_seconds_count", endpoint="a:502"): ("summary", rtt, 10),
        labelled("dockwatch_rtt_seconds_sum", endpoint="b:502"): ("summary", rtt, 0),
        labelled("dockwatch_rtt_seconds_count", endpoint="b:502"): ("summary", rtt, 0),
        labelled("dockwatch_rtt_seconds", quantile="0.5"): ("summary", rtt, 0.02),
        "dockwatch_rtt_seconds_total": ("counter", "Not part of the summary.", 3),
    }
    text = render(samples)
    families = parse_exposition(text)
    assert text.count("# TYPE dockwatch_rtt_seconds summary\n") == 1
    assert "# TYPE dockwatch_rtt_seconds_sum" not in text
    rtt_family = families["dockwatch_rtt_seconds"]
    assert (rtt_family.type, rtt_family.help) == ("summary", rtt)
    assert rtt_family.samples == {(("quantile", "0.5"),): 0.02}
    assert rtt_family.suffixed == {
        "_sum": {(("endpoint", "a:502"),): 0.25, (("endpoint", "b:502"),): 0.0},
        "_count": {(("endpoint", "a:502"),): 10.0, (("endpoint", "b:502"),): 0.0},
    }
    assert families["dockwatch_rtt_seconds_total"].type == "counter"


def test_render_refuses_summary_samples_a_scraper_could_not_place() -> None:
    with pytest.raises(ValueError, match="summary sample"):
        render({"x_seconds": ("summary", "", 1)})  # neither _sum, _count nor a quantile
    with pytest.raises(ValueError, match="summary sample"):
        render({"_sum": ("summary", "", 1)})
    with pytest.raises(ValueError, match="family"):
        render({"x_sum": ("summary", "", 1), "x": ("gauge", "", 1)})


# --- routes and auth -----------------------------------------------------------------------


def test_healthz_routes_and_methods() -> None:
    healthy = True

    async def scenario() -> None:
        nonlocal healthy
        server = MetricsServer("127.0.0.1:0", lambda: SAMPLES, health=lambda: healthy)
        async with serving(server) as port:
            assert (await get(port, "/healthz"))[::2] == (200, b"ok\n")
            assert (await get(port, "/healthz?verbose=1"))[::2] == (200, b"ok\n")
            healthy = False
            assert (await get(port, "/healthz"))[::2] == (503, b"unhealthy\n")
            assert (await get(port, "/"))[0] == 404
            assert (await get(port, "/metrics/../etc/passwd"))[0] == 404
            status, headers, _ = await get(port, "/metrics", method="POST")
            assert (status, headers["Allow"]) == (405, "GET, HEAD")
            head = await raw(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", head=True)
            assert head is not None
            assert head.status == 200
            assert int(head.headers["content-length"]) > 0
            assert head.body == b""

    asyncio.run(scenario())


def test_readyz_gives_the_reason_on_one_line() -> None:
    reason: str | None = "starting"

    async def scenario() -> None:
        nonlocal reason
        server = MetricsServer("127.0.0.1:0", lambda: SAMPLES, ready=lambda: reason)
        async with serving(server) as port:
            assert (await get(port, "/readyz"))[::2] == (503, b"starting\n")
            assert (await get(port, "/healthz"))[::2] == (200, b"ok\n")  # alive all along
            reason = "store unavailable: last_seq failed:\nOperationalError:  gone"
            status, headers, body = await get(port, "/readyz")
            assert (status, body) == (
                503,
                b"store unavailable: last_seq failed: OperationalError: gone\n",
            )
            assert headers["Content-Type"].startswith("text/plain")
            reason = None
            assert (await get(port, "/readyz"))[::2] == (200, b"ready\n")
            assert (await get(port, "/readyz", method="POST"))[0] == 405

    asyncio.run(scenario())


def test_readyz_without_its_own_check_follows_health() -> None:
    healthy = True

    async def scenario() -> None:
        nonlocal healthy
        server = MetricsServer("127.0.0.1:0", lambda: SAMPLES, health=lambda: healthy)
        async with serving(server) as port:
            assert (await get(port, "/readyz"))[::2] == (200, b"ready\n")
            healthy = False
            assert (await get(port, "/readyz"))[::2] == (503, b"unhealthy\n")

    asyncio.run(scenario())


def test_the_token_guards_metrics_but_not_healthz(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def scenario() -> None:
        # A token makes any address acceptable.
        server = MetricsServer("0.0.0.0:0", lambda: SAMPLES, token=TOKEN)
        async with serving(server) as port:
            for token in (None, "wrong", TOKEN + "x", ""):
                status, headers, body = await get(port, "/metrics", token=token)
                assert status == 401
                assert headers["WWW-Authenticate"].startswith("Bearer")
                assert b"dockwatch" not in body
            status, _, body = await get(port, "/metrics", token=TOKEN)
            assert status == 200
            assert b"dockwatch_movements_total 42" in body
            assert (await get(port, "/healthz"))[0] == 200
            assert (await get(port, "/readyz"))[0] == 200

    asyncio.run(scenario())
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


@pytest.mark.parametrize("listen", ["0.0.0.0:9108", "[::]:9108", "metrics.example:9108"])
def test_an_unauthenticated_endpoint_on_a_non_loopback_address_is_refused(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"api\.metrics_listen"):
        MetricsServer(listen, lambda: SAMPLES)


def test_an_unauthenticated_endpoint_on_loopback_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    MetricsServer("127.0.0.1:9108", lambda: SAMPLES)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "loopback" in warnings[0].getMessage()


def test_a_taken_port_fails_at_start() -> None:
    async def scenario() -> None:
        async with serving(MetricsServer("127.0.0.1:0", lambda: SAMPLES)) as port:
            with pytest.raises(GatewayError, match="cannot listen"):
                await MetricsServer(f"127.0.0.1:{port}", lambda: SAMPLES).start()

    asyncio.run(scenario())


# --- a broken collector, abusive clients ---------------------------------------------------


def test_a_failing_collector_answers_500_is_logged_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    broken = True

    def collect() -> Samples:
        if broken:
            raise RuntimeError("counter source gone")
        return SAMPLES

    async def scenario() -> None:
        nonlocal broken
        async with serving(MetricsServer("127.0.0.1:0", collect)) as port:
            for _ in range(3):
                assert (await get(port, "/metrics"))[0] == 500
            assert (await get(port, "/healthz"))[0] == 200
            broken = False
            assert (await get(port, "/metrics"))[0] == 200

    asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert any("works again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS ClientHello
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
        (b"G\xc3\x89T /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /m\xc3\xa9trics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112 3.2)
        (b"GET /metrics HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\n" + b"X: aaaaaaaaaa\r\n" * 700 + b"\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\n" + b"X: 1\r\n" * 150 + b"\r\n", 431),
        (b"\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n", 200),  # leading blank lines: tolerated
        (b"GET /healthz HTTP/1.0\n\n", 400),  # bare LF: aiohttp's parser is strict
    ],
)
def test_malformed_requests_get_a_clean_error(data: bytes, status: int) -> None:
    async def scenario() -> None:
        async with serving(MetricsServer("127.0.0.1:0", lambda: SAMPLES)) as port:
            reply = await raw(port, data)
            assert reply is not None
            assert reply.status == status
            assert (await get(port, "/healthz"))[0] == 200  # still serving

    asyncio.run(scenario())


def test_what_aiohttp_refuses_is_answered_and_logged_at_debug_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with serving(MetricsServer("127.0.0.1:0", lambda: SAMPLES)) as port:
            for _ in range(3):  # aiohttp answers these itself (without Connection: close)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n")
                async with asyncio.timeout(WAIT_S):
                    answer = await reader.read()
                writer.close()
                assert answer.split(b" ", 2)[1] == b"400"
            assert (await get(port, "/healthz"))[0] == 200

    asyncio.run(scenario())
    assert not [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and "loopback" not in r.getMessage()
    ]
    assert any(r.name == f"{LOGGER}.http" for r in caplog.records)


def test_slow_silent_and_half_closed_clients_are_cut_off() -> None:
    timeout_s = 0.3

    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", lambda: SAMPLES, request_timeout_s=timeout_s)
        async with serving(server) as port:
            started = time.monotonic()
            silent, slow = await asyncio.gather(
                raw(port, b""), raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            )
            # Cut off by the request timeout: not before it, and not much after it (the slack
            # is for a loaded machine; a server without the timeout waits for ever).
            cut_off_in = time.monotonic() - started
            assert timeout_s - 0.01 <= cut_off_in < timeout_s + 2.7
            assert silent is not None
            assert silent.status == 408
            assert slow is not None
            assert slow.status == 408
            partial = await raw(port, b"GET /metrics HTTP/1.1\r\n", half_close=True)
            assert partial is not None
            assert partial.status == 400

    asyncio.run(scenario())


class _Stalled:
    """A collector that does not answer until released: its scrapes hold their slots."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def __call__(self) -> Samples:
        self.entered += 1
        self.waiting.set()
        await self.release.wait()
        return SAMPLES


def test_scrapes_beyond_the_limit_are_turned_away_at_once_but_liveness_never() -> None:
    async def scenario() -> None:
        collect = _Stalled()
        server = MetricsServer("127.0.0.1:0", collect, request_timeout_s=30.0, max_connections=2)
        async with serving(server) as port:
            # Idle connections take no slot: liveness and scrapes are still answered.
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
            stalled = [
                asyncio.ensure_future(raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
                for _ in range(2)
            ]
            async with asyncio.timeout(WAIT_S):
                while collect.entered < 2:
                    collect.waiting.clear()
                    await collect.waiting.wait()
            started = time.monotonic()
            busy = await raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            ready = await raw(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            alive = await raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert time.monotonic() - started < 5.0  # at once, not after the 30 s timeout
            assert busy is not None
            assert ready is not None
            assert alive is not None
            assert (busy.status, busy.body) == (503, b"too many connections\n")
            assert ready.status == 503
            assert (alive.status, alive.body) == (200, b"ok\n")
            collect.release.set()
            for scrape in stalled:
                answer = await scrape
                assert answer is not None
                assert answer.status == 200
            for _, writer in idle:
                writer.close()
                await writer.wait_closed()

    asyncio.run(scenario())


def test_idle_connections_cannot_lock_out_liveness() -> None:
    """200 idle connections, then more than ``max_open``: /healthz answers every time."""

    async def scenario() -> None:
        server = MetricsServer(
            "127.0.0.1:0", lambda: SAMPLES, request_timeout_s=30.0, max_connections=4, max_open=64
        )
        async with serving(server) as port:
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
            for path in (b"/healthz", b"/metrics", b"/healthz"):
                answer = await raw(port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                assert answer is not None
                assert answer.status == 200, answer
            assert server.dropped_idle >= 200 - 64
            for _, writer in idle:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

    asyncio.run(scenario())


def test_stop_drops_connections_in_progress() -> None:
    request_timeout_s = 30.0

    async def scenario() -> None:
        server = MetricsServer(
            "127.0.0.1:0", lambda: SAMPLES, request_timeout_s=request_timeout_s, max_connections=1
        )
        port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")
        await writer.drain()
        # Connections are accepted in order: once a later one is answered, the server is
        # serving the first, which waits for the rest of its headers.
        probe = await raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert probe is not None
        assert probe.status == 200
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < request_timeout_s / 6  # not the request timeout
        async with asyncio.timeout(WAIT_S):
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""  # EOF or reset: the connection is gone
        writer.close()
        with pytest.raises(ConnectionError):
            await asyncio.open_connection("127.0.0.1", port)

    asyncio.run(scenario())


def test_run_serves_a_started_server_until_cancelled() -> None:
    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", lambda: SAMPLES)
        port = await server.start()  # fail fast first, then hand the server to a task
        task = asyncio.get_running_loop().create_task(server.run())
        assert (await get(port, "/healthz"))[0] == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ConnectionError):
            await asyncio.open_connection("127.0.0.1", port)

    asyncio.run(scenario())


# --- TLS (api.tls) ---------------------------------------------------------------------------

Runner = Callable[[Coroutine[Any, Any, None]], None]
ON_BOTH_LOOPS = pytest.mark.parametrize(
    "run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"]
)  # the gateway runs on uvloop, whose TLS is its own implementation
CONNECTION_FAILED = (
    urllib.error.URLError,
    ConnectionError,
    http.client.HTTPException,
    ssl.SSLError,
)


@dataclass(frozen=True)
class Pki:
    """A server certificate for 127.0.0.1 from one CA, client certificates from another."""

    server_ca: Pem
    server: Pem
    client_ca: Pem
    client: Pem
    stranger: Pem
    """A client certificate signed by the server CA, which the gateway does not accept."""

    def server_context(self, *, client_certs: bool = False) -> ssl.SSLContext:
        ca = self.client_ca.cert_file if client_certs else None
        return server_tls_context(self.server.cert_file, self.server.key_file, ca)

    def client_context(self, pem: Pem | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.server_ca.cert_file)
        if pem is not None:
            context.load_cert_chain(pem.cert_file, pem.key_file)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    server_ca = certificate_authority(root / "server-ca")
    client_ca = certificate_authority(root / "client-ca", "clients")
    return Pki(
        server_ca=server_ca,
        server=issue(server_ca, root / "server", "localhost", server=True),
        client_ca=client_ca,
        client=issue(client_ca, root / "client", "prometheus", server=False),
        stranger=issue(server_ca, root / "stranger", "stranger", server=False),
    )


@ON_BOTH_LOOPS
def test_https_scrape_with_a_token(pki: Pki, run: Runner, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    client = pki.client_context()

    async def scenario() -> None:
        # TLS and a token: any address, and no warning about a token in clear.
        server = MetricsServer("0.0.0.0:0", lambda: SAMPLES, TOKEN, tls=pki.server_context())
        async with serving(server) as port:
            status, headers, body = await get(port, "/metrics", token=TOKEN, tls=client)
            assert (status, headers["Content-Type"]) == (200, CONTENT_TYPE)
            assert parse_exposition(body.decode())["dockwatch_movements_total"].samples == {
                (): 42.0
            }
            status, headers, _ = await get(port, "/metrics", tls=client)
            assert status == 401
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert (await get(port, "/metrics", token="wrong", tls=client))[0] == 401
            assert (await get(port, "/healthz", tls=client))[::2] == (200, b"ok\n")
            assert (await get(port, "/readyz", tls=client))[::2] == (200, b"ready\n")
            # A client that does not trust the certificate gets nothing.
            with pytest.raises(CONNECTION_FAILED):
                await get(port, "/healthz", tls=ssl.create_default_context())

    run(scenario())
    assert not [r for r in caplog.records if "unencrypted" in r.getMessage()]
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    started = [r.getMessage() for r in caplog.records if "listening" in r.getMessage()]
    assert len(started) == 1
    assert "HTTPS" in started[0]


@ON_BOTH_LOOPS
def test_client_certificates_guard_metrics_but_not_the_probes(pki: Pki, run: Runner) -> None:
    client, anonymous = pki.client_context(pki.client), pki.client_context()

    async def scenario() -> None:
        # Client certificates are authentication enough to listen on any address.
        server = MetricsServer(
            "0.0.0.0:0", lambda: SAMPLES, tls=pki.server_context(client_certs=True)
        )
        async with serving(server) as port:
            assert (await get(port, "/metrics", tls=client))[0] == 200
            # Probes (Docker HEALTHCHECK, kubelet httpGet) have no client certificate.
            assert (await get(port, "/healthz", tls=anonymous))[::2] == (200, b"ok\n")
            assert (await get(port, "/readyz", tls=anonymous))[::2] == (200, b"ready\n")
            status, _, body = await get(port, "/metrics", tls=anonymous)
            assert (status, body) == (403, b"client certificate required\n")
            # A certificate that is presented must come from the client CA.
            with pytest.raises(CONNECTION_FAILED):
                await get(port, "/healthz", tls=pki.client_context(pki.stranger))
            assert server.handshake_failures == 1
            assert (await get(port, "/metrics", tls=client))[0] == 200  # still serving

        # With a token as well, /metrics needs both (as the gRPC API does).
        both = MetricsServer(
            "0.0.0.0:0", lambda: SAMPLES, TOKEN, tls=pki.server_context(client_certs=True)
        )
        async with serving(both) as port:
            assert (await get(port, "/metrics", token=TOKEN, tls=client))[0] == 200
            assert (await get(port, "/metrics", tls=client))[0] == 401
            assert (await get(port, "/metrics", token=TOKEN, tls=anonymous))[0] == 403
            assert (await get(port, "/healthz", tls=anonymous))[0] == 200

    run(scenario())


@ON_BOTH_LOOPS
def test_plain_http_and_stalled_handshakes_on_the_tls_port_are_closed(
    pki: Pki, run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    timeout_s = 0.3

    async def scenario() -> None:
        server = MetricsServer(
            "127.0.0.1:0", lambda: SAMPLES, tls=pki.server_context(), request_timeout_s=timeout_s
        )
        async with serving(server) as port:
            # A client that connects and never starts the handshake ...
            silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
            # (closed whatever happens: uvloop's loop.close() hangs on an open transport when
            # its ResourceWarning is an error, which would turn a failure into a hang)
            try:
                started = time.monotonic()
                # ... plain HTTP: the connection is closed without an answer, twice ...
                assert await raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") is None
                assert await raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") is None
                # ... neither stalls the server ...
                assert (await get(port, "/healthz", tls=pki.client_context()))[0] == 200
                assert server.handshake_failures == 2
                # ... and the silent client is cut off by the handshake timeout.
                async with asyncio.timeout(WAIT_S):
                    with contextlib.suppress(ConnectionError):
                        assert await silent_reader.read() == b""
                assert time.monotonic() - started >= timeout_s - 0.01
            finally:
                silent_writer.close()
            assert (await get(port, "/metrics", tls=pki.client_context()))[0] == 200

    run(scenario())
    failed = [r for r in caplog.records if "handshake failed" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.INFO, logging.DEBUG]
    assert "plain HTTP" in failed[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback


def test_tls_alone_does_not_open_a_non_loopback_address(pki: Pki) -> None:
    # TLS encrypts but admits anyone: without a token or client certificates, loopback only.
    with pytest.raises(ConfigError, match=r"api\.metrics_listen") as err:
        MetricsServer("0.0.0.0:9108", lambda: SAMPLES, tls=pki.server_context())
    assert "client certificates (api.tls.client_ca_file)" in str(err.value)
    MetricsServer("127.0.0.1:9108", lambda: SAMPLES, tls=pki.server_context())


def test_a_token_over_plain_http_beyond_loopback_warns_once(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    MetricsServer("0.0.0.0:9108", lambda: SAMPLES, TOKEN)
    MetricsServer("127.0.0.1:9108", lambda: SAMPLES, TOKEN)  # loopback: nobody on the path
    MetricsServer("0.0.0.0:9108", lambda: SAMPLES, TOKEN, tls=pki.server_context())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "0.0.0.0:9108" in warnings[0]
    assert "unencrypted" in warnings[0]
    assert TOKEN not in warnings[0]


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("the openssl binary")
    assert openssl is not None
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)


def test_unusable_tls_files_are_config_errors_naming_the_key(pki: Pki, tmp_path: Path) -> None:
    server, other = pki.server, pki.client
    encrypted = tmp_path / "encrypted.key"
    _openssl("pkey", "-in", str(server.key_file), "-aes256", "-passout", "pass:x",
             "-out", str(encrypted))  # fmt: skip
    not_pem = tmp_path / "not.pem"
    not_pem.write_bytes(b"\x30\x82 DER bytes")
    cases: list[tuple[tuple[Path, Path, Path | None], str]] = [
        ((not_pem, server.key_file, None), r"^api\.tls\.cert_file: .* is not a PEM certificate"),
        ((server.cert_file, not_pem, None), r"^api\.tls\.key_file: .* is not a PEM private key"),
        ((server.cert_file, other.key_file, None), r"^api\.tls\.cert_file/api\.tls\.key_file"),
        ((server.cert_file, encrypted, None), r"^api\.tls\.key_file: .* is encrypted"),
        ((server.cert_file, server.key_file, not_pem), r"^api\.tls\.client_ca_file: "),
        ((server.cert_file, server.key_file, server.key_file), r"^api\.tls\.client_ca_file: "),
        ((tmp_path / "gone.pem", server.key_file, None), r"^api\.tls\.cert_file: cannot read"),
    ]
    for files, match in cases:
        with pytest.raises(ConfigError, match=match):
            server_tls_context(*files)
    context = pki.server_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    assert pki.server_context(client_certs=True).verify_mode == ssl.CERT_OPTIONAL
    with pytest.raises(ValueError, match="server-side"):
        MetricsServer("127.0.0.1:0", lambda: SAMPLES, tls=ssl.create_default_context())
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    legacy.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED  # whatever OpenSSL still allows
    with pytest.raises(ValueError, match=r"TLS 1\.2"):
        MetricsServer("127.0.0.1:0", lambda: SAMPLES, tls=legacy)


# --- the image's health check --------------------------------------------------------------

DOCKERFILE = Path(__file__).resolve().parents[1] / "deploy" / "Dockerfile"


def _healthcheck_probe() -> list[str]:
    """The command of deploy/Dockerfile's HEALTHCHECK (exec form), with this interpreter."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK ")]
    command = json.loads(line.partition(" CMD ")[2])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


async def _probe(port: int, scheme: str = "http") -> int:
    """The probe's exit status against 127.0.0.1:``port``."""
    env = {**os.environ, "DOCKWATCH_HEALTH_URL": f"{scheme}://127.0.0.1:{port}/healthz"}
    process = await asyncio.create_subprocess_exec(
        *_healthcheck_probe(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    async with asyncio.timeout(WAIT_S):
        return await process.wait()


def test_the_image_health_check_works_with_and_without_tls(pki: Pki) -> None:
    healthy = True

    async def scenario() -> None:
        plain = MetricsServer("127.0.0.1:0", lambda: SAMPLES, health=lambda: healthy)
        mutual = MetricsServer(
            "127.0.0.1:0",
            lambda: SAMPLES,
            TOKEN,
            tls=pki.server_context(client_certs=True),
            health=lambda: healthy,
        )
        async with serving(plain) as plain_port, serving(mutual) as tls_port:
            assert await _probe(plain_port) == 0
            assert await _probe(tls_port) == 0  # no token, no client certificate needed
            assert await _probe(tls_port, "https") == 0  # told the scheme: one try
            nonlocal healthy
            healthy = False
            assert await _probe(plain_port) == 1
            assert await _probe(tls_port) == 1
        assert await _probe(plain_port) == 1  # nothing listens any more

    asyncio.run(scenario())
