"""Data sources: built-in data sets, generated data sets and files. Each returns a `Table`.

Files return a pandas frame; the built-in and generated tables return their numbers (`Table.matrix`,
the target in `Table.y`), which the columnar loader reads without pandas (`Table.numeric_frame()`
for the frame path); array sources (`npz`, `image_folder`) return arrays (`Table.x`, `Table.y`),
which `load.py` splits and prepares by index.

A source is registered in `SOURCES` with its options dataclass and a builder
`def name(options, ctx: SourceContext) -> Table`. Nothing heavy is imported at module level
(pandas, pyarrow and scikit-learn are imported by the builders), so `python -m dsl list` stays fast.

The built-in data sets are read straight from the CSV files bundled with scikit-learn, located
without importing scikit-learn (importing `sklearn.datasets` alone costs about two seconds);
scikit-learn's own loaders are the fallback when those files are not where they used to be.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from compilers.data.dataset import Table
from compilers.data.prep import _check_size
from compilers.memory import arrow_give_back
from dsl.errors import DataError
from dsl.registry import SOURCES, opt
from dsl.spec import MAX_SEED

PATH = "data.source"


@dataclass(frozen=True)
class SourceContext:
    """What a source may know besides its options."""

    cwd: Path            # relative file paths resolve against it
    seed: int = 0        # the spec's top-level seed (generated data sets use it by default)
    image: Any = None    # options of the spec's `image` prep step (image folders read with them)


# ---------------------------------------------------------------------------------------------
# Built-in data sets (scikit-learn's bundled files)

def _bundled(name: str) -> Path | None:
    """Path of a file in sklearn/datasets/data/, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / name
    return path if path.is_file() else None


def _read_bundled(name: str, sep: str | None = ",", skip_header: bool = True) -> np.ndarray | None:
    path = _bundled(name)
    if path is None:
        return None
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if skip_header:
            f.readline()
        return np.loadtxt(f, delimiter=sep, ndmin=2)


def _classification(name: str, name_file: str, features: list[str], target: str,
                    classes: list[str], loader: str) -> Table:
    """A bundled file of `n,n_features,class names...` then rows of features and a class index."""
    data = _read_bundled(name_file)
    if data is not None:
        x, codes = data[:, :-1], data[:, -1].astype(int)
    else:  # scikit-learn moved its files: use its loader
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)()
        x, codes = bunch.data, bunch.target
    return Table(matrix=np.asarray(x, dtype=np.float64), columns=list(features), y=np.asarray(codes, np.int64),
                 class_names=list(classes), target=target, task="classification", description=name)


@SOURCES.register("iris")
def iris(options, ctx: SourceContext) -> Table:
    """Fisher's iris flowers: 150 rows, 4 measurements (cm), 3 species."""
    return _classification("iris", "iris.csv",
                           ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                           "species", ["setosa", "versicolor", "virginica"], "load_iris")


_WINE = ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
         "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
         "od280_od315_of_diluted_wines", "proline"]


@SOURCES.register("wine")
def wine(options, ctx: SourceContext) -> Table:
    """Wine recognition: 178 rows, 13 chemical measurements, 3 cultivars (target `class`)."""
    return _classification("wine", "wine_data.csv", _WINE, "class",
                           ["class_0", "class_1", "class_2"], "load_wine")


_CANCER = [f"{stat}_{name}" for stat in ("mean", "error", "worst") for name in (
    "radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
    "concave_points", "symmetry", "fractal_dimension")]


@SOURCES.register("breast_cancer")
def breast_cancer(options, ctx: SourceContext) -> Table:
    """Breast cancer Wisconsin: 569 rows, 30 cell-nucleus features, malignant or benign (target `diagnosis`)."""
    return _classification("breast_cancer", "breast_cancer.csv", _CANCER, "diagnosis",
                           ["malignant", "benign"], "load_breast_cancer")


@SOURCES.register("digits")
def digits(options, ctx: SourceContext) -> Table:
    """Handwritten digits: 1797 8x8 images as pixels px0..px63 (0-16), target `digit` "0".."9".

    Use `data.shape: [8, 8, 1]` to train on images.
    """
    data = _read_bundled("digits.csv.gz", skip_header=False)
    if data is not None:
        x, codes = data[:, :-1], data[:, -1].astype(int)
    else:
        import sklearn.datasets

        bunch = sklearn.datasets.load_digits()
        x, codes = bunch.data, bunch.target
    return Table(matrix=x.astype(np.int64), columns=[f"px{i}" for i in range(x.shape[1])],
                 y=np.asarray(codes, np.int64), class_names=[str(k) for k in range(int(codes.max()) + 1)],
                 target="digit", task="classification", description="digits")


@SOURCES.register("diabetes")
def diabetes(options, ctx: SourceContext) -> Table:
    """Diabetes progression (regression): 442 rows, 10 raw baseline measurements, target `progression`."""
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    x = _read_bundled("diabetes_data_raw.csv.gz", sep=None, skip_header=False)
    y = _read_bundled("diabetes_target.csv.gz", sep=None, skip_header=False)
    if x is None or y is None:
        import sklearn.datasets

        bunch = sklearn.datasets.load_diabetes(scaled=False)
        x, y = bunch.data, bunch.target
    return Table(matrix=np.asarray(x, dtype=np.float64), columns=names, y=np.asarray(y, dtype=np.float64).reshape(-1),
                 target="progression", task="regression", description="diabetes")


# ---------------------------------------------------------------------------------------------
# Generated data sets

_N = "number of examples to generate"
_SEED = "seed of the generator; default: the top-level seed"


@dataclass(frozen=True)
class MoonsOptions:
    """Two interleaving half circles (2 features, 2 classes)."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(0.1, "standard deviation of Gaussian noise added to the points", ge=0.0)
    seed: Optional[int] = opt(None, _SEED, ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class CirclesOptions:
    """A small circle inside a large one (2 features, 2 classes)."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(0.05, "standard deviation of Gaussian noise added to the points", ge=0.0)
    factor: float = opt(0.5, "radius of the inner circle relative to the outer one", gt=0.0, lt=1.0)
    seed: Optional[int] = opt(None, _SEED, ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class BlobsOptions:
    """Isotropic Gaussian clusters, one class per cluster."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(1.0, "standard deviation of each cluster", gt=0.0)
    centers: int = opt(3, "number of clusters (classes)", ge=2)
    n_features: int = opt(2, "number of features", ge=1)
    seed: Optional[int] = opt(None, _SEED, ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class SpiralsOptions:
    """Interleaved spiral arms, one class per arm (2 features)."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(0.2, "standard deviation of Gaussian noise added to the points", ge=0.0)
    arms: int = opt(2, "number of arms (classes)", ge=2)
    turns: float = opt(1.5, "how many turns each arm makes", gt=0.0)
    seed: Optional[int] = opt(None, _SEED, ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class XorOptions:
    """Points in the square [-1, 1]^2 labelled by the signs of x0 and x1 (2 classes)."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(0.1, "standard deviation of Gaussian noise added after labelling", ge=0.0)
    seed: Optional[int] = opt(None, _SEED, ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class RegressionOptions:
    """A random linear regression problem."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(10.0, "standard deviation of Gaussian noise added to the target", ge=0.0)
    n_features: int = opt(10, "number of features", ge=1)
    n_informative: int = opt(5, "number of features the target depends on", ge=1)
    seed: Optional[int] = opt(None, _SEED, ge=0, le=MAX_SEED)

    def __post_init__(self):
        if self.n_informative > self.n_features:
            raise ValueError(f"n_informative ({self.n_informative}) must not exceed "
                             f"n_features ({self.n_features})")


MAX_GENERATED = 100_000_000   # values (examples x features) of a generated data set: 800 MB as float64


def _check_generated(name: str, n_samples: int, n_features: int) -> None:
    if n_samples * n_features > MAX_GENERATED:
        raise DataError("data.options", f"{name}: {n_samples:,} examples of {n_features:,} features are more values "
                                        f"than a generated data set may hold ({MAX_GENERATED:,})")


def _seed(options, ctx: SourceContext) -> int:
    return ctx.seed if options.seed is None else options.seed


def _labelled(name: str, x: np.ndarray, labels: np.ndarray) -> Table:
    codes = np.asarray(labels).astype(int)
    return Table(matrix=np.asarray(x, dtype=np.float64), columns=[f"x{i}" for i in range(x.shape[1])],
                 y=codes.astype(np.int64), class_names=[str(k) for k in range(int(codes.max(initial=0)) + 1)],
                 target="label", task="classification", description=name)


@SOURCES.register("moons", MoonsOptions)
def moons(options: MoonsOptions, ctx: SourceContext) -> Table:
    """Two interleaving half circles (2 features, 2 classes); sklearn's make_moons."""
    from sklearn.datasets import make_moons

    _check_generated("moons", options.n_samples, 2)
    x, y = make_moons(options.n_samples, noise=options.noise, random_state=_seed(options, ctx))
    return _labelled("moons", x, y)


@SOURCES.register("circles", CirclesOptions)
def circles(options: CirclesOptions, ctx: SourceContext) -> Table:
    """A small circle inside a large one (2 features, 2 classes); sklearn's make_circles."""
    from sklearn.datasets import make_circles

    _check_generated("circles", options.n_samples, 2)
    x, y = make_circles(options.n_samples, noise=options.noise, factor=options.factor,
                        random_state=_seed(options, ctx))
    return _labelled("circles", x, y)


@SOURCES.register("blobs", BlobsOptions)
def blobs(options: BlobsOptions, ctx: SourceContext) -> Table:
    """Gaussian clusters, one class per cluster; sklearn's make_blobs."""
    from sklearn.datasets import make_blobs

    _check_generated("blobs", max(options.n_samples, options.centers), options.n_features)
    x, y = make_blobs(options.n_samples, n_features=options.n_features, centers=options.centers,
                      cluster_std=options.noise, random_state=_seed(options, ctx))
    return _labelled("blobs", x, y)


@SOURCES.register("spirals", SpiralsOptions)
def spirals(options: SpiralsOptions, ctx: SourceContext) -> Table:
    """Interleaved spiral arms, one class per arm (2 features)."""
    _check_generated("spirals", options.n_samples, 2)
    rng = np.random.default_rng(_seed(options, ctx))
    n, arms = options.n_samples, options.arms
    labels = np.arange(n) % arms
    t = np.sqrt(rng.uniform(0.0, 1.0, n)) * options.turns * 2 * np.pi   # denser near the centre
    r = t / (options.turns * 2 * np.pi) * 5.0                          # radius 0..5
    angle = t + 2 * np.pi * labels / arms
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    x += rng.normal(0.0, options.noise, x.shape)
    order = rng.permutation(n)
    return _labelled("spirals", x[order], labels[order])


@SOURCES.register("xor", XorOptions)
def xor(options: XorOptions, ctx: SourceContext) -> Table:
    """Points in [-1, 1]^2, class 1 where exactly one of x0, x1 is positive (2 classes)."""
    _check_generated("xor", options.n_samples, 2)
    rng = np.random.default_rng(_seed(options, ctx))
    x = rng.uniform(-1.0, 1.0, (options.n_samples, 2))
    labels = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
    x = x + rng.normal(0.0, options.noise, x.shape)
    return _labelled("xor", x, labels)


@SOURCES.register("regression", RegressionOptions)
def regression(options: RegressionOptions, ctx: SourceContext) -> Table:
    """A random linear regression problem, features x0.., target `y`; sklearn's make_regression."""
    from sklearn.datasets import make_regression

    _check_generated("regression", options.n_samples, options.n_features)
    x, y = make_regression(options.n_samples, n_features=options.n_features,
                           n_informative=options.n_informative, noise=options.noise,
                           random_state=_seed(options, ctx))
    return Table(matrix=np.asarray(x, dtype=np.float64), columns=[f"x{i}" for i in range(x.shape[1])],
                 y=np.asarray(y, dtype=np.float64), target="y", task="regression", description="regression")


# ---------------------------------------------------------------------------------------------
# Files

@dataclass(frozen=True)
class CsvOptions:
    """A CSV file with a header row."""

    path: str = opt(doc="path of the file, or a glob pattern of files with the same columns (parts/*.csv); "
                        "relative paths start at the directory the command ran in")
    sep: str = opt(",", "field separator, e.g. ';' or '\\t'")

    def __post_init__(self):
        if len(self.sep) != 1:
            raise ValueError(f"sep must be a single character, got {self.sep!r}")


@dataclass(frozen=True)
class ParquetOptions:
    """A Parquet file."""

    path: str = opt(doc="path of the file, or a glob pattern of files with the same columns (parts/*.parquet); "
                        "relative paths start at the directory the command ran in")


def resolve(path: str, ctx: SourceContext) -> Path:
    """The file a `path` option names; DataError when it is not a readable file."""
    given = Path(path).expanduser()
    full = given if given.is_absolute() else Path(ctx.cwd) / given
    where = "" if given.is_absolute() else f" (relative to {ctx.cwd})"
    if not full.exists():
        raise DataError(PATH, f"file not found: {path}{where}")
    if full.is_dir():
        raise DataError(PATH, f"{path} is a directory, not a file{where}")
    if full.stat().st_size == 0:
        raise DataError(PATH, f"empty file: {path}")
    return full


def is_pattern(path: str) -> bool:
    """Whether a `path` option is a glob pattern (`*`, `?` or `[...]`) naming several files."""
    import glob

    return glob.has_magic(path)


def _natural_key(name: str):
    import re

    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def resolve_files(path: str, ctx: SourceContext) -> list[tuple[Path, str]]:
    """The files a `path` option names, each with the name messages give it: the file itself, or
    every file a glob pattern matches (`shards/part-*.csv`; `**` spans folders; names that start with a
    dot are left out), in natural order ("part-2" before "part-10"). DataError when none matches, or
    one is empty."""
    import glob
    import os

    given = Path(path).expanduser()
    pattern = given if given.is_absolute() else Path(ctx.cwd) / given
    if not is_pattern(path) or pattern.is_file():     # a file named data[1].csv is that file
        return [(resolve(path, ctx), path)]
    found = [Path(p) for p in glob.glob(str(pattern), recursive=True) if os.path.isfile(p)]
    if not found:
        where = "" if given.is_absolute() else f" (relative to {ctx.cwd})"
        raise DataError(PATH, f"no file matches {path}{where}")
    named = [(p, str(p) if given.is_absolute() else os.path.relpath(p, ctx.cwd)) for p in found]
    named.sort(key=lambda f: _natural_key(f[1]))
    for full, shown in named:
        if full.stat().st_size == 0:
            raise DataError(PATH, f"empty file: {shown}")
    return named


LARGE_FILE_BYTES = 64 << 20   # a source this large (its files together) is "large": see large_files


def large_files(path: str, ctx: SourceContext) -> list[Path]:
    """The files a `path` option names (`resolve_files`) when together they hold LARGE_FILE_BYTES or
    more, else []. For such a source the training process does not import pandas ahead
    (`dsl.commands.run.reads_a_large_file`) and compiles its programs before reading it
    (`compilers.train.precompile`)."""
    files = [full for full, _ in resolve_files(path, ctx)]
    return files if sum(full.stat().st_size for full in files) >= LARGE_FILE_BYTES else []


def described(path: str, files: list[tuple[Path, str]]) -> str:
    """How a run describes a file source (`resolve_files`): its path, and how many files a pattern
    matched."""
    if len(files) == 1 and files[0][1] == path:
        return path
    return f"{path} ({len(files)} file{'s' if len(files) != 1 else ''})"


def _same_columns(schema, first, shown: str, first_shown: str) -> list[str] | None:
    """Checks a later file's columns (its Arrow schema) against the first file's: the same names, in
    any order, each of a type that goes with the first file's (integers with decimals, an empty
    column with anything). -> the first file's column order when this file orders them otherwise,
    else None; DataError naming the file and the column otherwise."""
    import pyarrow as pa

    names, order = [str(n) for n in schema.names], [str(n) for n in first.names]
    if sorted(names) != sorted(order) or len(set(order)) != len(order):
        missing = [c for c in order if c not in names]
        extra = [c for c in names if c not in order]
        what = "; ".join(x for x in (f"no {', '.join(repr(c) for c in missing)}" if missing else "",
                                     f"also {', '.join(repr(c) for c in extra)}" if extra else "") if x) \
            or "a name twice"
        raise DataError(PATH, f"{shown}: its columns differ from those of {first_shown} ({what}); the files of "
                              f"a pattern must have the same columns")
    for field in first:
        other = schema.field(field.name)
        try:
            pa.unify_schemas([pa.schema([field]), pa.schema([other])], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise DataError(PATH, f"{shown}: column '{field.name}' holds {other.type} where {first_shown} holds "
                                  f"{field.type}; a column must hold one kind of value in every file") from None
    return order if names != order else None


def _read_files(options, ctx: SourceContext, read) -> Table:
    """The frame of every file `options.path` names (`read(full, shown)` -> an Arrow table of one),
    as one table: later files' columns checked against the first's and put in its order."""
    files = resolve_files(options.path, ctx)
    tables = []
    for full, shown in files:
        table = read(full, shown)
        if tables:
            order = _same_columns(table.schema, tables[0].schema, shown, files[0][1])
            table = table.select(order) if order else table
        tables.append(table)
    table = _concat(tables, options.path)
    del tables
    arrow_give_back()
    frame = _to_frame(table, options.path if len(files) > 1 else files[0][1])
    del table
    arrow_give_back()
    return Table(frame, description=described(options.path, files))


def _concat(tables: list, path: str):
    """One Arrow table of the files' tables (no copy), a column's types unified across the files
    (integers and decimals: decimals; empty in one file: the others' type; `_same_columns` has
    named a file whose types do not unify, so the error here is a last resort)."""
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(PATH, f"{path}: the files' columns do not have one type each: "
                              f"{str(e).splitlines()[0]}") from None


def _first_bad_utf8(full: Path) -> int | None:
    """Line number of the first byte sequence that is not UTF-8, or None."""
    data = full.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return data.count(b"\n", 0, e.start) + 1
    return None


def _to_frame(table, path: str):
    """An Arrow table -> a pandas DataFrame, with checks on the column names."""
    import pyarrow as pa

    names = [str(n) for n in table.column_names]
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(PATH, f"{path}: column '{name}' appears twice in the header")
        seen.add(name)
    if table.num_rows == 0:
        raise DataError(PATH, f"{path}: no data rows" + (" (only a header)" if names else ""))
    # All-empty columns read as Arrow's null type; make them float NaN rather than None objects.
    columns = [c.cast(pa.float64()) if pa.types.is_null(c.type) else c for c in table.columns]
    return pa.table(columns, names=names).to_pandas(date_as_object=False)


@SOURCES.register("csv", CsvOptions, file=True)
def csv(options: CsvOptions, ctx: SourceContext) -> Table:
    """A CSV file with a header row (`data.source: path/to/file.csv`), or several (`parts/*.csv`),
    read with pyarrow."""
    import pyarrow.csv as pacsv

    return _read_files(options, ctx, lambda full, shown: _csv_open(full, shown, options, pacsv.read_csv))


def _csv_open(full: Path, shown: str, options: CsvOptions, how):
    """`how(full, ...)`: pyarrow's read_csv (a table) or open_csv (a stream of batches), with the
    file's checks and errors (naming it `shown`)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    bad = _first_bad_utf8(full) if full.stat().st_size <= 64 * 2**20 else None
    if bad is not None:
        raise DataError(PATH, f"{shown}: not valid UTF-8 text (line {bad}); save it as UTF-8")
    try:
        out = how(full, parse_options=pacsv.ParseOptions(delimiter=options.sep),
                  convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except pa.ArrowInvalid as e:
        raise _csv_error(e, full, shown, options) from None
    except OSError as e:
        raise DataError(PATH, f"{shown}: cannot read: {e}") from None
    _check_utf8_columns(out.schema, shown)
    return out


def _check_utf8_columns(schema, path: str) -> None:
    import pyarrow as pa

    for field in schema:
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            raise DataError(PATH, f"{path}: not valid UTF-8 text (column '{field.name}'); save it as UTF-8")


def _csv_error(e, full: Path, shown: str, options: CsvOptions) -> DataError:
    """The DataError for pyarrow's complaint about a CSV file: an empty file, the first ragged row
    (found by reading it again, single-threaded), or pyarrow's own first line."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    message = str(e)
    if "Empty CSV" in message:
        return DataError(PATH, f"empty file: {shown}")
    rows = []

    def first_bad_row(row):
        rows.append(row)
        return "error"

    try:  # read again, single-threaded, to learn the row number
        pacsv.read_csv(full, read_options=pacsv.ReadOptions(use_threads=False),
                       parse_options=pacsv.ParseOptions(delimiter=options.sep,
                                                        invalid_row_handler=first_bad_row))
    except (pa.ArrowInvalid, OSError):
        pass
    if rows:
        row = rows[0]
        at = f" at line {row.number}" if row.number is not None else ""
        hint = "" if options.sep != "," else "; if fields are separated by something else, set data.options.sep"
        return DataError(PATH, f"{shown}: ragged rows{at}: expected {row.expected_columns} "
                               f"fields like the header, got {row.actual_columns}{hint}")
    return DataError(PATH, f"{shown}: cannot read as CSV: {message.splitlines()[0]}")


@SOURCES.register("parquet", ParquetOptions, file=True)
def parquet(options: ParquetOptions, ctx: SourceContext) -> Table:
    """A Parquet file (`data.source: path/to/file.parquet`), or several (`parts/*.parquet`), read
    with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def read(full: Path, shown: str):
        try:
            return pq.read_table(full)
        except (pa.ArrowException, OSError) as e:
            raise _parquet_error(e, shown) from None
    return _read_files(options, ctx, read)


def _parquet_error(e, shown: str) -> DataError:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "magic bytes" in message or "footer" in message:
        message = "not a Parquet file (or a damaged one)"
    return DataError(PATH, f"{shown}: cannot read: {message}")


PARQUET_BUFFER = 64 << 10   # bytes of a column chunk read at a time (not the whole chunk, nor the whole file)


def parquet_batches(full: Path, rows: int, columns: list[str] | None = None):
    """(the file's Arrow schema, its record batches of `rows` rows, of `columns` or all), streamed.
    pyarrow's default (pre_buffer) reads every column chunk of the file ahead of the batches: a
    second copy of the table (~190 MiB of a 1,000,000 x 50 float32 file). Decoded in this thread:
    pyarrow's pool (mimalloc) keeps what its worker threads allocated (~35 MiB more after a 1M-row
    file), and threads read no faster here."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(full, pre_buffer=False, buffer_size=PARQUET_BUFFER)
    return pf.schema_arrow, pf.iter_batches(batch_size=rows, columns=columns, use_threads=False)


def table_chunks(source, cwd: Path, seed: int, rows: int):
    """A CSV or Parquet source streamed (never held whole) as the pandas frames `csv`/`parquet`
    would give, `rows` rows at a time (the last one fewer; a chunk may span the files of a pattern),
    with their checks and errors: (description, iterator of (first row, frame)); None for any other
    kind of source. An error further down a file, or in a later file of a pattern, comes when its
    chunk is read."""
    import pyarrow as pa

    ctx = SourceContext(cwd=Path(cwd), seed=seed)
    options = source.options
    if source.kind not in ("csv", "parquet"):
        return None

    def opened(full: Path, shown: str):
        """(schema, batches, (the errors pyarrow raises while reading, -> DataError)) of one file."""
        if source.kind == "csv":
            import pyarrow.csv as pacsv

            reader = _csv_open(full, shown, options, pacsv.open_csv)
            return reader.schema, reader, (pa.ArrowInvalid, lambda e: _csv_error(e, full, shown, options))
        try:
            schema, batches = parquet_batches(full, rows)
        except (pa.ArrowException, OSError) as e:
            raise _parquet_error(e, shown) from None
        return schema, batches, (pa.ArrowException, lambda e: _parquet_error(e, shown))

    files = resolve_files(options.path, ctx)
    first = opened(*files[0])
    name = options.path if len(files) > 1 else files[0][1]

    def frames():
        # one file's batches as tables, joined across files, so that the chunks are those of one file
        pending, have, start = [], 0, 0
        for k, (full, shown) in enumerate(files):
            schema, batches, errors = first if k == 0 else opened(full, shown)
            order = _same_columns(schema, first[0], shown, files[0][1]) if k else None
            try:
                for batch in batches:
                    table = pa.Table.from_batches([batch], schema=schema)
                    pending.append(table.select(order) if order else table)
                    have += batch.num_rows
                    while have >= rows:
                        table = _concat(pending, options.path)
                        yield start, _to_frame(table.slice(0, rows), name)
                        pending, have, start = [table.slice(rows)], have - rows, start + rows
            except errors[0] as e:
                raise errors[1](e) from None
            except OSError as e:
                raise DataError(PATH, f"{shown}: cannot read: {e}") from None
        if have or not start:      # (no rows at all: _to_frame says so)
            yield start, _to_frame(_concat(pending, options.path) if pending else
                                   pa.Table.from_batches([], schema=first[0]), name)
    return options.path, frames()


# ---------------------------------------------------------------------------------------------
# Arrays and images

@dataclass(frozen=True)
class NpzOptions:
    """A NumPy .npz archive with an array of examples and an array of labels."""

    path: str = opt(doc="path of the file; relative paths start at the directory the command ran in")
    x_key: str = opt("x", "name of the examples array in the archive, shape [n, ...]")
    y_key: str = opt("y", "name of the labels/targets array in the archive, shape [n]")


def _npz_array(archive, key: str, option: str, path: str) -> np.ndarray:
    if key not in archive.files:
        listed = ", ".join(archive.files[:12]) or "none"
        raise DataError(PATH, f"{path}: no array '{key}' in the archive (arrays: {listed}); "
                              f"name another with data.options.{option}")
    try:
        return np.asarray(archive[key])
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(PATH, f"{path}: array '{key}' holds Python objects; save numbers or "
                                  "strings (pickled arrays are not loaded)") from None
        raise DataError(PATH, f"{path}: cannot read array '{key}': {str(e).splitlines()[0]}") from None


@SOURCES.register("npz", NpzOptions, file=True)
def npz(options: NpzOptions, ctx: SourceContext) -> Table:
    """A NumPy .npz archive (`data.source: path/to/file.npz`): examples `x` [n, ...], labels `y` [n].

    Each example keeps its shape (e.g. [28, 28, 1] images, [T, F] sequences); features are named by
    flat index x0, x1, ...; integer or string labels make a classification task.
    """
    import zipfile

    full = resolve(options.path, ctx)
    with open(full, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY" and not zipfile.is_zipfile(full):  # np.load would try to unpickle it
        raise DataError(PATH, f"{options.path}: cannot read as .npz: not a zip archive of arrays; save one "
                              "with numpy.savez(path, x=examples, y=labels)")
    try:
        archive = np.load(full, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(PATH, f"{options.path}: cannot read as .npz: {message}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(PATH, f"{options.path}: a single .npy array, not an .npz archive; save it with "
                              "numpy.savez(path, x=examples, y=labels)")
    with archive:
        try:
            x = _npz_array(archive, options.x_key, "x_key", options.path)
            y = _npz_array(archive, options.y_key, "y_key", options.path)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(PATH, f"{options.path}: damaged archive: {str(e).splitlines()[0]}") from None
    xk, yk = options.x_key, options.y_key
    if x.ndim == 0:
        raise DataError(PATH, f"{options.path}: array '{xk}' is a single value; it needs one entry per example")
    if x.dtype.kind not in "biuf":
        raise DataError(PATH, f"{options.path}: array '{xk}' holds {x.dtype} values; examples must be numbers")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(PATH, f"{options.path}: array '{yk}' has shape {list(y.shape)}; it needs one value "
                              "per example, shape [n]")
    if x.shape[0] != y.shape[0]:
        raise DataError(PATH, f"{options.path}: array '{xk}' has {x.shape[0]} examples but '{yk}' has "
                              f"{y.shape[0]} values; they must match")
    if x.shape[0] == 0:
        raise DataError(PATH, f"{options.path}: no examples (array '{xk}' is empty)")
    if y.dtype.kind == "S":
        y = y.astype(str)
    if y.dtype.kind not in "biufU":
        raise DataError(PATH, f"{options.path}: array '{yk}' holds {y.dtype} values; labels must be numbers or text")
    x = x.astype(np.float32).reshape(x.shape if x.ndim > 1 else (x.shape[0], 1))
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DataError(PATH, f"{options.path}: array '{xk}' has {bad} value{'s' if bad != 1 else ''} that "
                              "are NaN or infinite; examples must be finite numbers")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        bad = int(y.size - np.count_nonzero(np.isfinite(y)))
        raise DataError(PATH, f"{options.path}: array '{yk}' has {bad} missing or infinite value"
                              f"{'s' if bad != 1 else ''}")
    return Table(x=x, y=y, target=yk, description=options.path)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class ImageFolderOptions:
    """A folder with one sub-folder of images per class."""

    path: str = opt(doc="path of the folder; relative paths start at the directory the command ran in")
    size: Optional[tuple[int, ...]] = opt(
        None, "[height, width] every image is resized to; default: the first image's size")
    grayscale: bool = opt(False, "read one gray channel; false: three RGB channels")

    def __post_init__(self):
        _check_size(self.size)


def resolve_dir(path: str, ctx: SourceContext) -> Path:
    """The folder a `path` option names; DataError when it is not a folder."""
    given = Path(path).expanduser()
    full = given if given.is_absolute() else Path(ctx.cwd) / given
    where = "" if given.is_absolute() else f" (relative to {ctx.cwd})"
    if not full.exists():
        raise DataError(PATH, f"folder not found: {path}{where}")
    if not full.is_dir():
        raise DataError(PATH, f"{path} is a file, not a folder of images{where}")
    return full


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def read_image(full: Path, size: tuple[int, int] | None, grayscale: bool, shown: str = "") -> np.ndarray:
    """One image file -> float32 [H, W, C] in [0, 1] (C = 1 gray, 3 RGB), resized to `size` (H, W).

    DataError naming the file (`shown`, default the path) when it cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    shown = shown or str(full)
    try:
        with Image.open(full) as image:
            image.load()
            image = image.convert("L" if grayscale else "RGB")
        if size is not None and (image.height, image.width) != tuple(size):
            image = image.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        raise DataError(PATH, f"{shown}: cannot read image: not an image file, or a damaged one") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(PATH, f"{shown}: cannot read image: {message}") from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


@SOURCES.register("image_folder", ImageFolderOptions, file=True)
def image_folder(options: ImageFolderOptions, ctx: SourceContext) -> Table:
    """A folder of images, one sub-folder per class (`data.source: path/to/folder/`), read with Pillow.

    Files ending in .png, .jpg, .jpeg, .bmp or .gif are read (other files and hidden ones are
    skipped); pixels are scaled to [0, 1], examples are [height, width, channels]. Class names are
    the sub-folder names. The `image` prep step, when present, sets size and grayscale instead.
    """
    from compilers.data.prep import natural_sorted

    root = resolve_dir(options.path, ctx)
    shown_root = options.path.rstrip("/\\") or options.path
    folders = natural_sorted([p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")])
    if not folders:
        loose = any(_is_image(p) for p in root.iterdir())
        why = ("the images lie directly in it" if loose else "it has no sub-folders")
        raise DataError(PATH, f"{options.path}: expected one sub-folder of images per class, but {why}")
    files: list[tuple[Path, str, int]] = []
    for code, name in enumerate(folders):
        found = sorted((p for p in (root / name).iterdir() if _is_image(p)), key=lambda p: p.name)
        if not found:
            raise DataError(PATH, f"{shown_root}/{name}: no images ({', '.join(IMAGE_SUFFIXES)}) in this "
                                  "class folder")
        files += [(p, f"{shown_root}/{name}/{p.name}", code) for p in found]

    image_step = ctx.image
    size = options.size
    grayscale = options.grayscale
    if image_step is not None:
        size = image_step.size if image_step.size is not None else size
        grayscale = image_step.grayscale if image_step.grayscale is not None else grayscale
    first = read_image(files[0][0], size, grayscale, files[0][1])
    height, width, channels = first.shape
    x = np.empty((len(files), height, width, channels), np.float32)
    x[0] = first
    for i, (full, shown, _) in enumerate(files[1:], start=1):
        x[i] = read_image(full, (height, width), grayscale, shown)
    y = np.array([code for _, _, code in files], dtype=np.int64)
    return Table(x=x, y=y, class_names=list(folders), target="label", task="classification",
                 description=f"{shown_root}/")
