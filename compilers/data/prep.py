"""Preparation steps: `(fit, apply)` pairs, like optax's `(init, update)`.

A step is registered in `PREP` with its options dataclass and a builder `def name(options) -> Prep`.
`fit(frame, ctx) -> state` learns what the step needs from the training split (means, categories,
...); `apply(frame, state) -> frame` transforms any frame with that state. The state is plain JSON
(lists, floats, strings), so it is saved with the run and re-applied to new data by `predict`.

Frames hold the feature columns and the target column. Column-wise steps act on feature columns
only (`drop_na` may also name the target); `columns: null` means every column the step applies to.
Nothing heavy is imported at module level.

Array data (npz, image folders) does not go through frames: `load.py` applies `standardize` and
`min_max` to it element-wise and reads `image`'s options when the images are read. `tokenize`
turns a text column into token-id columns t0..t{max_len-1}.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import numpy as np

from dsl.errors import DataError, unknown
from dsl.registry import PREP, opt


@dataclass(frozen=True)
class PrepContext:
    """What `fit` may know besides the training frame."""

    target: str            # the target column (never transformed, except rows dropped by drop_na)
    path: str = ""         # key path of the step, e.g. "data.prep[1].standardize", for errors


@dataclass(frozen=True)
class Prep:
    fit: Callable[[Any, PrepContext], dict]
    apply: Callable[[Any, dict], Any]


_COLUMNS = "columns to transform; default: {}"


def _features(frame, ctx: PrepContext) -> list[str]:
    return [c for c in frame.columns if c != ctx.target]


def is_numeric(series) -> bool:
    """True for number and bool columns (pandas' idea of numeric includes bool)."""
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype)


def _check_named(named: tuple[str, ...], frame, ctx: PrepContext, *, allow_target: bool = False) -> list[str]:
    columns = list(frame.columns)
    out = []
    for name in named:
        if name == ctx.target and not allow_target:
            raise DataError(ctx.path, f"'{name}' is the target; only drop_na may name it in data.prep")
        if name not in columns:
            if allow_target and name == "target":
                out.append(ctx.target)
                continue
            choices = (columns + ["target"]) if allow_target else [c for c in columns if c != ctx.target]
            raise DataError(ctx.path, unknown("column", name, choices))
        if name in out:
            raise DataError(ctx.path, f"column '{name}' is listed twice")
        out.append(name)
    return out


def _numeric_columns(options, frame, ctx: PrepContext, what: str) -> list[str]:
    """The columns a numeric step acts on: those named (which must hold numbers), or all numeric features."""
    if options.columns is None:
        return [c for c in _features(frame, ctx) if is_numeric(frame[c])]
    columns = _check_named(options.columns, frame, ctx)
    for c in columns:
        if not is_numeric(frame[c]):
            raise DataError(ctx.path, f"column '{c}' holds {describe_dtype(frame[c])}; {what} needs numbers"
                                      " (one_hot turns categories into numbers)")
    return columns


def describe_dtype(series) -> str:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series.dtype) or pd.api.types.is_timedelta64_dtype(series.dtype):
        return "dates or times"
    if isinstance(series.dtype, pd.CategoricalDtype):
        return "categories"
    if is_numeric(series):
        return "numbers"
    return "text"


def _values(frame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=np.float64, na_value=np.nan)


def label_strings(series) -> "Any":
    """Values as strings (an object Series) for categories and class names; missing stay None.

    Whole-number float columns (integers with gaps read as floats) lose their '.0'.
    """
    import pandas as pd

    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    names = np.array(label_names(uniques, pd.api.types.is_float_dtype(series.dtype)) + [None], dtype=object)
    return pd.Series(names[codes], index=series.index, dtype=object)   # code -1 -> the trailing None


def label_names(uniques, floating: bool) -> list[str]:
    """The strings of a column's distinct values (no gaps among them) as `label_strings` names them;
    `floating`: the column holds floats, and whole numbers lose their '.0'."""
    values = list(uniques)
    if floating:
        v = np.asarray(values, dtype=np.float64)
        if v.size and np.all(np.isfinite(v)) and np.all(v == np.round(v)) and np.all(np.abs(v) < 2**53):
            values = [int(x) for x in v]
    return [str(u) for u in values]


class CodedLabels:
    """Class labels held as codes into their distinct strings (`names`; -1: a gap), as the columnar
    loader reads a target (`columnar.TargetColumn`), so that `class_codes` and the stratified split
    need not hash a million Python strings (pandas, which the loader does not import). `np.asarray`
    gives the labels themselves, None for a gap."""

    def __init__(self, codes: np.ndarray, names: list[str]):
        merged: dict[str, int] = {}        # two values may name one label (0.0 and -0.0 both "0")
        table = np.array([merged.setdefault(name, len(merged)) for name in names] + [-1], dtype=np.int64)
        self.codes, self.names = table[codes], list(merged)

    def __len__(self) -> int:
        return len(self.codes)

    def __iter__(self):
        return iter(self.__array__())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.array(self.names + [None], dtype=object)[self.codes]

    def __getitem__(self, rows) -> "CodedLabels":
        coded = CodedLabels.__new__(CodedLabels)
        coded.codes, coded.names = self.codes[rows], self.names
        return coded

    def distinct(self) -> set[str]:
        """The labels that occur (gaps aside)."""
        return {self.names[k] for k in np.unique(self.codes) if k >= 0}


def class_codes(labels, class_names) -> np.ndarray:
    """int32 position of each label (a string, or None) in `class_names`; -1 for a missing or unknown
    one. What `pd.Categorical(labels, categories=class_names).codes` gives, but pandas 3 matches
    object labels through its arrow-backed strings, a new Python string per row (~50 MB per million),
    and pandas 4 will refuse a label that is not one of the categories."""
    position = {name: i for i, name in enumerate(class_names)}
    if isinstance(labels, CodedLabels):
        inverse, uniques = labels.codes, labels.names
    else:
        import pandas as pd

        inverse, uniques = pd.factorize(np.asarray(labels, dtype=object))     # a missing label: -1
    table = np.array([position.get(u, -1) for u in uniques] + [-1], dtype=np.int32)
    return table[inverse]


def natural_sorted(labels) -> list[str]:
    """Numbers in numeric order ("2" before "10"), then everything else in string order."""
    def key(label: str):
        try:
            number = float(label)
        except ValueError:
            number = math.nan
        return (0, number, label) if math.isfinite(number) else (1, 0.0, label)

    return sorted(labels, key=key)


# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StandardizeOptions:
    columns: Optional[tuple[str, ...]] = opt(None, _COLUMNS.format("every numeric feature"))


def standardize_stats(v: np.ndarray) -> tuple[float, float]:
    """(mean, std) of a column's float64 training values, ignoring missing and infinite ones; a
    constant column gets std 1 (centred only). Shared with the columnar loader (`columnar.py`)."""
    v = v[np.isfinite(v)]
    m = float(v.mean()) if v.size else 0.0
    s = float(v.std()) if v.size else 1.0
    return m, (s if s > 0 and math.isfinite(s) else 1.0)


@PREP.register("standardize", StandardizeOptions, positional="columns")
def standardize(options: StandardizeOptions) -> Prep:
    """Subtract the mean and divide by the standard deviation (of the training split)."""

    def fit(frame, ctx):
        columns = _numeric_columns(options, frame, ctx, "standardize")
        stats = [standardize_stats(_values(frame, c)) for c in columns]
        return {"columns": columns, "mean": [m for m, _ in stats], "std": [s for _, s in stats]}

    def apply(frame, state):
        frame = frame.copy()
        for c, m, s in zip(state["columns"], state["mean"], state["std"]):
            frame[c] = (_values(frame, c) - m) / s
        return frame

    return Prep(fit, apply)


@dataclass(frozen=True)
class MinMaxOptions:
    columns: Optional[tuple[str, ...]] = opt(None, _COLUMNS.format("every numeric feature"))


def min_max_stats(v: np.ndarray) -> tuple[float, float]:
    """(min, max) of a column's float64 training values, ignoring missing and infinite ones."""
    v = v[np.isfinite(v)]
    return (float(v.min()) if v.size else 0.0), (float(v.max()) if v.size else 1.0)


@PREP.register("min_max", MinMaxOptions, positional="columns")
def min_max(options: MinMaxOptions) -> Prep:
    """Scale to [0, 1] by the minimum and maximum of the training split."""

    def fit(frame, ctx):
        columns = _numeric_columns(options, frame, ctx, "min_max")
        stats = [min_max_stats(_values(frame, c)) for c in columns]
        return {"columns": columns, "min": [lo for lo, _ in stats], "max": [hi for _, hi in stats]}

    def apply(frame, state):
        frame = frame.copy()
        for c, lo, hi in zip(state["columns"], state["min"], state["max"]):
            span = hi - lo if hi > lo else 1.0                       # constant column -> 0
            frame[c] = (_values(frame, c) - lo) / span
        return frame

    return Prep(fit, apply)


@dataclass(frozen=True)
class ImputeOptions:
    strategy: Literal["mean", "median", "most_frequent"] = opt(
        "mean", "value that fills a missing one, from the training split")
    columns: Optional[tuple[str, ...]] = opt(
        None, "columns to fill; default: every numeric feature (every feature for most_frequent)")


@PREP.register("impute", ImputeOptions, positional="strategy")
def impute(options: ImputeOptions) -> Prep:
    """Fill missing values with the training split's mean, median or most frequent value."""

    def fit(frame, ctx):
        if options.strategy == "most_frequent":
            columns = (_features(frame, ctx) if options.columns is None
                       else _check_named(options.columns, frame, ctx))
        else:
            columns = _numeric_columns(options, frame, ctx, f"impute: {options.strategy}")
        values = []
        for c in columns:
            series = frame[c]
            present = series.dropna()
            if is_numeric(series):
                v = present.to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
            else:
                v = present
            if len(v) == 0:
                if series.isna().any():
                    raise DataError(ctx.path, f"column '{c}' has no values in the training split to impute from")
                values.append(None)                               # nothing to fill, ever seen
                continue
            if options.strategy == "mean":
                values.append(float(np.mean(v)))
            elif options.strategy == "median":
                values.append(float(np.median(v)))
            else:
                mode = present.mode().iloc[0]                     # smallest of the most frequent
                if isinstance(mode, np.generic):
                    mode = mode.item()
                values.append(mode if isinstance(mode, (bool, int, float, str)) else str(mode))
        return {"columns": columns, "values": values}

    def apply(frame, state):
        frame = frame.copy()
        for c, value in zip(state["columns"], state["values"]):
            if value is None or not frame[c].isna().any():
                continue
            if is_numeric(frame[c]) and isinstance(value, (int, float)):
                frame[c] = frame[c].astype(np.float64).fillna(float(value))
            else:
                frame[c] = frame[c].astype(object).where(frame[c].notna(), value)
        return frame

    return Prep(fit, apply)


@dataclass(frozen=True)
class DropNaOptions:
    columns: Optional[tuple[str, ...]] = opt(
        None, "drop rows missing a value in these columns (`target` names the target); default: every column")


@PREP.register("drop_na", DropNaOptions, positional="columns")
def drop_na(options: DropNaOptions) -> Prep:
    """Drop the rows that miss a value (in any column, or in those named, e.g. [target])."""

    def fit(frame, ctx):
        if options.columns is None:
            return {"columns": list(frame.columns)}
        return {"columns": _check_named(options.columns, frame, ctx, allow_target=True)}

    def apply(frame, state):
        columns = [c for c in state["columns"] if c in frame.columns]
        return frame.dropna(subset=columns).reset_index(drop=True)

    return Prep(fit, apply)


@dataclass(frozen=True)
class OneHotOptions:
    columns: Optional[tuple[str, ...]] = opt(None, _COLUMNS.format("every text or categorical feature"))
    max_categories: int = opt(100, "a column with more distinct values than this is an error", ge=1)


def one_hot_categories(column: str, values: set, options: OneHotOptions, path: str) -> list[str]:
    """A column's categories (its distinct training values as strings), in natural order; DataError
    past max_categories. Shared with the columnar loader (`columnar.py`)."""
    seen = natural_sorted(values)
    if len(seen) > options.max_categories:
        raise DataError(path, f"column '{column}' has {len(seen)} distinct values in the training split, "
                              f"more than max_categories ({options.max_categories}); leave it out of "
                              "data.features or raise one_hot's max_categories")
    return seen


@PREP.register("one_hot", OneHotOptions, positional="columns")
def one_hot(options: OneHotOptions) -> Prep:
    """Replace each categorical column by one 0/1 column per category seen in the training split.

    New columns are named `column=category`; a category not seen in training encodes as all zeros.
    """

    def fit(frame, ctx):
        if options.columns is None:
            columns = [c for c in _features(frame, ctx) if describe_dtype(frame[c]) in ("text", "categories")]
        else:
            columns = _check_named(options.columns, frame, ctx)
        categories = [one_hot_categories(c, set(label_strings(frame[c]).dropna()), options, ctx.path)
                      for c in columns]
        return {"columns": columns, "categories": categories}

    def apply(frame, state):
        import pandas as pd

        encoded = dict(zip(state["columns"], state["categories"]))
        columns = {}
        for c in frame.columns:
            if c not in encoded:
                columns[c] = frame[c]
                continue
            labels = label_strings(frame[c]).to_numpy(dtype=object)
            for cat in encoded[c]:
                columns[f"{c}={cat}"] = (labels == cat).astype(np.float64)
        return pd.DataFrame(columns, index=frame.index)

    return Prep(fit, apply)


@dataclass(frozen=True)
class LogOptions:
    columns: Optional[tuple[str, ...]] = opt(None, _COLUMNS.format("every numeric feature"))
    offset: float = opt(0.0, "added before the log: log(x + offset); 1 gives log1p")


@PREP.register("log", LogOptions, positional="columns")
def log(options: LogOptions) -> Prep:
    """Natural logarithm, log(x + offset); values must be positive after the offset."""

    def fit(frame, ctx):
        columns = _numeric_columns(options, frame, ctx, "log")
        for c in columns:
            v = _values(frame, c) + options.offset
            bad = v[v <= 0]
            if bad.size:
                raise DataError(ctx.path, _log_message(c, bad, options.offset))
        return {"columns": columns, "offset": float(options.offset)}

    def apply(frame, state):
        frame = frame.copy()
        for c in state["columns"]:
            v = _values(frame, c) + state["offset"]
            bad = v[v <= 0]
            if bad.size:
                raise DataError("", _log_message(c, bad, state["offset"]))
            frame[c] = np.log(v)
        return frame

    return Prep(fit, apply)


def _log_message(column: str, bad: np.ndarray, offset: float) -> str:
    smallest = float(np.min(bad)) - offset
    n = bad.size
    return (f"column '{column}' has {n} value{'s' if n != 1 else ''} <= {-offset:g} (smallest {smallest:g}); "
            "log needs positive values: set log's offset, or clip first")


@dataclass(frozen=True)
class ClipOptions:
    min: Optional[float] = opt(None, "lower bound; null: none")
    max: Optional[float] = opt(None, "upper bound; null: none")
    columns: Optional[tuple[str, ...]] = opt(None, _COLUMNS.format("every numeric feature"))

    def __post_init__(self):
        if self.min is None and self.max is None:
            raise ValueError("clip needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must not exceed max ({self.max:g})")


@PREP.register("clip", ClipOptions)
def clip(options: ClipOptions) -> Prep:
    """Limit values to [min, max]."""

    def fit(frame, ctx):
        return {"columns": _numeric_columns(options, frame, ctx, "clip"),
                "min": options.min, "max": options.max}

    def apply(frame, state):
        frame = frame.copy()
        low = -np.inf if state["min"] is None else state["min"]
        high = np.inf if state["max"] is None else state["max"]
        for c in state["columns"]:
            frame[c] = np.clip(_values(frame, c), low, high)
        return frame

    return Prep(fit, apply)



# ---------------------------------------------------------------------------------------------
# Images and text

IMAGE_ONLY = ("applies only to image folders (data.source: a folder with one sub-folder of images "
              "per class)")


def _check_size(size) -> None:
    if size is None:
        return
    if len(size) != 2:
        raise ValueError(f"size must be [height, width], got {list(size)}")
    if any(s < 1 for s in size):
        raise ValueError(f"size entries must be positive, got {list(size)}")


@dataclass(frozen=True)
class ImageOptions:
    size: Optional[tuple[int, ...]] = opt(
        None, "[height, width] every image is resized to; null: data.options.size, else the first image's size")
    grayscale: Optional[bool] = opt(None, "true: one gray channel; false: RGB; null: data.options.grayscale (false)")

    def __post_init__(self):
        _check_size(self.size)


@PREP.register("image", ImageOptions, positional="size")
def image(options: ImageOptions) -> Prep:
    """Image folders: the size images are resized to and gray or RGB channels, applied as they are read.

    Wherever it stands in data.prep, it acts when the image files are read (before the split);
    its options override data.options.size and data.options.grayscale. Pixels are in [0, 1];
    add `standardize` or `min_max` after it to rescale.
    """

    def fit(frame, ctx):
        raise DataError(ctx.path, f"image {IMAGE_ONLY}; this data is a table")

    def apply(frame, state):
        raise DataError("", f"image {IMAGE_ONLY}; this data is a table")

    return Prep(fit, apply)


PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]")


def tokens(text, level: str, lowercase: bool) -> list[str]:
    """Words (runs of letters/digits, apostrophes inside; each punctuation mark alone) or characters."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    text = str(text)
    if lowercase:
        text = text.lower()
    return _WORD.findall(text) if level == "word" else list(text)


def token_names(max_len: int) -> list[str]:
    return [f"t{i}" for i in range(max_len)]


@dataclass(frozen=True)
class TokenizeOptions:
    column: Optional[str] = opt(None, "the text column; default: the only text column among the features")
    level: Literal["word", "char"] = opt("word", "word: words and punctuation marks; char: characters")
    vocab_size: int = opt(5000, "vocabulary size, <pad> and <unk> included: the vocab_size - 2 most frequent "
                                "tokens of the training split", ge=3)
    max_len: int = opt(64, "tokens per example: longer texts are cut, shorter ones padded at the end", ge=1)
    lowercase: bool = opt(True, "lower-case the text first")


@PREP.register("tokenize", TokenizeOptions, positional="column")
def tokenize(options: TokenizeOptions) -> Prep:
    """Turn a text column into token ids t0..t{max_len-1} (the model's input; int32).

    The vocabulary is the most frequent tokens of the training split (ties in alphabetical order);
    id 0 is padding (<pad>), id 1 a token outside the vocabulary (<unk>). Texts are cut or padded
    at the end to max_len tokens. The vocabulary is saved with the run.
    """

    def fit(frame, ctx):
        if options.column is None:
            text = [c for c in _features(frame, ctx) if describe_dtype(frame[c]) == "text"]
            if len(text) != 1:
                which = (f"text columns: {', '.join(text)}" if text
                         else f"no feature column holds text (columns: {', '.join(_features(frame, ctx))})")
                raise DataError(ctx.path, f"name the column to tokenize with `column:`; {which}")
            column = text[0]
        else:
            (column,) = _check_named((options.column,), frame, ctx)
        if describe_dtype(frame[column]) != "text":
            raise DataError(ctx.path, f"column '{column}' holds {describe_dtype(frame[column])}; tokenize needs text")
        counts: Counter = Counter()
        for value in frame[column].to_numpy(dtype=object):
            counts.update(tokens(value, options.level, options.lowercase))
        kept = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: options.vocab_size - 2]
        vocabulary = [PAD, UNK] + [t for t, _ in kept if t not in (PAD, UNK)]
        return {"column": column, "level": options.level, "lowercase": options.lowercase,
                "max_len": options.max_len, "vocabulary": vocabulary}

    def apply(frame, state):
        import pandas as pd

        column, max_len = state["column"], state["max_len"]
        if column not in frame.columns:
            raise DataError("", f"no column '{column}' to tokenize")
        names = token_names(max_len)
        clash = [n for n in names if n in frame.columns and n != column]
        if clash:
            raise DataError("", f"column '{clash[0]}' is in the way of the token columns t0..t{max_len - 1}; "
                                "rename it")
        ids = encode(frame[column].to_numpy(dtype=object), state)
        tokens_frame = pd.DataFrame(ids, columns=names, index=frame.index)
        parts = []
        for c in frame.columns:
            parts.append(tokens_frame if c == column else frame[[c]])
        return pd.concat(parts, axis=1)

    return Prep(fit, apply)


def encode(texts, state: dict) -> np.ndarray:
    """Texts -> int32 [n, max_len] token ids with a fitted tokenize state."""
    index = {t: i for i, t in enumerate(state["vocabulary"])}
    max_len = state["max_len"]
    ids = np.zeros((len(texts), max_len), np.int32)
    for row, text in enumerate(texts):
        seq = [index.get(t, 1) for t in tokens(text, state["level"], state["lowercase"])[:max_len]]
        ids[row, :len(seq)] = seq
    return ids
