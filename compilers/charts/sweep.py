"""The comparison report of many runs: a sweep directory's report.html, and `python -m dsl compare`.

Reads only what runs leave on disk: each run directory's summary.json, metrics.jsonl and
.hydra/overrides.yaml (a run directory is any folder holding summary.json), and a sweep's
sweep.jsonl (one line per job, failed jobs included). Never imports JAX; altair and
scikit-learn are imported when a report is built.

The page (report.py's machinery: one inline copy of the Vega bundle, sections, contents):
- a ranked table of runs, by the objective metric (the monitor where every run has it), losses
  and errors ascending, anything else descending, with links to each run's own report.html;
- learning curves of every run overlaid, one panel per main quantity (loss, val_loss, the
  monitor); click a legend entry to isolate a run;
- the final objective against each swept value, one small panel per key;
- parallel coordinates over swept values and final metrics;
- parameter importance (a random forest's feature importances) and correlation, as W&B's
  sweep dashboard shows them;
- failed jobs with their one-line error.

Swept values are the overrides that differ between runs: a sweep's swept keys, or, for runs of
unrelated specs, whatever their command lines set differently (a key a run did not set reads
"(not set)").
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from compilers.charts.base import MAX_ROWS, ChartSkip, DataSets, even_indices, num

NOT_SET = "(not set)"
MIN_CORRELATION_RUNS = 3    # a correlation of two points is always ±1
MIN_IMPORTANCE_RUNS = 5     # fewer rows than this and a forest's importances are noise
FOREST = {"n_estimators": 200, "random_state": 0}
# Metric names (after the split prefix) where lower is better; any other metric: higher.
LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "mape", "perplexity")
SPLITS = ("val", "test", "train")
SKIP_DIRS = {"checkpoints", "charts", ".hydra", "__pycache__"}


# --- what runs left on disk ----------------------------------------------------------------------

@dataclass
class Run:
    """One run or job, as read back from disk."""

    path: Path | None                  # the run directory (None: a failed job left none)
    name: str = ""                     # the spec's name
    status: str = "completed"
    overrides: tuple[str, ...] = ()
    metrics: dict[str, float | None] = field(default_factory=dict)   # "val_loss", "test_accuracy", ...
    history: list[dict] = field(default_factory=list)                # metrics.jsonl rows
    monitor: str | None = None
    objective: str | None = None       # the spec's `objective` (the metric a sweeper optimises)
    best_epoch: Any = None
    seconds: float | None = None
    error: str | None = None
    job: int | None = None
    sweep: Path | None = None          # the sweep directory it belongs to
    id: str = ""                       # short and unique within one comparison
    label: str = ""                    # id and swept values: the legend entry

    @property
    def where(self) -> Path:
        if self.path is not None:
            return self.path
        return (self.sweep or Path(".")) / str(self.job if self.job is not None else "?")

    @property
    def ok(self) -> bool:
        return self.status == "completed"


def flat_metrics(metrics: dict) -> dict[str, float | None]:
    """{split: {metric: value}} -> {"split_metric": value}; non-finite values read None."""
    out: dict[str, float | None] = {}
    for split, values in (metrics or {}).items():
        if isinstance(values, dict):
            for k, v in values.items():
                if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
                    out[f"{split}_{k}"] = num(v)
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line torn by a killed job
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_overrides(run_dir: Path) -> tuple[str, ...]:
    import yaml

    try:
        raw = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ()
    return tuple(str(o) for o in raw) if isinstance(raw, list) else ()


def _config_value(run_dir: Path, key: str) -> str:
    """A top-level string of the run's resolved spec, .hydra/config.yaml ('' when missing)."""
    import yaml

    try:
        raw = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ""
    value = raw.get(key) if isinstance(raw, dict) else None
    return value if isinstance(value, str) and "${" not in value else ""


def _config_name(run_dir: Path) -> str:
    """The spec's name (from .hydra/config.yaml: a failed job's only record of it)."""
    return _config_value(run_dir, "name")


def _objective(summary: dict, run_dir: Path) -> str | None:
    """The spec's `objective` as summary.json or the resolved spec records it, if any."""
    value = summary.get("objective")
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str) or not value:
        value = _config_value(run_dir, "objective")
    return value or None


def read_run(run_dir: Path) -> Run:
    """A run directory -> Run (summary.json, metrics.jsonl, .hydra/overrides.yaml)."""
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json")
    run = Run(path=run_dir, overrides=_read_overrides(run_dir))
    if not isinstance(summary, dict):
        run.status, run.error = "failed", "summary.json cannot be read"
        run.name = _config_name(run_dir)
        return run
    run.name = str(summary.get("name") or _config_name(run_dir))
    run.status = str(summary.get("status") or "completed")
    run.metrics = flat_metrics(summary.get("metrics") or {})
    run.monitor = summary.get("monitor") if isinstance(summary.get("monitor"), str) else None
    run.objective = _objective(summary, run_dir)
    run.best_epoch = summary.get("best_epoch")
    run.seconds = num((summary.get("times") or {}).get("total_s"))
    run.history = [h for h in _read_jsonl(run_dir / "metrics.jsonl") if num(h.get("epoch")) is not None]
    if run.status != "completed":
        run.error = summary.get("error") if isinstance(summary.get("error"), str) else None
    return run


def _job_dir(sweep_dir: Path, line: dict) -> Path | None:
    """A job's run directory: as sweep.jsonl recorded it, else by its name inside the sweep dir
    (the sweep may have been moved since)."""
    recorded = line.get("run_dir")
    candidates = []
    if isinstance(recorded, str) and recorded:
        candidates += [Path(recorded), sweep_dir / Path(recorded).name]
    if isinstance(line.get("job"), int):
        candidates.append(sweep_dir / str(line["job"]))
    for c in candidates:
        if c.is_dir():
            return c
    return None


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """(run directories, sweep directories) under root, root included."""
    runs, sweeps = [], []
    for here, dirs, files in os.walk(root):
        d = Path(here)
        if "sweep.jsonl" in files:
            sweeps.append(d)
        if "summary.json" in files:
            runs.append(d)
            dirs[:] = []      # a run holds no runs
            continue
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
    return runs, sweeps


def _key(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path.absolute())


def collect(paths: Iterable[Path | str]) -> list[Run]:
    """Every run under `paths` (run directories, sweep directories, or any folder holding runs).

    A sweep's failed jobs come from its sweep.jsonl, with their error line, whether or not they
    left a run directory. Runs are ordered by sweep, then job number, then path.
    """
    found: dict[str, Run] = {}
    for root in paths:
        run_dirs, sweep_dirs = _walk(Path(root))
        for sweep in sweep_dirs:
            for line in _read_jsonl(sweep / "sweep.jsonl"):
                job_dir = _job_dir(sweep, line)
                run = read_run(job_dir) if job_dir and (job_dir / "summary.json").is_file() else Run(path=job_dir)
                run.sweep = sweep
                run.job = line.get("job") if isinstance(line.get("job"), int) else None
                if isinstance(line.get("overrides"), list):
                    run.overrides = tuple(str(o) for o in line["overrides"])
                if line.get("status") == "failed" or line.get("error"):
                    run.status = "failed"
                    run.error = str(line.get("error") or run.error or "failed")
                if not run.metrics and isinstance(line.get("metrics"), dict):
                    run.metrics = flat_metrics(line["metrics"])
                if run.seconds is None:
                    run.seconds = num(line.get("total_s"))
                if run.best_epoch is None:
                    run.best_epoch = line.get("best_epoch")
                if not run.name and job_dir is not None:
                    run.name = _config_name(job_dir)
                if not run.overrides and job_dir is not None:
                    run.overrides = _read_overrides(job_dir)
                key = _key(job_dir) if job_dir else f"{_key(sweep)}#{run.job}"
                found[key] = run
        for d in run_dirs:
            key = _key(d)
            if key in found:
                continue
            run = read_run(d)
            parent = d.parent
            if (parent / "sweep.jsonl").is_file() or (parent / "multirun.yaml").is_file():
                run.sweep = parent
                run.job = int(d.name) if d.name.isdigit() else None
            found[key] = run
    runs = list(found.values())
    runs.sort(key=lambda r: (str(r.sweep or r.where.parent), r.job if r.job is not None else -1, str(r.where)))
    return runs


# --- what differs between runs -------------------------------------------------------------------

def split_override(text: str) -> tuple[str, str]:
    key, _, value = str(text).partition("=")
    return key.lstrip("+~"), value


def parse_number(text: str | None) -> float | None:
    """An override value as a finite number, else None ('true', '[]', 'adam', 'nan' are not)."""
    if text is None:
        return None
    try:
        f = float(text.strip())
    except ValueError:
        return None
    return f if math.isfinite(f) else None


@dataclass
class Param:
    """One swept key: its values per run id, and how to place them on an axis."""

    key: str
    label: str
    values: dict[str, str | None]      # run id -> the override's value (None: not set)
    numeric: bool = False
    log: bool = False
    categories: list[str] = field(default_factory=list)

    def position(self, run_id: str) -> float | None:
        """The value on a numeric axis: the number (log10 of it on a log axis), or the category's index."""
        raw = self.values.get(run_id)
        if self.numeric:
            f = parse_number(raw)
            if f is None or (self.log and f <= 0):
                return None
            return math.log10(f) if self.log else f
        return float(self.categories.index(self.text(run_id)))

    def text(self, run_id: str) -> str:
        raw = self.values.get(run_id)
        return NOT_SET if raw is None else raw

    def short(self, run_id: str) -> str:
        """The value for labels: a long number (a sampled 0.02138296007243346) to 4 digits."""
        raw = self.text(run_id)
        f = parse_number(raw) if self.numeric else None
        return raw if f is None or len(raw) <= 8 else f"{f:.4g}"


def short_labels(keys: list[str]) -> dict[str, str]:
    """The last dotted part of each key, or more of it where two keys would read the same."""
    out = {}
    for k in keys:
        parts = k.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if sum(1 for other in keys if other == tail or other.endswith("." + tail)) == 1:
                break
        out[k] = tail
    return out


def swept_params(runs: list[Run]) -> tuple[list[Param], dict[str, str]]:
    """(the keys whose override differs between runs, the overrides every run shares)."""
    per_run = []
    keys: list[str] = []
    for r in runs:
        d = {}
        for o in r.overrides:
            k, v = split_override(o)
            if k:
                d[k] = v
                if k not in keys:
                    keys.append(k)
        per_run.append(d)
    fixed, swept = {}, []
    for k in keys:
        seen = {d.get(k) for d in per_run}
        if len(seen) == 1 and None not in seen:
            fixed[k] = next(iter(seen))
        else:
            swept.append(k)
    labels = short_labels(swept)
    params = []
    for k in swept:
        values = {r.id: d.get(k) for r, d in zip(runs, per_run)}
        present = [v for v in values.values() if v is not None]
        nums = [parse_number(v) for v in present]
        p = Param(k, labels[k], values)
        # Numeric where every run sets a number; a key some runs do not set is categorical, with
        # "(not set)" as one more category (runs of unrelated specs).
        if len(present) == len(values) and all(n is not None for n in nums):
            p.numeric = True
            # A log axis where the values of the completed runs (those on the charts) are positive
            # and span at least a decade, as learning rates do.
            done = [f for f in (parse_number(d.get(k)) for r, d in zip(runs, per_run) if r.ok) if f is not None]
            p.log = bool(done) and min(done) > 0 and max(done) / min(done) >= 10
        else:
            cats = list(dict.fromkeys(present))
            nums_ok = all(n is not None for n in nums)
            p.categories = sorted(cats, key=lambda c: (parse_number(c) is None, parse_number(c) or 0, c)) if nums_ok else cats
            if None in values.values():
                p.categories.append(NOT_SET)
        params.append(p)
    return params, fixed


def metric_split(name: str) -> tuple[str, str]:
    for s in SPLITS:
        if name.startswith(s + "_"):
            return s, name[len(s) + 1:]
    return "", name


def lower_is_better(name: str) -> bool:
    base = metric_split(name)[1].lower()
    return any(w in base for w in LOWER_IS_BETTER)


def monitor_metric(monitor: str) -> str:
    """A history name (val_loss, accuracy) -> its final-metric name (val_loss, train_accuracy)."""
    return monitor if metric_split(monitor)[0] else f"train_{monitor}"


def shared_metrics(runs: list[Run]) -> list[str]:
    """Final metrics every run with metrics has, ordered val, test, train, then by name order."""
    # Completed runs decide; a failed run's partial metrics count only when no run completed.
    have = [r for r in runs if r.metrics and r.ok] or [r for r in runs if r.metrics]
    if not have:
        return []
    names = [k for k in have[0].metrics if all(k in r.metrics for r in have[1:])]
    order = {s: i for i, s in enumerate(SPLITS)}
    return sorted(names, key=lambda n: (order.get(metric_split(n)[0], 3), names.index(n)))


def choose_objective(runs: list[Run]) -> str | None:
    """The metric runs are ranked by: the spec's `objective` every run shares, else the
    early-stopping monitor every run shares, else val_loss, test_loss, train_loss, else the first
    metric they share."""
    shared = shared_metrics(runs)
    if not shared:
        return None
    for attr in ("objective", "monitor"):
        named = {getattr(r, attr) for r in runs if r.ok and r.metrics}
        if len(named) == 1 and None not in named:
            m = monitor_metric(next(iter(named)))
            if m in shared:
                return m
    for m in ("val_loss", "test_loss", "train_loss"):
        if m in shared:
            return m
    return shared[0]


@dataclass
class Comparison:
    runs: list[Run]                    # in ranking order: ranked completed runs first, then the rest
    params: list[Param]
    fixed: dict[str, str]
    objective: str | None
    lower: bool
    metrics: list[str]                 # the final metrics every run with metrics has
    title: str
    sweep: Path | None                 # the one sweep directory all runs belong to, if so

    def value(self, run: Run, metric: str | None = None) -> float | None:
        return run.metrics.get(metric or self.objective or "") if (metric or self.objective) else None

    @property
    def ranked(self) -> list[Run]:
        return [r for r in self.runs if r.ok and self.value(r) is not None]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if not r.ok]


def _assign_ids(runs: list[Run]) -> None:
    wheres = [r.where for r in runs]
    parents = {_key(w.parent) for w in wheres}
    if len(parents) == 1:
        ids = [w.name for w in wheres]
    else:
        try:
            root = Path(os.path.commonpath([os.path.abspath(w) for w in wheres]))
            ids = [Path(os.path.relpath(os.path.abspath(w), root)).as_posix() for w in wheres]
        except ValueError:  # different drives
            ids = [str(w) for w in wheres]
    seen: dict[str, int] = {}
    for r, i in zip(runs, ids):
        seen[i] = seen.get(i, 0) + 1
        r.id = i if seen[i] == 1 else f"{i}~{seen[i]}"


def compare(runs: list[Run]) -> Comparison:
    """Runs -> what the report shows: swept keys, the objective and its direction, the ranking."""
    runs = list(runs)
    _assign_ids(runs)
    params, fixed = swept_params(runs)
    for r in runs:
        shown = " ".join(f"{p.label}={p.short(r.id)}" for p in params)
        r.label = f"{r.id} · {shown}" if shown else r.id
    objective = choose_objective(runs)
    lower = lower_is_better(objective) if objective else True
    metrics = shared_metrics(runs)

    def rank_key(r: Run):
        v = r.metrics.get(objective) if objective else None
        if not r.ok or v is None:
            return (1, 0.0)
        return (0, v if lower else -v)

    ranked = sorted(runs, key=rank_key)   # stable: ties keep the job order
    names = list(dict.fromkeys(r.name for r in runs if r.name))
    sweeps = {_key(r.sweep) for r in runs if r.sweep is not None}
    sweep = next(r.sweep for r in runs if r.sweep) if len(sweeps) == 1 and all(r.sweep for r in runs) else None
    if len(names) == 1:
        title = f"{names[0]} · sweep of {len(runs)} job{'s' * (len(runs) != 1)}" if sweep else \
            f"{names[0]} · {len(runs)} run{'s' * (len(runs) != 1)} compared"
    else:
        title = f"{len(runs)} runs compared"
    return Comparison(ranked, params, fixed, objective, lower, metrics, title, sweep)


# --- charts --------------------------------------------------------------------------------------

def run_colors(cmp: Comparison, shown: list[Run]) -> Any:
    """The colour scale of the runs a chart shows: each run keeps its colour from the table (by
    rank), whichever runs the chart leaves out; legend order: the ranking."""
    import altair as alt

    palette = _palette(len(cmp.runs))
    index = {id(r): i for i, r in enumerate(cmp.runs)}
    shown = sorted(shown, key=lambda r: index[id(r)])
    return alt.Scale(domain=[r.label for r in shown], range=[palette[index[id(r)] % len(palette)] for r in shown])


def curve_panels(cmp: Comparison) -> list[str]:
    """History quantities drawn as curves: loss, val_loss, and the monitor (or the objective)."""
    wanted = ["loss", "val_loss"]
    monitors = list(dict.fromkeys(r.monitor for r in cmp.runs if r.monitor))
    wanted += monitors
    if cmp.objective:
        split, base = metric_split(cmp.objective)
        wanted.append(base if split == "train" else cmp.objective)
    wanted = list(dict.fromkeys(wanted))
    return [q for q in wanted if any(num(h.get(q)) is not None for r in cmp.runs for h in r.history)]


def learning_curves(cmp: Comparison):
    """Every run's learning curves overlaid, one panel per main quantity."""
    import altair as alt

    runs = [r for r in cmp.runs if r.history]
    if not runs:
        raise ChartSkip("no run has a training history (metrics.jsonl)")
    panels_q = curve_panels(cmp)
    if not panels_q:
        raise ChartSkip("the histories have no loss values")
    per_run = max(2, MAX_ROWS // (len(runs) * len(panels_q)))
    epochs = sorted({float(h["epoch"]) for r in runs for h in r.history})
    # Few epochs: one tick each (Vega would put ticks at halves, labelled "1, 2, 2, 3, 3").
    x_axis = (alt.Axis(values=epochs, format="~d") if len(epochs) <= 12
              else alt.Axis(tickMinStep=1, format="~d"))
    pick = alt.selection_point(name="pick", fields=["run"], bind="legend")
    hover = alt.selection_point(name="hover", fields=["run", "epoch"], nearest=True, on="pointerover",
                                empty=False, clear="pointerout")
    color = alt.Color("run:N", title="run", scale=run_colors(cmp, runs),
                      # every run in the legend (Vega drops entries after 30 by default)
                      legend=alt.Legend(labelLimit=320, symbolType="stroke", symbolStrokeWidth=3,
                                        orient="right", symbolLimit=len(runs)))
    data = DataSets()
    panels, sampled = [], False
    for n, q in enumerate(panels_q):
        rows = []
        for r in runs:
            hist = [h for h in r.history if num(h.get(q)) is not None]
            idx = even_indices(len(hist), per_run)
            sampled |= len(idx) < len(hist)
            overrides = " ".join(r.overrides) or "(none)"
            rows += [{"run": r.label, "epoch": float(hist[i]["epoch"]), "value": num(hist[i][q]),
                      "overrides": overrides} for i in idx]
        if not rows:
            continue
        values = [x["value"] for x in rows]
        # Log scale for a loss that spans more than two decades (a diverging run), else linear.
        log = min(values) > 0 and max(values) / min(values) > 100
        scale = alt.Scale(type="log", nice=False, padding=4) if log else alt.Scale(zero=False)
        base = alt.Chart().encode(
            x=alt.X("epoch:Q", title="epoch", axis=x_axis, scale=alt.Scale(zero=False, nice=False)),
            y=alt.Y("value:Q", title=None, scale=scale,
                    axis=alt.Axis(format="~g", labelFlush=True, labelOverlap="greedy")),
            color=color)
        line = base.mark_line(strokeWidth=2).encode(
            opacity=alt.condition(pick, alt.value(0.9), alt.value(0.08)))
        points = base.mark_circle(size=45).encode(
            opacity=alt.condition(hover, alt.value(1), alt.value(0)),
            tooltip=[alt.Tooltip("run:N"), alt.Tooltip("overrides:N"), alt.Tooltip("epoch:Q", format="~g"),
                     alt.Tooltip("value:Q", title=q, format=".4~g")],
        ).add_params(pick, hover, alt.selection_interval(name=f"zoom_{n}", bind="scales"))
        panels.append(alt.layer(line, points, data=data(f"curves_{n}", rows)).properties(
            width=300, height=200, title=q + (" (log scale)" if log else "")))
    notes = ["click a legend entry to isolate a run (shift-click for more); hover for values; drag to pan, scroll to zoom"]
    if sampled:
        notes.append("long histories shown at evenly spaced epochs")
    # A concat even for one panel: the panel keeps its own title under the chart's.
    chart = alt.concat(*panels, columns=3)
    return data.attach(chart.properties(title=alt.TitleParams("Learning curves", subtitle=notes)))


def _fmt_tick(f: float) -> str:
    return f"{f:.3g}"


def metric_by_param(cmp: Comparison):
    """The final objective against each swept value: one small panel per swept key."""
    import altair as alt

    if not cmp.objective:
        raise ChartSkip("the runs share no final metric")
    if not cmp.params:
        raise ChartSkip("no swept values: every run has the same overrides")
    runs = cmp.ranked
    if not runs:
        raise ChartSkip(f"no completed run has a final {cmp.objective}")
    color = alt.Color("run:N", scale=run_colors(cmp, runs), legend=None)
    tooltip = [alt.Tooltip("run:N"), alt.Tooltip("value:N", title="value"),
               alt.Tooltip("metric:Q", title=cmp.objective, format=".4~g"), alt.Tooltip("overrides:N")]
    y = alt.Y("metric:Q", title=cmp.objective, scale=alt.Scale(zero=False),
              axis=alt.Axis(format="~g", labelOverlap="greedy"))
    mean = alt.Y("mean(metric):Q", scale=alt.Scale(zero=False))
    data = DataSets()
    panels = []
    for n, p in enumerate(cmp.params):
        rows = []
        for r in runs:
            row = {"run": r.label, "value": p.text(r.id), "metric": cmp.value(r),
                   "overrides": " ".join(r.overrides) or "(none)"}
            if p.numeric:
                row["x"] = parse_number(p.values.get(r.id))
                if row["x"] is None:
                    continue
            rows.append(row)
        if not rows:
            continue
        if p.numeric:
            xs = sorted({row["x"] for row in rows})
            x = alt.X("x:Q", title=p.key,
                      scale=alt.Scale(type="log", nice=False, padding=12) if p.log else alt.Scale(zero=False, padding=12),
                      # A tick per value of a small grid (not for sampled values: 0.0213829...).
                      # labelExpr, not format: Vega fits an axis format's precision to the tick
                      # step, so 16 and 64 would read "2e+1", "6e+1".
                      axis=alt.Axis(values=xs, labelExpr="format(datum.value, '~g')", labelOverlap="greedy")
                      if len(xs) <= 6 and all(len(p.text(r.id)) <= 8 for r in runs)
                      else alt.Axis(format="~g", labelOverlap="greedy"))
            base = alt.Chart().encode(x=x)
            layers = [base.mark_line(color="#999", strokeWidth=1.5).encode(y=mean),
                      base.mark_circle(size=80, opacity=0.85).encode(y=y, color=color, tooltip=tooltip)]
        else:
            x = alt.X("value:N", title=p.key, sort=p.categories,
                      scale=alt.Scale(domain=[c for c in p.categories if any(r["value"] == c for r in rows)]),
                      axis=alt.Axis(labelAngle=0, labelLimit=120))
            base = alt.Chart().encode(x=x)
            layers = [base.mark_tick(color="#999", thickness=2, size=26).encode(y=mean),
                      base.mark_circle(size=80, opacity=0.85).encode(y=y, color=color, tooltip=tooltip)]
        panels.append(alt.layer(*layers, data=data(f"param_{n}", rows)).properties(
            width=220, height=170, title=p.label + (" (log axis)" if p.log else "")))
    if not panels:
        raise ChartSkip("no completed run set a swept key")
    direction = "lower is better" if cmp.lower else "higher is better"
    chart = alt.concat(*panels, columns=3)
    return data.attach(chart.properties(title=alt.TitleParams(
        f"Final {cmp.objective} by swept value",
        subtitle=[f"{direction}; one point per run, grey: the mean per value"])))


def parallel_axes(cmp: Comparison) -> list[tuple[str, str, Any]]:
    """(field, axis label, kind) per axis: swept keys, then final metrics with the objective last."""
    axes = [(f"a{i}", p.label, p) for i, p in enumerate(cmp.params)]
    others = [m for m in cmp.metrics if m != cmp.objective and metric_split(m)[0] in ("val", "test")][:3]
    for m in others + ([cmp.objective] if cmp.objective else []):
        axes.append((f"a{len(axes)}", m, m))
    return axes


def parallel_coordinates(cmp: Comparison):
    """Every completed run as a line across its swept values and final metrics, each axis scaled
    to its own range (Vega-Lite fold + joinaggregate), coloured by the objective."""
    import altair as alt

    runs = cmp.ranked
    if not cmp.objective or not runs:
        raise ChartSkip("no completed run has a final metric every run shares")
    axes = parallel_axes(cmp)
    if len(axes) < 2:
        raise ChartSkip("one axis only: no swept values and a single shared metric")
    rows, ticks = [], []
    for r in runs:
        row = {"run": r.label, "objective": cmp.value(r)}
        for i, (f, label, kind) in enumerate(axes):
            if isinstance(kind, Param):
                row[f] = kind.position(r.id)
                row[f"r{i}"] = kind.text(r.id)
            else:
                row[f] = cmp.value(r, kind)
                row[f"r{i}"] = "–" if row[f] is None else f"{row[f]:.4g}"
        rows.append(row)
    # Tick labels: the same normalisation as the transform below, computed here for the labels.
    for i, (f, label, kind) in enumerate(axes):
        vals = [row[f] for row in rows if row[f] is not None]
        if not vals:
            continue
        lo, hi = min(vals), max(vals)

        def norm(v):
            return 0.5 if hi == lo else (v - lo) / (hi - lo)

        if isinstance(kind, Param) and not kind.numeric:
            for j, c in enumerate(kind.categories):
                if lo <= j <= hi:
                    ticks.append({"label": label, "norm": norm(float(j)), "text": c})
        else:
            shown = (lambda v: _fmt_tick(10 ** v)) if isinstance(kind, Param) and kind.log else _fmt_tick
            ticks += [{"label": label, "norm": norm(lo), "text": shown(lo)}]
            if hi != lo:
                ticks.append({"label": label, "norm": norm(hi), "text": shown(hi)})
    order = [label for _, label, _ in axes]
    data = DataSets()
    fields = [f for f, _, _ in axes]
    x = alt.X("label:N", sort=order, title=None,
              axis=alt.Axis(orient="top", labelAngle=0, labelLimit=140, domain=False, ticks=False,
                            labelFontWeight="bold", offset=20),
              scale=alt.Scale(domain=order, padding=0.3))
    y = alt.Y("norm:Q", axis=None, scale=alt.Scale(domain=[0, 1], nice=False))
    # Dark for the best runs; the light yellow end is cut (unreadable on white).
    color_scale = alt.Scale(scheme=alt.SchemeParams("plasma", extent=[0, 0.85]), reverse=not cmp.lower)
    color = alt.Color("objective:Q", title=cmp.objective, scale=color_scale,
                      legend=alt.Legend(format="~g", orient="right", type="gradient"))
    hover = alt.selection_point(name="hover_run", fields=["run"], on="pointerover", clear="pointerout",
                                empty=False)
    tooltip = [alt.Tooltip("run:N")] + [
        alt.Tooltip(f"r{i}:N", title=kind.key if isinstance(kind, Param) else label)
        for i, (_, label, kind) in enumerate(axes)]
    labels = [{"field": f, "label": label} for f, label, _ in axes]
    base = alt.Chart(data("runs", rows)).transform_fold(fields, as_=["field", "position"]).transform_lookup(
        lookup="field", from_=alt.LookupData(data=data("axes", labels), key="field", fields=["label"]),
    ).transform_joinaggregate(lo="min(position)", hi="max(position)", groupby=["field"]).transform_calculate(
        norm="!isValid(datum.position) ? null : datum.hi === datum.lo ? 0.5 "
             ": (datum.position - datum.lo) / (datum.hi - datum.lo)",
    ).encode(x=x, y=y)
    lines = base.mark_line(strokeWidth=2).encode(
        color=color, detail="run:N",
        opacity=alt.condition(hover, alt.value(1), alt.value(0.75)),
        size=alt.condition(hover, alt.value(4), alt.value(2)))
    # Grey points: coloured ones would add a fill scale to the legend, which Vega then draws as
    # symbols instead of a gradient.
    points = base.mark_circle(size=40, color="#555").encode(opacity=alt.value(0.85), tooltip=tooltip).add_params(hover)
    rules = alt.Chart(data("rules", [{"label": lb} for lb in order])).mark_rule(color="#bbb").encode(x=x)
    # Range labels above the top end of an axis, below its bottom end, beside it in between (so
    # that they do not sit on the lines); the axis names stand above them all.
    tick_base = alt.Chart(data("ticks", ticks)).encode(x=x, y=y, text="text:N")
    tick_text = alt.layer(
        tick_base.transform_filter("datum.norm >= 0.99").mark_text(baseline="bottom", dy=-6, fontSize=10, color="#444"),
        tick_base.transform_filter("datum.norm <= 0.01").mark_text(baseline="top", dy=6, fontSize=10, color="#444"),
        tick_base.transform_filter("datum.norm > 0.01 && datum.norm < 0.99").mark_text(
            align="left", dx=6, fontSize=10, color="#444"))
    width = max(360, 130 * len(axes))
    notes = [f"one line per completed run; each axis spans its own range; colour: {cmp.objective} "
             f"({'lower' if cmp.lower else 'higher'} is better)"]
    if any(isinstance(k, Param) and k.log for _, _, k in axes):
        notes.append("swept values that span decades are placed on a log scale")
    return data.attach(alt.layer(rules, lines, points, tick_text).properties(
        width=width, height=260, title=alt.TitleParams("Parallel coordinates", subtitle=notes)))


CHARTS = (("learning_curves", "Learning curves", learning_curves),
          ("metric_by_param", "Final metric by swept value", metric_by_param),
          ("parallel_coordinates", "Parallel coordinates", parallel_coordinates))


def chart_specs(cmp: Comparison) -> list:
    """Every chart of the report as render.Rendered (spec, or the one-line reason it is missing)."""
    from compilers.charts.render import Rendered, spec_title, to_spec

    out = []
    for name, fallback, build in CHARTS:
        r = Rendered(kind=name, name=name, section="Sweep", title=fallback)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # Panels share one legend pick and one hover on purpose; Altair merges the copies.
                warnings.filterwarnings("ignore", message="Automatically deduplicated selection")
                r.spec = to_spec(build(cmp))
            r.title = spec_title(r.spec, fallback)
        except ChartSkip as e:
            r.skipped = str(e)
        except Exception as e:  # a chart must never break the report
            r.skipped = f"failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        r.seconds = time.perf_counter() - t0
        out.append(r)
    return out


# --- parameter importance ------------------------------------------------------------------------

@dataclass
class Importance:
    rows: list[dict]       # {"key", "label", "importance" (or None), "correlation" (or None), "n"}
    n: int                 # completed runs with the objective
    notes: list[str]


def design_matrix(cmp: Comparison, runs: list[Run], params: list[Param]):
    """(X, column -> param index): numeric keys as their axis position (missing: the column mean),
    categorical keys one-hot."""
    import numpy as np

    cols, owner = [], []
    for j, p in enumerate(params):
        if p.numeric:
            v = np.array([np.nan if p.position(r.id) is None else p.position(r.id) for r in runs], dtype=float)
            v[np.isnan(v)] = np.nanmean(v) if np.isfinite(v).any() else 0.0
            cols.append(v)
            owner.append(j)
        else:
            texts = [p.text(r.id) for r in runs]
            for c in p.categories:
                cols.append(np.array([1.0 if t == c else 0.0 for t in texts]))
                owner.append(j)
    return np.stack(cols, axis=1), owner


def categories_in(p: Param, runs: list[Run]) -> list[str]:
    return [c for c in p.categories if any(p.text(r.id) == c for r in runs)]


def correlation(p: Param, runs: list[Run], y) -> float | None:
    """Pearson correlation of a swept value with the metric: numeric keys by their axis position
    (log10 on a log axis), a two-valued categorical key by whether it takes its second value."""
    import numpy as np

    if p.numeric:
        pairs = [(p.position(r.id), v) for r, v in zip(runs, y) if p.position(r.id) is not None]
    else:
        cats = categories_in(p, runs)
        if len(cats) != 2:
            return None
        pairs = [(1.0 if p.text(r.id) == cats[1] else 0.0, v) for r, v in zip(runs, y)]
    if len(pairs) < MIN_CORRELATION_RUNS:
        return None
    a = np.array(pairs, dtype=float)
    if np.std(a[:, 0]) == 0 or np.std(a[:, 1]) == 0:
        return None
    return float(np.corrcoef(a[:, 0], a[:, 1])[0, 1])


def importance(cmp: Comparison) -> Importance:
    """W&B's sweep view: a random forest (scikit-learn) predicts the objective from the swept
    values; each key's importance is its share of the forest's impurity decrease (one-hot columns
    of a categorical key summed). Beside it, each key's correlation with the objective."""
    import numpy as np

    runs = cmp.ranked
    notes: list[str] = []
    if not cmp.objective:
        return Importance([], 0, ["the runs share no final metric"])
    if not cmp.params:
        return Importance([], len(runs), ["no swept values: every run has the same overrides"])
    params = [p for p in cmp.params if len({p.text(r.id) for r in runs}) > 1]
    dropped = [p.label for p in cmp.params if p not in params]
    if dropped:
        notes.append(f"the same in every completed run, left out: {', '.join(dropped)}")
    y = np.array([cmp.value(r) for r in runs], dtype=float)
    rows = [{"key": p.key, "label": p.label, "importance": None, "correlation": correlation(p, runs, y),
             "how": "log10" if p.log else "" if p.numeric else (
                 " vs ".join(categories_in(p, runs)[::-1]) if len(categories_in(p, runs)) == 2 else "categorical")}
            for p in params]
    if not params:
        return Importance([], len(runs), notes or ["no swept key takes two values among the completed runs"])
    if len(runs) < MIN_IMPORTANCE_RUNS:
        notes.insert(0, f"too few runs for parameter importance: {len(runs)} completed run"
                        f"{'s' * (len(runs) != 1)} with a final {cmp.objective}, at least {MIN_IMPORTANCE_RUNS} needed")
        if len(runs) < MIN_CORRELATION_RUNS:
            notes.append(f"correlations need at least {MIN_CORRELATION_RUNS} runs")
    elif np.std(y) == 0:
        notes.insert(0, f"{cmp.objective} is the same in every run: nothing to explain")
    else:
        from sklearn.ensemble import RandomForestRegressor

        X, owner = design_matrix(cmp, runs, params)
        forest = RandomForestRegressor(**FOREST).fit(X, y)
        shares = np.zeros(len(params))
        for col, j in enumerate(owner):
            shares[j] += forest.feature_importances_[col]
        for row, s in zip(rows, shares):
            row["importance"] = float(s)
        rows.sort(key=lambda r: -r["importance"])
    return Importance(rows, len(runs), notes)


# --- the page ------------------------------------------------------------------------------------

SWEEP_CSS = """
.wrap{overflow-x:auto;background:#fff;border:1px solid #e3e3e3;border-radius:6px}
table.runs{border-collapse:collapse;font-size:13px;width:100%}
table.runs th,table.runs td{padding:4px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top;white-space:nowrap}
table.runs thead th{color:#555;font-weight:600;background:#f6f6f6;position:sticky;top:0}
table.runs td.num{text-align:right;font-variant-numeric:tabular-nums}
table.runs td.obj{font-weight:600}
table.runs tr.best td{background:#f2f8ee}
table.runs tr.failed td{background:#fdf3f2}
table.runs td.ov{font-family:ui-monospace,monospace;font-size:12px;color:#444}
table.runs td.err{white-space:normal;color:#b00;min-width:260px}
.status-completed{color:#2a7a2a}.status-failed{color:#b00}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:baseline}
table.imp{border-collapse:collapse;font-size:13px;background:#fff;border:1px solid #e3e3e3}
table.imp th,table.imp td{padding:5px 12px;border-bottom:1px solid #eee;text-align:left}
table.imp thead th{color:#555;background:#f6f6f6}
.bar{position:relative;width:180px;height:14px;background:#f1f1f1;border-radius:2px;display:inline-block;vertical-align:middle;margin-right:8px}
.bar span{position:absolute;top:0;bottom:0;border-radius:2px}
.bar .imp{left:0;background:#4c78a8}
.bar .pos{left:50%;background:#54a24b}.bar .neg{right:50%;background:#e45756}
.bar .mid{left:50%;width:1px;background:#999}
.note{font-size:13px;color:#666;margin:8px 0}
ul.failed{font-size:13px;padding-left:18px}ul.failed li{margin:4px 0;overflow-wrap:anywhere}
ul.failed .err{color:#b00}
code{font-size:12px}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _href(run: Run, out_dir: Path) -> str | None:
    """A relative link from the report's folder to the run's own report.html, if it has one."""
    if run.path is None or not (run.path / "report.html").is_file():
        return None
    target = Path(os.path.abspath(run.path / "report.html"))
    try:
        rel = os.path.relpath(target, os.path.abspath(out_dir))
    except ValueError:   # another drive: an absolute file URL
        return target.as_uri()
    return Path(rel).as_posix()


def _palette(n: int) -> list[str]:
    t10 = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6",
           "#9d755d", "#bab0ac"]
    t20 = ["#4c78a8", "#9ecae9", "#f58518", "#ffbf79", "#54a24b", "#88d27a", "#b79a20", "#f2cf5b",
           "#439894", "#83bcb6", "#e45756", "#ff9d98", "#79706e", "#bab0ac", "#d67195", "#fcbfd2",
           "#b279a2", "#d6a5c9", "#9e765f", "#d8b5a5"]
    return t10 if n <= 10 else t20


def runs_table(cmp: Comparison, out_dir: Path) -> str:
    from compilers.charts.report import e

    colors = _palette(len(cmp.runs))
    # The objective, then validation and test metrics (training metrics only when ranked by one).
    metric_cols = ([cmp.objective] if cmp.objective else []) + [
        m for m in cmp.metrics if m != cmp.objective and (metric_split(m)[0] != "train" or not any(
            metric_split(x)[0] in ("val", "test") for x in cmp.metrics))]
    head = ["#", "run", "status"] + [p.label for p in cmp.params] + metric_cols + [
        "best epoch", "time", "other overrides" if cmp.fixed else "overrides"]
    titles = {p.label: p.key for p in cmp.params}
    if cmp.objective:
        titles[cmp.objective] = f"ranked by {cmp.objective}, {'lower' if cmp.lower else 'higher'} is better"
    ths = "".join(f'<th title="{e(titles[h])}">{e(h)}{" ↑" if h == cmp.objective and cmp.lower else " ↓" if h == cmp.objective else ""}</th>'
                  if h in titles else f"<th>{e(h)}</th>" for h in head)
    ranked = set(id(r) for r in cmp.ranked)
    body, rank = [], 0
    for i, r in enumerate(cmp.runs):
        is_ranked = id(r) in ranked
        rank += is_ranked
        classes = ["failed"] if not r.ok else (["best"] if is_ranked and rank == 1 else [])
        href = _href(r, out_dir)
        swatch = f'<span class="swatch" style="background:{colors[i % len(colors)]}"></span>'
        name = f'<a href="{e(href)}">{e(r.id)}</a>' if href else e(r.id)
        if r.name and r.name != r.id and len({x.name for x in cmp.runs if x.name}) > 1:
            name += f' <span class="note">{e(r.name)}</span>'
        cells = [f'<td class="num">{rank if is_ranked else "–"}</td>', f"<td>{swatch}{name}</td>",
                 f'<td class="status-{e(r.status)}">{e(r.status)}</td>']
        cells += [f'<td title="{e(p.text(r.id))}">{e(p.short(r.id))}</td>' for p in cmp.params]
        if r.error and not r.metrics:
            cells.append(f'<td class="err" colspan="{len(metric_cols) + 2}">{e(r.error)}</td>')
        else:
            cells += [f'<td class="num{" obj" if m == cmp.objective else ""}">{e(_fmt(r.metrics.get(m)))}</td>'
                      for m in metric_cols]
            cells += [f'<td class="num">{e(_fmt(r.best_epoch))}</td>',
                      f'<td class="num">{e(_fmt_seconds(r.seconds))}</td>']
        # The overrides every run shares are in the header; the full line is the cell's tooltip.
        own = [o for o in r.overrides if split_override(o)[0] not in cmp.fixed]
        cells.append(f'<td class="ov" title="{e(" ".join(r.overrides))}">{e(" ".join(own) or "(none)")}</td>')
        body.append(f'<tr class="{" ".join(classes)}" data-run="{e(r.id)}">{"".join(cells)}</tr>')
    return (f'<div class="wrap"><table class="runs"><thead><tr>{ths}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def importance_table(imp: Importance, objective: str | None) -> str:
    from compilers.charts.report import e

    notes = "".join(f'<p class="note">{e(n)}</p>' for n in imp.notes)
    if not imp.rows:
        return notes
    body = []
    for row in imp.rows:
        i, c = row["importance"], row["correlation"]
        imp_cell = ("–" if i is None else
                    f'<span class="bar"><span class="imp" style="width:{100 * i:.1f}%"></span></span>{i:.3f}')
        if c is None:
            corr_cell = "–"
        else:
            side = "pos" if c >= 0 else "neg"
            corr_cell = (f'<span class="bar"><span class="mid"></span><span class="{side}" '
                         f'style="width:{50 * abs(c):.1f}%"></span></span>{c:+.3f}')
        how = f' <span class="note">({e(row["how"])})</span>' if row["how"] else ""
        body.append(f'<tr><td title="{e(row["key"])}"><code>{e(row["key"])}</code>{how}</td>'
                    f'<td>{imp_cell}</td><td>{corr_cell}</td></tr>')
    explain = (f'<p class="note">Importance: the share of a random forest\'s (scikit-learn, '
               f'{FOREST["n_estimators"]} trees) impurity decrease that each swept key accounts for when '
               f'predicting the final {e(objective)} from the swept values over {imp.n} completed runs. '
               f'Correlation: Pearson\'s r between the value (log10 of it on a log axis; for a key with two '
               f'values "b vs a": 1 for b, 0 for a) and {e(objective)}.</p>')
    return (f'{notes}<table class="imp"><thead><tr><th>swept key</th><th>importance</th><th>correlation with '
            f'{e(objective)}</th></tr></thead><tbody>{"".join(body)}</tbody></table>{explain}')


def failed_list(cmp: Comparison) -> str:
    from compilers.charts.report import e

    items = []
    for r in cmp.failed:
        where = f"job {r.job}" if r.job is not None else r.id
        items.append(f'<li data-run="{e(r.id)}"><b>{e(where)}</b> <code>{e(" ".join(r.overrides) or "(no overrides)")}'
                     f'</code>: <span class="err">{e(r.error or r.status)}</span></li>')
    return f'<ul class="failed">{"".join(items)}</ul>'


def _facts(cmp: Comparison, sources: list[Path]) -> str:
    from compilers.charts.report import e

    done = sum(1 for r in cmp.runs if r.ok)
    failed = len(cmp.runs) - done
    items = [("from", ", ".join(str(s) for s in sources)),
             ("runs", f"{done} completed" + (f", {failed} failed" if failed else ""))]
    if cmp.objective:
        items.append(("ranked by", f"{cmp.objective} ({'lower' if cmp.lower else 'higher'} is better)"))
        if cmp.ranked:
            best = cmp.ranked[0]
            items.append(("best", f"{best.label}: {cmp.objective} {_fmt(cmp.value(best))}"))
    if cmp.params:
        items.append(("swept", ", ".join(p.key for p in cmp.params)))
    if cmp.fixed:
        items.append(("the same in every run", " ".join(f"{k}={v}" for k, v in cmp.fixed.items())))
    total = sum(r.seconds or 0.0 for r in cmp.runs)
    if total:
        items.append(("time", f"{_fmt_seconds(total)} over all runs"))
    return "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items)


def comparison_parts(cmp: Comparison, out_dir: Path, sources: list[Path]) -> tuple[str, str, str, list[dict]]:
    """(title, header, main, calls) of the comparison page for report.py's page_html/write_page;
    links to the runs' own reports are relative to `out_dir`, the folder the page is served from."""
    from compilers.charts.report import e, figure, slug

    rendered = chart_specs(cmp)
    by_name = {r.name: r for r in rendered}
    imp = importance(cmp)
    sections: list[tuple[str, str]] = [("Runs", runs_table(cmp, out_dir))]
    calls = []
    for name, heading in (("learning_curves", "Learning curves"), ("metric_by_param", "Final metric by swept value"),
                          ("parallel_coordinates", "Parallel coordinates")):
        r = by_name[name]
        if r.spec is not None:
            sections.append((heading, f'<div class="charts">{figure(r)}</div>'))
            calls.append({"id": f"chart-{r.name}", "name": r.name, "spec": r.spec})
        else:
            sections.append((heading, f'<p class="note" id="chart-{e(r.name)}">Not drawn: {e(r.skipped)}</p>'))
    sections.append(("Parameter importance", importance_table(imp, cmp.objective)))
    if cmp.failed:
        sections.append((f"Failed ({len(cmp.failed)})", failed_list(cmp)))
    toc, body = [], []
    for heading, content in sections:
        anchor = e("section-" + slug(heading.split(" (")[0]))
        toc.append(f'<li><a href="#{anchor}">{e(heading)}</a></li>')
        body.append(f'<section id="{anchor}"><h2>{e(heading)}<a class="top" href="#contents" '
                    f'title="Back to the contents">↑ contents</a></h2>{content}</section>')
    nav = f'<nav class="toc" id="contents" aria-label="Contents"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>'
    header = f"<h1>{e(cmp.title)}</h1>\n<dl>{_facts(cmp, sources)}</dl>\n{nav}"
    return cmp.title, header, "".join(body), calls


def write_comparison(cmp: Comparison, out: Path, sources: list[Path]) -> Path:
    """Writes the comparison page to `out` (folders made as needed) and returns its path."""
    from compilers.charts.report import write_page

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_page(out, *comparison_parts(cmp, out.parent, sources), css=SWEEP_CSS)
    return out


def write_sweep_report(paths: Iterable[Path | str], out: Path) -> Path:
    """Runs under `paths` -> the comparison page at `out`. ValueError when no run is found."""
    paths = [Path(p) for p in paths]
    runs = collect(paths)
    if not runs:
        raise ValueError(f"no runs found in {', '.join(map(str, paths))} (a run directory holds summary.json)")
    return write_comparison(compare(runs), out, paths)
