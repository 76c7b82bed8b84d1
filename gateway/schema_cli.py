"""``dockwatch config schema``: print the JSON Schema of the gateway's config file.

Editors with a YAML language server (VS Code's YAML extension, Neovim's yamlls, JetBrains IDEs)
complete and check keys as they are typed when the config names the schema on its first line::

    # yaml-language-server: $schema=./dockwatch.schema.json

``deploy/dockwatch.schema.json`` is this command's output (a test keeps it current). The schema
checks keys, types, ranges, patterns and choices; references between sections, files that
must exist and variables that must be set are checked by ``dockwatch check-config``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.config import config_schema


def schema_text() -> str:
    """The schema as written to ``deploy/dockwatch.schema.json``: stable, indented, one final
    newline."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write the schema to this file instead of standard output",
    )


def main(args: argparse.Namespace) -> int:
    text = schema_text()
    output: Path | None = args.output
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return 0
