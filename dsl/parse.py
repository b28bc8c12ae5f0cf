"""YAML/DictConfig -> Spec. Every spec error is raised here, with its key path (and line).

Parse once, at the edge: nothing past this module sees a DictConfig or a raw dict.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from dsl import registry as reg
from dsl.errors import SpecError, did_you_mean, unknown
from dsl.source_map import SourceMap
from dsl.spec import Checkpoint, Data, EarlyStopping, Item, Model, Report, Spec, Split, Train

_NONE = type(None)
# Keys Hydra owns at the top of a spec; they are not part of the language.
HYDRA_KEYS = ("hydra", "defaults")
FILE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
FOLDER_SOURCE = "image_folder"   # a path ending in "/" or naming an existing folder


def _err(path: str, message: str) -> SpecError:
    return SpecError(path, message)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _range_message(name: str, value: Any, meta: dict, is_int: bool) -> str | None:
    ge, gt, le, lt = meta.get("ge"), meta.get("gt"), meta.get("le"), meta.get("lt")
    bad = ((ge is not None and value < ge) or (gt is not None and value <= gt)
           or (le is not None and value > le) or (lt is not None and value >= lt))
    if isinstance(value, float) and not math.isfinite(value):
        bad = True
    if not bad:
        return None
    if is_int and ((le is not None and value > le) or (lt is not None and value >= lt)):
        return f"{name} must be at most {le if le is not None else lt - 1}, got {_show(value)}"
    if is_int and (gt == 0 or ge == 1):   # below the lower bound: the upper one was checked above
        want = "a positive integer"
    elif is_int and ge == 0:
        want = "a non-negative integer"
    else:
        parts = []
        if ge is not None:
            parts.append(f">= {ge}")
        if gt is not None:
            parts.append(f"> {gt}")
        if le is not None:
            parts.append(f"<= {le}")
        if lt is not None:
            parts.append(f"< {lt}")
        want = ("a finite number " + " and ".join(parts)).strip() if parts else "a finite number"
    return f"{name} must be {want}, got {_show(value)}"


def convert(value: Any, tp: Any, path: str, name: str, meta: dict | None = None) -> Any:
    """Checks and converts one YAML value to the annotated type; errors name `name`."""
    meta = meta or {}
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        args = get_args(tp)
        if value is None:
            if _NONE in args:
                return None
            raise _err(path, f"{name} must be set, got null")
        rest = [a for a in args if a is not _NONE]
        return convert(value, rest[0], path, name, meta)
    if value is None:
        raise _err(path, f"{name} must be set, got null")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            hint = did_you_mean(str(value), [str(c) for c in choices])
            raise _err(path, f"{name} must be one of {', '.join(map(str, choices))}, got {_show(value)}{hint}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _err(path, f"{name} must be true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            want = "a positive integer" if meta.get("gt") == 0 or meta.get("ge") == 1 else "an integer"
            raise _err(path, f"{name} must be {want}, got {_show(value)}")
        if not -2**63 <= value < 2**63:  # numpy and JAX take nothing larger
            raise _err(path, f"{name} must fit in a 64-bit integer, got {_show(value)}")
        problem = _range_message(name, value, meta, True)
        if problem:
            raise _err(path, problem)
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _err(path, f"{name} must be a number, got {_show(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _err(path, f"{name} must be a number, got {_show(value)}")
        try:
            value = float(value)
        except OverflowError:  # an int past the float range: YAML reads any number of digits
            raise _err(path, f"{name} must be a finite number, got {_show(value)}") from None
        problem = _range_message(name, value, meta, False)
        if problem:
            raise _err(path, problem)
        return value
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _err(path, f"{name} must be a string, got {_show(value)}")
        value = str(value)
        choices = meta.get("choices")
        if choices is not None:
            choices = list(choices() if callable(choices) else choices)
            if value not in choices:
                raise _err(path, unknown(meta.get("noun") or name, value, choices))
        return value
    if origin is tuple:
        (inner, *_rest) = get_args(tp)
        if isinstance(value, (str, int, float, bool)) and inner is not Item:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise _err(path, f"{name} must be a list, got {_show(value)}")
        return tuple(convert(v, inner, f"{path}[{i}]", f"{name}[{i}]", meta) for i, v in enumerate(value))
    if tp is dict:
        if not isinstance(value, dict):
            raise _err(path, f"{name} must be a mapping, got {_show(value)}")
        return value
    if tp is Item:
        return parse_item(value, reg.FAMILIES[meta["registry"]], path)
    if dataclasses.is_dataclass(tp):
        return parse_options(tp, value, path)
    raise TypeError(f"no converter for {tp}")  # a bug in a registered options class


def parse_options(cls: type, raw: Any, path: str, *, what: str = "option", skip_none: tuple = (),
                  short: str | None = None) -> Any:
    """A mapping -> an instance of the options dataclass `cls`; unknown keys get did-you-mean.

    `short` names the option the short form `kind: value` set (nested items then sit at `kind[i]`).

    `skip_none` lists keys that may be present as null without being options of `cls` (the
    language defaults compose every optimizer's options beneath a spec, as null).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _err(path, f"expected a mapping of {what}s, got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "file"}
    hints = _hints(cls)
    values = {}
    for key, value in raw.items():
        key = str(key)
        sub = f"{path}.{key}" if path else key
        if key not in fields:
            if value is None and key in skip_none:
                continue
            raise _err(sub, unknown(what, key, fields))
        if value is None and key in skip_none:
            continue
        field = fields[key]
        # A bad value is reported at the owner: `model.layers[2].dense: features must be ...`;
        # nested items keep their own path: `model.layers[2].repeat.layers[0]`.
        owner = sub if field.metadata.get("registry") and key != short else (path or sub)
        values[key] = convert(value, hints[key], owner, key, dict(field.metadata))
    try:
        return cls(**values)
    except TypeError as e:  # a required option is missing
        missing = [f for f in fields if f not in values and fields[f].default is dataclasses.MISSING
                   and fields[f].default_factory is dataclasses.MISSING]
        if missing:
            raise _err(path, f"missing required {what} '{missing[0]}'") from None
        raise _err(path, str(e)) from None
    except ValueError as e:  # a check in __post_init__
        raise _err(path, str(e)) from None


def parse_item(raw: Any, registry: reg.Registry, path: str) -> Item:
    """`kind`, `kind: arg` or `kind: {options}` -> Item."""
    if isinstance(raw, str):
        kind, arg, form = raw, None, "bare"
    elif isinstance(raw, dict) and len(raw) == 1:
        ((kind, arg),) = raw.items()
        kind, form = str(kind), "keyed"
    elif isinstance(raw, dict):
        keys = ", ".join(map(str, raw))
        raise _err(path, f"expected one {registry.noun} per item (`kind`, `kind: value` or "
                         f"`kind: {{options}}`), got several keys: {keys}; start a new '- ' item for each")
    else:
        raise _err(path, f"expected a {registry.noun} (`kind`, `kind: value` or `kind: {{options}}`), got {_show(raw)}")
    entry = registry.get(kind, path)
    sub = f"{path}.{kind}"
    if form == "keyed" and isinstance(arg, dict):
        options = parse_options(entry.options, arg, sub)
    elif form == "keyed" and arg is not None:
        if entry.positional is None:
            raise _err(sub, f"'{kind}' takes no single value; write `{kind}: {{option: value}}`"
                            f" with options {', '.join(f.name for f in entry.fields()) or '(none)'}")
        options = parse_options(entry.options, {entry.positional: arg}, sub, short=entry.positional)
    else:
        options = parse_options(entry.options, {}, sub)
    return Item(kind, options, path)


def parse_named(raw: Any, registry: reg.Registry, path: str, default: str) -> Item:
    """`{name: adam, lr: 1e-3, ...}` (or a bare name) -> Item; null options are skipped."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _err(path, f"expected a mapping with a 'name', got {_show(raw)}")
    raw = dict(raw)
    name = raw.pop("name", None)
    name = default if name is None else name
    entry = registry.get(str(name), f"{path}.name")
    every = {f.name for e in registry for f in e.fields()}
    return Item(str(name), parse_options(entry.options, raw, path, skip_none=tuple(every)), path)


def _section(raw: dict, key: str, path: str) -> dict:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(path, f"expected a mapping, got {_show(value)}")
    return value


def _check_keys(raw: dict, cls: type, path: str, extra: tuple = ()) -> None:
    names = [f.name for f in dataclasses.fields(cls) if f.name != "file"] + list(extra)
    for key in raw:
        sub = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise _err(sub, unknown("key", str(key), [n for n in names if n not in HYDRA_KEYS]))


def _source(raw: dict) -> Item:
    source = raw.get("source")
    options = raw.get("options") or {}
    if source is None or source == "???":
        raise _err("data.source", "required: a built-in data set name "
                   f"({', '.join(reg.SOURCES.names()[:6])}, ...), a path to a .csv/.parquet/.npz file "
                   "or a folder of images")
    if not isinstance(source, str):
        raise _err("data.source", f"must be a data set name or a file path, got {_show(source)}")
    if not isinstance(options, dict):
        raise _err("data.options", f"expected a mapping, got {_show(options)}")
    # The language defaults compose every source's options beneath a spec, as null.
    every = tuple({f.name for e in reg.SOURCES for f in e.fields()})
    if source in reg.SOURCES and not reg.SOURCES.get(source).meta.get("file"):
        entry = reg.SOURCES.get(source)
        return Item(source, parse_options(entry.options, options, "data.options", skip_none=every), "data.source")
    suffix = Path(source).suffix.lower()
    folder = source.endswith(("/", "\\")) or Path(source).expanduser().is_dir()
    if folder or suffix in FILE_SUFFIXES:
        kind = FOLDER_SOURCE if folder else FILE_SUFFIXES[suffix]
        pattern = glob.has_magic(source) and not Path(source).expanduser().exists()   # as sources.resolve_files
        if pattern and kind not in ("csv", "parquet"):
            raise _err("data.source", f"'{source}' is a pattern of {kind} files: a pattern of files may name "
                       f".csv or .parquet files only (a table in several files)")
        entry = reg.SOURCES.get(kind)
        return Item(kind, parse_options(entry.options, {**options, "path": source}, "data.options",
                                        skip_none=every), "data.source")
    builtins = [e.name for e in reg.SOURCES if not e.meta.get("file")]
    if "/" in source or suffix:
        raise _err("data.source", f"cannot read '{source}': expected a .csv, .parquet or .npz file (or a pattern "
                   f"of .csv or .parquet files), a folder of images (one sub-folder per class), or a built-in "
                   f"data set ({', '.join(builtins)})")
    raise _err("data.source", unknown("data source", source, builtins))


def parse_data(raw: dict, seed: int) -> Data:
    _check_keys(raw, Data, "data", extra=("options",))
    hints = _hints(Data)
    meta = {f.name: dict(f.metadata) for f in dataclasses.fields(Data)}
    out = {"source": _source(raw)}
    for key in ("target", "features", "shape"):
        if raw.get(key) is not None:
            out[key] = convert(raw[key], hints[key], f"data.{key}", key, meta[key])
    if isinstance(out.get("features"), tuple) and not out["features"]:
        raise _err("data.features", "features must name at least one column, or be null for all")
    for i, n in enumerate(out.get("shape") or ()):
        if n < 1 and n != -1:
            raise _err(f"data.shape[{i}]", f"shape entries must be positive (or -1 once), got {n}")
    prep = raw.get("prep") or []
    if not isinstance(prep, list):
        raise _err("data.prep", f"expected a list of prep steps, got {_show(prep)}")
    out["prep"] = tuple(parse_item(p, reg.PREP, f"data.prep[{i}]") for i, p in enumerate(prep))
    out["split"] = parse_options(Split, _section(raw, "split", "data.split"), "data.split")
    split = out["split"]
    if split.test + split.val >= 1.0:
        raise _err("data.split", f"test + val must leave rows to train on, got {split.test} + {split.val}")
    return Data(**out)


def parse_model(raw: dict) -> Model:
    _check_keys(raw, Model, "model")
    layers = raw.get("layers")
    if layers is None or layers == "???":
        raise _err("model.layers", "required: a list of layers, e.g. [{dense: 64}, relu]")
    if not isinstance(layers, list):
        raise _err("model.layers", f"expected a list of layers, got {_show(layers)}")
    parsed = tuple(parse_item(x, reg.LAYERS, f"model.layers[{i}]") for i, x in enumerate(layers))
    head = convert(raw.get("head", "auto"), _hints(Model)["head"], "model.head", "head")
    if not parsed and head == "none":
        raise _err("model.layers", "an empty model with head: none has no output")
    return Model(parsed, head)


def parse_train(raw: dict) -> Train:
    _check_keys(raw, Train, "train")
    hints = _hints(Train)
    meta = {f.name: dict(f.metadata) for f in dataclasses.fields(Train)}
    out: dict[str, Any] = {}
    for key in ("epochs", "batch_size", "precision", "loop", "feed", "chunk_rows"):
        if key in raw:
            out[key] = convert(raw[key], hints[key], f"train.{key}", key, meta[key])
    loss = raw.get("loss", "auto")
    if loss is None:
        raise _err("train.loss", "loss must be set, got null (use auto)")
    if loss != "auto":
        reg.LOSSES.get(str(loss), "train.loss")
    out["loss"] = str(loss)
    out["optimizer"] = parse_named(raw.get("optimizer"), reg.OPTIMIZERS, "train.optimizer", "adam")
    out["schedule"] = parse_named(raw.get("schedule"), reg.SCHEDULES, "train.schedule", "constant")
    metrics = raw.get("metrics", "auto")
    if metrics is None:
        metrics = []
    if metrics != "auto":
        if isinstance(metrics, str):
            metrics = [metrics]
        if not isinstance(metrics, list):
            raise _err("train.metrics", f"expected auto or a list of metric names, got {_show(metrics)}")
        for i, m in enumerate(metrics):
            reg.METRICS.get(str(m), f"train.metrics[{i}]")
        metrics = tuple(str(m) for m in metrics)
    out["metrics"] = metrics
    es = raw.get("early_stopping", {})
    out["early_stopping"] = None if es is None else parse_options(EarlyStopping, es, "train.early_stopping")
    out["checkpoint"] = parse_options(Checkpoint, _section(raw, "checkpoint", "train.checkpoint"), "train.checkpoint")
    devices = raw.get("devices", "auto")
    if devices != "auto":
        devices = convert(devices, int, "train.devices", "devices", {"gt": 0})
    out["devices"] = devices
    return Train(**out)


def parse_plots(raw: Any) -> Any:
    if raw is None:
        return ()
    if raw == "auto":
        return "auto"
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list):
        raise _err("plots", f"expected auto or a list of chart kinds, got {_show(raw)}")
    return tuple(parse_item(p, reg.CHARTS, f"plots[{i}]") for i, p in enumerate(raw))


# How metrics.jsonl and summary.json name a metric of a split: val_accuracy, test_loss; bare: train.
SPLIT_PREFIXES = (("val_", "val"), ("test_", "test"), ("train_", "train"))


def split_metric(name: str) -> tuple[str, str]:
    """'val_accuracy' -> ('val', 'accuracy'); a name without a split prefix is the training split."""
    for prefix, split in SPLIT_PREFIXES:
        if name.startswith(prefix):
            return split, name[len(prefix):]
    return "train", name


def parse_objective(raw: Any, data: Data, train: Train) -> str | None:
    """The metric a run returns to a sweeper; what can be checked before the data is loaded."""
    if raw is None:
        return None
    name = convert(raw, str, "objective", "objective")
    split, base = split_metric(name)
    known = ["loss", *(e.name for e in reg.METRICS)]
    if base not in known:
        names = [f"{p}{m}" for p in ("val_", "test_", "train_", "") for m in known]
        longer = [n for n in names if n.startswith(name)]  # val_acc -> val_accuracy
        hint = f" (did you mean '{longer[0]}'?)" if len(longer) == 1 else did_you_mean(name, names)
        raise _err("objective", f"unknown objective '{name}'{hint}" if hint else
                   f"unknown objective '{name}'; expected val_, test_ or train_ and one of: {', '.join(known)}")
    if train.metrics != "auto" and base not in ("loss", *train.metrics):
        raise _err("objective", f"'{name}' is not recorded: add {base} to train.metrics "
                                f"(it lists {', '.join(train.metrics) or 'nothing'})")
    fraction = {"val": data.split.val, "test": data.split.test}.get(split)
    if fraction == 0:
        raise _err("objective", f"'{name}' needs a {'validation' if split == 'val' else 'test'} split, "
                                f"but data.split.{split} is 0")
    return name


def parse_spec(raw: Any, *, file: str | None = None, smap: SourceMap | None = None) -> Spec:
    """A plain mapping (a resolved spec) -> Spec; a SpecError carries file and line."""
    reg.load_all()
    smap = smap or SourceMap(file)
    try:
        return _parse(raw, file)
    except SpecError as e:
        raise e.located(smap.file or file, smap.line(e.path)) from None


# Hydra's keys whose values can name Python functions: callbacks (`_target_`) and Python logging's
# configuration (handlers built by `()` or `class`); and the submitit launcher's `setup`, shell lines
# its SLURM script runs before the job. A spec leaves them to Hydra's defaults.
CODE_KEYS = {"hydra.callbacks": "can name Python functions", "hydra.job_logging": "can name Python functions",
             "hydra.hydra_logging": "can name Python functions",
             "hydra.launcher.setup": "holds shell commands (the submitit launcher's job script runs them)"}


def find_target(node: Any, path: str = "") -> None:
    """Specs never execute code: a `_target_` key (or logging's factory key `()`) anywhere, vars
    included, and Hydra's callbacks and logging configuration are refused."""
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f"{path}.{k}" if path else str(k)
            if k in ("_target_", "()"):
                raise _err(sub, f"specs never execute code: '{k}' is not allowed")
            if sub in CODE_KEYS:
                raise _err(sub, f"specs never execute code: {sub} {CODE_KEYS[sub]}; "
                                "it is not allowed in a spec")
            if sub == "hydra.output_subdir" and isinstance(v, str) and (
                    Path(v).is_absolute() or ".." in Path(v).parts):   # Hydra writes .hydra/ there
                raise _err(sub, f"must be a folder inside the run directory, got {_show(v)}")
            find_target(v, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            find_target(v, f"{path}[{i}]")


def _parse(raw: Any, file: str | None) -> Spec:
    find_target(raw)
    if raw is None:
        raise _err("", "the spec is empty; it needs at least data and model sections")
    if not isinstance(raw, dict):
        raise _err("", f"a spec is a mapping of sections (name, data, model, train, plots), got {_show(raw)}")
    _check_keys(raw, Spec, "", extra=HYDRA_KEYS)
    hints = _hints(Spec)
    name = convert(raw.get("name", "run"), str, "name", "name")
    if not name or any(c in name for c in "/\\") or name in (".", ".."):
        raise _err("name", f"name must be a plain name without path separators, got {_show(name)}")
    meta = {f.name: dict(f.metadata) for f in dataclasses.fields(Spec)}
    seed = convert(raw.get("seed", 0), int, "seed", "seed", meta["seed"])
    task = convert(raw.get("task"), hints["task"], "task", "task")
    variables = convert(raw.get("vars") or {}, dict, "vars", "vars")
    data = parse_data(_section(raw, "data", "data"), seed)
    model = parse_model(_section(raw, "model", "model"))
    train = parse_train(_section(raw, "train", "train"))
    plots = parse_plots(raw.get("plots", "auto"))
    objective = parse_objective(raw.get("objective"), data, train)
    report = parse_options(Report, _section(raw, "report", "report"), "report")
    return Spec(name=name, seed=seed, task=task, vars=variables, data=data, model=model,
                train=train, plots=plots, objective=objective, report=report, file=file)
