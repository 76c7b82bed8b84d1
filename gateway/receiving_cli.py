"""``dockwatch receipts check|load|list``: expected receipts (ASNs) from the command line.

The gateway reads expected receipts from the file named by ``receiving.expected_file`` and
re-reads it whenever it changes (every few seconds), adding receipts it does not know yet. So:

- ``dockwatch receipts check ASN.yaml [-c gw.yaml]`` validates a file: its structure and, with a
  config, that every SKU and EPC is in the catalog and every door is a configured portal.
- ``dockwatch receipts load ASN.yaml -c gw.yaml`` validates the new receipts the same way, then
  merges them into the configured expected file (written atomically: a temporary file renamed
  over it), where the running gateway picks them up. A receipt id already there is an error and
  nothing is written. The file is written as JSON, one receipt per line (:func:`dump_expected`:
  JSON is YAML, and is read far faster). Every check is linear: 30,000 receipts load in seconds.
- ``dockwatch receipts list -c gw.yaml`` prints what the expected file holds.

``FILE`` may be ``-`` for standard input (``docker compose exec -T gateway dockwatch receipts
load - < ASN.yaml``).

``dockwatch receiving`` is the older name of the same command (``add`` = ``load``).
Every file is read within :data:`gateway.documents.RECEIPTS_LIMITS` (64 MiB, UTF-8, nested at
most 16 deep); a file beyond them, an id or quantity beyond the limits of
:mod:`gateway.domain.receiving`, is invalid input.

Exit status: 0 done, 1 the expected file could not be read or written, 2 invalid input.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from dockwatch_core.errors import ConfigError
from gateway.app import catalog_of
from gateway.config import GatewayConfig, config_path_from_env, load_config
from gateway.documents import RECEIPTS_LIMITS, DocumentError, gc_paused, read_yaml, shown
from gateway.domain.receiving import ExpectedReceipt, ReceivingTracker
from gateway.receipts_file import ReceiptsError, parse_expected

ACTIONS = ("check", "load", "add", "list")


class _Failed(Exception):
    """Ends the command: the message is printed to standard error, ``status`` is returned."""

    def __init__(self, status: int, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.status = status
        self.lines = lines


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=ACTIONS,
        help="check: validate FILE; load (or add): validate FILE and merge it into the "
        "gateway's receiving.expected_file; list: show what that file expects",
    )
    parser.add_argument(
        "file",
        type=Path,
        nargs="?",
        help="expected receipts (YAML or JSON; - reads standard input); not with list",
    )
    parser.add_argument("--config", "-c", help="gateway config (default: $DOCKWATCH_CONFIG)")


def describe(receipts: list[ExpectedReceipt]) -> str:
    """One line per receipt: its door and what it expects."""
    lines = []
    for r in receipts:
        eaches = sum(line.quantity or 0 for line in r.lines)
        epcs = sum(len(line.epcs) for line in r.lines)
        what = f"{len(r.lines)} line(s)"
        if eaches:
            what += f", {eaches} eaches"
        if epcs:
            what += f", {epcs} tagged case(s)"
        lines.append(f"  {r.receipt_id}: door {r.door or 'any'}, {what}")
    return "\n".join(lines)


def _replace(target: Path, text: str) -> None:
    """Write ``target`` atomically, keeping its mode and owner: the gateway (often another
    user) must still be able to read it. New files get 0644."""
    try:
        st: os.stat_result | None = target.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644 if st is None else st.st_mode & 0o7777)
        if st is not None and os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _config(given: str | None, required: bool) -> tuple[str, GatewayConfig] | None:
    path = given
    if path is None and (required or os.environ.get("DOCKWATCH_CONFIG")):
        try:
            path = str(config_path_from_env())
        except ConfigError as exc:
            raise _Failed(2, f"{exc} (give --config FILE)") from exc
    if path is None:
        return None
    try:
        return path, load_config(path)
    except ConfigError as exc:
        raise _Failed(2, *(f"{path}: {problem}" for problem in exc.problems)) from exc


@dataclass(frozen=True, slots=True)
class _Document:
    """An expected-receipts file, read once (it may be standard input), and what it holds."""

    name: str
    entries: list[object]
    receipts: list[ExpectedReceipt]


def _read(path: Path, status: int) -> _Document:
    """Read and validate ``path`` (``-``: standard input) the way the gateway reads the file."""
    name = "<stdin>" if str(path) == "-" else shown(path)
    try:
        data = read_yaml(path, RECEIPTS_LIMITS)
    except DocumentError as exc:
        raise _Failed(status, str(exc)) from exc
    try:
        receipts = [] if data is None else parse_expected(data)  # empty: expects nothing
    except ReceiptsError as exc:
        raise _Failed(status, *(f"{name}: {problem}" for problem in exc.problems)) from exc
    entries = data["receipts"] if isinstance(data, dict) else data
    return _Document(name, list(cast(list[object], entries) or []), receipts)


def _check_against(config: GatewayConfig, name: str, receipts: list[ExpectedReceipt]) -> None:
    """Every SKU in the catalog, every door a portal; EPCs resolve (the tracker's own rules)."""
    catalog = catalog_of(config)
    portals = {p.id for p in config.portals}
    problems = sorted(
        f"{r.receipt_id}: sku {line.sku!r} is not in the catalog"
        for r in receipts
        for line in r.lines
        if line.sku is not None and catalog.by_sku(line.sku) is None
    )
    problems += [
        f"{r.receipt_id}: door {r.door!r} is not a configured portal "
        f"({', '.join(sorted(portals)) or 'none configured'})"
        for r in receipts
        if r.door is not None and r.door not in portals
    ]
    if not problems:
        try:
            ReceivingTracker(catalog=catalog).add_expected(receipts)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise _Failed(2, *(f"{name}: {problem}" for problem in problems))


def _expected_file(config_path: str, config: GatewayConfig) -> Path:
    target = config.receiving.expected_file
    if target is None:
        raise _Failed(
            2,
            f"{config_path}: receiving.expected_file is not set: the gateway reads expected "
            "receipts from that file",
        )
    return target


def _run(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.file is not None:
            raise _Failed(2, "receipts list takes no FILE (it lists receiving.expected_file)")
        found = _config(args.config, required=True)
        assert found is not None
        config_path, config = found
        target = _expected_file(config_path, config)
        receipts = _read(target, 1).receipts
        print(f"{target}: {len(receipts)} expected receipt(s)")
        if receipts:
            print(describe(receipts))
        return 0
    if args.file is None:
        raise _Failed(
            2, f"receipts {args.action} needs the FILE of expected receipts (- for stdin)"
        )
    new = _read(args.file, 2)
    found = _config(args.config, required=args.action in {"load", "add"})
    if found is None:
        print(f"{new.name}: OK, {len(new.receipts)} receipt(s); catalog and doors not checked")
        print(describe(new.receipts))
        return 0
    config_path, config = found
    _check_against(config, new.name, new.receipts)
    print(f"{new.name}: OK, {len(new.receipts)} receipt(s), checked against {config_path}")
    if args.action == "check":
        print(describe(new.receipts))
        return 0
    target = _expected_file(config_path, config)
    print(_merge(new, target, config))
    print(describe(new.receipts))
    return 0


def _merge(new: _Document, target: Path, config: GatewayConfig) -> str:
    """Merge the checked ``new`` receipts into ``target``; the line saying what was done."""
    with _locked(target):  # two loads at once must not lose each other's receipts
        existing = _read(target, 1) if target.exists() else _Document(str(target), [], [])
        known = {r.receipt_id for r in existing.receipts}
        again = [r.receipt_id for r in new.receipts if r.receipt_id in known]
        if again:
            raise _Failed(2, f"{new.name}: receipt(s) {_some(again)} already expected in {target}")
        # The merged file must be one the gateway accepts as a whole (an EPC expected by two
        # receipts is only visible across files): refuse, and write nothing, otherwise. Each
        # part is checked once, in linear time: the new file above, the existing one here.
        taken = _epc_taken(existing.receipts, new.receipts)
        if taken is not None:
            raise _Failed(2, f"{new.name}: with the receipts in {target}: {taken}")
        if existing.receipts:
            _check_against(config, str(target), existing.receipts)
        documents = existing.entries + new.entries
        try:
            _replace(target, dump_expected(documents))
        except OSError as exc:
            raise _Failed(1, f"{target}: cannot write: {exc}") from exc
    return f"loaded {len(new.receipts)} receipt(s) into {target} ({len(documents)} in all)"


class LoadRefused(Exception):
    """``receipts load`` refused the file: ``problems`` are its messages, by key path."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_receipts(path: Path, name: str, config: GatewayConfig) -> str:
    """``dockwatch receipts load`` for a file already on disk (the console's upload, shown as
    ``name``): the same checks, the same merge into ``receiving.expected_file``. Returns the
    line saying what was loaded; :class:`LoadRefused` with every problem otherwise. Blocking
    (file I/O and a lock): call it from a worker thread."""
    try:
        document = _read(path, 2)
        new = _Document(name, document.entries, document.receipts)
        _check_against(config, name, new.receipts)
        target = _expected_file("the gateway's config", config)
        return _merge(new, target, config)
    except _Failed as exc:
        problems = [line.replace(str(path), name) for line in exc.lines]
        raise LoadRefused(tuple(problems)) from exc


def _some(ids: list[str], shown_max: int = 10) -> str:
    more = f" and {len(ids) - shown_max} more" if len(ids) > shown_max else ""
    return ", ".join(ids[:shown_max]) + more


def _epc_taken(existing: list[ExpectedReceipt], new: list[ExpectedReceipt]) -> str | None:
    """The first EPC of ``new`` that a receipt of ``existing`` already expects, described."""
    owner = {urn: r.receipt_id for r in existing for line in r.lines for urn in line.epcs}
    for receipt in new:
        for line in receipt.lines:
            for urn in sorted(line.epcs):
                if urn in owner:
                    return f"{receipt.receipt_id}: {urn} is already expected in {owner[urn]}"
    return None


def dump_expected(entries: list[object]) -> str:
    """The expected-receipts file: ``{"receipts": [...]}`` as JSON, one receipt per line.

    JSON is YAML, so the file stays one an operator can read and edit as YAML; and it is read
    a hundred times faster than PyYAML's block style (30,000 receipts: 0.1 s instead of 6 s),
    which matters to the gateway, which re-reads the whole file whenever it changes. Entries
    passed :func:`parse_expected`, so they hold only strings, integers, lists and mappings.
    """
    lines = [json.dumps(entry, ensure_ascii=False, separators=(", ", ": ")) for entry in entries]
    return '{"receipts": [\n' + ",\n".join(lines) + ("\n" if lines else "") + "]}\n"


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """An exclusive lock on ``target``'s lock file (``.<name>.lock`` beside it) for a
    read-merge-replace: the replace swaps the file itself, so the lock cannot be on it."""
    lock_path = target.with_name(f".{target.name}.lock")
    try:
        handle = lock_path.open("a")
    except OSError as exc:
        raise _Failed(1, f"{lock_path}: cannot lock: {exc}") from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main(args: argparse.Namespace) -> int:
    try:
        # A short-lived command building up to 200,000 receipts: the cyclic collector's full
        # passes over them would be most of its time (it frees nothing: the data is a tree).
        with gc_paused():
            return _run(args)
    except _Failed as failed:
        for line in failed.lines:
            print(line, file=sys.stderr)
        return failed.status
