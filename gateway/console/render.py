"""The body of each console page, rendered on the server from the gateway's present state.

:class:`PageRenderer` builds the HTML inside each page's layout (:mod:`gateway.console.pages`
has the layout, the tables and the escaping) from :class:`~gateway.console.data.ConsoleData`
and the feed's window of recent events (:class:`~gateway.console.feed.ConsoleFeed`). It knows
nothing of HTTP: :class:`~gateway.console.web.Console` routes each page's path to
:meth:`PageRenderer.for_page` and wraps the result in the layout. Each page's table rows carry
the ids and fields ``console.js`` updates from the live stream
(:mod:`gateway.console.live`), which shows the same receipt rows (:func:`receipt_row`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from gateway.console.data import ConsoleData
from gateway.console.feed import ConsoleFeed, alert_dict, device_dict, stock_dict
from gateway.console.feed import movement_dict as movement_row
from gateway.console.pages import Page, e, json_block, table
from gateway.domain.receiving import ReceiptState, ReceiptStatus

__all__ = ["PageRenderer", "receipt_row"]


class PageRenderer:
    """Each page's body as an HTML string (see the module docstring)."""

    def __init__(
        self, data: ConsoleData, feed: ConsoleFeed, *, actions: bool, uploads: bool
    ) -> None:
        """``actions``: an operator token is configured, so the pages offer the actions
        (acknowledge, re-count); ``uploads``: that, and ``receiving.expected_file`` is set, so
        the receipts page offers the upload form."""
        self._data = data
        self._feed = feed
        self._actions = actions
        self._uploads = uploads

    def for_page(self, page: Page) -> Callable[[], Awaitable[str]]:
        """What renders ``page``'s body (the method named after the page)."""
        render: Callable[[], Awaitable[str]] = getattr(self, f"_{page.name}")
        return render

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
            + f'<p>this minute: <strong id="this-minute">{self._feed.this_minute()}</strong></p>'
            + table("per-minute", [("minute", "Minute"), ("movements", "Movements")], per_minute)
            + "</div></section><h2>Active alerts</h2>"
            + _alerts_table("active-alerts", active, actions=self._actions)
        )

    async def _doors(self) -> str:
        passes = [m for m in self._feed.movements if m["source_type"] == "rfid_portal"][-50:]
        receipts = self._data.receipts() if self._data.receipts is not None else []
        progress = [receipt_row(r) for r in receipts if r.state is not ReceiptState.COMPLETE]
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
                if self._actions
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
            if self._uploads
            else ""
        )
        if self._data.receipts is None:
            return "<p>No expected receipts: <code>receiving.expected_file</code> is not set.</p>"
        rows = [receipt_row(r) for r in self._data.receipts()]
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
        return _alerts_table("alerts", history, actions=self._actions)


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


def receipt_row(r: ReceiptStatus) -> dict[str, object]:
    """A receipt as its row on the receipts and doors pages (and in a stream's tick)."""
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
