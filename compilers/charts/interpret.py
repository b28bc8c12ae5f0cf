"""Pictures of what the model sees: example inputs, mistakes, feature maps, saliency, embedding, attention.

Every chart reads the probes the trainer leaves in the RunRecord (`examples`, `feature_maps`,
`embedding`, `attention`, `vocabulary`; see compilers/runs/record.py) and skips with a one-line
reason when the run has none of them, or when its inputs are not the kind the chart draws.

Pictures are PNG data URLs (`data:image/png;base64,...`) drawn by Vega-Lite `image` marks with
`smooth: false`, so every pixel stays a sharp square at any size and the spec stays one
self-contained value (report.html works offline; vl-convert renders them to PNG and SVG). The
PNGs are encoded here with zlib (no imaging library): an 8x8 grey digit is ~100 bytes, a 28x28
RGB image ~2 KB, where a heatmap of rect marks would cost one data row (~60 bytes) per pixel.
Images are laid out on one canvas in pixel coordinates (`scale: null`), with captions as text
marks; tooltips sit on the images (their labels and numbers, not single pixels).
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from compilers.charts.base import (MAX_ROWS, ChartSkip, DataSets, clamp, class_names, fmt_int, point_style,
                                   size, tick_values, title)
from dsl.registry import CHARTS, opt
from dsl.spec import ChartOptions

BOTH = ("classification", "regression")
RIGHT, WRONG, INK, MUTED = "#2f7d32", "#c62828", "#222", "#666"

# Colour ramps for heat pictures (anchors, interpolated linearly in RGB).
VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
           "#b5de2b", "#fde725")
STORED_MAX = 128   # longest side of a stored picture: pictures are drawn at most 112 CSS pixels
HEAT = ("#fffaf3", "#fee8c8", "#fdbb84", "#fc8d59", "#e34a33", "#b30000", "#5e0000")   # saliency


# --- PNG data URLs ---------------------------------------------------------------------------------

def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 [h, w] (grey) or [h, w, 3] (RGB) -> a PNG file (8 bits per channel, no filtering)."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"png_bytes takes [h, w] or [h, w, 3] pixels, got shape {list(a.shape)}")
    h, w = a.shape[:2]
    colour_type = 0 if a.ndim == 2 else 2
    raw = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, -1)], axis=1).tobytes()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def png_url(pixels: np.ndarray, most: int | tuple[int, int] = STORED_MAX) -> str:
    """A data URL of the pixels, shrunk (block means) where a side is longer than `most`
    (one limit for both sides, keeping the aspect ratio, or (rows, columns) each on its own)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(shrink(pixels, most))).decode("ascii")


def shrink(pixels: np.ndarray, most: int | tuple[int, int]) -> np.ndarray:
    """uint8 pixels with no side longer than its limit: each output pixel the mean of its block."""
    h, w = pixels.shape[:2]
    if isinstance(most, tuple):
        fh, fw = h / most[0], w / most[1]
    else:
        fh = fw = max(h, w) / most
    if fh <= 1 and fw <= 1:
        return pixels
    a = np.asarray(pixels, dtype=float)
    for axis, n, f in ((0, h, fh), (1, w, fw)):
        if f <= 1:
            continue
        edges = np.linspace(0, n, max(1, round(n / f)) + 1).round().astype(int)
        counts = np.diff(edges).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
        a = np.add.reduceat(a, edges[:-1], axis=axis) / counts
    return np.round(a).astype(np.uint8)


def to_unit(a: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Values scaled to [0, 1] between lo and hi (default: the array's own min and max)."""
    a = np.nan_to_num(np.asarray(a, dtype=float))
    lo = float(a.min()) if lo is None else lo
    hi = float(a.max()) if hi is None else hi
    if hi - lo <= 1e-12:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def colormap(unit: np.ndarray, anchors: tuple[str, ...]) -> np.ndarray:
    """[h, w] values in [0, 1] -> uint8 [h, w, 3] along a ramp of hex colours."""
    rgb = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in anchors], dtype=float)
    stops = np.linspace(0.0, 1.0, len(anchors))
    u = np.clip(np.asarray(unit, dtype=float), 0, 1)
    out = np.stack([np.interp(u, stops, rgb[:, k]) for k in range(3)], axis=-1)
    return np.round(out).astype(np.uint8)


def display_image(x: np.ndarray) -> tuple[np.ndarray, str]:
    """One input image [H, W, C] -> (uint8 pixels for png_url, how it was scaled).

    1 channel: grey; 3 or 4: RGB (alpha dropped); any other count: the first channel in grey.
    Values already in [0, 1] are shown as they are; others are scaled to the image's own range.
    """
    x = np.nan_to_num(np.asarray(x, dtype=float))
    if x.ndim == 2:
        x = x[:, :, None]
    x = x[:, :, :3] if x.shape[2] >= 3 else x[:, :, :1]
    if x.min() >= 0.0 and x.max() <= 1.0:
        unit, how = x, "as recorded"
    else:
        unit, how = to_unit(x), "each image scaled to its own range"
    pixels = np.round(unit * 255).astype(np.uint8)
    return (pixels[:, :, 0] if pixels.shape[2] == 1 else pixels), how


def picture_side(h: int, w: int, target: int = 64, most: int = 112) -> tuple[int, int]:
    """Display size in CSS pixels: a whole multiple of the image size near `target` when the image
    is small (8x8 -> 64, 28x28 -> 56), else the longer side scaled down to `most`."""
    longest = max(h, w)
    k = max(1, round(target / longest))
    if longest * k <= most:
        return w * k, h * k
    f = most / longest
    return max(1, round(w * f)), max(1, round(h * f))


def text_width(text: str, font_size: float = 11) -> float:
    """A rough width in pixels of `text` in the house sans-serif font."""
    return len(str(text)) * font_size * 0.58


# --- what the record holds -------------------------------------------------------------------------

def input_kind(record) -> str:
    """'image' ([k, H, W, C]), 'tokens' ([k, T] ids with a vocabulary), 'tabular' ([k, F]),
    'sequence' ([k, T, C]), or 'none' (no examples recorded)."""
    x = record.examples.get("x") if record.examples else None
    if x is None or np.asarray(x).size == 0:
        return "none"
    x = np.asarray(x)
    if x.ndim == 2:
        return "tokens" if record.vocabulary else "tabular"
    if x.ndim == 3:
        return "sequence"
    if x.ndim == 4:
        return "image"
    return f"{x.ndim - 1}-D"


def _need_examples(record, chart: str, kinds: tuple[str, ...]) -> tuple[str, np.ndarray]:
    kind = input_kind(record)
    if kind == "none":
        raise ChartSkip(f"the run recorded no example inputs, which {chart} draws")
    if kind not in kinds:
        x = np.asarray(record.examples["x"])
        what = {"tabular": "tabular (one row of features each)", "tokens": "token sequences",
                "sequence": "sequences", "image": "images"}.get(kind, kind)
        want = " or ".join({"image": "images", "tokens": "token sequences", "tabular": "tabular rows"}[k]
                           for k in kinds)
        raise ChartSkip(f"{chart} draws {want}, and this run's inputs are {what} "
                        f"(shape {_shape(x.shape[1:])})")
    return kind, np.asarray(record.examples["x"])


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def outcomes(record, n: int) -> list[dict]:
    """For each of the first n recorded examples: its test row, true and predicted label (text),
    the probability of the prediction (classification) and whether it is right."""
    rows = record.examples.get("row") if record.examples else None
    pred = record.predictions.get("test") or {}
    empty = [{"i": i, "row": None, "true": None, "pred": None, "p": None, "correct": None} for i in range(n)]
    if rows is None or "y_true" not in pred:
        return empty
    rows = np.asarray(rows).astype(int)[:n]
    y_true = np.asarray(pred["y_true"])
    y_pred = np.asarray(pred["y_pred"]) if "y_pred" in pred else None
    if len(rows) < n or rows.max(initial=-1) >= len(y_true) or rows.min(initial=0) < 0:
        return empty
    out = []
    if record.task == "classification":
        k = max(len(record.class_names or []), int(y_true.max(initial=0)) + 1,
                int(y_pred.max(initial=0)) + 1 if y_pred is not None else 0)
        names = class_names(record, k)
        proba = np.asarray(pred["proba"], dtype=float) if "proba" in pred else None
        if proba is not None and proba.ndim == 2 and proba.shape[1] == 1:
            proba = proba[:, 0]
        if proba is not None and proba.ndim == 1:      # one sigmoid column: P(class 1)
            proba = np.stack([1 - proba, proba], axis=1)
        for i, r in enumerate(rows):
            t = int(y_true[r])
            p = int(y_pred[r]) if y_pred is not None else None
            prob = float(proba[r, p]) if proba is not None and p is not None and p < proba.shape[1] else None
            out.append({"i": i, "row": int(r), "true": names[t], "pred": None if p is None else names[p],
                        "p": prob, "correct": None if p is None else p == t})
        return out
    for i, r in enumerate(rows):
        t = float(y_true[r])
        p = float(y_pred[r]) if y_pred is not None else None
        out.append({"i": i, "row": int(r), "true": f"{t:.4g}", "pred": None if p is None else f"{p:.4g}",
                    "p": None, "correct": None})
    return out


def spread(record, outs: list[dict], n: int) -> tuple[list[dict], bool]:
    """n of the recorded examples: for classification, taken in turn from each true class (so a
    test split in class order still shows every class) and then grouped by class; else the first n.
    Also says whether the choice differs from the first n."""
    if record.task != "classification" or not outs or outs[0]["true"] is None or n >= len(outs):
        return outs[:n], False
    order = {name: i for i, name in enumerate(class_names(record, 0))}
    by_class: dict[str, list[dict]] = {}
    for o in outs:
        by_class.setdefault(o["true"], []).append(o)
    queues = [by_class[c] for c in sorted(by_class, key=lambda c: (order.get(c, len(order)), c))]
    picked: list[dict] = []
    depth = 0
    while len(picked) < n:
        picked += [q[depth] for q in queues if depth < len(q)][:n - len(picked)]
        depth += 1
    picked.sort(key=lambda o: (order.get(o["true"], len(order)), o["i"]))
    return picked, [o["i"] for o in picked] != list(range(n))


def _fields(o: dict) -> dict:
    """The tooltip fields of one example's outcome (JSON values)."""
    return {"example": o["i"], "test_row": o["row"], "true": o["true"], "pred": o["pred"],
            "p": None if o["p"] is None else round(o["p"], 4),
            "outcome": None if o["correct"] is None else ("right" if o["correct"] else "wrong")}


def pred_text(o: dict) -> str:
    """'pred X (0.93)': the prediction of one example's outcome and its probability ('' if none)."""
    if o["pred"] is None:
        return ""
    return f"pred {o['pred']}" + (f" ({o['p']:.2f})" if o["p"] is not None else "")


def heading(o: dict) -> str:
    """'example 3: true X, pred Y (0.93)' for a row of pictures or tokens."""
    text = f"example {o['i']}"
    if o["true"] is not None:
        text += f": true {o['true']}"
        if o["pred"] is not None:
            text += ", " + pred_text(o)
    return text


def _tooltip(extra=()):
    import altair as alt

    return [alt.Tooltip("example:O"), alt.Tooltip("test_row:O", title="test row"),
            alt.Tooltip("true:N", title="true"), alt.Tooltip("pred:N", title="predicted"),
            alt.Tooltip("p:Q", title="probability of the prediction", format=".3f"),
            alt.Tooltip("outcome:N"), *extra]


def token_texts(record, ids: np.ndarray) -> tuple[list[int], list[str]]:
    """The non-padding positions of one example's token ids, and their tokens."""
    vocab = record.vocabulary or []
    ids = np.asarray(ids).astype(int).ravel()
    keep = [t for t in range(len(ids)) if ids[t] != 0]
    return keep, [str(vocab[ids[t]]) if 0 <= ids[t] < len(vocab) else f"#{ids[t]}" for t in keep]


def layer_name(record, index: str) -> str:
    info = next((r for r in record.layers if str(r.get("index")) == str(index)), None)
    return f"layer {index} ({info.get('kind', 'layer')})" if info else f"layer {index}"


def _index_key(index: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in str(index).split("."))


def _pick_layer(record, probes: dict, option: Optional[str], what: str) -> str:
    if not probes:
        raise ChartSkip(f"the run recorded no {what}")
    have = sorted(probes, key=_index_key)
    layer = have[0] if option is None else str(option).strip()
    if layer not in probes:
        raise ChartSkip(f"no {what} recorded for layer {layer}; recorded for: {', '.join(have)}")
    return layer


# --- a canvas of pictures and captions -------------------------------------------------------------

class Canvas:
    """Pictures and text placed in pixel coordinates on one Vega-Lite view.

    `image(x, y, w, h, url, **fields)` puts a w x h picture with its top-left corner at (x, y)
    (image marks with x/x2/y/y2 and `aspect: false`, so pictures of any size share one layer);
    `text(x, y, text, align=..., ink=...)` a caption. `chart(data, key, tooltip)` layers the
    pictures, a thin frame round each and the text.
    """

    def __init__(self, frame: bool = True) -> None:
        self.frame = frame
        self.images: list[dict] = []
        self.texts: list[dict] = []

    def image(self, x: float, y: float, w: float, h: float, url: str, **fields) -> None:
        self.images.append({"x": round(x, 1), "y": round(y, 1), "x2": round(x + w, 1),
                            "y2": round(y + h, 1), "url": url, **fields})

    def text(self, x: float, y: float, text: str, align: str = "center", ink: str = INK,
             size: int = 11, bold: bool = False, limit: float = 0, **fields) -> None:
        self.texts.append({"x": round(x, 1), "y": round(y, 1), "text": str(text), "align": align,
                           "ink": ink, "size": size, "bold": bold, "limit": round(limit), **fields})

    def extent(self) -> tuple[int, int]:
        def right(r):
            w = min(r["limit"] or 1e9, text_width(r["text"], r["size"]))
            return r["x"] + w * {"left": 1, "center": 0.5, "right": 0}[r["align"]]

        xs = [r["x2"] for r in self.images] + [right(r) for r in self.texts]
        ys = [r["y2"] for r in self.images] + [r["y"] + r["size"] + 3 for r in self.texts]
        return math.ceil(max(xs, default=1)) + 1, math.ceil(max(ys, default=1)) + 1

    def chart(self, data: DataSets, key: str, tooltip: list, text_tooltip: list | None = None) -> object:
        import altair as alt

        width, height = self.extent()
        px = {"x": alt.X("x:Q", scale=None, axis=None), "y": alt.Y("y:Q", scale=None, axis=None)}
        layers = []
        if self.images:
            pics = alt.Chart(data(f"{key}_images", self.images))
            layers.append(pics.mark_image(smooth=False, aspect=False, aria=False).encode(
                x2="x2:Q", y2="y2:Q", url="url:N", tooltip=tooltip, **px))
            if self.frame:
                layers.append(pics.mark_rect(filled=False, stroke="#9e9e9e", strokeWidth=0.5).encode(
                    x2="x2:Q", y2="y2:Q", tooltip=tooltip, **px))
        if self.texts:
            words = alt.Chart(data(f"{key}_text", self.texts))
            # Alignment, size, weight and width limit are mark properties: a layer per combination.
            styles = sorted({(r["align"], r["size"], r["bold"], r["limit"]) for r in self.texts})
            for align, fsize, bold, limit in styles:
                cond = (f"datum.align == '{align}' && datum.size == {fsize} && "
                        f"datum.bold == {'true' if bold else 'false'} && datum.limit == {limit}")
                enc = {"text": "text:N", "color": alt.Color("ink:N", scale=None), **px}
                if text_tooltip:
                    enc["tooltip"] = text_tooltip
                layers.append(words.transform_filter(cond).mark_text(
                    align=align, baseline="top", fontSize=fsize, fontWeight="bold" if bold else "normal",
                    limit=limit).encode(**enc))
        return alt.layer(*layers).properties(width=width, height=height)


# --- samples ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplesOptions(ChartOptions):
    count: int = opt(32, "how many examples (the run records at most 64)", gt=0, le=64)
    columns: int = opt(8, "pictures per row", gt=0, le=32)


@CHARTS.register("samples", SamplesOptions, section="Data", tasks=BOTH, auto=True, inputs=("image", "tokens"))
def samples(record, options: SamplesOptions):
    """A grid of test examples as the model sees them, each with its true label.

    Images: grey for one channel, RGB for three. Token inputs: the text of each example (padding
    dropped) beside its label. Tabular data has no pictures: the chart is skipped.
    """
    kind, x = _need_examples(record, "samples", ("image", "tokens"))
    n = min(options.count, len(x))
    outs, mixed = spread(record, outcomes(record, len(x)), n)
    picked = [o["i"] for o in outs]
    notes = [f"{n} of the {len(x)} recorded test examples, taken in turn from each class"] if mixed else []
    if kind == "tokens":
        notes.append(f"label: the true {'class' if record.task == 'classification' else 'value'}")
        return _token_table(record, options, x[picked], outs, f"Samples: {n} test examples", notes)
    data = DataSets()
    tiles, how = [], None
    for o in outs:
        pixels, how = display_image(x[o["i"]])
        cap = [] if o["true"] is None else [(o["true"], INK)]
        tiles.append(([png_url(pixels)], cap, _fields(o)))
    canvas = _grid(tiles, x.shape[1], x.shape[2], options)
    h, w, c = x.shape[1:]
    shown = "" if c in (1, 3) else "; RGB shown, alpha dropped" if c == 4 else "; channel 0 shown in grey"
    notes.append(f"{h}x{w} pixels, {c} channel{'s' * (c != 1)}{shown}, {how}"
                 + ("" if outs[0]["true"] is None else "; caption: the true label"))
    return data.attach(canvas.chart(data, "samples", _tooltip()).properties(
        title=title(options, f"Samples: {n} test examples", notes)))


def _grid(tiles: list, h: int, w: int, options, panels: int = 1, gap: int = 10) -> Canvas:
    """Tiles (urls of `panels` pictures side by side, caption lines [(text, ink)], fields) in rows."""
    columns = min(options.columns, len(tiles))
    if options.width:
        per = max(8, (options.width - gap * (columns - 1)) / columns)
        k = (per - 4 * (panels - 1)) / panels / max(h, w)
        pw, ph = max(4, round(w * k)), max(4, round(h * k))
    else:
        pw, ph = picture_side(h, w)
    lines = max((len(t[1]) for t in tiles), default=0)
    caption_w = max((text_width(s) for t in tiles for s, _ in t[1]), default=0)
    pics_w = panels * pw + 4 * (panels - 1)
    tile_w = max(pics_w, min(150, caption_w + 4))
    tile_h = ph + 4 + 14 * lines
    canvas = Canvas()
    for n, (urls, caption, fields) in enumerate(tiles):
        r, c = divmod(n, columns)
        x0, y0 = c * (tile_w + gap), r * (tile_h + gap)
        left = x0 + (tile_w - pics_w) / 2
        for p, url in enumerate(urls):
            canvas.image(left + p * (pw + 4), y0, pw, ph, url, panel=p, **fields)
        for k, (line, ink) in enumerate(caption):
            canvas.text(x0 + tile_w / 2, y0 + ph + 3 + 14 * k, line, ink=ink, limit=tile_w)
    return canvas


def _token_table(record, options, ids: np.ndarray, outs: list[dict], heading: str, notes: list[str],
                 mistakes: bool = False):
    """One line per example: its label(s), then its tokens as text (cut to the width)."""
    import altair as alt

    rows = []
    for i, o in enumerate(outs):
        _, toks = token_texts(record, ids[i])
        text = " ".join(toks) or "(empty)"
        if mistakes:
            label = f"{pred_text(o)} / true {o['true']}"
        else:
            label = o["true"] if o["true"] is not None else ""
        rows.append({"label": label, "text": text, "example": o["i"], "tokens": len(toks),
                     "full": text if len(text) <= 400 else text[:399] + "…"})
    label_w = clamp(max(text_width(r["label"]) for r in rows) + 16, 50, 260)
    width = options.width or clamp(label_w + max(text_width(r["text"]) for r in rows) + 8, 240, 720)
    canvas = Canvas()
    canvas.text(0, 0, "label", align="left", ink=MUTED, bold=True, limit=label_w - 10,
                example=None, tokens=None, full=None)
    canvas.text(label_w, 0, "tokens (padding dropped)", align="left", ink=MUTED, bold=True,
                example=None, tokens=None, full=None)
    for n, r in enumerate(rows):
        y = 22 + n * 18
        more = {k: r[k] for k in ("example", "full", "tokens")}
        canvas.text(0, y, r["label"], align="left", ink=WRONG if mistakes else INK, limit=label_w - 10, **more)
        canvas.text(label_w, y, r["text"], align="left", limit=width - label_w, **more)
    data = DataSets()
    tip = [alt.Tooltip("example:O"), alt.Tooltip("tokens:Q"), alt.Tooltip("full:N", title="text")]
    chart = canvas.chart(data, "rows", tip, text_tooltip=tip)
    return data.attach(chart.properties(width=width, title=title(options, heading, notes)))


# --- misclassified ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MisclassifiedOptions(ChartOptions):
    count: int = opt(32, "most examples shown (the most confident mistakes first)", gt=0, le=64)
    columns: int = opt(8, "pictures per row", gt=0, le=32)


@CHARTS.register("misclassified", MisclassifiedOptions, section="Interpretation",
                 tasks=("classification",), auto=True, inputs=("image", "tokens"))
def misclassified(record, options: MisclassifiedOptions):
    """The recorded test examples the model gets wrong, most confident mistakes first.

    Each is captioned with the predicted class and its probability, and the true class.
    Images as pictures, token inputs as text; tabular data is skipped.
    """
    if record.task != "classification":
        raise ChartSkip(f"misclassified applies to classification, and this run is {record.task}")
    kind, x = _need_examples(record, "misclassified", ("image", "tokens"))
    outs = outcomes(record, len(x))
    if not outs or outs[0]["correct"] is None:
        raise ChartSkip("the run has no test predictions for its recorded examples")
    wrong = [o for o in outs if not o["correct"]]
    if not wrong:
        raise ChartSkip(f"all {len(outs)} recorded test examples are classified correctly")
    wrong.sort(key=lambda o: (-(o["p"] if o["p"] is not None else 0), o["i"]))
    shown = wrong[:options.count]
    notes = [f"{len(wrong)} of {len(outs)} recorded test examples {'is' if len(wrong) == 1 else 'are'} wrong"
             + (f", the {len(shown)} most confident shown" if len(shown) < len(wrong) else "")
             + "; most confident mistake first"]
    heading = f"Misclassified: {len(wrong)} of {len(outs)} examples"
    if kind == "tokens":
        return _token_table(record, options, x[[o["i"] for o in shown]], shown, heading, notes, mistakes=True)
    data = DataSets()
    tiles = []
    how = None
    for o in shown:
        pixels, how = display_image(x[o["i"]])
        tiles.append(([png_url(pixels)], [(pred_text(o), WRONG), (f"true {o['true']}", INK)], _fields(o)))
    canvas = _grid(tiles, x.shape[1], x.shape[2], options)
    notes.append(f"caption: predicted class (its probability), true class; pixels {how}")
    return data.attach(canvas.chart(data, "wrong", _tooltip()).properties(title=title(options, heading, notes)))


# --- feature maps ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureMapsOptions(ChartOptions):
    layer: Optional[str] = opt(None, "conv layer index as in `validate`; default: the first with recorded maps")
    max_channels: int = opt(8, "most channels (columns) shown", gt=0, le=64)
    count: int = opt(4, "examples (rows) shown", gt=0, le=8)


@CHARTS.register("feature_maps", FeatureMapsOptions, section="Interpretation", positional="layer",
                 tasks=BOTH, auto=False)
def feature_maps(record, options: FeatureMapsOptions):
    """A conv layer's outputs for a few test examples: one row per example, one column per channel.

    Colour is viridis, each channel scaled to its own range over the examples shown (so rows
    compare). 2-D maps as pictures beside the input image; 1-D maps as channel x time strips.
    """
    layer = _pick_layer(record, record.feature_maps, options.layer, "feature maps")
    maps = np.nan_to_num(np.asarray(record.feature_maps[layer], dtype=float))
    if maps.ndim not in (3, 4) or len(maps) == 0:
        raise ChartSkip(f"layer {layer}'s feature maps have shape {list(maps.shape)}, which this chart cannot draw")
    k = min(options.count, len(maps))
    channels = maps.shape[-1]
    nc = min(options.max_channels, channels)
    shown = maps[:k, ..., :nc]
    lo = shown.reshape(-1, nc).min(0)
    hi = shown.reshape(-1, nc).max(0)
    outs = outcomes(record, k)
    name = layer_name(record, layer)
    notes = [f"{k} test example{'s' * (k != 1)}, channels 0-{nc - 1} of {channels}"
             if nc > 1 else f"{k} test examples, channel 0 of {channels}"]
    data = DataSets()
    if maps.ndim == 4:
        chart = _maps_2d(record, options, shown, lo, hi, outs, notes, data)
    else:
        chart = _maps_1d(options, shown, lo, hi, outs, notes, data)
    notes.append("each channel scaled to its own range over these examples (viridis: dark low, yellow high)")
    return data.attach(chart.properties(title=title(options, f"Feature maps of {name}", notes)))


def _map_fields(m: np.ndarray | None, c: int | None) -> dict:
    """Tooltip numbers of one map (None for the input picture, so every row has the same keys)."""
    if m is None:
        return {"channel": None, "min": None, "max": None, "mean": None, "zero": None}
    return {"channel": c, "min": round(float(m.min()), 4), "max": round(float(m.max()), 4),
            "mean": round(float(m.mean()), 4), "zero": round(float((m == 0).mean()), 3)}


def _map_tooltip():
    import altair as alt

    return _tooltip([alt.Tooltip("channel:O"), alt.Tooltip("min:Q", format=".3g"),
                     alt.Tooltip("max:Q", format=".3g"), alt.Tooltip("mean:Q", format=".3g"),
                     alt.Tooltip("zero:Q", title="share of zeros", format=".0%")])


def _maps_2d(record, options, shown, lo, hi, outs, notes, data):
    """[k, H, W, C]: a row per example (its input first, when recorded), a column per channel."""
    k, h, w, nc = shown.shape
    x = np.asarray(record.examples["x"]) if input_kind(record) == "image" else None
    has_input = x is not None and len(x) >= k
    cols = nc + (1 if has_input else 0)
    gap, top = 6, 16
    if options.width:
        side = max(4, (options.width - gap * (cols - 1) - (gap if has_input else 0)) / cols)
        pw, ph = max(4, round(w * side / max(h, w))), max(4, round(h * side / max(h, w)))
    else:
        pw, ph = picture_side(h, w, target=56, most=80)
    iw, ih = picture_side(x.shape[1], x.shape[2], target=56, most=80) if has_input else (0, 0)
    labelled = has_input and outs[0]["true"] is not None
    x0 = iw + 2 * gap if has_input else 0
    row_h = max(ph, ih + (14 if labelled else 0)) + gap
    canvas = Canvas()
    for c in range(nc):
        canvas.text(x0 + c * (pw + gap) + pw / 2, 0, f"ch {c}", ink=MUTED, size=10)
    if has_input:
        canvas.text(iw / 2, 0, "input", ink=MUTED, size=10)
    for r in range(k):
        y0 = top + r * row_h
        fields = _fields(outs[r])
        if has_input:
            pixels, _ = display_image(x[r])
            canvas.image(0, y0, iw, ih, png_url(pixels), **fields, **_map_fields(None, None))
            if labelled:
                canvas.text(iw / 2, y0 + ih + 2, f"true {outs[r]['true']}", size=10, limit=iw + gap)
        for c in range(nc):
            m = shown[r, :, :, c]
            url = png_url(colormap(to_unit(m, lo[c], hi[c]), VIRIDIS))
            canvas.image(x0 + c * (pw + gap), y0, pw, ph, url, **fields, **_map_fields(m, c))
    return canvas.chart(data, "maps", _map_tooltip())


def _maps_1d(options, shown, lo, hi, outs, notes, data):
    """[k, T, C]: per example a strip of channels (rows) over time (columns)."""
    k, t, nc = shown.shape
    strip_w = options.width or clamp(t * 4, 240, 560)
    row_px = clamp(96 / nc, 8, 16)
    label_w = 44
    canvas = Canvas()
    y = 0
    for r in range(k):
        o = outs[r]
        canvas.text(label_w, y, heading(o), align="left")
        y += 16
        unit = np.stack([to_unit(shown[r, :, c], lo[c], hi[c]) for c in range(nc)])   # [C, T]
        url = png_url(colormap(unit, VIRIDIS), (nc, 2 * strip_w))     # shrink along time only
        canvas.image(label_w, y, strip_w, row_px * nc, url, **_fields(o),
                     **_map_fields(shown[r], None), steps=t)
        for c in range(nc):
            canvas.text(label_w - 4, y + c * row_px + max(0, (row_px - 10) / 2), f"ch {c}", align="right",
                        ink=MUTED, size=9 if row_px < 12 else 10)
        y += row_px * nc + 12
    notes.append(f"time runs left to right over {t} steps; each row of a strip is one channel")
    return canvas.chart(data, "strips", _map_tooltip())


# --- saliency --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SaliencyOptions(ChartOptions):
    count: int = opt(8, "examples shown (images and token inputs)", gt=0, le=64)
    columns: int = opt(4, "images: (input, saliency) pairs per row", gt=0, le=16)
    max_features: int = opt(30, "tabular data: most features shown (the largest)", gt=0, le=500)


@CHARTS.register("saliency", SaliencyOptions, section="Interpretation", tasks=BOTH, auto=False)
def saliency(record, options: SaliencyOptions):
    """Which inputs the output is most sensitive to: |d output / d input| on test examples.

    Images: each input beside its gradient map (largest over channels, scaled per example,
    dark red = most sensitive). Token inputs: each token shaded by its attribution. Tabular
    data: the mean absolute gradient of every feature over the recorded examples, as sorted bars.
    """
    kind, x = _need_examples(record, "saliency", ("image", "tokens", "tabular"))
    sal = record.examples.get("saliency")
    if sal is None or np.asarray(sal).size == 0:
        raise ChartSkip("the run recorded no saliency (input gradients) for its examples")
    sal = np.abs(np.nan_to_num(np.asarray(sal, dtype=float)))
    if len(sal) != len(x):
        raise ChartSkip(f"the run recorded saliency for {len(sal)} examples and inputs for {len(x)}")
    if kind == "tabular":
        return _saliency_tabular(record, options, x, sal)
    if kind == "tokens":
        return _saliency_tokens(record, options, x, sal)
    if sal.shape[:3] != x.shape[:3]:
        raise ChartSkip(f"the recorded saliency has shape {list(sal.shape)}, not that of the inputs {list(x.shape)}")
    n = min(options.count, len(x))
    outs, mixed = spread(record, outcomes(record, len(x)), n)
    data = DataSets()
    tiles = []
    for o in outs:
        i = o["i"]
        pixels, _ = display_image(x[i])
        s = sal[i] if sal[i].ndim == 2 else sal[i].max(axis=-1)
        top = float(np.percentile(s, 99)) or float(s.max())
        heat = colormap(to_unit(s, 0.0, top), HEAT)
        cap = []
        if o["true"] is not None:
            cap.append((f"true {o['true']}", INK))
            if o["pred"] is not None:
                cap.append((pred_text(o), WRONG if o["correct"] is False else INK))
        tiles.append(([png_url(pixels), png_url(heat)], cap, {**_fields(o), "peak": round(float(s.max()), 6)}))
    canvas = _grid(tiles, x.shape[1], x.shape[2], options, panels=2, gap=16)
    import altair as alt

    score = "the true class's score" if record.task == "classification" else "the prediction"
    notes = [f"{n} test examples" + (", taken in turn from each class" if mixed else "")
             + ": each input, then its saliency map",
             f"|gradient| of {score} per pixel (largest over channels), scaled to the map's 99th percentile",
             "dark red: the pixels the output is most sensitive to"]
    chart = canvas.chart(data, "saliency", _tooltip([alt.Tooltip("peak:Q", title="largest |gradient|", format=".3g")]))
    return data.attach(chart.properties(title=title(options, "Saliency: input gradients", notes)))


def _saliency_tabular(record, options, x, sal):
    import altair as alt

    if sal.ndim != 2 or sal.shape[1] != x.shape[1]:
        raise ChartSkip(f"the recorded saliency has shape {list(sal.shape)}, not one value per feature")
    mean = sal.mean(axis=0)
    f = len(mean)
    names = list(record.feature_names or [])
    names = names if len(names) == f else [f"x{i}" for i in range(f)]
    order = np.argsort(-mean, kind="stable")[:options.max_features]
    total = float(mean.sum()) or 1.0
    values = [{"feature": names[i], "index": int(i), "mean_abs": float(mean[i]), "share": float(mean[i] / total),
               "sd": float(sal[:, i].std())} for i in order]
    notes = [f"mean |d output / d feature| over {len(sal)} test examples, after preprocessing"]
    if len(order) < f:
        notes.append(f"the {len(order)} largest of {f} features shown (option max_features)")
    width, height = size(options, 380, clamp(18 * len(values), 80, 640))
    data = DataSets()
    chart = alt.Chart(data("features", values)).mark_bar(color="#d6604d").encode(
        y=alt.Y("feature:N", sort=[v["feature"] for v in values], title=None, axis=alt.Axis(labelLimit=180)),
        x=alt.X("mean_abs:Q", title="mean |gradient|"),
        tooltip=[alt.Tooltip("feature:N"), alt.Tooltip("mean_abs:Q", title="mean |gradient|", format=".4g"),
                 alt.Tooltip("sd:Q", title="sd over examples", format=".3g"),
                 alt.Tooltip("share:Q", title="share of the total", format=".1%")],
    )
    return data.attach(chart.properties(width=width, height=height,
                                        title=title(options, "Saliency: feature attributions", notes)))


def _saliency_tokens(record, options, ids, sal):
    """Each example's tokens flowed into lines, every token on a cell shaded by its attribution."""
    import altair as alt

    if sal.ndim != 2 or sal.shape[1] != ids.shape[1]:
        raise ChartSkip(f"the recorded saliency has shape {list(sal.shape)}, not one value per token")
    n = min(options.count, len(ids))
    outs, mixed = spread(record, outcomes(record, len(ids)), n)
    width = options.width or 640
    cells, heads = [], []
    y, line_h = 0, 20
    budget = MAX_ROWS // max(n, 1) - 2
    cut = []
    for o in outs:
        i = o["i"]
        keep, toks = token_texts(record, ids[i])
        if len(keep) > budget:
            cut.append(i)
            keep, toks = keep[:budget], toks[:budget]
        a = sal[i, keep] if keep else np.zeros(0)
        top = float(a.max()) if len(a) else 0.0
        heads.append({"x": 0, "y": y, "text": heading(o), "wrong": o["correct"] is False})
        y += 18
        cx = 0.0
        for pos, tok, v in zip(keep, toks, a):
            shown = tok if len(tok) <= 16 else tok[:15] + "…"
            w = text_width(shown, 11) + 8
            if cx > 0 and cx + w > width:
                cx, y = 0.0, y + line_h
            cells.append({"x": round(cx, 1), "x2": round(cx + w - 2, 1), "y": y, "y2": y + line_h - 3,
                          "tx": round(cx + (w - 2) / 2, 1), "ty": y + 3, "token": shown, "full": tok,
                          "position": int(pos), "attribution": float(v),
                          "rel": float(v / top) if top > 0 else 0.0, "example": i})
            cx += w
        y += line_h + 12
    if not cells:
        raise ChartSkip("the recorded examples have no tokens besides padding")
    px = lambda f: alt.X(f"{f}:Q", scale=None, axis=None)   # noqa: E731
    py = lambda f: alt.Y(f"{f}:Q", scale=None, axis=None)   # noqa: E731
    data = DataSets()
    tip = [alt.Tooltip("example:O"), alt.Tooltip("full:N", title="token"), alt.Tooltip("position:O"),
           alt.Tooltip("attribution:Q", format=".3g"), alt.Tooltip("rel:Q", title="share of the example's largest",
                                                                   format=".0%")]
    base = alt.Chart(data("tokens", cells))
    rects = base.mark_rect(cornerRadius=2).encode(
        x=px("x"), x2="x2:Q", y=py("y"), y2="y2:Q", tooltip=tip,
        color=alt.Color("rel:Q", title="attribution",
                        scale=alt.Scale(domain=[float(v) for v in np.linspace(0, 1, len(HEAT)).round(3)],
                                        range=list(HEAT)),
                        legend=alt.Legend(orient="top", format=".0%", gradientLength=200, values=[0, 0.5, 1],
                                          titleLimit=300)))
    words = base.mark_text(baseline="top", fontSize=11).encode(
        x=px("tx"), y=py("ty"), text="token:N", tooltip=tip,
        color=alt.condition("datum.rel > 0.6", alt.value("white"), alt.value(INK)))
    titles = alt.Chart(data("heads", heads)).mark_text(align="left", baseline="top", fontSize=11,
                                                       fontWeight="bold").encode(
        x=px("x"), y=py("y"), text="text:N",
        # A condition, not `ink` with scale null: layers share the colour scale of the cells.
        color=alt.condition("datum.wrong", alt.value(WRONG), alt.value(INK)))
    notes = [f"{n} test examples" + (", taken in turn from each class" if mixed else "")
             + "; the recorded attribution of each token (padding dropped)",
             "each example shaded relative to its own largest attribution"]
    if cut:
        notes.append(f"the first {budget} tokens of long examples shown")
    used = max(max(c["x2"] for c in cells), max(text_width(h["text"], 11) * 1.08 for h in heads))
    return data.attach(alt.layer(rects, words, titles).properties(
        width=options.width or math.ceil(min(width, used) + 2), height=y,
        title=title(options, "Saliency: token attributions", notes)))


# --- embedding -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmbeddingOptions(ChartOptions):
    method: Literal["pca", "tsne"] = opt("pca", "projection to 2-D: pca (fast, linear) or tsne (scikit-learn, slower)")


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection of the centred points on their first two principal axes, and the share of the
    variance each of the two explains."""
    centred = points - points.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2
    share = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    comps = min(2, vt.shape[0])
    proj = centred @ vt[:comps].T
    if comps < 2:
        proj = np.concatenate([proj, np.zeros((len(proj), 2 - comps))], axis=1)
        share = np.concatenate([share, np.zeros(2 - comps)])
    return proj, share[:2]


@CHARTS.register("embedding", EmbeddingOptions, section="Interpretation", tasks=BOTH, auto=True)
def embedding(record, options: EmbeddingOptions):
    """Test examples' hidden features (the layer before the head) projected to 2-D.

    Coloured by true class (classification; wrong predictions drawn as crosses, click a legend
    entry to pick out a class) or by the target (regression). Drag to pan, scroll to zoom.
    """
    import altair as alt

    pts = record.embedding.get("points") if record.embedding else None
    if pts is None or np.asarray(pts).size == 0:
        raise ChartSkip("the run recorded no hidden features for the embedding")
    pts = np.nan_to_num(np.asarray(pts, dtype=float))
    if pts.ndim != 2 or len(pts) < 3:
        raise ChartSkip(f"the recorded embedding has shape {list(pts.shape)}; it needs [points >= 3, features]")
    n, d = pts.shape
    if options.method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (n - 1) // 3)))
        proj = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=0).fit_transform(pts)
        how, axes = f"t-SNE (perplexity {perplexity:g})", ("t-SNE 1", "t-SNE 2")
    else:
        proj, share = pca_2d(pts)
        how = f"PCA: PC1 {share[0]:.1%}, PC2 {share[1]:.1%} of the variance"
        axes = (f"PC1 ({share[0]:.1%})", f"PC2 ({share[1]:.1%})")
    rows = np.asarray(record.embedding.get("row", np.arange(n))).astype(int)
    pred = record.predictions.get("test") or {}
    where = record.embedding_layer
    at = layer_name(record, where) if where is not None else "the layer before the head"
    notes = [f"{fmt_int(n)} test examples at {at}, "
             f"{d} features; {how}"]
    values = [{"px": float(a), "py": float(b), "test_row": int(r)} for (a, b), r in zip(proj, rows)]
    ok = "y_true" in pred and len(rows) == n and rows.min(initial=0) >= 0 and rows.max(initial=-1) < len(pred["y_true"])
    tooltip = [alt.Tooltip("test_row:O", title="test row")]
    color = alt.value("#4c78a8")
    extra = {}
    params = [alt.selection_interval(bind="scales")]
    if ok and record.task == "classification":
        y_true = np.asarray(pred["y_true"]).astype(int)[rows]
        y_pred = np.asarray(pred["y_pred"]).astype(int)[rows] if "y_pred" in pred else None
        k = max(len(record.class_names or []), int(y_true.max()) + 1,
                int(y_pred.max()) + 1 if y_pred is not None else 0)
        names = class_names(record, k)
        for v, t, i in zip(values, y_true, range(n)):
            v["true"] = names[t]
            if y_pred is not None:
                v["pred"] = names[y_pred[i]]
                v["outcome"] = "right" if y_pred[i] == t else "wrong"
        present = [c for c in names if c in {v["true"] for v in values}]
        pick = alt.selection_point(fields=["true"], bind="legend")
        params.append(pick)
        color = alt.Color("true:N", title="true class", sort=present,
                          scale=alt.Scale(scheme="tableau10" if len(present) <= 10 else "tableau20"),
                          legend=alt.Legend(symbolOpacity=1, columns=1 if len(present) <= 20 else 2))
        extra["opacity"] = alt.condition(pick, alt.value(point_style(n)["opacity"]), alt.value(0.06))
        tooltip += [alt.Tooltip("true:N", title="true"), alt.Tooltip("pred:N", title="predicted"),
                    alt.Tooltip("outcome:N")]
        if y_pred is not None:
            extra["shape"] = alt.Shape("outcome:N", title="prediction", sort=["right", "wrong"],
                                       scale=alt.Scale(domain=["right", "wrong"], range=["circle", "cross"]))
            # Mistakes are few: larger, with a dark outline, so that they stand out in a cluster.
            big = clamp(point_style(n)["size"] * 2.5, 40, 120)
            extra["size"] = alt.condition("datum.outcome == 'wrong'", alt.value(big), alt.value(point_style(n)["size"]))
            extra["stroke"] = alt.condition("datum.outcome == 'wrong'", alt.value("#222"), alt.value(None))
            n_wrong = int((y_pred != y_true).sum())
            notes.append(f"{n_wrong} wrong prediction{'s' * (n_wrong != 1)} drawn as crosses; "
                         "click a legend entry to pick a class, drag to pan, scroll to zoom")
    elif ok:
        y_true = np.asarray(pred["y_true"], dtype=float)[rows]
        for v, t in zip(values, y_true):
            v["target"] = float(t)
        if "y_pred" in pred:
            for v, p in zip(values, np.asarray(pred["y_pred"], dtype=float)[rows]):
                v["pred"] = float(p)
            tooltip.append(alt.Tooltip("pred:Q", title="predicted", format=".4g"))
        tooltip.insert(1, alt.Tooltip("target:Q", title="actual", format=".4g"))
        color = alt.Color("target:Q", title="target", scale=alt.Scale(scheme="viridis"))
        notes.append("drag to pan, scroll to zoom")
    else:
        notes.append("no test predictions for these rows: points are not coloured")
    tooltip += [alt.Tooltip("px:Q", title=axes[0], format=".3g"), alt.Tooltip("py:Q", title=axes[1], format=".3g")]
    style = point_style(n)
    width, height = size(options, 420, 380)
    data = DataSets()
    mark = alt.Chart(data("points", values)).mark_point(filled=True, size=style["size"], opacity=style["opacity"])
    chart = mark.encode(
        x=alt.X("px:Q", title=axes[0], scale=alt.Scale(zero=False), axis=alt.Axis(labels=options.method == "pca")),
        y=alt.Y("py:Q", title=axes[1], scale=alt.Scale(zero=False), axis=alt.Axis(labels=options.method == "pca")),
        color=color, tooltip=tooltip, **extra,
    ).add_params(*params)
    return data.attach(chart.properties(width=width, height=height, title=title(options, "Embedding", notes)))


# --- attention -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttentionOptions(ChartOptions):
    layer: Optional[str] = opt(None, "attention or transformer layer index; default: the first with recorded weights")
    head: int = opt(0, "which head", ge=0)
    count: int = opt(2, "examples shown, side by side", gt=0, le=8)


@CHARTS.register("attention", AttentionOptions, section="Interpretation", positional="layer",
                 tasks=BOTH, auto=False)
def attention(record, options: AttentionOptions):
    """One head's attention weights for a few test examples: rows are the attending (query)
    tokens, columns the tokens attended to (keys); each row sums to 1. Padding is dropped."""
    import altair as alt

    layer = _pick_layer(record, record.attention, options.layer, "attention weights")
    w = np.nan_to_num(np.asarray(record.attention[layer], dtype=float))
    if w.ndim != 4 or w.shape[-1] != w.shape[-2] or len(w) == 0:
        raise ChartSkip(f"layer {layer}'s attention weights have shape {list(w.shape)}, not [examples, heads, T, T]")
    k, heads, t, _ = w.shape
    if options.head >= heads:
        raise ChartSkip(f"layer {layer} has {heads} head{'s' * (heads != 1)} (0-{heads - 1}), not head {options.head}")
    n = min(options.count, k)
    outs = outcomes(record, n)
    x = np.asarray(record.examples.get("x")) if record.examples and "x" in record.examples else None
    tokens = input_kind(record) == "tokens" and x is not None and x.shape[1] == t and len(x) >= n
    most = int(math.sqrt(MAX_ROWS / n))
    per, cut = [], False
    for i in range(n):
        if tokens:
            keep, toks = token_texts(record, x[i])
        else:
            keep, toks = list(range(t)), [str(p) for p in range(t)]
        if not keep:
            keep, toks = list(range(t)), [str(p) for p in range(t)]
        if len(keep) > most:
            keep, toks, cut = keep[:most], toks[:most], True
        per.append((keep, toks))
    top = max(float(w[i, options.head][np.ix_(kp, kp)].max()) for i, (kp, _) in enumerate(per)) or 1.0
    data = DataSets()
    panels = []
    longest = max(len(p[1]) for p in per)
    cell = clamp(360 / longest, 12, 26)
    import json

    for i, (keep, toks) in enumerate(per):
        m = len(keep)
        labels = [s if len(s) <= 14 else s[:13] + "…" for s in toks]
        values = [{"q": a, "k": b, "query": toks[a], "key": toks[b], "qpos": int(keep[a]), "kpos": int(keep[b]),
                   "w": float(w[i, options.head, keep[a], keep[b]])} for a in range(m) for b in range(m)]
        expr = "[" + ",".join(json.dumps(s).replace("<", "\\u003c") for s in labels) + "][datum.value]"
        ticks = tick_values(m, max(2, int(cell * m / 12)))
        o = outs[i]
        head = heading(o)
        panels.append(alt.Chart(data(f"weights_{i}", values)).mark_rect().encode(
            x=alt.X("k:O", title="attended to (key)", axis=alt.Axis(labelExpr=expr, values=ticks, labelAngle=-50,
                                                                     labelLimit=100, labelFontSize=10)),
            y=alt.Y("q:O", title="attending (query)", axis=alt.Axis(labelExpr=expr, values=ticks, labelLimit=100,
                                                                     labelFontSize=10)),
            color=alt.Color("w:Q", title="weight", scale=alt.Scale(
                domain=[0, top / 2, top], range=["#ffffff", "#6baed6", "#08306b"], interpolate="lab")),
            tooltip=[alt.Tooltip("query:N", title="query token"), alt.Tooltip("qpos:O", title="query position"),
                     alt.Tooltip("key:N", title="key token"), alt.Tooltip("kpos:O", title="key position"),
                     alt.Tooltip("w:Q", title="weight", format=".3f")],
        ).properties(width=cell * m, height=cell * m, title=alt.TitleParams(
            head, fontSize=12, fontWeight="normal", color=WRONG if o["correct"] is False else INK)))
    notes = [f"head {options.head} of {heads}; {n} test example{'s' * (n != 1)}"
             + (", padding dropped" if tokens else ", by position")
             + "; each row (a query) sums to 1"]
    if cut:
        notes.append(f"the first {most} positions of longer examples shown")
    chart = panels[0] if len(panels) == 1 else alt.hconcat(*panels, spacing=28)
    return data.attach(chart.properties(title=title(
        options, f"Attention weights of {layer_name(record, layer)}", notes)))


# --- decision boundary ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DecisionBoundaryOptions(ChartOptions):
    points: Literal["test", "train", "none"] = opt(
        "test", "points drawn over the regions: the recorded test examples, the training sample, or none")
    cells: int = opt(50, "grid cells per axis (the recorded grid is averaged down to this)", ge=10, le=70)


@CHARTS.register("decision_boundary", DecisionBoundaryOptions, section="Interpretation",
                 tasks=("classification",), auto=True, inputs=("tabular",), n_features=2)
def decision_boundary(record, options: DecisionBoundaryOptions):
    """Two-feature classification: the predicted class over the plane of the two features.

    Each grid cell is coloured by the class the model predicts there, paler where it is less
    sure (the probability of that class); the points are examples coloured by their true class,
    wrong predictions outlined in black. Axes are in prepared feature units.
    """
    import altair as alt

    if record.task != "classification":
        raise ChartSkip(f"decision_boundary applies to classification, and this run is {record.task}")
    grid = record.decision_grid or {}
    if not grid or "proba" not in grid:
        n = (record.data or {}).get("n_features") or len(record.feature_names or [])
        raise ChartSkip("decision_boundary draws models of two features"
                        + (f"; this one has {n}" if n and n != 2 else "; the run recorded no decision grid"))
    x0, x1 = np.asarray(grid["x0"], dtype=float), np.asarray(grid["x1"], dtype=float)
    proba = np.asarray(grid["proba"], dtype=float)
    if proba.ndim == 2:
        proba = proba[..., None]
    if proba.shape[-1] == 1:                     # one sigmoid column: P(class 1)
        proba = np.concatenate([1 - proba, proba], axis=-1)
    if proba.shape[:2] != (len(x1), len(x0)) or len(x0) < 2 or len(x1) < 2:
        raise ChartSkip(f"the decision grid has shape {list(proba.shape)} for axes of {len(x1)} and {len(x0)} points")
    k = proba.shape[-1]
    names = class_names(record, k)
    feats = list(record.feature_names or [])
    feats = feats if len(feats) == 2 else ["feature 0", "feature 1"]
    # Average the grid down to at most `cells` per axis (blocks of f x f points).
    f = max(1, math.ceil(max(len(x0), len(x1)) / options.cells))
    g1, g0 = len(x1) // f, len(x0) // f
    p = proba[:g1 * f, :g0 * f].reshape(g1, f, g0, f, k).mean(axis=(1, 3))
    c0 = x0[:g0 * f].reshape(g0, f).mean(1)
    c1 = x1[:g1 * f].reshape(g1, f).mean(1)
    step0 = (x0[-1] - x0[0]) / (len(x0) - 1) * f
    step1 = (x1[-1] - x1[0]) / (len(x1) - 1) * f
    cells = []
    for i in range(g1):
        for j in range(g0):
            q = p[i, j]
            if not np.isfinite(q).all():
                continue
            c = int(q.argmax())
            cells.append({"a0": float(c0[j] - step0 / 2), "b0": float(c0[j] + step0 / 2),
                          "a1": float(c1[i] - step1 / 2), "b1": float(c1[i] + step1 / 2),
                          "x0": float(c0[j]), "x1": float(c1[i]), "predicted": names[c], "p": float(q[c])})
    if not cells:
        raise ChartSkip("the decision grid's probabilities are all NaN")
    notes = [f"predicted class over a {g0} x {g1} grid"
             + (f" (the recorded {len(x0)} x {len(x1)} averaged in {f} x {f} blocks)" if f > 1 else "")
             + "; paler where the model is less sure"]
    # The points: recorded test examples, or the training sample of the prepared data.
    pts = []
    if options.points == "test":
        x = np.asarray(record.examples.get("x", np.zeros((0, 2))) if record.examples else np.zeros((0, 2)), dtype=float)
        outs = outcomes(record, len(x)) if x.ndim == 2 and x.shape[1] == 2 else []
        for o, row in list(zip(outs, x))[:max(0, MAX_ROWS - len(cells))]:
            if np.isfinite(row).all():
                pts.append({"v0": float(row[0]), "v1": float(row[1]), "true": o["true"], "pred": o["pred"],
                            "outcome": "right" if o["correct"] else "wrong" if o["correct"] is False else "unknown"})
        what = f"{len(pts)} test examples"
    elif options.points == "train":
        prep = (record.data_sample or {}).get("prepared") or {}
        y = ((record.data_sample or {}).get("prepared_target") or {}).get("y")
        cols = [np.asarray(prep[c], dtype=float) for c in list(prep)[:2]] if len(prep) == 2 else []
        if cols and y is not None and len(y) == len(cols[0]):
            y = np.asarray(y).astype(int)
            keep = np.flatnonzero(np.isfinite(cols[0]) & np.isfinite(cols[1]))
            n_all = len(keep)
            room = max(0, min(1500, MAX_ROWS - len(cells)))   # with the grid's cells, within MAX_ROWS
            if n_all > room:
                keep = keep[np.linspace(0, n_all - 1, room).astype(int)] if room else keep[:0]
            for r in keep:
                pts.append({"v0": float(cols[0][r]), "v1": float(cols[1][r]),
                            "true": names[y[r]] if 0 <= y[r] < k else str(y[r]), "pred": None, "outcome": "unknown"})
            what = (f"{len(pts):,} of {n_all:,} sampled training rows, evenly spaced" if len(pts) < n_all
                    else f"{len(pts):,} training rows (the recorded sample)")
        else:
            what = ""
    else:
        what = ""
    if pts:
        wrong = sum(p_["outcome"] == "wrong" for p_ in pts)
        notes.append(f"points: {what}, coloured by true class"
                     + (f"; {wrong} wrong prediction{'s' * (wrong != 1)} outlined in black" if wrong else ""))
    elif options.points != "none":
        notes.append(f"no {options.points} points recorded to draw")
    classes = list(names)
    lo0 = min(float(x0[0]), min((q["v0"] for q in pts), default=np.inf))
    hi0 = max(float(x0[-1]), max((q["v0"] for q in pts), default=-np.inf))
    lo1 = min(float(x1[0]), min((q["v1"] for q in pts), default=np.inf))
    hi1 = max(float(x1[-1]), max((q["v1"] for q in pts), default=-np.inf))
    sx = alt.Scale(domain=[lo0, hi0], nice=False, zero=False)
    sy = alt.Scale(domain=[lo1, hi1], nice=False, zero=False)
    color_scale = alt.Scale(domain=classes, scheme="tableau10" if len(classes) <= 10 else "tableau20")
    width, height = size(options, 420, 380)
    data = DataSets()
    top = 1.0 / k
    regions = alt.Chart(data("grid", cells)).mark_rect().encode(
        x=alt.X("a0:Q", title=f"{feats[0]} (prepared)", scale=sx), x2="b0:Q",
        y=alt.Y("a1:Q", title=f"{feats[1]} (prepared)", scale=sy), y2="b1:Q",
        color=alt.Color("predicted:N", title="class", scale=color_scale,
                        legend=alt.Legend(symbolType="square", columns=1 if len(classes) <= 16 else 2)),
        opacity=alt.Opacity("p:Q", title="probability", scale=alt.Scale(domain=[top, 1], range=[0.08, 0.6]),
                            legend=alt.Legend(format=".0%", values=[round(top + (1 - top) * t, 2) for t in (0, 0.5, 1)])),
        tooltip=[alt.Tooltip("x0:Q", title=feats[0], format=".3~g"), alt.Tooltip("x1:Q", title=feats[1], format=".3~g"),
                 alt.Tooltip("predicted:N", title="predicted class"), alt.Tooltip("p:Q", title="probability", format=".1%")],
    )
    layers = [regions]
    if pts:
        style = point_style(len(pts))
        layers.append(alt.Chart(data("points", pts)).mark_point(
            filled=True, size=max(style["size"], 30) if options.points == "test" else style["size"], opacity=0.95).encode(
            x=alt.X("v0:Q", scale=sx), y=alt.Y("v1:Q", scale=sy),
            color=alt.Color("true:N", scale=color_scale, legend=None),
            stroke=alt.condition("datum.outcome == 'wrong'", alt.value("#111"), alt.value("white")),
            strokeWidth=alt.condition("datum.outcome == 'wrong'", alt.value(2), alt.value(0.8)),
            tooltip=[alt.Tooltip("true:N", title="true class"), alt.Tooltip("pred:N", title="predicted"),
                     alt.Tooltip("v0:Q", title=feats[0], format=".3~g"), alt.Tooltip("v1:Q", title=feats[1], format=".3~g")],
        ).add_params(alt.selection_interval(bind="scales")))
    else:
        layers[0] = regions.add_params(alt.selection_interval(bind="scales"))
    notes.append("drag to pan, scroll to zoom")
    return data.attach(alt.layer(*layers).properties(width=width, height=height,
                                                      title=title(options, "Decision boundary", notes)))
