"""The lean path for tables: CSV and Parquet files read straight into float32 blocks.

`load_dataset` tries this path first for `.csv` and `.parquet` sources, and for the built-in and
generated tables, which give their numbers as a matrix (`Table.matrix`: iris trains without
pandas, ~0.3 s less start-up). It applies when every feature column is numeric (numbers, booleans
without missing values, or empty) or text that a `one_hot` step encodes, and the target is the
table's own for a built-in one, and every prep step is one that acts column by column on numbers
(`standardize`, `min_max`, `clip`, `log`, `impute` with mean or median, `drop_na`) or `one_hot`
of text columns; anything else (text left as it is, a numeric step that names a text column,
`one_hot` of numbers, a Parquet dictionary (categorical) column, `tokenize`, a file pyarrow cannot
stream) returns None and the frame path in `load.py` takes the data, with its errors.

A text column is held as int32 codes (its strings numbered as they appear); `one_hot` puts one 0/1
column per category seen in the training rows in its place, computed from the codes when the
split matrices are filled (and when a later step fits on it), so the table never holds them as
float64 frames: a 1,000,000 x 50 CSV with one text column loaded within 576 MiB, not 2 GiB.

Memory (n rows, F features): the file is streamed in record batches of about BLOCK_BYTES of text
(`pyarrow.csv.open_csv`, `ParquetFile.iter_batches`, only the columns used) into float32 blocks
[rows, F] of 32 MiB (columns contiguous), so the whole table is held once as float32 (4 n F
bytes) plus one batch. Prep steps are fitted on the training rows and applied to the blocks in
place, one column at a time (float64 arithmetic, as the frame path). The split matrices are then
filled block by block, each block freed once copied, so the peak stays near 4 n F bytes. The
target column is kept in its own type, as pyarrow read it (`TargetColumn`; pandas, one column, for
rarer types such as dates or a dictionary column): a numeric file trains without importing pandas
(~40 MiB, ~0.2 s), and the raw rows the data charts draw are NumPy columns (`dataset.Columns`).

Results equal the frame path's: statistics use the same formulas (`prep.standardize_stats`, ...)
over the same rows, and a column's steps are composed and computed in float64, the result rounded
to float32 once. One difference: values are held as float32 *before* prep, so the steps start
from the float32 value (within 6e-8 relative of the file's; without prep, x is exactly the frame
path's), or, for a column far from zero relative to its spread, from its float32 distance to a
float64 mean (`_shifts`); tests/test_columnar.py compares the two paths.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from compilers.data.dataset import Columns, Dataset, Table, aligned_empty
from compilers.data.split import SPLITS
from compilers.memory import arrow_give_back, give_back
from dsl.errors import DataError
from dsl.registry import PREP

BLOCK_BYTES = 1 << 20           # bytes of CSV text per streamed batch (larger ones read slower here)
BLOCK_VALUES = 8 << 20          # float32 values per block of the table (32 MiB: always a mapping of its own)
PARQUET_BATCH_BYTES = 4 << 20   # about this many bytes of float64 values per Parquet batch
STEPS = ("standardize", "min_max", "clip", "log", "impute", "drop_na", "one_hot")


class _Fallback(Exception):
    """This data needs the frame path."""


FILES = ("csv", "parquet")       # read from files, in batches; other table sources give `Table.matrix`


def eligible(spec) -> bool:
    """Whether the spec alone allows the columnar path (the data's columns decide the rest): a CSV
    or Parquet source, or another table source (a built-in data set, which may give its numbers as
    `Table.matrix`), with prep steps this path does."""
    data = spec.data
    if data.source is None or data.source.kind in ("npz", "image_folder"):
        return False
    for item in data.prep:
        if item.kind not in STEPS:
            return False
        if item.kind == "impute" and item.options.strategy not in ("mean", "median"):
            return False
    return True


class _Columns:
    """Stands in for a frame where prep's helpers only read `.columns` (named-column checks)."""

    def __init__(self, columns):
        self.columns = list(columns)


def _numeric_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)


def _text_type(t) -> bool:
    """A column of strings: held as codes, for one_hot. (A Parquet dictionary column, a pandas
    categorical in the frame path, takes the frame path.)"""
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or \
        (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))


def _check_text(spec, features: list[str], text: set) -> None:
    """_Fallback unless every text feature is one-hot encoded and no other step names one (the
    frame path raises those errors), and one_hot names only text columns (the frame path encodes
    numbers by their printed form)."""
    covered = set()
    for item in spec.data.prep:
        named = getattr(item.options, "columns", None)
        if item.kind == "one_hot":
            if named is None:
                covered |= text
            elif any(c in features and c not in text for c in named):
                raise _Fallback
            else:
                covered |= set(named) & text
        elif item.kind != "drop_na" and named is not None and set(named) & text:
            raise _Fallback
    if text - covered:
        raise _Fallback


def _utf8(full: Path) -> bool:
    """Whether the file is UTF-8 text, read 1 MiB at a time (the frame path's check reads it whole)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(full, "rb") as f:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


class _Reader:
    """Batches of the used columns, and the column names, of a CSV or Parquet source: one file, or
    the files a glob pattern matches, read one after another."""

    def __init__(self, spec, cwd: Path):
        from compilers.data.sources import SourceContext, described, resolve_files

        source = spec.data.source
        self.kind, self.options = source.kind, source.options
        named = resolve_files(self.options.path, SourceContext(cwd=Path(cwd), seed=spec.seed))
        self.files = [full for full, _ in named]
        self.description = described(self.options.path, named)
        self.on_rows = None     # hears the rows read so far, after each batch

    def schema(self):
        """The first file's schema; _Fallback unless every file has its columns (in any order: they
        are read by name), each of the same kind (numbers, booleans, text) in every file (the frame
        path unifies or names the file)."""
        import pyarrow as pa

        try:
            schemas = [self._schema(full) for full in self.files]
        except (pa.ArrowException, OSError, ValueError):
            raise _Fallback from None
        first = schemas[0]
        kinds = {str(f.name): _kind(f.type) for f in first}
        for other in schemas[1:]:
            if sorted(str(n) for n in other.names) != sorted(kinds) or len(kinds) != len(first.names) or \
                    any(_kind(f.type) != kinds[str(f.name)] for f in other):
                raise _Fallback
        return first

    def _schema(self, full: Path):
        if self.kind == "csv":
            import pyarrow.csv as pacsv

            if full.stat().st_size <= 64 * 2**20 and not _utf8(full):
                raise _Fallback     # the frame path names the line
            with pacsv.open_csv(full, read_options=pacsv.ReadOptions(block_size=1 << 20),
                                parse_options=pacsv.ParseOptions(delimiter=self.options.sep),
                                convert_options=pacsv.ConvertOptions(strings_can_be_null=True)) as reader:
                return reader.schema
        import pyarrow.parquet as pq

        return pq.ParquetFile(full).schema_arrow

    def batches(self, columns: list[str], schema):
        """Record batches of `columns` (in that order), file after file. Numeric feature columns read
        as float64 (an integer column with a decimal further down is not an error, as in the frame
        path)."""
        import pyarrow as pa

        for full in self.files:
            if self.kind == "csv":
                import pyarrow.csv as pacsv

                types = {c: pa.float64() for c in columns[:-1]
                         if not pa.types.is_boolean(schema.field(c).type) and not _text_type(schema.field(c).type)}
                reader = pacsv.open_csv(
                    full, read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True),
                    parse_options=pacsv.ParseOptions(delimiter=self.options.sep),
                    convert_options=pacsv.ConvertOptions(strings_can_be_null=True, include_columns=columns,
                                                         column_types=types))
                with reader:
                    yield from reader
            else:
                from compilers.data.sources import parquet_batches

                rows = min(1 << 16, max(1024, PARQUET_BATCH_BYTES // (8 * len(columns))))
                yield from parquet_batches(full, rows, columns)[1]


def _kind(t) -> str:
    """A column type's kind, as this path treats it."""
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return "boolean"
    if _numeric_type(t):
        return "null" if pa.types.is_null(t) else "number"
    return "text" if _text_type(t) else str(t)


def _codes_of(column, lookup: dict) -> np.ndarray:
    """int32 codes of a batch's text column: each string's number in `lookup` (new strings added,
    numbered in order of appearance); -1 for a missing value."""
    import pyarrow.compute as pc

    column = pc.dictionary_encode(column)
    numbers = np.array([lookup.setdefault(v, len(lookup)) for v in column.dictionary.to_pylist()] + [-1], np.int32)
    return numbers[_codes(column.indices)]


def _read(spec, reader: _Reader, table: Table):
    """(features, target, blocks [rows_b, F'] float32 F-ordered (the numeric features), starts,
    the target column (`TargetColumn`, or `load.SeriesTarget` for rarer types), shift, text:
    {column: (int32 codes [n], its strings)})."""
    import pyarrow as pa

    schema = reader.schema()
    target, features = _target_and_features(spec, table, [str(n) for n in schema.names])
    if not all(_numeric_type(schema.field(c).type) or _text_type(schema.field(c).type) for c in features) or \
            any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in schema.types):
        raise _Fallback
    text = {c for c in features if _text_type(schema.field(c).type)}
    _check_text(spec, features, text)
    numeric = [j for j, c in enumerate(features) if c not in text]     # the blocks' columns
    lookups = {c: {} for c in features if c in text}
    code_chunks: dict[str, list] = {c: [] for c in lookups}
    booleans = [j for j, c in enumerate(features) if pa.types.is_boolean(schema.field(c).type)]
    # Blocks of BLOCK_VALUES values, allocated whole (so that each is its own mapping, which the OS
    # gets back the moment it is freed) and filled batch by batch; pages never written cost nothing.
    cap = max(1, BLOCK_VALUES // max(1, len(numeric)))
    blocks, starts, target_chunks = [], [0], []
    current, filled, shift = None, 0, None
    try:
        for batch in reader.batches(features + [target], schema):
            rows = batch.num_rows
            if rows == 0:
                continue
            if [str(n) for n in batch.schema.names] != features + [target]:
                raise _Fallback
            whole, columns = _matrix(batch, len(features)), None
            if whole is None:
                columns = []
                for j, c in enumerate(features):
                    column = batch.column(j)
                    if c in lookups:
                        if not _text_type(column.type):
                            raise _Fallback
                        code_chunks[c].append(_codes_of(column, lookups[c]))
                        continue
                    if not _numeric_type(column.type) or (j in booleans and column.null_count):
                        raise _Fallback      # booleans with gaps are objects in pandas: the frame path says so
                    columns.append(None if pa.types.is_null(column.type) else _numpy(column))
            if shift is None:
                shift = _shifts(columns if whole is None else list(whole.T))
                shifted = bool(shift.any())
            target_chunks.append(batch.column(len(features)))
            if pa.types.is_binary(target_chunks[-1].type) or pa.types.is_large_binary(target_chunks[-1].type):
                raise _Fallback
            pos = 0
            while pos < rows:
                if current is None or filled == cap:
                    if current is not None:
                        blocks.append(current)
                        starts.append(starts[-1] + cap)
                    current, filled = np.empty((cap, len(numeric)), np.float32, order="F"), 0
                take = min(rows - pos, cap - filled)
                if whole is not None:
                    current[filled:filled + take] = whole[pos:pos + take] - shift if shifted else whole[pos:pos + take]
                else:
                    for j, v in enumerate(columns):
                        current[filled:filled + take, j] = np.nan if v is None else \
                            (v[pos:pos + take] - shift[j] if shift[j] else v[pos:pos + take])
                filled, pos = filled + take, pos + take
            if reader.on_rows is not None:
                reader.on_rows(starts[-1] + filled)
    except (pa.ArrowException, OSError, ValueError):
        raise _Fallback from None
    if current is not None and filled:
        blocks.append(current[:filled])
        starts.append(starts[-1] + filled)
    arrow_give_back()
    if not blocks:
        raise _Fallback
    chunked = pa.chunked_array(target_chunks, type=target_chunks[0].type)
    if pa.types.is_null(chunked.type):
        chunked = chunked.cast(pa.float64())
    if TargetColumn.takes(chunked):
        column = TargetColumn.from_arrow(chunked)
    else:
        from compilers.data.load import SeriesTarget

        column = SeriesTarget(pa.table([chunked], names=[target]).to_pandas(date_as_object=False)[target])
    text = {c: (np.concatenate(code_chunks[c]) if code_chunks[c] else np.zeros(0, np.int32), list(lookups[c]))
            for c in lookups}
    return features, target, blocks, np.asarray(starts, np.int64), column, shift, text


class TargetColumn:
    """The target column in NumPy: numbers (`values`), or strings as codes into their distinct ones
    (`codes`, -1 a gap; `strings`). What `load.SeriesTarget` finds in the pandas Series the frame
    path holds (integers with gaps are float64, a float NaN is a gap), without pandas: read from an
    Arrow column's buffers (`from_arrow`: `_numpy`, `_codes`), or given by a built-in table."""

    @staticmethod
    def takes(chunked) -> bool:
        """Whether `from_arrow` reads this Arrow column (the types most files hold: integers, float32
        and float64, strings, booleans without gaps); others go through pandas."""
        import pyarrow as pa

        kind = chunked.type
        return (pa.types.is_integer(kind) or kind in (pa.float32(), pa.float64()) or pa.types.is_string(kind)
                or pa.types.is_large_string(kind) or (pa.types.is_boolean(kind) and chunked.null_count == 0))

    def __init__(self, values: np.ndarray | None = None, codes: np.ndarray | None = None,
                 strings: list[str] | None = None):
        self.values, self.codes, self.strings = values, codes, strings
        self.n = len(values if values is not None else codes)

    @classmethod
    def from_arrow(cls, chunked) -> "TargetColumn":
        import pyarrow as pa

        if pa.types.is_string(chunked.type) or pa.types.is_large_string(chunked.type):
            encoded = chunked.combine_chunks().dictionary_encode()
            return cls(codes=_codes(encoded.indices), strings=encoded.dictionary.to_pylist())
        return cls(values=_numpy(chunked))      # integers with gaps: float64, NaN

    def __len__(self) -> int:
        return self.n

    def missing(self) -> np.ndarray:
        if self.values is None:
            return self.codes < 0
        if self.values.dtype.kind == "f":
            return np.isnan(self.values)
        return np.zeros(self.n, bool)

    def inferred_task(self) -> str:
        from compilers.data.load import task_of_numbers

        if self.values is None or self.values.dtype == bool:
            return "classification"
        return task_of_numbers(self.values.astype(np.float64))

    def numeric(self) -> bool:
        return self.values is not None

    def described(self) -> str:
        return "numbers" if self.numeric() else "text"

    def labels(self):
        """As strings (`prep.CodedLabels`; a gap is None), as `prep.label_strings` names them."""
        from compilers.data.prep import CodedLabels, label_names

        if self.values is None:
            return CodedLabels(self.codes, self.strings)
        uniques, inverse = np.unique(self.values, return_inverse=True)   # NaNs (gaps) one value, last
        floating = self.values.dtype.kind == "f"
        gap = np.isnan(uniques) if floating else np.zeros(len(uniques), bool)
        inverse = inverse.reshape(-1)
        if gap.any():
            inverse = np.where(gap[inverse], -1, inverse)
        return CodedLabels(inverse, label_names(uniques[~gap], floating))

    def floats(self, dtype) -> np.ndarray:
        return self.values.astype(dtype)

    def take(self, rows) -> np.ndarray:
        """The rows' values as `Series.to_numpy()` gives them: strings with NaN for a gap."""
        if self.values is None:
            return np.array(self.strings + [np.nan], dtype=object)[self.codes[rows]]
        return self.values[rows]


def _bits(buffer, offset: int, n: int) -> np.ndarray:
    """n booleans of an Arrow bitmap (validity, or a boolean column's values) from bit `offset`."""
    bits = np.unpackbits(np.frombuffer(buffer, np.uint8), count=offset + n, bitorder="little")
    return bits[offset:].astype(bool)


def _valid(chunk) -> np.ndarray | None:
    """A chunk's validity as booleans; None when it has no gap."""
    if chunk.null_count == 0:
        return None
    bitmap = chunk.buffers()[0]
    if bitmap is None:     # nothing but gaps
        return np.zeros(len(chunk), bool)
    return _bits(bitmap, chunk.offset, len(chunk))


def _numpy(array) -> np.ndarray:
    """A numeric or boolean (no gaps) Arrow array or chunked array as NumPy, what
    `to_numpy(zero_copy_only=False)` gives (integers with gaps: float64; a gap: NaN), read from its
    buffers: pyarrow's own conversion imports pandas (~40 MiB, ~0.2 s), which a file of numbers never
    needs otherwise. Read-only when it is the array's own memory."""
    import pyarrow as pa

    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    dtype = np.dtype(array.type.to_pandas_dtype())     # NumPy's type of a numeric Arrow type (no pandas)
    gaps = any(chunk.null_count for chunk in chunks)
    out = np.float64 if gaps and dtype.kind in "iu" else dtype
    parts = []
    for chunk in chunks:
        if dtype == bool:
            values = _bits(chunk.buffers()[1], chunk.offset, len(chunk))
        else:
            values = _numpy_values(chunk)
        valid = _valid(chunk)
        if valid is not None:
            values = values.astype(out)
            values[~valid] = np.nan
        parts.append(values.astype(out, copy=False))
    if not parts:
        return np.zeros(0, out)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _codes(indices) -> np.ndarray:
    """int64 dictionary indices (an Int32Array's values) with -1 for a gap, from the buffers."""
    codes = _numpy_values(indices).astype(np.int64)
    valid = _valid(indices)
    if valid is not None:
        codes[~valid] = -1
    return codes


def _numpy_values(array) -> np.ndarray:
    """A numeric array's values (read-only, its own memory), gaps left as whatever the buffer holds there."""
    dtype = np.dtype(array.type.to_pandas_dtype())
    data = array.buffers()[1]
    if data is None:
        return np.zeros(len(array), dtype)
    return np.frombuffer(data, dtype, count=len(array), offset=array.offset * dtype.itemsize)


def _target_and_features(spec, table: Table, names: list[str]) -> tuple[str, list[str]]:
    """The spec's target and feature columns among the data's `names`; _Fallback when the names
    repeat or the spec names what is not there (the frame path raises it, after its own checks)."""
    from compilers.data.load import _features, _target

    if len(set(names)) != len(names):
        raise _Fallback
    try:
        target = _target(spec, table, names)
        return target, _features(spec, target, names)
    except DataError:
        raise _Fallback from None


def _read_matrix(spec, table: Table):
    """What `_read` gives, from a built-in table of numbers (`Table.matrix`, the target as class
    indices or numbers in `Table.y`): held as float32 blocks as a file's numbers are, so that its
    prep and results are this path's. _Fallback when the spec makes a target of a feature column."""
    target, features = _target_and_features(spec, table, list(table.columns) + [table.target])
    if target != table.target:
        raise _Fallback
    x = table.matrix[:, [table.columns.index(c) for c in features]]
    shift = _shifts([np.asarray(v, np.float64) for v in x.T])
    n, cap = x.shape[0], max(1, BLOCK_VALUES // max(1, len(features)))
    blocks = []
    for start in range(0, n, cap):
        part = x[start:start + cap]
        block = np.empty(part.shape, np.float32, order="F")
        block[:] = part - shift if shift.any() else part
        blocks.append(block)
    starts = np.array([min(k * cap, n) for k in range(len(blocks) + 1)], np.int64)
    if table.class_names is not None:
        column = TargetColumn(codes=np.asarray(table.y, np.int64), strings=list(table.class_names))
    else:
        column = TargetColumn(values=np.asarray(table.y, np.float64).reshape(-1))
    return features, target, blocks, starts, column, shift, {}


def _matrix(batch, features: int):
    """The batch's first `features` columns as one [rows, features] column-major float64 matrix
    (nulls as NaN) when all of them are float64 (a CSV's numbers are read so), else None (each
    column is then copied on its own), the values the same to the bit. One copy per batch rather
    than one per column: a 50,000 x 500 CSV (~280 rows per batch) loads in 1.6-1.8 s instead of
    1.8-2.1 s; a 1,000,000 x 50 one, bound by pyarrow's parsing, no faster."""
    import pyarrow as pa

    if not features or not _whole_batches() or any(t != pa.float64() for t in batch.schema.types[:features]):
        return None
    return np.asarray(batch.select(range(features)).to_tensor(null_to_nan=True, row_major=False))


@functools.lru_cache(maxsize=None)
def _whole_batches() -> bool:
    """RecordBatch.to_tensor takes null_to_nan and row_major from pyarrow 16 on."""
    import pyarrow as pa

    try:
        return int(pa.__version__.split(".")[0]) >= 16
    except ValueError:
        return False


SHIFT_RATIO = 4096   # a column whose values exceed this many standard deviations is held relative to its mean


def _shifts(columns) -> np.ndarray:
    """float64 [F]: what each column is held relative to. float32 keeps 24 bits of a value, so a
    column far from zero relative to its spread (1,000,000 +- 1, coordinates, ...) would lose its
    digits before `standardize`; such a column (judged on the first batch) is held as value - mean
    of that batch, and the mean added back in float64 before any step. Other columns: 0 (held as
    they are: without prep their float32 values are exactly the frame path's)."""
    out = np.zeros(len(columns))
    for j, v in enumerate(columns):
        if v is None or v.dtype == bool:
            continue
        finite = v[np.isfinite(v)]
        if finite.size > 1:
            m, sd = float(finite.mean()), float(finite.std())
            if sd > 0 and float(np.abs(finite).max()) > SHIFT_RATIO * sd:
                out[j] = m
    return out


class _Table:
    """The float32 blocks (the numeric features), the text features as codes, the steps still to
    apply to each column, and which rows are alive (not dropped by drop_na).

    Steps are composed per column and applied once (`materialize`), in float64 from the float32
    value read, so each prepared value is rounded to float32 once, as in the frame path; a step's
    fit reads the training values through the steps before it. A one-hot column (`expand`) is
    computed from its text column's codes when it is read, through its own steps."""

    def __init__(self, features, blocks, starts, n, shift=None, text=None):
        self.text = text or {}                # column -> (int32 codes [n], its strings)
        self.features, self.blocks, self.starts, self.n = list(features), blocks, starts, n
        numeric = [c for c in features if c not in self.text]
        self.shift = np.zeros(len(numeric)) if shift is None else shift
        self.col = {c: j for j, c in enumerate(numeric)}       # a numeric feature's column in the blocks
        self.onehot: dict[str, tuple[str, int]] = {}          # `column=category` -> (column, its code)
        self.chain: dict[str, list] = {c: [] for c in numeric}
        self.alive = None    # bool [n] once a drop_na step ran

    def numeric(self) -> list[str]:
        return [c for c in self.features if c not in self.text]

    def expand(self, c: str, categories: list[str]) -> None:
        """one_hot: text column c becomes one 0/1 column per category, in its place."""
        code = {v: k for k, v in enumerate(self.text[c][1])}
        names = [f"{c}={cat}" for cat in categories]
        at = self.features.index(c)
        self.features[at:at + 1] = names
        for name, cat in zip(names, categories):
            self.onehot[name] = (c, code[cat])
            self.chain[name] = []

    def _raw(self, c: str, rows) -> np.ndarray:
        """A one-hot column's values (float64 0/1) at `rows` (a slice or indices)."""
        source, k = self.onehot[c]
        return (self.text[source][0][rows] == k).astype(np.float64)

    def parts(self, rows: np.ndarray):
        """(block, local row indices) for sorted global `rows`, block by block."""
        cut = np.searchsorted(rows, self.starts)
        for b, block in enumerate(self.blocks):
            if cut[b + 1] > cut[b]:
                yield block, rows[cut[b]:cut[b + 1]] - self.starts[b]

    def live(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.alive is None else rows[self.alive[rows]]

    def _through(self, c: str, v: np.ndarray) -> np.ndarray:
        v = v.astype(np.float64)
        if c in self.col and self.shift[self.col[c]]:
            v += self.shift[self.col[c]]
        for fn in self.chain[c]:
            v = fn(v)
        return v

    def values(self, c: str, rows: np.ndarray) -> np.ndarray:
        """float64 values of column c, prepared by the steps so far, at sorted global rows."""
        if c in self.onehot:
            return self._through(c, self._raw(c, rows))
        j = self.col[c]
        parts = [block[local, j] for block, local in self.parts(rows)]
        return self._through(c, np.concatenate(parts) if parts else np.zeros(0, np.float32))

    def transform(self, c: str, fn) -> None:
        """Adds fn (float64 values -> float64 values) to column c's steps."""
        self.chain[c].append(fn)

    def missing(self, c: str) -> np.ndarray:
        """bool [n]: column c is missing (NaN) after the steps so far."""
        if c in self.text:
            return self.text[c][0] < 0
        if c in self.onehot:
            return np.isnan(self._through(c, self._raw(c, slice(None))))
        j = self.col[c]
        return np.concatenate([np.isnan(self._through(c, block[:, j])) for block in self.blocks])

    def materialize(self) -> None:
        """Applies every numeric column's steps to the blocks, in place (one float32 rounding per
        value); a one-hot column's steps are applied as it is copied out (`_assemble`)."""
        for c, fns in self.chain.items():
            if c not in self.col:
                continue
            j = self.col[c]
            if fns or self.shift[j]:
                for block in self.blocks:
                    block[:, j] = self._through(c, block[:, j])
                self.chain[c] = []
                self.shift[j] = 0.0


def _columns_of(item, options, table: _Table, ctx, frame) -> list[str]:
    from compilers.data.prep import _check_named

    if item.kind == "drop_na":
        return list(frame.columns) if options.columns is None else \
            _check_named(options.columns, frame, ctx, allow_target=True)
    if item.kind == "one_hot" and options.columns is None:
        return [c for c in table.features if c in table.text]
    return table.numeric() if options.columns is None else _check_named(options.columns, frame, ctx)


def _prep(items, table: _Table, index: dict, target: str, target_na: np.ndarray) -> list[dict]:
    """Fits each step on the live training rows and applies it to every block, in order."""
    from compilers.data.prep import PrepContext, _log_message, min_max_stats, standardize_stats

    frame = _Columns(table.features + [target])
    wanted = {name: len(rows) for name, rows in index.items()}
    states = []
    for i, item in enumerate(items):
        path = f"data.prep[{i}].{item.kind}"
        PREP.get(item.kind, f"data.prep[{i}]")
        ctx = PrepContext(target=target, path=path)
        options = item.options
        columns = _columns_of(item, options, table, ctx, frame)
        train = table.live(index["train"])
        if item.kind == "standardize":
            stats = [standardize_stats(table.values(c, train)) for c in columns]
            state = {"columns": columns, "mean": [m for m, _ in stats], "std": [s for _, s in stats]}
            for c, (m, s) in zip(columns, stats):
                table.transform(c, lambda v, m=m, s=s: (v - m) / s)
        elif item.kind == "min_max":
            stats = [min_max_stats(table.values(c, train)) for c in columns]
            state = {"columns": columns, "min": [lo for lo, _ in stats], "max": [hi for _, hi in stats]}
            for c, (lo, hi) in zip(columns, stats):
                span = hi - lo if hi > lo else 1.0
                table.transform(c, lambda v, lo=lo, span=span: (v - lo) / span)
        elif item.kind == "clip":
            state = {"columns": columns, "min": options.min, "max": options.max}
            low = -np.inf if options.min is None else options.min
            high = np.inf if options.max is None else options.max
            for c in columns:
                table.transform(c, lambda v, low=low, high=high: np.clip(v, low, high))
        elif item.kind == "log":
            offset = float(options.offset)
            for name in SPLITS:     # the frame path: fitted on train, then applied to each split
                rows = table.live(index[name])
                for c in columns:
                    v = table.values(c, rows) + offset
                    bad = v[v <= 0]
                    if bad.size:
                        raise DataError(path, _log_message(c, bad, offset))
            state = {"columns": columns, "offset": offset}
            for c in columns:
                table.transform(c, lambda v, offset=offset: np.log(v + offset))
        elif item.kind == "one_hot":
            categories = [_training_categories(c, *table.text[c], train, options, path) for c in columns]
            state = {"columns": columns, "categories": categories}
            for c, seen in zip(columns, categories):
                table.expand(c, seen)
            frame = _Columns(table.features + [target])
        elif item.kind == "impute":
            values = []
            for c in columns:
                v = table.values(c, train)
                present = v[np.isfinite(v)]
                if present.size == 0:
                    if np.isnan(v).any():
                        raise DataError(path, f"column '{c}' has no values in the training split to impute from")
                    values.append(None)
                    continue
                values.append(float(np.mean(present)) if options.strategy == "mean" else float(np.median(present)))
            state = {"columns": columns, "values": values}
            for c, value in zip(columns, values):
                if value is not None:
                    table.transform(c, lambda v, value=value: np.where(np.isnan(v), value, v))
        else:   # drop_na
            state = {"columns": columns}
            drop = np.zeros(table.n, bool)
            for c in columns:
                if c == target:
                    drop |= target_na
                else:
                    drop |= table.missing(c)
            table.alive = ~drop if table.alive is None else table.alive & ~drop
            for name in SPLITS:
                if wanted[name] > 0 and len(table.live(index[name])) == 0:
                    raise DataError(path, f"{item.kind} left no rows in the {name} split")
        states.append({"kind": item.kind, "state": state})
    return states


def _training_categories(c: str, codes: np.ndarray, strings: list[str], train: np.ndarray, options, path: str):
    """one_hot: the categories of text column c (int32 codes into its strings) in the training rows."""
    from compilers.data.prep import one_hot_categories

    present = np.unique(codes[train])
    return one_hot_categories(c, {strings[k] for k in present[present >= 0]}, options, path)


def _check_features(table: _Table, index: dict) -> None:
    """The frame path's `check_features`, split by split: no missing or infinite values left."""
    for name in SPLITS:
        rows = table.live(index[name])
        where = f" in the {name} split"
        missing = np.zeros(len(table.features), np.int64)
        infinite = np.zeros(len(table.features), bool)
        at = {c: p for p, c in enumerate(table.features)}
        for block, local in table.parts(rows):
            for c, j in table.col.items():
                v = block[:, j][local]
                finite = np.isfinite(v)
                if not finite.all():
                    missing[at[c]] += int(np.isnan(v).sum())
                    infinite[at[c]] |= bool(np.isinf(v).any())
        for c in table.onehot:
            if c in at:
                v = table.values(c, rows)
                missing[at[c]], infinite[at[c]] = int(np.isnan(v).sum()), bool(np.isinf(v).any())
        for j, c in enumerate(table.features):
            if missing[j]:
                raise DataError("data.features", f"column '{c}' has {missing[j]} missing value"
                                                 f"{'s' if missing[j] != 1 else ''}{where}; add `impute` or "
                                                 "`drop_na` to data.prep")
            if infinite[j]:
                raise DataError("data.features", f"column '{c}' has infinite values{where}; "
                                                 "add `clip` to data.prep or leave it out of data.features")


def _assemble(table: _Table, index: dict) -> dict[str, np.ndarray]:
    """The split matrices [n_split, F] (64-byte aligned float32), filled block by block; each block
    is freed once its rows are copied. Column by column: a block's columns are contiguous and the
    matrices' rows are, and NumPy gathers rows across that change of layout through a temporary
    of the result's size (~30 MiB a block); one column at a time it writes straight into place."""
    x = {name: aligned_empty((len(rows), len(table.features)), np.float32) for name, rows in index.items()}
    cuts = {name: np.searchsorted(rows, table.starts) for name, rows in index.items()}
    at = {c: p for p, c in enumerate(table.features)}
    place = [(j, at[c]) for c, j in table.col.items()]       # block column -> matrix column
    for b in range(len(table.blocks)):
        block = table.blocks[b]
        for name, rows in index.items():
            lo, hi = cuts[name][b], cuts[name][b + 1]
            if hi > lo:
                local, out = rows[lo:hi] - table.starts[b], x[name][lo:hi]
                for j, p in place:
                    np.take(block[:, j], local, out=out[:, p], mode="clip")   # unbuffered
        table.blocks[b] = block = None
    for c in table.features:
        if c in table.onehot:
            for name, rows in index.items():
                x[name][:, at[c]] = table.values(c, rows)
    return x


def _raw_sample(features, target, blocks, starts, column, shift, text) -> Columns:
    """The raw rows the data charts draw (`load.sample_rows`), numbers as the file wrote them
    (the shortest decimal that reads back as the same float32), text as it is (NaN for a gap, as
    pandas gives it)."""
    from compilers.data.load import sample_rows

    n = int(starts[-1])
    rows = sample_rows(n)
    numeric = [c for c in features if c not in text]
    values = np.concatenate([block[local] for block, local in _Table(numeric, blocks, starts, n).parts(rows)])
    columns = {}
    for c in features:
        if c in text:
            codes, strings = text[c]
            columns[c] = np.array([strings[k] if k >= 0 else np.nan for k in codes[rows]], dtype=object)
        else:
            j = numeric.index(c)
            columns[c] = values[:, j].astype(str).astype(np.float64) + shift[j]
    columns[target] = column.take(rows)
    return Columns(features + [target], columns, rows)


SHAPE_STEPS = ("standardize", "min_max", "clip", "log", "impute", "one_hot")   # steps that keep the rows


def stand_in(spec, cwd: Path) -> Dataset | None:
    """What `load_columnar` would give for a CSV or Parquet source but for the features' values,
    from the files' header, target column and text columns alone: the same task, class names,
    feature names (`one_hot`'s categories are those of the training rows, as in a load), input
    shape, split sizes and labels (the split is drawn from the labels, as in a load), and x as
    zeros of each split's shape that hold no memory (`dataset.zero_pages`). What a run's programs
    depend on (compilers.train.precompile). None where the shapes need more than that (a step that
    drops rows, `drop_na`), where the columnar path would not take the data (text no `one_hot`
    encodes, a target of a rarer type), and for bad data (the load that follows reports it)."""
    from compilers.data.dataset import zero_pages
    from compilers.data.load import classes_and_split, resolve_shape
    from compilers.data.prep import class_codes

    data = spec.data
    if not eligible(spec) or data.source.kind not in FILES or any(i.kind not in SHAPE_STEPS for i in data.prep):
        return None
    import pyarrow as pa

    try:
        reader = _Reader(spec, cwd)
        table = Table(description=reader.description)
        schema = reader.schema()
        target, features = _target_and_features(spec, table, [str(n) for n in schema.names])
        if not features or not all(_numeric_type(schema.field(c).type) or _text_type(schema.field(c).type)
                                   for c in features):
            return None
        text = [c for c in features if _text_type(schema.field(c).type)]
        _check_text(spec, features, set(text))
        lookups: dict[str, dict] = {c: {} for c in text}
        codes: dict[str, list] = {c: [] for c in text}
        chunks = []
        for batch in reader.batches(text + [target], schema):
            if batch.num_rows:
                for j, c in enumerate(text):
                    codes[c].append(_codes_of(batch.column(j), lookups[c]))
                chunks.append(batch.column(len(text)))
        if not chunks:
            return None
        chunked = pa.chunked_array(chunks, type=chunks[0].type)
        if not TargetColumn.takes(chunked):
            return None
        column = TargetColumn.from_arrow(chunked)
        task, labels, class_names, index = classes_and_split(spec, table, target, column, features + [target])
        for i, item in enumerate(data.prep):    # one_hot: a column per category of the training rows
            if item.kind != "one_hot":
                continue
            named = item.options.columns
            columns = [c for c in features if c in lookups] if named is None else list(named)
            if any(c not in lookups or c not in features for c in columns):
                return None
            for c in columns:
                seen = _training_categories(c, np.concatenate(codes[c]) if codes[c] else np.zeros(0, np.int32),
                                            list(lookups[c]), index["train"], item.options, f"data.prep[{i}].one_hot")
                at = features.index(c)
                features[at:at + 1] = [f"{c}={cat}" for cat in seen]
        input_shape = resolve_shape(data.shape, len(features))
    except Exception:   # (DataError, SpecError, _Fallback, pyarrow's): the load says what is wrong
        return None
    finally:
        arrow_give_back()
    codes_y = class_codes(labels, class_names) if task == "classification" else column.floats(np.float32)
    x = {name: zero_pages((len(index[name]),) + input_shape) for name in SPLITS}
    y = {name: codes_y[index[name]] for name in SPLITS}
    return Dataset(task=task, feature_names=list(features), class_names=class_names, x=x, y=y,
                   input_shape=input_shape, target=target, description=table.description)


def load_columnar(spec, cwd: Path, on_rows=None, table: Table | None = None) -> Dataset | None:
    """The Dataset of a numeric CSV or Parquet source, or of a built-in table of numbers (`table`,
    built by the caller with `load_source(..., frame=False)`), or None when the frame path must load
    it. `on_rows(n)`, when given, hears how many rows are read so far, after each batch."""
    dataset = _load(spec, cwd, on_rows, table)
    if dataset is not None:
        arrow_give_back()   # ~20 MiB more than the release after reading
        give_back()   # the target's label strings, split indices and pandas temporaries, now freed (~25 MiB)
    return dataset


def _load(spec, cwd: Path, on_rows=None, given: Table | None = None) -> Dataset | None:
    from compilers.data.load import classes_and_split, resolve_shape
    from compilers.data.prep import class_codes

    if not eligible(spec):
        return None
    data = spec.data
    try:
        if data.source.kind in FILES:
            reader = _Reader(spec, cwd)
            reader.on_rows = on_rows
            table = Table(description=reader.description)
            features, target, blocks, starts, column, shift, text = _read(spec, reader, table)
        elif given is not None and given.matrix is not None and len(given.matrix):
            table = given
            features, target, blocks, starts, column, shift, text = _read_matrix(spec, table)
        else:
            return None
    except _Fallback:
        return None
    n = int(starts[-1])
    raw = _raw_sample(features, target, blocks, starts, column, shift, text)
    task, labels, class_names, index = classes_and_split(spec, table, target, column, features + [target])
    tab = _Table(features, blocks, starts, n, shift, text)
    del blocks
    target_na = column.missing()
    states = _prep(data.prep, tab, index, target, target_na)
    tab.materialize()
    _check_features(tab, index)
    index = {name: tab.live(rows) for name, rows in index.items()}
    for name in SPLITS:
        if target_na[index[name]].any():
            raise DataError("data.target", f"rows without a target are left in the {name} split; add "
                                           f"`drop_na: {{columns: [{target}]}}` to data.prep")
    features = tab.features            # after one_hot
    input_shape = resolve_shape(data.shape, len(features))
    x = _assemble(tab, index)
    y = {}
    codes = class_codes(labels, class_names) if task == "classification" else column.floats(np.float32)
    for name in SPLITS:
        x[name] = x[name].reshape((len(index[name]),) + input_shape)
        y[name] = codes[index[name]]
    n_rows = sum(len(v) for v in index.values())
    what = f"{len(class_names)} classes" if task == "classification" else f"regression on '{target}'"
    return Dataset(task=task, feature_names=list(features), class_names=class_names, x=x, y=y,
                   input_shape=input_shape, raw=raw, target=target, prep_state=states,
                   description=f"{table.description}: {n_rows} rows, {len(features)} features, {what}")
