"""Ground truth: what a simulator run really did, written as JSON Lines.

Every scenario run writes one file; accuracy tests and benchmarks compare the gateway's movements
against it. One JSON object per line, each with at least ``event`` and ``t`` (seconds since the
scenario started) plus event-specific fields, e.g.::

    {"event": "crossing", "t": 12.5, "epc": "3074...", "door": "door-1", "direction": "in",
     "from": "yard", "to": "receiving"}
    {"event": "pick", "t": 30.1, "shelf": "shelf-a1", "units": 2}
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self


class GroundTruthWriter:
    """Appends ground-truth events to a JSONL file, flushing each line (a crash keeps them)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = self.path.open("w", encoding="utf-8")

    def write(self, event: str, t: float, **fields: Any) -> None:
        record = {"event": event, "t": round(t, 6), **fields}
        self._fh.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_ground_truth(path: Path | str) -> list[dict[str, Any]]:
    """All events of a ground-truth file, in order."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
