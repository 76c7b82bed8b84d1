"""Expected receipts at scale: ``dockwatch receipts load`` and the gateway taking a big file.

What is measured
----------------
- ``receipts load``: the CLI, as a subprocess, loading COUNT receipts (default 30,000: half with
  two SKU lines, half also with four tagged cases) into an empty expected file, from a YAML file
  (block style, as ``yaml.safe_dump`` writes it) and from a JSON file. Wall time of the process,
  imports included; the median of RUNS.
- ``gateway``: a running gateway (SQLite store, no devices) given an expected file of STALL
  receipts (default 10,000, block-style YAML): how long until they are all taken, and the worst
  lateness of a 5 ms ticker on the gateway's event loop meanwhile (the loop stall devices and
  probes would see; the issue's bar is 100 ms).

Run: ``.venv/bin/python benchmarks/receipts_load.py [--count N] [--stall N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.app import Gateway  # noqa: E402
from gateway.config import parse_config  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def receipts(count: int) -> dict[str, object]:
    out = []
    for i in range(count):
        lines: list[dict[str, object]] = [
            {"sku": "SKU-1001", "quantity": 12},
            {"sku": "SKU-1002", "quantity": 3},
        ]
        if i % 2 == 0:
            lines.append(
                {"epcs": [f"urn:epc:id:sgtin:0614141.012345.{4 * i + k}" for k in range(4)]}
            )
        out.append({"id": f"ASN-{i:06d}", "door": "door-1", "lines": lines})
    return {"receipts": out}


def cli_load(tmp: Path, source: Path) -> float:
    expected = tmp / "expected.yaml"
    expected.write_text("")
    config = yaml.safe_load((ROOT / "deploy" / "demo.yaml").read_text())
    config["receiving"] = {"expected_file": str(expected)}
    config_file = tmp / "gw.yaml"
    config_file.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "receipts",
            "load",
            str(source),
            "-c",
            str(config_file),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    return time.perf_counter() - started


async def gateway_stall(tmp: Path, count: int) -> tuple[float, float]:
    expected = tmp / "stall.yaml"
    expected.write_text(yaml.safe_dump(receipts(count)))
    config = parse_config(
        {
            "site": {"id": "bench"},
            "store": {"url": f"sqlite:///{tmp / 'edge.db'}"},
            "catalog": {
                "items": [
                    {"sku": "SKU-1001", "gtin": "00614141123452", "name": "Widget"},
                    {"sku": "SKU-1002", "gtin": "00614141123469", "name": "Gadget"},
                ]
            },
            "locations": [{"id": "yard", "kind": "dock"}, {"id": "receiving"}],
            "api": {
                "grpc_listen": f"127.0.0.1:{free_port()}",
                "metrics_listen": f"127.0.0.1:{free_port()}",
            },
        },
        environ={},
    )
    config = dataclasses.replace(
        config, receiving=dataclasses.replace(config.receiving, expected_file=expected)
    )
    gateway = Gateway(config)
    worst = 0.0
    last_id = f"ASN-{count - 1:06d}"

    async def tick() -> None:
        nonlocal worst
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - before - 0.005)

    run = asyncio.create_task(gateway.run())
    await gateway.ready.wait()
    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    while gateway.receiving is None or last_id not in gateway.receiving:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    took = time.perf_counter() - started
    ticker.cancel()
    run.cancel()
    await asyncio.gather(ticker, run, return_exceptions=True)
    return took, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument("--stall", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        data = receipts(args.count)
        as_yaml = tmp / "asn.yaml"
        as_yaml.write_text(yaml.safe_dump(data))
        as_json = tmp / "asn.json"
        as_json.write_text(json.dumps(data))
        for label, source in (("yaml", as_yaml), ("json", as_json)):
            times = [cli_load(tmp, source) for _ in range(args.runs)]
            print(
                f"receipts load {args.count} ({label}, {source.stat().st_size / 1e6:.1f} MB): "
                f"{statistics.median(times):.2f} s (median of {args.runs})"
            )
        took, worst = asyncio.run(gateway_stall(tmp, args.stall))
        print(
            f"gateway took {args.stall} receipts in {took:.2f} s, "
            f"worst event-loop stall {worst * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
