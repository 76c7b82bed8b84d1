"""The ``dockwatch`` command line.

Each command lives in the module that owns it; that module exposes
``configure_parser(parser)`` and ``main(args) -> int``. Only the chosen command's module is
imported, so ``dockwatch check-config`` does not pay for importing gRPC, sllurp or pymodbus.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from gateway import __version__

# (command words, owning module, one-line help)
COMMANDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("run",), "gateway.run_cli", "run the gateway"),
    (("check-config",), "gateway.config_cli", "validate a config file and print every problem"),
    (("config", "check"), "gateway.config_cli", "the same as check-config"),
    (("config", "schema"), "gateway.schema_cli", "print the JSON Schema of the config file"),
    (("receipts",), "gateway.receiving_cli", "load, check or list expected receipts (ASNs)"),
    (("receiving",), "gateway.receiving_cli", "the same as receipts (older name)"),
    (("stock",), "gateway.api_cli", "show a running gateway's stock per location and SKU"),
    (("movements",), "gateway.api_cli", "list (and --follow) a running gateway's movements"),
    (
        ("db", "upgrade"),
        "gateway.db_cli",
        "upgrade the edge store schema to the latest revision",
    ),
    (("simulate", "llrp"), "simulators.llrp.server", "run the LLRP reader simulator"),
    (("simulate", "modbus"), "simulators.modbus.server", "run the Modbus weighing-shelf simulator"),
    (
        ("simulate", "central"),
        "simulators.central",
        "run the central inventory (gRPC ingest) simulator",
    ),
    (
        ("simulate", "epcis"),
        "simulators.epcis",
        "run the EPCIS 2.0 capture (repository) simulator",
    ),
    (
        ("simulate", "all"),
        "simulators.all",
        "run the LLRP, Modbus and central simulators of some scenarios together",
    ),
    (("demo",), "gateway.demo", "simulators + gateway + broker, movements and stock shown live"),
)


class _CommandModule(Protocol):
    def configure_parser(self, parser: argparse.ArgumentParser) -> None: ...

    def main(self, args: argparse.Namespace) -> int: ...


def _load(module_name: str) -> _CommandModule:
    return cast(_CommandModule, importlib.import_module(module_name))


def build_parser(selected: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Build the parser; only the command whose words match ``selected`` loads its module."""
    parser = argparse.ArgumentParser(
        prog="dockwatch", description="RFID and weight-shelf edge gateway."
    )
    parser.add_argument("--version", action="version", version=f"dockwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for words, module_name, help_text in COMMANDS:
        if len(words) == 1:
            cmd = sub.add_parser(words[0], help=help_text, description=help_text)
        else:
            group = groups.get(words[0])
            if group is None:
                holder = sub.add_parser(words[0], help=f"{words[0]} commands")
                group = holder.add_subparsers(
                    dest="subcommand", metavar="SUBCOMMAND", required=True
                )
                groups[words[0]] = group
            cmd = group.add_parser(words[1], help=help_text, description=help_text)
        if tuple(selected[: len(words)]) == words:
            module = _load(module_name)
            module.configure_parser(cmd)
            cmd.set_defaults(_handler=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # gRPC's C core writes its own INFO lines (a failed TLS handshake...) straight to standard
    # error, past our log format (and through JSON logs); our adapters report those failures.
    # Set before any command imports grpc; an operator's own GRPC_VERBOSITY wins.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    argv = list(sys.argv[1:] if argv is None else argv)
    words = [a for a in argv if not a.startswith("-")][:2]
    parser = build_parser(words)
    args = parser.parse_args(argv)
    handler = cast(Callable[[argparse.Namespace], int] | None, getattr(args, "_handler", None))
    if handler is None:  # pragma: no cover - argparse already rejected the command line
        parser.print_help()
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
