"""A finished run's model on new data: `python -m dsl predict RUN_DIR data.source=...`.

    open_run(run_dir)                    the run's spec, saved preparation and summary; SpecError if
                                         the directory is not a finished run
    source_of(run, value, options)       the `data.source` item of the new data
    predict(run, source, cwd)            -> Predictions: one row per input row, in input order
    write_predictions(frame, path)       .csv or .parquet

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


def predict(run: Run, source: Item, cwd: Path, *, batch: int = 2048) -> Predictions:
    """The run's predictions for the rows of `source` (relative paths start at `cwd`)."""
    from compilers.runs.checkpoint import load_model

    warnings: list[str] = []
    kind = family(run.spec.data.source.kind)
    if kind == TABLE:
        x, frame, y_true = _table_inputs(run, source, cwd, warnings)
    elif kind == ARRAYS:
        x, frame, y_true = _array_inputs(run, source, cwd)
    else:
        x, frame, y_true = _image_inputs(run, source, cwd)
    net, binary_logit = _network(run, x)
    params, model_state = load_model(run.run_dir)
    out = _apply(net, params, model_state, x, batch)
    frame = frame.copy()
    for name in ["prediction"] + (["proba_" + c for c in run.classes] if run.task == "classification" else []):
        if name in frame.columns:
            warnings.append(f"the input's column '{name}' is replaced by the model's")
            frame = frame.drop(columns=[name])
    score: dict = {}
    if run.task == "classification":
        from compilers.train.metrics import probabilities

        proba = np.asarray(probabilities(out, binary_logit), dtype=np.float32)
        pred = proba.argmax(-1)
        frame["prediction"] = np.asarray(run.classes, dtype=object)[pred]
        for j, c in enumerate(run.classes):
            frame[f"proba_{c}"] = proba[:, j]
        if y_true is not None:
            score = _accuracy(run, y_true, pred)
    else:
        pred = np.asarray(out[..., 0], dtype=np.float32)
        frame["prediction"] = pred
        if y_true is not None:
            score = _regression_score(run, y_true, pred)
    return Predictions(frame=frame.reset_index(drop=True), score=score, warnings=warnings)


def write_predictions(frame, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# Tables

def _table_inputs(run: Run, source: Item, cwd: Path, warnings: list[str]):
    """-> (x [n, *input_shape], the input frame, target column or None)."""
    import pandas as pd

    from compilers.data.load import load_source, resolve_shape
    from compilers.data.prep import describe_dtype, is_numeric

    table = load_source(source, cwd, run.spec.seed)
    frame = table.frame.reset_index(drop=True)
    shown = table.description
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
            rows = _rows(np.flatnonzero(bad.to_numpy()))
            first = series[bad].iloc[0]
            raise DataError(PATH, f"{shown}: column '{c}' holds {kind} ('{first}' at data {rows}) where the "
                                  "run read numbers")
        inputs[c] = numbers.astype(np.float64)
    prepared = _apply_table_prep(run, pd.DataFrame(inputs), shown, warnings)
    features = list(run.prep["features"])
    _check_prepared(prepared, features, renamed, shown, run)
    text = run.step_state("tokenize") is not None
    shape = resolve_shape(run.spec.data.shape, len(features))
    if text:
        x = prepared[features].to_numpy(dtype=np.int32)
    else:
        x = prepared[features].to_numpy(dtype=np.float32)
    x = np.ascontiguousarray(x).reshape((len(frame),) + shape)
    target = run.prep["target"]
    return x, frame, (frame[target] if target in columns else None)


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


def _apply_table_prep(run: Run, frame, shown: str, warnings: list[str]):
    """The run's fitted steps, in order, on the input columns (see the module's note on drop_na)."""
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
                    n = int(labels.isin(new).sum())
                    listed = ", ".join(f"'{v}'" for v in new[:5]) + (", ..." if len(new) > 5 else "")
                    warnings.append(f"column '{c}' has {n} value{'s' if n != 1 else ''} not seen in training "
                                    f"({listed}); encoded as all zeros")
        prep = PREP.get(item.kind, f"data.prep[{i}]").build(item.options)
        try:
            frame = prep.apply(frame, state)
        except DataError as e:
            raise DataError(PATH, f"{shown}: {e.message} (the run's data.prep[{i}].{item.kind})") from None
    return frame


def _rows(index: np.ndarray) -> str:
    """'row 3' or 'rows 3, 7, 12, ...' counting data rows from 1."""
    shown = ", ".join(str(int(i) + 1) for i in index[:5]) + (", ..." if len(index) > 5 else "")
    return f"row{'s' if len(index) != 1 else ''} {shown}"


def _check_prepared(frame, features: list[str], renamed: dict, shown: str, run: Run) -> None:
    """Every prepared value must be a finite number, as in training."""
    for name in features:
        values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        column = renamed.get(name, name)
        missing = np.flatnonzero(np.isnan(values))
        if missing.size:
            n = missing.size
            had = (" (drop_na dropped such rows in training; predict keeps every row)"
                   if any(i.kind == "drop_na" for i in run.spec.data.prep) else "")
            raise DataError(PATH, f"{shown}: column '{column}' has {n} missing value{'s' if n != 1 else ''} "
                                  f"(data {_rows(missing)}) and the run does not impute it{had}; fill them "
                                  "in or leave those rows out")
        infinite = np.flatnonzero(~np.isfinite(values))
        if infinite.size:
            raise DataError(PATH, f"{shown}: column '{column}' has infinite values (data {_rows(infinite)}); "
                                  "the run was trained on finite numbers")


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


def _apply(net, params, model_state, x: np.ndarray, batch: int) -> np.ndarray:
    """Model outputs [n, n_out], in batches of one compiled size (the last one padded)."""
    import jax
    import jax.numpy as jnp

    from compilers.train.step import eval_batch_size

    n = x.shape[0]
    size = min(batch, eval_batch_size(n))
    forward = jax.jit(lambda p, ms, xb: net.apply({"params": p, **ms}, xb, train=False,
                                                  rngs={"dropout": jax.random.key(0)}))
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


def _accuracy(run: Run, y_true, pred: np.ndarray) -> dict:
    from compilers.data.prep import label_strings

    labels = label_strings(y_true.reset_index(drop=True)).to_numpy(dtype=object)
    index = {c: j for j, c in enumerate(run.classes)}
    known = np.array([v in index for v in labels], dtype=bool)
    if not known.any():
        return {}
    truth = np.array([index[v] for v in labels[known]])
    return {"accuracy": float(np.mean(truth == pred[known])), "rows": int(known.sum()),
            "target": str(y_true.name)}


def _regression_score(run: Run, y_true, pred: np.ndarray) -> dict:
    import pandas as pd

    y = pd.to_numeric(y_true.reset_index(drop=True), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(y)
    if not ok.any():
        return {}
    y, p = y[ok], pred[ok]
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - p) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {"r2": r2, "mae": float(np.abs(y - p).mean()), "rows": int(ok.sum()), "target": str(y_true.name)}
