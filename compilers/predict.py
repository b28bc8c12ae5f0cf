"""A finished run's model on new data: `python -m dsl predict RUN_DIR data.source=...`.

    open_run(run_dir)                    the run's spec, saved preparation and summary; SpecError if
                                         the directory is not a finished run
    source_of(run, value, options)       the `data.source` item of the new data
    predict(run, source, cwd, out=PATH)  -> Predictions: one row per input row, in input order,
                                         written to PATH (.csv or .parquet) as they are made

A CSV or Parquet input is streamed (`sources.table_chunks`): CHUNK_ROWS rows at a time are
prepared, predicted and written, so that a large file is never held whole.

The run's saved preparation (RUN_DIR/prep.json: scalers, imputation values, one-hot categories,
vocabulary, image size) is re-applied as it was fitted on the run's training split; nothing is
fitted on the new rows. Two steps act differently than in training, so that every input row gets
its prediction: `drop_na` drops nothing (a missing value the run does not impute is an error
naming the rows), and a category `one_hot` did not see encodes as all zeros, with a warning. The
network is rebuilt from the run's spec and the shapes in summary.json; its parameters are those the
run reports (its final checkpoint's).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dsl.errors import DataError, SpecError, did_you_mean
from dsl.spec import Item, Spec

PATH = "data.source"
OUTPUT_SUFFIXES = (".csv", ".parquet")
TABLE, ARRAYS, IMAGES = "table", "arrays", "images"


def family(kind: str) -> str:
    """Which data path a source kind takes: image folders, npz arrays, or tables (everything else)."""
    return {"image_folder": IMAGES, "npz": ARRAYS}.get(kind, TABLE)


@dataclass
class Run:
    run_dir: Path
    spec: Spec
    prep: dict          # prep.json: {"target", "task", "features", "classes", "steps"}
    summary: dict       # summary.json

    @property
    def task(self) -> str:
        return self.prep["task"]

    @property
    def classes(self) -> list[str]:
        return list(self.prep.get("classes") or [])

    def step_state(self, kind: str) -> dict | None:
        return next((s["state"] for s in self.prep["steps"] if s["kind"] == kind), None)


@dataclass
class Predictions:
    frame: Any                      # pandas.DataFrame: the input's columns (tables), or `index` (npz)
    #                                 or `file` (images) and the known label; then `prediction` and,
    #                                 for classification, `proba_<class>` per class
    score: dict = field(default_factory=dict)   # {"accuracy"} or {"r2", "mae"}, with "rows" and
    #                                             "target"; empty when the new data has no target
    warnings: list[str] = field(default_factory=list)
    rows: int = 0                   # input rows (the frame is None when written as it went)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SpecError("", f"cannot read {path}: {e}") from None


def open_run(run_dir: Path) -> Run:
    """The run in `run_dir`, checked to hold a final model. SpecError otherwise."""
    from compilers.pipeline import spec_of_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SpecError("", f"{run_dir}: no such run directory")
    needs = [run_dir / "summary.json", run_dir / ".hydra" / "config.yaml"]
    if not all(p.is_file() for p in needs):
        raise SpecError("", f"{run_dir} is not a run directory (it needs summary.json and .hydra/config.yaml)")
    summary = _read_json(run_dir / "summary.json")
    status = summary.get("status")
    if status == "failed":
        raise SpecError("", f"{run_dir} failed ({summary.get('reason', 'no reason given')}); it has no model "
                            "to predict with")
    if not (run_dir / "prep.json").is_file():
        raise SpecError("", f"{run_dir} has no prep.json: the run stopped before its data was prepared")
    if not _has_final_model(run_dir):
        raise SpecError("", f"{run_dir} has not finished training (status: {status or 'unknown'}); there is no "
                            f"final model to predict with: finish it with python -m dsl resume {run_dir}")
    return Run(run_dir=run_dir, spec=spec_of_run(run_dir), prep=_read_json(run_dir / "prep.json"), summary=summary)


def _has_final_model(run_dir: Path) -> bool:
    """Whether the latest checkpoint holds the model the run reports (the final one does)."""
    from compilers.runs.checkpoint import Checkpoints

    if not (run_dir / "checkpoints").is_dir():   # (Checkpoints would create it)
        return False
    ck = Checkpoints(run_dir, keep=1_000_000)
    try:
        epoch = ck.latest()
        return epoch is not None and "model" in ck.restore_meta(epoch).get("parts", ())
    finally:
        ck.close()


def source_of(run: Run, value: str, options: dict) -> Item:
    """The parsed `data.source=VALUE` (with `data.options.KEY=...`). A source of the run's own kind
    keeps the run's options (a CSV's separator, a generator's size and seed) unless overridden."""
    from dsl.parse import _source as parse_source   # the one parser of data.source

    trained = run.spec.data.source
    probe = parse_source({"source": value})
    carried = {}
    if probe.kind == trained.kind and dataclasses.is_dataclass(trained.options):
        carried = {k: list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(trained.options).items() if k != "path"}
    item = parse_source({"source": value, "options": {**carried, **options}})
    if family(item.kind) != family(trained.kind):
        wants = {TABLE: "a table (a .csv or .parquet file, or a built-in data set)",
                 ARRAYS: "an .npz file", IMAGES: "a folder of images"}[family(trained.kind)]
        raise DataError(PATH, f"the run was trained on {trained.kind} data; data.source must be {wants}, "
                              f"got '{value}'")
    return item


CHUNK_ROWS = 1 << 16    # rows of a CSV or Parquet input prepared, predicted and written at a time


def predict(run: Run, source: Item, cwd: Path, *, batch: int = 2048, out: Path | None = None,
            on_rows=None) -> Predictions:
    """The run's predictions for the rows of `source` (relative paths start at `cwd`).

    A CSV or Parquet input is streamed and prepared, predicted and (with `out`) written CHUNK_ROWS
    rows at a time, so that a large file is never held whole: with `out`, the predictions go to
    that file (.csv or .parquet, written whole or not at all) and `Predictions.frame` is None."""
    import pandas as pd

    from compilers.runs.checkpoint import load_model
    from compilers.train.step import eval_batch_size

    warnings: list[str] = []
    unseen: dict = {}          # one_hot's categories not seen in training: column -> [rows, values]
    kind = family(run.spec.data.source.kind)
    if kind == TABLE:
        parts = _table_parts(run, source, cwd, unseen)
    else:
        x, frame, y_true = (_array_inputs if kind == ARRAYS else _image_inputs)(run, source, cwd)
        parts = iter([(x, frame, y_true)])
    total = 0
    writer = _Writer(out) if out is not None else None
    kept, score = [], _Score(run)
    net = forward = None
    try:
        for x, frame, y_true in parts:
            if net is None:
                net, binary_logit = _network(run, x)
                forward = _forward(net)
                params, model_state = load_model(run.run_dir)
                # the batches one pass over every row takes: a first chunk of CHUNK_ROWS means at
                # least that many rows, and eval_batch_size is the same for any number above it
                size = min(batch, eval_batch_size(len(x)))
            total += len(x)
            frame, pred = _with_predictions(run, frame, _apply(forward, params, model_state, x, size),
                                            binary_logit, warnings if total == len(x) else None)
            if writer is not None:
                writer.write(frame)
            else:
                kept.append(frame)
            if y_true is not None:
                score.add(y_true, pred)
            if on_rows is not None:
                on_rows(total)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    warnings[:0] = [_unseen_warning(c, n, new) for c, (n, new) in unseen.items()]
    frame = pd.concat(kept).reset_index(drop=True) if kept else None
    return Predictions(frame=frame, score=score.result(), warnings=warnings, rows=total)


def _unseen_warning(c: str, n: int, new: set) -> str:
    listed = ", ".join(f"'{v}'" for v in sorted(new)[:5]) + (", ..." if len(new) > 5 else "")
    return f"column '{c}' has {n} value{'s' if n != 1 else ''} not seen in training ({listed}); encoded as all zeros"


def _with_predictions(run: Run, frame, out: np.ndarray, binary_logit: bool, warnings: list[str] | None):
    """(the input frame with `prediction` and `proba_<class>` columns, the predicted class index or
    value per row); `warnings` (the first chunk's only) learns of input columns replaced."""
    frame = frame.copy()
    for name in ["prediction"] + (["proba_" + c for c in run.classes] if run.task == "classification" else []):
        if name in frame.columns:
            if warnings is not None:
                warnings.append(f"the input's column '{name}' is replaced by the model's")
            frame = frame.drop(columns=[name])
    if run.task == "classification":
        from compilers.train.metrics import probabilities

        proba = np.asarray(probabilities(out, binary_logit), dtype=np.float32)
        pred = proba.argmax(-1)
        frame["prediction"] = np.asarray(run.classes, dtype=object)[pred]
        for j, c in enumerate(run.classes):
            frame[f"proba_{c}"] = proba[:, j]
    else:
        pred = np.asarray(out[..., 0], dtype=np.float32)
        frame["prediction"] = pred
    return frame, pred


class _Writer:
    """Predictions written chunk by chunk to a temporary file beside `path`, renamed at the end."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.parquet = self.path.suffix.lower() == ".parquet"
        self.handle = self.schema = self.parquet_writer = None

    def write(self, frame) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
            if self.parquet_writer is None:
                # a text column with no value in the first chunk reads as Arrow's null type: text
                self.schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f
                                         for f in table.schema], metadata=table.schema.metadata)
                table = table.cast(self.schema)
                self.parquet_writer = pq.ParquetWriter(self.tmp, self.schema)
            self.parquet_writer.write_table(table)
        else:
            import pyarrow as pa
            import pyarrow.csv as pacsv

            first = self.handle is None
            if first:
                self.handle = open(self.tmp, "wb")
            try:   # pyarrow's writer: ~7x pandas' to_csv (1,000,000 rows of 53 columns: 6 s, not 45)
                table = pa.Table.from_pandas(frame, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                table = None          # a column of mixed Python objects: pandas writes it
            if table is None:
                self.handle.write(frame.to_csv(index=False, header=first).encode("utf-8"))
                return
            if first:   # the header as pandas writes it: names quoted only where they must be
                import csv
                import io

                line = io.StringIO()
                csv.writer(line, lineterminator="\n").writerow([str(c) for c in frame.columns])
                self.handle.write(line.getvalue().encode("utf-8"))
            pacsv.write_csv(table, self.handle, pacsv.WriteOptions(include_header=False))

    def close(self) -> None:
        if self.parquet_writer is not None:
            self.parquet_writer.close()
        if self.handle is not None:
            self.handle.close()
        self.tmp.replace(self.path)

    def abandon(self) -> None:
        try:
            if self.parquet_writer is not None:
                self.parquet_writer.close()
            if self.handle is not None:
                self.handle.close()
        finally:
            self.tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Tables

def _table_parts(run: Run, source: Item, cwd: Path, unseen: dict):
    """The (x, input frame, target column or None) of a table source: a CSV or Parquet file
    CHUNK_ROWS rows at a time (`sources.table_chunks`, streamed), any other one whole."""
    from compilers.data.load import load_source
    from compilers.data.sources import table_chunks

    streamed = table_chunks(source, cwd, run.spec.seed, CHUNK_ROWS)
    if streamed is None:
        table = load_source(source, cwd, run.spec.seed)
        shown, frames = table.description, iter([(0, table.frame.reset_index(drop=True))])
    else:
        shown, frames = streamed

    def inputs(start, frame):
        frame.columns = [str(c) for c in frame.columns]
        frame.index = range(start, start + len(frame))
        return _table_inputs(run, frame, shown, unseen)

    def parts():
        for start, frame in frames:
            try:
                x, y_true = inputs(start, frame)
            except _RowsError as e:   # name the rows of every chunk, as one pass over the file would
                for later in frames:
                    try:
                        inputs(*later)
                    except _RowsError as more:
                        if more.key == e.key:
                            e.add(more)
                    except DataError:
                        pass
                raise e from None
            yield x, frame, y_true
    return parts()


def _table_inputs(run: Run, frame, shown: str, unseen: dict):
    """-> (x [n, *input_shape], target column or None) of a frame of input rows (its index: their
    positions in the input, for errors that name rows)."""
    import pandas as pd

    from compilers.data.load import resolve_shape
    from compilers.data.prep import describe_dtype, is_numeric

    needed, renamed, encoded = _raw_features(run)
    columns = [str(c) for c in frame.columns]
    missing = [c for c in needed if c not in columns]
    if missing:
        listed = ", ".join(f"'{c}'{did_you_mean(c, [k for k in columns if k not in needed])}" for c in missing)
        what = "column" if len(missing) == 1 else "columns"
        raise DataError(PATH, f"{shown}: missing {what} the run needs: {listed}")
    inputs = {}
    for c in needed:
        series = frame[c]
        if c in encoded:             # one_hot and tokenize read any values as text
            inputs[c] = series
            continue
        if is_numeric(series):
            inputs[c] = series.astype(np.float64) if series.dtype == bool else series
            continue
        kind = describe_dtype(series)
        numbers = (pd.to_numeric(series, errors="coerce") if kind != "dates or times"
                   else pd.Series(np.nan, index=series.index))
        bad = series.notna() & numbers.isna()
        if bad.any():
            first = series[bad].iloc[0]
            at = frame.index[np.flatnonzero(bad.to_numpy())]
            raise _RowsError(("text", c), lambda n, rows, c=c, kind=kind, first=first:
                             f"{shown}: column '{c}' holds {kind} ('{first}' at data {_rows(rows)}) where the "
                             "run read numbers", len(at), at)
        inputs[c] = numbers.astype(np.float64)
    prepared = _apply_table_prep(run, pd.DataFrame(inputs), shown, unseen)
    features = list(run.prep["features"])
    _check_prepared(prepared, features, renamed, shown, run, int(frame.index[0]) if len(frame) else 0)
    text = run.step_state("tokenize") is not None
    shape = resolve_shape(run.spec.data.shape, len(features))
    if text:
        x = prepared[features].to_numpy(dtype=np.int32)
    else:
        x = prepared[features].to_numpy(dtype=np.float32)
    x = np.ascontiguousarray(x).reshape((len(frame),) + shape)
    target = run.prep["target"]
    return x, (frame[target] if target in columns else None)


def _raw_features(run: Run) -> tuple[list[str], dict[str, str], set[str]]:
    """The input columns the run reads, in order; prepared feature name -> its input column (one_hot's
    `column=category`, tokenize's t0..); the input columns one_hot or tokenize encode."""
    from compilers.data.prep import token_names

    renamed: dict[str, str] = {}
    encoded: set[str] = set()
    for step in run.prep["steps"]:
        state = step["state"]
        if step["kind"] == "one_hot":
            for c, categories in zip(state["columns"], state["categories"]):
                encoded.add(c)
                renamed.update({f"{c}={cat}": c for cat in categories})
        elif step["kind"] == "tokenize":
            encoded.add(state["column"])
            renamed.update({t: state["column"] for t in token_names(state["max_len"])})
    if run.spec.data.features is not None:
        needed = list(run.spec.data.features)
    else:
        needed = []
        for name in list(run.prep["features"]) + sorted(encoded):   # a one_hot column may have no categories
            c = renamed.get(name, name)
            if c not in needed:
                needed.append(c)
    return needed, renamed, encoded


def _apply_table_prep(run: Run, frame, shown: str, unseen: dict):
    """The run's fitted steps, in order, on the input columns (see the module's note on drop_na);
    `unseen` counts one_hot's values not seen in training, per column: [rows, values]."""
    from compilers.data.prep import label_strings
    from dsl.registry import PREP

    items, states = run.spec.data.prep, run.prep["steps"]
    if len(items) != len(states) or any(i.kind != s.get("kind") for i, s in zip(items, states)):
        raise SpecError("", f"{run.run_dir}: prep.json does not match the run's spec (.hydra/config.yaml)")
    for i, (item, saved) in enumerate(zip(items, states)):
        state = saved["state"]
        if item.kind == "drop_na":
            continue
        if item.kind == "one_hot":
            for c, categories in zip(state["columns"], state["categories"]):
                labels = label_strings(frame[c]).dropna()
                new = sorted(set(labels) - set(categories))
                if new:
                    seen = unseen.setdefault(c, [0, set()])
                    seen[0] += int(labels.isin(new).sum())
                    seen[1].update(new)
        prep = PREP.get(item.kind, f"data.prep[{i}]").build(item.options)
        try:
            frame = prep.apply(frame, state)
        except DataError as e:
            raise DataError(PATH, f"{shown}: {e.message} (the run's data.prep[{i}].{item.kind})") from None
    return frame


class _RowsError(DataError):
    """A DataError that names input rows: `render(count, rows)` makes its message from how many rows
    and which (the first 6 positions are enough); a file read in chunks adds the later chunks'."""

    def __init__(self, key: tuple, render, count: int, rows):
        self.key, self.render, self.count, self.rows = key, render, int(count), [int(r) for r in rows[:6]]
        super().__init__(PATH, render(self.count, self.rows))

    def add(self, other: "_RowsError") -> None:
        self.count += other.count
        self.rows = (self.rows + other.rows)[:6]
        self.message = self.render(self.count, self.rows)
        self.args = (self.message,)


def _rows(index) -> str:
    """'row 3' or 'rows 3, 7, 12, ...' counting data rows from 1 (`index`: positions from 0)."""
    shown = ", ".join(str(int(i) + 1) for i in index[:5]) + (", ..." if len(index) > 5 else "")
    return f"row{'s' if len(index) != 1 else ''} {shown}"


def _check_prepared(frame, features: list[str], renamed: dict, shown: str, run: Run, start: int = 0) -> None:
    """Every prepared value must be a finite number, as in training (`start`: the input position of
    the frame's first row)."""
    for name in features:
        values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        column = renamed.get(name, name)
        missing = start + np.flatnonzero(np.isnan(values))
        if missing.size:
            had = (" (drop_na dropped such rows in training; predict keeps every row)"
                   if any(i.kind == "drop_na" for i in run.spec.data.prep) else "")
            raise _RowsError(("missing", column), lambda n, rows, column=column, had=had:
                             f"{shown}: column '{column}' has {n} missing value{'s' if n != 1 else ''} "
                             f"(data {_rows(rows)}) and the run does not impute it{had}; fill them "
                             "in or leave those rows out", missing.size, missing)
        infinite = start + np.flatnonzero(~np.isfinite(values))
        if infinite.size:
            raise _RowsError(("infinite", column), lambda n, rows, column=column:
                             f"{shown}: column '{column}' has infinite values (data {_rows(rows)}); "
                             "the run was trained on finite numbers", infinite.size, infinite)


# ---------------------------------------------------------------------------------------------
# Arrays and images

def _input_shape(run: Run) -> tuple[int, ...]:
    return tuple(int(s) for s in run.summary["data"]["input_shape"])


def _array_inputs(run: Run, source: Item, cwd: Path):
    """npz: the `x` array (labels in `y` are optional here)."""
    import pandas as pd

    from compilers.data.load import apply_array_prep, load_source
    from compilers.data.sources import SourceContext, resolve

    options = source.options
    full = resolve(options.path, SourceContext(cwd=Path(cwd)))
    try:
        with np.load(full, allow_pickle=False) as archive:
            labelled = options.y_key in getattr(archive, "files", ())
    except Exception:   # not an archive: the source says why
        labelled = True
    if labelled:
        table = load_source(source, cwd, run.spec.seed)
        x, y = table.x, table.y
    else:
        x, y = _npz_examples(full, options), None
    n_features = len(run.prep["features"])
    if int(np.prod(x.shape[1:])) != n_features or (run.spec.data.shape is None and
                                                   tuple(x.shape[1:]) != _input_shape(run)):
        want = list(_input_shape(run)) if run.spec.data.shape is None else f"{n_features} values"
        raise DataError(PATH, f"{options.path}: examples of shape {list(x.shape[1:])}; the run was trained "
                              f"on {want}")
    x = apply_array_prep(run.spec.data.prep, x, run.prep["steps"])
    x = np.ascontiguousarray(x, dtype=np.float32).reshape((x.shape[0],) + _input_shape(run))
    frame = pd.DataFrame({"index": np.arange(x.shape[0])})
    target = run.prep["target"]
    if y is not None:
        frame[target] = y
    return x, frame, (frame[target] if y is not None else None)


def _npz_examples(full: Path, options) -> np.ndarray:
    from compilers.data.sources import _npz_array

    with np.load(full, allow_pickle=False) as archive:
        x = _npz_array(archive, options.x_key, "x_key", options.path)
    if x.ndim == 0 or x.dtype.kind not in "biuf":
        raise DataError(PATH, f"{options.path}: array '{options.x_key}' must hold numbers, one entry per example")
    x = x.astype(np.float32).reshape(x.shape if x.ndim > 1 else (x.shape[0], 1))
    if not np.all(np.isfinite(x)):
        raise DataError(PATH, f"{options.path}: array '{options.x_key}' has values that are NaN or infinite")
    if x.shape[0] == 0:
        raise DataError(PATH, f"{options.path}: no examples")
    return x


def _image_size(run: Run) -> tuple[tuple[int, int] | None, bool]:
    """(height, width) and grayscale the run read its images at; size None when not known."""
    state = run.step_state("image")
    if state is not None:
        return tuple(state["size"]), bool(state["grayscale"])
    options = run.spec.data.source.options
    if options.size is not None:
        return tuple(options.size), bool(options.grayscale)
    shape = _input_shape(run)
    if run.spec.data.shape is None and len(shape) == 3:
        return (shape[0], shape[1]), shape[2] == 1
    return None, bool(options.grayscale)


def _image_inputs(run: Run, source: Item, cwd: Path):
    """A folder of images: directly in it (unlabelled), or one sub-folder per class (labelled)."""
    import pandas as pd

    from compilers.data.load import apply_array_prep
    from compilers.data.prep import natural_sorted
    from compilers.data.sources import IMAGE_SUFFIXES, SourceContext, read_image, resolve_dir

    given = source.options.path
    root = resolve_dir(given, SourceContext(cwd=Path(cwd)))
    shown_root = given.rstrip("/\\") or given

    def images(folder: Path) -> list[Path]:
        return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)

    files: list[tuple[Path, str, str | None]] = [(p, p.name, None) for p in images(root)]
    if not files:   # one sub-folder per class, as for training
        for name in natural_sorted([p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]):
            files += [(p, f"{name}/{p.name}", name) for p in images(root / name)]
    if not files:
        raise DataError(PATH, f"{given}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or in its sub-folders")
    size, grayscale = _image_size(run)
    x = []
    for full, rel, _ in files:
        pixels = read_image(full, size, grayscale, f"{shown_root}/{rel}")
        size = size or pixels.shape[:2]
        x.append(pixels)
    x = np.stack(x)
    n_features = len(run.prep["features"])
    if int(np.prod(x.shape[1:])) != n_features:
        raise DataError(PATH, f"{given}: images of shape {list(x.shape[1:])} give {int(np.prod(x.shape[1:]))} "
                              f"values; the run was trained on {n_features}")
    x = apply_array_prep(run.spec.data.prep, x, run.prep["steps"])
    x = np.ascontiguousarray(x, dtype=np.float32).reshape((x.shape[0],) + _input_shape(run))
    frame = pd.DataFrame({"file": [rel for _, rel, _ in files]})
    labelled = files[0][2] is not None
    target = run.prep["target"] or "label"
    if labelled:
        frame[target] = [label for _, _, label in files]
    return x, frame, (frame[target] if labelled else None)


# ---------------------------------------------------------------------------------------------
# The model and the scores

def _network(run: Run, x: np.ndarray):
    """The run's flax module (rebuilt from its spec and saved shapes) and whether its output is one
    logit of a binary classification."""
    from compilers.plan import compile_spec

    tokens = run.step_state("tokenize")
    classes = run.classes
    plan = compile_spec(run.spec, run.task, len(classes), _input_shape(run), run.summary["data"]["sizes"],
                        input_dtype=str(x.dtype), vocab_size=len(tokens["vocabulary"]) if tokens else None)
    return plan.model.net, plan.train.binary_logit


def _forward(net):
    """The network's compiled forward pass (evaluation mode)."""
    import jax

    return jax.jit(lambda p, ms, xb: net.apply({"params": p, **ms}, xb, train=False,
                                               rngs={"dropout": jax.random.key(0)}))


def _apply(forward, params, model_state, x: np.ndarray, size: int) -> np.ndarray:
    """Model outputs [n, n_out], in batches of `size` rows (one compiled size; the last one padded)."""
    import jax
    import jax.numpy as jnp

    n = x.shape[0]
    params, model_state = jax.device_put((params, model_state))
    outs = []
    for start in range(0, n, size):
        xb = x[start:start + size]
        pad = size - xb.shape[0]
        if pad:
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
        out = forward(params, model_state, jnp.asarray(xb))
        outs.append(np.asarray(out, dtype=np.float32)[: size - pad])
    return np.concatenate(outs)


class _Score:
    """The accuracy (classification), or R² and MAE (regression), over the rows with a known target,
    added chunk by chunk: the target column is not kept (~57 MB a million string labels). Sums of
    squares are combined across chunks as Chan et al. do (exactly the one-pass figures for one chunk)."""

    def __init__(self, run: Run):
        self.classify = run.task == "classification"
        self.index = {c: j for j, c in enumerate(run.classes)} if self.classify else None
        self.name, self.n, self.right = None, 0, 0
        self.mean = self.m2 = self.sse = self.sae = 0.0

    def add(self, y_true, pred: np.ndarray) -> None:
        import pandas as pd

        from compilers.data.prep import label_strings

        self.name = str(y_true.name)
        if self.classify:
            labels = label_strings(y_true.reset_index(drop=True)).to_numpy(dtype=object)
            known = np.array([v in self.index for v in labels], dtype=bool)
            truth = np.array([self.index[v] for v in labels[known]], dtype=np.int64)
            self.n += int(known.sum())
            self.right += int((truth == pred[known]).sum())
            return
        y = pd.to_numeric(y_true.reset_index(drop=True), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(y)
        y, p = y[ok], pred[ok]
        k = len(y)
        if not k:
            return
        mean = float(y.mean())
        m2 = float(((y - mean) ** 2).sum())
        delta, total = mean - self.mean, self.n + k
        self.mean += delta * k / total
        self.m2 += m2 + delta * delta * self.n * k / total
        self.n = total
        self.sse += float(((y - p) ** 2).sum())
        self.sae += float(np.abs(y - p).sum())

    def result(self) -> dict:
        if not self.n:
            return {}
        if self.classify:
            return {"accuracy": self.right / self.n, "rows": self.n, "target": self.name}
        r2 = 1.0 - self.sse / self.m2 if self.m2 > 0 else float("nan")
        return {"r2": r2, "mae": self.sae / self.n, "rows": self.n, "target": self.name}
