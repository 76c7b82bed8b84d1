"""``dockwatch check-config [FILE]``: validate a config file and print every problem.

Exit status 0 when the file is valid (a short summary goes to stdout), 2 when it is not (one
problem per line on stderr, each prefixed with the file name). ``DOCKWATCH_*`` environment
overrides are applied, as the gateway would at start-up, unless ``--no-env`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dockwatch_core.errors import ConfigError
from gateway.config import CONFIG_PATH_ENV, GatewayConfig, load_config
from gateway.documents import shown

EXIT_INVALID = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        help=f"the YAML config file (default: ${CONFIG_PATH_ENV})",
    )
    parser.add_argument(
        "--no-env",
        action="store_true",
        help="ignore DOCKWATCH_* environment overrides and check the file alone",
    )


def main(args: argparse.Namespace) -> int:
    path: Path | None = args.file
    if path is None:
        env_path = os.environ.get(CONFIG_PATH_ENV, "")
        if not env_path:
            print(
                f"dockwatch check-config: no FILE given and {CONFIG_PATH_ENV} is not set",
                file=sys.stderr,
            )
            return EXIT_INVALID
        path = Path(env_path)
    environ = {} if args.no_env else os.environ
    try:
        config = load_config(path, environ=environ)
        # What start-up checks beyond the file: secrets, TLS files, the listeners' rules.
        from gateway.app import preflight

        preflight(config, environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{shown(path)}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    print(summary(config))
    return 0


def summary(config: GatewayConfig) -> str:
    """A few lines saying what the config sets up."""
    mqtt, central = config.sinks.mqtt, config.sinks.central
    sinks = []
    if mqtt is not None:
        sinks.append(f"mqtt {mqtt.url} (prefix {mqtt.topic_prefix}, qos {mqtt.qos})")
    if central is not None:
        sinks.append(f"central {central.target}")
    if config.sinks.epcis is not None:
        sinks.append(f"epcis {config.sinks.epcis.capture_url}")
    lines = [
        f"{config.source}: OK",
        f"  site:      {config.site.id}",
        f"  store:     {config.store.url}",
        f"  readers:   {len(config.readers)}",
        f"  portals:   {len(config.portals)}",
        f"  shelves:   {len(config.shelves)}",
        f"  items:     {len(config.catalog.items)}",
        f"  locations: {len(config.locations)}",
        f"  sinks:     {', '.join(sinks) if sinks else 'none (store only)'}",
        f"  api:       grpc {config.api.grpc_listen}, metrics {config.api.metrics_listen or 'off'}",
    ]
    return "\n".join(lines)
