"""``dockwatch receiving check|add``: expected receipts (ASNs) from the command line.

The gateway reads expected receipts from the file named by ``receiving.expected_file`` and
re-reads it whenever it changes (every few seconds), adding receipts it does not know yet. So:

- ``dockwatch receiving check ASN.yaml [--config gw.yaml]`` validates a file: its structure and,
  with a config, that every SKU and EPC is in the catalog. Exit 0 when valid, 2 otherwise.
- ``dockwatch receiving add ASN.yaml --config gw.yaml`` validates the new receipts, then merges
  them into the configured expected file (written atomically: a temporary file renamed over it),
  where the running gateway picks them up. A receipt id already there is an error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

from gateway.app import catalog_of, load_expected
from gateway.config import config_path_from_env, load_config
from gateway.domain.receiving import ExpectedReceipt, ReceivingTracker
from gateway.errors import ConfigError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check", "add"), help="validate, or add to the gateway")
    parser.add_argument("file", type=Path, help="expected receipts (YAML or JSON)")
    parser.add_argument("--config", "-c", help="gateway config (default: $DOCKWATCH_CONFIG)")


def _describe(receipts: list[ExpectedReceipt]) -> str:
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


def main(args: argparse.Namespace) -> int:
    try:
        receipts = load_expected(args.file)
    except ValueError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    config_path = args.config
    if config_path is None and (args.action == "add" or os.environ.get("DOCKWATCH_CONFIG")):
        config_path = config_path_from_env()
    if config_path is None:
        print(f"{args.file}: OK ({len(receipts)} receipt(s); catalog not checked)")
        print(_describe(receipts))
        return 0
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{config_path}: {problem}", file=sys.stderr)
        return 2
    catalog = catalog_of(config)
    unknown = sorted(
        f"{r.receipt_id}: sku {line.sku!r} is not in the catalog"
        for r in receipts
        for line in r.lines
        if line.sku is not None and catalog.by_sku(line.sku) is None
    )
    if unknown:
        for problem in unknown:
            print(f"{args.file}: {problem}", file=sys.stderr)
        return 2
    tracker = ReceivingTracker(catalog=catalog)
    target = config.receiving.expected_file
    existing: list[ExpectedReceipt] = []
    if args.action == "add" and target is None:
        print(f"{config_path}: receiving.expected_file is not set", file=sys.stderr)
        return 2
    try:
        if target is not None and args.action == "add" and target.exists():
            existing = load_expected(target)
        tracker.add_expected([*existing, *receipts])
    except ValueError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    if args.action == "check":
        print(f"{args.file}: OK ({len(receipts)} receipt(s), checked against the catalog)")
        print(_describe(receipts))
        return 0
    assert target is not None
    documents: list[object] = []
    for source in ([target] if target.exists() else []) + [args.file]:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
        documents.extend(data["receipts"] if isinstance(data, dict) else data or [])
    _replace(target, yaml.safe_dump({"receipts": documents}, sort_keys=False))
    print(f"added {len(receipts)} receipt(s) to {target} ({len(documents)} in all)")
    print(_describe(receipts))
    return 0
