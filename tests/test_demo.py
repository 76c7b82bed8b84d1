"""``make demo`` as a newcomer runs it: it starts, shows movements and stock, stops by itself.

The demo uses the fixed ports of ``deploy/demo.yaml`` (a real demo on this machine would make it
refuse to start, which this test would report).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import missing
from tests.support.broker import find_mosquitto

pytestmark = pytest.mark.integration


def test_demo_shows_movements_and_stock_then_stops_cleanly() -> None:
    if find_mosquitto() is None:
        missing("the mosquitto binary")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--seconds", "35"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "device door-1-reader online" in out
    assert "device shelf-a1 online" in out
    # The shelves' stock is set from their weight, then the scenario's traffic flows.
    assert re.search(r"#\d+\s+adjustment SKU-1001\s+x16\s+adjustment -> shelf-a1", out), out
    assert re.search(r"#\d+\s+receipt\s+SKU-1001\s+x12\s+yard -> receiving", out), out
    assert "stock on hand:" in out
    assert out.rstrip().endswith("dockwatch demo stopped.")
    leftovers = subprocess.run(
        ["pgrep", "-f", "gateway.cli simulate"], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == ""
