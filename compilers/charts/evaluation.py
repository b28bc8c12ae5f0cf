"""Evaluation charts: confusion matrix, predictions, residuals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from compilers.charts.base import (SCATTER_MAX, ChartSkip, DataSets, clamp, class_names, point_style,
                                   require_task, sample_indices, size, split_predictions, title)
from dsl.registry import CHARTS, opt
from dsl.spec import ChartOptions

_SPLIT_WORD = {"test": "test", "val": "validation"}


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[n_classes, n_classes] counts: row = true class, column = predicted class."""
    t = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(y_pred).astype(int).ravel()
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _n_classes(record, *arrays) -> int:
    n = len(record.class_names or [])
    for a in arrays:
        a = np.asarray(a)
        if a.size:
            n = max(n, int(a.max()) + 1 if a.ndim == 1 else a.shape[-1])
    return n


@dataclass(frozen=True)
class ConfusionOptions(ChartOptions):
    normalize: bool = opt(False, "show each true class's row as fractions that sum to 1")
    split: Literal["test", "val"] = opt("test", "which split's predictions")


@CHARTS.register("confusion_matrix", ConfusionOptions, section="Evaluation",
                 tasks=("classification",), auto=True)
def confusion_matrix(record, options: ConfusionOptions):
    """Counts of each (true class, predicted class) pair as a heatmap, with the count in each cell."""
    import altair as alt

    require_task(record, "classification", "confusion_matrix")
    pred = split_predictions(record, options.split)
    y_true, y_pred = pred["y_true"].astype(int), pred["y_pred"].astype(int)
    k = _n_classes(record, y_true, y_pred)
    names = class_names(record, k)
    counts = confusion_counts(y_true, y_pred, k)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    values = []
    for i in range(k):
        for j in range(k):
            values.append({"true": names[i], "predicted": names[j], "count": int(counts[i, j]),
                           "share": float(share[i, j]), "correct": i == j})
    field, fmt = ("share", ".0%") if options.normalize else ("count", "d")
    n = int(counts.sum())
    accuracy = float(np.trace(counts)) / n if n else 0.0
    notes = [f"{n:,} {_SPLIT_WORD[options.split]} predictions, accuracy {accuracy:.1%}; rows: true class"
             + (", normalised per row" if options.normalize else "")]
    longest = max(len(s) for s in names)
    side = clamp(34 * k, 200, 420)
    width, height = size(options, side, side)
    top = float(share.max() if options.normalize else counts.max()) or 1.0
    axis_x = alt.Axis(labelAngle=0 if longest <= 3 or k <= 4 and longest <= 10 else -40,
                      labelLimit=120, orient="bottom")
    data = DataSets()
    base = alt.Chart(data("cells", values)).encode(
        x=alt.X("predicted:O", sort=names, title="predicted class", axis=axis_x),
        y=alt.Y("true:O", sort=names, title="true class", axis=alt.Axis(labelLimit=120)),
    )
    tooltip = [alt.Tooltip("true:N", title="true"), alt.Tooltip("predicted:N", title="predicted"),
               alt.Tooltip("count:Q"), alt.Tooltip("share:Q", title="share of true class", format=".1%")]
    cells = base.mark_rect(stroke="#e4e4e4", strokeWidth=1).encode(
        color=alt.Color(f"{field}:Q", title="share" if options.normalize else "count",
                        # White at 0 so that empty cells read as empty (Vega's "blues" starts light blue).
                        scale=alt.Scale(domain=[0, top / 2, top], range=["#ffffff", "#6baed6", "#08306b"],
                                        interpolate="lab"),
                        legend=alt.Legend(format=fmt if options.normalize else "~s", gradientLength=min(height, 200))),
        tooltip=tooltip,
    )
    layers = [cells]
    cell = min(width, height) / k
    if cell >= 16:
        font = 13 if cell >= 40 else 11 if cell >= 26 else 9
        text_fmt = ".0%" if options.normalize else "d"
        layers.append(base.mark_text(fontSize=font).encode(
            text=alt.Text(f"{field}:Q", format=text_fmt),
            color=alt.condition(f"datum.{field} > {top / 2!r}", alt.value("white"), alt.value("#222")),
            opacity=alt.condition(f"datum.count > 0", alt.value(1), alt.value(0.35)),
            tooltip=tooltip,
        ))
    else:
        notes.append("hover a cell for its count")
    return data.attach(alt.layer(*layers).properties(
        width=width, height=height,
        title=title(options, f"Confusion matrix ({_SPLIT_WORD[options.split]})", notes)))


@dataclass(frozen=True)
class PredictionsOptions(ChartOptions):
    split: Literal["test", "val"] = opt("test", "which split's predictions")
    bins: int = opt(20, "histogram bins (classification)", gt=1, le=200)


@CHARTS.register("predictions", PredictionsOptions, section="Evaluation",
                 tasks=("classification", "regression"), auto=("regression",))
def predictions(record, options: PredictionsOptions):
    """Predicted against actual values (regression), or confidence in the true class (classification).

    Regression: a scatter of predicted against actual values with the line y = x (a random sample
    when there are more than 4000 points). Classification: a histogram of the predicted
    probability of each example's true class, coloured by whether the prediction was right.
    """
    import altair as alt

    word = _SPLIT_WORD[options.split]
    if record.task == "regression":
        pred = split_predictions(record, options.split)
        y_true = pred["y_true"].astype(float).ravel()
        y_pred = pred["y_pred"].astype(float).ravel()
        ok = np.isfinite(y_true) & np.isfinite(y_pred)
        y_true, y_pred = y_true[ok], y_pred[ok]
        if not len(y_true):
            raise ChartSkip(f"no finite {word} predictions")
        n = len(y_true)
        idx = sample_indices(n, SCATTER_MAX)
        r2 = _r2(y_true, y_pred)
        notes = [f"{n:,} {word} predictions; R² {r2:.3f}, MAE {np.mean(np.abs(y_true - y_pred)):.3g}"]
        if len(idx) < n:
            notes.append(f"random sample of {len(idx):,} points shown")
        lo = float(min(y_true.min(), y_pred.min()))
        hi = float(max(y_true.max(), y_pred.max()))
        pad = (hi - lo) * 0.03 or 1.0
        dom = [lo - pad, hi + pad]
        width, height = size(options, 380, 380)
        values = [{"actual": float(a), "predicted": float(p), "error": float(p - a)}
                  for a, p in zip(y_true[idx], y_pred[idx])]
        scale = alt.Scale(domain=dom, nice=False, zero=False)
        data = DataSets()
        points = alt.Chart(data("points", values)).mark_circle(color="#4c78a8", **point_style(len(idx))).encode(
            x=alt.X("actual:Q", title="actual", scale=scale),
            y=alt.Y("predicted:Q", title="predicted", scale=scale),
            tooltip=[alt.Tooltip("actual:Q", format=".4~g"), alt.Tooltip("predicted:Q", format=".4~g"),
                     alt.Tooltip("error:Q", format=".3~g")],
        ).add_params(alt.selection_interval(bind="scales"))
        diag = alt.Chart(alt.Data(values=[{"actual": dom[0], "predicted": dom[0]},
                                          {"actual": dom[1], "predicted": dom[1]}])).mark_line(
            color="#e45756", strokeDash=[5, 4]).encode(x="actual:Q", y="predicted:Q")
        return data.attach(alt.layer(points, diag).properties(
            width=width, height=height, title=title(options, f"Predicted vs actual ({word})", notes)))

    pred = split_predictions(record, options.split, ("y_true", "y_pred", "proba"))
    y_true = pred["y_true"].astype(int).ravel()
    y_pred = pred["y_pred"].astype(int).ravel()
    proba = np.asarray(pred["proba"], dtype=float)
    if proba.ndim == 2 and proba.shape[1] == 1:
        proba = proba[:, 0]
    if proba.ndim == 1:  # binary with one probability column: P(class 1)
        proba = np.stack([1 - proba, proba], axis=1)
    p_true = proba[np.arange(len(y_true)), np.clip(y_true, 0, proba.shape[1] - 1)]
    correct = y_true == y_pred
    edges = np.linspace(0.0, 1.0, options.bins + 1)
    values = []
    for label, mask in (("correct", correct), ("wrong", ~correct)):
        counts, _ = np.histogram(np.clip(p_true[mask], 0, 1), bins=edges)
        for lo, hi, c in zip(edges[:-1], edges[1:], counts):
            values.append({"lo": float(lo), "hi": float(hi), "outcome": label, "count": int(c)})
    n = len(y_true)
    notes = [f"{n:,} {word} predictions, {correct.mean():.1%} correct; "
             f"median probability of the true class {np.median(p_true):.2f}"]
    width, height = size(options, 420, 240)
    data = DataSets()
    chart = alt.Chart(data("bins", values)).mark_bar(binSpacing=1).encode(
        x=alt.X("lo:Q", bin="binned", title="predicted probability of the true class",
                scale=alt.Scale(domain=[0, 1])),
        x2="hi:Q",
        y=alt.Y("count:Q", stack=True, title="examples"),
        color=alt.Color("outcome:N", title=None, sort=["correct", "wrong"],
                        scale=alt.Scale(domain=["correct", "wrong"], range=["#54a24b", "#e45756"]),
                        legend=alt.Legend(orient="top", direction="horizontal")),
        order=alt.Order("outcome:N", sort="ascending"),
        tooltip=[alt.Tooltip("lo:Q", title="from", format=".2f"), alt.Tooltip("hi:Q", title="to", format=".2f"),
                 alt.Tooltip("outcome:N"), alt.Tooltip("count:Q")],
    )
    return data.attach(chart.properties(width=width, height=height,
                                        title=title(options, f"Confidence in the true class ({word})", notes)))


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    ss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - p) ** 2)) / ss if ss > 0 else float("nan")


@dataclass(frozen=True)
class ResidualsOptions(ChartOptions):
    split: Literal["test", "val"] = opt("test", "which split's predictions")
    bins: int = opt(30, "bins of the residual histogram", gt=1, le=200)


@CHARTS.register("residuals", ResidualsOptions, section="Evaluation",
                 tasks=("regression",), auto=True)
def residuals(record, options: ResidualsOptions):
    """Residuals (actual - predicted) against the prediction, with a zero line, and their histogram."""
    import altair as alt

    require_task(record, "regression", "residuals")
    word = _SPLIT_WORD[options.split]
    pred = split_predictions(record, options.split)
    y_true = pred["y_true"].astype(float).ravel()
    y_pred = pred["y_pred"].astype(float).ravel()
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    y_true, y_pred = y_true[ok], y_pred[ok]
    if not len(y_true):
        raise ChartSkip(f"no finite {word} predictions")
    res = y_true - y_pred
    n = len(res)
    idx = sample_indices(n, SCATTER_MAX)
    notes = [f"{n:,} {word} predictions; residual mean {res.mean():.3g}, sd {res.std():.3g}"]
    if len(idx) < n:
        notes.append(f"scatter: random sample of {len(idx):,} points; histogram: all")
    width, height = size(options, 340, 260)
    lim = float(np.max(np.abs(res))) * 1.05 or 1.0
    yscale = alt.Scale(domain=[-lim, lim], nice=False)
    data = DataSets()
    scatter = alt.Chart(data("points", [{"predicted": float(p), "residual": float(r)}
                                        for p, r in zip(y_pred[idx], res[idx])])).mark_circle(
        color="#4c78a8", **point_style(len(idx))).encode(
        x=alt.X("predicted:Q", title="predicted", scale=alt.Scale(zero=False)),
        y=alt.Y("residual:Q", title="residual (actual - predicted)", scale=yscale),
        tooltip=[alt.Tooltip("predicted:Q", format=".4~g"), alt.Tooltip("residual:Q", format=".3~g")],
    ).add_params(alt.selection_interval(bind="scales"))
    zero = alt.Chart(alt.Data(values=[{"zero": 0.0}])).mark_rule(color="#e45756", strokeDash=[5, 4]).encode(
        y=alt.Y("zero:Q", scale=yscale))
    left = alt.layer(scatter, zero).properties(width=width, height=height, title="residual vs predicted")
    counts, edges = np.histogram(res, bins=options.bins, range=(-lim, lim))
    hist = alt.Chart(data("bins", [{"lo": float(a), "hi": float(b), "count": int(c)}
                                   for a, b, c in zip(edges[:-1], edges[1:], counts)])).mark_bar(
        color="#4c78a8", binSpacing=1).encode(
        y=alt.Y("lo:Q", bin="binned", title="residual", scale=yscale),
        y2="hi:Q",
        x=alt.X("count:Q", title="examples"),
        tooltip=[alt.Tooltip("lo:Q", title="from", format=".3~g"), alt.Tooltip("hi:Q", title="to", format=".3~g"),
                 alt.Tooltip("count:Q")],
    ).properties(width=clamp(width * 0.45, 120, 200), height=height, title="distribution")
    return data.attach(alt.hconcat(left, hist, spacing=16).properties(
        title=title(options, f"Residuals ({word})", notes)))
