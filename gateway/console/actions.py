"""The console's actions (``POST /actions/...``): what an operator may change from a page.

Theory of operation
-------------------
Every action first checks the operator token (``api.operator_token_file`` or ``_env``) in the
``X-Operator-Token`` header, which the page sends from the token field in its header: 401
without it, 403 with a wrong one (compared in constant time) or when no operator token is
configured (the console is read-only then). A header, not a cookie: a page of another site
cannot make the browser send it, so actions need no separate CSRF token. The token is never
logged; a refusal is, with what was refused and why.

The actions: an expected-receipts upload (one multipart ``file`` of at most
``MAX_UPLOAD_BYTES``, written to a temporary directory and handed to ``load_receipts``, which
refuses it with a ``ValueError`` carrying ``problems``), an alert acknowledgement (kept by the
feed) and a shelf re-count (``recount``: ``KeyError`` for an unknown shelf, ``ValueError`` when
the weight cannot say). Each answers JSON: ``{"message": ...}`` or ``{"error": ...}``.
"""

from __future__ import annotations

import hmac
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import BodyPartReader, web

from gateway.console.feed import ConsoleFeed

__all__ = ["MAX_UPLOAD_BYTES", "Action", "Actions"]

OPERATOR_HEADER = "X-Operator-Token"
MAX_UPLOAD_BYTES = 8 << 20

Action = Callable[[str], Awaitable[str]]


class Actions:
    """The handlers of ``POST /actions/...`` (see the module docstring)."""

    def __init__(
        self,
        feed: ConsoleFeed,
        *,
        operator_token: str | None,
        load_receipts: Callable[[Path, str], Awaitable[str]] | None,
        recount: Action | None,
        log: logging.Logger,
    ) -> None:
        """``log``: the console's logger, so that its lines keep the console's logger name."""
        self._feed = feed
        self._operator = None if operator_token is None else operator_token.encode()
        self._load_receipts = load_receipts
        self._recount = recount
        self._log = log

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
        self._log.info("console: refused %s: %s", what, reason)
        return web.json_response({"error": reason}, status=status)

    async def upload(self, request: web.Request) -> web.Response:
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
        self._log.info("console: %s", message)
        return web.json_response({"message": message})

    async def acknowledge(self, request: web.Request) -> web.Response:
        refusal = self._operator_refusal(request, "an alert acknowledgement")
        if refusal is not None:
            return refusal
        alert_id = request.match_info["alert_id"]
        if not self._feed.acknowledge(alert_id):
            return web.json_response({"error": f"no active alert {alert_id}"}, status=404)
        self._log.info("console: alert %s acknowledged", alert_id)
        return web.json_response({"message": f"alert {alert_id} acknowledged"})

    async def recount_shelf(self, request: web.Request) -> web.Response:
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
