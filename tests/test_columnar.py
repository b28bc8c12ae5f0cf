"""The columnar path for numeric CSV and Parquet files (compilers/data/columnar.py): the same data
set as the frame path, from float32 blocks, in about the float32 size of the table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import compilers.data.columnar as columnar
from compilers.data.dataset import ALIGN
from compilers.data.load import load_dataset
from dsl.errors import DataError
from dsl.parse import parse_spec

N = 2500


def spec(data: dict, **top):
    return parse_spec({"data": data, "model": {"layers": [{"dense": 8}]}, **top})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("columnar")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "a": rng.normal(5, 2, N), "b": rng.integers(0, 100, N), "c": rng.normal(0, 1, N).round(3),
        "flag": rng.random(N) > 0.5, "big": 1e6 + rng.normal(0, 1, N), "y": rng.integers(0, 3, N),
        "note": rng.choice(["x", "y"], N), "level": rng.normal(10, 3, N)})
    frame.loc[rng.choice(N, 40, replace=False), "a"] = np.nan
    frame.loc[rng.choice(N, 5, replace=False), "level"] = np.nan
    # text for one_hot: a city with gaps, and a category seen in 3 rows only (maybe never in training)
    frame["city"] = rng.choice(["paris", "lyon", "nice", "Brest", "10", "9"], N).astype(object)
    frame.loc[rng.choice(N, 60, replace=False), "city"] = None
    frame.loc[rng.choice(N, 3, replace=False), "city"] = "rare town"
    frame.to_csv(root / "t.csv", index=False)
    frame.to_parquet(root / "t.parquet")
    (root / "sparse.csv").write_text("a,b,y\n" + "".join(f"{'1' if i == 0 else ''},{i},{i % 2}\n" for i in range(20)))
    return root


def both(data: dict, cwd: Path, **top):
    """(columnar, frame) results: Datasets, or the errors they raised."""
    s = spec(data, **top)
    out = []
    for lean in (True, False):
        try:
            out.append(load_dataset(s, cwd, columnar=lean))
        except DataError as e:
            out.append(e)
    return out


def same_raw_sample(lean, frame):
    """The raw rows the data charts draw (the record's `data_sample`) are the same from both paths."""
    from compilers.train.probes import data_sample

    a, b = data_sample(lean)["raw"], data_sample(frame)["raw"]
    assert list(a) == list(b)
    for c in a:
        assert a[c].dtype == b[c].dtype, c
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(a[c], b[c], rtol=1e-6, equal_nan=True)
        else:
            assert np.array_equal(a[c], b[c]), c


NUMERIC = ["a", "b", "c", "flag", "big", "level"]
PREPS = [
    ["impute", "standardize"],
    [{"impute": "median"}, "min_max", {"clip": {"min": 0.1, "max": 0.9}}],
    ["drop_na", {"log": {"offset": 20}}, "standardize"],
    [{"impute": {"columns": ["a"]}}, {"drop_na": ["level"]}, {"standardize": ["a", "big"]}, {"clip": {"max": 1}}],
    [{"drop_na": ["target"]}, "impute"],
]


@pytest.mark.parametrize("source", ["t.csv", "t.parquet"])
@pytest.mark.parametrize("prep", PREPS, ids=[f"prep{i}" for i in range(len(PREPS))])
def test_same_dataset_as_the_frame_path(files, source, prep):
    lean, frame = both({"source": source, "target": "y", "features": NUMERIC, "prep": prep}, files)
    assert not isinstance(lean, Exception) and not isinstance(frame, Exception), (lean, frame)
    assert lean.feature_names == frame.feature_names and lean.class_names == frame.class_names
    assert lean.task == frame.task and lean.description == frame.description and lean.input_shape == frame.input_shape
    for k in frame.x:
        assert lean.x[k].dtype == np.float32 and lean.x[k].flags.c_contiguous
        assert lean.x[k].ctypes.data % ALIGN == 0                  # a CPU device uses it in place
        np.testing.assert_allclose(lean.x[k], frame.x[k], rtol=1e-6, atol=1e-6)
        assert np.array_equal(lean.y[k], frame.y[k])
    a, b = lean.prep_state, frame.prep_state
    assert [s["kind"] for s in a] == [s["kind"] for s in b]
    for sa, sb in zip(a, b):
        assert sa["state"].keys() == sb["state"].keys() and sa["state"]["columns"] == sb["state"]["columns"]
        for key, value in sa["state"].items():
            if isinstance(value, list) and value and isinstance(value[0], float):
                np.testing.assert_allclose(value, sb["state"][key], rtol=1e-6)   # statistics of float32 values
            else:
                assert value == sb["state"][key]
    json.dumps(a)                                                    # prep.json stays plain JSON
    same_raw_sample(lean, frame)
    pd.testing.assert_frame_equal(lean.raw.to_frame().reset_index(drop=True), frame.raw.reset_index(drop=True),
                                  check_dtype=False, rtol=1e-6)


ONE_HOT = [
    (None, ["impute", "one_hot", "standardize"]),
    (NUMERIC + ["note"], [{"one_hot": ["note"]}, {"impute": "median"}]),
    (None, ["drop_na", {"one_hot": {"columns": ["city", "note"]}}, {"clip": {"max": 0.5}}, "min_max"]),
    (["city", "a", "b"], [{"standardize": ["a"]}, "one_hot", "impute", {"drop_na": ["city=paris"]}]),
]


@pytest.mark.parametrize("source", ["t.csv", "t.parquet"])
@pytest.mark.parametrize("features,prep", ONE_HOT, ids=[f"one_hot{i}" for i in range(len(ONE_HOT))])
def test_one_hot_text_columns_give_the_frame_paths_dataset(files, source, features, prep, monkeypatch):
    """Text features that one_hot encodes are held as codes (4 bytes a row) and their 0/1 columns
    made as the split matrices are filled: the same dataset as the frame path's, column for column."""
    taken = []
    real = columnar.load_columnar
    monkeypatch.setattr(columnar, "load_columnar", lambda *a: taken.append(real(*a)) or taken[-1])
    lean, frame = both({"source": source, "target": "y", "features": features, "prep": prep}, files)
    assert taken[0] is not None                                        # the columnar path took it
    assert not isinstance(lean, Exception) and not isinstance(frame, Exception), (lean, frame)
    assert lean.feature_names == frame.feature_names and any("=" in c for c in lean.feature_names)
    assert lean.description == frame.description and lean.input_shape == frame.input_shape
    assert lean.class_names == frame.class_names
    for k in frame.x:
        assert lean.x[k].dtype == np.float32 and lean.x[k].ctypes.data % ALIGN == 0
        np.testing.assert_allclose(lean.x[k], frame.x[k], rtol=1e-6, atol=1e-6)
        assert np.array_equal(lean.y[k], frame.y[k])
    a, b = lean.prep_state, frame.prep_state
    assert [s["kind"] for s in a] == [s["kind"] for s in b]
    for sa, sb in zip(a, b):
        for key, value in sa["state"].items():
            if isinstance(value, list) and value and isinstance(value[0], float):
                np.testing.assert_allclose(value, sb["state"][key], rtol=1e-6, atol=1e-12)   # 0 +- float noise
            else:
                assert value == sb["state"][key], (sa["kind"], key)
    json.dumps(a)
    same_raw_sample(lean, frame)
    pd.testing.assert_frame_equal(lean.raw.to_frame().reset_index(drop=True), frame.raw.reset_index(drop=True),
                                  check_dtype=False, rtol=1e-6)


@pytest.mark.parametrize("data", [
    {"prep": [{"one_hot": {"columns": ["city"], "max_categories": 3}}, {"one_hot": ["note"]}, "impute"]},
    {"prep": ["impute", {"standardize": ["note"]}, "one_hot"]},       # a numeric step names text
    {"prep": ["impute", {"one_hot": ["city"]}]},                      # note stays text
    {"prep": ["impute", {"one_hot": ["city", "b"]}, {"one_hot": ["note"]}]},   # numbers one-hot encoded
    {"prep": ["impute", {"one_hot": ["cty"]}]},
], ids=["max_categories", "standardize_text", "text_left", "one_hot_numbers", "unknown"])
def test_one_hot_errors_and_fallbacks_match_the_frame_path(files, data):
    lean, frame = both({"source": "t.csv", "target": "y", **data}, files)
    if isinstance(frame, Exception):
        assert isinstance(lean, DataError) and str(lean) == str(frame)
    else:
        assert lean.feature_names == frame.feature_names
        for k in frame.x:
            np.testing.assert_allclose(lean.x[k], frame.x[k], rtol=1e-6, atol=1e-6)


def test_no_prep_gives_exactly_the_frame_paths_values(files):
    lean, frame = both({"source": "t.csv", "target": "y", "features": ["b", "c", "flag", "big"]}, files)
    for k in frame.x:
        assert np.array_equal(lean.x[k][:, :3], frame.x[k][:, :3])
        # `big` (1,000,000 +- 1) is held relative to its mean: within one float32 step of the value
        np.testing.assert_allclose(lean.x[k][:, 3], frame.x[k][:, 3], rtol=2**-23, atol=0)


def test_regression_and_shape(files):
    lean, frame = both({"source": "t.parquet", "target": "c", "features": ["b", "big", "flag", "y"],
                        "prep": ["standardize"], "shape": [2, 2]}, files)
    assert lean.task == frame.task == "regression" and lean.x["train"].shape[1:] == (2, 2)
    for k in frame.x:
        np.testing.assert_allclose(lean.x[k], frame.x[k], rtol=1e-6, atol=1e-6)
        assert np.array_equal(lean.y[k], frame.y[k])


@pytest.mark.parametrize("data", [
    {"prep": ["standardize"]},                                     # missing values left
    {"prep": [{"log": {"columns": ["c"]}}]},                       # log of values <= 0
    {"prep": [{"standardize": ["y"]}]},                            # the target
    {"prep": [{"standardize": ["aa"]}]},                           # an unknown column
    {"source": "sparse.csv", "prep": [{"drop_na": ["a"]}], "features": ["a", "b"]},
    {"features": ["a", "nope"]},
    {"target": "nope"},
    {"shape": [7]},
], ids=["missing", "log", "target", "unknown", "too_few", "feature", "target_name", "shape"])
def test_same_errors_as_the_frame_path(files, data):
    lean, frame = both({"source": "t.csv", "target": "y", "features": NUMERIC, **data}, files)
    assert isinstance(lean, DataError) and isinstance(frame, DataError), (lean, frame)
    assert str(lean) == str(frame)


def test_what_takes_the_frame_path(files, monkeypatch):
    taken = []
    real = columnar.load_columnar
    monkeypatch.setattr(columnar, "load_columnar", lambda *a: taken.append(real(*a)) or taken[-1])
    load_dataset(spec({"source": "t.csv", "target": "y", "features": NUMERIC, "prep": ["impute"]}), files)
    load_dataset(spec({"source": "t.csv", "target": "y", "prep": ["impute", "one_hot"]}), files)      # one_hot
    with pytest.raises(DataError, match="column 'note' holds text"):                                  # text left
        load_dataset(spec({"source": "t.csv", "target": "y", "prep": ["impute"]}), files)
    load_dataset(spec({"source": "t.csv", "target": "y", "features": NUMERIC,
                       "prep": [{"impute": "most_frequent"}]}), files)                                  # a mode
    load_dataset(spec({"source": "iris"}), files)                                     # a built-in table of numbers
    load_dataset(spec({"source": "iris", "prep": [{"impute": "most_frequent"}]}), files)            # a mode
    assert [t is not None for t in taken] == [True, True, False, False, True, False]


def test_a_column_that_turns_to_text_further_down(tmp_path):
    lines = ["a,b,y"] + [f"{i},{i % 7},{i % 2}" for i in range(3000)] + ["oops,1,0"]
    (tmp_path / "late.csv").write_text("\n".join(lines) + "\n")
    lean, frame = both({"source": "late.csv", "target": "y"}, tmp_path)
    assert isinstance(lean, DataError) and str(lean) == str(frame)


MEMORY_PROBE = """
import resource, sys
from pathlib import Path
from compilers.data.load import load_dataset
from dsl.parse import parse_spec
import jax, numpy, pandas, pyarrow.csv   # what a run has imported by then
def spec(name):
    return parse_spec({"data": {"source": name, "target": "y", "prep": ["standardize"]}, "model": {"layers": [{"dense": 8}]}})
load_dataset(spec("small.csv"), Path(sys.argv[1]))      # pyarrow's threads and pools, pandas' lazy imports
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
data = load_dataset(spec("m.csv"), Path(sys.argv[1]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, sum(v.nbytes for v in data.x.values()))
"""


def test_memory_stays_near_the_float32_table(tmp_path):
    """The peak resident memory a load adds, in a fresh process: about the float32 table, plus
    pyarrow's read-ahead buffers and pools (~50 MiB whatever the size). The frame path added ~13x
    the table here (Arrow's float64 table, pandas frames per split, float64 prep copies)."""
    import subprocess
    import sys

    rows, cols = 500_000, 20
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    with open(tmp_path / "m.csv", "w") as f:
        f.write(",".join([f"x{j}" for j in range(cols)] + ["y"]) + "\n")
        np.savetxt(f, np.column_stack([x.round(3), x[:, 0] > 0]), delimiter=",", fmt=["%.3f"] * cols + ["%d"])
    (tmp_path / "small.csv").write_text("x0,y\n" + "".join(f"{i},{i % 2}\n" for i in range(100)))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path)], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    added, table = map(int, done.stdout.split())
    assert table == rows * cols * 4
    assert added < 1.5 * table + 96 * 2**20, f"loading added {added / table:.2f}x the float32 table to the peak"


@pytest.mark.parametrize("features", [["a", "b", "c", "big", "level"], NUMERIC], ids=["floats", "with_flag"])
@pytest.mark.parametrize("prep", [["drop_na"], ["impute", "standardize"]], ids=["raw", "prepped"])
def test_a_batch_copied_whole_or_column_by_column_gives_the_same_bits(files, features, prep, monkeypatch):
    """A CSV's feature columns, all read as float64, go into the blocks as one matrix per batch
    (`_matrix`); any other column type (the boolean `flag`) sends the batch column by column. With
    NaNs (`a`, `level`) and a column held relative to its mean (`big`), both give the same bits."""
    s = spec({"source": "t.csv", "target": "y", "features": features, "prep": prep})
    calls = []
    matrix = columnar._matrix

    def spy(batch, n):
        out = matrix(batch, n)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(columnar, "_matrix", spy)
    whole = load_dataset(s, files)
    assert calls and all(calls) == (features != NUMERIC) and any(calls) == (features != NUMERIC)
    monkeypatch.setattr(columnar, "_whole_batches", lambda: False)
    calls.clear()
    apart = load_dataset(s, files)
    assert calls and not any(calls)
    for k in apart.x:
        assert np.array_equal(whole.x[k], apart.x[k], equal_nan=True) and np.array_equal(whole.y[k], apart.y[k])
    assert whole.prep_state == apart.prep_state


def test_the_loader_tells_the_rows_read_so_far(tmp_path, monkeypatch):
    """load_dataset(on_rows=...) hears the rows read after each batch (the progress line on a
    terminal): rising, to every row of the file."""
    monkeypatch.setattr(columnar, "BLOCK_BYTES", 4096)      # many small batches
    rows = "".join(f"{i * 0.5},{i % 7},{i % 2}\n" for i in range(3000))
    (tmp_path / "t.csv").write_text("a,b,y\n" + rows)
    heard = []
    data = load_dataset(spec({"source": "t.csv", "target": "y"}), tmp_path, on_rows=heard.append)
    assert len(heard) > 3 and heard == sorted(heard) and heard[-1] == 3000
    assert sum(data.sizes().values()) == 3000


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """A column of each type a target may be, as a CSV and as a Parquet file."""
    root = tmp_path_factory.mktemp("targets")
    n = 240
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n)})
    frame["ints"] = rng.integers(0, 3, n)
    frame["gappy"] = pd.array(rng.integers(5, 8, n), dtype="Int64")
    frame.loc[rng.choice(n, 12, replace=False), "gappy"] = pd.NA                # integers with gaps
    frame["whole"] = rng.integers(0, 4, n).astype(np.float64) * 10              # 0.0, 10.0, ...: "0", "10"
    frame["halves"] = rng.integers(0, 4, n) / 2                                 # 0.5 steps: regression
    frame["f32"] = rng.normal(size=n).astype(np.float32)
    frame["f32classes"] = (rng.integers(0, 3, n) / 4).astype(np.float32)      # 0.25 as float32
    frame["words"] = rng.choice(["cat", "dog", "10", "9"], n).astype(object)
    frame.loc[rng.choice(n, 7, replace=False), "words"] = None
    frame["pets"] = rng.choice(["cat", "dog", "Ant"], n)                          # no gaps; "None" would sort among them
    frame["flag"] = rng.random(n) > 0.4
    frame["huge"] = rng.choice([2**62, 2**62 + 1, 7], n)
    frame["one"] = "only"
    frame.to_csv(root / "t.csv", index=False)
    frame.to_parquet(root / "t.parquet")
    return root


TARGETS = [
    ("ints", {}), ("gappy", {"prep": [{"drop_na": ["target"]}]}), ("whole", {}), ("halves", {}),
    ("halves", {"task": "classification"}), ("f32", {}), ("f32classes", {"task": "classification"}),
    ("words", {"prep": [{"drop_na": ["target"]}]}), ("pets", {}), ("flag", {}), ("flag", {"task": "regression"}),
    ("huge", {}), ("huge", {"task": "regression"}), ("ints", {"split": {"stratify": False}}),
]


@pytest.mark.parametrize("source", ["t.csv", "t.parquet"])
@pytest.mark.parametrize("target,extra", TARGETS, ids=[f"{t}-{'-'.join(map(str, e.values())) or 'plain'}"[:40]
                                                        for t, e in TARGETS])
def test_every_kind_of_target_gives_the_frame_paths_dataset_without_pandas(targets, source, target, extra):
    """The columnar loader reads the target through pyarrow (`TargetColumn`), not a pandas Series:
    the same task, classes, labels, split and raw rows as the frame path, for each type."""
    data = {"source": source, "target": target, "features": ["x0", "x1"], **extra}
    top = {"task": data.pop("task")} if "task" in data else {}
    lean, frame = both(data, targets, **top)
    assert not isinstance(lean, Exception) and not isinstance(frame, Exception), (lean, frame)
    assert lean.task == frame.task and lean.class_names == frame.class_names
    for k in frame.y:
        assert lean.y[k].dtype == frame.y[k].dtype and np.array_equal(lean.y[k], frame.y[k], equal_nan=True), k
        assert np.array_equal(lean.x[k], frame.x[k])
    same_raw_sample(lean, frame)


@pytest.mark.parametrize("source", ["t.csv", "t.parquet"])
@pytest.mark.parametrize("target,extra", [("words", {"task": "regression"}), ("one", {}), ("gappy", {}),
                                          ("words", {})], ids=["text_regression", "one_class", "gaps", "text_gaps"])
def test_a_bad_target_gives_the_frame_paths_error(targets, source, target, extra):
    data = {"source": source, "target": target, "features": ["x0", "x1"]}
    lean, frame = both(data, targets, **extra)
    assert isinstance(lean, DataError) and isinstance(frame, DataError), (lean, frame)
    assert str(lean) == str(frame)


def test_a_numeric_file_loads_without_pandas(files):
    code = f"""
import sys
from pathlib import Path
from compilers.data.load import load_dataset
from dsl.parse import parse_spec
from compilers.train.probes import data_sample

for target, prep in (("y", ["impute", "standardize"]), ("c", ["impute"])):
    data = load_dataset(parse_spec({{"data": {{"source": "t.parquet", "target": target, "features": ["a", "b", "flag"],
                                            "prep": prep}}, "model": {{"layers": [{{"dense": 4}}]}}}}), Path({str(files)!r}))
    assert list(data_sample(data)["raw"]) == ["a", "b", "flag", target]
print("pandas" in sys.modules)
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]


@pytest.mark.parametrize("kind", ["int8", "int16", "int32", "int64", "uint8", "uint32", "uint64", "float32",
                                  "float64", "bool"])
def test_arrow_columns_read_from_their_buffers_equal_pyarrows_own_conversion(kind):
    """`columnar._numpy` reads a column's buffers (pyarrow's `to_numpy` imports pandas): the same
    values and type as `to_numpy(zero_copy_only=False)`, for slices (an offset into the buffers),
    gaps, and columns of several chunks."""
    import pyarrow as pa

    rng = np.random.default_rng(3)
    values = rng.integers(0, 100, 301).astype(kind) if kind != "bool" else rng.random(301) > 0.5
    whole = pa.array(values)
    gappy = pa.array(values, mask=rng.random(301) < 0.2)
    cases = [whole, whole.slice(13, 200), pa.chunked_array([whole.slice(0, 7), whole.slice(7)])]
    if kind != "bool":     # booleans with gaps take the frame path
        cases += [gappy, gappy.slice(5, 101), pa.chunked_array([whole.slice(0, 50), gappy.slice(50, 99)])]
    for array in cases:
        expected = array.to_numpy() if isinstance(array, pa.ChunkedArray) else array.to_numpy(zero_copy_only=False)
        got = columnar._numpy(array)
        assert got.dtype == expected.dtype and np.array_equal(got, expected, equal_nan=got.dtype.kind == "f")
    indices = pa.array(rng.integers(0, 5, 64).astype(np.int32), mask=rng.random(64) < 0.3).slice(3)
    assert np.array_equal(columnar._codes(indices), indices.fill_null(-1).to_numpy(zero_copy_only=False))


BUILT_INS = [("iris", {}), ("wine", {}), ("breast_cancer", {}), ("digits", {}), ("diabetes", {}),
             ("moons", {"n_samples": 300}), ("circles", {"n_samples": 300}), ("blobs", {"centers": 4}),
             ("spirals", {}), ("xor", {}), ("regression", {"n_samples": 200})]


@pytest.mark.parametrize("source,options", BUILT_INS, ids=[b[0] for b in BUILT_INS])
@pytest.mark.parametrize("prep", [[], ["standardize"], [{"clip": {"max": 2}}, "min_max"]], ids=["none", "std", "clip"])
def test_built_in_tables_take_the_columnar_path_with_the_frame_paths_results(source, options, prep, tmp_path):
    """A built-in table of numbers (`Table.matrix`) is held as float32 blocks, as a file's numbers:
    the frame path's data set, with the values rounded to float32 before prep (exactly the frame
    path's without prep)."""
    taken = []
    real = columnar._load
    lean, frame = None, None
    try:
        columnar._load = lambda *a: taken.append(real(*a)) or taken[-1]
        lean, frame = both({"source": source, "options": options, "prep": prep}, tmp_path)
    finally:
        columnar._load = real
    assert taken and taken[0] is not None, "the columnar path declined it"
    assert lean.task == frame.task and lean.class_names == frame.class_names
    assert lean.feature_names == frame.feature_names and lean.description == frame.description
    for k in frame.y:
        assert np.array_equal(lean.y[k], frame.y[k]), k
        if prep:
            np.testing.assert_allclose(lean.x[k], frame.x[k], rtol=1e-6, atol=1e-6)
        else:
            assert np.array_equal(lean.x[k], frame.x[k]), k
    same_raw_sample(lean, frame)


def test_a_built_in_feature_as_the_target_takes_the_frame_path(tmp_path):
    lean, frame = both({"source": "iris", "target": "petal_width", "features": ["sepal_length", "sepal_width"]},
                       tmp_path, task="regression")
    assert lean.task == frame.task == "regression"
    for k in frame.y:
        assert np.array_equal(lean.x[k], frame.x[k]) and np.array_equal(lean.y[k], frame.y[k])


def test_iris_loads_without_pandas():
    code = """
import sys
from pathlib import Path
from compilers.data.load import load_dataset
from compilers.train.probes import data_sample
from dsl.parse import parse_spec

data = load_dataset(parse_spec({"data": {"source": "iris", "prep": ["standardize"]},
                                "model": {"layers": [{"dense": 4}]}}), Path("."))
assert list(data_sample(data)["raw"])[-1] == "species" and data.n_classes == 3
print("pandas" in sys.modules)
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]
