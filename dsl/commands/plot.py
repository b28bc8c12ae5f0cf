"""`python -m dsl plot RUN_DIR [plots=[...]]`: re-render a finished run's charts and report.

Reads what the run saved (metrics.jsonl, summary.json, record.npz/json); never retrains. Without
`plots=`, draws the charts the run's spec asked for (from .hydra/config.yaml).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from dsl.errors import SpecError


def _plots_of_run(run: Path, record):
    from dsl.parse import parse_plots

    cfg = run / ".hydra" / "config.yaml"
    raw = yaml.safe_load(cfg.read_text()).get("plots", "auto") if cfg.is_file() else "auto"
    return _resolve(parse_plots(raw), record)


def _resolve(plots, record):
    if plots == "auto":
        from compilers.charts import auto_items, input_kind

        x = record.examples.get("x")
        kind = input_kind(x.shape[1:], x.dtype) if x is not None else "tabular"
        return tuple(auto_items(record.task, kind, len(record.feature_names) if kind == "tabular" else None))
    return tuple(plots)


def main(args: list[str]) -> None:
    from dsl import registry as reg
    from dsl.parse import parse_plots

    reg.load_all()
    runs = [a for a in args if "=" not in a]
    options = [a for a in args if "=" in a]
    try:
        if len(runs) != 1:
            raise SpecError("", "usage: python -m dsl plot RUN_DIR [plots=[kind, ...]]")
        run = Path(runs[0])
        for f in ("record.json", "record.npz", "summary.json", "metrics.jsonl"):
            if not (run / f).is_file():
                raise SpecError("", f"{run} is not a finished run directory (no {f})")
        plots = None
        for opt in options:
            key, _, value = opt.partition("=")
            if key != "plots":
                raise SpecError(key, "unknown option; plot takes plots=[...]")
            try:
                plots = parse_plots(yaml.safe_load(value))
            except yaml.YAMLError:
                raise SpecError("plots", f"cannot read {value!r} as a list of chart kinds") from None
        from compilers.charts.render import render_charts
        from compilers.charts.report import write_report
        from compilers.runs.record import RunRecord

        record = RunRecord.load(run)
        items = _resolve(plots, record) if plots is not None else _plots_of_run(run, record)
    except SpecError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2)
    t = time.perf_counter()
    rendered = render_charts(record, items, run / "charts")
    write_report(record, rendered, run / "report.html")
    ok = sum(1 for r in rendered if not r.skipped)
    print(f"{ok} of {len(rendered)} charts drawn in {time.perf_counter() - t:.1f} s\nreport: {run / 'report.html'}")
