"""The operator console's routes on the gateway's HTTP listener (``api.metrics_listen``).

Pages are rendered on the server (:mod:`gateway.console.pages`); ``/events`` is a Server-Sent
Events stream of what :class:`~gateway.console.feed.ConsoleFeed` hears (the events that feed
MQTT) plus a ``tick`` each second with the sync lag per sink, movements in the current minute
and the read counters per antenna. The listener applies the API's TLS, token and
client-certificate rules to every path here but ``/login`` and ``/static/`` (see
:mod:`gateway.adapters.metrics`); a browser carries the token in a cookie set by ``/login``.

Actions (``POST /actions/...``) need the operator token (``api.operator_token_file`` or
``_env``) in the ``X-Operator-Token`` header, which the page sends from the token field in its
header: 401 without it, 403 with a wrong one or when no operator token is configured (the
console is read-only then). A header, not a cookie: a page of another site cannot make the
browser send it, so actions need no separate CSRF token. The token is never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from gateway.adapters.metrics import TOKEN_COOKIE, plain
from gateway.console.feed import ConsoleFeed, FeedFull, alert_dict, device_dict, stock_dict
from gateway.console.feed import movement_dict as movement_row
from gateway.console.pages import PAGES, Page, e, json_block, layout, sign_in, table
from gateway.domain.model import Alert, DeviceStatus, RecordedMovement, StockLevel
from gateway.domain.receiving import ReceiptState, ReceiptStatus

__all__ = ["Console", "ConsoleData", "DoorView", "ShelfView"]

log = logging.getLogger(__name__)

OPERATOR_HEADER = "X-Operator-Token"
TICK_S = 1.0
"""How often a stream gets the sync lag, the minute's movements and the antenna counters."""
STATIC = ("console.js", "console.css")
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}
MAX_UPLOAD_BYTES = 8 << 20
MAX_TAGS = 100
"""At most this many tags in one read-strip request (a pallet's cases)."""
MAX_TAG_READS = 5000
TICK_RECEIPTS_MAX = 200
"""At most this many (the most recent) receipts in a tick."""


@dataclass(frozen=True, slots=True)
class ShelfView:
    shelf_id: str
    location: str
    sku: str
    on_hand: int | None
    reorder_point: int | None
    unit_weight_g: float
    baseline_g: float | None
    phase: str


@dataclass(frozen=True, slots=True)
class DoorView:
    portal_id: str
    reader_id: str
    outside_antennas: tuple[int, ...]
    inside_antennas: tuple[int, ...]
    outside_location: str
    inside_location: str


@dataclass(frozen=True, slots=True)
class ConsoleData:
    """How the console reads the gateway (the composition root wires these)."""

    site: str
    devices: Callable[[], Awaitable[list[DeviceStatus]]]
    """Every device's last status (from the store)."""
    device_ids: Sequence[tuple[str, str]]
    """Every configured device as (id, type), so a silent one is listed too."""
    stock: Callable[[], Awaitable[list[StockLevel]]]
    alerts: Callable[[], Awaitable[list[Alert]]]
    """Alert history, active and cleared (from the store)."""
    recent: Callable[[int], Awaitable[list[RecordedMovement]]]
    """The last N movements, oldest first."""
    sync: Callable[[], Mapping[str, int]]
    """``last_seq`` and each sink's acknowledged seq."""
    shelves: Callable[[], list[ShelfView]]
    doors: Sequence[DoorView]
    antennas: Callable[[], Mapping[tuple[str, int], int]]
    """Reads since start per (reader, antenna)."""
    receipts: Callable[[], list[ReceiptStatus]] | None
    """None: no expected receipts configured (``receiving.expected_file``)."""


Action = Callable[[str], Awaitable[str]]


class Console:
    """The console's routes: ``setup`` is given to the listener (``MetricsServer(setup=...)``)."""

    public = frozenset({"/login"})
    public_prefixes = ("/static/",)
    streams = frozenset({"/events"})

    def __init__(
        self,
        data: ConsoleData,
        feed: ConsoleFeed,
        *,
        operator_token: str | None = None,
        load_receipts: Callable[[Path, str], Awaitable[str]] | None = None,
        recount: Action | None = None,
    ) -> None:
        self._data = data
        self._feed = feed
        self._operator = None if operator_token is None else operator_token.encode()
        self._load_receipts = load_receipts
        self._recount = recount
        self._closing = asyncio.Event()
        self._static = {
            name: (resources.files("gateway.console") / "static" / name).read_bytes()
            for name in STATIC
        }

    def listener_options(self) -> dict[str, Any]:
        """The keyword arguments that put this console on a ``MetricsServer``."""
        return {
            "setup": self.setup,
            "public": self.public,
            "public_prefixes": self.public_prefixes,
            "streams": self.streams,
            "max_body_bytes": MAX_UPLOAD_BYTES + 65_536,
        }

    def setup(self, app: web.Application) -> None:
        for page in PAGES:
            app.router.add_get(page.path, self._page_handler(page))
        app.router.add_get("/login", self._sign_in)
        app.router.add_post("/login", self._signed_in)
        app.router.add_get("/events", self._events)
        app.router.add_get("/doors/reads", self._tag_reads)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_post("/actions/receipts", self._upload)
        app.router.add_post("/actions/alerts/{alert_id}/acknowledge", self._acknowledge)
        app.router.add_post("/actions/shelves/{shelf_id}/recount", self._recount_shelf)
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, app: web.Application) -> None:
        self._closing.set()

    # --- pages -------------------------------------------------------------------------------

    def _page_handler(self, page: Page) -> Callable[[web.Request], Awaitable[web.Response]]:
        render = getattr(self, f"_{page.name}")

        async def handler(request: web.Request) -> web.Response:
            body = await render()
            html = layout(page, self._data.site, body, actions=self._operator is not None)
            return web.Response(
                text=html, content_type="text/html", headers={"Cache-Control": "no-store"}
            )

        return handler

    async def _overview(self) -> str:
        statuses: dict[str, dict[str, object]] = {
            str(s.device_id): device_dict(s) for s in await self._data.devices()
        }
        statuses.update(self._feed.devices)
        devices = [
            statuses.get(
                device_id,
                {"device_id": device_id, "device_type": kind, "state": "unknown", "since": None},
            )
            for device_id, kind in self._data.device_ids
        ]
        sync = self._data.sync()
        last = sync.get("last_seq", 0)
        sinks = [
            {"sink": name, "acked": acked, "lag": max(0, last - acked)}
            for name, acked in sync.items()
            if name != "last_seq"
        ]
        active = [
            {**a, "acknowledged": a["alert_id"] in self._feed.acknowledged}
            for a in (alert_dict(x) for x in await self._data.alerts())
            if a["active"]
        ]
        per_minute = [
            {"minute": m.strftime("%H:%M"), "movements": n}
            for m, n in self._feed.movements_per_minute()[-10:]
        ]
        return (
            '<section class="grid">'
            '<div><h2 id="devices-h">Devices</h2>'
            + table(
                "devices",
                [
                    ("device_id", "Device"),
                    ("device_type", "Type"),
                    ("state", "State"),
                    ("since", "Since"),
                    ("detail", "Detail"),
                ],
                devices,
                key="device_id",
            )
            + "</div><div><h2>Sync lag per sink</h2>"
            + f'<p>last seq <strong id="last-seq">{last}</strong></p>'
            + table(
                "sinks",
                [("sink", "Sink"), ("acked", "Acknowledged"), ("lag", "Behind")],
                sinks,
                key="sink",
            )
            + "<h2>Movements per minute</h2>"
            + f'<p>this minute: <strong id="this-minute">{_this_minute(self._feed)}</strong></p>'
            + table("per-minute", [("minute", "Minute"), ("movements", "Movements")], per_minute)
            + "</div></section><h2>Active alerts</h2>"
            + _alerts_table("active-alerts", active, actions=self._operator is not None)
        )

    async def _doors(self) -> str:
        passes = [m for m in self._feed.movements if m["source_type"] == "rfid_portal"][-50:]
        receipts = self._data.receipts() if self._data.receipts is not None else []
        progress = [_receipt_row(r) for r in receipts if r.state is not ReceiptState.COMPLETE]
        doors = [
            {
                "portal_id": d.portal_id,
                "reader_id": d.reader_id,
                "outside": f"{d.outside_location} (antennas {_ants(d.outside_antennas)})",
                "inside": f"{d.inside_location} (antennas {_ants(d.inside_antennas)})",
            }
            for d in self._data.doors
        ]
        antennas = [
            {"reader": reader, "antenna": antenna, "reads": count}
            for (reader, antenna), count in sorted(self._data.antennas().items())
        ]
        return (
            table(
                "doors",
                [
                    ("portal_id", "Door"),
                    ("reader_id", "Reader"),
                    ("outside", "Outside"),
                    ("inside", "Inside"),
                ],
                doors,
            )
            + "<h2>Passes</h2>"
            + json_block("pass-epcs", {str(m["seq"]): m["epcs"] for m in passes})
            + table("passes", _PASS_COLUMNS, reversed(passes), key="seq")
            + "<h2>Expected receipts in progress</h2>"
            + table(
                "door-receipts",
                [
                    ("receipt_id", "Receipt"),
                    ("door", "Door"),
                    ("state", "State"),
                    ("received", "Received"),
                    ("expected", "Expected"),
                ],
                progress,
                key="receipt_id",
            )
            + "<h2>Reads of a pass or a tag</h2>"
            + '<form id="tag-form" class="filters" onsubmit="return false"><label>EPC (URN or '
            'hex) <input type="search" name="epc" size="40"></label> <button type="submit">'
            'Show reads</button> <span class="hint">or choose a pass above</span></form>'
            + '<div class="bands"><div id="tag-bands" aria-hidden="true"></div>'
            '<svg id="tag-reads" class="trace" viewBox="0 0 600 160" preserveAspectRatio="none" '
            'role="img" aria-label="reads per antenna over time"></svg></div>'
            + '<p class="legend hint" id="tag-legend"></p>'
            + "<h2>Reads per antenna (last 60 s)</h2>"
            + '<p class="hint">One block per second; a flat strip on a door in use is a silent '
            "antenna.</p>"
            + table(
                "antennas",
                [
                    ("reader", "Reader"),
                    ("antenna", "Antenna"),
                    ("strip", "Reads per second"),
                    ("reads", "Reads since start"),
                ],
                [{**a, "strip": ""} for a in antennas],
            )
        )

    async def _shelves(self) -> str:
        parts = []
        traces = {}
        for shelf in self._data.shelves():
            trace = self._feed.shelves.get(shelf.shelf_id)
            traces[shelf.shelf_id] = {
                "samples": [] if trace is None else [list(s) for s in trace.samples],
                "marks": [] if trace is None else [list(m) for m in trace.marks],
                "unit_weight_g": shelf.unit_weight_g,
                "baseline_g": shelf.baseline_g,
            }
            low = (
                shelf.reorder_point is not None
                and shelf.on_hand is not None
                and shelf.on_hand <= shelf.reorder_point
            )
            recount = (
                f'<button type="button" class="action" data-action="/actions/shelves/'
                f'{e(shelf.shelf_id)}/recount">Re-count</button>'
                if self._operator is not None
                else ""
            )
            parts.append(
                f'<section class="shelf" id="shelf-{e(shelf.shelf_id)}" '
                f'data-shelf="{e(shelf.shelf_id)}" data-location="{e(shelf.location)}" '
                f'data-sku="{e(shelf.sku)}"><h2>{e(shelf.shelf_id)} '
                f"<small>{e(shelf.sku)} at {e(shelf.location)}</small></h2>"
                f'<p>on hand <strong class="on-hand{" low" if low else ""}">'
                f"{e(shelf.on_hand if shelf.on_hand is not None else '?')}</strong>"
                f" · reorder point {e('-' if shelf.reorder_point is None else shelf.reorder_point)}"
                f" · {e(shelf.phase)} {recount}</p>"
                f'<svg class="trace" viewBox="0 0 600 160" preserveAspectRatio="none" role="img" '
                f'aria-label="weight trace of {e(shelf.shelf_id)}"></svg>'
                '<p class="legend"><span class="l-plateau">stable plateau</span> '
                '<span class="l-pick">pick</span> <span class="l-restock">restock</span> '
                '<span class="l-adjustment">count or adjustment</span></p>'
                "</section>"
            )
        if not parts:
            parts.append("<p>No shelves are configured.</p>")
        return json_block("traces", traces) + "".join(parts)

    async def _stock(self) -> str:
        levels = [stock_dict(level) for level in await self._data.stock()]
        for row in levels:
            row["key"] = f"{row['location']}|{row['sku']}"
        return (
            '<p><label>Search <input type="search" id="filter" data-filter="stock" '
            'placeholder="location or SKU"></label></p>'
            + table(
                "stock",
                [
                    ("location", "Location"),
                    ("sku", "SKU"),
                    ("on_hand", "On hand"),
                    ("updated_at", "Updated"),
                    ("last_seq", "Last seq"),
                ],
                sorted(levels, key=lambda r: (str(r["location"]), str(r["sku"]))),
                key="key",
                sortable=True,
            )
        )

    async def _movements(self) -> str:
        rows = [movement_row(r) for r in await self._data.recent(200)]
        return (
            '<form class="filters" id="movement-filters" onsubmit="return false">'
            '<label>Kind <select name="kind"><option value="">any</option>'
            + "".join(
                f"<option>{k}</option>"
                for k in (
                    "receipt",
                    "shipment",
                    "transfer",
                    "pick",
                    "restock",
                    "adjustment",
                    "return",
                )
            )
            + '</select></label> <label>Location <input type="search" name="location"></label>'
            ' <label>SKU <input type="search" name="sku"></label></form>'
            + table("movements", _MOVEMENT_COLUMNS, reversed(rows), key="seq")
        )

    async def _receipts(self) -> str:
        upload = (
            '<form id="receipts-upload" class="action-form" enctype="multipart/form-data">'
            '<label>Expected receipts file (YAML or JSON) <input type="file" name="file" '
            'required></label> <button type="submit">Upload</button></form>'
            '<pre id="upload-result" class="result" role="status"></pre>'
            if self._operator is not None and self._load_receipts is not None
            else ""
        )
        if self._data.receipts is None:
            return "<p>No expected receipts: <code>receiving.expected_file</code> is not set.</p>"
        rows = [_receipt_row(r) for r in self._data.receipts()]
        return upload + table(
            "receipts",
            [
                ("receipt_id", "Receipt"),
                ("door", "Door"),
                ("state", "State"),
                ("expected", "Expected"),
                ("received", "Received"),
                ("difference", "Over/short"),
            ],
            rows,
            key="receipt_id",
            sortable=True,
        )

    async def _alerts(self) -> str:
        history = [alert_dict(a) for a in await self._data.alerts()]
        for row in history:
            row["acknowledged"] = row["alert_id"] in self._feed.acknowledged
        history.sort(key=lambda a: str(a["raised_at"]), reverse=True)
        return _alerts_table("alerts", history, actions=self._operator is not None)

    # --- sign-in, static files ---------------------------------------------------------------

    async def _sign_in(self, request: web.Request) -> web.Response:
        return web.Response(text=sign_in(self._data.site), content_type="text/html")

    async def _signed_in(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = form.get("token")
        response = web.Response(status=303, headers={"Location": "/"})
        if isinstance(token, str) and token:
            response.set_cookie(
                TOKEN_COOKIE,
                token.strip(),
                httponly=True,
                samesite="Strict",
                secure=request.secure,
            )
        return response

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._static.get(name)
        if body is None:
            raise web.HTTPNotFound
        return web.Response(
            body=body,
            content_type=STATIC_TYPES[Path(name).suffix],
            headers={"Cache-Control": "no-cache"},
        )

    # --- live --------------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        try:
            subscription = self._feed.subscribe()
            queue = subscription.__enter__()
        except FeedFull as exc:
            return plain(503, str(exc))
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
            )
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            antennas: dict[str, int] = {}
            page = request.query.get("page", "")
            loop = asyncio.get_running_loop()
            next_tick = loop.time() + TICK_S
            kind: str
            data: Mapping[str, object]
            while not self._closing.is_set():
                # A tick every TICK_S however busy the feed is (samples arrive many times a
                # second); weight samples only to the page that draws them.
                if loop.time() >= next_tick:
                    next_tick = loop.time() + TICK_S
                    kind, data = "tick", self._tick(antennas, page)
                else:
                    try:
                        async with asyncio.timeout_at(next_tick):
                            kind, data = await queue.get()
                    except TimeoutError:
                        continue
                if kind == "sample" and page != "shelves":
                    continue
                await response.write(_sse(kind, data))
                if kind == "reload":
                    break
        except (ConnectionError, asyncio.CancelledError) as exc:
            log.debug("console stream ended: %r", exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            subscription.__exit__(None, None, None)
        return response

    async def _tag_reads(self, request: web.Request) -> web.Response:
        """``?epc=...`` (repeated): the kept reads of those tags, for the doors page's strip."""
        epcs = request.query.getall("epc", [])[:MAX_TAGS]
        reads = self._feed.reads_of(epcs)[-MAX_TAG_READS:] if epcs else []
        return web.json_response({"reads": reads}, headers={"Cache-Control": "no-store"})

    def _tick(self, previous: dict[str, int], page: str) -> dict[str, object]:
        """What a page shows that changes without an event of its own: the sinks' progress,
        the reads per antenna, and (for the pages that show them) the receipts' progress."""
        sync = self._data.sync()
        last = sync.get("last_seq", 0)
        counts = {f"{r}:{a}": n for (r, a), n in self._data.antennas().items()}
        per_second = {k: n - previous.get(k, n) for k, n in counts.items()}
        previous.clear()
        previous.update(counts)
        receipts: list[dict[str, object]] = []
        if page in ("doors", "receipts") and self._data.receipts is not None:
            shown = self._data.receipts()
            if page == "doors":
                shown = [r for r in shown if r.state is not ReceiptState.COMPLETE]
            receipts = [_receipt_row(r) for r in shown[-TICK_RECEIPTS_MAX:]]
        return {
            "receipts": receipts,
            "last_seq": last,
            "sinks": {k: max(0, last - v) for k, v in sync.items() if k != "last_seq"},
            "this_minute": _this_minute(self._feed),
            "antennas": per_second,
            "reads": counts,
        }

    # --- actions -----------------------------------------------------------------------------

    def _operator_refusal(self, request: web.Request, what: str) -> web.Response | None:
        given = request.headers.get(OPERATOR_HEADER)
        if self._operator is None:
            reason = "actions are disabled: api.operator_token_file is not set"
            status = 403
        elif not given:
            reason, status = "the operator token is required", 401
        elif not hmac.compare_digest(given.strip().encode(), self._operator):
            reason, status = "wrong operator token", 403
        else:
            return None
        log.info("console: refused %s: %s", what, reason)
        return web.json_response({"error": reason}, status=status)

    async def _upload(self, request: web.Request) -> web.Response:
        refusal = self._operator_refusal(request, "an expected-receipts upload")
        if refusal is not None:
            return refusal
        if self._load_receipts is None:
            return web.json_response({"error": "receiving.expected_file is not set"}, status=409)
        reader = await request.multipart()
        part = await reader.next()
        if part is None or not isinstance(part, BodyPartReader) or part.name != "file":
            return web.json_response({"error": "no file in the upload"}, status=400)
        name = Path(part.filename or "upload").name
        data = bytearray()
        while chunk := await part.read_chunk():
            data.extend(chunk)
            if len(data) > MAX_UPLOAD_BYTES:
                return web.json_response({"error": "the file is larger than 8 MiB"}, status=413)
        with tempfile.TemporaryDirectory(prefix="dockwatch-upload-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(bytes(data))
            try:
                message = await self._load_receipts(path, name)
            except ValueError as exc:
                problems = getattr(exc, "problems", (str(exc),))
                return web.json_response(
                    {"error": "the file was refused", "problems": list(problems)}, status=400
                )
        log.info("console: %s", message)
        return web.json_response({"message": message})

    async def _acknowledge(self, request: web.Request) -> web.Response:
        refusal = self._operator_refusal(request, "an alert acknowledgement")
        if refusal is not None:
            return refusal
        alert_id = request.match_info["alert_id"]
        if not self._feed.acknowledge(alert_id):
            return web.json_response({"error": f"no active alert {alert_id}"}, status=404)
        log.info("console: alert %s acknowledged", alert_id)
        return web.json_response({"message": f"alert {alert_id} acknowledged"})

    async def _recount_shelf(self, request: web.Request) -> web.Response:
        refusal = self._operator_refusal(request, "a shelf re-count")
        if refusal is not None:
            return refusal
        if self._recount is None:
            return web.json_response({"error": "no shelves"}, status=409)
        shelf_id = request.match_info["shelf_id"]
        try:
            message = await self._recount(shelf_id)
        except KeyError:
            return web.json_response({"error": f"no shelf {shelf_id}"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response({"message": message})


_PASS_COLUMNS = [
    ("observed_at", "When"),
    ("source_id", "Door"),
    ("kind", "Kind"),
    ("from_location", "From"),
    ("to_location", "To"),
    ("sku", "SKU"),
    ("quantity", "Qty"),
    ("cases", "Cases"),
    ("confidence", "Confidence"),
]
_MOVEMENT_COLUMNS = [
    ("seq", "Seq"),
    ("observed_at", "When"),
    ("kind", "Kind"),
    ("sku", "SKU"),
    ("quantity", "Qty"),
    ("from_location", "From"),
    ("to_location", "To"),
    ("source_id", "Source"),
    ("confidence", "Confidence"),
    ("reason", "Reason"),
]


def _alerts_table(element_id: str, rows: list[dict[str, object]], *, actions: bool) -> str:
    columns = [
        ("raised_at", "Raised"),
        ("kind", "Kind"),
        ("severity", "Severity"),
        ("subject", "Subject"),
        ("message", "Message"),
        ("active", "Active"),
        ("acknowledged", "Acknowledged"),
    ]
    html = table(element_id, columns, rows, key="alert_id")
    if actions:
        # The script adds an "Acknowledge" button to each active, unacknowledged row.
        html = html.replace(f'<table id="{element_id}"', f'<table id="{element_id}" data-ack', 1)
    return html


def _receipt_row(r: ReceiptStatus) -> dict[str, object]:
    expected, received = sum(r.expected.values()), sum(r.received.values())
    over_short = received - expected
    if received and not over_short:
        difference = "matched"
    elif received or r.state is ReceiptState.COMPLETE:
        difference = f"{over_short:+d}"
    else:
        difference = ""
    return {
        "receipt_id": r.receipt_id,
        "door": r.door or "any",
        "state": str(r.state),
        "expected": expected,
        "received": received,
        "difference": difference,
    }


def _ants(antennas: Sequence[int]) -> str:
    return ", ".join(map(str, antennas))


def _this_minute(feed: ConsoleFeed) -> int:
    return feed.this_minute()


def _sse(kind: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
