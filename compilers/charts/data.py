"""Data charts: feature histograms, correlation, a scatter matrix, class balance, the target.

Every chart reads `record.data_sample` (tables only; see compilers/runs/record.py): the raw table
as loaded (`stage: raw`: every split, before data.prep) or the prepared training rows
(`stage: prepared`, the default: what the model is trained on, after data.prep), at most 2000
rows sampled evenly by the trainer. Each chart says in its subtitle which stage it shows and
how many rows. Runs on images or token sequences have no sample, and these charts skip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from compilers.charts.base import (MAX_ROWS, ChartSkip, DataSets, clamp, class_names, fmt_int,
                                   point_style, sample_indices, size, title)
from dsl.registry import CHARTS, opt
from dsl.spec import ChartOptions

BOTH = ("classification", "regression")
STAGE_DOC = ("which data: prepared (training rows after data.prep, what the model sees) or raw "
             "(the table as loaded, every split)")
BAR = "#4c78a8"


# --- the sample --------------------------------------------------------------------------------

@dataclass
class Table:
    """The data sample of one stage, as the data charts read it."""
    stage: str
    features: dict[str, np.ndarray]     # numeric feature columns (float, NaN = missing)
    text: list[str]                     # non-numeric feature columns (left out of the charts)
    target: np.ndarray | None           # regression: float; classification: class label (str, "" = missing)
    target_name: str
    classes: list[str]                  # classification: labels in class order
    n: int                              # rows in the sample
    total: int | None                   # rows the sample was drawn from, where known

    @property
    def what(self) -> str:
        """'prepared training rows (after data.prep): 2,000 of 10,000, sampled evenly'."""
        head = ("prepared data: training rows after data.prep" if self.stage == "prepared"
                else "raw data: the table as loaded, every split, before data.prep")
        if self.total and self.total > self.n:
            return f"{head}; {fmt_int(self.n)} of {fmt_int(self.total)} rows, sampled evenly"
        return f"{head}; {fmt_int(self.n)} rows"

    def labels(self) -> np.ndarray:
        """Classification: the class label of every row ("" when missing)."""
        return self.target if self.target is not None else np.full(self.n, "", dtype=object)


def _label_text(v) -> str:
    """A raw target value as the loader names classes: whole floats without '.0'; '' for missing."""
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return ""
        return str(int(v)) if float(v).is_integer() and abs(v) < 2 ** 53 else str(float(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return "" if v is None else str(v)


def _numeric(a: np.ndarray) -> bool:
    return np.asarray(a).dtype.kind in "biuf"


def load_table(record, stage: str, chart: str) -> Table:
    """The data sample of `stage`, or ChartSkip saying why there is none."""
    sample = record.data_sample or {}
    if not sample:
        shape = (record.data or {}).get("input_shape")
        if shape is not None and len(shape) >= 2:
            raise ChartSkip(f"{chart} draws tables; this run's inputs are images or sequences "
                            f"(shape {tuple(shape)}), so it has no data sample")
        if record.vocabulary:
            raise ChartSkip(f"{chart} draws tables; this run's inputs are token sequences")
        raise ChartSkip("the run recorded no data sample (the data charts draw tabular data)")
    is_clf = record.task == "classification"
    data = record.data or {}
    if stage == "raw":
        raw = sample.get("raw") or {}
        if not raw:
            raise ChartSkip("the run recorded no raw data sample; try stage: prepared")
        target_name = str(data.get("target") or "")
        cols = {str(k): np.asarray(v) for k, v in raw.items()}
        n = max((len(v) for v in cols.values()), default=0)
        target = None
        if target_name in cols:
            t = cols.pop(target_name)
            if is_clf:
                target = np.array([_label_text(v) for v in t.tolist()], dtype=object)
            elif _numeric(t):
                target = t.astype(float)
        features = {k: v.astype(float) for k, v in cols.items() if _numeric(v) and len(v) == n}
        text = [k for k, v in cols.items() if k not in features]
        total = None
        splits = data.get("splits") or {}
        if splits:
            total = int(sum(int(v or 0) for v in splits.values()))
        total = int(data.get("n_rows") or 0) or total
    else:
        prep = sample.get("prepared") or {}
        if not prep:
            raise ChartSkip("the run recorded no prepared data sample; try stage: raw")
        features = {str(k): np.asarray(v, dtype=float) for k, v in prep.items()}
        text = []
        n = max((len(v) for v in features.values()), default=0)
        y = (sample.get("prepared_target") or {}).get("y")
        target_name = str(data.get("target") or "target")
        target = None
        if y is not None and len(y) == n:
            y = np.asarray(y)
            if is_clf:
                idx = y.astype(int) if _numeric(y) else None
                if idx is not None:
                    names = class_names(record, int(idx.max(initial=-1)) + 1)
                    target = np.array([names[i] if i >= 0 else "" for i in idx], dtype=object)
                else:
                    target = np.array([_label_text(v) for v in y.tolist()], dtype=object)
            else:
                target = y.astype(float)
        total = int((data.get("splits") or {}).get("train") or 0) or None
    if n == 0:
        raise ChartSkip(f"the {stage} data sample is empty")
    classes: list[str] = []
    if is_clf and target is not None:
        present = {str(v) for v in target.tolist() if v != ""}
        known = [str(c) for c in (record.class_names or [])]
        classes = [c for c in known if c in present] + _natural_sorted(present - set(known))
    return Table(stage, features, text, target, target_name, classes, n, total)


def _natural_sorted(values) -> list[str]:
    import re

    return sorted(values, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])


def _pick_features(table: Table, wanted: Optional[tuple[str, ...]], chart: str) -> list[str]:
    """The numeric columns a chart draws: `features` (checked) or all of them, in order."""
    have = list(table.features)
    if wanted:
        missing = [f for f in wanted if f not in table.features]
        if missing:
            shown = ", ".join(have[:12]) + (", ..." if len(have) > 12 else "")
            extra = f" ({missing[0]} is not numeric)" if missing[0] in table.text else ""
            raise ChartSkip(f"no numeric column {missing[0]} in the {table.stage} data{extra}; "
                            f"it has {shown or 'none'}")
        return list(dict.fromkeys(wanted))
    if not have:
        raise ChartSkip(f"{chart}: the {table.stage} data has no numeric feature columns")
    return have


def _finite(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a)]


def _class_scale(classes: list[str]):
    import altair as alt

    return alt.Scale(domain=classes, scheme="tableau10" if len(classes) <= 10 else "tableau20")


def _tick_format(lo: float, hi: float):
    """The axis label format for values spanning lo..hi: SI units (12k) for large numbers, else
    Vega's default. (Not "~g": Vega sets its precision from the tick step, and 10 becomes "1e+1".)"""
    import altair as alt

    return "~s" if max(abs(lo), abs(hi)) >= 1e4 else alt.Undefined


# --- feature_histograms ------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureHistogramsOptions(ChartOptions):
    stage: Literal["raw", "prepared"] = opt("prepared", STAGE_DOC)
    features: Optional[tuple[str, ...]] = opt(None, "columns to show; default: every numeric feature (up to max_features)")
    max_features: int = opt(16, "most features shown (the first ones)", gt=0, le=64)
    bins: int = opt(20, "bins per histogram", gt=1, le=100)
    by_class: bool = opt(False, "classification: stack each bar by class")
    columns: int = opt(4, "panels per row", gt=0, le=12)


@CHARTS.register("feature_histograms", FeatureHistogramsOptions, section="Data", tasks=BOTH, auto=True,
                 inputs=("tabular",))
def feature_histograms(record, options: FeatureHistogramsOptions):
    """One small histogram per numeric feature, wrapped in rows; missing values counted in the header.

    `width` and `height` are per panel.
    """
    import altair as alt

    table = load_table(record, options.stage, "feature_histograms")
    names = _pick_features(table, options.features, "feature_histograms")
    notes = [table.what]
    empty = [f for f in names if not np.isfinite(table.features[f]).any()]
    names = [f for f in names if f not in empty]
    if not names:
        raise ChartSkip(f"every chosen column is empty (all values missing): {', '.join(empty[:5])}")
    if len(names) > options.max_features:
        notes.append(f"the first {options.max_features} of {len(names)} features shown (options max_features, features)")
        names = names[:options.max_features]
    if empty:
        notes.append(f"all values missing, not drawn: {', '.join(empty[:4])}" + (" ..." if len(empty) > 4 else ""))
    if table.text:
        notes.append(f"text columns not drawn: {', '.join(table.text[:4])}" + (" ..." if len(table.text) > 4 else ""))
    by_class = options.by_class and record.task == "classification" and bool(table.classes)
    groups = table.classes if by_class else [None]
    bins = max(2, min(options.bins, MAX_ROWS // max(1, len(names) * len(groups))))
    labels = table.labels() if by_class else None
    values, order = [], []
    for f in names:
        col = table.features[f]
        ok = np.isfinite(col)
        v = col[ok]
        lo, hi = float(v.min()), float(v.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        missing = int((~ok).sum())
        header = f + (f" ({missing} missing)" if missing else "")
        order.append(header)
        for g in groups:
            sel = v if g is None else col[ok & (labels == g)]
            counts, _ = np.histogram(sel, bins=edges)
            for b_, (a, b, c) in enumerate(zip(edges[:-1], edges[1:], counts)):
                if c == 0 and g is not None and (g != groups[0] or 0 < b_ < bins - 1):
                    continue   # stacked: empty pieces add nothing (the ends stay: they hold the x range)
                row = {"feature": header, "lo": float(a), "hi": float(b), "count": int(c),
                       "share": float(c) / len(v)}
                if g is not None:
                    row["class"] = g
                values.append(row)
    if bins < options.bins:
        notes.append(f"{bins} bins per feature (to stay within {fmt_int(MAX_ROWS)} data rows)")
    cols = min(options.columns, len(names))
    width, height = size(options, clamp(620 / cols - 20, 110, 200), 80)
    tooltip = [alt.Tooltip("feature:N"), alt.Tooltip("lo:Q", title="from", format=".4~g"),
               alt.Tooltip("hi:Q", title="to", format=".4~g"), alt.Tooltip("count:Q", title="rows"),
               alt.Tooltip("share:Q", title="share of the feature's values", format=".1%")]
    enc = {}
    if by_class:
        tooltip.insert(1, alt.Tooltip("class:N"))
        enc["color"] = alt.Color("class:N", title="class", scale=_class_scale(table.classes),
                                 legend=alt.Legend(columns=1 if len(table.classes) <= 16 else 2))
        enc["order"] = alt.Order("class:N")
    data = DataSets()
    chart = alt.Chart().mark_bar(color=BAR, binSpacing=0, stroke=None).encode(
        x=alt.X("lo:Q", bin="binned", title=None,
                axis=alt.Axis(tickCount=4, labelOverlap=True, labelFlush=True, labelFontSize=10)),
        x2="hi:Q",
        # labelFlush: a label at the very top would lift this panel's header above its neighbours'.
        y=alt.Y("count:Q", title=None, stack=True if by_class else None,
                axis=alt.Axis(tickCount=3, labelFontSize=10, labelFlush=True)),
        tooltip=tooltip, **enc,
    ).properties(width=width, height=height)
    faceted = chart.facet(
        facet=alt.Facet("feature:N", sort=order, title=None,
                        header=alt.Header(labelFontSize=11, labelLimit=width + 20, labelPadding=2)),
        columns=cols, data=data("bins", values), spacing={"row": 14, "column": 14},
    ).resolve_scale(x="independent", y="independent")
    notes.append("rows per bin (y) by the feature's value (x); each panel has its own scales")
    return data.attach(faceted.properties(title=title(
        options, f"Feature distributions ({options.stage})", notes)))


# --- correlation -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CorrelationOptions(ChartOptions):
    stage: Literal["raw", "prepared"] = opt("prepared", STAGE_DOC)
    features: Optional[tuple[str, ...]] = opt(None, "columns to correlate; default: every non-constant numeric feature")
    max_features: int = opt(30, "most features shown (the first ones)", gt=1, le=70)
    target: bool = opt(True, "include the target where it is a number (regression, or a two-class label as 0/1)")


def pearson_matrix(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r of every pair of columns over the rows where both are finite (pairwise), and the
    number of those rows. r is NaN where a column is constant over those rows or fewer than 2 rows."""
    k = len(columns)
    r = np.full((k, k), np.nan)
    n = np.zeros((k, k), dtype=int)
    x = np.stack(columns, axis=1).astype(float)
    ok = np.isfinite(x)
    if ok.all():
        n[:] = len(x)
        c = x - x.mean(0)
        s = np.sqrt((c ** 2).sum(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (c.T @ c) / np.outer(s, s)
        r[:, s == 0] = np.nan
        r[s == 0, :] = np.nan
        return np.clip(r, -1, 1), n
    for i in range(k):
        for j in range(i, k):
            m = ok[:, i] & ok[:, j]
            n[i, j] = n[j, i] = int(m.sum())
            if m.sum() < 2:
                continue
            a, b = x[m, i] - x[m, i].mean(), x[m, j] - x[m, j].mean()
            den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
            if den > 0:
                r[i, j] = r[j, i] = max(-1.0, min(1.0, float((a * b).sum()) / den))
    return r, n


@CHARTS.register("correlation", CorrelationOptions, section="Data", tasks=BOTH, auto=True, inputs=("tabular",))
def correlation(record, options: CorrelationOptions):
    """Pearson correlation of every pair of numeric features (and the target, where it is a number).

    Red is positive, blue negative; the value is written in each cell when there are few
    features, and always shown on hover with the number of rows it was computed from.
    """
    import altair as alt

    table = load_table(record, options.stage, "correlation")
    names = _pick_features(table, options.features, "correlation")
    notes = [table.what]
    cols = {f: table.features[f] for f in names}
    if not options.features:
        constant = [f for f, v in cols.items() if len(np.unique(_finite(v))) < 2]
        for f in constant:
            del cols[f]
        if constant:
            notes.append(f"{len(constant)} constant or empty column{'s' * (len(constant) != 1)} left out")
        if len(cols) > options.max_features:
            notes.append(f"the first {options.max_features} of {len(cols)} features shown (options max_features, features)")
            cols = dict(list(cols.items())[:options.max_features])
    target_label = None
    if options.target and table.target is not None:
        if record.task == "regression":
            target_label = "target" if table.target_name == "target" else f"{table.target_name} (target)"
            cols[target_label] = table.target.astype(float)
        elif len(table.classes) == 2:
            target_label = f"{table.target_name} (target: {table.classes[1]} = 1)"
            lab = table.labels()
            cols[target_label] = np.where(lab == table.classes[1], 1.0, np.where(lab == "", np.nan, 0.0))
    if len(cols) < 2:
        raise ChartSkip(f"correlation needs two numeric columns; the {table.stage} data has "
                        f"{len(cols)} that vary" + (f" ({', '.join(cols)})" if cols else ""))
    labels = list(cols)
    r, n = pearson_matrix([cols[c] for c in labels])
    k = len(labels)
    values = []
    for i in range(k):
        for j in range(k):
            values.append({"a": labels[i], "b": labels[j], "r": None if np.isnan(r[i, j]) else round(float(r[i, j]), 6),
                           "abs": None if np.isnan(r[i, j]) else abs(float(r[i, j])), "n": int(n[i, j])})
    off = r[~np.eye(k, dtype=bool)]
    off = off[np.isfinite(off)]
    if off.size:
        i, j = np.unravel_index(np.nanargmax(np.where(np.eye(k, dtype=bool), np.nan, np.abs(r))), r.shape)
        notes.append(f"strongest pair: {labels[i]} and {labels[j]}, r = {r[i, j]:.2f}")
    if target_label:
        notes.append("the target is the last row and column")
    longest = max(len(s) for s in labels)
    cell = clamp(440 / k, 12, 44)
    width, height = size(options, cell * k, cell * k)
    cell = min(width, height) / k
    data = DataSets()
    base = alt.Chart(data("cells", values)).encode(
        x=alt.X("b:N", sort=labels, title=None,
                axis=alt.Axis(labelAngle=0 if longest <= 3 or (k <= 4 and longest <= 10) else -45,
                              labelLimit=140, labelFontSize=11 if cell >= 14 else 9, orient="bottom")),
        y=alt.Y("a:N", sort=labels, title=None, axis=alt.Axis(labelLimit=160, labelFontSize=11 if cell >= 14 else 9)),
    )
    tooltip = [alt.Tooltip("a:N", title="row"), alt.Tooltip("b:N", title="column"),
               alt.Tooltip("r:Q", title="Pearson r", format=".3f"), alt.Tooltip("n:Q", title="rows used")]
    back = base.mark_rect(color="#eeeeee").encode(tooltip=tooltip)   # undefined r: grey, still hoverable
    cells = base.mark_rect(stroke="white", strokeWidth=0.5 if cell >= 10 else 0).encode(
        color=alt.Color("r:Q", title="r", scale=alt.Scale(scheme="redblue", reverse=True, domain=[-1, 1]),
                        legend=alt.Legend(gradientLength=clamp(height * 0.6, 80, 200), values=[-1, -0.5, 0, 0.5, 1],
                                          format=".1f")),
        tooltip=tooltip,
    ).transform_filter("datum.r != null")
    layers = [back, cells]
    if cell >= 24:
        layers.append(base.mark_text(fontSize=10 if cell < 34 else 11).encode(
            text=alt.Text("r:Q", format=".2f"),
            color=alt.condition("datum.abs > 0.6", alt.value("white"), alt.value("#222")),
            tooltip=tooltip,
        ).transform_filter("datum.r != null"))
    else:
        notes.append("hover a cell for its value")
    if np.isnan(r[~np.eye(k, dtype=bool)]).any():
        notes.append("grey: undefined (a column is constant where both have values)")
    return data.attach(alt.layer(*layers).properties(
        width=width, height=height, title=title(options, f"Correlation ({options.stage})", notes)))


# --- pairplot ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairplotOptions(ChartOptions):
    stage: Literal["raw", "prepared"] = opt("prepared", STAGE_DOC)
    features: Optional[tuple[str, ...]] = opt(
        None, "columns to plot; default: the max_features that best separate the classes (or follow the target)")
    max_features: int = opt(4, "most features (panels per side)", ge=2, le=6)
    max_points: int = opt(1000, "most points drawn (a random sample beyond that)", gt=10, le=2000)


def rank_features(table: Table, names: list[str], task: str) -> tuple[list[str], str]:
    """Features ordered by how much they tell about the target, and how they were ranked.

    Classification: the one-way ANOVA F statistic (between-class over within-class variance);
    regression: |Pearson r| with the target; without a target, the order given.
    """
    y = table.target
    if y is None:
        return names, "in order"
    scores = {}
    for f in names:
        x = table.features[f]
        if task == "classification":
            lab = table.labels()
            ok = np.isfinite(x) & (lab != "")
            groups = [x[ok & (lab == c)] for c in table.classes]
            groups = [g for g in groups if len(g)]
            if len(groups) < 2 or ok.sum() <= len(groups):
                scores[f] = 0.0
                continue
            mean = x[ok].mean()
            between = sum(len(g) * (g.mean() - mean) ** 2 for g in groups) / (len(groups) - 1)
            within = sum(((g - g.mean()) ** 2).sum() for g in groups) / (ok.sum() - len(groups))
            scores[f] = between / within if within > 0 else (np.inf if between > 0 else 0.0)
        else:
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
                scores[f] = 0.0
            else:
                scores[f] = abs(float(np.corrcoef(x[ok], y[ok])[0, 1]))
    how = ("that best separate the classes (largest ANOVA F)" if task == "classification"
           else "most correlated with the target (largest |r|)")
    return sorted(names, key=lambda f: -scores[f]), how


@CHARTS.register("pairplot", PairplotOptions, section="Data", tasks=BOTH, auto=True, inputs=("tabular",))
def pairplot(record, options: PairplotOptions):
    """A scatter matrix of a few features, coloured by class (or by the target for regression).

    Linked brushing: drag a rectangle in any panel and the same rows light up in every panel
    (and in the histograms on the diagonal); double-click to clear. Click a legend entry to pick
    out a class. `width` and `height` are per panel.
    """
    import altair as alt

    table = load_table(record, options.stage, "pairplot")
    names = _pick_features(table, options.features, "pairplot")
    notes = [table.what]
    usable = [f for f in names if len(np.unique(_finite(table.features[f]))) >= 2]
    if not options.features:
        dropped = len(names) - len(usable)
        names = usable
        if len(names) > options.max_features:
            names, how = rank_features(table, names, record.task)
            names = names[:options.max_features]
            notes.append(f"the {len(names)} of {len(usable)} features {how}; option features picks others")
        elif dropped:
            notes.append(f"{dropped} constant column{'s' * (dropped != 1)} left out")
    elif len(names) > 6:
        notes.append(f"the first 6 of the {len(names)} features asked for")
        names = names[:6]
    if len(names) < 2:
        raise ChartSkip(f"pairplot needs two numeric features that vary; the {table.stage} data has "
                        f"{len(names)}" + (f" ({names[0]})" if names else ""))
    k = len(names)
    # Rows with every shown feature present, then a random sample of them.
    x = np.stack([table.features[f] for f in names], axis=1)
    ok = np.isfinite(x).all(axis=1)
    rows = np.flatnonzero(ok)
    if len(rows) < 2:
        raise ChartSkip("fewer than two rows have every chosen feature")
    if len(rows) < len(x):
        notes.append(f"{fmt_int(len(x) - len(rows))} rows with a missing value left out")
    keep = rows[sample_indices(len(rows), options.max_points)]
    if len(keep) < len(rows):
        notes.append(f"random sample of {fmt_int(len(keep))} rows drawn")
    is_clf = record.task == "classification" and table.target is not None and bool(table.classes)
    fields = [f"f{i}" for i in range(k)]        # safe field names: feature names may hold dots or brackets
    values = []
    for r in keep:
        row = {fld: float(x[r, i]) for i, fld in enumerate(fields)}
        row["row"] = int(r)
        if is_clf:
            row["class"] = str(table.target[r]) or "missing"
        elif table.target is not None and np.isfinite(table.target[r]):
            row["target"] = float(table.target[r])
        values.append(row)
    domains = []
    for i in range(k):
        lo, hi = float(x[keep, i].min()), float(x[keep, i].max())
        pad = (hi - lo) * 0.04 or 0.5
        domains.append([lo - pad, hi + pad])
    side = clamp(560 / k, 100, 170)
    width, height = size(options, side, side)
    brush = alt.selection_interval(name="brush", resolve="global", clear="dblclick",
                                   mark=alt.BrushConfig(fill="#333", fillOpacity=0.08, stroke="#333"))
    params = [brush]
    style = point_style(len(keep))
    tooltip = [alt.Tooltip("row:Q", title="sample row")]
    if is_clf:
        classes = [c for c in table.classes if c in {v["class"] for v in values}]
        if any(v["class"] == "missing" for v in values):
            classes.append("missing")
        pick = alt.selection_point(name="pick", fields=["class"], bind="legend")
        params.append(pick)
        color = alt.condition(brush, alt.Color("class:N", title="class", scale=_class_scale(classes),
                                               legend=alt.Legend(symbolOpacity=1, columns=1 if len(classes) <= 16 else 2)),
                              alt.value("#cfcfcf"))
        opacity = alt.condition(pick, alt.value(style["opacity"]), alt.value(0.04))
        tooltip.append(alt.Tooltip("class:N"))
        notes.append("drag in a panel to select rows in all panels, double-click to clear; "
                     "click a legend entry to pick a class")
    elif table.target is not None:
        color = alt.condition(brush, alt.Color("target:Q", title=table.target_name, scale=alt.Scale(scheme="viridis")),
                              alt.value("#cfcfcf"))
        opacity = alt.value(style["opacity"])
        tooltip.append(alt.Tooltip("target:Q", title=table.target_name, format=".4~g"))
        notes.append("colour: the target; drag in a panel to select rows in all panels, double-click to clear")
    else:
        color = alt.condition(brush, alt.value(BAR), alt.value("#cfcfcf"))
        opacity = alt.value(style["opacity"])
        notes.append("drag in a panel to select rows in all panels, double-click to clear")
    tooltip += [alt.Tooltip(f"{fld}:Q", title=name, format=".4~g") for fld, name in zip(fields, names)]
    data = DataSets()
    source = data("points", values)
    label_limit = width - 4

    def axis(i: int, show: bool, orient: str):
        fmt = _tick_format(*domains[i])
        return alt.Axis(title=names[i] if show else None, labels=show, ticks=show, tickCount=4, format=fmt,
                        labelOverlap=True, labelFlush=True, titleLimit=label_limit, labelFontSize=10,
                        domain=True, orient=orient)

    scatter = alt.Chart(source).mark_circle(size=style["size"]).encode(color=color, opacity=opacity,
                                                                         tooltip=tooltip)
    views, grid_rows = [], []
    for i in range(k):            # row: y feature
        panels = []
        for j in range(k):        # column: x feature
            xs = alt.Scale(domain=domains[j], nice=False, zero=False)
            if i == j:
                # The histogram of the column's feature: all rows in grey, the brushed ones in blue.
                # Binned in Vega (it must follow the brush) into plain fields, so that the x axis
                # has ordinary ticks like the scatter panels above it, not one label per bin edge.
                step = (domains[j][1] - domains[j][0]) / 20
                # Field names unique to the panel: Vega-Lite names a bin's signals after its fields, and
                # two panels binning into the same names would share the first one's bins.
                b0, b1, n_ = f"lo_{j}", f"hi_{j}", f"rows_{j}"
                hist = alt.Chart().transform_bin(
                    [b0, b1], fields[j], bin=alt.Bin(step=step, extent=domains[j])).encode(
                    x=alt.X(f"{b0}:Q", scale=xs, axis=axis(j, i == k - 1, "bottom")), x2=f"{b1}:Q",
                    y=alt.Y(f"{n_}:Q", scale=alt.Scale(zero=True),
                            axis=alt.Axis(title=names[i] if j == 0 else None, labels=False, ticks=False,
                                          grid=False, titleLimit=label_limit)),
                    y2=alt.datum(0),
                    tooltip=[alt.Tooltip(f"{b0}:Q", title=f"{names[j]} from", format=".4~g"),
                             alt.Tooltip(f"{b1}:Q", title="to", format=".4~g"), alt.Tooltip(f"{n_}:Q", title="rows")])
                whole = hist.transform_aggregate(**{n_: "count()"}, groupby=[b0, b1]).mark_bar(color="#d0d0d0")
                chosen = hist.transform_filter(brush).transform_aggregate(
                    **{n_: "count()"}, groupby=[b0, b1]).mark_bar(color=BAR)
                panel = alt.layer(whole, chosen, data=source)
            else:
                views.append(f"cell_{i}_{j}")
                panel = scatter.encode(
                    x=alt.X(f"{fields[j]}:Q", scale=xs, axis=axis(j, i == k - 1, "bottom")),
                    y=alt.Y(f"{fields[i]}:Q", scale=alt.Scale(domain=domains[i], nice=False, zero=False),
                            axis=axis(i, j == 0, "left")),
                ).properties(name=views[-1])
            panels.append(panel.properties(width=width, height=height))
        grid_rows.append(alt.hconcat(*panels, spacing=6))
    chart = alt.vconcat(*grid_rows, spacing=6).resolve_scale(color="shared")
    # The brush and the legend pick act in every scatter panel: defined once at the top with the
    # views they live in (Vega-Lite's way to share a selection between concatenated views;
    # adding them to each panel costs Altair ~0.3 s to merge again).
    chart.params = [alt.TopLevelSelectionParameter(name=p_.name, select=p_.param.select, views=views,
                                                   **({} if p_.param.bind is alt.Undefined else {"bind": p_.param.bind}))
                    for p_ in params]
    return data.attach(chart.properties(title=title(options, f"Pair plot ({options.stage})", notes)))


# --- class_balance and target_distribution -----------------------------------------------------

@dataclass(frozen=True)
class ClassBalanceOptions(ChartOptions):
    stage: Literal["raw", "prepared"] = opt("prepared", STAGE_DOC)
    splits: bool = opt(True, "prepared: also the validation and test splits' classes (from their predictions)")
    sort: Literal["class", "count"] = opt("class", "order of the bars: class order or largest first")


def _class_counts(labels: np.ndarray, classes: list[str]) -> list[int]:
    lab = np.asarray(labels, dtype=object)
    return [int((lab == c).sum()) for c in classes]


def _class_bars(record, options, table: Table, series: list[tuple[str, np.ndarray]], heading: str,
                notes: list[str]):
    """Horizontal bars of rows per class, one bar per series (split) in each class's group."""
    import altair as alt

    classes = list(table.classes)
    extra = sorted({str(v) for _, lab in series for v in np.asarray(lab, dtype=object).tolist()} - set(classes) - {""})
    classes += extra
    if any((np.asarray(lab, dtype=object) == "").any() for _, lab in series):
        classes.append("")
    if not classes:
        raise ChartSkip(f"the {table.stage} data sample has no target values")
    values = []
    for name, lab in series:
        counts = _class_counts(lab, classes)
        total = sum(counts) or 1
        for c, n in zip(classes, counts):
            values.append({"class": c or "missing", "split": name, "count": n, "share": n / total, "total": total})
    shown = [c or "missing" for c in classes]
    first = [v for v in values if v["split"] == series[0][0]]
    counts0 = [v["count"] for v in first]
    if getattr(options, "sort", "class") == "count":
        order = [v["class"] for v in sorted(first, key=lambda v: -v["count"])]
    else:
        order = shown
    nz = [c for c in counts0 if c > 0]
    if len(nz) >= 2:
        ratio = max(nz) / min(nz)
        notes.append(f"{len(nz)} classes; the largest has {ratio:.{1 if ratio < 10 else 0}f}x the rows of the smallest")
    elif len(nz) == 1:
        notes.append("a single class")
    several = len(series) > 1
    field = "share" if several else "count"
    bar = 9 if several else 16
    width, height = size(options, 380, clamp(len(shown) * (bar * len(series) + 6), 60, 900))
    tooltip = [alt.Tooltip("class:N"), alt.Tooltip("split:N"), alt.Tooltip("count:Q", title="rows"),
               alt.Tooltip("share:Q", title="share of the split", format=".1%"),
               alt.Tooltip("total:Q", title="rows in the split")]
    enc = {}
    if several:
        pick = alt.selection_point(name="pick", fields=["split"], bind="legend")
        enc = {"yOffset": alt.YOffset("split:N", sort=[s for s, _ in series]),
               "color": alt.Color("split:N", sort=[s for s, _ in series], title=None,
                                  scale=alt.Scale(range=["#4c78a8", "#f58518", "#54a24b"]),
                                  legend=alt.Legend(orient="top", direction="horizontal", labelLimit=260)),
               "opacity": alt.condition(pick, alt.value(1), alt.value(0.25))}
    data = DataSets()
    base = alt.Chart(data("counts", values)).encode(
        y=alt.Y("class:N", sort=order, title="class", axis=alt.Axis(labelLimit=180)),
        x=alt.X(f"{field}:Q", title="share of the split's rows" if several else "rows",
                axis=alt.Axis(format="%" if several else "~s")),
        tooltip=tooltip,
    )
    bars = base.mark_bar(**({} if several else {"color": BAR})).encode(**enc)
    if several:
        bars = bars.add_params(pick)
    layers = [bars]
    if not several and len(shown) <= 40:
        layers.append(base.mark_text(align="left", dx=3, fontSize=10, color="#333").encode(text="count:Q"))
    return data.attach(alt.layer(*layers).properties(width=width, height=height,
                                                     title=title(options, heading, notes)))


@CHARTS.register("class_balance", ClassBalanceOptions, section="Data", tasks=("classification",), auto=True,
                 inputs=("tabular",))
def class_balance(record, options: ClassBalanceOptions):
    """Rows per class in the data sample; for prepared data also the validation and test splits.

    With several splits the bars are shares of each split (they differ in size), counts on hover;
    click a legend entry to pick out a split.
    """
    table = load_table(record, options.stage, "class_balance")
    if table.target is None:
        raise ChartSkip(f"the {table.stage} data sample has no target column")
    notes = [table.what]
    name = "all splits (raw sample)" if table.stage == "raw" else "train (sample)" if (
        table.total and table.total > table.n) else "train"
    series = [(name, table.labels())]
    if options.splits and table.stage == "prepared":
        k = len(class_names(record))
        for split in ("val", "test"):
            y = (record.predictions.get(split) or {}).get("y_true")
            if y is not None and len(y):
                y = np.asarray(y).astype(int)
                names = class_names(record, max(k, int(y.max()) + 1))
                series.append(({"val": "validation", "test": "test"}[split], np.array([names[i] for i in y], dtype=object)))
        if len(series) > 1:
            notes.append("validation and test: every row of the split (from the run's predictions)")
    return _class_bars(record, options, table, series, f"Class balance ({options.stage})", notes)


@dataclass(frozen=True)
class TargetDistributionOptions(ChartOptions):
    stage: Literal["raw", "prepared"] = opt("prepared", STAGE_DOC)
    bins: int = opt(30, "histogram bins (regression)", gt=1, le=200)


@CHARTS.register("target_distribution", TargetDistributionOptions, section="Data", tasks=BOTH,
                 auto=("regression",), inputs=("tabular",))
def target_distribution(record, options: TargetDistributionOptions):
    """The target: a histogram with its mean and median (regression), rows per class (classification)."""
    import altair as alt

    table = load_table(record, options.stage, "target_distribution")
    if table.target is None:
        raise ChartSkip(f"the {table.stage} data sample has no target column")
    notes = [table.what]
    if record.task == "classification":
        return _class_bars(record, options, table, [("sample", table.labels())],
                           f"Target: {table.target_name} ({options.stage})", notes)
    y = table.target.astype(float)
    v = _finite(y)
    if not len(v):
        raise ChartSkip(f"the {table.stage} target has no finite values")
    if len(v) < len(y):
        notes.append(f"{len(y) - len(v)} missing values left out")
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=options.bins, range=(lo, hi))
    mean, median = float(v.mean()), float(np.median(v))
    notes.append(f"mean {mean:.4g}, median {median:.4g}, sd {v.std():.3g}, range {v.min():.4g} to {v.max():.4g}")
    width, height = size(options, 420, 220)
    data = DataSets()
    bars = alt.Chart(data("bins", [{"lo": float(a), "hi": float(b), "count": int(c), "share": float(c) / len(v)}
                                   for a, b, c in zip(edges[:-1], edges[1:], counts)])).mark_bar(
        color=BAR, binSpacing=1).encode(
        x=alt.X("lo:Q", bin="binned", title=table.target_name, axis=alt.Axis(format=_tick_format(lo, hi))),
        x2="hi:Q",
        y=alt.Y("count:Q", title="rows"),
        tooltip=[alt.Tooltip("lo:Q", title="from", format=".4~g"), alt.Tooltip("hi:Q", title="to", format=".4~g"),
                 alt.Tooltip("count:Q", title="rows"), alt.Tooltip("share:Q", format=".1%")],
    )
    stats = [{"stat": "mean", "value": mean}, {"stat": "median", "value": median}]
    rules = alt.Chart(data("stats", stats)).mark_rule(strokeWidth=2, strokeDash=[5, 3]).encode(
        x="value:Q",
        color=alt.Color("stat:N", title=None, scale=alt.Scale(domain=["mean", "median"], range=["#e45756", "#333"]),
                        legend=alt.Legend(orient="top-right")),
        tooltip=[alt.Tooltip("stat:N"), alt.Tooltip("value:Q", format=".4~g")],
    )
    return data.attach(alt.layer(bars, rules).properties(
        width=width, height=height, title=title(options, f"Target: {table.target_name} ({options.stage})", notes)))
