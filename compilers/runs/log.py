"""The files a run writes as it goes: metrics.jsonl (one whole line per epoch), summary.json."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from compilers.runs.record import write_json


def _clean(value: Any) -> Any:
    # JSON has no NaN/Infinity: write null, so every line stays standard JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.summary_path = self.dir / "summary.json"
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")

    def epoch(self, row: dict) -> None:
        """Appends one epoch as one line, written whole and flushed."""
        line = json.dumps({k: _clean(v) for k, v in row.items()}) + "\n"
        self._metrics.write(line)
        self._metrics.flush()  # whole lines reach the OS at once; fsync waits for close()

    def summary(self, summary: dict) -> None:
        write_json(self.summary_path, summary)

    def close(self) -> None:
        if not self._metrics.closed:
            self._metrics.flush()
            os.fsync(self._metrics.fileno())
            self._metrics.close()
