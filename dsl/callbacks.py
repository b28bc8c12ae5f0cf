"""Hydra callbacks that `dsl.compose.register` puts in Hydra's own config (never in a spec).

`SweepReport` writes the comparison report (compilers/charts/sweep.py) into the sweep directory
when a multirun ends, whichever launcher ran the jobs (basic, joblib, submitit, ...) and whichever
sweeper chose them (basic, optuna, ...). Hydra instantiates callbacks for every run, so this
module imports nothing heavy; the report's imports happen only at the end of a multirun.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


class SweepReport(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            from compilers.charts.sweep import write_sweep_report

            out = write_sweep_report([sweep_dir], sweep_dir / "report.html")
        except Exception as e:  # the jobs are done and saved: a report problem is one line, not a crash
            print(f"sweep report not written: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
            return
        print(f"sweep report: {out}")
