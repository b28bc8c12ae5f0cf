"""Training charts: learning curves, the learning-rate schedule, gradient norms."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from compilers.charts.base import MAX_ROWS, ChartSkip, DataSets, even_indices, history_epochs, num, size, title
from dsl.registry import CHARTS, opt
from dsl.spec import ChartOptions

# History keys that are bookkeeping, not quantities to plot.
_NOT_CURVES = {"epoch", "step", "lr", "time", "wall", "samples_per_s", "steps_per_s"}
SPLIT_COLORS = {"train": "#4c78a8", "val": "#f58518"}


def curve_quantities(history: list[dict]) -> list[str]:
    """Quantities with a curve in the history, loss first: 'loss', 'accuracy', ...

    A key `x` is the training value, `val_x` the validation value of the same quantity.
    """
    seen: dict[str, None] = {}
    for row in history:
        for key, value in row.items():
            base = key[4:] if key.startswith("val_") else key
            if base in _NOT_CURVES or base.endswith("_time") or base.endswith("_s"):
                continue
            if isinstance(value, bool) or num(value) is None:
                continue
            seen.setdefault(base, None)
    names = list(seen)
    return sorted(names, key=lambda q: (q != "loss", names.index(q)))


@dataclass(frozen=True)
class LearningCurvesOptions(ChartOptions):
    metrics: Optional[tuple[str, ...]] = opt(None, "quantities to show, e.g. [loss, accuracy]; default: all")
    log_scale: bool = opt(False, "logarithmic y axis (panels whose values are all positive)")
    columns: int = opt(2, "panels per row", gt=0)


@CHARTS.register("learning_curves", LearningCurvesOptions, section="Training",
                 tasks=("classification", "regression"), auto=True)
def learning_curves(record, options: LearningCurvesOptions):
    """Loss and each metric by epoch, training and validation together, one panel per quantity.

    Hover for values; drag to pan and scroll to zoom. A dashed rule marks the best epoch when
    the run has one. `width` and `height` are per panel.
    """
    import altair as alt

    history = [h for h in record.history if num(h.get("epoch")) is not None]
    if not history:
        raise ChartSkip("the run has no epochs in its history yet")
    available = curve_quantities(history)
    if not available:
        raise ChartSkip("the history has no loss or metric values")
    wanted = list(options.metrics) if options.metrics else available
    quantities = [q for q in wanted if q in available]
    missing = [q for q in wanted if q not in available]
    if not quantities:
        raise ChartSkip(f"none of {', '.join(wanted)} is in the history (it has {', '.join(available)})")

    epochs = np.array([float(h["epoch"]) for h in history])
    # Whole epochs on the axis: a few epochs get one tick each (tickMinStep alone still let Vega put
    # ticks at 1.5, 2.5, which "~d" printed as 2, 3: an axis reading 1 2 2 3 3); more get the
    # steps Vega chooses, never below 1.
    first, last = (int(np.floor(epochs.min())), int(np.ceil(epochs.max()))) if len(epochs) else (1, 1)
    epoch_axis = (alt.Axis(values=list(range(first, last + 1)), format="~d") if last - first < 12
                  else alt.Axis(tickMinStep=1, format="~d"))
    best = record.best_epoch
    keep_best = [int(np.argmin(np.abs(epochs - best)))] if best is not None else []
    # Every panel has up to two rows per epoch, one for the best-epoch rule, and even_indices may
    # add the best epoch to its k: keep the whole chart within MAX_ROWS.
    per_panel = max(2, (MAX_ROWS // len(quantities) - 1) // 2 - 1)
    idx = even_indices(len(history), per_panel, keep_best)
    notes = []
    if len(idx) < len(history):
        notes.append(f"{len(idx)} of {len(history)} epochs shown, evenly spaced")
    if missing:
        notes.append(f"not in the history: {', '.join(missing)}")
    if best is not None:
        notes.append(f"dashed line: best epoch {best:g}" + (f" by {record.monitor}" if record.monitor else ""))

    width, height = size(options, 300 if len(quantities) > 1 else 420,
                         190 if len(quantities) > 1 else 260)
    color = alt.Color("split:N", title="split",
                      scale=alt.Scale(domain=list(SPLIT_COLORS), range=list(SPLIT_COLORS.values())),
                      legend=alt.Legend(orient="right", title=None))
    # One hover selection shared by every panel: hovering an epoch shows its values everywhere.
    hover = alt.selection_point(name="hover", fields=["epoch"], nearest=True, on="pointerover",
                                empty=False, clear="pointerout")
    data = DataSets()
    panels = []
    for n_panel, q in enumerate(quantities):
        values = []
        for i in idx:
            h = history[i]
            for split, key in (("train", q), ("val", "val_" + q)):
                v = num(h.get(key))
                if v is not None:
                    values.append({"epoch": float(h["epoch"]), "split": split, "value": v})
        if not values:
            continue
        log = options.log_scale and all(v["value"] > 0 for v in values)
        if log:
            # No "nice" rounding to whole decades (it squeezes the curves), and no minor labels.
            scale = alt.Scale(type="log", nice=False, padding=4)
            y_axis = alt.Axis(title=None, tickCount=5, labelOverlap="greedy", format="~g", labelFlush=True)
        else:
            # labelFlush: a label at the very top would push this panel's title up (titles sit
            # above the axis bounds), so panels side by side would have misaligned titles.
            scale = alt.Scale(zero=False)
            y_axis = alt.Axis(title=None, labelFlush=True)
        zoom = alt.selection_interval(name=f"zoom_{n_panel}", bind="scales")
        base = alt.Chart().encode(
            x=alt.X("epoch:Q", title="epoch", axis=epoch_axis),
            y=alt.Y("value:Q", scale=scale, axis=y_axis),   # the panel title names it
            color=color,
        )
        line = base.mark_line(strokeWidth=2)
        # Both selections live on the one points layer: Altair attaches a concatenated panel's
        # params to every layer that has params, and a scale binding defined twice breaks Vega.
        points = base.mark_circle(size=48).encode(
            opacity=alt.condition(hover, alt.value(1), alt.value(0)),
            tooltip=[alt.Tooltip("epoch:Q", format="~g"), alt.Tooltip("split:N"),
                     alt.Tooltip("value:Q", title=q, format=".4~g")],
        ).add_params(hover, zoom)
        layers = [line, points]
        if best is not None:
            layers.append(alt.Chart(alt.Data(values=[{"best_epoch": float(best)}])).mark_rule(
                strokeDash=[4, 4], color="#666").encode(
                x="best_epoch:Q", tooltip=[alt.Tooltip("best_epoch:Q", title="best epoch")]))
        panels.append(alt.layer(*layers, data=data(f"curve_{n_panel}", values)).properties(
            width=width, height=height, title=q))

    if not panels:
        raise ChartSkip("the history has no finite values for the chosen quantities")
    n = len(panels)
    with warnings.catch_warnings():
        # Altair warns when it merges the shared hover selection across panels: that is the point.
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection")
        chart = panels[0] if n == 1 else alt.concat(*panels, columns=min(options.columns, n))
    return data.attach(chart.properties(title=title(options, "Learning curves", notes or None)))


@dataclass(frozen=True)
class LRScheduleOptions(ChartOptions):
    x: Literal["step", "epoch"] = opt("step", "horizontal axis: optimizer step or (fractional) epoch")
    log_scale: bool = opt(False, "logarithmic learning-rate axis")


@CHARTS.register("lr_schedule", LRScheduleOptions, section="Training",
                 tasks=("classification", "regression"), auto=True)
def lr_schedule(record, options: LRScheduleOptions):
    """The learning rate the optimizer used, by step or epoch (warm-up and decay included)."""
    import altair as alt

    curve = {k: np.asarray(v, dtype=float) for k, v in (record.lr_curve or {}).items()}
    x_key = options.x
    if "lr" in curve and len(curve["lr"]):
        if x_key not in curve:
            x_key = "epoch" if "epoch" in curve else "step"
        if x_key not in curve:
            curve[x_key] = np.arange(len(curve["lr"]), dtype=float)
        lr, xs = curve["lr"], curve[x_key]
        other = "epoch" if x_key == "step" else "step"
        extra = curve.get(other)
    else:
        # Older records: only the per-epoch lr in the history.
        hist = [h for h in record.history if num(h.get("lr")) is not None and num(h.get("epoch")) is not None]
        if not hist:
            raise ChartSkip("the run recorded no learning rate")
        x_key, other, extra = "epoch", None, None
        xs = np.array([float(h["epoch"]) for h in hist])
        lr = np.array([float(h["lr"]) for h in hist])
    n = min(len(xs), len(lr))
    idx = even_indices(n, MAX_ROWS)
    values = []
    for i in idx:
        v = num(lr[i])
        if v is None:
            continue
        row = {x_key: float(xs[i]), "lr": v}
        if extra is not None and i < len(extra):
            row[other] = float(extra[i])
        values.append(row)
    if not values:
        raise ChartSkip("the recorded learning rates are not finite")
    log = options.log_scale and all(r["lr"] > 0 for r in values)
    lrs = [r["lr"] for r in values]
    notes = [f"peak {max(lrs):.3g}, final {lrs[-1]:.3g}"]
    if len(idx) < n:
        notes.append(f"{len(idx)} of {n} points shown")
    width, height = size(options, 420, 220)
    tooltip = [alt.Tooltip(f"{x_key}:Q", format="~g"), alt.Tooltip("lr:Q", title="learning rate", format=".4~g")]
    if other and extra is not None:
        tooltip.insert(1, alt.Tooltip(f"{other}:Q", format=".3~f"))
    hover = alt.selection_point(fields=[x_key], nearest=True, on="pointerover", empty=False,
                                clear="pointerout")
    data = DataSets()
    base = alt.Chart(data("lr", values)).encode(
        x=alt.X(f"{x_key}:Q", title=x_key),
        y=alt.Y("lr:Q", title="learning rate", axis=alt.Axis(format="~e" if log else "~g"),
                scale=alt.Scale(type="log" if log else "linear", zero=not log)),
    )
    line = base.mark_line(strokeWidth=2, color="#4c78a8").add_params(alt.selection_interval(bind="scales", encodings=["x"]))
    points = base.mark_circle(size=48, color="#4c78a8").encode(
        opacity=alt.condition(hover, alt.value(1), alt.value(0)), tooltip=tooltip).add_params(hover)
    return data.attach(alt.layer(line, points).properties(
        width=width, height=height, title=title(options, "Learning-rate schedule", notes)))


# --- gradients ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class GradientsOptions(ChartOptions):
    log_scale: bool = opt(True, "logarithmic y axis (linear when a norm is 0)")
    layers: Optional[tuple[str, ...]] = opt(None, "layer indices to show; default: every layer with parameters (at most 20)")


@CHARTS.register("gradients", GradientsOptions, section="Training",
                 tasks=("classification", "regression"), auto=True)
def gradients(record, options: GradientsOptions):
    """The gradient norm of each layer's parameters by epoch (the mean over the epoch's steps).

    Vanishing gradients show as a layer's line falling towards 0, exploding ones as a climb.
    Click a legend entry to pick out a layer; hover for values; drag to pan, scroll to zoom.
    """
    import altair as alt

    from compilers.charts.base import index_key, layer_label, pick_layers

    grads = {str(k): np.asarray(v, dtype=float).ravel() for k, v in (record.gradients or {}).items()}
    grads = {k: v for k, v in grads.items() if v.size}
    if not grads:
        raise ChartSkip("the run recorded no gradient norms (a run records them when its plots include "
                        "gradients, as plots: auto does)")
    have = sorted(grads, key=index_key)
    wanted, notes = pick_layers(have, options.layers, "gradient norms", 20)
    n = max(len(grads[k]) for k in wanted)
    epochs = history_epochs(record, n)
    per_layer = max(2, MAX_ROWS // len(wanted))
    idx = even_indices(n, per_layer)
    if len(idx) < n:
        notes.append(f"{len(idx)} of {n} epochs shown, evenly spaced")
    labels = {k: layer_label(record, k) for k in wanted}
    values, bad = [], []
    for k in wanted:
        g = grads[k]
        for i in idx:
            if i >= len(g):
                continue
            v = num(g[i])
            if v is None:
                bad.append(k)
                continue
            values.append({"layer": labels[k], "epoch": epochs[i], "norm": v})
    if not values:
        raise ChartSkip("every recorded gradient norm is NaN or infinite")
    if bad:
        first = sorted(set(bad), key=index_key)
        notes.append(f"non-finite norms left out (layer {', '.join(first[:4])})")
    log = options.log_scale and all(v["norm"] > 0 for v in values)
    if options.log_scale and not log:
        notes.append("linear scale: some norms are 0")
    last = {}
    for v in values:
        last[v["layer"]] = v["norm"]
    top = max(last, key=last.get)
    notes.insert(0, "global L2 norm of each layer's parameter gradients, mean over each epoch's steps"
                 + (f"; largest at the end: {top}" if len(last) > 1 else ""))
    notes.append("click a legend entry to pick a layer; drag to pan, scroll to zoom")
    order = [labels[k] for k in wanted]
    shown = sorted({v["epoch"] for v in values})
    width, height = size(options, 440, 260)
    pick = alt.selection_point(name="pick", fields=["layer"], bind="legend")
    hover = alt.selection_point(name="hover", fields=["layer", "epoch"], nearest=True, on="pointerover",
                                empty=False, clear="pointerout")
    zoom = alt.selection_interval(name="zoom", bind="scales")
    color = alt.Color("layer:N", title="layer", sort=order,
                      scale=alt.Scale(domain=order, scheme="tableau10" if len(order) <= 10 else "tableau20"),
                      legend=alt.Legend(labelLimit=220, symbolType="stroke", symbolStrokeWidth=3))
    scale = alt.Scale(type="log", nice=False, padding=4) if log else alt.Scale(zero=False)
    data = DataSets()
    base = alt.Chart(data("norms", values)).encode(
        x=alt.X("epoch:Q", title="epoch", scale=alt.Scale(zero=False, nice=False, padding=6),
                # Few epochs: one tick each (Vega would put ticks at halves, labelled "2, 2, 3, 3").
                axis=alt.Axis(values=shown, format="~d") if len(shown) <= 12 else alt.Axis(tickMinStep=1, format="~d")),
        # Log scale: "~g" keeps decade labels short (0.01, 0.1, 1); greedy overlap drops the minor ones.
        y=alt.Y("norm:Q", title="gradient norm" + (" (log scale)" if log else ""), scale=scale,
                axis=alt.Axis(format="~g", labelOverlap="greedy", tickCount=6) if log else alt.Axis(tickCount=6)),
        color=color)
    line = base.mark_line(strokeWidth=2).encode(opacity=alt.condition(pick, alt.value(0.95), alt.value(0.1)))
    one = len(idx) == 1
    points = base.mark_circle(size=50).encode(
        opacity=alt.condition(hover, alt.value(1), alt.value(0.9 if one else 0)),
        tooltip=[alt.Tooltip("layer:N"), alt.Tooltip("epoch:Q", format="~g"),
                 alt.Tooltip("norm:Q", title="gradient norm", format=".4~g")],
    ).add_params(pick, hover, zoom)   # every selection on one layer
    return data.attach(alt.layer(line, points).properties(
        width=width, height=height, title=title(options, "Gradient norms by layer", notes)))

