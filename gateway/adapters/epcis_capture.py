"""The EPCIS sink's HTTP side: one capture URL, POSTed until the repository answers.

Theory of operation
-------------------
:class:`CaptureClient` knows HTTP and nothing of the store or of what a refusal means: it sends
the EPCIS 2.0 request headers (and the bearer token), applies TLS and the request timeout, and
sorts what comes back into two kinds:

- an *answer* about the document (:class:`Answer`): a 2xx, or a 4xx other than 408, 425 and
  429. The relay (:mod:`gateway.adapters.epcis`) decides what it means: captured, duplicate,
  refused, too large.
- the repository being unavailable: 5xx, 408/425/429, timeouts, refused connections.
  :meth:`CaptureClient.post` backs off (capped, jittered exponential,
  :mod:`gateway.adapters.backoff`) and sends the same bytes again, for ever; ONE error line when
  the repository becomes unreachable, one when it answers again
  (:class:`~gateway.adapters.outage.Outage`).

``connected`` is whether the last request got an answer. :meth:`CaptureClient.probe`
(``OPTIONS``, EPCIS 2.0's discovery request) runs once per session so that ``connected`` and the
log tell at start whether the repository answers. The client logs on the relay's logger, so its
lines carry the sink's logger name.
"""

from __future__ import annotations

import collections
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp

from gateway.adapters.backoff import Backoff
from gateway.adapters.outage import Outage, OutageWords

__all__ = ["Answer", "CaptureClient", "problems"]

_HEADERS: Final = {
    "Content-Type": "application/ld+json",
    "GS1-EPCIS-Version": "2.0.0",
    "GS1-CBV-Version": "2.0.0",
}
_RETRY_STATUSES: Final = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Answer:
    """What the repository said about a document (a 2xx, or a 4xx that is not a retry)."""

    status: int
    text: str


def problems(text: str) -> tuple[str, list[str]]:
    """(title, details) of an RFC 7807 problem document, or the raw text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:300], []
    if not isinstance(body, dict):
        return text.strip()[:300], []
    detail = body.get("detail")
    details = [str(d) for d in detail] if isinstance(detail, list) else []
    if isinstance(detail, str):
        details = [detail]
    return str(body.get("title") or body.get("type") or ""), details


class CaptureClient:
    """HTTP to one EPCIS capture URL (see the module docstring)."""

    def __init__(
        self,
        capture_url: str,
        *,
        token: str | None,
        ssl_context: ssl.SSLContext | None,
        request_timeout_s: float,
        backoff: Backoff,
        monotonic: Callable[[], float],
        counters: collections.Counter[str],
        log: logging.Logger,
    ) -> None:
        """``counters`` is the relay's: each attempt that got no answer counts in ``retries``."""
        self.url = capture_url
        self._headers = dict(_HEADERS)
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._counters = counters
        self._log = log
        self._outage = Outage(
            f"EPCIS repository {capture_url}",
            log=log,
            backoff=backoff,
            clock=monotonic,
            words=OutageWords(
                down="{link} unreachable or failing: {reason}; retrying with backoff",
                back="{link} answers again after {seconds:.1f}s",
            ),
        )
        self._connected = False

    @property
    def connected(self) -> bool:
        """The repository answered the last request (2xx or 4xx)."""
        return self._connected

    def session(self) -> aiohttp.ClientSession:
        """A session for one run of the relay (use it as ``async with``)."""
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True, limit=2)
        return aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers
        )

    async def probe(self, session: aiohttp.ClientSession) -> None:
        """``OPTIONS capture_url`` (EPCIS 2.0's discovery request) once at start, so that
        ``connected`` and the log tell at once whether the repository answers, before any
        movement needs it; deliveries retry on their own."""
        try:
            async with session.options(self.url) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._down(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        if status < 500:
            self._up()
            self._log.info("EPCIS repository %s answers (OPTIONS: HTTP %d)", self.url, status)
        else:
            self._down(f"HTTP {status}")

    async def post(self, session: aiohttp.ClientSession, body: bytes, count: int) -> Answer:
        """POST ``body`` (``count`` events) until the repository gives an answer about it."""
        while True:
            try:
                async with session.post(self.url, data=body) as response:
                    text = (await response.read()).decode("utf-8", errors="replace")
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._down(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            else:
                if status < 500 and status not in _RETRY_STATUSES:
                    self._up()
                    return Answer(status, text)
                self._down(f"HTTP {status}: {problems(text)[0]}")
            self._counters["retries"] += 1
            self._log.debug("epcis %s: %d event(s) wait for the next attempt", self.url, count)
            await self._outage.pause()

    def _up(self) -> None:
        self._connected = True
        self._outage.recovered()

    def _down(self, reason: str) -> None:
        self._connected = False
        self._outage.failed(reason)
