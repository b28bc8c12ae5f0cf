"""What every chart module shares: the skip signal, titles and sizes, sampling, and the config.

A chart is a value: a builder `(record: RunRecord, options) -> altair chart`, registered in
`dsl.registry.CHARTS` with meta `section` (one of SECTIONS), `tasks` (the tasks it applies to)
and `auto` (True: part of `plots: auto` for every task it applies to; a tuple of tasks: only
for those). Builders import altair inside their body so that `python -m dsl list` stays fast;
this module imports neither altair nor pandas at module level either.

Data goes into a chart as small lists of dicts, at most MAX_ROWS per chart by our own contract
(Altair's row guard does not see inline values), aggregated or sampled in NumPy first; a sampled
chart says so in its subtitle. Anything bigger than a few rows goes through `DataSets`: the rows
become the spec's top-level `datasets` and views refer to them by name, so Altair neither copies
nor schema-validates every row each time a chart is layered or concatenated (with 4000 points
inline, composing and `to_dict()` took ~1.5 s; by name, ~0.1 s).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

SECTIONS = ("Data", "Training", "Model", "Evaluation", "Interpretation")
MAX_ROWS = 5000
SCATTER_MAX = 4000   # points drawn in a scatter; more is a random sample (said in the subtitle)

# Applied to every spec at render time (builders do not call .configure: a configured chart
# cannot be concatenated or layered any more).
CONFIG: dict[str, Any] = {
    "view": {"stroke": None},
    "font": "sans-serif",
    "title": {"fontSize": 14, "subtitleFontSize": 11, "subtitleColor": "#555", "anchor": "start",
              "offset": 8},
    "axis": {"labelFontSize": 11, "titleFontSize": 12, "titleFontWeight": "normal",
             "gridColor": "#e8e8e8", "domainColor": "#888", "tickColor": "#888"},
    "header": {"labelFontSize": 12, "titleFontSize": 12},
    "legend": {"labelFontSize": 11, "titleFontSize": 12, "titleFontWeight": "normal"},
    "concat": {"spacing": 24},
}


class ChartSkip(Exception):
    """This chart cannot be drawn for this record; the message is one line saying why."""


class DataSets:
    """The named data sets of one chart: `data = DataSets(); alt.Chart(data("points", rows))`,
    then `return data.attach(chart)` on the top-level chart. Rows must be plain JSON values."""

    def __init__(self) -> None:
        self.sets: dict[str, list[dict]] = {}

    def __call__(self, name: str, values: list[dict]) -> Any:
        import altair as alt

        if name in self.sets:
            raise ValueError(f"data set {name!r} defined twice")
        self.sets[name] = values
        return alt.Data(name=name)

    def attach(self, chart: Any) -> Any:
        chart.datasets = dict(self.sets)
        return chart


# --- titles and sizes -----------------------------------------------------------------------

def title(options: Any, default: str, subtitle: str | Sequence[str] | None = None) -> Any:
    """The chart title: the user's `title` option, else `default`; with an optional subtitle."""
    import altair as alt

    text = options.title if getattr(options, "title", None) else default
    if subtitle:
        return alt.TitleParams(text=text, subtitle=subtitle)
    return alt.TitleParams(text=text)


def size(options: Any, width: int, height: int) -> tuple[int, int]:
    """(width, height) in pixels: the user's options where given, else the chart's defaults."""
    return (options.width or width, options.height or height)


def clamp(value: float, lo: float, hi: float) -> int:
    return int(max(lo, min(hi, value)))


# --- record access ---------------------------------------------------------------------------

def require_task(record: Any, task: str, kind: str) -> None:
    if record.task != task:
        raise ChartSkip(f"{kind} applies to {task}, and this run is {record.task}")


def split_predictions(record: Any, split: str, keys: Iterable[str] = ("y_true", "y_pred")) -> dict:
    """record.predictions[split] with the keys a chart needs, or ChartSkip saying what is missing."""
    pred = record.predictions.get(split)
    if not pred:
        have = ", ".join(sorted(record.predictions)) or "none"
        what = "validation" if split == "val" else split
        raise ChartSkip(f"no {what} predictions in this run (splits with predictions: {have})")
    missing = [k for k in keys if k not in pred]
    if missing:
        raise ChartSkip(f"the {split} predictions lack {', '.join(missing)}")
    out = {k: np.asarray(pred[k]) for k in keys}
    if len(out[next(iter(keys))]) == 0:
        raise ChartSkip(f"the {split} split is empty")
    return out


def class_names(record: Any, n: int | None = None) -> list[str]:
    """Class labels by index; '0', '1', ... where the record has none (or too few)."""
    names = [str(c) for c in (record.class_names or [])]
    if n is not None and len(names) < n:
        names += [str(i) for i in range(len(names), n)]
    return names


# --- data helpers ----------------------------------------------------------------------------

def sample_indices(n: int, k: int, seed: int = 0) -> np.ndarray:
    """At most k sorted row indices out of n, drawn without replacement (all of them if n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def even_indices(n: int, k: int, keep: Iterable[int] = ()) -> np.ndarray:
    """At most about k evenly spaced indices out of n, always with the first, the last and `keep`."""
    if n <= k:
        return np.arange(n)
    idx = set(np.linspace(0, n - 1, k).round().astype(int).tolist())
    idx.update(i for i in keep if 0 <= i < n)
    return np.array(sorted(idx))


def num(value: Any) -> float | None:
    """A JSON-safe float: None for NaN/inf/non-numbers (Vega treats null as missing)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def point_style(n: int) -> dict:
    """Mark size and opacity for a scatter of n points: smaller and lighter as they crowd."""
    return {"size": clamp(1200 / max(n, 1) ** 0.5, 8, 60), "opacity": round(max(0.35, min(0.75, 20 / max(n, 1) ** 0.5)), 2)}


def fmt_int(n: int) -> str:
    return f"{int(n):,}"


def tick_values(n: int, most: int = 16) -> list[int]:
    """Which of n ordinal positions 0..n-1 get an axis label, so that labels never overlap."""
    if n <= most:
        return list(range(n))
    need = n / most
    # A round step (2, 5, 10, 20, 50, ...) reads better than 7 or 13.
    step = next(s for p in range(12) for s in (1 * 10 ** p, 2 * 10 ** p, 5 * 10 ** p) if s >= need)
    return list(range(0, n, step))


# --- layers ----------------------------------------------------------------------------------

def index_key(index: str) -> tuple:
    """Sort key of a layer index: '2' < '2.1' < '10'."""
    return tuple(int(p) if p.isdigit() else 0 for p in str(index).split("."))


def layer_label(record: Any, index: str) -> str:
    """'0 dense (relu)', '4 head': a layer's index and kind as `validate` prints them."""
    info = next((r for r in record.layers if str(r.get("index")) == str(index)), None)
    if not info:
        return f"layer {index}"
    if info.get("path") == "model.head":
        return f"{index} head"
    kind = str(info.get("kind", "layer"))
    act = info.get("activation")
    return f"{index} {kind}" + (f" ({act})" if act and act != kind else "")


def history_epochs(record: Any, n: int) -> list[float]:
    """Epoch numbers of n per-epoch values: the history's own where it has n epochs, else 1..n."""
    epochs = [num(h.get("epoch")) for h in record.history]
    if len(epochs) == n and all(e is not None for e in epochs):
        return [float(e) for e in epochs]
    return [float(e) for e in range(1, n + 1)]


def pick_layers(have: list[str], asked, what: str, most: int) -> tuple[list[str], list[str]]:
    """The layer indices a per-layer chart draws: those asked for (ChartSkip naming what was
    recorded when one is missing), else the first `most` recorded; and the subtitle notes."""
    if asked:
        missing = [k for k in asked if str(k) not in have]
        if missing:
            raise ChartSkip(f"no {what} recorded for layer {missing[0]}; recorded: {', '.join(have)}")
        return [str(k) for k in asked], []
    notes = [f"the first {most} of {len(have)} layers shown (option layers)"] if len(have) > most else []
    return have[:most], notes
