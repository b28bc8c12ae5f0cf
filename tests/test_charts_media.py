"""Image and sequence charts (compilers/charts/interpret.py) on hand-made RunRecords with probes."""

from __future__ import annotations

from conftest import spec_values

import base64
import io
import json
import re
import zlib

import numpy as np
import pytest

import compilers.charts as charts
from compilers.charts.base import MAX_ROWS, ChartSkip
from compilers.charts.interpret import png_bytes
from compilers.charts.render import build_spec
from compilers.runs.record import RunRecord
from dsl.registry import CHARTS
from dsl.spec import Item

vlc = pytest.importorskip("vl_convert")

MEDIA = ("samples", "misclassified", "feature_maps", "saliency", "embedding", "attention")


# --- synthetic records ------------------------------------------------------------------------------

# Seven-segment digits on an 8x8 grid: which segments each digit lights.
_SEGMENTS = {"a": (slice(1, 2), slice(2, 6)), "g": (slice(4, 5), slice(2, 6)), "d": (slice(7, 8), slice(2, 6)),
             "f": (slice(1, 5), slice(2, 3)), "b": (slice(1, 5), slice(5, 6)),
             "e": (slice(4, 8), slice(2, 3)), "c": (slice(4, 8), slice(5, 6))}
_DIGITS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]


def digit_glyph(d: int) -> np.ndarray:
    g = np.zeros((8, 8))
    for seg in _DIGITS[d]:
        g[_SEGMENTS[seg]] = 1.0
    return g


def _blur(img: np.ndarray) -> np.ndarray:
    p = np.pad(img, 1)
    return sum(p[i:i + img.shape[0], j:j + img.shape[1]] for i in range(3) for j in range(3)) / 9


def _conv_relu(x: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """x [k, H, W, 1], filters [3, 3, C] -> relu(same-padded correlation) [k, H, W, C]."""
    k, h, w, _ = x.shape
    p = np.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((k, h, w, filters.shape[-1]))
    for i in range(3):
        for j in range(3):
            out += p[:, i:i + h, j:j + w, None] * filters[i, j]
    return np.maximum(out, 0)


def _predictions(y_true: np.ndarray, n_classes: int, wrong: dict[int, int], rng) -> dict:
    """Test predictions: the true class most likely, except rows in `wrong` (row -> predicted class)."""
    n = len(y_true)
    logits = rng.normal(0, 0.5, (n, n_classes))
    logits[np.arange(n), y_true] += 3.0
    for row, cls in wrong.items():
        logits[row, cls] = logits[row].max() + 1.0 + row % 3
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {"y_true": y_true, "y_pred": proba.argmax(1), "proba": proba}


def _embedding(y: np.ndarray, n_classes: int, d: int, rng) -> np.ndarray:
    centres = rng.normal(0, 3, (n_classes, d))
    return centres[y] + rng.normal(0, 1, (len(y), d))


def _layer(index, kind, shape, activation=None) -> dict:
    return {"index": index, "kind": kind, "path": f"model.layers[{index}]", "depth": 0,
            "output_shape": list(shape), "params": 0, "activation": activation, "param_shapes": {}}


WRONG_DIGITS = {3: 8, 7: 1, 19: 5, 26: 0}      # example row -> the wrong class predicted


def digits_record() -> RunRecord:
    """10 classes, 8x8x1 images in [0, 1]: 32 examples, saliency, a conv layer's maps, embedding."""
    rng = np.random.default_rng(0)
    n_test, k = 300, 32
    y = rng.integers(0, 10, n_test)
    y[:k] = np.arange(k) % 10
    x = np.stack([np.clip(digit_glyph(d) * rng.uniform(0.75, 1.0) + rng.uniform(0, 0.15, (8, 8)), 0, 1)
                  for d in y[:k]])[..., None]
    saliency = np.stack([_blur(digit_glyph(d)) + 0.03 * rng.random((8, 8)) for d in y[:k]])[..., None]
    filters = rng.normal(0, 1, (3, 3, 16))
    filters[:, :, 0] = [[-1, 0, 1]] * 3          # vertical edges
    filters[:, :, 1] = np.array([[-1, 0, 1]] * 3).T   # horizontal edges
    return RunRecord(
        name="digits", task="classification", history=[],
        layers=[_layer("0", "conv", (8, 8, 16), "relu"), _layer("1", "flatten", (1024,)),
                _layer("2", "dense", (32,), "relu"), _layer("3", "dense", (10,))],
        class_names=[str(i) for i in range(10)],
        predictions={"test": _predictions(y, 10, WRONG_DIGITS, rng)},
        examples={"x": x, "row": np.arange(k), "saliency": saliency},
        feature_maps={"0": _conv_relu(x[:4], filters)},
        embedding={"points": _embedding(y, 10, 32, rng), "row": np.arange(n_test)}, embedding_layer="2",
        data={"source": "digits", "input_shape": [8, 8, 1]})


def rgb_record() -> RunRecord:
    """3 classes of 16x16x3 pictures, standardised (values outside [0, 1]); no feature maps."""
    rng = np.random.default_rng(1)
    n_test, k = 60, 24
    y = rng.integers(0, 3, n_test)
    yy, xx = np.mgrid[0:16, 0:16]
    imgs, sal = [], []
    for c in y[:k]:
        img = np.full((16, 16, 3), 0.9) + rng.normal(0, 0.03, (16, 16, 3))
        cy, cx = rng.integers(5, 11, 2)
        if c == 0:                                   # red square
            mask = (abs(yy - cy) <= 3) & (abs(xx - cx) <= 3)
            colour = (0.9, 0.1, 0.1)
        elif c == 1:                                 # green disc
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 14
            colour = (0.1, 0.7, 0.2)
        else:                                        # blue stripes
            mask = (xx % 4 < 2) & (abs(yy - cy) <= 4)
            colour = (0.1, 0.2, 0.9)
        img[mask] = colour
        imgs.append((img - 0.5) / 0.25)
        sal.append(np.repeat(_blur(_blur(mask.astype(float)))[..., None], 3, axis=2) * rng.uniform(0.5, 2, 3))
    return RunRecord(
        name="shapes", task="classification", history=[],
        layers=[_layer("0", "conv", (16, 16, 8), "relu"), _layer("1", "dense", (3,))],
        class_names=["square", "disc", "stripes"],
        predictions={"test": _predictions(y, 3, {2: 1, 5: 0}, rng)},
        examples={"x": np.stack(imgs), "row": np.arange(k), "saliency": np.stack(sal)},
        embedding={"points": _embedding(y, 3, 16, rng), "row": np.arange(n_test)}, embedding_layer="0")


WORDS = ["<pad>", "<unk>", "the", "film", "was", "a", "great", "awful", "movie", "plot", "and", "acting",
         "truly", "boring", "loved", "it", "not", "bad", "at", "all", "wonderful", "story"]


def tokens_record() -> RunRecord:
    """Sentiment-like token ids [16, 12] with padding, per-token saliency, 2-head attention."""
    rng = np.random.default_rng(2)
    n_test, k, t = 100, 16, 12
    y = rng.integers(0, 2, n_test)
    ids = np.zeros((k, t), dtype=int)
    sal = np.zeros((k, t))
    for i in range(k):
        length = int(rng.integers(5, t + 1))
        words = rng.integers(2, len(WORDS), length)
        words[rng.integers(0, length)] = WORDS.index("great" if y[i] else "awful")
        ids[i, :length] = words
        sal[i, :length] = 0.05 + 0.1 * rng.random(length)
        sal[i, :length][np.isin(words, [WORDS.index(w) for w in ("great", "awful", "boring", "wonderful")])] = 1.0
    scores = rng.normal(0, 1, (4, 2, t, t))
    scores[:, :, :, :] += 3 * (ids[:4, None, None, :] == WORDS.index("great"))
    scores = np.where(ids[:4, None, None, :] == 0, -1e9, scores)
    att = np.exp(scores - scores.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    return RunRecord(
        name="reviews", task="classification", history=[],
        layers=[_layer("0", "embedding", (t, 16)), _layer("1", "attention", (t, 16)), _layer("2", "dense", (2,))],
        class_names=["negative", "positive"],
        predictions={"test": _predictions(y, 2, {4: 0, 9: 1, 11: 0}, rng)},
        examples={"x": ids, "row": np.arange(k), "saliency": sal},
        attention={"1": att},
        embedding={"points": _embedding(y, 2, 16, rng), "row": np.arange(n_test)}, embedding_layer="1",
        vocabulary=WORDS)


def tabular_record(task: str = "classification") -> RunRecord:
    """Iris-like tabular rows: examples [20, 4] with saliency, no pictures."""
    rng = np.random.default_rng(3)
    n_test, k = 50, 20
    y = rng.integers(0, 3, n_test)
    x = rng.normal(0, 1, (k, 4))
    sal = np.abs(rng.normal(0, 1, (k, 4))) * np.array([0.2, 0.1, 1.5, 0.9])
    if task == "classification":
        preds = {"test": _predictions(y, 3, {1: 2}, rng)}
    else:
        target = rng.normal(100, 30, n_test)
        preds = {"test": {"y_true": target, "y_pred": target + rng.normal(0, 10, n_test)}}
    return RunRecord(
        name="iris", task=task, history=[], layers=[_layer("0", "dense", (16,), "relu"), _layer("1", "dense", (3,))],
        class_names=["setosa", "versicolor", "virginica"] if task == "classification" else None,
        feature_names=["sepal length", "sepal width", "petal length", "petal width"], predictions=preds,
        examples={"x": x, "row": np.arange(k), "saliency": sal},
        embedding={"points": _embedding(y, 3, 16, rng), "row": np.arange(n_test)}, embedding_layer="0")


def conv1d_record() -> RunRecord:
    """Sequences [k, 50, 1] and 1-D conv maps [4, 50, 6] (regression)."""
    rng = np.random.default_rng(4)
    t = np.linspace(0, 4 * np.pi, 50)
    x = np.stack([np.sin(t * (1 + i / 8)) for i in range(8)])[..., None]
    maps = np.stack([np.stack([np.maximum(np.sin(t * (1 + i / 8) + c), 0) * (c + 1) for c in range(6)], -1)
                     for i in range(4)])
    target = rng.normal(0, 1, 40)
    return RunRecord(
        name="waves", task="regression", history=[], layers=[_layer("0", "conv", (50, 6), "relu")],
        predictions={"test": {"y_true": target, "y_pred": target + rng.normal(0, 0.2, 40)}},
        examples={"x": x, "row": np.arange(8)}, feature_maps={"0": maps})


RECORDS = {"digits": digits_record, "rgb": rgb_record, "tokens": tokens_record, "tabular": tabular_record,
           "tabular-regression": lambda: tabular_record("regression"), "conv1d": conv1d_record}
_cache: dict[str, RunRecord] = {}


def rec(key: str) -> RunRecord:
    if key not in _cache:
        _cache[key] = RECORDS[key]()
    return _cache[key]


# Which charts draw on which record (every other pair is a skip, tested below).
DRAWS = {
    "digits": MEDIA[:-1],
    "rgb": ("samples", "misclassified", "saliency", "embedding"),
    "tokens": ("samples", "misclassified", "saliency", "embedding", "attention"),
    "tabular": ("saliency", "embedding"),
    "tabular-regression": ("saliency", "embedding"),
    "conv1d": ("feature_maps",),
}


def spec_of(key: str, kind: str, **options) -> dict:
    return build_spec(rec(key), Item(kind, CHARTS.get(kind).options(**options)))


values = spec_values  # every data row of a spec (conftest)


def images(spec: dict) -> list[dict]:
    return [r for r in values(spec) if str(r.get("url", "")).startswith("data:image/png;base64,")]


def subtitle(spec: dict) -> str:
    sub = spec["title"].get("subtitle", "")
    return " ".join(sub) if isinstance(sub, list) else sub


# --- every chart draws --------------------------------------------------------------------------------

@pytest.mark.parametrize("key,kind", [(k, c) for k, cs in DRAWS.items() for c in cs])
def test_chart_draws(key, kind):
    try:
        spec = spec_of(key, kind)
    except ChartSkip as e:
        pytest.fail(f"{kind} skipped on the {key} record: {e}")
    json.dumps(spec)
    assert len(values(spec)) <= MAX_ROWS
    assert not re.search(r'"url"\s*:\s*"(?!data:)', json.dumps(spec))   # nothing fetched from outside
    vega = vlc.vegalite_to_vega(spec)
    assert vega.get("marks")
    svg = vlc.vegalite_to_svg(spec)        # Vega's runtime errors only show when it draws
    assert svg.lstrip().startswith("<svg")
    if kind in ("samples", "misclassified", "feature_maps") and key != "tokens" or \
            kind == "saliency" and key in ("digits", "rgb"):
        assert images(spec) and "<image" in svg


@pytest.mark.parametrize("key,kind", [(k, c) for k in RECORDS for c in MEDIA if c not in DRAWS[k]
                                      and charts.applies(CHARTS.get(c), rec(k).task)])
def test_chart_skips(key, kind):
    with pytest.raises(ChartSkip) as e:
        spec_of(key, kind)
    msg = str(e.value)
    assert msg and "\n" not in msg


def test_skip_reasons():
    def skip(key_or_rec, kind, **options):
        r = rec(key_or_rec) if isinstance(key_or_rec, str) else key_or_rec
        with pytest.raises(ChartSkip) as e:
            CHARTS.get(kind).build(r, CHARTS.get(kind).options(**options))
        return str(e.value)

    assert "tabular" in skip("tabular", "samples") and "(4,)" in skip("tabular", "samples")
    assert "recorded for: 0" in skip("digits", "feature_maps", layer="5")
    assert "no feature maps" in skip("rgb", "feature_maps")
    assert "2 heads" in skip("tokens", "attention", head=2)
    assert "no attention" in skip("digits", "attention")
    empty = RunRecord(name="x", task="classification", history=[])
    for kind in MEDIA:
        assert skip(empty, kind)
    # Everything right: misclassified says how many it checked.
    r = digits_record()
    r.predictions["test"]["y_pred"] = r.predictions["test"]["y_true"].copy()
    assert "all 32 recorded test examples are classified correctly" in skip(r, "misclassified")
    r.examples.pop("saliency")
    assert "no saliency" in skip(r, "saliency")


# --- golden values ------------------------------------------------------------------------------------

def test_samples_shows_count_images():
    for key, count in (("digits", 32), ("digits", 12), ("rgb", 24), ("rgb", 7)):
        spec = spec_of(key, "samples", count=count)
        pics = images(spec)
        assert len(pics) == count and len({p["example"] for p in pics}) == count
        r = rec(key)
        names = r.class_names
        y = r.predictions["test"]["y_true"]
        assert all(p["true"] == names[y[p["example"]]] for p in pics)
        if count < len(r.examples["x"]):   # taken in turn from each class: balanced
            per_class = [sum(p["true"] == c for p in pics) for c in names]
            assert max(per_class) - min(per_class) <= 1
    # Captions are the true labels, grouped by class.
    texts = [t["text"] for t in values(spec_of("digits", "samples", count=10)) if "text" in t]
    assert texts == [str(d) for d in range(10)]
    texts = [t["text"] for t in values(spec_of("digits", "samples", count=20)) if "text" in t]
    assert texts == [str(d) for d in range(10) for _ in range(2)]
    # Token inputs: one text line per example, padding dropped.
    spec = spec_of("tokens", "samples", count=5)
    lines = [r for r in values(spec) if r.get("example") is not None and r.get("align") == "left"
             and r["text"] not in ("negative", "positive")]
    assert len(lines) == 5 and all("<pad>" not in r["text"] for r in lines)
    for line in lines:
        ids = rec("tokens").examples["x"][line["example"]]
        assert line["text"] == " ".join(WORDS[i] for i in ids if i)


def test_samples_of_a_test_split_in_class_order():
    r = digits_record()
    order = np.argsort(r.predictions["test"]["y_true"][:32], kind="stable")   # 0 0 0 0 1 1 1 ...
    r.examples = {k: v[order] for k, v in r.examples.items()}
    spec = build_spec(r, Item("samples", CHARTS.get("samples").options(count=10)))
    assert sorted(p["true"] for p in images(spec)) == [str(d) for d in range(10)]
    assert "taken in turn from each class" in subtitle(spec)


@pytest.mark.parametrize("key", ["digits", "rgb"])
def test_misclassified_is_exactly_the_wrong_examples(key):
    r = rec(key)
    pred = r.predictions["test"]
    rows = r.examples["row"]
    wrong = {i for i, row in enumerate(rows) if pred["y_pred"][row] != pred["y_true"][row]}
    assert wrong                                   # the record has mistakes to find
    spec = spec_of(key, "misclassified")
    pics = images(spec)
    assert {p["example"] for p in pics} == wrong and len(pics) == len(wrong)
    assert all(p["outcome"] == "wrong" for p in pics)
    probs = [p["p"] for p in sorted(pics, key=lambda p: (p["y"], p["x"]))]
    assert probs == sorted(probs, reverse=True)    # most confident mistake first
    captions = [t["text"] for t in values(spec) if str(t.get("text", "")).startswith("pred ")]
    assert len(captions) == len(wrong)
    if key == "digits":
        assert {int(c.split()[1]) for c in captions} == set(WRONG_DIGITS.values())
    assert f"{len(wrong)} of {len(rows)}" in subtitle(spec)


def test_misclassified_tokens():
    spec = spec_of("tokens", "misclassified")
    labels = [r["text"] for r in values(spec) if str(r.get("text", "")).startswith("pred ")]
    r = rec("tokens")
    pred = r.predictions["test"]
    assert len(labels) == int((pred["y_pred"][:16] != pred["y_true"][:16]).sum())


def test_embedding_pca_variance_matches_numpy():
    r = rec("digits")
    pts = r.embedding["points"]
    centred = pts - pts.mean(0)
    eig = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))[::-1]
    share = eig / eig.sum()
    spec = spec_of("digits", "embedding")
    sub = subtitle(spec)
    assert f"PC1 {share[0]:.1%}, PC2 {share[1]:.1%}" in sub and "layer 2 (dense)" in sub
    pts2 = [v for v in values(spec) if "px" in v]
    assert len(pts2) == 300
    # The projection is PCA's: its variance along x is the first eigenvalue.
    assert np.var([v["px"] for v in pts2], ddof=1) == pytest.approx(eig[0], rel=1e-6)
    assert {v["true"] for v in pts2} == set(r.class_names)
    assert sum(v["outcome"] == "wrong" for v in pts2) == int((r.predictions["test"]["y_pred"]
                                                               != r.predictions["test"]["y_true"]).sum())
    reg = spec_of("tabular-regression", "embedding")
    assert all("target" in v for v in values(reg) if "px" in v)


def test_embedding_tsne():
    spec = spec_of("rgb", "embedding", method="tsne")
    assert "t-SNE" in subtitle(spec) and len([v for v in values(spec) if "px" in v]) == 60


def test_feature_maps_layout():
    spec = spec_of("digits", "feature_maps", max_channels=5, count=3)
    pics = images(spec)
    maps = [p for p in pics if p["channel"] is not None]
    assert len(maps) == 3 * 5 and len(pics) == 3 * 5 + 3       # plus the input of each row
    fm = rec("digits").feature_maps["0"]
    m = next(p for p in maps if p["example"] == 1 and p["channel"] == 2)
    assert m["max"] == pytest.approx(fm[1, :, :, 2].max(), abs=1e-4)
    assert "channels 0-4 of 16" in subtitle(spec)


def test_saliency_tabular_sorted_bars():
    spec = spec_of("tabular", "saliency")
    bars = [v for v in values(spec) if "mean_abs" in v]
    sal = rec("tabular").examples["saliency"]
    assert [b["feature"] for b in bars] == ["petal length", "petal width", "sepal length", "sepal width"]
    assert bars[0]["mean_abs"] == pytest.approx(sal[:, 2].mean())


def test_saliency_tokens_and_attention_drop_padding():
    r = rec("tokens")
    spec = spec_of("tokens", "saliency", count=3)
    cells = [v for v in values(spec) if "attribution" in v]
    n_tokens = int((r.examples["x"][:3] != 0).sum())
    assert len(cells) == n_tokens and all(v["full"] != "<pad>" for v in cells)
    spec = spec_of("tokens", "attention", count=2, head=1)
    cells = [v for v in values(spec) if "w" in v]
    lengths = (r.examples["x"][:2] != 0).sum(1)
    assert len(cells) == int((lengths ** 2).sum())
    first = [v for v in cells if v["qpos"] == 0 and "kpos" in v][: lengths[0]]
    assert sum(v["w"] for v in first) == pytest.approx(1.0, abs=1e-6)   # padding held no weight
    assert "head 1 of 2" in subtitle(spec)


def test_png_encoder_round_trip():
    rng = np.random.default_rng(0)
    for shape in ((8, 8), (5, 7, 3)):
        a = rng.integers(0, 256, shape).astype(np.uint8)
        data = png_bytes(a)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        # Decode by hand (filter type 0 rows) so this needs no imaging library.
        idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
        raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(shape[0], -1)
        assert (raw[:, 0] == 0).all() and (raw[:, 1:].reshape(shape) == a).all()
        try:
            from PIL import Image
        except ImportError:
            continue
        assert (np.asarray(Image.open(io.BytesIO(data))) == a).all()
    url = images(spec_of("digits", "samples", count=1))[0]["url"]
    assert base64.b64decode(url.split(",", 1)[1])[:4] == b"\x89PNG"


def test_auto_and_meta():
    clf = {i.kind for i in charts.auto_items("classification")}
    reg = {i.kind for i in charts.auto_items("regression")}
    assert {"samples", "misclassified", "embedding"} <= clf
    assert {"samples", "embedding"} <= reg and "misclassified" not in reg
    assert not {"saliency", "feature_maps", "attention"} & (clf | reg)
    assert CHARTS.get("samples").meta["section"] == "Data"
    assert all(CHARTS.get(k).meta["section"] == "Interpretation" for k in MEDIA[1:])
