"""``dockwatch db upgrade``: upgrade the edge store's schema to the latest revision.

The store knows its migrations and takes a URL (:func:`edge_store.migrate.upgrade`); this command
adds what only the gateway knows: where a gateway config says the store is (``--config``), with
the password from that config's secret. So the store depends on nothing in the gateway.

Exit status: 0 upgraded (or already at head), 1 the upgrade failed, 2 invalid config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy.engine import URL

from dockwatch_core.errors import ConfigError, GatewayError
from edge_store.engine import redact_url, with_password
from edge_store.migrate import upgrade
from gateway.config import load_config, resolve_secret


def url_from_config(path: Path) -> str | URL:
    """``store.url`` of the gateway config at ``path``, with its password secret if it has one."""
    store = load_config(path).store
    return with_password(store.url, resolve_secret(store.password))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--url",
        help="database URL, e.g. sqlite:///./var/edge.db or postgresql+psycopg://user@host/db",
    )
    source.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        help="gateway config file; upgrades its store.url",
    )


def main(args: argparse.Namespace) -> int:
    url: str | URL | None = args.url
    try:
        if url is None:
            url = url_from_config(args.config)
        revision = upgrade(url)
    except ConfigError as exc:
        print(f"dockwatch db upgrade: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"dockwatch db upgrade: {exc}", file=sys.stderr)
        return 1
    print(f"{redact_url(url)}: schema at revision {revision} (head)")
    return 0
