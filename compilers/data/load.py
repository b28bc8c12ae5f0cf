"""Spec -> Dataset: load the source, choose target and features, split, prepare, encode.

    load_dataset(spec, cwd)                 the whole pipeline, for `run` and `validate`
    load_source(source_item, cwd, seed)     just the source's Table
    apply_prep(prep_items, frame, states)   re-apply fitted prep steps to new rows (`predict`)
    apply_array_prep(prep_items, x, states) the same for array data (npz, image folders)
    to_x(frame, feature_names, shape)       prepared frame -> float32 array [n, *shape]

Three paths: tables (csv, parquet, built-in and generated data sets) go through pandas frames,
unless the columnar loader takes them (`columnar.py`: numbers, and text for `one_hot`, without
pandas; it is tried first: the same results, but for values rounded to float32 before prep);
text (a table with a `tokenize` step) goes through frames, and ends as int32 token ids; arrays
(npz, image folders) are split by index and take only `standardize`, `min_max` (one scalar
statistic over every value of the training split) and, for image folders, `image`.

Every problem a user can cause is a one-line `DataError` naming the key path to fix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from compilers.data.dataset import RAW_SAMPLE_ROWS, Dataset, Table
from compilers.data.prep import (IMAGE_ONLY, CodedLabels, PrepContext, class_codes, describe_dtype, is_numeric,
                                  label_strings, natural_sorted)
from compilers.data.sources import SourceContext
from compilers.data.split import SPLITS, split_indices
from dsl.errors import DataError, did_you_mean
from dsl.registry import PREP, SOURCES

MAX_INFERRED_CLASSES = 20   # an integer target with at most this many values is a class label


def load_source(source, cwd: Path, seed: int = 0, image=None, *, frame: bool = True) -> Table:
    """The Table of a parsed `data.source` item (`Item(kind, options)`).

    `image`: the options of the spec's `image` prep step, read by the image-folder source.
    `frame`: a built-in table of numbers (`Table.matrix`) gets its pandas frame; False leaves it
    as the source gave it (the columnar loader reads it so).
    """
    entry = SOURCES.get(source.kind, "data.source")
    table = entry.build(source.options, SourceContext(cwd=Path(cwd), seed=seed, image=image))
    table.kind = source.kind
    if not table.description:
        table.description = source.kind
    if table.frame is None and table.matrix is not None and not frame:
        return table
    return checked(table)


def checked(table: Table) -> Table:
    """A source's Table made ready for the frame path (a built-in table of numbers gets its pandas
    frame; column names as strings), DataError when it has no rows."""
    if table.frame is None and table.matrix is not None:
        table.frame = table.numeric_frame()
    if table.is_array:
        if table.x.shape[0] == 0:
            raise DataError("data.source", f"{table.description}: no examples")
        return table
    frame = table.frame
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise DataError("data.source", f"{table.description}: no rows")
    return table


def _no_column(name: str, columns: Sequence[str], what: str = "column") -> str:
    hint = did_you_mean(name, columns)
    if hint:
        return f"no {what} '{name}' in the data{hint}"
    listed = ", ".join(list(columns)[:12]) + (", ..." if len(columns) > 12 else "")
    return f"no {what} '{name}' in the data; columns: {listed}"


def infer_task(series) -> str:
    """classification for text, bool and integer targets with few values; regression otherwise."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(series.dtype) or not is_numeric(series):
        return "classification"
    return task_of_numbers(series.to_numpy(dtype=np.float64, na_value=np.nan))


def task_of_numbers(values: np.ndarray) -> str:
    """classification for whole numbers of few values (gaps and infinities aside), else regression."""
    values = values[np.isfinite(values)]
    integral = bool(np.all(values == np.round(values)))
    if integral and len(np.unique(values)) <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


class SeriesTarget:
    """The target column as a pandas Series: what `classes_and_split` asks of a target column (the
    columnar loader has its own in NumPy, `columnar.TargetColumn`)."""

    def __init__(self, series):
        self.series = series

    def __len__(self) -> int:
        return len(self.series)

    def missing(self) -> np.ndarray:
        return np.asarray(self.series.isna())

    def inferred_task(self) -> str:
        return infer_task(self.series.dropna())

    def numeric(self) -> bool:
        return is_numeric(self.series)

    def described(self) -> str:
        return describe_dtype(self.series)

    def labels(self) -> np.ndarray:
        """As strings (an object array; a gap is None): `label_strings`."""
        return label_strings(self.series).to_numpy(dtype=object)

    def floats(self, dtype) -> np.ndarray:
        return self.series.to_numpy(dtype=dtype, na_value=np.nan)

    def take(self, rows) -> np.ndarray:
        return self.series.iloc[rows].to_numpy()


def _target(spec, table: Table, columns: list[str]) -> str:
    target = spec.data.target or table.target
    if target is None:
        listed = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        raise DataError("data.target", f"required for {table.description}: name the column to predict "
                                       f"(columns: {listed})")
    if target not in columns:
        raise DataError("data.target", _no_column(target, columns))
    return target


def _features(spec, target: str, columns: list[str]) -> list[str]:
    if spec.data.features is None:
        features = [c for c in columns if c != target]
        if not features:
            raise DataError("data.features", f"the data has no columns besides the target '{target}'")
        return features
    seen: list[str] = []
    for i, name in enumerate(spec.data.features):
        path = f"data.features[{i}]"
        if name == target:
            raise DataError(path, f"'{name}' is the target; it cannot also be a feature")
        if name not in columns:
            raise DataError(path, _no_column(name, [c for c in columns if c != target]))
        if name in seen:
            raise DataError(path, f"column '{name}' is listed twice")
        seen.append(name)
    return seen


def _task(spec, table: Table, target: str, column) -> str:
    if spec.task is not None:
        task = spec.task
    elif table.task is not None and target == table.target:
        task = table.task
    else:
        task = column.inferred_task()
    if task == "regression" and not column.numeric():
        raise DataError("task", f"regression needs a numeric target, but '{target}' holds "
                                f"{column.described()}; set task: classification")
    return task


def _drops_target(items, target: str, columns: list[str]) -> bool:
    for item in items:
        if item.kind != "drop_na":
            continue
        named = item.options.columns
        if named is None or target in named or ("target" in named and "target" not in columns):
            return True
    return False


def _check_sizes(frames: dict, sizes_wanted: dict, path: str, what: str) -> None:
    for name in SPLITS:
        if sizes_wanted[name] > 0 and len(frames[name]) == 0:
            raise DataError(path, f"{what} left no rows in the {name} split")


def fit_prep(items, frames: dict, target: str) -> tuple[dict, list[dict]]:
    """Fits each step on the (already prepared) training frame in order and applies it to every split."""
    wanted = {k: len(v) for k, v in frames.items()}
    states = []
    for i, item in enumerate(items):
        path = f"data.prep[{i}].{item.kind}"
        prep = PREP.get(item.kind, f"data.prep[{i}]").build(item.options)
        state = prep.fit(frames["train"], PrepContext(target=target, path=path))
        frames = {name: _apply(prep, frame, state, path) for name, frame in frames.items()}
        _check_sizes(frames, wanted, path, item.kind)
        states.append({"kind": item.kind, "state": state})
    return frames, states


def _apply(prep, frame, state, path: str):
    try:
        return prep.apply(frame, state)
    except DataError as e:
        if not e.path:
            e.path = path
        raise


def apply_prep(items, frame, states: list[dict]):
    """Re-applies fitted steps (`Dataset.prep_state`) to a new frame, e.g. for `predict`."""
    if len(items) != len(states):
        raise DataError("data.prep", f"the run was prepared with {len(states)} steps, the spec has {len(items)}")
    for i, (item, saved) in enumerate(zip(items, states)):
        path = f"data.prep[{i}].{item.kind}"
        if saved.get("kind") != item.kind:
            raise DataError(path, f"the run's step {i} was {saved.get('kind')}, the spec's is {item.kind}")
        prep = PREP.get(item.kind, f"data.prep[{i}]").build(item.options)
        frame = _apply(prep, frame, saved["state"], path)
    return frame


def check_features(frame, feature_names: list[str], split: str = "") -> None:
    """Every feature column must hold finite numbers once prepared."""
    where = f" in the {split} split" if split else ""
    for c in feature_names:
        series = frame[c]
        if not is_numeric(series):
            kind = describe_dtype(series)
            fix = ("add `one_hot` to data.prep or leave it out of data.features" if kind in ("text", "categories")
                   else "leave it out of data.features")
            raise DataError("data.features", f"column '{c}' holds {kind}; {fix}")
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = int(np.isnan(values).sum())
        if missing:
            raise DataError("data.features", f"column '{c}' has {missing} missing value{'s' if missing != 1 else ''}"
                                             f"{where}; add `impute` or `drop_na` to data.prep")
        if not np.all(np.isfinite(values)):
            raise DataError("data.features", f"column '{c}' has infinite values{where}; "
                                             "add `clip` to data.prep or leave it out of data.features")


def resolve_shape(shape, n_features: int) -> tuple[int, ...]:
    """`data.shape` (with at most one -1) for examples of n_features values."""
    if shape is None:
        return (n_features,)
    shape = tuple(int(s) for s in shape)
    shown = "[" + ", ".join(map(str, shape)) + "]"
    if shape.count(-1) > 1:
        raise DataError("data.shape", f"{shown}: at most one entry may be -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if known == 0 or n_features % known:
            raise DataError("data.shape", f"{shown} cannot hold the {n_features} features of an example")
        shape = tuple(n_features // known if s == -1 else s for s in shape)
    elif known != n_features:
        raise DataError("data.shape", f"{shown} holds {known} values, but an example has {n_features} features")
    return shape


def to_x(frame, feature_names: list[str], shape=None, dtype=np.float32) -> np.ndarray:
    """[n, *shape] of the prepared feature columns: float32, or int32 for token ids."""
    if dtype == np.int32:
        x = frame[feature_names].to_numpy(dtype=np.int32)
    else:
        x = frame[feature_names].to_numpy(dtype=np.float32, na_value=np.nan) if feature_names else \
            np.zeros((len(frame), 0), np.float32)
    x = np.ascontiguousarray(x, dtype=dtype)
    return x.reshape((x.shape[0],) + resolve_shape(shape, len(feature_names)))


def _steps_of(items, kind: str) -> list[tuple[int, object]]:
    found = [(i, item) for i, item in enumerate(items) if item.kind == kind]
    if len(found) > 1:
        i = found[1][0]
        raise DataError(f"data.prep[{i}].{kind}",
                        f"only one {kind} step is allowed (another is data.prep[{found[0][0]}])")
    return found


def _text_features(spec, table: Table, target: str, columns: list[str], step) -> list[str]:
    """The features of text data: just the column `tokenize` reads."""
    i, item = step
    path = f"data.prep[{i}].tokenize"
    column = item.options.column
    named = spec.data.features
    if named is not None:
        features = _features(spec, target, columns)
        if len(features) > 1:
            raise DataError("data.features", "mixing text and numeric features is not supported yet: with "
                                             "tokenize, list only the text column (or leave data.features out)")
        if column is not None and column != features[0]:
            raise DataError("data.features", f"tokenize reads '{column}', but data.features lists only "
                                             f"'{features[0]}'")
        return features
    if column is not None:
        if column == target:
            raise DataError(path, f"'{column}' is the target; tokenize needs a text feature column")
        if column not in columns:
            raise DataError(path, _no_column(column, [c for c in columns if c != target]))
        return [column]
    frame = table.frame
    text = [c for c in columns if c != target and describe_dtype(frame[c]) == "text"]
    if len(text) != 1:
        which = (f"text columns: {', '.join(text)}" if text
                 else f"no column besides the target holds text (columns: {', '.join(columns)})")
        raise DataError(path, f"name the column to tokenize with `column:`; {which}")
    return text


def classes_and_split(spec, table: Table, target: str, column, columns: list[str]):
    """(task, labels, class_names, split index) from the raw target column (every row): `column` a
    `SeriesTarget`, or the columnar loader's `TargetColumn`.

    `labels`: the target as strings (an object array, a gap None, or `CodedLabels`; classification)
    or None. Shared by the frame path below and the columnar one (`columnar.py`), so both raise the
    same errors."""
    data = spec.data
    task = _task(spec, table, target, column)
    missing = int(column.missing().sum())
    if missing and not _drops_target(data.prep, target, columns):
        raise DataError("data.target", f"{missing} row{'s' if missing != 1 else ''} of {len(column)} have no value "
                                       f"for the target '{target}'; add `drop_na: {{columns: [{target}]}}` "
                                       "to data.prep to drop them")
    labels = None
    class_names = None
    if task == "classification":
        labels = column.labels()
        class_names = natural_sorted(labels.distinct() if isinstance(labels, CodedLabels)
                                     else {label for label in set(labels) if label is not None})
        if len(class_names) < 2:
            only = f" ('{class_names[0]}')" if class_names else ""
            raise DataError("data.target", f"classification needs at least two classes; '{target}' has "
                                           f"{len(class_names)}{only}")
    seed = data.split.seed if data.split.seed is not None else spec.seed
    index = split_indices(len(column), labels, data.split, seed, task == "classification")
    return task, labels, class_names, index


def sample_rows(n: int) -> np.ndarray:
    """The rows of an n-row table kept for the data charts: RAW_SAMPLE_ROWS evenly spaced (all of a small one)."""
    return np.unique(np.linspace(0, n - 1, min(RAW_SAMPLE_ROWS, n)).astype(np.int64))


def load_dataset(spec, cwd: Path, *, columnar: bool = True, on_rows=None) -> Dataset:
    """Loads, splits and prepares the data a spec describes.

    `columnar`: numeric CSV and Parquet files take the lean path of `columnar.py` (float32 blocks,
    no pandas copies; the same results); False forces the frame path (tests compare the two).
    `on_rows(n)`: told the rows read so far as the columnar path streams the file (progress)."""
    data = spec.data
    image = _steps_of(data.prep, "image")
    if image and data.source.kind != "image_folder":
        i = image[0][0]
        raise DataError(f"data.prep[{i}].image", f"image {IMAGE_ONLY}; data.source is {data.source.kind} data")
    table = None
    if columnar:
        from compilers.data.columnar import FILES, eligible, load_columnar

        if eligible(spec) and data.source.kind not in FILES:   # a built-in table may come as numbers
            table = load_source(data.source, cwd, spec.seed, frame=False)
        dataset = load_columnar(spec, cwd, on_rows, table)
        if dataset is not None:
            return dataset
    if table is not None:
        table = checked(table)
    else:
        table = load_source(data.source, cwd, spec.seed, image[0][1].options if image else None)
    if table.is_array:
        return _load_arrays(spec, table)
    frame = table.frame
    columns = list(frame.columns)
    target = _target(spec, table, columns)
    text = _steps_of(data.prep, "tokenize")
    if text:
        features = _text_features(spec, table, target, columns, text[0])
        for i, item in enumerate(data.prep):
            if item.kind not in ("tokenize", "drop_na"):
                raise DataError(f"data.prep[{i}].{item.kind}", f"{item.kind} does not apply to text: with "
                                                                "tokenize, data.prep takes only drop_na besides")
    else:
        features = _features(spec, target, columns)
    raw = frame[features + [target]].reset_index(drop=True)
    del frame, table.frame          # no lingering reference to the source's whole table
    task, labels, class_names, index = classes_and_split(spec, table, target, SeriesTarget(raw[target]), columns)
    frames = {name: raw.iloc[index[name]].reset_index(drop=True) for name in SPLITS}
    raw = raw.iloc[sample_rows(len(raw))]     # what the data charts draw; the whole table is let go
    frames, states = fit_prep(data.prep, frames, target)

    feature_names = [c for c in frames["train"].columns if c != target]
    for name in SPLITS:
        if [c for c in frames[name].columns if c != target] != feature_names:   # a step misbehaved
            raise DataError("data.prep", f"the {name} split came out with other columns than the train split")
        check_features(frames[name], feature_names, name)
    if not feature_names:
        raise DataError("data.features", "no feature columns are left after data.prep")
    input_shape = resolve_shape(data.shape, len(feature_names))

    x, y = {}, {}
    for name in SPLITS:
        f = frames[name]
        if f[target].isna().any():
            raise DataError("data.target", f"rows without a target are left in the {name} split; add "
                                           f"`drop_na: {{columns: [{target}]}}` to data.prep")
        x[name] = to_x(f, feature_names, data.shape, np.int32 if text else np.float32)
        if task == "classification":
            y[name] = class_codes(label_strings(f[target]), class_names)
        else:
            y[name] = f[target].to_numpy(dtype=np.float32, na_value=np.nan)

    n_rows = sum(len(v) for v in y.values())
    what = (f"{len(class_names)} classes" if task == "classification" else f"regression on '{target}'")
    description = f"{table.description}: {n_rows} rows, {len(feature_names)} features, {what}"
    vocabulary = None
    if text:
        vocabulary = list(next(s["state"]["vocabulary"] for s in states if s["kind"] == "tokenize"))
        description = (f"{table.description}: {n_rows} rows, text '{features[0]}' as {len(feature_names)} "
                       f"tokens ({len(vocabulary)} in the vocabulary), {what}")
    return Dataset(task=task, feature_names=feature_names, class_names=class_names, x=x, y=y,
                   input_shape=input_shape, raw=raw, target=target, prep_state=states,
                   description=description, vocabulary=vocabulary)


# ---------------------------------------------------------------------------------------------
# Arrays (npz, image folders)

ARRAY_STEPS = ("standardize", "min_max")


def _array_step(item, i: int, table_kind: str, x_train: np.ndarray | None, example_shape) -> dict:
    """Checks one prep step on array data and fits its state on the training examples."""
    path = f"data.prep[{i}].{item.kind}"
    if item.kind == "image":
        if table_kind != "image_folder":
            raise DataError(path, f"image {IMAGE_ONLY}; data.source is {table_kind} data")
        height, width, channels = example_shape
        return {"size": [int(height), int(width)], "grayscale": channels == 1}
    if item.kind not in ARRAY_STEPS:
        takes = ", ".join(ARRAY_STEPS + (("image",) if table_kind == "image_folder" else ()))
        raise DataError(path, f"{item.kind} works on table columns; array data ({table_kind}) takes only {takes}")
    if item.options.columns is not None:
        raise DataError(path, f"array data has no columns to name; leave out `columns` ({item.kind} uses one "
                              "statistic over every value of the training split)")
    v = x_train.astype(np.float64, copy=False)
    if item.kind == "standardize":
        mean = float(v.mean()) if v.size else 0.0
        std = float(v.std()) if v.size else 1.0
        return {"over": "all", "mean": mean, "std": std if std > 0 and math.isfinite(std) else 1.0}
    return {"over": "all", "min": float(v.min()) if v.size else 0.0, "max": float(v.max()) if v.size else 1.0}


def _array_apply(kind: str, x: np.ndarray, state: dict) -> np.ndarray:
    if kind == "standardize":
        return ((x - np.float32(state["mean"])) / np.float32(state["std"])).astype(np.float32, copy=False)
    if kind == "min_max":
        span = state["max"] - state["min"]
        span = span if span > 0 else 1.0
        return ((x - np.float32(state["min"])) / np.float32(span)).astype(np.float32, copy=False)
    return x    # image: acted when the files were read


def apply_array_prep(items, x: np.ndarray, states: list[dict]) -> np.ndarray:
    """Re-applies fitted steps (`Dataset.prep_state`) to new examples [n, ...] of array data."""
    if len(items) != len(states):
        raise DataError("data.prep", f"the run was prepared with {len(states)} steps, the spec has {len(items)}")
    x = np.asarray(x, dtype=np.float32)
    for i, (item, saved) in enumerate(zip(items, states)):
        if saved.get("kind") != item.kind:
            raise DataError(f"data.prep[{i}].{item.kind}", f"the run's step {i} was {saved.get('kind')}, "
                                                           f"the spec's is {item.kind}")
        x = _array_apply(item.kind, x, saved["state"])
    return x


def _load_arrays(spec, table: Table) -> Dataset:
    import pandas as pd

    data = spec.data
    kind, target = table.kind, table.target or "y"
    if data.target is not None and data.target != target:
        hint = "; name another array with data.options.y_key" if kind == "npz" else ""
        raise DataError("data.target", f"{kind} data has one target, '{target}'{hint}")
    if data.features is not None:
        raise DataError("data.features", f"{kind} data has no columns to choose; leave data.features out "
                                         "(every value of an example is an input)")
    x_all, y_all = table.x, np.asarray(table.y)
    n = x_all.shape[0]
    example_shape = tuple(int(s) for s in x_all.shape[1:])
    n_features = int(math.prod(example_shape))

    if spec.task is not None:
        task = spec.task
    elif table.task is not None:
        task = table.task
    else:
        task = infer_task(pd.Series(y_all))
    numeric = y_all.dtype.kind in "biuf" and table.class_names is None
    if task == "regression" and not numeric:
        holds = "class folders" if table.class_names is not None else "text"
        raise DataError("task", f"regression needs a numeric target, but '{target}' holds {holds}; "
                                "set task: classification")

    labels = None
    class_names = None
    if task == "classification":
        if table.class_names is not None:
            class_names = list(table.class_names)
            labels = np.asarray(class_names, dtype=object)[y_all.astype(np.int64)]
        else:
            labels = label_strings(pd.Series(y_all)).to_numpy(dtype=object)
            class_names = natural_sorted(set(labels))
        if len(class_names) < 2:
            only = f" ('{class_names[0]}')" if class_names else ""
            raise DataError("data.target", f"classification needs at least two classes; '{target}' has "
                                           f"{len(class_names)}{only}")

    seed = data.split.seed if data.split.seed is not None else spec.seed
    index = split_indices(n, labels, data.split, seed, task == "classification")
    x = {name: x_all[index[name]] for name in SPLITS}
    states = []
    for i, item in enumerate(data.prep):
        state = _array_step(item, i, kind, x["train"], example_shape)
        x = {name: _array_apply(item.kind, v, state) for name, v in x.items()}
        states.append({"kind": item.kind, "state": state})

    input_shape = resolve_shape(data.shape, n_features) if data.shape is not None else example_shape
    y = {}
    for name in SPLITS:
        x[name] = np.ascontiguousarray(x[name], dtype=np.float32).reshape((len(index[name]),) + input_shape)
        if task == "classification":
            y[name] = class_codes(labels[index[name]], class_names)
        else:
            y[name] = y_all[index[name]].astype(np.float32)

    shown = "x".join(map(str, example_shape))
    what = f"{len(class_names)} classes" if task == "classification" else f"regression on '{target}'"
    description = f"{table.description}: {n} examples of {shown}, {what}"
    return Dataset(task=task, feature_names=[f"x{i}" for i in range(n_features)], class_names=class_names,
                   x=x, y=y, input_shape=input_shape, raw=None, target=target, prep_state=states,
                   description=description)
