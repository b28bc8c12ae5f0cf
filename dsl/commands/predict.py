"""`python -m dsl predict RUN_DIR data.source=NEW [data.options.KEY=VALUE ...] [output=FILE]`:
a finished run's predictions for new data, one row per input row (see `compilers.predict`).

Relative paths (the data, `output=`) start at the directory the command runs in. Prints the
output's path and row count, and the accuracy (or R² and MAE) when the new data has the target.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from dsl.errors import SpecError, unknown

USAGE = "usage: python -m dsl predict RUN_DIR data.source=FILE|FOLDER|NAME [data.options.KEY=VALUE ...] [output=FILE]"
OPTIONS = ("data.source", "data.options.KEY", "output")


def parse_args(args: list[str]) -> tuple[Path, str, dict, str | None]:
    """-> (run dir, data.source value, data.options, output or None). SpecError on bad arguments."""
    runs = [a for a in args if "=" not in a]
    if len(runs) != 1:
        raise SpecError("", USAGE)
    source, options, output = None, {}, None
    for arg in args:
        if "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        if key == "data.source":
            source = value
        elif key.startswith("data.options.") and len(key) > len("data.options."):
            try:
                options[key[len("data.options."):]] = yaml.safe_load(value) if value else None
            except yaml.YAMLError:
                raise SpecError(key, f"cannot read {value!r} as a value") from None
        elif key == "output":
            output = value
        else:
            raise SpecError(key, unknown("option", key, OPTIONS) + "; predict takes data.source=, "
                                 "data.options.KEY= and output=")
    if not source:
        raise SpecError("data.source", "required: the new data (a file, a folder of images or a built-in "
                                       f"data set name); {USAGE}")
    if output is not None and Path(output).suffix.lower() not in (".csv", ".parquet"):
        raise SpecError("output", f"'{output}': write a .csv or .parquet file")
    return Path(runs[0]), source, options, output


def main(args: list[str]) -> None:
    from dsl import registry as reg

    reg.load_all()
    cwd = Path(os.getcwd())
    try:
        run_dir, value, options, output = parse_args(args)
        from compilers.pipeline import configure_jax
        from compilers.predict import open_run, predict, source_of

        run = open_run(run_dir)
        source = source_of(run, value, options)
        configure_jax()
        path = Path(output) if output is not None else run_dir / "predictions.csv"
        from compilers.runs.status import Status

        # written as it goes, whole or not at all; on a terminal, a large input shows its rows so far
        with Status("predict", f"reading {value}", keep=False) as status:
            result = predict(run, source, cwd, out=path,
                             on_rows=lambda n: status.update(f"{value}: {n:,} rows predicted"))
    except SpecError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2)
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    n = result.rows
    print(f"predictions: {path} ({n} row{'s' if n != 1 else ''})")
    s = result.score
    if "accuracy" in s:
        print(f"accuracy {s['accuracy']:.4f} on the {s['rows']} rows with a known '{s['target']}'")
    elif "r2" in s:
        print(f"r2 {s['r2']:.4f}  mae {s['mae']:.4g} on the {s['rows']} rows with a '{s['target']}' value")
