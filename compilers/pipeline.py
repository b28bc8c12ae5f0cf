"""spec -> data -> plan -> training -> run record -> charts and report, for one run directory."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import time
from pathlib import Path

from dsl.errors import RunFailed, RunInterrupted, SpecError
from dsl.spec import Spec


def configure_jax() -> None:
    """The persistent compilation cache, on by default: a second run of a spec skips XLA."""
    import logging

    import jax

    from compilers.train.distributed import initialize

    initialize()   # jax.distributed, when the environment starts several processes (before any computation)
    for name in ("absl", "orbax", "jax", "etils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if os.environ.get("DSL_COMPILATION_CACHE", "1") != "0":
        jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def cache_root() -> Path:
    """Where runs keep what they compile: $DSL_CACHE_DIR, else $XDG_CACHE_HOME/dsl or ~/.cache/dsl
    (jax/: XLA's executables; programs/: the stored programs, compilers.train.stored)."""
    return Path(os.environ.get("DSL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dsl"))


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("dsl", "jax", "jaxlib", "flax", "optax", "hydra-core", "altair", "vl-convert-python", "orbax-checkpoint"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return tuple(out.items())


def versions() -> dict:
    """The versions of Python and of the libraries a run used (looked up once per process)."""
    return dict(_versions())


def plan_spec(spec: Spec, cwd: Path):
    """Loads the data and compiles the plan (what `validate` prints). SpecError on bad input."""
    from compilers.data.load import load_dataset
    from compilers.plan import compile_spec

    data = load_dataset(spec, cwd)
    return data, compile_data(spec, data)


def compile_data(spec: Spec, data, model=None):
    from compilers.plan import compile_spec

    vocab = getattr(data, "vocabulary", None)
    return compile_spec(spec, data.task, data.n_classes, data.input_shape, data.sizes(),
                        input_dtype=str(data.x["train"].dtype), vocab_size=len(vocab) if vocab else None,
                        model=model)


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


def run_spec(spec: Spec, run_dir: Path, cwd: Path, *, progress: bool = True, t_start: float | None = None,
             sweep_job: bool = False) -> dict:
    """Trains a spec into `run_dir`; returns the summary. Bad input raises SpecError before
    anything but Hydra's own files is written (the caller removes the directory)."""
    result = run_group([spec], [run_dir], cwd, progress=progress, t_start=t_start, sweep_job=sweep_job)[0]
    if isinstance(result, BaseException):
        raise result
    return result


def run_group(specs: list[Spec], run_dirs: list[Path], cwd: Path, *, progress: bool = True,
              t_start: float | None = None, sweep_job: bool = False, resume: bool = False) -> list:
    """Trains specs that share one compiled structure (see `compilers.train.group`) together, one
    complete run directory each. Returns, per spec, its summary or the error that stopped it
    (SpecError: bad input, nothing but Hydra's files written; RunFailed: diverged, charts written).
    Interruptions and bugs propagate."""
    t_start = t_start or time.perf_counter()
    run_dirs = [Path(d) for d in run_dirs]
    results: list = [None] * len(specs)
    # A job requeued after its cluster preempted it finds the run it stopped in its directory: one
    # model goes on from its checkpoint (the directory read here by every process of a run of
    # several, before any of them writes; process 0 reads the checkpoint for all)
    resume = resume or (len(specs) == 1 and requeued_run(run_dirs[0]))
    for i, d in enumerate(run_dirs):
        if (d / "metrics.jsonl").exists() and not resume:
            results[i] = SpecError("hydra.run.dir", f"{d} already holds a run; give another directory")
    t = time.perf_counter()
    times: list[dict] = [{"startup_s": round(t - t_start, 4)} for _ in specs]   # Python, imports, Hydra
    renderer = _start_renderer(specs, results, sweep_job)   # first: its engine starts while JAX does
    configure_jax()
    from compilers.train.distributed import is_primary

    primary = is_primary()
    named = list(run_dirs)   # what messages name: process 0's directories, in every process
    if not primary:   # several processes train together; only process 0 writes the run directories
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="dsl-process-"))
        run_dirs, progress = [scratch / str(i) for i in range(len(specs))], False
    if not primary and renderer is not None:
        renderer.close()
        renderer = None
    try:
        return _run_group(specs, run_dirs, cwd, results, times, t, t_start=t_start, progress=progress,
                          sweep_job=sweep_job, resume=resume, primary=primary, renderer=renderer, named=named)
    finally:
        if renderer is not None:
            renderer.close()
        if not primary:
            shutil.rmtree(scratch, ignore_errors=True)


# Check every chart against the Vega-Lite schema as it is drawn (~0.15 s a run): on in the test
# suite, which draws every chart kind; a run's charts are compiled by vl-convert either way.
_VALIDATE = os.environ.get("DSL_VALIDATE_CHARTS", "0") == "1"


PRELOAD_AFTER_BYTES = 64 << 20   # a training split above this imports altair after the first epoch


# (run_dir, plan, summary, images, validate, t_charts, t_start, meanwhile=) -> the summary with its
# charts and times, once another process has drawn the run's charts and written its report from
# the saved record (with `draw_charts`); None: draw them here. It calls `meanwhile` (the final checkpoint) exactly once,
# while the other process draws. Set by `python -m dsl run`'s training process (dsl.worker), whose
# parent imports altair and starts the image processes while this one trains.
chart_drawer = None
# () -> None: tells that other process to start the image processes and import the chart code now
# (the data is loaded and small); without it, it does so when asked to draw. Set with chart_drawer.
chart_preparer = None


def _preload_altair():
    """Imports altair (~0.5 s) in a background thread while the model trains: the training loop
    spends much of its time waiting on the device, when the thread can run."""
    import threading

    def work():
        try:
            import altair  # noqa: F401
        except Exception:   # the charts import it again and report what is wrong
            pass

    thread = threading.Thread(target=work, name="dsl-preload-altair", daemon=True)
    thread.start()
    return thread


def _images(spec: Spec, sweep_job: bool) -> str:
    """report.images with auto resolved: PNGs for a single run, none for a sweep's jobs."""
    images = spec.report.images
    if images == "auto":
        images = "none" if sweep_job else "png"
    return images


FEW_CHARTS = 4


def image_processes(charts: int | None = None) -> int:
    """How many chart-image processes: DSL_IMAGE_PROCESSES, else two where there are two CPUs, but
    one for a run of a few charts (up to FEW_CHARTS; `charts` None: `plots: auto`, many): each
    process's JavaScript engine costs ~1 s of CPU to start, more than a second one saves on a few
    images while the CPUs are busy with the run."""
    given = int(os.environ.get("DSL_IMAGE_PROCESSES", "0") or 0)
    if given > 0:
        return given
    if charts is not None and charts <= FEW_CHARTS:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def _start_renderer(specs, results, sweep_job: bool):
    """The chart-image processes (compilers.charts.renderer), when some run will write images."""
    if all(results[i] is not None or _images(s, sweep_job) == "none" or (s.plots != "auto" and not s.plots)
           for i, s in enumerate(specs)) or os.environ.get("DSL_RENDERER", "1") == "0" or chart_drawer is not None:
        return None
    from compilers.charts.renderer import Renderer

    charts = None if len(specs) != 1 or specs[0].plots == "auto" else len(specs[0].plots)
    try:
        return Renderer(processes=image_processes(charts))
    except (OSError, ValueError):
        return None


def _run_group(specs, run_dirs, cwd, results, times, t, *, t_start, progress, sweep_job, resume, primary,
               named, renderer=None):
    from compilers import memory
    from compilers.runs.log import RunLog
    from compilers.train import stored
    from compilers.train.loop import train_group

    imports_s = round(time.perf_counter() - t, 4)
    from compilers.data.load import load_dataset
    from compilers.runs.status import Status

    todo = [i for i in range(len(specs)) if results[i] is None]
    if len(todo) == 1 and not resume:
        # a large file: the run's programs compiled first, in a process of its own
        # (compilers.train.precompile), so that XLA's compiler never works beside the table
        from compilers.train import precompile

        spec = specs[todo[0]]
        marker = precompile.wanted(spec, cwd)
        if marker is not None:
            t = time.perf_counter()
            with Status(spec.name, "compiling ahead of the data", progress):
                precompile.compile_ahead(spec, cwd, marker)
            times[todo[0]]["compile_ahead_s"] = round(time.perf_counter() - t, 4)
    loaded: dict = {}
    models: dict = {}     # the group shares one structure: each model is built once per data shape
    datas, plans = [None] * len(specs), [None] * len(specs)
    for i, spec in enumerate(specs):
        if results[i] is not None:
            continue
        times[i]["imports_s"] = imports_s
        t = time.perf_counter()
        try:
            key = _data_key(spec)
            if key not in loaded:
                # on a terminal, a line while a large data set loads: the rows read so far
                what = getattr(spec.data.source.options, "path", None) or spec.data.source.kind
                with Status(spec.name, f"reading {what}", progress) as status:
                    loaded[key] = load_dataset(spec, cwd,
                                               on_rows=lambda n: status.update(f"reading {what}: {n:,} rows"))
                    status.done(f"read {what}: {sum(loaded[key].sizes().values()):,} rows")
            datas[i] = loaded[key]
            times[i]["data_s"] = round(time.perf_counter() - t, 4)
            t = time.perf_counter()
            vocab = getattr(datas[i], "vocabulary", None)
            shape_key = (tuple(datas[i].input_shape), str(datas[i].x["train"].dtype), datas[i].task,
                         datas[i].n_classes, len(vocab) if vocab else None, repr(spec.model))
            plans[i] = compile_data(spec, datas[i], model=models.get(shape_key))
            models.setdefault(shape_key, plans[i].model)
            times[i]["plan_s"] = round(time.perf_counter() - t, 4)
        except SpecError as e:
            results[i] = e
    live = [i for i in range(len(specs)) if results[i] is None]
    if not live:
        return results

    logs, bases = {}, {}
    for i in live:
        spec, data, plan = specs[i], datas[i], plans[i]
        if resume:
            _keep_checkpointed_epochs(run_dirs[i], spec)
        logs[i] = RunLog(run_dirs[i])
        bases[i] = {"name": spec.name, "task": plan.task, "status": "running", "params": plan.model.total_params,
                    "data": {"source": data.description, "sizes": data.sizes(), "input_shape": list(data.input_shape),
                             "features": len(data.feature_names), "classes": data.class_names},
                    "versions": versions(), "cwd": str(Path(cwd).resolve())}
        logs[i].summary(bases[i])
        _save_prep(run_dirs[i], data)
    # Members whose data gave another shape (a vocabulary fitted per seed) train apart.
    together: dict = {}
    for i in live:
        p = plans[i]
        together.setdefault((repr(p.model.variable_shapes), p.input_shape, tuple(sorted(p.sizes.items()))), []).append(i)
    drawn = any(specs[i].plots == "auto" or len(specs[i].plots) for i in live)
    # altair is imported while the model trains; with a large training split only after the first
    # epoch, whose compilation is then the run's memory peak (altair holds ~22 MiB)
    preload = []
    large = sum(datas[i].x["train"].nbytes for i in {id(datas[i]): i for i in live}.values()) > PRELOAD_AFTER_BYTES

    # another process draws the charts (chart_drawer): this one never imports altair, and writes the
    # final checkpoint while the other draws
    draw_elsewhere = chart_drawer is not None and primary and len(live) == 1
    later = [] if draw_elsewhere else None
    # The chart side (image processes, ~100 MiB each; altair) starts while a small data set trains,
    # and after a large one has trained and been freed: it would otherwise be held beside the data.
    restart_renderer = large and renderer is not None
    if restart_renderer:
        renderer.close()
        renderer = None
    if draw_elsewhere and not large and chart_preparer is not None:
        chart_preparer()

    def start_preload():
        if primary and drawn and not draw_elsewhere and not preload:
            preload.append(_preload_altair())

    if not large:
        start_preload()
    records = {}
    try:
        for members in together.values():
            out = train_group([plans[i] for i in members], [datas[i] for i in members],
                              [run_dirs[i] for i in members], progress=progress,
                              logs=[logs[i] for i in members], times=[times[i] for i in members], resume=resume,
                              after_first_epoch=start_preload, deferred_checkpoints=later)
            records.update(zip(members, out))
    except BaseException as e:
        for i in live:
            logs[i].summary({**bases[i], "status": "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                             "reason": str(e).split("\n")[0]})
        raise
    finally:
        for i in live:
            logs[i].close()
    for thread in preload:
        thread.join()
    # The data is not needed to save the records and draw the charts: freed first (its size, and the
    # chart side's memory then comes on top of what is left)
    loaded.clear()
    datas = data = None   # noqa: F841
    memory.give_back()
    if restart_renderer and primary:   # closed while the data trained
        renderer = _start_renderer([specs[i] for i in live], [None] * len(live), sweep_job)
    else:
        restart_renderer = False
    try:
        for i in live:
            record = records[i]
            spec, run_dir, tm = specs[i], run_dirs[i], times[i]
            t = time.perf_counter()
            # programs this process loaded from the store / traced and stored (compilers.train.stored)
            record.summary = {**bases[i], "status": "completed", **record.summary, "times": tm,
                              "programs": dict(stored.COUNTS)}
            if not primary:   # process 0 writes the record, charts and report
                tm["total_s"] = round(time.perf_counter() - t_start, 4)
                results[i] = _result_of(record.summary, spec, named[i])
                continue
            write_checkpoint = later[0] if later else None
            try:
                record.save(run_dir)
            except BaseException:
                if write_checkpoint is not None:
                    write_checkpoint()
                raise
            images = _images(spec, sweep_job)
            summary = None
            if draw_elsewhere:   # another process draws the charts and the report; it runs write_checkpoint
                summary = chart_drawer(run_dir, plans[i], record.summary, images, _VALIDATE, t, t_start,
                                       meanwhile=write_checkpoint)
            elif write_checkpoint is not None:
                write_checkpoint()
            if summary is not None:
                record.summary = summary
                tm.update(summary["times"])
            else:
                draw_charts(record, plans[i].charts, run_dir, images, validate=_VALIDATE and i == live[0],
                            renderer=renderer, t_charts=t, t_start=t_start)
            logs[i].summary(record.summary)
            results[i] = _result_of(record.summary, spec, run_dir)
    finally:
        if restart_renderer and renderer is not None:
            renderer.close()
    return results


def draw_charts(record, items, run_dir: Path, images: str, *, validate: bool, renderer, t_charts: float,
                t_start: float) -> None:
    """A finished run's charts (charts/) and report.html from its record; record.summary gains the
    charts' statuses and its times charts_s and total_s (from t_charts and t_start)."""
    from compilers.charts.render import render_charts
    from compilers.charts.report import write_report

    rendered = render_charts(record, items, run_dir / "charts", png=images in ("png", "both"),
                             svg=images in ("svg", "both"), validate=validate, renderer=renderer)
    now = time.perf_counter()
    record.summary["times"].update(charts_s=round(now - t_charts, 4), total_s=round(now - t_start, 4))
    record.summary["charts"] = {r.name: (r.skipped or "ok") for r in rendered}
    write_report(record, rendered, run_dir / "report.html")


def _result_of(summary: dict, spec: Spec, run_dir: Path):
    if summary["status"] == "failed":  # the charts of the history so far are written first
        return RunFailed(f"{spec.name}: {summary['reason']}; report: {run_dir / 'report.html'}")
    if summary["status"] == "interrupted":   # preempted: the job, requeued, goes on by itself
        import signal

        preempted = getattr(signal, summary["preempted"], None) if summary.get("preempted") else None
        return RunInterrupted(f"{spec.name}: {summary['reason']}; report: {run_dir / 'report.html'}"
                              + ("" if preempted else f"; go on with: python -m dsl resume {run_dir}"),
                              preempted=preempted)
    return summary


def requeued_run(run_dir: Path, env=None) -> bool:
    """Whether `run_dir` holds a run that this job, requeued, goes on with: one that its cluster's
    preemption signal stopped (summary.json: `preempted`; compilers.runs.preemption), or, in a job
    SLURM has started again (SLURM_RESTART_COUNT > 0: requeued or restarted after a failure), one
    that did not finish (`running` or `interrupted`: killed without the signal, or stopped by it)."""
    import json

    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(summary, dict):
        return False
    if summary.get("status") == "interrupted" and summary.get("preempted"):
        return True
    env = os.environ if env is None else env
    try:
        restarts = int(env.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        restarts = 0
    return restarts > 0 and summary.get("status") in ("running", "interrupted")


def _keep_checkpointed_epochs(run_dir: Path, spec: Spec) -> None:
    """Before a resume: metrics.jsonl keeps the epochs of the latest checkpoint, whole lines only
    (a process killed mid-write may have left half a line; later epochs will be trained again)."""
    from compilers.runs.checkpoint import Checkpoints

    ck = Checkpoints(run_dir, spec.train.checkpoint.keep)
    try:
        latest = ck.latest()
        k = len(ck.restore_meta(latest)["tracker"]["history"]) if latest is not None else 0
    finally:
        ck.close()
    path = run_dir / "metrics.jsonl"
    if path.exists():
        lines = [ln for ln in path.read_bytes().split(b"\n") if ln.strip()][:k]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(ln + b"\n" for ln in lines))
        tmp.replace(path)


def resume_run(run_dir: Path, *, progress: bool = True) -> dict:
    """Goes on with the interrupted run in `run_dir` from its latest checkpoint (from the start when
    it has none). SpecError when `run_dir` is not a run that can go on."""
    import json

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    summary_path, config = run_dir / "summary.json", run_dir / ".hydra" / "config.yaml"
    if not summary_path.is_file() or not config.is_file():
        raise SpecError("", f"{run_dir} is not a run directory (it needs summary.json and .hydra/config.yaml)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SpecError("", f"cannot read {summary_path}: {e}") from None
    if summary.get("status") == "completed":
        raise SpecError("", f"{run_dir} has completed; there is nothing to resume")
    if summary.get("status") == "failed":
        raise SpecError("", f"{run_dir} failed ({summary.get('reason', 'no reason given')}); resuming would fail "
                            f"the same way: change the spec and run it again")
    spec = spec_of_run(run_dir)
    cwd = Path(summary.get("cwd") or os.getcwd())
    result = run_group([spec], [run_dir], cwd, progress=progress, t_start=t_start, resume=True)[0]
    if isinstance(result, BaseException):
        raise result
    return result


def spec_of_run(run_dir: Path) -> Spec:
    """The Spec a run was trained with, from its .hydra/config.yaml."""
    from omegaconf import OmegaConf

    from dsl.compose import precheck_file, to_spec

    path = Path(run_dir) / ".hydra" / "config.yaml"
    smap = precheck_file(path, str(path))
    return to_spec(OmegaConf.load(path), smap, path, [])


def _data_key(spec: Spec):
    """Specs with equal data sections and seeds load the same arrays."""
    return (repr(spec.data), spec.seed, spec.task)


def _save_prep(run_dir: Path, data) -> None:
    from compilers.runs.record import write_json

    write_json(run_dir / "prep.json", {"target": data.target, "task": data.task, "features": data.feature_names,
                                       "classes": data.class_names, "steps": data.prep_state})
