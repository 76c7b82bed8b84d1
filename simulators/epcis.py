"""EPCIS capture simulator: an EPCIS 2.0 repository's capture interface that validates, persists
and counts.

Run it with ``dockwatch simulate epcis --listen 127.0.0.1:8090 --db var/epcis.db``.

Theory of operation
-------------------
``POST /capture`` takes one EPCISDocument (JSON-LD), as the EPCIS 2.0 REST binding's capture
interface does, and answers:

1. **400** with the problems (``application/problem+json``, each ``path: message``) when the body
   is not JSON or the document does not validate against the GS1 EPCIS 2.0 JSON Schema *with
   format checks on* (``date-time``, ``uri``...: without them a misspelt ``bizStep`` would
   pass). The schema and its JSON-LD context are GS1's, vendored in ``simulators/epcis_schema``
   with GS1's notice. Validation is the schema's own, made cheaper without changing its
   outcome: references are inlined once, and each event is checked against the definition of
   its ``type`` (what the schema's ``if``/``then`` chain selects), the envelope once;
2. **409** when an event's ``eventID`` was captured before, naming those ids. Capture is
   atomic, as a repository's is: a document with one already captured event captures nothing
   (so a sender that re-sends a batch after a lost acknowledgement learns which events to drop);
   an event without ``eventID`` gets its canonical hash, as a repository would assign;
3. **202** with ``Location: /capture/<id>`` once the whole document is stored (one SQLite
   transaction, ``synchronous=FULL``: a 202 is only sent for what survives a crash).

``GET /capture/<id>`` reports a capture job (always finished and successful here), ``GET /stats``
the counters. Optional TLS (``--tls-cert``/``--tls-key``) and bearer-token auth
(``--token-file``: ``Authorization: Bearer <token>``, else 401). ``--no-validate`` skips the
schema (to measure a sender rather than this validator, which costs about half a millisecond
per event on one core); ``--workers N`` splits large documents over N processes. The
database survives restarts: kill the simulator, start it on the same ``--db``, and
duplicates are still recognised.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import copy
import functools
import hmac
import json
import logging
import multiprocessing
import signal
import sqlite3
import ssl
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web
from jsonschema import Draft7Validator, FormatChecker

from gateway.domain.epcis import EXTENSION_NAMESPACE, EXTENSION_PREFIX
from gateway.domain.epcis_hash import event_hash

log = logging.getLogger(__name__)

DEFAULT_LISTEN: Final = "127.0.0.1:8090"
DEFAULT_DB: Final = "var/epcis.db"
SCHEMA_DIR: Final = Path(__file__).with_name("epcis_schema")
SCHEMA_FILE: Final = SCHEMA_DIR / "EPCIS-JSON-Schema.json"
CONTEXT_FILE: Final = SCHEMA_DIR / "epcis-context.jsonld"
MAX_DOCUMENT_BYTES: Final = 16 << 20
"""Larger documents are refused with 413 (EPCIS' CaptureLimitExceededException)."""
MAX_PROBLEMS: Final = 20
PARALLEL_MIN_EVENTS: Final = 50
"""With ``--workers`` > 1, a document is split over the pool only from twice this many events."""
_EVENT_TYPES: Final = (
    "ObjectEvent",
    "AggregationEvent",
    "TransactionEvent",
    "TransformationEvent",
    "AssociationEvent",
)
_HEADERS: Final = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}


# --- validation --------------------------------------------------------------------------------


def _inline(node: object, definitions: Mapping[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``{"$ref": "#/definitions/X"}`` replaced by X (the schema is a tree)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and len(node) == 1 and ref.startswith("#/definitions/"):
            name = ref.removeprefix("#/definitions/").replace("%40", "@")
            if name in stack:
                raise ValueError(f"recursive schema definition {name}")
            return _inline(definitions[name], definitions, (*stack, name))
        return {k: _inline(v, definitions, stack) for k, v in node.items() if k != "definitions"}
    if isinstance(node, list):
        return [_inline(v, definitions, stack) for v in node]
    return node


def _where(path: Sequence[object], prefix: str = "") -> str:
    text = prefix
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


class EpcisValidator:
    """Validates EPCISDocuments against the vendored GS1 EPCIS 2.0 JSON Schema, formats on."""

    def __init__(self, schema_file: Path = SCHEMA_FILE) -> None:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
        definitions = schema["definitions"]
        checker = FormatChecker()
        Draft7Validator.check_schema(schema)
        self.full = Draft7Validator(schema, format_checker=checker)
        """The schema as published (the reference the fast path is tested against)."""
        self._envelope = Draft7Validator(_inline(schema, definitions), format_checker=checker)
        self._by_type = {
            name: Draft7Validator(_inline(definitions[name], definitions), format_checker=checker)
            for name in _EVENT_TYPES
        }
        self._other = Draft7Validator(
            _inline(definitions["EPCIS-Document-Event"], definitions), format_checker=checker
        )

    def problems(self, document: object, limit: int = MAX_PROBLEMS) -> list[str]:
        """Every problem (at most ``limit``) as ``path: message``; empty when valid."""
        problems, events = self.envelope_problems(document)
        if events is not None:
            problems += self.event_problems(events, 0, limit - len(problems))
        return problems[:limit]

    def envelope_problems(self, document: object) -> tuple[list[str], list[object] | None]:
        """The problems of the document without its events, and the events to check (None
        when the document holds no event list: the envelope's problems then say so)."""
        if isinstance(document, dict) and isinstance(document.get("epcisBody"), dict):
            events = document["epcisBody"].get("eventList")
            if isinstance(events, list):
                envelope = copy.copy(document)
                envelope["epcisBody"] = {**document["epcisBody"], "eventList": []}
                return self._errors(self._envelope, envelope, ""), events
        return self._errors(self._envelope, document, ""), None

    def event_problems(
        self, events: Sequence[object], first_index: int = 0, limit: int = MAX_PROBLEMS
    ) -> list[str]:
        """The problems of ``events``, numbered from ``first_index`` in the document."""
        problems: list[str] = []
        for offset, event in enumerate(events):
            if len(problems) >= limit:
                break
            kind = event.get("type") if isinstance(event, dict) else None
            validator = self._by_type.get(kind, self._other) if isinstance(kind, str) else None
            where = f"epcisBody.eventList[{first_index + offset}]"
            problems += self._errors(validator or self._other, event, where)
        return problems[:limit]

    @staticmethod
    def _errors(validator: Draft7Validator, instance: object, where: str) -> list[str]:
        return [
            f"{_where(error.absolute_path, where)}: {error.message}"
            for error in validator.iter_errors(instance)
        ]


def _worker_event_problems(events: Sequence[object], first_index: int) -> list[str]:
    """:meth:`EpcisValidator.event_problems` in a pool's worker process (its own validator)."""
    return _worker_validator().event_problems(events, first_index)


@functools.cache
def _worker_validator() -> EpcisValidator:
    # One per worker process, built on its first task (building costs ~0.3 s).
    return EpcisValidator()


# --- the repository ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaptureOutcome:
    capture_id: str | None
    """None when nothing was captured (``duplicates`` says why)."""
    captured: int
    duplicates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CaptureStats:
    events: int
    captures: int
    refused_duplicate: int
    refused_invalid: int

    def line(self) -> str:
        return (
            f"epcis: events={self.events} captures={self.captures} "
            f"refused_duplicate={self.refused_duplicate} refused_invalid={self.refused_invalid}"
        )


_SCHEMA_SQL: Final = """
CREATE TABLE IF NOT EXISTS events (
    n INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    event_time TEXT,
    movement_id TEXT,
    capture_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_movement ON events (movement_id);
CREATE TABLE IF NOT EXISTS captures (
    capture_id TEXT PRIMARY KEY,
    events INTEGER NOT NULL,
    captured_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_MOVEMENT_KEY: Final = f"{EXTENSION_PREFIX}:movementId"


class CaptureStore:
    """The captured events, in SQLite (one connection, serialised by a lock)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA_SQL)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _count(db: sqlite3.Connection, name: str, by: int = 1) -> None:
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def refused_invalid(self) -> None:
        with self._transaction() as db:
            self._count(db, "refused_invalid")

    def capture(self, events: Sequence[Mapping[str, Any]]) -> CaptureOutcome:
        """Store every event, or none when one was captured before (atomic)."""
        ids = [str(e["eventID"]) for e in events]
        with self._transaction() as db:
            found: list[str] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                found += [
                    row[0]
                    for row in db.execute(
                        "SELECT event_id FROM events WHERE event_id IN "
                        "(SELECT value FROM json_each(?))",
                        (json.dumps(chunk),),
                    )
                ]
            if found:
                self._count(db, "refused_duplicate")
                order = {event_id: n for n, event_id in enumerate(ids)}
                return CaptureOutcome(None, 0, tuple(sorted(found, key=order.__getitem__)))
            capture_id = uuid.uuid4().hex
            db.executemany(
                "INSERT INTO events (event_id, type, event_time, movement_id, capture_id, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        event_id,
                        str(e.get("type")),
                        e.get("eventTime"),
                        e.get(_MOVEMENT_KEY),
                        capture_id,
                        json.dumps(e, separators=(",", ":"), ensure_ascii=False),
                    )
                    for event_id, e in zip(ids, events, strict=True)
                ],
            )
            db.execute(
                "INSERT INTO captures (capture_id, events, captured_at) VALUES (?, ?, ?)",
                (capture_id, len(events), datetime.now(UTC).isoformat()),
            )
            return CaptureOutcome(capture_id, len(events))

    def stats(self) -> CaptureStats:
        with self._lock:
            events = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            captures = self._db.execute("SELECT COUNT(*) FROM captures").fetchone()[0]
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return CaptureStats(
            events=int(events),
            captures=int(captures),
            refused_duplicate=int(counters.get("refused_duplicate", 0)),
            refused_invalid=int(counters.get("refused_invalid", 0)),
        )

    def capture_job(self, capture_id: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT events FROM captures WHERE capture_id = ?", (capture_id,)
            ).fetchone()
        return None if row is None else int(row[0])

    def events(self) -> list[dict[str, Any]]:
        """Every captured event, in capture order."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM events ORDER BY n").fetchall()
        return [json.loads(row[0]) for row in rows]

    def movement_ids(self) -> list[str]:
        """The ``dockwatch:movementId`` of every captured event, in capture order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT movement_id FROM events WHERE movement_id IS NOT NULL ORDER BY n"
            ).fetchall()
        return [str(row[0]) for row in rows]


# --- the HTTP server ---------------------------------------------------------------------------


def _problem(status: int, kind: str, title: str, detail: object = None) -> web.Response:
    body: dict[str, object] = {"type": f"epcisException:{kind}", "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    return web.json_response(
        body, status=status, content_type="application/problem+json", headers=_HEADERS
    )


class CaptureServer:
    """The capture interface on ``listen`` (``host:port``; port 0 picks a free one)."""

    def __init__(
        self,
        store: CaptureStore,
        *,
        listen: str = DEFAULT_LISTEN,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
        validate: bool = True,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.store = store
        self._listen = listen
        self._token = token
        self._tls = tls
        self.validator = EpcisValidator() if validate else None
        self._workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._namespaces = {EXTENSION_PREFIX: EXTENSION_NAMESPACE}

    @property
    def url(self) -> str:
        host = self._listen.rpartition(":")[0] or "127.0.0.1"
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}/capture"

    async def start(self) -> int:
        if self.validator is not None and self._workers > 1 and self._pool is None:
            # Started (and each worker's validator built) before the first document arrives.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self._workers, mp_context=multiprocessing.get_context("spawn")
            )
            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._pool, _worker_event_problems, [], 0)
                    for _ in range(self._workers)
                )
            )
        app = web.Application(client_max_size=MAX_DOCUMENT_BYTES)
        app.router.add_post("/capture", self._capture)
        app.router.add_route("OPTIONS", "/capture", self._options)
        app.router.add_get("/capture/{capture_id}", self._job)
        app.router.add_get("/stats", self._stats)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, _, port = self._listen.rpartition(":")
        site = web.TCPSite(runner, host or "127.0.0.1", int(port), ssl_context=self._tls)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner = runner
        log.info(
            "epcis capture simulator listening on %s (%s, db %s)",
            self.url,
            "schema validation on" if self.validator else "no validation",
            self.store.path,
        )
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode())

    async def _capture(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _problem(401, "SecurityException", "a valid bearer token is required")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _problem(413, "CaptureLimitExceededException", "document too large")
        try:
            document = await asyncio.to_thread(json.loads, raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            await asyncio.to_thread(self.store.refused_invalid)
            return _problem(400, "ValidationException", "not JSON", [str(exc)])
        problems = await self._validate(document)
        if not problems:
            problems = await asyncio.to_thread(self._identify, document)
        if problems:
            await asyncio.to_thread(self.store.refused_invalid)
            log.warning("refused an invalid document: %s", problems[0])
            return _problem(400, "ValidationException", "invalid EPCIS document", problems)
        events: list[dict[str, Any]] = document["epcisBody"]["eventList"]
        outcome = await asyncio.to_thread(self.store.capture, events)
        if outcome.capture_id is None:
            return _problem(
                409,
                "ResourceAlreadyExistsException",
                "events already captured; nothing in this document was captured",
                list(outcome.duplicates),
            )
        return web.json_response(
            {"captureID": outcome.capture_id, "events": outcome.captured},
            status=202,
            headers={**_HEADERS, "Location": f"/capture/{outcome.capture_id}"},
        )

    async def _validate(self, document: object) -> list[str]:
        """The schema's verdict: in a worker thread, or with ``workers`` > 1 the events split
        over a pool of processes (jsonschema holds the GIL: threads would not run in parallel)."""
        validator = self.validator
        if validator is None:
            return []
        problems, events = await asyncio.to_thread(validator.envelope_problems, document)
        if events is None:
            return problems
        if self._workers == 1 or len(events) < 2 * PARALLEL_MIN_EVENTS:
            return problems + await asyncio.to_thread(validator.event_problems, events)
        assert self._pool is not None  # started with the server
        loop = asyncio.get_running_loop()
        size = -(-len(events) // self._workers)
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, _worker_event_problems, events[i : i + size], i)
                for i in range(0, len(events), size)
            )
        )
        return [*problems, *(p for part in parts for p in part)][:MAX_PROBLEMS]

    def _identify(self, document: object) -> list[str]:
        """Every event has an ``eventID`` (its canonical hash when it came without), once."""
        body = document.get("epcisBody") if isinstance(document, dict) else None
        events = body.get("eventList") if isinstance(body, dict) else None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return ["epcisBody.eventList: must be a list of events"]
        seen: set[str] = set()
        for index, event in enumerate(events):
            if "eventID" not in event:
                event["eventID"] = event_hash(event, self._namespaces)
            event_id = str(event["eventID"])
            if event_id in seen:
                return [f"epcisBody.eventList[{index}].eventID: {event_id} repeated"]
            seen.add(event_id)
        return []

    async def _options(self, request: web.Request) -> web.Response:
        """EPCIS 2.0 discovery: the versions and methods this endpoint supports."""
        return web.Response(status=204, headers={**_HEADERS, "Allow": "OPTIONS, POST"})

    async def _job(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _problem(401, "SecurityException", "a valid bearer token is required")
        capture_id = request.match_info["capture_id"]
        count = await asyncio.to_thread(self.store.capture_job, capture_id)
        if count is None:
            return _problem(404, "NoSuchResourceException", f"no capture job {capture_id}")
        return web.json_response(
            {
                "captureID": capture_id,
                "running": False,
                "success": True,
                "captureErrorBehaviour": "rollback",
                "events": count,
                "errors": [],
            },
            headers=_HEADERS,
        )

    async def _stats(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _problem(401, "SecurityException", "a valid bearer token is required")
        stats = await asyncio.to_thread(self.store.stats)
        return web.json_response(
            {
                "events": stats.events,
                "captures": stats.captures,
                "refused_duplicate": stats.refused_duplicate,
                "refused_invalid": stats.refused_invalid,
            }
        )


# --- command line ------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"host:port to serve on ({DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--db", default=DEFAULT_DB, help=f"SQLite file of captured events ({DEFAULT_DB})"
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables HTTPS)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="require 'Authorization: Bearer <token>' with the token in this file",
    )
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="skip JSON Schema validation (to measure a sender, not this validator)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="validate large documents in N processes (1: in a thread of this one)",
    )
    parser.add_argument(
        "--summary-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="print a summary line every S seconds when something changed (5)",
    )
    parser.add_argument(
        "--report", action="store_true", help="print the counters of --db, then exit (no server)"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")


def main(args: argparse.Namespace) -> int:
    from dockwatch_core.errors import ConfigError
    from gateway.adapters.tls import server_context_from_flags
    from gateway.logs import configure_logging

    configure_logging(args.log_level)
    if args.summary_interval <= 0 or args.workers < 1:
        print(
            "dockwatch simulate epcis: --summary-interval must be > 0 and --workers >= 1",
            file=sys.stderr,
        )
        return 2
    try:
        token = _token(args.token_file)
        tls = server_context_from_flags(args.tls_cert, args.tls_key)
    except (OSError, ValueError, ConfigError) as exc:
        print(f"dockwatch simulate epcis: {exc}", file=sys.stderr)
        return 2
    if args.report and not Path(args.db).is_file():
        print(f"dockwatch simulate epcis: --report: no database at {args.db}", file=sys.stderr)
        return 2
    try:
        with CaptureStore(args.db) as store:
            if not args.report:
                server = CaptureServer(
                    store,
                    listen=args.listen,
                    token=token,
                    tls=tls,
                    validate=not args.no_validate,
                    workers=args.workers,
                )
                asyncio.run(_serve(server, args.summary_interval))
            print(store.stats().line(), flush=True)
    except (OSError, sqlite3.Error) as exc:
        print(f"dockwatch simulate epcis: {exc}", file=sys.stderr)
        return 1
    return 0


def _token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"--token-file {path} is empty")
    return token


async def _serve(server: CaptureServer, summary_interval: float) -> None:
    """Serve until SIGINT/SIGTERM, printing the counters when they changed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"listening on {server.url}", flush=True)
    last = ""
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(summary_interval):
                    await stop.wait()
            line = (await asyncio.to_thread(server.store.stats)).line()
            if line != last:
                print(line, flush=True)
                last = line
    finally:
        await server.stop()


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m simulators.epcis")
    configure_parser(_parser)
    sys.exit(main(_parser.parse_args()))
