"""A table in several files: `data.source` as a glob pattern (`parts/part-*.csv`), read file after
file in natural order, gives the data set, the errors and the predictions of the same rows in one
file (compilers/data/sources.py: resolve_files; the columnar path and predict's stream too)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compilers.data.load import load_dataset
from compilers.data.sources import SourceContext, described, resolve_files, table_chunks
from dsl.errors import DataError
from dsl.parse import parse_spec

N = 1500
PARTS = [("part-1", 0, 400), ("part-2", 400, 1000), ("part-10", 1000, N)]   # "part-10" last: natural order


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(5, 2, N), "b": rng.integers(0, 50, N).astype(float),
                          "city": rng.choice(["paris", "lyon", "nice"], N), "y": rng.integers(0, 3, N)})
    frame.loc[rng.choice(N, 30, replace=False), "a"] = np.nan
    frame.loc[1200, "b"] = 2.5          # b: whole numbers in the first files (integers), a decimal in the last
    frame.to_csv(root / "whole.csv", index=False)
    frame.to_parquet(root / "whole.parquet", index=False)
    (root / "parts").mkdir()
    for name, lo, hi in PARTS:
        part = frame.iloc[lo:hi]
        part.to_csv(root / "parts" / f"{name}.csv", index=False, float_format="%.17g")
        typed = part.astype({"b": "int64"}) if hi <= 1000 else part   # another type in another file
        typed.to_parquet(root / "parts" / f"{name}.parquet", index=False)
    (root / "parts" / "_SUCCESS").write_text("")     # what Spark leaves beside its parts: not matched
    (root / "parts" / ".part-3.csv").write_text("a,b,city,y\n")                  # hidden: not matched
    return root


def _spec(source: str, prep=("standardize", {"one_hot": ["city"]}, "impute")):
    return parse_spec({"data": {"source": source, "target": "y", "prep": list(prep)},
                       "model": {"layers": [{"dense": 4}]}})


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_files_may_order_their_columns_differently(root, tmp_path, kind):
    """Columns are matched by name: a file with the columns in another order gives the same data
    set (the columnar path reads it by name too) and the same chunks to predict."""
    import compilers.data.columnar as columnar

    frame = pd.read_parquet(root / "whole.parquet")
    (tmp_path / "mixed").mkdir()
    for k, (name, lo, hi) in enumerate(PARTS):
        part = frame.iloc[lo:hi]
        part = part[["y", "city", "b", "a"]] if k == 1 else part
        part.to_csv(tmp_path / "mixed" / f"{name}.csv", index=False, float_format="%.17g") if kind == "csv" \
            else part.to_parquet(tmp_path / "mixed" / f"{name}.parquet", index=False)
    (tmp_path / f"whole.{kind}").write_bytes((root / f"whole.{kind}").read_bytes())
    assert columnar.load_columnar(_spec(f"mixed/*.{kind}"), tmp_path) is not None   # not sent to the frame path
    for lean in (True, False):
        whole = load_dataset(_spec(f"whole.{kind}"), tmp_path, columnar=lean)
        mixed = load_dataset(_spec(f"mixed/*.{kind}"), tmp_path, columnar=lean)
        for split in whole.x:
            assert np.array_equal(mixed.x[split], whole.x[split], equal_nan=True)
            assert np.array_equal(mixed.y[split], whole.y[split])
    source = parse_spec({"data": {"source": f"mixed/*.{kind}"}, "model": {"layers": []}}).data.source
    chunks = [f for _, f in table_chunks(source, tmp_path, 0, 700)[1]]
    assert [list(f.columns) for f in chunks] == [["a", "b", "city", "y"]] * 3
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), frame, check_dtype=False)


def test_the_files_of_a_pattern_in_natural_order(root):
    files = resolve_files("parts/part-*.csv", SourceContext(cwd=root))
    assert [shown for _, shown in files] == [os.path.join("parts", f"{n}.csv") for n, _, _ in PARTS]
    assert all(full.is_absolute() and full.is_file() for full, _ in files)
    absolute = resolve_files(str(root / "parts" / "*.csv"), SourceContext(cwd=Path("/")))
    assert [shown for _, shown in absolute] == [str(root / "parts" / f"{n}.csv") for n, _, _ in PARTS]
    assert len(resolve_files("**/part-1.csv", SourceContext(cwd=root))) == 1        # ** spans folders
    assert described("parts/part-1*.csv", resolve_files("parts/part-1*.csv", SourceContext(cwd=root))) == \
        "parts/part-1*.csv (2 files)"
    one = resolve_files("**/part-2.csv", SourceContext(cwd=root))
    assert described("**/part-2.csv", one) == "**/part-2.csv (1 file)"


def test_a_file_whose_name_looks_like_a_pattern_is_that_file(tmp_path):
    (tmp_path / "data[1].csv").write_text("a,y\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n7,0\n8,1\n9,0\n10,1\n")
    (tmp_path / "data1.csv").write_text("a,y\n1,0\n")          # what the pattern data[1].csv would match
    files = resolve_files("data[1].csv", SourceContext(cwd=tmp_path))
    assert files == [(tmp_path / "data[1].csv", "data[1].csv")]
    assert described("data[1].csv", files) == "data[1].csv"
    for columnar in (True, False):
        data = load_dataset(_spec("data[1].csv", prep=()), tmp_path, columnar=columnar)
        assert data.description.startswith("data[1].csv: 10 rows")


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("columnar", [True, False], ids=["columnar", "frame"])
def test_a_pattern_gives_the_data_set_of_the_whole_file(root, kind, columnar):
    whole = load_dataset(_spec(f"whole.{kind}"), root, columnar=columnar)
    parts = load_dataset(_spec(f"parts/*.{kind}"), root, columnar=columnar)
    assert parts.description == f"parts/*.{kind} (3 files): {N} rows, 5 features, 3 classes"
    assert parts.feature_names == whole.feature_names and parts.class_names == whole.class_names
    for split in whole.x:
        assert np.array_equal(parts.x[split], whole.x[split], equal_nan=True), split
        assert np.array_equal(parts.y[split], whole.y[split]), split
    assert parts.prep_state == whole.prep_state


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_columnar_path_reads_every_file_of_a_pattern(root, kind, monkeypatch):
    """Not the frame path: load_columnar gives the data set (None would send it to the frame path),
    reading the three files' batches."""
    import compilers.data.columnar as columnar

    seen, real = [], columnar._Reader.batches

    def batches(self, columns, schema):
        seen.append([p.name for p in self.files])
        yield from real(self, columns, schema)

    monkeypatch.setattr(columnar._Reader, "batches", batches)
    data = columnar.load_columnar(_spec(f"parts/*.{kind}"), root)
    assert data is not None and data.x["train"].dtype == np.float32
    assert seen == [[f"{n}.{kind}" for n, _, _ in PARTS]]


def _error(source: str, cwd: Path, columnar: bool = True) -> str:
    with pytest.raises(DataError) as e:
        load_dataset(_spec(source), cwd, columnar=columnar)
    return str(e.value)


@pytest.mark.parametrize("columnar", [True, False], ids=["columnar", "frame"])
def test_errors_name_the_file_of_the_pattern(tmp_path, columnar):
    parts = tmp_path / "p"
    parts.mkdir()
    (parts / "a-1.csv").write_text("a,b,city,y\n1,2,paris,0\n3,4,lyon,1\n")
    assert _error("p/none-*.csv", tmp_path, columnar).endswith(
        f"no file matches p/none-*.csv (relative to {tmp_path})")
    (parts / "a-2.csv").write_text("a,c,city,y\n1,2,paris,0\n")
    assert _error("p/a-*.csv", tmp_path, columnar).endswith(
        f"{os.path.join('p', 'a-2.csv')}: its columns differ from those of {os.path.join('p', 'a-1.csv')} "
        "(no 'b'; also 'c'); the files of a pattern must have the same columns")
    (parts / "a-2.csv").write_text("a,b,city,y\n1,2,paris,0\n5,6,7,nice,1\n")
    assert f"{os.path.join('p', 'a-2.csv')}: ragged rows at line 3: expected 4 fields like the header, got 5" \
        in _error("p/a-*.csv", tmp_path, columnar)
    (parts / "a-2.csv").write_text("")
    assert _error("p/a-*.csv", tmp_path, columnar).endswith(f"empty file: {os.path.join('p', 'a-2.csv')}")
    (parts / "a-2.csv").write_text("a,b,city,y\nten,2,paris,0\n")       # text where the first file has numbers
    assert _error("p/a-*.csv", tmp_path, columnar).endswith(
        f"{os.path.join('p', 'a-2.csv')}: column 'a' holds string where {os.path.join('p', 'a-1.csv')} holds int64; "
        "a column must hold one kind of value in every file")


def test_predict_streams_a_pattern_in_the_chunks_of_the_whole_file(root):
    """Chunks of 700 rows run across the files' ends: the same starts and rows as the whole file."""
    from dsl.spec import Item

    for kind in ("csv", "parquet"):
        whole = parse_spec({"data": {"source": f"whole.{kind}"}, "model": {"layers": []}}).data.source
        parts = parse_spec({"data": {"source": f"parts/*.{kind}"}, "model": {"layers": []}}).data.source
        assert isinstance(parts, Item)
        shown, chunks = table_chunks(parts, root, 0, 700)
        assert shown == f"parts/*.{kind}"
        got, want = list(chunks), list(table_chunks(whole, root, 0, 700)[1])
        assert [(s, len(f)) for s, f in got] == [(s, len(f)) for s, f in want] == [(0, 700), (700, 700), (1400, 100)]
        for (_, a), (_, b) in zip(got, want):
            pd.testing.assert_frame_equal(a, b, check_dtype=False)


PREDICTED = """\
name: shards
seed: 0
data: {source: whole.csv, target: y, prep: [impute, standardize, {one_hot: [city]}], split: {test: 0.2, val: 0.1}}
model: {layers: [{dense: 8}, relu]}
train: {epochs: 2, batch_size: 64}
plots: []
report: {images: none}
"""


def test_predict_on_a_pattern_writes_the_predictions_of_the_whole_file(root, cli, monkeypatch, tmp_path):
    monkeypatch.chdir(root)
    (tmp_path / "spec.yaml").write_text(PREDICTED)
    run = tmp_path / "run"
    code, _, err = cli("run", f"conf={tmp_path / 'spec.yaml'}", f"hydra.run.dir={run}")
    assert code == 0, err
    outs = {}
    for source in ("whole.csv", "parts/part-*.csv", "parts/*.parquet"):
        out = tmp_path / f"{len(outs)}.csv"
        code, _, err = cli("predict", str(run), f"data.source={source}", f"output={out}")
        assert code == 0, err
        outs[source] = out.read_text()
    assert outs["parts/part-*.csv"] == outs["whole.csv"]
    # the Parquet parts give b as integers in two files: the same numbers, so the same predictions
    assert [line.split(",")[-4:] for line in outs["parts/*.parquet"].splitlines()[1:]] == \
        [line.split(",")[-4:] for line in outs["whole.csv"].splitlines()[1:]]
    assert len(outs["whole.csv"].splitlines()) == N + 1


def test_a_pattern_with_no_file_is_a_one_line_error_with_status_2(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("name: s\ndata: {source: 'parts/*.csv', target: y}\n"
                                     "model: {layers: [{dense: 4}]}\n")
    code, _, err = cli("run", "conf=s.yaml", "hydra.run.dir=run")
    assert code == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert "data.source: no file matches parts/*.csv" in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_pattern_names_csv_or_parquet_files_only():
    from dsl.errors import SpecError

    with pytest.raises(SpecError, match=r"data.source: 'arrays/\*.npz' is a pattern of npz files: a pattern of "
                                        r"files may name .csv or .parquet files only"):
        _spec("arrays/*.npz")
    with pytest.raises(SpecError, match=r"cannot read 'parts/\*': expected a .csv, .parquet or .npz file \(or a "
                                        r"pattern of .csv or .parquet files\)"):
        _spec("parts/*")
    assert _spec("parts/*.PARQUET").data.source.kind == "parquet"


def test_a_folder_or_file_whose_name_looks_like_a_pattern_is_still_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pics[1]").mkdir()
    (tmp_path / "arrays[1].npz").write_bytes(b"")
    assert _spec("pics[1]/").data.source.kind == "image_folder"
    assert _spec("arrays[1].npz").data.source.kind == "npz"


def test_an_unquoted_pattern_with_brackets_on_the_command_line_gets_a_hint(tmp_path, cli, monkeypatch):
    """Hydra's override grammar reads brackets as a list: the one-line error says how to quote."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("name: s\ndata: {source: a.csv, target: y}\nmodel: {layers: [{dense: 4}]}\n")
    code, _, err = cli("run", "conf=s.yaml", "hydra.run.dir=run", "data.source=parts/part-[12].csv")
    assert code == 2 and "Traceback" not in err
    assert err.strip().endswith("""quote a value with brackets: 'data.source="parts/part-[12].csv"'""")
