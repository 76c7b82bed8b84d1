"""``dockwatch run``: load the config, check it, run the gateway until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from dockwatch_core.errors import ConfigError, GatewayError
from gateway.app import Gateway, preflight
from gateway.config import config_path_from_env, load_config
from gateway.logs import configure_logging

log = logging.getLogger("gateway.app")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        help="config file (default: $DOCKWATCH_CONFIG)",
    )
    parser.add_argument("--log-level", help="override logging.level (DEBUG, INFO, ...)")


async def _run_until_signalled(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await gateway.run()


def main(args: argparse.Namespace) -> int:
    try:
        path = args.config or config_path_from_env()
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config or 'config'}: {problem}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or config.logging.level, config.logging.format)
    try:
        preflight(config)  # before the store is opened or migrated
        import uvloop

        uvloop.run(_run_until_signalled(Gateway(config)))
    except ConfigError as exc:  # found at start-up (a listener's rule, a secret): exit as invalid
        for problem in exc.problems:
            print(f"{args.config or 'config'}: {problem}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        log.error("gateway stopped: %s", exc)  # noqa: TRY400 - the message is the whole story
        return 1
    return 0
