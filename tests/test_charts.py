"""Charts: every registered kind builds a valid Vega-Lite spec from a hand-made RunRecord."""

from __future__ import annotations

from conftest import spec_values

import json
import re
from dataclasses import fields

import numpy as np
import pytest

import compilers.charts as charts
from compilers.charts.base import MAX_ROWS, ChartSkip
from compilers.charts.render import build_spec, render_charts
from compilers.charts.report import bundle_path, write_report
from compilers.runs.record import RunRecord
from dsl.registry import CHARTS
from dsl.spec import ChartOptions, Item

vlc = pytest.importorskip("vl_convert")

TASKS = ("classification", "regression")


# --- synthetic records ------------------------------------------------------------------------

def _history(epochs: int, metrics: tuple[str, ...], rng) -> list[dict]:
    out = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "loss": 1.5 * np.exp(-e / 8) + 0.05 * rng.random(),
               "val_loss": 1.5 * np.exp(-e / 10) + 0.15 + 0.05 * rng.random(),
               "lr": 1e-3, "time": 0.1}
        for m in metrics:
            row[m] = 1 - 0.8 * np.exp(-e / 6)
            row["val_" + m] = 1 - 0.85 * np.exp(-e / 7)
        out.append({k: float(v) if k != "epoch" else v for k, v in row.items()})
    return out


def _lr_curve(steps: int, steps_per_epoch: int) -> dict:
    s = np.arange(steps)
    warm = 5 * steps_per_epoch
    lr = np.where(s < warm, 1e-3 * s / warm, 1e-3 * 0.5 * (1 + np.cos(np.pi * (s - warm) / (steps - warm))))
    return {"step": s, "epoch": s / steps_per_epoch, "lr": lr}


def _layers_and_weights(n_in: int, n_out: int, rng, conv: bool = False):
    layers, weights = [], {}

    def add(index, kind, depth, shape, params, activation=None, **arrays):
        layers.append({"index": index, "kind": kind, "path": f"model.layers[{index}]", "depth": depth,
                       "output_shape": list(shape), "params": params, "activation": activation,
                       "param_shapes": {k: list(v.shape) for k, v in arrays.items()}})
        if arrays:
            weights[index] = arrays

    if conv:
        k = rng.normal(0, 0.3, (3, 3, 1, 16))
        add("0", "conv", 0, (8, 8, 16), k.size + 16, "relu", kernel=k, bias=np.zeros(16))
        add("1", "flatten", 0, (1024,), 0)
        k = rng.normal(0, 0.05, (1024, 64))
        add("2", "dense", 0, (64,), k.size + 64, "relu", kernel=k, bias=np.zeros(64))
        k = rng.normal(0, 0.2, (64, n_out))
        add("3", "dense", 0, (n_out,), k.size + n_out, None, kernel=k, bias=np.zeros(n_out))
        return layers, weights
    k0 = rng.normal(0, 0.5, (n_in, 64))
    add("0", "dense", 0, (64,), k0.size + 64, None, kernel=k0, bias=np.zeros(64))
    add("1", "relu", 0, (64,), 0, "relu")
    k = rng.normal(0, 0.2, (64, 64))
    add("2", "residual", 0, (64,), k.size + 64 + 128)  # a block's row counts the layers inside it
    add("2.0", "dense", 1, (64,), k.size + 64, "gelu", kernel=k, bias=np.zeros(64))
    add("2.1", "layer_norm", 1, (64,), 128, None, scale=np.ones(64), bias=np.zeros(64))
    add("3", "dropout", 0, (64,), 0)
    k = rng.normal(0, 0.3, (64, n_out))
    add("4", "dense", 0, (n_out,), k.size + n_out, None, kernel=k, bias=np.zeros(n_out))
    return layers, weights


def _activations(layers, rng) -> dict:
    """The trainer's activation summaries (compilers/train/probes.py) for synthetic layer outputs."""
    out = {}
    for layer in layers:
        values = rng.normal(0, 1, (256, 16))
        if layer["activation"] == "relu" or layer["kind"] == "relu":
            values = np.maximum(values, 0)
            values[:, :3] = 0  # three dead units
        counts, edges = np.histogram(values, bins=40)
        out[layer["index"]] = {"counts": counts.astype(float), "edges": edges, "mean": float(values.mean()),
                               "std": float(values.std()), "zero_fraction": float((values == 0).mean()),
                               "dead_fraction": float((values == 0).all(0).mean())}
    return out


def _probe_fields(feats: list[str], layers: list[dict], epochs: int, names: list[str] | None, rng,
                  n: int = 600) -> dict:
    """The trainer's data sample, gradient norms and weight histograms, for the Data/Training/Model charts."""
    x = rng.normal(0, 1, (n, len(feats)))
    if names:
        y = rng.integers(0, len(names), n)
        x[:, 0] += y
        raw_target, target = np.array([names[i] for i in y]), y
    else:
        target = raw_target = 150 + 40 * x[:, 0] + rng.normal(0, 20, n)
    raw = {f: 5 + 2 * x[:, i] for i, f in enumerate(feats[:12])}
    raw["target"] = raw_target
    prepared = {f: x[:, i].astype(np.float32) for i, f in enumerate(feats)}
    with_kernel = [r["index"] for r in layers if "kernel" in r["param_shapes"]]
    grads = {k: np.exp(-np.arange(epochs) / (10 + i)) * (0.5 + i) for i, k in enumerate(with_kernel)}
    edges = np.linspace(-1.5, 1.5, 31)
    hist = {k: {"counts": np.stack([np.histogram(rng.normal(0, 0.2 + e / epochs, 400), bins=edges)[0]
                                    for e in range(epochs)]).astype(float), "edges": edges} for k in with_kernel}
    return {"data_sample": {"raw": raw, "prepared": prepared, "prepared_target": {"y": target}},
            "gradients": grads, "weight_histograms": hist}


def classification_record(n_classes: int = 3, n_test: int = 300, n_features: int = 4, name: str = "clf",
                          conv: bool = False, epochs: int = 40, seed: int = 0) -> RunRecord:
    rng = np.random.default_rng(seed)
    names = (["setosa", "versicolor", "virginica"] if n_classes == 3
             else [f"digit {i}" for i in range(n_classes)])
    preds = {}
    for split, n in (("test", n_test), ("val", n_test // 2)):
        y = rng.integers(0, n_classes, n)
        logits = rng.normal(0, 1, (n, n_classes))
        logits[np.arange(n), y] += 2.5
        proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        preds[split] = {"y_true": y, "y_pred": proba.argmax(1), "proba": proba}
    layers, weights = _layers_and_weights(n_features, n_classes, rng, conv=conv)
    feats = ["sepal length", "sepal width", "petal length", "petal width"][:n_features] \
        if n_features <= 4 else [f"x{i}" for i in range(n_features)]
    return RunRecord(
        name=name, task="classification",
        history=_history(epochs, ("accuracy", "f1"), rng),
        summary={"metrics": {"train": {"loss": 0.2, "accuracy": 0.95}, "val": {"loss": 0.3, "accuracy": 0.93},
                             "test": {"loss": 0.31, "accuracy": 0.92}},
                 "best_epoch": 30, "params": sum(layer["params"] for layer in layers if not layer["depth"]),
                 "times": {"compile_s": 1.2, "train_s": 3.4, "total_s": 5.0}},
        layers=layers, class_names=names, feature_names=feats, predictions=preds, weights=weights,
        lr_curve=_lr_curve(epochs * 10, 10), activations=_activations(layers, rng),
        data={"source": "iris" if n_classes == 3 else "digits", "n_rows": 2 * n_test,
              "n_features": n_features, "input_shape": [n_features], "target": "target",
              "splits": {"train": n_test, "val": n_test // 2, "test": n_test}},
        monitor="val_loss", best_epoch=30, **_probe_fields(feats, layers, epochs, names, rng))


def regression_record(n_test: int = 400, n_features: int = 10, name: str = "reg", seed: int = 1) -> RunRecord:
    rng = np.random.default_rng(seed)
    preds = {}
    for split, n in (("test", n_test), ("val", n_test // 2)):
        y = rng.normal(150, 70, n)
        preds[split] = {"y_true": y, "y_pred": y * 0.8 + 30 + rng.normal(0, 35, n)}
    layers, weights = _layers_and_weights(n_features, 1, rng)
    return RunRecord(
        name=name, task="regression", history=_history(60, ("mae", "r2"), rng),
        summary={"metrics": {"train": {"loss": 2900.0, "mae": 42.0}, "test": {"loss": 3100.0, "mae": 45.0, "r2": 0.48}},
                 "best_epoch": 52, "params": sum(layer["params"] for layer in layers if not layer["depth"]),
                 "times": {"compile_s": 0.9, "train_s": 2.0, "total_s": 3.5}},
        layers=layers, feature_names=[f"s{i}" for i in range(n_features)], predictions=preds,
        weights=weights, lr_curve=_lr_curve(600, 10), activations=_activations(layers, rng),
        data={"source": "diabetes", "n_rows": 442, "n_features": n_features, "target": "target",
              "splits": {"train": 300, "val": 44, "test": 98}},
        monitor="val_loss", best_epoch=52,
        **_probe_fields([f"s{i}" for i in range(n_features)], layers, 60, None, rng))


RECORDS = {
    "classification-3": lambda: classification_record(3),
    "classification-10": lambda: classification_record(10, n_features=64, conv=True),
    "regression": regression_record,
}
_cache: dict[str, RunRecord] = {}


def record_for(key: str) -> RunRecord:
    if key not in _cache:
        _cache[key] = RECORDS[key]()
    return _cache[key]


def _task(key: str) -> str:
    return key.split("-")[0]


# Charts that draw the trainer's probes (examples, feature maps, embedding, attention): these
# records have none; tests/test_charts_media.py draws them on records that do.
PROBE_CHARTS = {"samples", "misclassified", "feature_maps", "saliency", "embedding", "attention",
                "decision_boundary"}   # two-feature runs only: tests/test_charts_catalogue.py
CASES = [(key, e.name) for key in RECORDS for e in CHARTS
         if charts.applies(e, _task(key)) and e.name not in PROBE_CHARTS]


def _rows(spec: dict) -> int:
    return len(_values(spec))


# --- every registered chart -------------------------------------------------------------------

@pytest.mark.parametrize("key,kind", CASES)
def test_every_chart_compiles(key, kind):
    entry = CHARTS.get(kind)
    try:
        spec = build_spec(record_for(key), Item(kind, entry.options()))
    except ChartSkip as e:
        pytest.fail(f"{kind} skipped on a full {key} record: {e}")
    json.dumps(spec)  # plain JSON: no numpy scalars left
    assert _rows(spec) <= MAX_ROWS
    vega = vlc.vegalite_to_vega(spec)
    assert vega.get("marks") or vega.get("data")
    # Compiling is not enough (a duplicated signal only fails when Vega parses): draw it.
    assert vlc.vegalite_to_svg(spec).lstrip().startswith("<svg")


def test_registry_meta():
    assert {"learning_curves", "lr_schedule", "confusion_matrix", "predictions", "residuals",
            "weights", "architecture"} <= set(CHARTS.names())
    for e in CHARTS:
        assert e.meta["section"] in charts.SECTIONS, e.name
        assert set(e.meta["tasks"]) <= set(TASKS) and e.meta["tasks"], e.name
        assert issubclass(e.options, ChartOptions), e.name
        assert e.doc and e.doc.splitlines()[0].strip(), e.name
        e.options()  # every option has a default
        for f in fields(e.options):
            assert f.metadata.get("doc"), f"{e.name}.{f.name} has no doc"


def test_options_parse_from_yaml_values():
    from dsl.errors import SpecError
    from dsl.parse import parse_item

    for e in CHARTS:   # every options class resolves its annotations and parses an empty mapping
        assert parse_item({e.name: {}}, CHARTS, "plots[0]").options == e.options()
    assert parse_item({"weights": {"layer": 0}}, CHARTS, "plots[2]").options.layer == "0"
    assert parse_item({"weights": 2.1}, CHARTS, "plots[0]").options.layer == "2.1"
    item = parse_item({"learning_curves": {"metrics": ["loss"], "width": 200}}, CHARTS, "plots[0]")
    assert item.options.metrics == ("loss",) and item.options.width == 200
    with pytest.raises(SpecError, match="split must be one of test, val"):
        parse_item({"confusion_matrix": {"split": "train"}}, CHARTS, "plots[0]")


def test_auto_items():
    clf = [i.kind for i in charts.auto_items("classification")]
    reg = [i.kind for i in charts.auto_items("regression")]
    assert [k for k in clf if CHARTS.get(k).meta["section"] == "Training"][:2] == ["learning_curves", "lr_schedule"]
    assert clf[0] == "samples"    # the Data section comes first
    assert "confusion_matrix" in clf and "residuals" not in clf and "predictions" not in clf
    assert {"residuals", "predictions"} <= set(reg) and "confusion_matrix" not in reg
    assert "architecture" in clf and "weights" not in clf
    assert all(i.path == "plots" and isinstance(i.options, ChartOptions) for i in charts.auto_items("regression"))


def test_modules_do_not_import_altair():
    import subprocess
    import sys

    code = ("import sys, compilers.charts; "
            "print(any(m in sys.modules for m in ('altair', 'pandas', 'jax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- golden values ----------------------------------------------------------------------------

_values = spec_values  # every data row of a spec (conftest)


@pytest.mark.parametrize("n_classes", [3, 10])
@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_counts(n_classes, normalize):
    from compilers.charts.evaluation import ConfusionOptions

    rec = classification_record(n_classes, n_test=257)
    spec = build_spec(rec, Item("confusion_matrix", ConfusionOptions(normalize=normalize)))
    cells = [r for r in _values(spec) if "predicted" in r]
    assert len(cells) == n_classes ** 2
    assert sum(r["count"] for r in cells) == 257
    y, p = rec.predictions["test"]["y_true"], rec.predictions["test"]["y_pred"]
    assert sum(r["count"] for r in cells if r["correct"]) == int((y == p).sum())
    if normalize:
        for name in rec.class_names:
            row = [r["share"] for r in cells if r["true"] == name]
            assert sum(row) == pytest.approx(1.0) or sum(row) == 0


def test_architecture_total():
    rec = record_for("classification-3")
    spec = build_spec(rec, Item("architecture", CHARTS.get("architecture").options()))
    total = sum(layer["params"] for layer in rec.layers if not layer["depth"])  # blocks count their insides
    assert total == rec.summary["params"]
    assert f"{total:,} parameters" in spec["title"]["text"]
    rows = [r for r in _values(spec) if "params" in r]
    assert len(rows) == len(rec.layers)
    by_label = {r["label"].split()[0]: r["params"] for r in rows}
    assert by_label["2"] == by_label["2.0"] + by_label["2.1"]
    indents = {r["label"].split()[0]: r["indent"] for r in rows}
    assert indents["2.0"] > indents["2"]


def test_weights_default_and_named_layer():
    rec = record_for("classification-3")
    opts = CHARTS.get("weights").options
    spec = build_spec(rec, Item("weights", opts()))
    assert "layer 0" in spec["title"]["text"]
    assert len([r for r in _values(spec) if "w" in r]) == 4 * 64
    spec = build_spec(rec, Item("weights", opts(layer="2.0")))
    assert "layer 2.0" in spec["title"]["text"]


def test_weights_large_kernel_is_sampled():
    rec = record_for("classification-10")
    spec = build_spec(rec, Item("weights", CHARTS.get("weights").options(layer="2")))
    cells = [r for r in _values(spec) if "w" in r]
    assert 0 < len(cells) <= MAX_ROWS
    assert "every 16th input (64 of 1024) shown" in spec["title"]["subtitle"]
    kernel = rec.weights["2"]["kernel"]
    assert all(kernel[r["i"], r["j"]] == r["w"] for r in cells)    # real weights, not means
    assert {r["i"] for r in cells} >= {0, 1008}


@pytest.mark.parametrize("shape", [(3, 3, 16, 40), (5, 8, 12), (3, 3, 1, 64)])
def test_weights_conv_grid(shape):
    rec = classification_record(10, n_features=64, conv=True)
    rec.weights["9"] = {"kernel": np.random.default_rng(0).normal(size=shape)}
    spec = build_spec(rec, Item("weights", CHARTS.get("weights").options(layer="9")))
    cells = [r for r in _values(spec) if "w" in r]
    assert 0 < len(cells) <= MAX_ROWS and "Filters of layer 9" in spec["title"]["text"]
    assert vlc.vegalite_to_svg(spec).lstrip().startswith("<svg")


def test_learning_curves_options():
    rec = record_for("classification-3")
    opts = CHARTS.get("learning_curves").options
    spec = build_spec(rec, Item("learning_curves", opts(metrics=("loss",), log_scale=True)))
    assert "log" in json.dumps(spec)
    assert len({r["split"] for r in _values(spec) if "split" in r}) == 2
    assert any("best_epoch" in r for r in _values(spec))
    # Many epochs: downsampled below the row limit, best epoch kept.
    long = classification_record(3, epochs=4000)
    spec = build_spec(long, Item("learning_curves", opts()))
    assert _rows(spec) <= MAX_ROWS
    assert any(r.get("epoch") == 30 for r in _values(spec))
    # A few epochs: one tick per epoch (Vega's own ticks were 1, 1.5, 2, ... printed 1 2 2 3 3)
    short = classification_record(3, epochs=3)
    axes = [layer["encoding"]["x"]["axis"] for panel in build_spec(short, Item("learning_curves", opts()))["concat"]
            for layer in panel["layer"] if "axis" in layer["encoding"]["x"]]
    assert axes and all(a["values"] == [1, 2, 3] for a in axes)
    axes = [layer["encoding"]["x"]["axis"] for panel in spec["concat"] for layer in panel["layer"]
            if "axis" in layer["encoding"]["x"]]
    assert axes and all("values" not in a and a["tickMinStep"] == 1 for a in axes)


def test_binary_without_class_names():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    p1 = np.clip(y * 0.6 + rng.random(50) * 0.4, 0, 1)[:, None]     # one sigmoid column
    rec = RunRecord(name="bin", task="classification", history=_history(5, ("auc",), rng),
                    predictions={"test": {"y_true": y, "y_pred": (p1[:, 0] > 0.5).astype(int), "proba": p1}})
    spec = build_spec(rec, Item("confusion_matrix", CHARTS.get("confusion_matrix").options()))
    cells = [r for r in _values(spec) if "predicted" in r]
    assert {r["true"] for r in cells} == {"0", "1"} and sum(r["count"] for r in cells) == 50
    spec = build_spec(rec, Item("predictions", CHARTS.get("predictions").options()))
    assert sum(r["count"] for r in _values(spec) if "outcome" in r) == 50
    assert "lack proba" in _skip(RunRecord(name="x", task="classification", history=[],
                                           predictions={"test": {"y_true": y, "y_pred": y}}), "predictions")


# --- skips ------------------------------------------------------------------------------------

def _skip(rec, kind, **options):
    with pytest.raises(ChartSkip) as e:
        CHARTS.get(kind).build(rec, CHARTS.get(kind).options(**options))
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_skips():
    clf, reg = record_for("classification-3"), record_for("regression")
    assert "regression" in _skip(clf, "residuals")
    assert "classification" in _skip(reg, "confusion_matrix")
    msg = _skip(clf, "weights", layer="1")
    assert "0, 2.0, 4" in msg and "no kernel" in msg
    assert "does not exist" in _skip(clf, "weights", layer="9")
    assert "2.1" not in _skip(clf, "weights", layer="2.1").split(";")[1]  # layer_norm: no kernel
    no_val = RunRecord(name="x", task="classification", history=clf.history,
                       predictions={"test": clf.predictions["test"]}, class_names=clf.class_names)
    assert "validation" in _skip(no_val, "confusion_matrix", split="val")
    empty = RunRecord(name="x", task="regression", history=[])
    for kind in ("learning_curves", "lr_schedule", "architecture", "weights", "predictions"):
        _skip(empty, kind)
    assert "accuracy" in _skip(reg, "learning_curves", metrics=("accuracy",))


# --- render and report ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    rec = classification_record(3, name="<script>alert(1)</script>")
    items = [i for i in charts.auto_items("classification") if i.kind not in PROBE_CHARTS] + [
        Item("weights", CHARTS.get("weights").options()),
        Item("weights", CHARTS.get("weights").options(layer="1")),   # skipped: relu
        Item("residuals", CHARTS.get("residuals").options()),       # skipped: classification
    ]
    out = render_charts(rec, items, run_dir / "charts", png=True)
    write_report(rec, out, run_dir / "report.html")
    return rec, run_dir, out


def test_render_writes_files(rendered_run):
    rec, run_dir, out = rendered_run
    names = [r.name for r in out]
    assert names.count("weights") == 1 and "weights_2" in names
    drawn = [r for r in out if r.skipped is None]
    assert len(drawn) == len(out) - 2
    for r in drawn:
        assert f"charts/{r.name}.vl.json" in r.files and f"charts/{r.name}.png" in r.files
        assert (run_dir / "charts" / f"{r.name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((run_dir / "charts" / f"{r.name}.vl.json").read_text()) == r.spec
    assert not list((run_dir / "charts").glob("*.tmp"))
    skipped = {r.name: r.skipped for r in out if r.skipped}
    assert set(skipped) == {"weights_2", "residuals"}


def test_render_never_raises(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Broken:
        kind: str = "learning_curves"
        options: object = None   # the builder will fail on None options

    out = render_charts(record_for("regression"), [Broken()], tmp_path / "charts", png=False)
    assert out[0].skipped.startswith("failed: ")


def test_report(rendered_run):
    rec, run_dir, out = rendered_run
    html = (run_dir / "report.html").read_text()
    bundle = bundle_path().read_text()
    assert html.count(bundle) == 1
    assert len(re.findall(r"<script\b", html)) == 2       # the bundle, then the charts
    for r in out:
        if r.skipped is None:
            assert f'id="chart-{r.name}"' in html
        else:
            assert r.name in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    assert len(scripts) == 2 and "vegaEmbed(" in scripts[1]
    assert '"url"' not in scripts[1] and not re.search(r"<script[^>]*\bsrc=", html)
    assert not list(run_dir.glob("*.tmp"))


def test_bundle_cache_honours_xdg(tmp_path, monkeypatch):
    from compilers.charts import report

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = report.bundle_path()
    assert path.parent == tmp_path / "xdg" / "dsl" and vlc.__version__ in path.name
    path.parent.mkdir(parents=True)
    path.write_text("/*fake bundle*/ window.vegaEmbed = function () {};")
    assert report.javascript_bundle().startswith("/*fake bundle*/")
    rec = RunRecord(name="empty & odd", task="regression", history=[], summary={"metrics": {"test": {"r2": float("nan")}}})
    write_report(rec, [], tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert html.count("/*fake bundle*/") == 1 and "empty &amp; odd" in html and "vegaEmbed(" in html


def test_script_safe_json():
    from compilers.charts.report import script_safe_json

    text = script_safe_json({"t": "</script><!-- & \u2028", "x": float("nan")})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"t": "</script><!-- & \u2028", "x": None}
