"""The chart catalogue (issue 4): data, gradient, weight-histogram, activation-function, evaluation
and decision-boundary charts on hand-made RunRecords; golden numbers against scikit-learn; every
registered chart on degraded records (no validation split, one epoch, NaN metrics, one class)."""

from __future__ import annotations

from conftest import spec_values

import json
from dataclasses import replace

import numpy as np
import pytest

import compilers.charts as charts
from compilers.charts.base import MAX_ROWS, ChartSkip
from compilers.charts.render import build_spec
from compilers.runs.record import RunRecord
from dsl.registry import CHARTS
from dsl.spec import Item

vlc = pytest.importorskip("vl_convert")

NEW = ("feature_histograms", "correlation", "pairplot", "class_balance", "target_distribution",
       "roc", "pr", "calibration", "per_class", "gradients", "weight_histograms", "activation_functions",
       "decision_boundary")
DATA = ("feature_histograms", "correlation", "pairplot", "class_balance", "target_distribution")


# --- synthetic records ------------------------------------------------------------------------

def _layers(n_in: int, n_out: int) -> list[dict]:
    def row(index, kind, shape, params=0, activation=None, kernel=None, depth=0):
        return {"index": index, "kind": kind, "path": f"model.layers[{index}]", "depth": depth,
                "output_shape": list(shape), "params": params, "activation": activation,
                "param_shapes": {"kernel": list(kernel), "bias": [kernel[-1]]} if kernel else {}}
    return [row("0", "dense", (32,), n_in * 32 + 32, "relu", (n_in, 32)),
            row("1", "residual", (32,), 32 * 32 + 32),
            row("1.0", "dense", (32,), 32 * 32 + 32, "gelu", (32, 32), depth=1),
            row("2", "tanh", (32,), 0, "tanh"),
            row("3", "leaky_relu", (32,), 0, "leaky_relu"),
            {**row("4", "dense", (n_out,), 32 * n_out + n_out, None, (32, n_out)), "path": "model.head"}]


def _history(epochs: int, metric: str, rng) -> list[dict]:
    out = []
    for e in range(1, epochs + 1):
        out.append({"epoch": e, "loss": float(1.5 * np.exp(-e / 6) + 0.05 * rng.random()),
                    "val_loss": float(1.5 * np.exp(-e / 8) + 0.2), metric: float(1 - 0.7 * np.exp(-e / 5)),
                    "val_" + metric: float(1 - 0.75 * np.exp(-e / 6)), "lr": 1e-3, "time": 0.1})
    return out


def _probes(layers: list[dict], epochs: int, rng) -> dict:
    """Gradient norms and weight histograms for the layers with a kernel (3 of them)."""
    kernels = [r["index"] for r in layers if "kernel" in r["param_shapes"]]
    grads = {k: (0.8 + i) * np.exp(-np.arange(epochs) / (6 + 3 * i)) + 0.01 for i, k in enumerate(kernels)}
    hists = {}
    for i, k in enumerate(kernels):
        edges = np.linspace(-1.2 - i * 0.3, 1.2 + i * 0.3, 31)
        counts = [np.histogram(rng.normal(0.02 * e, 0.15 + 0.02 * e, 500), bins=edges)[0] for e in range(epochs)]
        hists[k] = {"counts": np.array(counts, dtype=float), "edges": edges}
    return {"gradients": grads, "weight_histograms": hists}


def _proba(y: np.ndarray, k: int, rng, strength: float = 1.8) -> np.ndarray:
    logits = rng.normal(0, 1, (len(y), k))
    logits[np.arange(len(y)), y] += strength
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def clf_record(n_classes: int = 10, n_raw: int = 2000, n_train: int = 1400, n_test: int = 400,
               epochs: int = 20, seed: int = 0) -> RunRecord:
    """Tabular classification with a raw and a prepared data sample (with a text column and NaNs)."""
    rng = np.random.default_rng(seed)
    names = [f"digit {i}" for i in range(n_classes)] if n_classes > 3 else ["setosa", "versicolor", "virginica"]
    feats = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)", "income", "age"]
    y_raw = rng.integers(0, n_classes, n_raw)
    raw = {f: rng.normal(5 + i, 1 + 0.3 * i, n_raw) + 0.6 * y_raw * (i % 3 == 0) for i, f in enumerate(feats)}
    raw["income"] = np.exp(rng.normal(10, 0.8, n_raw))            # large numbers: SI tick labels
    raw["age"][rng.random(n_raw) < 0.05] = np.nan                 # missing values
    raw["colour"] = rng.choice(["red", "green", "blue"], n_raw)  # text column
    raw["label"] = np.array([names[i] for i in y_raw])
    y_train = rng.integers(0, n_classes, n_train)
    prepared = {f: (rng.normal(0, 1, n_train) + 0.8 * y_train * (i % 2 == 0) / n_classes).astype(np.float32)
                for i, f in enumerate(feats)}
    prepared["colour=red"] = (rng.random(n_train) < 0.3).astype(np.float32)
    prepared["constant"] = np.zeros(n_train, np.float32)
    preds = {}
    for split, n in (("test", n_test), ("val", n_test // 2)):
        y = rng.integers(0, n_classes, n)
        p = _proba(y, n_classes, rng)
        preds[split] = {"y_true": y, "y_pred": p.argmax(1), "proba": p}
    layers = _layers(len(prepared), n_classes)
    return RunRecord(
        name=f"clf{n_classes}", task="classification", history=_history(epochs, "accuracy", rng),
        layers=layers, class_names=names, feature_names=list(prepared), predictions=preds,
        data={"source": "synthetic", "n_rows": n_raw, "n_features": len(prepared), "input_shape": [len(prepared)],
              "splits": {"train": n_train, "val": n_test // 2, "test": n_test}, "target": "label"},
        data_sample={"raw": raw, "prepared": prepared, "prepared_target": {"y": y_train}},
        monitor="val_loss", best_epoch=epochs - 3, **_probes(layers, epochs, rng))


def moons_record(seed: int = 0, binary_column: bool = False) -> RunRecord:
    """Two features, two classes: a decision grid, 64 test examples and a training sample."""
    rng = np.random.default_rng(seed)

    def moons(n):
        y = rng.integers(0, 2, n)
        t = rng.uniform(0, np.pi, n)
        x = np.where(y[:, None] == 0, np.c_[np.cos(t), np.sin(t)], np.c_[1 - np.cos(t), 0.5 - np.sin(t)])
        return x + rng.normal(0, 0.15, (n, 2)), y

    x_tr, y_tr = moons(700)
    x_te, y_te = moons(200)
    g0, g1 = np.linspace(-1.6, 2.6, 80), np.linspace(-1.2, 1.7, 80)
    xx, yy = np.meshgrid(g0, g1)
    logit = 4 * (yy - 0.25 + 0.6 * np.cos(np.pi * (xx - 0.5) / 1.5) * (np.abs(xx - 0.5) < 1.5))
    p0 = 1 / (1 + np.exp(-logit))                        # class 0 above the wavy line
    grid = np.stack([p0, 1 - p0], axis=-1)
    def predict(x):
        lg = 4 * (x[:, 1] - 0.25 + 0.6 * np.cos(np.pi * (x[:, 0] - 0.5) / 1.5) * (np.abs(x[:, 0] - 0.5) < 1.5))
        p = 1 / (1 + np.exp(-lg))
        return np.c_[p, 1 - p]
    proba = predict(x_te)
    pred = {"y_true": y_te, "y_pred": proba.argmax(1), "proba": proba[:, 1:] if binary_column else proba}
    layers = _layers(2, 2)
    return RunRecord(
        name="moons", task="classification", history=_history(12, "accuracy", rng), layers=layers,
        class_names=["0", "1"], feature_names=["x0", "x1"], predictions={"test": pred},
        examples={"x": x_te[:64], "row": np.arange(64)},
        decision_grid={"x0": g0.astype(np.float32), "x1": g1.astype(np.float32), "proba": grid.astype(np.float32)},
        data={"source": "moons", "n_rows": 900, "n_features": 2, "input_shape": [2], "target": "target",
              "splits": {"train": 700, "test": 200}},
        data_sample={"raw": {"x0": x_tr[:, 0], "x1": x_tr[:, 1], "target": y_tr.astype(float)},
                     "prepared": {"x0": x_tr[:, 0].astype(np.float32), "x1": x_tr[:, 1].astype(np.float32)},
                     "prepared_target": {"y": y_tr}},
        monitor="val_loss", best_epoch=10, **_probes(layers, 12, rng))


def reg_record(seed: int = 1, epochs: int = 20) -> RunRecord:
    rng = np.random.default_rng(seed)
    n = 442
    feats = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    x = rng.normal(0, 1, (n, len(feats)))
    x[:, 4] = 0.9 * x[:, 5] + 0.3 * rng.normal(0, 1, n)          # a correlated pair
    y = 150 + 40 * x[:, 2] + 20 * x[:, 3] + rng.normal(0, 30, n)
    raw = {f: 50 + 10 * x[:, i] for i, f in enumerate(feats)}
    raw["sex"] = rng.integers(1, 3, n).astype(float)
    raw["target"] = y
    preds = {}
    for split, m in (("test", 90), ("val", 45)):
        t = rng.normal(150, 70, m)
        preds[split] = {"y_true": t, "y_pred": 0.8 * t + 30 + rng.normal(0, 30, m)}
    layers = _layers(len(feats), 1)
    return RunRecord(
        name="diabetes", task="regression", history=_history(epochs, "mae", rng), layers=layers,
        feature_names=feats, predictions=preds,
        data={"source": "diabetes", "n_rows": n, "n_features": len(feats), "input_shape": [len(feats)],
              "splits": {"train": 307, "val": 45, "test": 90}, "target": "target"},
        data_sample={"raw": raw, "prepared": {f: x[:307, i].astype(np.float32) for i, f in enumerate(feats)},
                     "prepared_target": {"y": y[:307].astype(np.float32)}},
        monitor="val_loss", best_epoch=epochs - 2, **_probes(layers, epochs, rng))


_cache: dict = {}


def rec(key: str) -> RunRecord:
    if key not in _cache:
        _cache[key] = {"clf10": lambda: clf_record(10), "clf3": lambda: clf_record(3), "moons": moons_record,
                       "reg": reg_record}[key]()
    return _cache[key]


_specs: dict = {}


def spec_of(record, kind: str, **options) -> dict:
    """The chart's spec (cached per record object and options: building a pair plot takes ~0.5 s)."""
    key = (id(record), kind, tuple(sorted(options.items())))
    if key not in _specs:
        _specs[key] = (record, build_spec(record, Item(kind, CHARTS.get(kind).options(**options))))
    return _specs[key][1]


values = spec_values  # every data row of a spec (conftest)


def draws(spec: dict, svg: bool = True) -> None:
    """Compiles, and draws: a duplicated signal only fails when Vega parses the spec."""
    json.dumps(spec)
    assert len(values(spec)) <= MAX_ROWS
    if svg:
        assert vlc.vegalite_to_svg(spec).lstrip().startswith("<svg")
    else:
        assert vlc.vegalite_to_vega(spec).get("marks")


def skip_reason(record, kind: str, **options) -> str:
    with pytest.raises(ChartSkip) as e:
        CHARTS.get(kind).build(record, CHARTS.get(kind).options(**options))
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# --- every new chart builds and draws ----------------------------------------------------------

DRAW_CASES = [(k, c) for k in ("clf10", "moons", "reg") for c in NEW   # clf3: in the golden tests
              if charts.applies(CHARTS.get(c), "regression" if k == "reg" else "classification")
              and not (c == "decision_boundary" and k != "moons")]


@pytest.mark.parametrize("key,kind", DRAW_CASES)
def test_chart_draws(key, kind):
    draws(spec_of(rec(key), kind))


def _marks(node, inherited=None):
    """(mark type, encoding) of every unit view, with the encoding its layer parents share."""
    if isinstance(node, dict):
        enc = {**(inherited or {}), **node.get("encoding", {})}
        if "mark" in node:
            mark = node["mark"]
            yield (mark["type"] if isinstance(mark, dict) else mark), enc
        for key in ("layer", "hconcat", "vconcat", "concat"):
            for child in node.get(key, []):
                yield from _marks(child, enc if key == "layer" else None)
        if "spec" in node:
            yield from _marks(node["spec"])


@pytest.mark.parametrize("key,kind", [c for c in DRAW_CASES if c[0] != "moons"] + [("moons", "decision_boundary")])
def test_tooltips_on_every_mark(key, kind):
    """Every mark has a tooltip, but lines (their points layer has it) and reference lines."""
    for mark, enc in _marks(spec_of(rec(key), kind)):
        if mark not in ("line", "rule"):
            assert "tooltip" in enc, (kind, mark)


@pytest.mark.parametrize("kind", DATA)
def test_data_charts_raw_stage(kind):
    r = rec("clf10")
    if not charts.applies(CHARTS.get(kind), r.task):
        r = rec("reg")
    spec = spec_of(r, kind, stage="raw")
    assert "raw data" in " ".join(spec["title"]["subtitle"])
    draws(spec)
    assert "prepared data" in " ".join(spec_of(r, kind)["title"]["subtitle"])


def test_registry_meta():
    for kind in NEW:
        e = CHARTS.get(kind)
        assert e.meta["section"] in charts.SECTIONS
    for kind in DATA:
        assert CHARTS.get(kind).meta["section"] == "Data" and CHARTS.get(kind).meta["inputs"] == ("tabular",)
        assert "stage" in CHARTS.get(kind).options.__dataclass_fields__
    clf = [i.kind for i in charts.auto_items("classification", "tabular")]
    reg = [i.kind for i in charts.auto_items("regression", "tabular")]
    img = [i.kind for i in charts.auto_items("classification", "image")]
    assert {"feature_histograms", "correlation", "pairplot", "class_balance", "roc", "per_class", "gradients",
            "weight_histograms"} <= set(clf)
    assert "target_distribution" in reg and "class_balance" not in reg and "roc" not in reg
    assert not set(DATA) & set(img)
    assert clf.index("feature_histograms") < clf.index("learning_curves") < clf.index("roc")
    # the decision boundary is drawn by `plots: auto` for two-feature tables only
    assert "decision_boundary" not in clf
    assert "decision_boundary" in [i.kind for i in charts.auto_items("classification", "tabular", 2)]
    assert "decision_boundary" not in [i.kind for i in charts.auto_items("classification", "tabular", 3)]


def test_modules_do_not_import_heavy_packages():
    import subprocess
    import sys

    code = "import sys, compilers.charts; print([m for m in ('altair', 'pandas', 'jax', 'sklearn') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- golden numbers ----------------------------------------------------------------------------

@pytest.mark.parametrize("key,split", [("clf10", "test"), ("clf10", "val"), ("clf3", "test"), ("clf3", "val"),
                                       ("moons", "test")])
def test_roc_auc_and_ap_match_sklearn(key, split):
    from sklearn.metrics import average_precision_score, roc_auc_score

    r = rec(key)
    p = r.predictions[split]
    y, proba = p["y_true"], np.asarray(p["proba"], dtype=float)
    classes = [1] if proba.shape[1] == 2 else range(proba.shape[1])
    roc_rows = [v for v in values(spec_of(r, "roc", split=split)) if "auc" in v]
    pr_rows = [v for v in values(spec_of(r, "pr", split=split)) if "ap" in v]
    for c in classes:
        name = r.class_names[c]
        auc = {v["auc"] for v in roc_rows if v["class"] == name}
        ap = {v["ap"] for v in pr_rows if v["class"] == name}
        assert len(auc) == 1 and len(ap) == 1
        assert abs(auc.pop() - roc_auc_score(y == c, proba[:, c])) < 1e-6
        assert abs(ap.pop() - average_precision_score(y == c, proba[:, c])) < 1e-6
        # The legend label carries the same number.
        label = next(v["label"] for v in roc_rows if v["class"] == name)
        assert label == f"{name} (AUC {roc_auc_score(y == c, proba[:, c]):.3f})"
    if len(classes) > 2:
        macro = roc_auc_score(y, proba, multi_class="ovr", average="macro")
        assert f"macro-average AUC {macro:.3f}" in spec_of(r, "roc", split=split)["title"]["subtitle"][0]


def test_roc_classes_option():
    spec = spec_of(rec("clf10"), "roc", classes=("digit 3", "digit 5"))
    assert {v["class"] for v in values(spec) if "class" in v} == {"digit 3", "digit 5"}
    assert "no class nope" in skip_reason(rec("clf10"), "pr", classes=("nope",))


def test_roc_curve_points_match_sklearn():
    from sklearn.metrics import precision_recall_curve, roc_curve

    from compilers.charts.evaluation import pr_curve_np, roc_curve_np

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300).astype(bool)
    s = np.round(rng.random(300) * 0.6 + 0.4 * y, 2)      # ties
    fpr, tpr, _, _ = roc_curve_np(y, s)
    f2, t2, _ = roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, f2) and np.allclose(tpr, t2)
    rec_, prec, _, _ = pr_curve_np(y, s)
    p2, r2, _ = precision_recall_curve(y, s)
    assert np.allclose(rec_[1:], r2[::-1][1:]) and np.allclose(prec[1:], p2[::-1][1:])


def test_roc_and_pr_of_a_large_split_stay_small():
    from sklearn.metrics import average_precision_score, roc_auc_score

    r = clf_record(10, n_test=6000)
    p = r.predictions["test"]
    for kind, field, score in (("roc", "auc", roc_auc_score), ("pr", "ap", average_precision_score)):
        spec = spec_of(r, kind)
        rows = values(spec)
        assert len(rows) <= MAX_ROWS and any("evenly spaced points" in n for n in spec["title"]["subtitle"])
        got = {v["class"]: v[field] for v in rows if field in v}
        for c in (0, 7):
            assert abs(got[r.class_names[c]] - score(p["y_true"] == c, p["proba"][:, c])) < 1e-6


def test_binary_sigmoid_column():
    from sklearn.metrics import roc_auc_score

    r = moons_record(binary_column=True)
    rows = [v for v in values(spec_of(r, "roc")) if "auc" in v]
    assert {v["class"] for v in rows} == {"1"}
    p = r.predictions["test"]
    assert abs(rows[0]["auc"] - roc_auc_score(p["y_true"], p["proba"][:, 0])) < 1e-6
    for kind in ("pr", "calibration", "per_class"):
        draws(spec_of(r, kind))


@pytest.mark.parametrize("key", ["clf10", "clf3"])
def test_per_class_matches_sklearn(key):
    from sklearn.metrics import precision_recall_fscore_support

    r = rec(key)
    p = r.predictions["test"]
    k = len(r.class_names)
    prec, recall, f1, support = precision_recall_fscore_support(p["y_true"], p["y_pred"], labels=list(range(k)),
                                                                zero_division=0)
    rows = values(spec_of(r, "per_class"))
    got = {(v["class"], v["score"]): v for v in rows}
    for c, name in enumerate(r.class_names):
        assert got[(name, "precision")]["value"] == pytest.approx(prec[c], abs=1e-12)
        assert got[(name, "recall")]["value"] == pytest.approx(recall[c], abs=1e-12)
        assert got[(name, "F1")]["value"] == pytest.approx(f1[c], abs=1e-12)
        assert got[(name, "F1")]["support"] == support[c]


def test_calibration_bins():
    r = rec("clf3")
    p = r.predictions["test"]
    rows = [v for v in values(spec_of(r, "calibration", bins=10)) if "bin" in v]
    assert len(rows) == 10 and sum(v["count"] for v in rows) == len(p["y_true"])
    conf = p["proba"].max(1)
    right = p["proba"].argmax(1) == p["y_true"]
    b = min(int(np.floor(conf[0] * 10)), 9)
    row = rows[b]
    m = (conf >= row["lo"]) & ((conf < row["hi"]) | (b == 9))
    assert row["count"] == m.sum() and row["accuracy"] == pytest.approx(right[m].mean())
    assert row["confidence"] == pytest.approx(conf[m].mean())


@pytest.mark.parametrize("stage", ["raw", "prepared"])
def test_class_balance_counts(stage):
    r = rec("clf10")
    spec = spec_of(r, "class_balance", stage=stage)
    rows = values(spec)
    first = rows[0]["split"]
    sample = [v for v in rows if v["split"] == first]
    n = len(r.data_sample["raw"]["label"]) if stage == "raw" else len(r.data_sample["prepared_target"]["y"])
    assert sum(v["count"] for v in sample) == n
    if stage == "prepared":
        assert {v["split"] for v in rows} == {first, "validation", "test"}
        test = [v for v in rows if v["split"] == "test"]
        assert sum(v["count"] for v in test) == len(r.predictions["test"]["y_true"])
        y = r.data_sample["prepared_target"]["y"]
        assert [v["count"] for v in sample] == [int((y == c).sum()) for c in range(10)]


def test_correlation_matches_numpy():
    r = rec("reg")
    spec = spec_of(r, "correlation")
    cells = {(v["a"], v["b"]): v["r"] for v in values(spec) if "r" in v}
    prep = r.data_sample["prepared"]
    expected = np.corrcoef(prep["s1"].astype(float), prep["s2"].astype(float))[0, 1]
    assert cells[("s1", "s2")] == pytest.approx(expected, abs=1e-6)
    target = "target"
    y = r.data_sample["prepared_target"]["y"].astype(float)
    assert cells[("bmi", target)] == pytest.approx(np.corrcoef(prep["bmi"].astype(float), y)[0, 1], abs=1e-6)
    assert all(cells[(a, a)] == pytest.approx(1.0) for a, _ in cells if a == _)
    # Raw data with missing values: pairwise complete rows; a constant column is left out.
    raw = spec_of(rec("clf10"), "correlation", stage="raw")
    rows = values(raw)
    assert "colour" not in {v["a"] for v in rows}
    age = next(v for v in rows if v["a"] == "age" and v["b"] == "income")
    assert age["n"] == int(np.isfinite(rec("clf10").data_sample["raw"]["age"]).sum())
    assert "constant" not in {v["a"] for v in values(spec_of(rec("clf10"), "correlation"))}


def test_feature_histograms_counts():
    r = rec("clf10")
    spec = spec_of(r, "feature_histograms", stage="raw")
    rows = values(spec)
    age = [v for v in rows if v["feature"].startswith("age")]
    n_age = int(np.isfinite(r.data_sample["raw"]["age"]).sum())
    assert sum(v["count"] for v in age) == n_age and "missing)" in age[0]["feature"]
    assert any("text columns not drawn: colour" in s for s in spec["title"]["subtitle"])
    many = clf_record(3)
    many.data_sample["prepared"].update({f"px{i}": np.random.default_rng(i).random(1400).astype(np.float32)
                                         for i in range(40)})
    spec = spec_of(many, "feature_histograms", by_class=True)
    assert len({v["feature"] for v in values(spec)}) == 16 and len(values(spec)) <= MAX_ROWS
    assert any("first 16 of" in s for s in spec["title"]["subtitle"])
    draws(spec)


def test_pairplot_brushing_and_ranking():
    r = rec("clf10")
    spec = spec_of(r, "pairplot")
    text = json.dumps({k: v for k, v in spec.items() if k != "datasets"})
    assert '"brush"' in text and '"resolve": "global"' in text and '"bind": "legend"' in text
    points = spec["datasets"]["points"]
    assert len(points) <= 1000 and {"class", "f0", "f1", "f2", "f3"} <= set(points[0])
    assert len(spec["vconcat"]) == 4 and all(len(row["hconcat"]) == 4 for row in spec["vconcat"])
    # Params are defined once, at the top (Altair merges the panels' copies), never twice in one view.
    for row in spec["vconcat"]:
        for panel in row["hconcat"]:
            assert len(panel.get("params", [])) <= 2 and "layer" not in panel or not any(
                "params" in layer for layer in panel.get("layer", []))
    # Each diagonal histogram bins into its own field names: Vega-Lite names a bin's signals after
    # them, and panels sharing names would all use the first panel's bins.
    assert '"lo_0"' in text and '"lo_3"' in text
    # Of 8 features, the default picks the ones that separate the classes (the signal is in 0, 2, 4).
    sub = " ".join(spec["title"]["subtitle"])
    assert "best separate the classes" in sub
    spec = spec_of(r, "pairplot", features=("age", "income"))
    assert len(spec["vconcat"]) == 2
    assert "no numeric column nope" in skip_reason(r, "pairplot", features=("nope",))
    reg = spec_of(rec("reg"), "pairplot")
    assert "most correlated with the target" in " ".join(reg["title"]["subtitle"])


def test_gradients_and_weight_histograms():
    r = rec("clf10")
    spec = spec_of(r, "gradients")
    rows = values(spec)
    assert len({v["layer"] for v in rows}) == 3 and len(rows) == 3 * 20
    text = json.dumps(spec)
    assert '"type": "log"' in text and '"bind": "legend"' in text
    assert '"type": "log"' not in json.dumps(spec_of(r, "gradients", log_scale=False))
    spec = spec_of(r, "weight_histograms")
    rows = values(spec)
    h = r.weight_histograms["0"]["counts"]
    first = [v for v in rows if v["layer"].startswith("0 ") and v["epoch"] == 1]
    assert sum(v["count"] for v in first) == h[0].sum()
    assert len({v["layer"] for v in rows}) == 3
    long = replace(r, history=[], weight_histograms={k: {"counts": np.tile(v["counts"], (20, 1)), "edges": v["edges"]}
                                                      for k, v in r.weight_histograms.items()})
    spec = spec_of(long, "weight_histograms")
    assert len(values(spec)) <= MAX_ROWS and any("of 400 epochs shown" in s for s in spec["title"]["subtitle"])


def test_activation_functions_by_jax_grad():
    r = rec("clf3")
    rows = values(spec_of(r, "activation_functions"))
    acts = {v["activation"].split()[0] for v in rows}
    assert acts == {"relu", "gelu", "tanh", "leaky_relu"}
    tanh = {(v["fn"], v["x"]): v["y"] for v in rows if v["activation"].startswith("tanh")}
    assert tanh[("f(x)", 1.0)] == pytest.approx(np.tanh(1.0), abs=1e-6)
    assert tanh[("f'(x)", 1.0)] == pytest.approx(1 - np.tanh(1.0) ** 2, abs=1e-6)
    relu = {(v["fn"], v["x"]): v["y"] for v in rows if v["activation"].startswith("relu")}
    assert relu[("f'(x)", -2.0)] == 0 and relu[("f'(x)", 2.0)] == 1
    r2 = replace(r, layers=r.layers + [{"index": "5", "kind": "lstm", "depth": 0, "activation": None},
                                       {"index": "6", "kind": "softmax", "depth": 0, "activation": "softmax"}])
    rows = values(spec_of(r2, "activation_functions"))
    assert {v["activation"].split()[0] for v in rows} >= {"sigmoid", "softmax([x,"}
    assert "no activation" in skip_reason(replace(r, layers=[{"index": "0", "kind": "dense", "activation": None}]),
                                          "activation_functions")


def test_decision_boundary():
    r = rec("moons")
    spec = spec_of(r, "decision_boundary")
    grid = spec["datasets"]["grid"]
    assert len(grid) == 40 * 40 and {v["predicted"] for v in grid} == {"0", "1"}
    assert len(spec["datasets"]["points"]) == 64
    # The cell at the top left (x0 low, x1 high) is class 0 (above the line), as the recorded grid says.
    top_left = min(grid, key=lambda v: (v["x0"], -v["x1"]))
    assert top_left["predicted"] == "0"
    spec = spec_of(r, "decision_boundary", points="train")
    assert len(spec["datasets"]["points"]) == 700
    draws(spec)
    assert "two features" in skip_reason(rec("clf10"), "decision_boundary")
    assert "regression" in skip_reason(rec("reg"), "decision_boundary")


def test_target_distribution():
    r = rec("reg")
    spec = spec_of(r, "target_distribution", bins=25)
    bins = [v for v in values(spec) if "lo" in v]
    assert len(bins) == 25 and sum(v["count"] for v in bins) == len(r.data_sample["prepared_target"]["y"])
    rows = values(spec_of(rec("clf3"), "target_distribution", stage="raw"))
    assert sum(v["count"] for v in rows) == 2000


def test_data_charts_skip_for_images():
    r = RunRecord(name="img", task="classification", history=[], class_names=["a", "b"],
                  data={"input_shape": [8, 8, 1]})
    for kind in DATA:
        assert "images" in skip_reason(r, kind)


# --- degradation: every registered chart on damaged records ----------------------------------------

def _small(r: RunRecord) -> RunRecord:
    """Three features (a 3 x 3 pair plot): the degradation tests draw every chart five times."""
    sample = {"raw": {k: v for i, (k, v) in enumerate(r.data_sample["raw"].items()) if i < 3 or k in ("label", "colour")},
              "prepared": dict(list(r.data_sample["prepared"].items())[:3]),
              "prepared_target": r.data_sample["prepared_target"]}
    return replace(r, data_sample=sample)


def _no_val():
    r = _small(clf_record(3, n_raw=300, n_train=200, n_test=60))
    hist = [{k: v for k, v in h.items() if not k.startswith("val_")} for h in r.history]
    return replace(r, history=hist, predictions={"test": r.predictions["test"]}, monitor="loss")


def _one_epoch():
    r = _small(clf_record(3, n_raw=300, n_train=200, n_test=60, epochs=1))
    return replace(r, best_epoch=1)


def _nan_metric():
    r = reg_record(epochs=5)
    r = replace(r, data_sample={"raw": {k: v for k, v in r.data_sample["raw"].items() if k in ("age", "bmi", "bp", "target")},
                                "prepared": {k: r.data_sample["prepared"][k] for k in ("age", "bmi", "bp")},
                                "prepared_target": r.data_sample["prepared_target"]})
    hist = [{**h, "val_mae": float("nan"), "loss": float("nan") if h["epoch"] == 3 else h["loss"]} for h in r.history]
    grads = {k: np.where(np.arange(len(v)) == 2, np.nan, v) for k, v in r.gradients.items()}
    return replace(r, history=hist, gradients=grads)


def _nan_proba():
    r = _small(clf_record(3, n_raw=300, n_train=200, n_test=60, epochs=3))
    preds = {s: {**p, "proba": np.where(np.arange(len(p["y_true"]))[:, None] % 7 == 0, np.nan, p["proba"])}
             for s, p in r.predictions.items()}
    hist = [{**h, "val_accuracy": float("nan")} for h in r.history]
    return replace(r, predictions=preds, history=hist)


def _one_class():
    r = _small(clf_record(3, n_raw=300, n_train=200, n_test=60, epochs=3))
    preds = {}
    for s, p in r.predictions.items():
        y = np.zeros_like(p["y_true"])
        preds[s] = {**p, "y_true": y}
    y_tr = np.zeros_like(r.data_sample["prepared_target"]["y"])
    sample = {**r.data_sample, "prepared_target": {"y": y_tr},
              "raw": {**r.data_sample["raw"], "label": np.full(300, "setosa")}}
    return replace(r, predictions=preds, data_sample=sample)


def _empty():
    return RunRecord(name="empty", task="classification", history=[])


def _bare_regression():
    return RunRecord(name="bare", task="regression", history=[{"epoch": 1, "loss": 1.0}],
                     predictions={"test": {"y_true": np.array([1.0]), "y_pred": np.array([1.5])}})


DAMAGED = {"no-val": _no_val, "one-epoch": _one_epoch, "nan-metric": _nan_metric, "nan-proba": _nan_proba,
           "one-class": _one_class, "empty": _empty, "bare-regression": _bare_regression}
_damaged: dict = {}


def damaged(key: str) -> RunRecord:
    if key not in _damaged:
        _damaged[key] = DAMAGED[key]()
    return _damaged[key]


@pytest.mark.parametrize("case", list(DAMAGED))
def test_every_chart_degrades_gracefully(case):
    """Each registered chart either draws a valid chart or skips with a one-line reason."""
    r = damaged(case)
    drawn, skipped = [], {}
    for e in CHARTS:
        if not charts.applies(e, r.task):
            continue
        try:
            spec = build_spec(r, Item(e.name, e.options()))
        except ChartSkip as s:
            msg = str(s)
            assert msg and "\n" not in msg, (e.name, msg)
            skipped[e.name] = msg
            continue
        try:
            draws(spec, svg=e.name in NEW)   # the older charts are drawn in tests/test_charts.py
        except Exception as ex:   # pragma: no cover - the message names the chart
            raise AssertionError(f"{e.name} on {case}: {ex}") from ex
        drawn.append(e.name)
    expected = {
        "no-val": {"learning_curves", "roc", "pr", "calibration", "per_class", "gradients", "class_balance",
                   "pairplot", "feature_histograms", "correlation", "weight_histograms"},
        "one-epoch": {"learning_curves", "gradients", "weight_histograms", "roc", "per_class", "pairplot"},
        "nan-metric": {"learning_curves", "gradients", "predictions", "residuals", "target_distribution"},
        "nan-proba": {"roc", "pr", "calibration", "per_class", "confusion_matrix"},
        "one-class": {"per_class", "calibration", "confusion_matrix", "class_balance", "pr"},
        "empty": set(),
        "bare-regression": {"learning_curves"},
    }[case]
    assert expected <= set(drawn), (set(expected) - set(drawn), skipped)


def test_degraded_details():
    assert "single class (setosa)" in skip_reason(damaged("one-class"), "roc")
    assert "validation" in skip_reason(damaged("no-val"), "roc", split="val")
    spec = spec_of(damaged("nan-proba"), "roc")
    assert any("non-finite probabilities left out" in s for s in spec["title"]["subtitle"])
    spec = spec_of(damaged("nan-metric"), "gradients")
    assert any("non-finite norms left out" in s for s in spec["title"]["subtitle"])
    one = spec_of(damaged("one-class"), "per_class")
    assert any("no test examples of versicolor, virginica" in s for s in one["title"]["subtitle"])
    bal = values(spec_of(damaged("one-class"), "class_balance", stage="raw"))
    assert [v["class"] for v in bal if v["count"]] == ["setosa"]
