"""spec -> data -> plan -> training -> run record -> charts and report, for one run directory."""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path

from dsl.errors import RunFailed, SpecError
from dsl.spec import Spec


def configure_jax() -> None:
    """The persistent compilation cache, on by default: a second run of a spec skips XLA."""
    import logging

    import jax

    for name in ("absl", "orbax", "jax", "etils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cache = os.environ.get("DSL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dsl")
    if os.environ.get("DSL_COMPILATION_CACHE", "1") != "0":
        jax.config.update("jax_compilation_cache_dir", os.path.join(cache, "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("dsl", "jax", "jaxlib", "flax", "optax", "hydra-core", "altair", "vl-convert-python", "orbax-checkpoint"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def plan_spec(spec: Spec, cwd: Path):
    """Loads the data and compiles the plan (what `validate` prints). SpecError on bad input."""
    from compilers.data.load import load_dataset
    from compilers.plan import compile_spec

    data = load_dataset(spec, cwd)
    return data, compile_data(spec, data)


def compile_data(spec: Spec, data):
    from compilers.plan import compile_spec

    vocab = getattr(data, "vocabulary", None)
    return compile_spec(spec, data.task, data.n_classes, data.input_shape, data.sizes(),
                        input_dtype=str(data.x["train"].dtype), vocab_size=len(vocab) if vocab else None)


def remove_run_dir(run_dir: Path) -> None:
    """A run that failed before training leaves nothing behind (nor an empty parent)."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    try:
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
    except OSError:
        pass


def run_spec(spec: Spec, run_dir: Path, cwd: Path, *, progress: bool = True, t_start: float | None = None) -> dict:
    """Trains a spec into `run_dir`; returns the summary. Bad input raises SpecError before
    anything but Hydra's own files is written (the caller removes the directory)."""
    t_start = t_start or time.perf_counter()
    run_dir = Path(run_dir)
    if (run_dir / "metrics.jsonl").exists():
        raise SpecError("hydra.run.dir", f"{run_dir} already holds a run; give another directory")
    times: dict = {}
    t = time.perf_counter()
    configure_jax()
    from compilers.charts.render import render_charts
    from compilers.charts.report import write_report
    from compilers.runs.log import RunLog
    from compilers.train.loop import train

    times["imports_s"] = round(time.perf_counter() - t, 4)
    t = time.perf_counter()
    from compilers.data.load import load_dataset
    from compilers.plan import compile_spec

    data = load_dataset(spec, cwd)
    times["data_s"] = round(time.perf_counter() - t, 4)
    t = time.perf_counter()
    plan = compile_data(spec, data)
    times["plan_s"] = round(time.perf_counter() - t, 4)

    log = RunLog(run_dir)
    base = {"name": spec.name, "task": plan.task, "status": "running", "params": plan.model.total_params,
            "data": {"source": data.description, "sizes": data.sizes(), "input_shape": list(data.input_shape),
                     "features": len(data.feature_names), "classes": data.class_names},
            "versions": versions()}
    log.summary(base)
    _save_prep(run_dir, data)
    try:
        record = train(plan, data, run_dir, progress=progress, log=log, times=times)
    except BaseException as e:
        log.summary({**base, "status": "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                     "reason": str(e).split("\n")[0]})
        raise
    finally:
        log.close()
    t = time.perf_counter()
    record.summary = {**base, "status": "completed", **record.summary, "times": times}
    record.save(run_dir)
    rendered = render_charts(record, plan.charts, run_dir / "charts")
    times["charts_s"] = round(time.perf_counter() - t, 4)
    times["total_s"] = round(time.perf_counter() - t_start, 4)
    record.summary["charts"] = {r.name: (r.skipped or "ok") for r in rendered}
    write_report(record, rendered, run_dir / "report.html")
    log.summary(record.summary)
    if record.summary["status"] == "failed":  # the charts of the history so far are written first
        raise RunFailed(f"{spec.name}: {record.summary['reason']}; report: {run_dir / 'report.html'}")
    return record.summary


def _save_prep(run_dir: Path, data) -> None:
    from compilers.runs.record import write_json

    write_json(run_dir / "prep.json", {"target": data.target, "task": data.task, "features": data.feature_names,
                                       "classes": data.class_names, "steps": data.prep_state})
