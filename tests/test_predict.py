"""`python -m dsl predict RUN_DIR data.source=...`: a finished run's model on new data.

Tiny runs are trained once per module; predictions on the rows of the run's own test split must
reproduce what the run recorded for them (RunRecord.predictions["test"]).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from dsl.errors import DataError

TABLE_SPEC = """\
name: shop
seed: 0
data:
  source: shop.csv
  target: bought
  prep: [one_hot, standardize]
  split: {test: 0.25, val: 0.15}
model: {layers: [{dense: 8}, relu]}
train: {epochs: 3, batch_size: 16}
plots: []
"""

REGRESSION_SPEC = """\
name: reg
seed: 1
data:
  source: regression
  options: {n_samples: 120, n_features: 3, n_informative: 2, noise: 1.0}
  prep: [min_max]
  split: {test: 0.25, val: 0.1}
model: {layers: [{dense: 8}, tanh]}
train: {epochs: 3, batch_size: 32}
plots: []
"""

IMAGE_SPEC = """\
name: pics
seed: 0
data:
  source: pics/
  prep: [{image: {grayscale: true}}, standardize]
  split: {test: 0.25, val: 0.1}
model: {layers: [flatten, {dense: 8}, relu]}
train: {epochs: 2, batch_size: 8}
plots: []
"""

NPZ_SPEC = """\
name: arr
seed: 0
data:
  source: arr.npz
  prep: [standardize]
  split: {test: 0.25, val: 0.1}
model: {layers: [{dense: 4}, relu]}
train: {epochs: 2}
plots: []
"""


class _Capture:
    """What run_cli needs from capsys, for module-scoped fixtures (pytest captures the output)."""

    def readouterr(self):
        return "", ""


def _train(root: Path, name: str, spec: str) -> Path:
    (root / f"{name}.yaml").write_text(spec)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code, _, _ = run_cli(["run", f"conf={name}.yaml", f"hydra.run.dir={name}-run"], _Capture())
    finally:
        os.chdir(cwd)
    assert code == 0
    run = root / f"{name}-run"
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    return run


def _shop_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], n)
    price = rng.normal(50, 15, n).round(2)
    visits = rng.integers(0, 20, n)
    bought = np.where((color == "red") ^ (price > 50), "yes", "no")
    return pd.DataFrame({"id": np.arange(n), "color": color, "price": price, "visits": visits, "bought": bought})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def shop_run(root):
    frame = _shop_frame()
    frame.to_csv(root / "shop.csv", index=False)
    # `id` is a feature too (data.features is not set): predict must ask for every column the run read
    return _train(root, "shop", TABLE_SPEC)


@pytest.fixture(scope="module")
def reg_run(root):
    return _train(root, "reg", REGRESSION_SPEC)


def _test_rows(run: Path, labels, n: int | None = None) -> np.ndarray:
    """Row indices of the run's test split in its source (as load_dataset draws them); `labels`
    (classification) or `n` rows."""
    from compilers.data.split import split_indices
    from compilers.pipeline import spec_of_run

    spec = spec_of_run(run)
    seed = spec.data.split.seed if spec.data.split.seed is not None else spec.seed
    return split_indices(len(labels) if n is None else n, labels, spec.data.split, seed, labels is not None)["test"]


def _record(run: Path) -> dict:
    from compilers.runs.record import RunRecord

    return RunRecord.load(run).predictions["test"]


@pytest.fixture
def here(root, monkeypatch):
    monkeypatch.chdir(root)
    return root


# --- tables --------------------------------------------------------------------------------------

def test_table_predictions_reproduce_the_runs_test_predictions(cli, here, shop_run):
    code, out, err = cli("predict", str(shop_run), "data.source=shop.csv")
    assert code == 0, err
    assert err == ""
    path = shop_run / "predictions.csv"
    assert out.splitlines()[0] == f"predictions: {path} (120 rows)"
    pred = pd.read_csv(path)
    source = pd.read_csv(here / "shop.csv")
    assert list(pred.columns) == list(source.columns) + ["prediction", "proba_no", "proba_yes"]
    pd.testing.assert_frame_equal(pred[list(source.columns)], source)      # one row per input row, in order
    rec = _record(shop_run)
    rows = _test_rows(shop_run, source["bought"].to_numpy(dtype=object))
    np.testing.assert_allclose(pred[["proba_no", "proba_yes"]].to_numpy()[rows], rec["proba"], atol=1e-5)
    assert list(pred["prediction"].to_numpy()[rows]) == [["no", "yes"][i] for i in rec["y_pred"]]
    accuracy = float(np.mean(pred["prediction"] == source["bought"]))
    assert f"accuracy {accuracy:.4f} on the 120 rows with a known 'bought'" in out


def test_new_rows_without_the_target_and_an_output_path(cli, here, shop_run):
    new = _shop_frame(7, seed=5).drop(columns=["bought"])[["visits", "price", "color", "id"]]   # any order
    new.to_csv(here / "new.csv", index=False)
    code, out, err = cli("predict", str(shop_run), "data.source=new.csv", "output=out/p.parquet")
    assert code == 0, err
    assert out.strip() == f"predictions: {Path('out/p.parquet')} (7 rows)"       # no target: no accuracy
    pred = pd.read_parquet(here / "out" / "p.parquet")
    assert list(pred.columns) == ["visits", "price", "color", "id", "prediction", "proba_no", "proba_yes"]
    np.testing.assert_allclose(pred[["proba_no", "proba_yes"]].sum(axis=1), 1.0, atol=1e-6)
    # columns are found by name: the same rows in the training file's column order predict the same
    _shop_frame(7, seed=5).to_csv(here / "same.csv", index=False)
    code, _, err = cli("predict", str(shop_run), "data.source=same.csv", "output=same_pred.csv")
    assert code == 0, err
    same = pd.read_csv(here / "same_pred.csv")
    np.testing.assert_allclose(same["proba_yes"], pred["proba_yes"], atol=1e-6)


def test_unknown_category_encodes_as_zeros_with_a_warning(cli, here, shop_run):
    new = _shop_frame(4, seed=3)
    new.loc[[1, 3], "color"] = ["purple", "purple"]
    new.to_csv(here / "odd.csv", index=False)
    code, out, err = cli("predict", str(shop_run), "data.source=odd.csv", "output=odd_pred.csv")
    assert code == 0, err
    assert err.strip() == ("warning: column 'color' has 2 values not seen in training ('purple'); "
                           "encoded as all zeros")
    pred = pd.read_csv(here / "odd_pred.csv")
    assert len(pred) == 4 and list(pred["color"]) == list(new["color"])
    # all zeros, by hand: the saved standardize step of each one-hot column applied to 0
    prep = json.loads((shop_run / "prep.json").read_text())
    assert [f for f in prep["features"] if f.startswith("color=")] == ["color=blue", "color=green", "color=red"]
    from compilers.predict import _apply, _forward, _network, open_run

    run = open_run(shop_run)
    std = next(s["state"] for s in prep["steps"] if s["kind"] == "standardize")
    scale = dict(zip(std["columns"], zip(std["mean"], std["std"])))
    row = new.iloc[1]
    raw = {"id": row["id"], "price": row["price"], "visits": row["visits"],
           "color=blue": 0.0, "color=green": 0.0, "color=red": 0.0}
    x = np.array([[(raw[f] - scale[f][0]) / scale[f][1] if f in scale else raw[f] for f in prep["features"]]],
                 np.float32)
    from compilers.runs.checkpoint import load_model
    from compilers.train.metrics import probabilities

    net, binary_logit = _network(run, x)
    params, ms = load_model(shop_run)
    proba = np.asarray(probabilities(_apply(_forward(net), params, ms, x, 64), binary_logit))
    np.testing.assert_allclose(pred.loc[1, ["proba_no", "proba_yes"]].to_numpy(dtype=float), proba[0], atol=1e-5)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_file_predicted_in_chunks_is_the_file_predicted_at_once(here, shop_run, monkeypatch, suffix):
    """A CSV or Parquet input is prepared, predicted and written CHUNK_ROWS rows at a time: the same
    output, the same warnings (counted over every chunk) and score, the same rows named in errors."""
    import compilers.predict as predict_module
    from compilers.predict import open_run, predict, source_of

    new = _shop_frame(50, seed=7)
    new.loc[[3, 31, 44], "color"] = ["purple", "teal", "purple"]     # unseen, in three chunks
    new["note"] = [None] * 10 + ["kept"] * 40                          # an extra column, empty at first
    name = f"chunky{suffix}"
    new.to_csv(here / name, index=False) if suffix == ".csv" else new.to_parquet(here / name, index=False)
    run = open_run(shop_run)
    results = {}
    for rows in (1 << 16, 7):
        monkeypatch.setattr(predict_module, "CHUNK_ROWS", rows)
        out = here / f"chunky_{rows}{suffix}"
        results[rows] = predict(run, source_of(run, name, {}), here, out=out), out
    (one, one_path), (many, many_path) = results[1 << 16], results[7]
    assert one.frame is None and one.rows == many.rows == 50
    assert many.warnings == one.warnings == [
        "column 'color' has 3 values not seen in training ('purple', 'teal'); encoded as all zeros"]
    assert many.score == one.score and one.score["rows"] == 50
    if suffix == ".csv":
        assert many_path.read_text() == one_path.read_text()
    else:
        pd.testing.assert_frame_equal(pd.read_parquet(many_path), pd.read_parquet(one_path))
    assert not list(here.glob("chunky_*.tmp"))

    def errors_of(frame, name):
        """The error of predicting `frame` at once and in chunks of 7 rows; no output either way."""
        frame.to_csv(here / name, index=False)
        errors = []
        for rows in (1 << 16, 7):
            monkeypatch.setattr(predict_module, "CHUNK_ROWS", rows)
            with pytest.raises(DataError) as e:
                predict(run, source_of(run, name, {}), here, out=here / "never.csv")
            errors.append(str(e.value))
            assert not (here / "never.csv").exists() and not (here / "never.csv.tmp").exists()
        return errors

    # a missing value the run does not impute, and text where it read numbers: the same rows named
    holes = new.astype({"visits": float})
    holes.loc[[23, 26, 40, 41, 45, 49], "visits"] = np.nan              # in chunks 4, 6 and 7
    one, many = errors_of(holes, "chunky_holes.csv")
    assert one == many and "has 6 missing values (data rows 24, 27, 41, 42, 46, ...)" in one
    words = new.astype({"price": object})
    words.loc[[2, 40], "price"] = ["cheap", "dear"]                       # text in chunks 1 and 6
    one, many = errors_of(words, "chunky_words.csv")
    assert one == many and "holds text ('cheap' at data rows 3, 41)" in one


def test_missing_columns_are_named_with_did_you_mean(cli, here, shop_run):
    _shop_frame(5).rename(columns={"price": "Price"}).drop(columns=["visits"]).to_csv(here / "cols.csv", index=False)
    code, out, err = cli("predict", str(shop_run), "data.source=cols.csv")
    assert code == 2 and out == ""
    assert err.strip() == ("data.source: cols.csv: missing columns the run needs: 'price' (did you mean 'Price'?), "
                           "'visits'")


def test_a_column_that_cannot_convert_to_numbers(cli, here, shop_run):
    frame = _shop_frame(5).astype({"price": object})
    frame.loc[2, "price"] = "cheap"
    frame.to_csv(here / "text.csv", index=False)
    code, _, err = cli("predict", str(shop_run), "data.source=text.csv")
    assert code == 2
    assert err.strip() == ("data.source: text.csv: column 'price' holds text ('cheap' at data row 3) where the run "
                           "read numbers")
    # numbers written as text convert
    frame.loc[2, "price"] = "12.5"
    frame.astype({"price": str}).to_parquet(here / "text.parquet")
    code, out, err = cli("predict", str(shop_run), "data.source=text.parquet", "output=text_pred.csv")
    assert code == 0, err
    assert pd.read_csv(here / "text_pred.csv")["price"][2] == 12.5


def test_missing_values_the_run_does_not_impute(cli, here, shop_run):
    frame = _shop_frame(6)
    frame.loc[[1, 4], "visits"] = np.nan
    frame.to_csv(here / "holes.csv", index=False)
    code, _, err = cli("predict", str(shop_run), "data.source=holes.csv")
    assert code == 2
    assert err.strip() == ("data.source: holes.csv: column 'visits' has 2 missing values (data rows 2, 5) and the run "
                           "does not impute it; fill them in or leave those rows out")


def test_bad_arguments_and_directories(cli, here, shop_run):
    code, _, err = cli("predict", str(shop_run), "data.source=shop.csv", "outptu=x.csv")
    assert code == 2 and err.strip() == ("outptu: unknown option 'outptu' (did you mean 'output'?); predict takes "
                                         "data.source=, data.options.KEY= and output=")
    code, _, err = cli("predict", str(shop_run))
    assert code == 2 and err.startswith("data.source: required")
    code, _, err = cli("predict", str(shop_run), "data.source=shop.csv", "output=p.txt")
    assert code == 2 and err.strip() == "output: 'p.txt': write a .csv or .parquet file"
    code, _, err = cli("predict", str(here), "data.source=shop.csv")
    assert code == 2 and err.strip() == f"{here} is not a run directory (it needs summary.json and .hydra/config.yaml)"
    code, _, err = cli("predict", str(here / "nowhere"), "data.source=shop.csv")
    assert code == 2 and err.strip() == f"{here / 'nowhere'}: no such run directory"
    code, _, err = cli("predict", str(shop_run), "data.source=nope.csv")
    assert code == 2 and err.strip().startswith("data.source: file not found: nope.csv")
    np.savez(here / "x.npz", x=np.zeros((3, 4)), y=np.zeros(3))
    code, _, err = cli("predict", str(shop_run), "data.source=x.npz")
    assert code == 2 and err.strip() == ("data.source: the run was trained on csv data; data.source must be a table "
                                         "(a .csv or .parquet file, or a built-in data set), got 'x.npz'")
    for f in ("p.txt", "x.csv"):
        assert not (here / f).exists()


def test_an_unfinished_run_has_no_model_to_predict_with(cli, here, shop_run):
    run = here / "unfinished"
    shutil.copytree(shop_run, run)
    (run / "predictions.csv").unlink(missing_ok=True)
    ckpts = sorted((run / "checkpoints").iterdir(), key=lambda p: int(p.name))
    shutil.rmtree(ckpts[-1])             # the final checkpoint holds the model the run reports
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    code, out, err = cli("predict", str(run), "data.source=shop.csv")
    assert code == 2 and out == ""
    assert err.strip() == (f"{run} has not finished training (status: interrupted); there is no final model to "
                           f"predict with: finish it with python -m dsl resume {run}")
    assert not (run / "predictions.csv").exists()
    (run / "summary.json").write_text(json.dumps({**summary, "status": "failed", "reason": "loss became nan"}))
    code, _, err = cli("predict", str(run), "data.source=shop.csv")
    assert code == 2 and err.strip() == f"{run} failed (loss became nan); it has no model to predict with"


def test_predict_is_listed_as_a_command(cli):
    from dsl.cli import COMMANDS, LATER, USAGE

    assert "predict" in COMMANDS and "predict" not in LATER and "predict RUN_DIR" in USAGE


# --- regression on a generated data set, by name --------------------------------------------------

def test_regression_by_name_keeps_the_runs_options(cli, here, reg_run):
    code, out, err = cli("predict", str(reg_run), "data.source=regression", "output=reg.csv")
    assert code == 0, err
    pred = pd.read_csv(here / "reg.csv")
    assert list(pred.columns) == ["x0", "x1", "x2", "y", "prediction"] and len(pred) == 120
    rec = _record(reg_run)
    rows = _test_rows(reg_run, None, 120)
    np.testing.assert_allclose(pred["prediction"].to_numpy()[rows], rec["y_pred"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(pred["y"].to_numpy()[rows], rec["y_true"], rtol=1e-5)
    y, p = pred["y"].to_numpy(), pred["prediction"].to_numpy()
    r2 = 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert f"r2 {r2:.4f}  mae {np.abs(y - p).mean():.4g} on the 120 rows with a 'y' value" in out
    # data.options override the run's: other rows
    code, out, err = cli("predict", str(reg_run), "data.source=regression", "data.options.n_samples=10",
                         "output=reg10.csv")
    assert code == 0, err
    assert "(10 rows)" in out and len(pd.read_csv(here / "reg10.csv")) == 10
    code, _, err = cli("predict", str(reg_run), "data.source=regression", "data.options.n_sample=10")
    assert code == 2 and "data.options.n_sample: unknown option 'n_sample' (did you mean 'n_samples'?)" in err


def test_a_regression_score_added_chunk_by_chunk_is_the_score_of_every_row(here, reg_run, monkeypatch):
    """predict does not keep the target column: R² and MAE are summed chunk by chunk (with rows
    whose target is missing left out), and equal the figures over all the rows at once."""
    import compilers.predict as predict_module
    from compilers.predict import _Score, open_run, predict, source_of

    run = open_run(reg_run)
    rng = np.random.default_rng(5)
    y, p = pd.Series(rng.normal(40, 9, 1000), name="y"), rng.normal(40, 12, 1000)
    y[rng.choice(1000, 25, replace=False)] = np.nan
    ok = np.isfinite(y.to_numpy())
    want_r2 = 1 - ((y[ok] - p[ok]) ** 2).sum() / ((y[ok] - y[ok].mean()) ** 2).sum()
    for cuts in ([1000], [1, 999], [7] * 142 + [6], [500, 0, 500]):
        score, at = _Score(run), 0
        for n in cuts:
            score.add(y.iloc[at:at + n], p[at:at + n])
            at += n
        got = score.result()
        assert got["rows"] == 975 and got["target"] == "y"
        assert got["r2"] == pytest.approx(want_r2, rel=1e-12) and got["mae"] == pytest.approx(np.abs(y[ok] - p[ok]).mean(), rel=1e-12)
    # through predict: a CSV of the run's kind of rows, at once and 7 rows at a time
    code = predict(run, source_of(run, "regression", {}), here, out=here / "reg_rows.csv")
    rows = pd.read_csv(here / "reg_rows.csv").drop(columns=["prediction"])
    rows.loc[[3, 50, 51], "y"] = np.nan
    rows.to_csv(here / "reg_rows_in.csv", index=False)
    scores = []
    for n in (1 << 16, 7):
        monkeypatch.setattr(predict_module, "CHUNK_ROWS", n)
        scores.append(predict(run, source_of(run, "reg_rows_in.csv", {}), here, out=here / f"reg_{n}.csv").score)
    assert scores[0]["rows"] == scores[1]["rows"] == 117
    assert scores[1]["r2"] == pytest.approx(scores[0]["r2"], rel=1e-12)
    assert scores[1]["mae"] == pytest.approx(scores[0]["mae"], rel=1e-12)
    assert code.rows == 120


def test_the_csv_writer_reads_back_as_pandas_writes(tmp_path):
    """Predictions are written by pyarrow's CSV writer, chunk by chunk (a chunk with a column of
    mixed Python objects by pandas): read back, the same values as pandas' to_csv gives."""
    from compilers.predict import _Writer

    chunks = [pd.DataFrame({"a b": [0.1, 1e-7, np.nan], "s": ["x", 'he said "hi"', None], "t": [True, False, True],
                            "i": [1, 2, 3], "p": np.array([0.36225224, 1 / 3, 2.5e-8], np.float32),
                            "prediction": np.array(["yes", "no", "yes"], dtype=object)}),
              pd.DataFrame({"a b": [2.0, 3.5, 4.0], "s": [None, None, None], "t": [False, False, True],
                            "i": [4, 5, 6], "p": np.array([1.0, 0.5, 0.0], np.float32),
                            "prediction": np.array(["no", "no", "a,b"], dtype=object)}),
              pd.DataFrame({"a b": [5.0], "s": [7], "t": [True], "i": [7], "p": np.array([0.25], np.float32),
                            "prediction": pd.Series([("odd", 1)], dtype=object)})]   # a tuple: pandas writes it
    writer = _Writer(tmp_path / "out.csv")
    for chunk in chunks:
        writer.write(chunk.copy())
    writer.close()
    text = (tmp_path / "out.csv").read_text()
    assert text.splitlines()[0] == "a b,s,t,i,p,prediction"
    assert text.splitlines()[-1] == "5.0,7,True,7,0.25,\"('odd', 1)\""        # pandas' own line
    want = pd.concat(chunks, ignore_index=True)
    want.to_csv(tmp_path / "pandas.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out.csv"), pd.read_csv(tmp_path / "pandas.csv"))
    assert not (tmp_path / "out.csv.tmp").exists()


# --- arrays and images ------------------------------------------------------------------------------

def _pictures(folder: Path, per_class: int = 12, size: int = 6, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, bright in (("dark", 40), ("light", 200)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(bright, 30, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(folder / name / f"{i:02d}.png")


def test_image_folder_predictions(cli, here):
    _pictures(here / "pics")
    run = _train(here, "pics", IMAGE_SPEC)
    code, out, err = cli("predict", str(run), "data.source=pics/")
    assert code == 0, err
    pred = pd.read_csv(run / "predictions.csv")
    assert list(pred.columns) == ["file", "label", "prediction", "proba_dark", "proba_light"]
    assert pred["file"][0] == "dark/00.png" and len(pred) == 24
    rec = _record(run)
    labels = pred["label"].to_numpy(dtype=object)
    rows = _test_rows(run, labels)
    np.testing.assert_allclose(pred[["proba_dark", "proba_light"]].to_numpy()[rows], rec["proba"], atol=1e-5)
    assert "rows with a known 'label'" in out
    # a flat folder of new images, larger than the run's: resized to the run's size, no labels
    flat = here / "flat"
    flat.mkdir()
    from PIL import Image

    for i, v in enumerate((30, 220)):
        Image.fromarray(np.full((12, 12), v, np.uint8), "L").save(flat / f"new{i}.png")
    code, out, err = cli("predict", str(run), "data.source=flat/", "output=flat.csv")
    assert code == 0, err
    pred = pd.read_csv(here / "flat.csv")
    assert list(pred["file"]) == ["new0.png", "new1.png"] and "accuracy" not in out
    assert list(pred.columns) == ["file", "prediction", "proba_dark", "proba_light"]


def test_npz_predictions_with_and_without_labels(cli, here):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(here / "arr.npz", x=x, y=y)
    run = _train(here, "arr", NPZ_SPEC)
    code, out, err = cli("predict", str(run), "data.source=arr.npz", "output=arr.csv")
    assert code == 0, err
    pred = pd.read_csv(here / "arr.csv")
    assert list(pred.columns) == ["index", "y", "prediction", "proba_0", "proba_1"]
    rec = _record(run)
    rows = _test_rows(run, np.asarray([str(v) for v in y], dtype=object))
    np.testing.assert_allclose(pred[["proba_0", "proba_1"]].to_numpy()[rows], rec["proba"], atol=1e-5)
    np.savez(here / "unlabelled.npz", x=x[:5])
    code, out, err = cli("predict", str(run), "data.source=unlabelled.npz", "output=u.csv")
    assert code == 0, err
    u = pd.read_csv(here / "u.csv")
    assert list(u["index"]) == [0, 1, 2, 3, 4] and "y" not in u.columns
    np.testing.assert_allclose(u["proba_1"], pred["proba_1"][:5], atol=1e-6)
    np.savez(here / "wide.npz", x=np.zeros((4, 5), np.float32))
    code, _, err = cli("predict", str(run), "data.source=wide.npz")
    assert code == 2 and err.strip() == "data.source: wide.npz: examples of shape [5]; the run was trained on [3]"
