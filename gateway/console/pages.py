"""The console's pages, rendered on the server as plain HTML strings.

Every value that comes from outside (SKUs, locations, alert messages, device details) goes
through :func:`e` (``html.escape``). Pages are complete without JavaScript (the tables are filled
on the server); ``console.js`` adds the live updates, sorting and filters, and the actions.
Data the script needs at start is embedded as JSON in a ``<script type="application/json">``
element, escaped so that it cannot close the element.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PAGES", "Page", "e", "layout", "table"]


@dataclass(frozen=True, slots=True)
class Page:
    path: str
    name: str
    title: str


PAGES = (
    Page("/", "overview", "Overview"),
    Page("/doors", "doors", "Doors"),
    Page("/shelves", "shelves", "Shelves"),
    Page("/stock", "stock", "Stock"),
    Page("/movements", "movements", "Movements"),
    Page("/receipts", "receipts", "Expected receipts"),
    Page("/alerts", "alerts", "Alerts"),
)


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def json_block(element_id: str, data: object) -> str:
    text = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return f'<script type="application/json" id="{e(element_id)}">{text}</script>'


def table(
    element_id: str,
    headers: Sequence[tuple[str, str]],
    rows: Iterable[Mapping[str, object]],
    *,
    key: str | None = None,
    sortable: bool = False,
    caption: str = "",
) -> str:
    """A table whose columns are ``(field, title)``; each row carries its fields as
    ``data-<field>`` so the script can update, sort and filter it."""
    head = "".join(
        (
            f'<th scope="col" data-field="{e(f)}"><button type="button" class="sort">'
            f"{e(t)}</button></th>"
            if sortable
            else f'<th scope="col" data-field="{e(f)}">{e(t)}</th>'
        )
        for f, t in headers
    )
    body = []
    for row in rows:
        row_id = f' id="{e(element_id)}-{e(row[key])}"' if key is not None else ""
        cells = "".join(f'<td data-field="{e(f)}">{e(_shown(row.get(f)))}</td>' for f, _ in headers)
        body.append(f"<tr{row_id}>{cells}</tr>")
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return (
        f'<table id="{e(element_id)}">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


_ISO = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?Z")


def _shown(value: object) -> object:
    if isinstance(value, str) and _ISO.fullmatch(value):
        return _ISO.sub(r"\1 \2", value)
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def layout(page: Page, site: str, body: str, *, actions: bool) -> str:
    current = ' aria-current="page"'
    nav = "".join(
        f'<a href="{p.path}"{current if p is page else ""}>{e(p.title)}</a>' for p in PAGES
    )
    token = (
        '<label class="token">Operator token <input type="password" id="operator-token" '
        'autocomplete="off" size="12"></label>'
        if actions
        else '<span class="token" title="api.operator_token_file is not set">read-only</span>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(page.title)} · dockwatch {e(site)}</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head><body data-page="{e(page.name)}">
<header><strong>dockwatch</strong> <span class="site">{e(site)}</span>
<nav aria-label="pages">{nav}</nav>
<span id="live" class="live" role="status">connecting…</span>{token}</header>
<main><h1>{e(page.title)}</h1>
<div id="notice" role="alert" class="notice" hidden></div>
{body}
</main></body></html>
"""


def sign_in(site: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · dockwatch {e(site)}</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/console.css"></head>
<body data-page="sign-in"><main><h1>dockwatch {e(site)}</h1>
<p>This console needs the gateway's API token (<code>api.token_file</code>).</p>
<form method="post" action="/login">
<label>API token <input type="password" name="token" autocomplete="current-password"
 required autofocus></label> <button type="submit">Sign in</button></form></main></body></html>
"""
