"""The operator console's routes on the gateway's HTTP listener (``api.metrics_listen``).

Pages are rendered on the server (:mod:`gateway.console.render`, in the layout of
:mod:`gateway.console.pages`); ``/events`` is a Server-Sent Events stream of what
:class:`~gateway.console.feed.ConsoleFeed` hears (the events that feed MQTT) plus a ``tick``
each second with the sync lag per sink, movements in the current minute and the read counters
per antenna (:mod:`gateway.console.live`). The listener applies the API's TLS, token and
client-certificate rules to every path here but ``/login`` and ``/static/`` (see
:mod:`gateway.adapters.metrics`); a browser carries the token in a cookie set by ``/login``.

Actions (``POST /actions/...``, :mod:`gateway.console.actions`) need the operator token in
the ``X-Operator-Token`` header (a header, not a cookie, so no CSRF token is needed); without an
operator token configured the console is read-only.

:class:`Console` is the route table: it gives each path to the part that serves it (the page
renderer, the live routes, the actions) and serves the two public paths itself (sign-in and the
static files). What it reads of the gateway is :class:`~gateway.console.data.ConsoleData`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.adapters.metrics import TOKEN_COOKIE
from gateway.console.actions import MAX_UPLOAD_BYTES, Action, Actions
from gateway.console.data import ConsoleData, DoorView, ShelfView
from gateway.console.feed import ConsoleFeed
from gateway.console.live import LiveRoutes
from gateway.console.pages import PAGES, Page, layout, sign_in
from gateway.console.render import PageRenderer

__all__ = ["Console", "ConsoleData", "DoorView", "ShelfView"]

log = logging.getLogger(__name__)

STATIC = ("console.js", "console.css")
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


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
        self._actions_offered = operator_token is not None
        self._pages = PageRenderer(
            data,
            feed,
            actions=self._actions_offered,
            uploads=self._actions_offered and load_receipts is not None,
        )
        self._live = LiveRoutes(data, feed, log=log)
        self._actions = Actions(
            feed,
            operator_token=operator_token,
            load_receipts=load_receipts,
            recount=recount,
            log=log,
        )
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
        app.router.add_get("/events", self._live.events)
        app.router.add_get("/doors/reads", self._live.tag_reads)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_post("/actions/receipts", self._actions.upload)
        app.router.add_post("/actions/alerts/{alert_id}/acknowledge", self._actions.acknowledge)
        app.router.add_post("/actions/shelves/{shelf_id}/recount", self._actions.recount_shelf)
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, app: web.Application) -> None:
        self._live.close()

    def _page_handler(self, page: Page) -> Callable[[web.Request], Awaitable[web.Response]]:
        render = self._pages.for_page(page)

        async def handler(request: web.Request) -> web.Response:
            body = await render()
            html = layout(page, self._data.site, body, actions=self._actions_offered)
            return web.Response(
                text=html, content_type="text/html", headers={"Cache-Control": "no-store"}
            )

        return handler

    # --- the public paths: sign-in, static files ----------------------------------------------

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
