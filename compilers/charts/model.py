"""Model charts: the architecture, a layer's weights, activations, weight histograms, activation functions."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from compilers.charts.base import (pick_layers, MAX_ROWS, ChartSkip, DataSets, clamp, even_indices, fmt_int, history_epochs,
                                   index_key, layer_label, size, tick_values, title)
from dsl.registry import CHARTS, opt
from dsl.spec import ChartOptions


def _shape(shape) -> str:
    if shape is None:
        return ""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def total_params(record) -> int:
    """Sum of the top-level rows' parameter counts (a block's row counts the layers inside it)."""
    return int(sum(int(layer.get("params") or 0) for layer in record.layers if not layer.get("depth")))


@dataclass(frozen=True)
class ArchitectureOptions(ChartOptions):
    row_height: int = opt(22, "pixels per layer row", gt=0)


@CHARTS.register("architecture", ArchitectureOptions, section="Model",
                 tasks=("classification", "regression"), auto=True)
def architecture(record, options: ArchitectureOptions):
    """One row per layer, nested layers indented: kind, output shape and parameter count."""
    import altair as alt

    if not record.layers:
        raise ChartSkip("the run recorded no layers")
    total = total_params(record)
    values = []
    for row, layer in enumerate(record.layers):
        depth = int(layer.get("depth") or 0)
        kind = str(layer.get("kind", "?"))
        act = layer.get("activation")
        label = f"{layer.get('index', row)}  {kind}" + (f" ({act})" if act and act != kind else "")
        params = int(layer.get("params") or 0)
        shapes = layer.get("param_shapes") or {}
        values.append({
            "row": row, "label": label, "indent": 6 + 16 * depth,
            "shape": _shape(layer.get("output_shape")),
            "params": params, "params_text": fmt_int(params) if params else "–",
            "share": params / total if total else 0.0,
            "weights": ", ".join(f"{k} {_shape(v)}" for k, v in shapes.items()) or "none",
            "path": str(layer.get("path", "")),
        })
    width, _ = size(options, 420, 0)
    step = options.row_height
    height = options.height or step * len(values)
    y = alt.Y("row:O", axis=None)
    tooltip = [alt.Tooltip("label:N", title="layer"), alt.Tooltip("path:N", title="spec key"),
               alt.Tooltip("shape:N", title="output shape"), alt.Tooltip("params:Q", format=","),
               alt.Tooltip("share:Q", title="share of parameters", format=".1%"),
               alt.Tooltip("weights:N", title="weights")]
    data = DataSets()
    base = alt.Chart(data("layers", values)).encode(y=y, tooltip=tooltip)
    longest = max(len(v["label"]) + v["indent"] // 7 for v in values)
    name_w = clamp(7 * longest + 10, 110, 260)
    shape_w = clamp(7 * max(len(v["shape"]) for v in values) + 10, 70, 160)
    bar_w = max(80, width - name_w - shape_w)
    names = base.mark_text(align="left", baseline="middle", fontSize=12).encode(
        x=alt.X("indent:Q", scale=None), text="label:N").properties(
        width=name_w, height=height, title=alt.TitleParams("layer", fontSize=12, fontWeight="bold"))
    shapes = base.mark_text(align="left", baseline="middle", fontSize=12, font="monospace").encode(
        x=alt.value(0), text="shape:N").properties(
        width=shape_w, height=height, title=alt.TitleParams("output shape", fontSize=12, fontWeight="bold"))
    top = max(v["params"] for v in values) or 1
    x_params = alt.X("params:Q", axis=None, scale=alt.Scale(domain=[0, top * 1.45]))
    bars = base.mark_bar(color="#4c78a8", height={"band": 0.7}).encode(x=x_params)
    counts = base.mark_text(align="left", baseline="middle", dx=4, fontSize=12).encode(
        x=x_params, text="params_text:N")
    params = alt.layer(bars, counts).properties(
        width=bar_w, height=height, title=alt.TitleParams("parameters", fontSize=12, fontWeight="bold"))
    summary_params = (record.summary or {}).get("params")
    notes = [f"{len(values)} layers"]
    if isinstance(summary_params, int) and summary_params != total:
        notes.append(f"the trainer counted {fmt_int(summary_params)} in all")
    return data.attach(alt.hconcat(names, shapes, params, spacing=8).resolve_scale(y="shared").properties(
        title=title(options, f"Architecture: {fmt_int(total)} parameters", notes)))


@dataclass(frozen=True)
class WeightsOptions(ChartOptions):
    layer: Optional[str] = opt(None, "layer index as in `validate` (e.g. 0, or 2.1 inside a block); default: the first layer with a kernel")
    max_filters: Optional[int] = opt(None, "conv layers: most filters shown; default 32 (one input channel) or 12", gt=0, le=256)
    max_channels: int = opt(4, "conv layers: most input channels shown", gt=0, le=64)


def kernel_layers(record) -> list[str]:
    """Indices of the layers with a kernel, in layer order."""
    order = {str(layer.get("index")): i for i, layer in enumerate(record.layers)}
    have = [k for k, w in record.weights.items() if "kernel" in w and np.asarray(w["kernel"]).ndim >= 2]
    return sorted(have, key=lambda k: (order.get(k, len(order)), _index_key(k)))


def _index_key(index: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in str(index).split("."))


@CHARTS.register("weights", WeightsOptions, section="Model", positional="layer",
                 tasks=("classification", "regression"), auto=False)
def weights(record, options: WeightsOptions):
    """Heatmap of a layer's kernel (inputs x units); a convolution's filters as a grid.

    Blue is negative, red positive, white 0. Kernels with more than 5000 weights show every n-th
    input (and unit), as the subtitle says. `layer` is the index `validate` prints (0, or 2.1 for
    the second layer inside block 2); by default the first layer that has a kernel.
    """
    import altair as alt

    have = kernel_layers(record)
    if not have:
        raise ChartSkip("no layer of this model has a kernel")
    layer = have[0] if options.layer is None else str(options.layer).strip()
    if layer not in record.weights or "kernel" not in record.weights[layer] \
            or np.asarray(record.weights[layer]["kernel"]).ndim < 2:
        what = "has no kernel" if layer in record.weights or _known(record, layer) else "does not exist"
        raise ChartSkip(f"layer {layer} {what}; layers with a kernel: {', '.join(have)}")
    kernel = np.asarray(record.weights[layer]["kernel"], dtype=float)
    info = next((r for r in record.layers if str(r.get("index")) == layer), {})
    kind = info.get("kind", "layer")
    if kernel.ndim == 2:
        return _dense_heatmap(record, options, layer, kind, kernel)
    return _conv_grid(options, layer, kind, kernel)


def _known(record, layer: str) -> bool:
    return any(str(r.get("index")) == layer for r in record.layers)


def _diverging(lim: float, title_: str, length: int):
    import altair as alt

    return alt.Color("w:Q", title=title_, scale=alt.Scale(scheme="redblue", reverse=True, domain=[-lim, lim]),
                     legend=alt.Legend(gradientLength=clamp(length, 60, 200), format=".2~f"))


def _dense_heatmap(record, options, layer, kind, kernel):
    import altair as alt

    n_in, n_out = kernel.shape
    # Too many cells: keep every s-th input and unit (real weights; block means would wash out),
    # with round strides so that the kept indices read well on the axes.
    si = sj = 1
    while math.ceil(n_in / si) * math.ceil(n_out / sj) > MAX_ROWS:
        if math.ceil(n_in / si) >= math.ceil(n_out / sj):
            si = _next_stride(si)
        else:
            sj = _next_stride(sj)
    rows_idx, cols_idx = np.arange(0, n_in, si), np.arange(0, n_out, sj)
    rn, rm = len(rows_idx), len(cols_idx)
    # Name the inputs where this layer reads the features directly.
    features = list(record.feature_names or [])
    first = (str(record.layers[0].get("index")) == layer) if record.layers else layer == "0"
    use_names = rn == n_in and first and len(features) == n_in and n_in <= 40
    values = [{"i": int(i), "j": int(j), "input": features[i] if use_names else int(i), "w": float(kernel[i, j])}
              for i in rows_idx for j in cols_idx]
    lim = float(np.max(np.abs(kernel[np.ix_(rows_idx, cols_idx)]))) or 1.0
    width, height = size(options, clamp(rm * clamp(420 / rm, 4, 28), 120, 420),
                         clamp(rn * clamp(420 / rn, 4, 22), 60, 420))
    x_ticks = [int(cols_idx[k]) for k in tick_values(rm, max(2, width // 30))]
    y_ticks = [int(rows_idx[k]) for k in tick_values(rn, max(2, height // 15))]
    notes = [f"kernel {n_in} inputs x {n_out} units; |w| max {np.max(np.abs(kernel)):.3g}, "
             f"mean {kernel.mean():.3g}, sd {kernel.std():.3g}"]
    if si > 1 or sj > 1:
        notes.append(" and ".join(f"every {_nth(st)} {what} ({k} of {n})" for st, what, k, n in
                                  ((si, "input", rn, n_in), (sj, "unit", rm, n_out)) if st > 1) + " shown")
    if use_names:
        expr = "[" + ",".join(_js_str(f) for f in features) + "][datum.value]"
        y_axis = alt.Axis(labelExpr=expr, labelLimit=140)
    else:
        y_axis = alt.Axis(values=y_ticks)
    data = DataSets()
    chart = alt.Chart(data("cells", values)).mark_rect().encode(
        x=alt.X("j:O", title="unit", axis=alt.Axis(values=x_ticks, labelAngle=0)),
        y=alt.Y("i:O", title="input feature" if use_names else "input", axis=y_axis),
        color=_diverging(lim, "weight", height),
        tooltip=[alt.Tooltip("input:N"), alt.Tooltip("j:O", title="unit"),
                 alt.Tooltip("w:Q", title="weight", format=".4f")],
    )
    return data.attach(chart.properties(width=width, height=height,
                                        title=title(options, f"Weights of layer {layer} ({kind})", notes)))


_STRIDES = (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 128, 200, 250, 256, 500, 512, 1000)


def _next_stride(s: int) -> int:
    return next((t for t in _STRIDES if t > s), s * 2)


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _js_str(s: str) -> str:
    import json

    return json.dumps(str(s)).replace("<", "\\u003c")


def _conv_grid(options, layer, kind, kernel):
    import altair as alt

    if kernel.ndim == 3:  # 1-D conv: [k, cin, cout] -> [1, k, cin, cout]
        kernel = kernel[None]
    if kernel.ndim != 4:
        raise ChartSkip(f"layer {layer}'s kernel has shape {list(kernel.shape)}, which this chart cannot draw")
    kh, kw, cin, cout = kernel.shape
    n_in = min(cin, options.max_channels)
    # One input channel: filters wrap in rows of 8. Several: a row per input channel and a column
    # per filter, which cannot wrap, so fewer filters by default.
    n_out = min(cout, options.max_filters or (32 if n_in == 1 else 12))
    while kh * kw * n_in * n_out > MAX_ROWS and n_out > 1:
        n_out -= 1
    while kh * kw * n_in * n_out > MAX_ROWS and n_in > 1:
        n_in -= 1
    if kh * kw * n_in * n_out > MAX_ROWS:
        raise ChartSkip(f"layer {layer}'s {kh}x{kw} filters are too large to draw")
    shown = kernel[:, :, :n_in, :n_out]
    lim = float(np.max(np.abs(shown))) or 1.0
    values = [{"r": r, "c": c, "in": i, "filter": o, "w": float(shown[r, c, i, o])}
              for o in range(n_out) for i in range(n_in) for r in range(kh) for c in range(kw)]
    notes = [f"kernel {kh}x{kw}, {cin} input channel{'s' * (cin != 1)}, {cout} filters; "
             f"|w| max {np.max(np.abs(kernel)):.3g}"]
    limited = ([f"the first {n_out} of {cout} filters"] if n_out < cout else []) + \
        ([f"the first {n_in} of {cin} input channels"] if n_in < cin else [])
    if limited:
        notes.append(" and ".join(limited) + " shown (options max_filters, max_channels)")
    columns = min(n_out, 8) if n_in == 1 else n_out
    spacing = 6 if n_in == 1 else 4
    # Cells sized so the grid is about 420 pixels wide (or the `width` option).
    cell = clamp(((options.width or 420) - spacing * (columns - 1)) / (columns * kw), 2, 24)
    rows = math.ceil(n_out / columns) if n_in == 1 else n_in
    grid_h = rows * (cell * kh + spacing + 16)
    header = alt.Header(labelFontSize=10, labelPadding=2)
    chart = alt.Chart().mark_rect().encode(
        x=alt.X("c:O", axis=None), y=alt.Y("r:O", axis=None),
        color=_diverging(lim, "weight", min(160, grid_h)),
        tooltip=[alt.Tooltip("filter:O"), alt.Tooltip("in:O", title="input channel"),
                 alt.Tooltip("r:O", title="row"), alt.Tooltip("c:O", title="column"),
                 alt.Tooltip("w:Q", title="weight", format=".4f")],
    ).properties(width=cell * kw, height=cell * kh)
    data = DataSets()
    if n_in == 1:
        grid = chart.facet(facet=alt.Facet("filter:O", title="filter", header=header),
                           columns=columns, spacing=spacing, data=data("cells", values))
    else:
        grid = chart.facet(row=alt.Row("in:O", title="input channel", header=alt.Header(
                               labelFontSize=10, labelAngle=0, labelPadding=4, titleFontSize=11)),
                           column=alt.Column("filter:O", title="filter", header=header),
                           spacing=spacing, data=data("cells", values))
    return data.attach(grid.properties(title=title(options, f"Filters of layer {layer} ({kind})", notes)))


@dataclass(frozen=True)
class ActivationsOptions(ChartOptions):
    layers: Optional[tuple[str, ...]] = opt(None, "layer indices to show; default: every layer but dropout (at most 12)")


RELU_LIKE = ("relu",)


@CHARTS.register("activations", ActivationsOptions, section="Model", tasks=("classification", "regression"), auto=True)
def activations(record, options: ActivationsOptions):
    """Each layer's output distribution on validation data, with the fraction of dead units."""
    import altair as alt

    if not record.activations:
        raise ChartSkip("the run recorded no activation statistics")
    rows_by_index = {str(r.get("index")): r for r in record.layers}
    wanted = list(options.layers) if options.layers else [
        k for k in sorted(record.activations, key=_index_key)
        if rows_by_index.get(k, {}).get("kind") != "dropout"][:12]
    missing = [k for k in wanted if k not in record.activations]
    if missing:
        raise ChartSkip(f"no activations recorded for layer {missing[0]}; recorded: "
                        + ", ".join(sorted(record.activations, key=_index_key)))
    values = []
    order = []
    for k in wanted:
        a = record.activations[k]
        row = rows_by_index.get(k, {})
        kind = str(row.get("kind", "layer"))
        act = row.get("activation")
        label = f"{k} {kind}" + (f" ({act})" if act and act != kind else "")
        if row.get("path") == "model.head":
            label = f"{k} head (logits)"
        dead = float(a.get("dead_fraction", 0.0))
        if (act or kind) in RELU_LIKE:
            label += f": {dead:.0%} of units dead"
        else:
            label += f": mean {float(a.get('mean', 0.0)):.2g}, std {float(a.get('std', 0.0)):.2g}"
        order.append(label)
        counts = np.asarray(a["counts"], dtype=float)
        edges = np.asarray(a["edges"], dtype=float)
        total = counts.sum() or 1.0
        for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
            values.append({"layer": label, "lo": float(lo), "hi": float(hi), "share": float(c / total),
                           "count": int(c)})
    width, height = size(options, 380, 70)
    data = DataSets()
    chart = alt.Chart(data("bins", values)).mark_bar(color="#4c78a8", opacity=0.85).encode(
        x=alt.X("lo:Q", title="output value", axis=alt.Axis(tickCount=6)),
        x2="hi:Q",
        y=alt.Y("share:Q", title=None, axis=alt.Axis(format="%", tickCount=2)),
        y2=alt.datum(0),
        tooltip=[alt.Tooltip("layer:N"), alt.Tooltip("lo:Q", title="from", format=".3g"),
                 alt.Tooltip("hi:Q", title="to", format=".3g"), alt.Tooltip("count:Q", title="values"),
                 alt.Tooltip("share:Q", title="share", format=".1%")],
    ).properties(width=width, height=height).facet(
        row=alt.Row("layer:N", sort=order, title=None,
                    header=alt.Header(labelAngle=0, labelAlign="left", labelAnchor="start", labelOrient="top",
                                      labelFontSize=12)),
    ).resolve_scale(x="independent", y="independent")
    return data.attach(chart.properties(title=title(
        options, "Activations", "output of each layer on validation data after training (share of values per bin)")))


# --- weight histograms -------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightHistogramsOptions(ChartOptions):
    layers: Optional[tuple[str, ...]] = opt(None, "layer indices to show; default: every recorded layer (at most 12)")
    columns: int = opt(3, "panels per row", gt=0, le=8)
    color_scale: Literal["sqrt", "linear", "log"] = opt("sqrt", "colour scale of the counts (sqrt shows the tails)")


@CHARTS.register("weight_histograms", WeightHistogramsOptions, section="Model",
                 tasks=("classification", "regression"), auto=True)
def weight_histograms(record, options: WeightHistogramsOptions):
    """How each layer's weights are distributed over training, as TensorBoard's distributions.

    One panel per layer: epoch across, weight value up, colour the share of the layer's weights
    in each bin at the end of that epoch (kernel, or the layer's first parameter). Weights that
    spread or drift show as the band widening or moving. `width` and `height` are per panel.
    """
    import altair as alt

    hist = {}
    for k, d in (record.weight_histograms or {}).items():
        counts = np.asarray(d.get("counts", []), dtype=float)
        edges = np.asarray(d.get("edges", []), dtype=float).ravel()
        if counts.ndim == 1 and counts.size and len(edges) == counts.size + 1:
            counts = counts[None]
        if counts.ndim == 2 and counts.shape[0] and len(edges) == counts.shape[1] + 1:
            hist[str(k)] = (counts, edges)
    if not hist:
        raise ChartSkip("the run recorded no weight histograms")
    have = sorted(hist, key=index_key)
    wanted, notes = pick_layers(have, options.layers, "weight histograms", 12)
    n = max(hist[k][0].shape[0] for k in wanted)
    bins = max(hist[k][0].shape[1] for k in wanted)
    epochs = history_epochs(record, n)
    idx = even_indices(n, max(1, MAX_ROWS // (len(wanted) * bins)))
    if len(idx) < n:
        notes.append(f"{len(idx)} of {n} epochs shown, evenly spaced")
    shown = [epochs[i] for i in idx]
    # Each shown epoch's cell spans halfway to its neighbours.
    mids = [(a + b) / 2 for a, b in zip(shown[:-1], shown[1:])]
    x0 = [shown[0] - 0.5] + mids
    x1 = mids + [shown[-1] + 0.5]
    order, values = [], []
    for k in wanted:
        counts, edges = hist[k]
        label = layer_label(record, k)
        order.append(label)
        for col, i in enumerate(idx):
            if i >= counts.shape[0]:
                continue
            row = np.nan_to_num(counts[i], nan=0.0, posinf=0.0, neginf=0.0)
            total = row.sum() or 1.0
            for b, c in enumerate(row):
                if c <= 0:
                    continue   # empty cells: white background, no row
                values.append({"layer": label, "epoch": epochs[i], "e0": x0[col], "e1": x1[col],
                               "lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(round(c)),
                               "share": float(c / total)})
    if not values:
        raise ChartSkip("the recorded weight histograms are empty")
    notes.insert(0, "share of each layer's weights per value bin at the end of every epoch"
                 + ("; " + ("a single epoch" if n == 1 else f"{n} epochs")))
    cols = min(options.columns, len(wanted))
    width, height = size(options, clamp(640 / cols - 40, 150, 320), 150)
    top = max(v["share"] for v in values)
    kind = options.color_scale
    scale = (alt.Scale(type="log", scheme="viridis", domain=[max(min(v["share"] for v in values), 1e-5), top])
             if kind == "log" else alt.Scale(type=kind, scheme="viridis", domain=[0, top], zero=True))
    data = DataSets()
    chart = alt.Chart().mark_rect().encode(
        x=alt.X("e0:Q", title="epoch", scale=alt.Scale(domain=[x0[0], x1[-1]], nice=False, zero=False),
                axis=alt.Axis(values=shown, format="~d", grid=False) if len(shown) <= 12
                else alt.Axis(tickMinStep=1, format="~d", tickCount=6, grid=False)),
        x2="e1:Q",
        # labelFlush: a label at the very top would lift this panel's header above its neighbours'.
        y=alt.Y("lo:Q", title="weight", scale=alt.Scale(zero=False, nice=False),
                axis=alt.Axis(tickCount=5, grid=False, labelFlush=True)),
        y2="hi:Q",
        color=alt.Color("share:Q", title="share", scale=scale,
                        legend=alt.Legend(format=".0%" if top >= 0.05 else ".1%", gradientLength=clamp(height, 80, 180))),
        tooltip=[alt.Tooltip("layer:N"), alt.Tooltip("epoch:Q", format="~g"),
                 alt.Tooltip("lo:Q", title="weights from", format=".4~g"), alt.Tooltip("hi:Q", title="to", format=".4~g"),
                 alt.Tooltip("count:Q", title="weights"), alt.Tooltip("share:Q", format=".2%")],
    ).properties(width=width, height=height)
    grid = chart.facet(
        facet=alt.Facet("layer:N", sort=order, title=None,
                        header=alt.Header(labelFontSize=12, labelLimit=width + 30, labelPadding=4)),
        columns=cols, data=data("cells", values), spacing={"row": 16, "column": 20},
    ).resolve_scale(x="independent", y="independent")   # an epoch axis under every panel, none under a gap
    return data.attach(grid.properties(title=title(options, "Weight distributions over training", notes)))


# --- activation functions ----------------------------------------------------------------------

ACTIVATION_NAMES = ("relu", "gelu", "tanh", "sigmoid", "elu", "leaky_relu", "swish", "softplus", "softmax")
# Layers that apply activations inside them (not listed as an `activation` of any row).
INSIDE = {"lstm": ("sigmoid", "tanh"), "gru": ("sigmoid", "tanh"), "rnn": ("tanh",),
          "attention": ("softmax",), "transformer": ("gelu", "softmax")}


@functools.lru_cache(maxsize=64)
def _activation_curve(name: str, x_range: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """f(x) and f'(x) (jax.grad) of an activation at n points on [-x_range, x_range], as the model
    computes it (compilers.model.layers.activation_fn, default options); softmax as softmax([x, 0])[0]."""
    import jax
    import jax.numpy as jnp

    from compilers.model.layers import activation_fn

    fn = activation_fn(name)
    if name == "softmax":
        def scalar(x):
            return fn(jnp.stack([x, jnp.zeros_like(x)]))[0]
    else:
        scalar = fn
    x = jnp.linspace(-x_range, x_range, n, dtype=jnp.float32)
    f = np.asarray(jax.vmap(scalar)(x), dtype=float)
    df = np.asarray(jax.vmap(jax.grad(scalar))(x), dtype=float)
    f.flags.writeable = df.flags.writeable = False
    return f, df


@dataclass(frozen=True)
class ActivationFunctionsOptions(ChartOptions):
    x_range: float = opt(4.0, "x runs from -x_range to x_range", gt=0, le=50)
    columns: int = opt(3, "panels per row", gt=0, le=8)
    inside: bool = opt(True, "also the activations inside lstm, gru, rnn, attention and transformer layers")


@CHARTS.register("activation_functions", ActivationFunctionsOptions, section="Model",
                 tasks=("classification", "regression"), auto=False)
def activation_functions(record, options: ActivationFunctionsOptions):
    """Each activation function the model uses, f(x) and its derivative f'(x) (by jax.grad).

    Where the derivative is near 0 (a saturated sigmoid or tanh, a relu below 0), gradients
    vanish. Softmax acts on a vector: its panel shows the first output of softmax([x, 0]).
    Hover for values; click a legend entry to pick f or f'. `width` and `height` are per panel.
    """
    import altair as alt

    used: dict[str, list[str]] = {}
    for row in record.layers:
        kind = str(row.get("kind", ""))
        act = row.get("activation")
        index = str(row.get("index", "?"))
        if act in ACTIVATION_NAMES:
            used.setdefault(str(act), []).append(index)
        elif kind in ACTIVATION_NAMES:
            used.setdefault(kind, []).append(index)
        if options.inside and kind in INSIDE:
            for a in INSIDE[kind]:
                used.setdefault(a, []).append(f"{index} (inside {kind})")
    if not used:
        raise ChartSkip("the model uses no activation function" if record.layers
                        else "the run recorded no layers")
    names = [a for a in ACTIVATION_NAMES if a in used]
    xs = np.linspace(-options.x_range, options.x_range, 161)
    values, heads = [], []
    for a in names:
        head = "softmax([x, 0])[0]" if a == "softmax" else a
        layers = used[a]
        head += "  (layer " + ", ".join(layers[:3]) + (" ..." if len(layers) > 3 else "") + ")"
        heads.append(head)
        f, df = _activation_curve(a, float(options.x_range), len(xs))
        for xv, fv, dv in zip(xs, f, df):
            values.append({"activation": head, "x": round(float(xv), 4), "fn": "f(x)", "y": float(fv)})
            values.append({"activation": head, "x": round(float(xv), 4), "fn": "f'(x)", "y": float(dv)})
    cols = min(options.columns, len(names))
    width, height = size(options, clamp(620 / cols - 30, 140, 260), 140)
    pick = alt.selection_point(name="pick", fields=["fn"], bind="legend")
    hover = alt.selection_point(name="hover", fields=["x"], nearest=True, on="pointerover", empty=False,
                                clear="pointerout")
    base = alt.Chart().encode(
        x=alt.X("x:Q", title="x", scale=alt.Scale(domain=[-options.x_range, options.x_range], nice=False),
                axis=alt.Axis(tickCount=5)),
        y=alt.Y("y:Q", title=None, axis=alt.Axis(tickCount=5)),
        color=alt.Color("fn:N", title=None, sort=["f(x)", "f'(x)"],
                        scale=alt.Scale(domain=["f(x)", "f'(x)"], range=["#4c78a8", "#e45756"]),
                        legend=alt.Legend(orient="top", direction="horizontal", symbolType="stroke",
                                          symbolStrokeWidth=3)))
    zero = alt.Chart().mark_rule(color="#bbb", strokeWidth=1).encode(y=alt.datum(0)).transform_filter(
        "datum.x == 0 && datum.fn == 'f(x)'")   # one rule per panel, not one per row
    line = base.mark_line(strokeWidth=2).encode(
        strokeDash=alt.StrokeDash("fn:N", sort=["f(x)", "f'(x)"], legend=None,
                                  scale=alt.Scale(domain=["f(x)", "f'(x)"], range=[[1, 0], [5, 3]])),
        opacity=alt.condition(pick, alt.value(1), alt.value(0.15)))
    points = base.mark_circle(size=40).encode(
        opacity=alt.condition(hover, alt.value(1), alt.value(0)),
        tooltip=[alt.Tooltip("activation:N"), alt.Tooltip("fn:N", title="curve"),
                 alt.Tooltip("x:Q", format=".2f"), alt.Tooltip("y:Q", title="value", format=".4f")],
    ).add_params(pick, hover)   # every selection on one layer
    data = DataSets()
    chart = alt.layer(zero, line, points).properties(width=width, height=height).facet(
        facet=alt.Facet("activation:N", sort=heads, title=None,
                        header=alt.Header(labelFontSize=12, labelLimit=width + 40, labelPadding=4)),
        columns=cols, data=data("curves", values), spacing={"row": 16, "column": 20},
    ).resolve_scale(x="independent", y="independent")   # an x axis under every panel, none under a gap
    notes = [f"each activation the model uses on [-{options.x_range:g}, {options.x_range:g}]; "
             "f'(x) computed with jax.grad (dashed)"]
    if any(a in ("elu", "leaky_relu") for a in names):
        notes.append("elu and leaky_relu drawn with their default alpha 1 and slope 0.01")
    return data.attach(chart.properties(title=title(options, "Activation functions", notes)))
