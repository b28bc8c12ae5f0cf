"""Data sources: built-in data sets, generated data sets and files. Each returns a `Table`.

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
from typing import Optional

import numpy as np

from compilers.data.dataset import Table
from dsl.errors import DataError
from dsl.registry import SOURCES, opt

PATH = "data.source"


@dataclass(frozen=True)
class SourceContext:
    """What a source may know besides its options."""

    cwd: Path            # relative file paths resolve against it
    seed: int = 0        # the spec's top-level seed (generated data sets use it by default)


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
    import pandas as pd

    data = _read_bundled(name_file)
    if data is not None:
        x, codes = data[:, :-1], data[:, -1].astype(int)
    else:  # scikit-learn moved its files: use its loader
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)()
        x, codes = bunch.data, bunch.target
    frame = pd.DataFrame(x, columns=features)
    frame[target] = np.asarray(classes, dtype=object)[codes]
    frame[target] = frame[target].astype(str)
    return Table(frame, target=target, task="classification", description=name)


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
    import pandas as pd

    data = _read_bundled("digits.csv.gz", skip_header=False)
    if data is not None:
        x, codes = data[:, :-1], data[:, -1].astype(int)
    else:
        import sklearn.datasets

        bunch = sklearn.datasets.load_digits()
        x, codes = bunch.data, bunch.target
    frame = pd.DataFrame(x.astype(np.int64), columns=[f"px{i}" for i in range(x.shape[1])])
    frame["digit"] = pd.Series(codes.astype(str), dtype=str)
    return Table(frame, target="digit", task="classification", description="digits")


@SOURCES.register("diabetes")
def diabetes(options, ctx: SourceContext) -> Table:
    """Diabetes progression (regression): 442 rows, 10 raw baseline measurements, target `progression`."""
    import pandas as pd

    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    x = _read_bundled("diabetes_data_raw.csv.gz", sep=None, skip_header=False)
    y = _read_bundled("diabetes_target.csv.gz", sep=None, skip_header=False)
    if x is None or y is None:
        import sklearn.datasets

        bunch = sklearn.datasets.load_diabetes(scaled=False)
        x, y = bunch.data, bunch.target
    frame = pd.DataFrame(x, columns=names)
    frame["progression"] = np.asarray(y, dtype=np.float64).reshape(-1)
    return Table(frame, target="progression", task="regression", description="diabetes")


# ---------------------------------------------------------------------------------------------
# Generated data sets

_N = "number of examples to generate"
_SEED = "seed of the generator; default: the top-level seed"


@dataclass(frozen=True)
class MoonsOptions:
    """Two interleaving half circles (2 features, 2 classes)."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(0.1, "standard deviation of Gaussian noise added to the points", ge=0.0)
    seed: Optional[int] = opt(None, _SEED)


@dataclass(frozen=True)
class CirclesOptions:
    """A small circle inside a large one (2 features, 2 classes)."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(0.05, "standard deviation of Gaussian noise added to the points", ge=0.0)
    factor: float = opt(0.5, "radius of the inner circle relative to the outer one", gt=0.0, lt=1.0)
    seed: Optional[int] = opt(None, _SEED)


@dataclass(frozen=True)
class BlobsOptions:
    """Isotropic Gaussian clusters, one class per cluster."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(1.0, "standard deviation of each cluster", gt=0.0)
    centers: int = opt(3, "number of clusters (classes)", ge=2)
    n_features: int = opt(2, "number of features", ge=1)
    seed: Optional[int] = opt(None, _SEED)


@dataclass(frozen=True)
class SpiralsOptions:
    """Interleaved spiral arms, one class per arm (2 features)."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(0.2, "standard deviation of Gaussian noise added to the points", ge=0.0)
    arms: int = opt(2, "number of arms (classes)", ge=2)
    turns: float = opt(1.5, "how many turns each arm makes", gt=0.0)
    seed: Optional[int] = opt(None, _SEED)


@dataclass(frozen=True)
class XorOptions:
    """Points in the square [-1, 1]^2 labelled by the signs of x0 and x1 (2 classes)."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(0.1, "standard deviation of Gaussian noise added after labelling", ge=0.0)
    seed: Optional[int] = opt(None, _SEED)


@dataclass(frozen=True)
class RegressionOptions:
    """A random linear regression problem."""

    n_samples: int = opt(1000, _N, gt=0)
    noise: float = opt(10.0, "standard deviation of Gaussian noise added to the target", ge=0.0)
    n_features: int = opt(10, "number of features", ge=1)
    n_informative: int = opt(5, "number of features the target depends on", ge=1)
    seed: Optional[int] = opt(None, _SEED)

    def __post_init__(self):
        if self.n_informative > self.n_features:
            raise ValueError(f"n_informative ({self.n_informative}) must not exceed "
                             f"n_features ({self.n_features})")


def _seed(options, ctx: SourceContext) -> int:
    return ctx.seed if options.seed is None else options.seed


def _labelled(name: str, x: np.ndarray, labels: np.ndarray) -> Table:
    import pandas as pd

    frame = pd.DataFrame(np.asarray(x, dtype=np.float64),
                         columns=[f"x{i}" for i in range(x.shape[1])])
    frame["label"] = pd.Series(np.asarray(labels).astype(int).astype(str), dtype=str)
    return Table(frame, target="label", task="classification", description=name)


@SOURCES.register("moons", MoonsOptions)
def moons(options: MoonsOptions, ctx: SourceContext) -> Table:
    """Two interleaving half circles (2 features, 2 classes); sklearn's make_moons."""
    from sklearn.datasets import make_moons

    x, y = make_moons(options.n_samples, noise=options.noise, random_state=_seed(options, ctx))
    return _labelled("moons", x, y)


@SOURCES.register("circles", CirclesOptions)
def circles(options: CirclesOptions, ctx: SourceContext) -> Table:
    """A small circle inside a large one (2 features, 2 classes); sklearn's make_circles."""
    from sklearn.datasets import make_circles

    x, y = make_circles(options.n_samples, noise=options.noise, factor=options.factor,
                        random_state=_seed(options, ctx))
    return _labelled("circles", x, y)


@SOURCES.register("blobs", BlobsOptions)
def blobs(options: BlobsOptions, ctx: SourceContext) -> Table:
    """Gaussian clusters, one class per cluster; sklearn's make_blobs."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(options.n_samples, n_features=options.n_features, centers=options.centers,
                      cluster_std=options.noise, random_state=_seed(options, ctx))
    return _labelled("blobs", x, y)


@SOURCES.register("spirals", SpiralsOptions)
def spirals(options: SpiralsOptions, ctx: SourceContext) -> Table:
    """Interleaved spiral arms, one class per arm (2 features)."""
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
    rng = np.random.default_rng(_seed(options, ctx))
    x = rng.uniform(-1.0, 1.0, (options.n_samples, 2))
    labels = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
    x = x + rng.normal(0.0, options.noise, x.shape)
    return _labelled("xor", x, labels)


@SOURCES.register("regression", RegressionOptions)
def regression(options: RegressionOptions, ctx: SourceContext) -> Table:
    """A random linear regression problem, features x0.., target `y`; sklearn's make_regression."""
    import pandas as pd
    from sklearn.datasets import make_regression

    x, y = make_regression(options.n_samples, n_features=options.n_features,
                           n_informative=options.n_informative, noise=options.noise,
                           random_state=_seed(options, ctx))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    frame["y"] = np.asarray(y, dtype=np.float64)
    return Table(frame, target="y", task="regression", description="regression")


# ---------------------------------------------------------------------------------------------
# Files

@dataclass(frozen=True)
class CsvOptions:
    """A CSV file with a header row."""

    path: str = opt(doc="path of the file; relative paths start at the directory the command ran in")
    sep: str = opt(",", "field separator, e.g. ';' or '\\t'")

    def __post_init__(self):
        if len(self.sep) != 1:
            raise ValueError(f"sep must be a single character, got {self.sep!r}")


@dataclass(frozen=True)
class ParquetOptions:
    """A Parquet file."""

    path: str = opt(doc="path of the file; relative paths start at the directory the command ran in")


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
    """A CSV file with a header row (`data.source: path/to/file.csv`), read with pyarrow."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    full = resolve(options.path, ctx)
    bad = _first_bad_utf8(full) if full.stat().st_size <= 64 * 2**20 else None
    if bad is not None:
        raise DataError(PATH, f"{options.path}: not valid UTF-8 text (line {bad}); save it as UTF-8")
    parse = pacsv.ParseOptions(delimiter=options.sep)
    try:
        table = pacsv.read_csv(full, parse_options=parse,
                               convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except pa.ArrowInvalid as e:
        message = str(e)
        if "Empty CSV" in message:
            raise DataError(PATH, f"empty file: {options.path}") from None
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
            raise DataError(PATH, f"{options.path}: ragged rows{at}: expected {row.expected_columns} "
                                  f"fields like the header, got {row.actual_columns}{hint}") from None
        raise DataError(PATH, f"{options.path}: cannot read as CSV: {message.splitlines()[0]}") from None
    except OSError as e:
        raise DataError(PATH, f"{options.path}: cannot read: {e}") from None
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            raise DataError(PATH, f"{options.path}: not valid UTF-8 text (column '{name}'); save it as UTF-8")
    return Table(_to_frame(table, options.path), description=options.path)


@SOURCES.register("parquet", ParquetOptions, file=True)
def parquet(options: ParquetOptions, ctx: SourceContext) -> Table:
    """A Parquet file (`data.source: path/to/file.parquet`), read with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    full = resolve(options.path, ctx)
    try:
        table = pq.read_table(full)
    except (pa.ArrowException, OSError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "magic bytes" in message or "footer" in message:
            message = "not a Parquet file (or a damaged one)"
        raise DataError(PATH, f"{options.path}: cannot read: {message}") from None
    return Table(_to_frame(table, options.path), description=options.path)
