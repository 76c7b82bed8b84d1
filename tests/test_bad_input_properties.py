"""Property-based bad input (issue 16): mutated configs and receipt files, gRPC arguments and
LLRP reports. Whatever the mutation, the answer is a clear one (exit 0 or 2, a gRPC status
that is not UNKNOWN or INTERNAL, an adapter still running), never a traceback.

The Modbus side (any register bits, any received bytes) is in ``test_modbus_bad_input.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_store import EdgeStore, LocationRecord
from gateway.adapters.grpc_api import EdgeApiServer
from gateway.cli import main
from gateway.documents import json_by_lines
from gateway.domain.model import CatalogItem, DeviceState, Sku
from gateway.llrp import codec
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc
from tests.test_llrp_adapter import make_adapter, running, simulator

ROOT = Path(__file__).resolve().parent.parent
DEMO_TEXT = (ROOT / "deploy" / "demo.yaml").read_text()
DEMO = yaml.safe_load(DEMO_TEXT)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**30, -1, 0, 2**63, 2**64 - 1, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["a" * 100_000, "x\x00y", "/" * 5000, "\u202e", "../../etc/passwd", ""]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(1, 60).map(_nested),
)


def _paths(data: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _paths(value, (*prefix, index))


def _replace(data: Any, path: tuple[Any, ...], value: object) -> Any:
    if not path:
        return value
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[path[0]] = _replace(copy[path[0]], path[1:], value)
    return copy


def _mutated_document(base: object) -> st.SearchStrategy[object]:
    paths = list(_paths(base))
    return st.builds(
        lambda path, value: _replace(base, path, value), st.sampled_from(paths), HOSTILE
    )


def _byte_mutations(text: str) -> st.SearchStrategy[bytes]:
    raw = text.encode()

    def mutate(position: int, junk: bytes, cut: bool) -> bytes:
        at = position % (len(raw) + 1)
        return raw[:at] + junk if cut else raw[:at] + junk + raw[at:]

    return st.builds(
        mutate,
        st.integers(0, len(raw)),
        st.sampled_from([b"\x00", b"\xff\xfe", b"[[[[", b"{", b"&a [*a]", b"\t", b": :", b""])
        | st.binary(max_size=8),
        st.booleans(),
    )


def _dump(document: object) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


@contextlib.contextmanager
def _own_logging() -> Iterator[None]:
    """No root handler left by another test (``dockwatch run`` configures one on the stderr of
    its time, which may be closed by now): what the command logs goes to this example's stderr."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = []
    try:
        yield
    finally:
        root.handlers[:] = saved


def _run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _own_logging():
        status = main(list(argv))  # an exception fails the example, with its traceback
    return status, err.getvalue()


def _check(status: int, err: str) -> None:
    assert status in (0, 2), err
    assert "Traceback" not in err
    if status == 2:
        assert err.strip(), "exit 2 must say why"
        assert max(len(line) for line in err.splitlines()) < 2000, "one clear line, not a dump"


@SETTINGS
@given(st.one_of(_mutated_document(DEMO).map(_dump).map(str.encode), _byte_mutations(DEMO_TEXT)))
def test_a_mutated_config_is_exit_0_or_2_never_a_traceback(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gw.yaml"
        config.write_bytes(content)
        _check(*_run_cli("check-config", "--no-env", str(config)))


RECEIPTS = {
    "receipts": [
        {
            "id": "ASN-1",
            "door": "door-1",
            "supplier": "ACME",
            "lines": [
                {"sku": "SKU-1001", "quantity": 12},
                {
                    "epcs": [
                        "urn:epc:id:sgtin:0614141.012345.1",
                        "urn:epc:id:sgtin:0614141.012345.2",
                    ]
                },
            ],
        }
    ]
}
RECEIPTS_TEXT = _dump(RECEIPTS)


@SETTINGS
@given(
    st.one_of(
        _mutated_document(RECEIPTS).map(_dump).map(str.encode), _byte_mutations(RECEIPTS_TEXT)
    ),
    st.booleans(),
)
def test_a_mutated_receipts_file_is_exit_0_or_2_never_a_traceback(
    content: bytes, with_config: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asn = Path(tmp) / "asn.yaml"
        asn.write_bytes(content)
        config = ("--config", str(ROOT / "deploy" / "demo.yaml")) if with_config else ()
        _check(*_run_cli("receipts", "check", str(asn), *config))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(st.lists(JSON_VALUES, max_size=8), st.sampled_from([None, "receipts", "a\nb"]))
def test_json_read_line_by_line_is_the_same_document(items: list[object], key: str | None) -> None:
    """Big expected files are parsed a line at a time (json.loads holds the GIL); the result
    must be exactly what one json.loads gives, or None (then one json.loads is used)."""
    head = "[" if key is None else "{" + json.dumps(key) + ": ["
    tail = "]" if key is None else "]}"
    text = head + "\n" + ",\n".join(json.dumps(item) for item in items) + "\n" + tail + "\n"
    by_lines = json_by_lines(text)
    assert by_lines is None or by_lines == json.loads(text)
    pretty = json.dumps(items if key is None else {key: items}, indent=2)
    assert json_by_lines(pretty) in (None, json.loads(pretty))


# --- gRPC arguments -----------------------------------------------------------------------


class _Api:
    """The local API served by its own event loop in a thread, for synchronous examples."""

    def __init__(self, store: EdgeStore) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = EdgeApiServer(store, site="dc-test", listen="127.0.0.1:0")
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> _Api:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0.5), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def api_stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("grpc") / "edge.db"
    with EdgeStore.open(f"sqlite:///{path}", site="dc-test") as store:
        store.sync_catalog(
            [CatalogItem(sku=Sku("SKU-1"), name="Widget")], [LocationRecord(id="yard")]
        )
        with _Api(store) as api, grpc.insecure_channel(f"127.0.0.1:{api.port}") as channel:
            yield edge_api_pb2_grpc.EdgeApiStub(channel)


CLEAR = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE}
IDS = st.one_of(st.text(max_size=80), st.sampled_from(["x" * 65, "a\x00b", "yard", "SKU-1"]))


def _code(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


@pytest.mark.integration
@settings(max_examples=80, deadline=None)
@given(
    after_seq=st.integers(0, 2**64 - 1) | st.sampled_from([2**63, 2**63 - 1, 2**64 - 1]),
    page_size=st.integers(0, 2**32 - 1),
    location=IDS,
    sku=IDS,
)
def test_any_grpc_arguments_get_a_clear_status(
    api_stub: Any, after_seq: int, page_size: int, location: str, sku: str
) -> None:
    def watch() -> None:
        call = api_stub.WatchMovements(edge_api_pb2.WatchRequest(after_seq=after_seq), timeout=5)
        try:
            next(call)  # the first response, or the refusal
        finally:
            call.cancel()

    calls = [
        lambda: api_stub.ListMovements(
            edge_api_pb2.ListMovementsRequest(after_seq=after_seq, page_size=page_size), timeout=5
        ),
        lambda: api_stub.GetStock(edge_api_pb2.StockQuery(location=location, sku=sku), timeout=5),
    ]
    if after_seq > 0:  # a watch from 0 waits for news: a valid request with nothing to prove
        calls.append(watch)
    for call in calls:
        assert _code(call) in CLEAR


# --- LLRP reports -------------------------------------------------------------------------


def _report(seed: int) -> bytes:
    tags = tuple(
        codec.TagReportData(
            epc=bytes([0x30, seed % 256, n]) * 4,
            antenna_id=1 + n % 4,
            peak_rssi=-50,
            first_seen_utc_us=1_800_000_000_000_000,
            last_seen_utc_us=1_800_000_000_000_000,
            tag_seen_count=1,
        )
        for n in range(4)
    )
    return codec.ROAccessReport(tags=tags).encode()


@pytest.mark.integration
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(10, 200), st.binary(min_size=1, max_size=4), st.booleans()),
        min_size=4,
        max_size=8,
    )
)
def test_mutated_llrp_reports_never_stop_the_adapter(
    mutations: list[tuple[int, bytes, bool]],
) -> None:
    """Report bodies mutated past the header (a reader that cannot frame its reports kills
    its own connection: that is a reconnect, tested with the faults): the adapter drops or
    counts what it cannot use and keeps delivering the reader's good reads."""

    async def scenario() -> None:
        async with simulator() as sim:
            adapter, rec = make_adapter(sim.port)
            async with running(adapter) as tasks:
                await rec.until(lambda: bool(rec.reads()))
                for seed, (position, junk, overwrite) in enumerate(mutations):
                    report = bytearray(_report(seed))
                    at = 10 + position % max(1, len(report) - 10)
                    if overwrite:
                        report[at : at + len(junk)] = junk
                    else:
                        report[at:at] = junk
                    await sim.inject_bytes(bytes(report))
                seen = len(rec.reads())
                await rec.until(lambda: len(rec.reads()) > seen)
                assert not any(task.done() for task in tasks)
                assert rec.statuses[-1].state in (DeviceState.ONLINE, DeviceState.DEGRADED)

    asyncio.run(scenario())
