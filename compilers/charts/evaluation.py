"""Evaluation charts: confusion matrix, predictions, residuals, ROC, precision-recall, calibration, per-class scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from compilers.charts.base import (MAX_ROWS, SCATTER_MAX, ChartSkip, DataSets, clamp, class_names, even_indices,
                                   num, point_style, require_task, sample_indices, size, split_predictions, title)
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


# --- ROC, precision-recall, calibration, per-class scores ---------------------------------------

def proba_matrix(proba) -> np.ndarray:
    """[n, C] class probabilities; one sigmoid column (or a flat vector) is P(class 1) of two classes."""
    p = np.asarray(proba, dtype=float)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    return p


def binary_curve(positive: np.ndarray, score: np.ndarray) -> dict:
    """True and false positives at every distinct score threshold, highest threshold first
    (scikit-learn's `_binary_clf_curve`): {"tps", "fps", "thresholds", "P", "N"}."""
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=float)
    order = np.argsort(score, kind="mergesort")[::-1]
    s, y = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]     # the last row of each run of equal scores
    tps = np.cumsum(y)[last].astype(float)
    fps = (last + 1) - tps
    return {"tps": tps, "fps": fps, "thresholds": s[last], "P": float(y.sum()), "N": float(len(y) - y.sum())}


def roc_curve_np(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(fpr, tpr, thresholds, AUC), the curve starting at (0, 0); AUC by the trapezoidal rule, as
    scikit-learn's roc_auc_score. Needs positives and negatives."""
    c = binary_curve(positive, score)
    if c["P"] == 0 or c["N"] == 0:
        raise ValueError("needs both positive and negative examples")
    fpr = np.r_[0.0, c["fps"] / c["N"]]
    tpr = np.r_[0.0, c["tps"] / c["P"]]
    thresholds = np.r_[np.inf, c["thresholds"]]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, thresholds, auc


def pr_curve_np(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(recall, precision, thresholds, average precision), recall rising from (0, 1); AP is
    sum_n (R_n - R_{n-1}) P_n, as scikit-learn's average_precision_score. Needs a positive."""
    c = binary_curve(positive, score)
    if c["P"] == 0:
        raise ValueError("needs a positive example")
    precision = c["tps"] / (c["tps"] + c["fps"])
    recall = c["tps"] / c["P"]
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return np.r_[0.0, recall], np.r_[1.0, precision], np.r_[np.inf, c["thresholds"]], ap


def _thin(x: np.ndarray, y: np.ndarray, most: int) -> np.ndarray:
    """Indices of the points of a polyline worth drawing: corners only (collinear points dropped,
    as scikit-learn's drop_intermediate), then at most `most`, evenly spaced, ends kept."""
    if len(x) <= 2:
        return np.arange(len(x))
    dx, dy = np.diff(x), np.diff(y)
    cross = dx[:-1] * dy[1:] - dy[:-1] * dx[1:]
    keep = np.r_[0, np.flatnonzero(np.abs(cross) > 1e-12) + 1, len(x) - 1]
    if len(keep) > most:
        keep = keep[even_indices(len(keep), most)]
    return keep


class _Scores:
    """Finite class probabilities of one split, with the labels the curves need."""

    def __init__(self, record, split: str, chart: str):
        require_task(record, "classification", chart)
        pred = split_predictions(record, split, ("y_true", "proba"))
        proba = proba_matrix(pred["proba"])
        y = np.asarray(pred["y_true"]).astype(int).ravel()
        if proba.ndim != 2 or len(proba) != len(y):
            raise ChartSkip(f"the {split} probabilities have shape {list(np.shape(pred['proba']))} for {len(y)} labels")
        ok = np.isfinite(proba).all(axis=1)
        self.dropped = int((~ok).sum())
        if not ok.any():
            raise ChartSkip(f"every {_SPLIT_WORD[split]} probability is NaN or infinite")
        self.proba, self.y = proba[ok], y[ok]
        self.k = max(proba.shape[1], int(self.y.max()) + 1)
        self.names = class_names(record, self.k)
        self.word = _SPLIT_WORD[split]

    def notes(self) -> list[str]:
        n = len(self.y)
        out = [f"{n:,} {self.word} predictions, one-vs-rest"
               if self.proba.shape[1] > 2 else f"{n:,} {self.word} predictions"]
        if self.dropped:
            out.append(f"{self.dropped:,} rows with non-finite probabilities left out")
        return out

    def classes(self, wanted, most: int = 20) -> tuple[list[int], list[str]]:
        """Class indices to draw (binary: the positive class only) and notes."""
        if self.proba.shape[1] == 2:
            return [1], [f"positive class: {self.names[1]}"]
        if wanted:
            cols = self.names[:self.proba.shape[1]]   # classes with a probability column
            missing = [str(c) for c in wanted if str(c) not in cols]
            if missing:
                raise ChartSkip(f"no class {missing[0]} among the predicted probabilities; classes: "
                                + ", ".join(cols[:20]) + (" ..." if len(cols) > 20 else ""))
            return [cols.index(str(c)) for c in dict.fromkeys(wanted)], []
        idx = list(range(self.proba.shape[1]))
        if len(idx) > most:
            return idx[:most], [f"the first {most} of {len(idx)} classes shown (option classes)"]
        return idx, []


def _curve_chart(options, rows: list[dict], order: list[str], x: tuple[str, str], y: tuple[str, str],
                 extra_tip: list, heading: str, notes: list[str], guide: list[dict] | None,
                 interpolate: str = "linear"):
    """Curves by class with a legend that picks a class, hover tooltips, zoom and pan."""
    import altair as alt

    width, height = size(options, 360, 360)
    color = alt.Color("label:N", title=None, sort=order,
                      scale=alt.Scale(domain=order, scheme="tableau10" if len(order) <= 10 else "tableau20"),
                      legend=alt.Legend(orient="right", labelLimit=260, symbolType="stroke", symbolStrokeWidth=3,
                                        columns=1 if len(order) <= 24 else 2))
    pick = alt.selection_point(name="pick", fields=["label"], bind="legend")
    hover = alt.selection_point(name="hover", fields=["label", "i"], nearest=True, on="pointerover",
                                empty=False, clear="pointerout")
    zoom = alt.selection_interval(name="zoom", bind="scales")
    dom = alt.Scale(domain=[0, 1], nice=False)
    data = DataSets()
    base = alt.Chart(data("curves", rows)).encode(
        x=alt.X(f"{x[0]}:Q", title=x[1], scale=dom), y=alt.Y(f"{y[0]}:Q", title=y[1], scale=dom), color=color)
    line = base.mark_line(strokeWidth=2, interpolate=interpolate, clip=True).encode(
        opacity=alt.condition(pick, alt.value(0.95), alt.value(0.12)), detail="label:N")
    tip = [alt.Tooltip("class:N"), alt.Tooltip(f"{x[0]}:Q", title=x[1], format=".3f"),
           alt.Tooltip(f"{y[0]}:Q", title=y[1], format=".3f"),
           alt.Tooltip("threshold:Q", title="threshold (probability)", format=".3f")] + extra_tip
    # Every selection of the chart on this one layer (a second layer with params breaks Vega).
    points = base.mark_circle(size=50, clip=True).encode(
        opacity=alt.condition(hover, alt.value(1), alt.value(0)), tooltip=tip,
    ).add_params(pick, hover, zoom)
    layers = [line, points]
    if guide:
        layers.insert(0, alt.Chart(alt.Data(values=guide)).mark_line(
            color="#999", strokeDash=[4, 4], strokeWidth=1, clip=True).encode(
            x="gx:Q", y="gy:Q", tooltip=[alt.Tooltip("what:N", title="dashed line")]))
    notes = notes + ["click a legend entry to pick a class; drag to pan, scroll to zoom"]
    return data.attach(alt.layer(*layers).properties(width=width, height=height,
                                                      title=title(options, heading, notes)))


@dataclass(frozen=True)
class RocOptions(ChartOptions):
    split: Literal["test", "val"] = opt("test", "which split's predictions")
    classes: Optional[tuple[str, ...]] = opt(None, "class names to draw; default: every class (at most 20)")


@CHARTS.register("roc", RocOptions, section="Evaluation", tasks=("classification",), auto=True)
def roc(record, options: RocOptions):
    """ROC curves, one per class against the rest (binary: the positive class), AUC in the legend.

    Computed from the predicted probabilities of the split: true positive rate against false
    positive rate as the threshold falls. The dashed diagonal is chance.
    """
    s = _Scores(record, options.split, "roc")
    idx, notes = s.classes(options.classes)
    notes = s.notes() + notes
    budget = max(20, MAX_ROWS // max(1, len(idx)) - 1)
    rows, order, aucs, lacking, thinned = [], [], [], [], False
    for c in idx:
        pos = s.y == c
        try:
            fpr, tpr, thr, auc = roc_curve_np(pos, s.proba[:, c])
        except ValueError:
            lacking.append(s.names[c])
            continue
        label = f"{s.names[c]} (AUC {auc:.3f})"
        order.append(label)
        aucs.append(auc)
        keep = _thin(fpr, tpr, budget)
        thinned |= len(keep) < len(_thin(fpr, tpr, len(fpr)))
        for i in keep:
            rows.append({"label": label, "class": s.names[c], "i": int(i), "fpr": float(fpr[i]), "tpr": float(tpr[i]),
                         "threshold": num(thr[i]), "auc": auc, "positives": int(pos.sum())})
    if not rows:
        present = sorted({s.names[c] for c in np.unique(s.y)})
        raise ChartSkip(f"the {s.word} split has a single class ({', '.join(present)}): ROC needs examples "
                        "of a class and of the rest")
    if len(aucs) > 1:
        notes.insert(0, f"macro-average AUC {np.mean(aucs):.3f} over {len(aucs)} classes")
    if thinned:
        notes.append(f"curves drawn through at most {budget} evenly spaced points each (AUC from all)")
    if lacking:
        notes.append(f"no curve for {', '.join(lacking[:5])}: no {s.word} examples of "
                     f"{'that class' if len(lacking) == 1 else 'those classes'} (or no others)")
    import altair as alt

    guide = [{"gx": 0.0, "gy": 0.0, "what": "chance"}, {"gx": 1.0, "gy": 1.0, "what": "chance"}]
    return _curve_chart(options, rows, order, ("fpr", "false positive rate"), ("tpr", "true positive rate"),
                        [alt.Tooltip("auc:Q", title="AUC", format=".4f"), alt.Tooltip("positives:Q")],
                        f"ROC ({s.word})", notes, guide)


@dataclass(frozen=True)
class PrOptions(ChartOptions):
    split: Literal["test", "val"] = opt("test", "which split's predictions")
    classes: Optional[tuple[str, ...]] = opt(None, "class names to draw; default: every class (at most 20)")


@CHARTS.register("pr", PrOptions, section="Evaluation", tasks=("classification",), auto=False)
def pr(record, options: PrOptions):
    """Precision-recall curves, one per class against the rest (binary: the positive class).

    The legend gives each class's average precision (the area under its step curve). A class's
    chance level is its share of the split (in the tooltip).
    """
    import altair as alt

    s = _Scores(record, options.split, "pr")
    idx, notes = s.classes(options.classes)
    notes = s.notes() + notes
    budget = max(20, MAX_ROWS // max(1, len(idx)) - 1)
    rows, order, aps, lacking, thinned = [], [], [], [], False
    for c in idx:
        pos = s.y == c
        try:
            rec, prec, thr, ap = pr_curve_np(pos, s.proba[:, c])
        except ValueError:
            lacking.append(s.names[c])
            continue
        label = f"{s.names[c]} (AP {ap:.3f})"
        order.append(label)
        aps.append(ap)
        keep = even_indices(len(rec), budget)   # a step curve: no collinear points to drop
        thinned |= len(keep) < len(rec)
        for i in keep:
            rows.append({"label": label, "class": s.names[c], "i": int(i), "recall": float(rec[i]),
                         "precision": float(prec[i]), "threshold": num(thr[i]), "ap": ap,
                         "base": float(pos.mean())})
    if not rows:
        raise ChartSkip(f"the {s.word} split has no example of the chosen classes: precision-recall needs positives")
    if len(aps) > 1:
        notes.insert(0, f"mean average precision {np.mean(aps):.3f} over {len(aps)} classes")
    if thinned:
        notes.append(f"curves drawn through at most {budget} evenly spaced points each (AP from all)")
    if lacking:
        notes.append(f"no curve for {', '.join(lacking[:5])}: no {s.word} examples")
    guide = None
    if len(order) == 1:
        b = rows[0]["base"]
        guide = [{"gx": 0.0, "gy": b, "what": f"chance: {b:.1%} positives"},
                 {"gx": 1.0, "gy": b, "what": f"chance: {b:.1%} positives"}]
    return _curve_chart(options, rows, order, ("recall", "recall"), ("precision", "precision"),
                        [alt.Tooltip("ap:Q", title="average precision", format=".4f"),
                         alt.Tooltip("base:Q", title="chance (share of positives)", format=".1%")],
                        f"Precision-recall ({s.word})", notes, guide, interpolate="step-before")


@dataclass(frozen=True)
class CalibrationOptions(ChartOptions):
    split: Literal["test", "val"] = opt("test", "which split's predictions")
    bins: int = opt(10, "confidence bins over [0, 1]", gt=1, le=50)


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int) -> list[dict]:
    """Equal-width bins of the confidence over [0, 1]: count, mean confidence, observed accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        out.append({"bin": b, "lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                    "confidence": float(confidence[m].mean()) if n else None,
                    "accuracy": float(correct[m].mean()) if n else None})
    return out


@CHARTS.register("calibration", CalibrationOptions, section="Evaluation", tasks=("classification",), auto=False)
def calibration(record, options: CalibrationOptions):
    """Reliability diagram: how often the predicted class is right against how sure the model was.

    Predictions are binned by the probability of the predicted class (the top-class confidence);
    each point is a bin's mean confidence and its observed accuracy, sized by its count. A
    well-calibrated model lies on the dashed diagonal. Below, the number of predictions per bin.
    """
    import altair as alt

    s = _Scores(record, options.split, "calibration")
    conf = s.proba.max(axis=1)
    correct = (s.proba.argmax(axis=1) == s.y).astype(float)
    rows = calibration_bins(np.clip(conf, 0, 1), correct, options.bins)
    n = len(conf)
    filled = [r for r in rows if r["count"]]
    ece = sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in filled)
    for r in rows:
        r["gap"] = None if r["confidence"] is None else r["accuracy"] - r["confidence"]
    notes = [f"{n:,} {s.word} predictions: accuracy {correct.mean():.1%}, mean confidence {conf.mean():.1%}; "
             f"expected calibration error {ece:.3f}"] + s.notes()[1:]
    notes.append("a point per bin, sized by its predictions; above the diagonal: under-confident, "
                 "below: over-confident")
    width, height = size(options, 340, 300)
    dom = alt.Scale(domain=[0, 1], nice=False)
    tip = [alt.Tooltip("lo:Q", title="confidence from", format=".2f"), alt.Tooltip("hi:Q", title="to", format=".2f"),
           alt.Tooltip("count:Q", title="predictions"), alt.Tooltip("confidence:Q", title="mean confidence", format=".3f"),
           alt.Tooltip("accuracy:Q", title="observed accuracy", format=".3f"),
           alt.Tooltip("gap:Q", title="accuracy - confidence", format="+.3f")]
    data = DataSets()
    source = data("bins", rows)
    diag = alt.Chart(alt.Data(values=[{"gx": 0.0, "gy": 0.0}, {"gx": 1.0, "gy": 1.0}])).mark_line(
        color="#999", strokeDash=[4, 4]).encode(x=alt.X("gx:Q", scale=dom), y=alt.Y("gy:Q", scale=dom),
                                                tooltip=[alt.Tooltip("gx:Q", title="perfect calibration")])
    base = alt.Chart(source).transform_filter("datum.count > 0").encode(
        x=alt.X("confidence:Q", title=None, scale=dom, axis=alt.Axis(format=".1f")),
        y=alt.Y("accuracy:Q", title="observed accuracy", scale=dom, axis=alt.Axis(format=".1f")))
    line = base.mark_line(color="#4c78a8", strokeWidth=2)
    top_count = max((r["count"] for r in rows), default=1) or 1
    points = base.mark_circle(color="#4c78a8", opacity=1, stroke="white", strokeWidth=1).encode(
        size=alt.Size("count:Q", title="predictions", scale=alt.Scale(domain=[0, top_count], range=[20, 320]),
                      legend=None),   # the bars below give the counts
        tooltip=tip)
    reliability = alt.layer(diag, line, points).properties(width=width, height=height)
    counts = alt.Chart(source).mark_bar(color="#9ecae9", binSpacing=1).encode(
        x=alt.X("lo:Q", bin="binned", title="confidence: probability of the predicted class", scale=dom,
                axis=alt.Axis(format=".1f")),
        x2="hi:Q",
        y=alt.Y("count:Q", title="predictions", axis=alt.Axis(tickCount=3, format="~s")),
        tooltip=tip,
    ).properties(width=width, height=clamp(height * 0.3, 60, 120))
    return data.attach(alt.vconcat(reliability, counts, spacing=8).properties(
        title=title(options, f"Calibration ({s.word})", notes)))


@dataclass(frozen=True)
class PerClassOptions(ChartOptions):
    split: Literal["test", "val"] = opt("test", "which split's predictions")
    sort: Literal["class", "f1", "support"] = opt("class", "order of the classes")


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined, as scikit-learn's default)."""
    cm = confusion_counts(y_true, y_pred, k)
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denom = 2 * tp + (predicted - tp) + (support - tp)
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int),
            "predicted": predicted.astype(int), "tp": tp.astype(int)}


@CHARTS.register("per_class", PerClassOptions, section="Evaluation", tasks=("classification",), auto=True)
def per_class(record, options: PerClassOptions):
    """Precision, recall and F1 of every class as grouped bars, with the support on hover.

    Precision: of the examples predicted as the class, the share that are; recall: of the
    class's examples, the share found. Undefined values (a class never predicted, or absent)
    count as 0, as in scikit-learn. Click a legend entry to pick out a score.
    """
    import altair as alt

    require_task(record, "classification", "per_class")
    pred = split_predictions(record, options.split)
    y_true, y_pred = pred["y_true"].astype(int).ravel(), pred["y_pred"].astype(int).ravel()
    k = _n_classes(record, y_true, y_pred)
    if "proba" in (record.predictions.get(options.split) or {}):
        k = max(k, proba_matrix(record.predictions[options.split]["proba"]).shape[1])
    names = class_names(record, k)
    sc = per_class_scores(y_true, y_pred, k)
    metrics = ("precision", "recall", "f1")
    labels = {"precision": "precision", "recall": "recall", "f1": "F1"}
    values = []
    for c in range(k):
        for m in metrics:
            undefined = (m == "precision" and sc["predicted"][c] == 0) or (m == "recall" and sc["support"][c] == 0) \
                or (m == "f1" and sc["predicted"][c] == 0 and sc["support"][c] == 0)
            values.append({"class": names[c], "score": labels[m], "value": float(sc[m][c]),
                           "support": int(sc["support"][c]), "predicted": int(sc["predicted"][c]),
                           "correct": int(sc["tp"][c]), "note": "undefined, shown as 0" if undefined else ""})
    if options.sort == "f1":
        order = [names[c] for c in np.argsort(-sc["f1"], kind="stable")]
    elif options.sort == "support":
        order = [names[c] for c in np.argsort(-sc["support"], kind="stable")]
    else:
        order = names
    word = _SPLIT_WORD[options.split]
    n = len(y_true)
    present = sc["support"] > 0
    notes = [f"{n:,} {word} predictions, accuracy {float((y_true == y_pred).mean()):.1%}; "
             f"macro F1 {sc['f1'][present].mean() if present.any() else 0:.3f} over the {int(present.sum())} "
             f"classes present"]
    absent = [names[c] for c in range(k) if not present[c]]
    if absent:
        notes.append(f"no {word} examples of {', '.join(absent[:5])}" + (" ..." if len(absent) > 5 else "")
                     + ": recall undefined (0)")
    notes.append("hover a bar for the support; click a legend entry to pick a score")
    width, height = size(options, 380, clamp(k * 34, 90, 1200))
    pick = alt.selection_point(name="pick", fields=["score"], bind="legend")
    data = DataSets()
    base = alt.Chart(data("scores", values)).encode(
        y=alt.Y("class:N", sort=order, title="class", axis=alt.Axis(labelLimit=180)),
        yOffset=alt.YOffset("score:N", sort=[labels[m] for m in metrics]),
        x=alt.X("value:Q", title="score", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".1f")),
        tooltip=[alt.Tooltip("class:N"), alt.Tooltip("score:N"), alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("support:Q", title="support (true examples)"),
                 alt.Tooltip("predicted:Q", title="predicted as the class"), alt.Tooltip("correct:Q"),
                 alt.Tooltip("note:N", title="note")],
    )
    bars = base.mark_bar().encode(
        color=alt.Color("score:N", title=None, sort=[labels[m] for m in metrics],
                        scale=alt.Scale(range=["#4c78a8", "#f58518", "#54a24b"]),
                        legend=alt.Legend(orient="top", direction="horizontal")),
        opacity=alt.condition(pick, alt.value(1), alt.value(0.2)),
    ).add_params(pick)
    return data.attach(bars.properties(width=width, height=height,
                                       title=title(options, f"Scores per class ({word})", notes)))
