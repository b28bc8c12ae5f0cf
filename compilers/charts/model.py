"""Model charts: the architecture table and a layer's weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from compilers.charts.base import MAX_ROWS, ChartSkip, DataSets, clamp, fmt_int, size, tick_values, title
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
