"""The data layer: sources, prep steps, splits and load_dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compilers.data.dataset import Columns
from compilers.data.load import apply_prep, infer_task, load_dataset, to_x
from compilers.data.prep import PrepContext, natural_sorted
from compilers.data.sources import SourceContext
from compilers.data.split import split_indices, split_sizes
from dsl.errors import DataError, SpecError
from dsl.parse import parse_spec
from dsl.registry import PREP, SOURCES
from dsl.spec import Split

ROOT = Path(__file__).resolve().parents[1]


def spec(data: dict, **top):
    return parse_spec({"data": data, "model": {"layers": [{"dense": 8}]}, **top})


def raw(data) -> pd.DataFrame:
    """A data set's raw rows as a frame: the columnar loader keeps them as NumPy columns."""
    return data.raw.to_frame() if isinstance(data.raw, Columns) else data.raw


def load(data: dict, cwd: Path = ROOT, **top):
    return load_dataset(spec(data, **top), cwd)


def data_error(data: dict, cwd: Path = ROOT, **top) -> DataError:
    with pytest.raises(DataError) as info:
        load(data, cwd, **top)
    return info.value


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


MIXED = pd.DataFrame({
    "age": [21.0, 35.0, np.nan, 50.0, 44.0, 29.0, 61.0, 38.0, 25.0, 47.0],
    "income": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
    "flat": [3.0] * 10,                                   # zero variance
    "city": ["paris", "rome", "paris", None, "oslo", "rome", "paris", "oslo", "rome", "paris"],
    "label": ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"],
})


# ---------------------------------------------------------------------------------------------
# Registration

def test_registered_names():
    assert set(SOURCES.names()) == {"iris", "wine", "breast_cancer", "digits", "diabetes", "moons", "circles",
                                    "blobs", "spirals", "xor", "regression", "csv", "parquet", "npz",
                                    "image_folder"}
    assert set(PREP.names()) == {"standardize", "min_max", "impute", "drop_na", "one_hot", "log", "clip",
                                 "image", "tokenize"}
    for entry in list(SOURCES) + list(PREP):
        assert entry.doc, entry.name
    assert SOURCES.get("csv").meta.get("file") and SOURCES.get("parquet").meta.get("file")


def test_registering_modules_import_nothing_heavy():
    code = ("import sys, compilers.data.sources, compilers.data.prep, compilers.data.split, compilers.data.load;"
            "print(sorted(m for m in ('pandas', 'sklearn', 'jax', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Sources

BUILTIN = [e.name for e in SOURCES if not e.meta.get("file")]


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_source(name):
    entry = SOURCES.get(name)
    table = entry.build(entry.options(), SourceContext(cwd=ROOT, seed=0))
    frame = table.numeric_frame() if table.frame is None else table.frame   # built-ins give numbers (Table.matrix)
    assert len(frame) > 0 and table.target in frame.columns and table.task in ("classification", "regression")
    data = load({"source": name, "prep": ["standardize"]})
    assert data.task == table.task
    assert data.target == table.target
    for split in ("train", "val", "test"):
        x, y = data.x[split], data.y[split]
        assert x.dtype == np.float32 and x.shape == (len(y),) + data.input_shape
        assert np.all(np.isfinite(x))
        if data.task == "classification":
            assert y.dtype == np.int32 and y.min() >= 0 and y.max() < data.n_classes
        else:
            assert y.dtype == np.float32
    assert sum(data.sizes().values()) == len(frame)
    assert data.description.startswith(name + ":")


@pytest.mark.parametrize("name,expected", [
    ("iris", (150, 4, ["setosa", "versicolor", "virginica"], "species")),
    ("wine", (178, 13, ["class_0", "class_1", "class_2"], "class")),
    ("breast_cancer", (569, 30, ["benign", "malignant"], "diagnosis")),
    ("digits", (1797, 64, [str(i) for i in range(10)], "digit")),
    ("diabetes", (442, 10, None, "progression")),
])
def test_builtin_contents(name, expected):
    rows, n_features, classes, target = expected
    data = load({"source": name})
    assert len(data.raw) == rows and len(data.feature_names) == n_features
    assert data.class_names == classes and data.target == target
    assert data.description == (f"{name}: {rows} rows, {n_features} features, "
                                + (f"{len(classes)} classes" if classes else f"regression on '{target}'"))


def test_builtin_values_match_sklearn():
    from sklearn.datasets import load_diabetes, load_digits, load_iris

    iris = raw(load({"source": "iris"}))
    assert iris.columns.tolist()[:4] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert np.allclose(iris.iloc[:, :4].to_numpy(), load_iris().data)
    assert iris["species"].tolist() == [["setosa", "versicolor", "virginica"][i] for i in load_iris().target]
    digits = raw(load({"source": "digits"}))
    assert np.array_equal(digits[[f"px{i}" for i in range(64)]].to_numpy(), load_digits().data)
    assert digits["digit"].tolist() == [str(i) for i in load_digits().target]
    diabetes = raw(load({"source": "diabetes"}))
    assert np.allclose(diabetes.iloc[:, :10].to_numpy(), load_diabetes(scaled=False).data)


def test_digits_as_images():
    data = load({"source": "digits", "shape": [8, 8, 1]})
    assert data.input_shape == (8, 8, 1) and data.x["train"].shape[1:] == (8, 8, 1)
    assert load({"source": "digits", "shape": [-1, 8]}).input_shape == (8, 8)


@pytest.mark.parametrize("name", ["moons", "circles", "blobs", "spirals", "xor"])
def test_generated_options_and_seed(name):
    a = load({"source": name, "options": {"n_samples": 120, "noise": 0.3}}, seed=1)
    b = load({"source": name, "options": {"n_samples": 120, "noise": 0.3}}, seed=1)
    c = load({"source": name, "options": {"n_samples": 120, "noise": 0.3, "seed": 7}}, seed=1)
    assert len(a.raw) == 120 and a.feature_names[:2] == ["x0", "x1"] and a.target == "label"
    assert raw(a).equals(raw(b)) and not raw(a).equals(raw(c))
    assert all(n.isdigit() for n in a.class_names)


def test_generated_specifics():
    blobs = load({"source": "blobs", "options": {"centers": 12, "n_features": 3, "n_samples": 240}})
    assert blobs.class_names == [str(i) for i in range(12)]    # numeric order, not "10" < "2"
    assert blobs.feature_names == ["x0", "x1", "x2"]
    spirals = load({"source": "spirals", "options": {"arms": 3, "n_samples": 300}})
    assert spirals.n_classes == 3
    reg = load({"source": "regression", "options": {"n_features": 4, "n_informative": 2, "n_samples": 50}})
    assert reg.task == "regression" and reg.target == "y" and reg.feature_names == ["x0", "x1", "x2", "x3"]
    with pytest.raises(SpecError) as info:
        spec({"source": "regression", "options": {"n_features": 2, "n_informative": 3}})
    assert info.value.path == "data.options" and "n_informative (3) must not exceed n_features (2)" in str(info.value)


def test_csv_round_trip(tmp_path):
    MIXED.to_csv(tmp_path / "people.csv", index=False)
    data = load({"source": "people.csv", "target": "label", "prep": ["one_hot", "impute", "standardize"]}, tmp_path)
    pd.testing.assert_frame_equal(data.raw.to_frame(), MIXED, check_dtype=False)   # the columnar loader's Columns
    assert data.feature_names == ["age", "income", "flat", "city=oslo", "city=paris", "city=rome"]
    assert data.class_names == ["a", "b"] and data.description.startswith("people.csv: 10 rows, 6 features")
    absolute = load({"source": str(tmp_path / "people.csv"), "target": "label", "prep": ["one_hot", "impute"]})
    assert absolute.feature_names == data.feature_names


def test_csv_separator(tmp_path):
    write_csv(tmp_path / "semi.csv", "a;b;y\n1;2;0\n3;4;1\n5;6;0\n7;8;1\n1;1;0\n2;2;1\n")
    data = load({"source": "semi.csv", "target": "y", "options": {"sep": ";"}, "split": {"test": 0, "val": 0}},
                tmp_path)
    assert data.feature_names == ["a", "b"] and data.task == "classification" and data.class_names == ["0", "1"]


def test_parquet_round_trip(tmp_path):
    MIXED.to_parquet(tmp_path / "people.parquet")
    data = load({"source": "people.parquet", "target": "label", "prep": ["one_hot", "impute"]}, tmp_path)
    pd.testing.assert_frame_equal(data.raw.to_frame(), MIXED, check_dtype=False)
    assert data.feature_names[-3:] == ["city=oslo", "city=paris", "city=rome"]


@pytest.mark.parametrize("name,content,message", [
    ("missing.csv", None, "data.source: file not found: missing.csv (relative to {cwd})"),
    ("empty.csv", b"", "data.source: empty file: empty.csv"),
    ("latin1.csv", "a,b\n1,caf\xe9\n2,x\n".encode("latin-1"), "data.source: latin1.csv: not valid UTF-8 text (line 2)"),
    ("ragged.csv", b"a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n", "data.source: ragged.csv: ragged rows at line 3: expected 3 fields"),
    ("header.csv", b"a,b\n", "data.source: header.csv: no data rows (only a header)"),
    ("twice.csv", b"a,a\n1,2\n", "data.source: twice.csv: column 'a' appears twice in the header"),
    ("bad.parquet", b"this is not parquet", "data.source: bad.parquet: cannot read: not a Parquet file"),
])
def test_file_errors(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    error = data_error({"source": name, "target": "b"}, tmp_path)
    assert str(error).startswith(message.format(cwd=tmp_path)), str(error)
    assert "\n" not in str(error) and error.path == "data.source"


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "d.csv").mkdir()
    assert "is a directory" in str(data_error({"source": "d.csv"}, tmp_path))


# ---------------------------------------------------------------------------------------------
# Prep steps

PREP_EXAMPLES = {
    "standardize": "standardize",
    "min_max": "min_max",
    "impute": {"impute": "median"},
    "drop_na": "drop_na",
    "one_hot": "one_hot",
    "log": {"log": {"offset": 1.0, "columns": ["income", "flat"]}},
    "clip": {"clip": {"min": 0, "max": 5}},
    "tokenize": {"tokenize": {"column": "city", "max_len": 4}},
}


def test_every_prep_has_an_example():
    # `image` acts while an image folder is read, not on frames: tests/test_data_media.py
    assert set(PREP_EXAMPLES) | {"image"} == set(PREP.names())


@pytest.mark.parametrize("kind", sorted(PREP_EXAMPLES))
def test_every_prep_step(kind):
    item = spec({"source": "iris", "prep": [PREP_EXAMPLES[kind]]}).data.prep[0]
    prep = PREP.get(kind).build(item.options)
    train, rest = MIXED.iloc[:6].reset_index(drop=True), MIXED.iloc[6:].reset_index(drop=True)
    state = prep.fit(train, PrepContext(target="label", path=f"data.prep[0].{kind}"))
    saved = json.loads(json.dumps(state, allow_nan=False))      # plain JSON, no NaN
    out, again = prep.apply(rest, state), prep.apply(rest, saved)
    pd.testing.assert_frame_equal(out, again)
    assert "label" in out.columns and len(out) <= len(rest)
    numeric = out.select_dtypes("number")
    assert not numeric.isin([np.inf, -np.inf]).any().any()
    assert not numeric.drop(columns=["age"], errors="ignore").isna().any().any()   # zero variance gives no NaN


def test_prep_effects():
    def run(step, columns=("age", "income", "flat")):
        item = spec({"source": "iris", "prep": [step]}).data.prep[0]
        prep = PREP.get(item.kind).build(item.options)
        state = prep.fit(MIXED, PrepContext(target="label"))
        return prep.apply(MIXED, state), state

    out, state = run("standardize")
    assert np.allclose(out["income"].mean(), 0) and np.allclose(out["income"].std(ddof=0), 1)
    assert np.all(out["flat"] == 0) and state["std"][2] == 1.0
    assert out["age"].isna().sum() == 1                       # standardize leaves missing values missing
    out, _ = run("min_max")
    assert out["income"].min() == 0 and out["income"].max() == 1 and np.all(out["flat"] == 0)
    out, state = run({"impute": "mean"})
    assert out["age"].iloc[2] == pytest.approx(MIXED["age"].mean()) and state["columns"] == ["age", "income", "flat"]
    out, _ = run({"impute": {"strategy": "most_frequent", "columns": ["city"]}})
    assert out["city"].iloc[3] == "paris"
    out, _ = run("drop_na")
    assert len(out) == 8
    out, _ = run({"drop_na": ["city"]})
    assert len(out) == 9
    out, state = run("one_hot")
    assert state == {"columns": ["city"], "categories": [["oslo", "paris", "rome"]]}
    assert out.columns.tolist() == ["age", "income", "flat", "city=oslo", "city=paris", "city=rome", "label"]
    assert out.iloc[3][["city=oslo", "city=paris", "city=rome"]].tolist() == [0, 0, 0]   # missing -> zeros
    out, _ = run({"log": ["income"]})
    assert np.allclose(out["income"], np.log(MIXED["income"]))
    out, _ = run({"clip": {"max": 4}})
    assert out["income"].max() == 4 and out["age"].max() == 4


def test_one_hot_unseen_category_and_numbers():
    item = spec({"source": "iris", "prep": [{"one_hot": ["city"]}]}).data.prep[0]
    prep = PREP.get("one_hot").build(item.options)
    state = prep.fit(MIXED.iloc[:3], PrepContext(target="label"))
    assert state["categories"] == [["paris", "rome"]]
    out = prep.apply(MIXED.iloc[4:5], state)                  # "oslo" was never seen: all zeros
    assert out[["city=paris", "city=rome"]].to_numpy().tolist() == [[0, 0]]
    assert natural_sorted(["10", "2", "b", "1.5", "a"]) == ["1.5", "2", "10", "a", "b"]


def test_prep_is_fitted_on_train_only():
    data = load({"source": "iris", "prep": ["standardize"]}, seed=3)
    state = data.prep_state[0]
    assert state["kind"] == "standardize"
    table = raw(data)
    train_rows = table.iloc[split_indices(150, table["species"].to_numpy(), Split(), 3, True)["train"]]
    assert np.allclose(state["state"]["mean"], train_rows.iloc[:, :4].mean().to_numpy())
    assert not np.allclose(state["state"]["mean"], table.iloc[:, :4].mean().to_numpy())
    assert np.allclose(data.x["train"].mean(axis=0), 0, atol=1e-5)
    assert not np.allclose(data.x["test"].mean(axis=0), 0, atol=1e-3)


def test_apply_prep_reproduces_a_split():
    s = spec({"source": "iris", "prep": ["standardize", {"clip": {"min": -2, "max": 2}}]})
    data = load_dataset(s, ROOT)
    states = json.loads(json.dumps(data.prep_state))
    table = raw(data)
    rows = table.iloc[split_indices(150, table["species"].to_numpy(), s.data.split, s.seed, True)["test"]]
    frame = apply_prep(s.data.prep, rows.drop(columns=["species"]).reset_index(drop=True), states)
    assert np.allclose(to_x(frame, data.feature_names), data.x["test"])


def test_prep_errors():
    error = data_error({"source": "iris", "prep": ["standardize", {"standardize": ["petal_lenght"]}]})
    assert error.path == "data.prep[1].standardize"
    assert "unknown column 'petal_lenght' (did you mean 'petal_length'?)" in str(error)
    error = data_error({"source": "iris", "prep": [{"min_max": ["species"]}]})
    assert error.path == "data.prep[0].min_max" and "'species' is the target" in error.message


def test_prep_errors_on_files(tmp_path):
    MIXED.to_csv(tmp_path / "m.csv", index=False)
    error = data_error({"source": "m.csv", "target": "label", "prep": [{"standardize": ["city"]}]}, tmp_path)
    assert error.path == "data.prep[0].standardize" and "column 'city' holds text; standardize needs numbers" in error.message
    error = data_error({"source": "m.csv", "target": "label", "features": ["income"],
                        "prep": [{"log": {"offset": -5}}]}, tmp_path)
    assert error.path == "data.prep[0].log" and "values <= 5" in error.message
    with pytest.raises(SpecError) as info:
        spec({"source": "iris", "prep": [{"clip": {"columns": ["age"]}}]})
    assert info.value.path == "data.prep[0].clip" and "clip needs min, max or both" in str(info.value)
    error = data_error({"source": "m.csv", "target": "label", "prep": [{"one_hot": {"max_categories": 2}}]}, tmp_path)
    assert "column 'city' has 3 distinct values" in error.message


# ---------------------------------------------------------------------------------------------
# Splits

def test_split_sizes_and_determinism():
    y = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    for stratify in (True, False):
        split = Split(test=0.2, val=0.1, stratify=stratify)
        a = split_indices(100, y, split, 5, True)
        b = split_indices(100, y, split, 5, True)
        c = split_indices(100, y, split, 6, True)
        assert {k: len(v) for k, v in a.items()} == {"train": 70, "val": 10, "test": 20}
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert not all(np.array_equal(a[k], c[k]) for k in a)
        together = np.concatenate([a["train"], a["val"], a["test"]])
        assert np.array_equal(np.sort(together), np.arange(100))
    a = split_indices(100, y, Split(test=0.2, val=0.1), 5, True)
    assert [int((y[a["test"]] == k).sum()) for k in "abc"] == [10, 6, 4]
    assert [int((y[a["val"]] == k).sum()) for k in "abc"] == [5, 3, 2]


@pytest.mark.parametrize("values", [
    ["negative", "positive", "Zeta", "alpha", "émile", "10", "9"],
    [1, "1", 1.0, True, None, float("nan"), "None", "b"],            # equal in Python, apart as strings
    [3, 10, 2, -1],
], ids=["strings", "mixed", "ints"])
def test_stratified_classes_are_the_sorted_strings_of_the_labels(values):
    """The split's class numbers: each label's rank among the distinct str(label), as np.unique
    over the strings gives them (so the same seed keeps drawing the same rows)."""
    from compilers.data.split import _codes

    labels = np.array(values, dtype=object)[np.random.default_rng(0).integers(0, len(values), 5000)]
    expected = np.unique(np.array([str(v) for v in labels]), return_inverse=True)[1].reshape(-1)
    assert np.array_equal(_codes(labels, 5000), expected)
    assert np.array_equal(_codes(labels.astype(str) if values[0] == "negative" else labels, 5000), expected)


def test_class_codes_are_the_positions_of_the_labels_among_the_classes():
    """What pd.Categorical(labels, categories=names).codes gave (pandas 4 will refuse a label that is
    not a category), without pandas 3's new Python string per row."""
    from compilers.data.prep import class_codes

    labels = np.array(["b", None, "a", "c", "zz", "a", None, "10", "9"], dtype=object)
    names = ["9", "10", "a", "b", "c"]
    expected = np.array([names.index(v) if v in names else -1 for v in labels])
    assert class_codes(labels, names).dtype == np.int32
    assert np.array_equal(class_codes(labels, names), expected)          # "zz" and None: -1
    assert np.array_equal(class_codes(pd.Series(labels, dtype=object), names), expected)
    assert class_codes(np.array([], dtype=object), names).shape == (0,)


def test_stratify_with_tiny_classes():
    y = np.array(["a"] * 40 + ["b"] * 2 + ["c"])
    parts = split_indices(43, y, Split(test=0.25, val=0.25), 0, True)
    assert set(y[parts["train"]]) == {"a", "b", "c"}          # every class keeps a training row
    assert sum(len(v) for v in parts.values()) == 43
    parts = split_indices(4, np.array(["a", "b", "c", "d"]), Split(test=0.25, val=0.25), 0, True)
    assert {k: len(v) for k, v in parts.items()} == {"train": 2, "val": 1, "test": 1}


def test_split_sizes_edge_cases():
    assert split_sizes(10, 0.0, 0.0) == {"train": 10, "val": 0, "test": 0}
    assert split_sizes(3, 0.2, 0.1) == {"train": 1, "val": 1, "test": 1}
    assert split_sizes(150, 0.2, 0.1) == {"train": 105, "val": 15, "test": 30}
    with pytest.raises(DataError, match=r"^data.split: 2 rows are too few to split \(test 0.2 and val 0.1"):
        split_sizes(2, 0.2, 0.1)
    error = data_error({"source": "moons", "options": {"n_samples": 2}})
    assert error.path == "data.split"


def test_split_seed_defaults_to_top_level_seed():
    a = load({"source": "iris"}, seed=4)
    b = load({"source": "iris", "split": {"seed": 4}}, seed=0)
    c = load({"source": "iris"}, seed=0)
    assert np.array_equal(a.x["test"], b.x["test"]) and not np.array_equal(a.x["test"], c.x["test"])


# ---------------------------------------------------------------------------------------------
# Target, features, task, shape

def test_target_and_feature_errors():
    error = data_error({"source": "iris", "target": "specie"})
    assert str(error) == "data.target: no column 'specie' in the data (did you mean 'species'?)"
    error = data_error({"source": "iris", "features": ["sepal_length", "petal_widht"]})
    assert str(error) == "data.features[1]: no column 'petal_widht' in the data (did you mean 'petal_width'?)"
    error = data_error({"source": "iris", "features": ["species"]})
    assert error.path == "data.features[0]" and "is the target" in error.message
    error = data_error({"source": "iris", "shape": [3, 3]})
    assert str(error) == "data.shape: [3, 3] holds 9 values, but an example has 4 features"


def test_target_choice_and_task_inference(tmp_path):
    data = load({"source": "iris", "target": "petal_width", "prep": ["one_hot"]})
    assert data.task == "regression" and "species" in data.raw.columns and data.class_names is None
    assert data.feature_names[-3:] == ["species=setosa", "species=versicolor", "species=virginica"]
    forced = load({"source": "iris", "target": "petal_width", "features": ["sepal_length"]}, task="classification")
    assert forced.task == "classification" and forced.class_names[:2] == ["0.1", "0.2"]
    assert infer_task(pd.Series([0, 1, 2, 1])) == "classification"
    assert infer_task(pd.Series([0.0, 1.0, 1.0])) == "classification"
    assert infer_task(pd.Series(np.arange(30))) == "regression"
    assert infer_task(pd.Series([0.5, 1.0])) == "regression"
    assert infer_task(pd.Series(["x", "y"])) == "classification"
    assert infer_task(pd.Series([True, False])) == "classification"
    error = data_error({"source": "iris"}, task="regression")
    assert error.path == "task" and "regression needs a numeric target" in error.message
    write_csv(tmp_path / "t.csv", "a,b\n1,2\n3,4\n5,6\n")
    error = data_error({"source": "t.csv"}, tmp_path)
    assert error.path == "data.target" and "required for t.csv" in error.message and "a, b" in error.message
    write_csv(tmp_path / "one.csv", "a,y\n1,x\n3,x\n5,x\n")
    assert "at least two classes" in data_error({"source": "one.csv", "target": "y"}, tmp_path).message


def test_text_and_missing_feature_errors(tmp_path):
    MIXED.to_csv(tmp_path / "m.csv", index=False)
    error = data_error({"source": "m.csv", "target": "label", "prep": ["impute"]}, tmp_path)
    assert str(error) == ("data.features: column 'city' holds text; "
                          "add `one_hot` to data.prep or leave it out of data.features")
    error = data_error({"source": "m.csv", "target": "label", "features": ["age", "income"]}, tmp_path)
    assert error.path == "data.features" and "column 'age' has 1 missing value" in error.message
    assert "add `impute` or `drop_na` to data.prep" in error.message
    ok = load({"source": "m.csv", "target": "label", "features": ["age"], "prep": ["drop_na"],
               "split": {"test": 0, "val": 0}}, tmp_path)
    assert sum(ok.sizes().values()) == 9


def test_missing_target(tmp_path):
    frame = MIXED.copy()
    frame.loc[[1, 4], "label"] = None
    frame.to_csv(tmp_path / "m.csv", index=False)
    base = {"source": "m.csv", "target": "label", "features": ["income"], "split": {"test": 0.2, "val": 0}}
    error = data_error(base, tmp_path)
    assert str(error) == ("data.target: 2 rows of 10 have no value for the target 'label'; "
                          "add `drop_na: {columns: [label]}` to data.prep to drop them")
    for columns in (["label"], ["target"]):
        data = load({**base, "prep": [{"drop_na": columns}]}, tmp_path)
        assert sum(data.sizes().values()) == 8 and data.class_names == ["a", "b"]
        assert np.array_equal(np.sort(np.concatenate([data.x[k][:, 0] for k in data.x])),
                              [1, 3, 4, 6, 7, 8, 9, 10])
