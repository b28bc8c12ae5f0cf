"""`python -m dsl run conf=SPEC [overrides]`: Hydra run or multirun of a spec."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

from dsl.errors import RunFailed, RunInterrupted, SpecError

# Hydra's own flags that take a value, and those that do not.
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--info", "--config-path", "-cp", "--config-name", "-cn",
               "--config-dir", "-cd", "--experimental-rerun")
BARE_FLAGS = ("-m", "--multirun", "--help", "-h", "--hydra-help", "--resolve", "--version", "--shell-completion", "-sc")


def split_args(args: list[str]) -> tuple[str | None, list[str], list[str]]:
    """-> (conf value, Hydra flags, overrides)."""
    conf, flags, overrides = None, [], []
    it = iter(range(len(args)))
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("conf="):
            conf = a[len("conf="):]
        elif a in VALUE_FLAGS:
            flags += args[i:i + 2]
            i += 1
        elif a in BARE_FLAGS or a.startswith("--"):
            flags.append(a)
        else:
            overrides.append(a)
        i += 1
    return conf, flags, overrides


def _is_sweep(value: str) -> bool:
    return any(s in value for s in (",", "range(", "choice(", "interval(", "glob(")) and not value.startswith("[")


def prepare(args: list[str], cwd: Path, *, sweep_ok: bool):
    """conf= and overrides -> (spec_path, SourceMap, flags, overrides, Spec or None). SpecError on bad input."""
    from dsl.compose import check_overrides, compose, precheck_file, resolve_conf, to_spec

    conf, flags, overrides = split_args(args)
    spec_path = resolve_conf(conf, cwd)
    try:
        shown = os.path.relpath(spec_path, cwd)
    except ValueError:
        shown = str(spec_path)
    if shown.startswith(".."):
        shown = str(spec_path)
    smap = precheck_file(spec_path, shown)
    fixed = [o for o in overrides if not _is_sweep(o.partition("=")[2])]
    swept = [o for o in overrides if o not in fixed]
    if swept and not sweep_ok:
        raise SpecError(swept[0].partition("=")[0], f"'{swept[0]}' is a sweep; add -m to run one job per value")
    base = _compose(spec_path, smap, [])
    check_overrides(base, overrides)
    cfg = _compose(spec_path, smap, fixed) if fixed else base
    spec = to_spec(cfg, smap, spec_path, fixed)
    return spec_path, smap, flags, overrides, spec


def _compose(spec_path, smap, overrides):
    from dsl.compose import compose

    try:
        return compose(spec_path, overrides)
    except SpecError:
        raise
    except Exception as e:  # Hydra's own composition errors: one line, our format
        msg = str(e).strip().split("\n")[0]
        if type(e).__name__ == "OverrideParseException":   # brackets inside a value (a file pattern)
            odd = [(k, v) for k, _, v in (o.partition("=") for o in overrides)
                   if "[" in v and not v.startswith(("[", '"', "'"))]
            if odd:
                msg += f"; quote a value with brackets: '{odd[0][0]}=\"{odd[0][1]}\"'"
        raise SpecError("", f"cannot compose the spec: {msg}", file=smap.file) from None


# --- what a run returns to a sweeper, and jobs that run side by side ------------------------------

def objective_name(spec, summary: dict | None = None) -> str:
    """The metric a run returns: the spec's `objective`, else the early-stopping monitor."""
    if spec.objective:
        return spec.objective
    if summary and summary.get("monitor"):
        return summary["monitor"]  # the monitor the run used (loss when there is no validation split)
    es = spec.train.early_stopping
    return es.monitor if es is not None else "val_loss"


def objective_value(spec, summary: dict) -> float:
    """The run's final value of its objective (summary.json's metrics), for a sweeper such as optuna."""
    from dsl.parse import split_metric

    name = objective_name(spec, summary)
    split, base = split_metric(name)
    try:
        return float(summary["metrics"][split][base])
    except (KeyError, TypeError, ValueError):
        raise SpecError("objective", f"'{name}' is not among the run's final metrics") from None


def natural_direction(spec) -> str:
    """'minimize' or 'maximize': which way the objective gets better."""
    from dsl.parse import split_metric
    from dsl.registry import METRICS

    es = spec.train.early_stopping
    if spec.objective is None and es is not None and es.mode != "auto":
        return "minimize" if es.mode == "min" else "maximize"
    base = split_metric(objective_name(spec))[1]
    mode = "min" if base == "loss" or base not in METRICS else METRICS.get(base).meta.get("mode", "max")
    return "minimize" if mode == "min" else "maximize"


def check_sweeper(spec_path: Path, smap, spec, overrides: list[str]) -> None:
    """Before a sweep starts: the sweeper's direction agrees with the objective, and the spec names
    no Python function for the sweeper to call. SpecError (exit status 2) otherwise."""
    from omegaconf import ListConfig

    from dsl.compose import compose, locate

    fixed = [o for o in overrides if not _is_sweep(o.partition("=")[2])]
    try:
        sweeper = compose(spec_path, fixed, hydra=True).hydra.get("sweeper") or {}
    except SpecError:
        raise
    except Exception as e:  # Hydra's own errors (e.g. an unknown sweeper): one line, our format
        msg = str(e).strip().split("\n")[0]
        raise SpecError("", f"cannot compose the spec: {msg}", file=smap.file) from None
    key = "hydra.sweeper.custom_search_space"
    if key in smap.lines and sweeper.get("custom_search_space"):
        raise SpecError(key, "specs never execute code: it names a Python function; give the search space "
                             "as hydra.sweeper.params").located(smap.file, smap.line(key))
    if "direction" not in sweeper:
        return
    given = sweeper.direction
    given = list(given) if isinstance(given, (list, tuple, ListConfig)) else [given]
    given = [getattr(d, "name", str(d)) for d in given]
    name = objective_name(spec)
    want = natural_direction(spec)
    if len(given) != 1:
        err = SpecError("hydra.sweeper.direction", f"lists {len(given)} directions, but a run returns one "
                                                    f"value (objective: {name})")
    elif given[0] != want:
        better = "lower" if want == "minimize" else "higher"
        err = SpecError("hydra.sweeper.direction", f"{given[0]} does not fit objective {name}, which is better "
                                                    f"{better}: set hydra.sweeper.direction={want}"
                                                    + ("" if spec.objective else " or name another objective"))
    else:
        return
    raise locate(err, smap, overrides)


def cpu_count() -> int:
    """CPUs this process may use (affinity and cgroup quota, as joblib counts them)."""
    try:
        from joblib import cpu_count as joblib_cpu_count

        return max(int(joblib_cpu_count()), 1)
    except ImportError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_env(n_jobs: int, cpus: int | None = None) -> dict[str, str]:
    """Environment for one of `n_jobs` job processes running at once: about cpus // n_jobs threads each.

    XLA:CPU sizes its thread pools from PJRT_NPROC (xla/pjrt/utils.cc DefaultThreadPoolSize; else
    the CPU affinity); `--xla_cpu_multi_thread_eigen=false` alone left a matmul multi-threaded on
    jaxlib 0.10. OMP/MKL/OpenBLAS cover NumPy and scikit-learn in data preparation. GPU jobs share
    the device's memory instead of each preallocating 75% of it. n_jobs < 0 counts as joblib does.
    """
    cpus = cpus or cpu_count()
    if n_jobs < 0:
        n_jobs = cpus + 1 + n_jobs  # joblib: -1 all CPUs, -2 all but one
    n_jobs = max(n_jobs, 1)
    if n_jobs == 1:
        return {}
    threads = max(cpus // n_jobs, 1)
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PJRT_NPROC": str(threads)}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    return env


def apply_env(env: dict[str, str]) -> None:
    """Sets what the user has not set already (XLA_FLAGS: adds flags it does not name). Takes effect
    only before JAX creates its CPU backend in this process, i.e. before a job's first run."""
    for key, value in env.items():
        if key == "XLA_FLAGS":
            have = os.environ.get(key, "")
            extra = [f for f in value.split() if f.split("=")[0] not in have]
            if extra:
                os.environ[key] = " ".join([have, *extra]).strip()
        else:
            os.environ.setdefault(key, value)


def launcher_jobs(launcher) -> int:
    """How many jobs a launcher runs at once (its n_jobs, as the joblib launcher has it); 1 if it says not."""
    n = launcher.get("n_jobs") if launcher is not None and hasattr(launcher, "get") else None
    return n if isinstance(n, int) and not isinstance(n, bool) else 1


def process_age() -> float:
    """Seconds since this process started (Linux's /proc; 0.0 where there is none), so that a
    run's times count Python's own start and the imports before the command runs."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])   # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _is_command_line() -> bool:
    """Whether this process is `python -m dsl` (not a caller that imported the command)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "dsl.__main__"


def main(args: list[str]) -> None:
    t_start = time.perf_counter() - (process_age() if _is_command_line() else 0.0)
    cwd = Path.cwd()
    conf, flags, _ = split_args(args)
    if conf is None and any(f in flags for f in ("--help", "-h")):
        print("usage: python -m dsl run conf=SPEC [key=value ...] [-m] [Hydra flags]\n"
              "Give conf= to see the spec's full configuration and Hydra's options.")
        return
    multirun = any(f in flags for f in ("-m", "--multirun"))
    worker = None
    if not multirun and _is_command_line():
        from dsl import worker as worker_module

        if worker_module.enabled():   # the training process imports JAX while this one composes
            worker = worker_module.Worker.start(_serve_job, wants_pandas=functools.partial(_wants_pandas, args, cwd))
    try:
        spec_path, smap, flags, overrides, _spec = prepare(args, cwd, sweep_ok=multirun)
        if multirun:
            check_sweeper(spec_path, smap, _spec, overrides)
    except SpecError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2)
    _hydra_run(spec_path, smap, flags, overrides, cwd, t_start, worker)


def reads_a_large_file(args: list[str], cwd: Path) -> bool:
    """Whether the spec's `data.source`, as its file and the command line give it (before Hydra
    composes), names large .csv or .parquet files (`sources.large_files`): the columnar loader
    reads them without pandas, so the training process does not import it ahead (~40 MiB held
    beside the data) even when its job comes late. A guess, for memory and time only: a wrong one
    imports pandas later, or in vain."""
    try:
        conf, _, overrides = split_args(args)
        source = None
        for override in overrides:
            key, _, value = override.partition("=")
            if key.lstrip("+~") == "data.source":
                source = value.strip("'\"")
        if source is None:
            import yaml

            from dsl.compose import resolve_conf

            spec = yaml.safe_load(resolve_conf(conf, cwd).read_text())
            source = spec.get("data", {}).get("source") if isinstance(spec, dict) else None
        if not isinstance(source, str) or "${" in source or Path(source).suffix not in (".csv", ".parquet"):
            return False
        from compilers.data.sources import SourceContext, large_files

        return bool(large_files(source, SourceContext(cwd=cwd, seed=0)))   # a file, or a pattern's files
    except Exception:   # anything unexpected (no such file: DataError): the usual preload
        return False


def _wants_pandas(args: list[str], cwd: Path, job: dict | None) -> bool:
    """Whether the training process imports pandas before it trains: not for a spec whose data the
    columnar loader reads (a numeric file, a built-in table of numbers), decided from the job when
    it has come, else guessed from the command line (only a large file goes without: the job
    takes a while yet, and pandas would load meanwhile)."""
    if job is None:
        return not reads_a_large_file(args, cwd)
    try:
        from compilers.data.columnar import eligible
        from dsl.parse import parse_spec

        return not eligible(parse_spec(job["config"]))
    except Exception:
        return True


def _serve_job(job: dict, ask) -> int:
    """A single run's job in `dsl.worker`'s child -> its exit status. `ask` reaches the parent, which
    draws the charts and writes the report (`_ParentCharts`)."""
    import compilers.pipeline as pipeline
    from dsl.parse import parse_spec
    from dsl.source_map import SourceMap

    spec = parse_spec(job["config"])   # resolved and checked by the parent
    pipeline.chart_drawer = functools.partial(_ask_to_draw, ask)
    pipeline.chart_preparer = functools.partial(_tell, ask.notify, "prepare")
    return _single_run(spec, Path(job["run_dir"]), Path(job["cwd_arg"]), job["t_start"], SourceMap(*job["smap"]),
                       job["overrides"])


def _tell(notify, what: str) -> None:
    try:
        notify(what)
    except OSError:   # the command is gone, which ends this process too
        pass


def _ask_to_draw(ask, run_dir: Path, plan, summary: dict, images: str, validate: bool, t_charts: float,
                 t_start: float, meanwhile=None) -> dict | None:
    """pipeline.chart_drawer in the training process: the parent draws from the saved record while
    this process runs `meanwhile` (the final checkpoint)."""
    import json

    import numpy as np

    from compilers.runs.record import _jsonable

    inputs = [plan.task, list(plan.input_shape), str(np.dtype(plan.model.input_dtype))]   # for plot_items
    try:
        answer = ask({"draw": str(run_dir), "inputs": inputs,
                      "summary": json.loads(json.dumps(summary, default=_jsonable)), "images": images,
                      "validate": validate, "t_charts": t_charts, "t_start": t_start, "n_charts": len(plan.charts)},
                     meanwhile)
    except OSError:   # the command is gone (it would have ended this process): draw here
        return None
    return answer.get("summary") if isinstance(answer, dict) else None


class _ParentCharts:
    """The parent's side of a run trained by `dsl.worker`'s child: while the child trains (once it
    has loaded a small data set; a large one, when the child asks for its charts), it starts the
    image processes and imports the chart code; then it draws the run's charts and writes its
    report from the record the child saved."""

    def __init__(self, spec):
        self.spec, self.renderer = spec, None

    def prepare(self) -> None:
        from compilers.pipeline import _start_renderer

        self.renderer = _start_renderer([self.spec], [None], False)
        import altair  # noqa: F401

        import compilers.charts.render  # noqa: F401
        import compilers.charts.report  # noqa: F401

    def answer(self, request: dict) -> dict:
        from compilers.charts import plot_items
        from compilers.pipeline import draw_charts
        from compilers.runs.record import RunRecord

        run_dir = Path(request["draw"])
        items = plot_items(self.spec.plots, *request["inputs"])
        if len(items) != request["n_charts"]:
            return {"error": "the charts to draw differ from the training process's plan"}
        record = RunRecord.load(run_dir)
        record.summary = request["summary"]
        draw_charts(record, items, run_dir, request["images"], validate=request["validate"], renderer=self.renderer,
                    t_charts=request["t_charts"], t_start=request["t_start"])
        return {"summary": record.summary}

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


def _single_run(spec, run_dir: Path, cwd: Path, t_start: float, smap, job_overrides: list[str]) -> int:
    """Trains one checked spec into `run_dir`, prints its last line -> the exit status: 0 done, 2 bad
    input (the run directory removed), 1 failed (diverged), 130 interrupted."""
    from compilers.pipeline import remove_run_dir, run_spec
    from dsl.compose import locate

    try:
        summary = run_spec(spec, run_dir, cwd, t_start=t_start)
    except SpecError as e:
        e = locate(e, smap, job_overrides)
        if not (run_dir / "metrics.jsonl").exists():
            remove_run_dir(run_dir)
        print(e, file=sys.stderr)
        return 2
    except RunInterrupted as e:   # Ctrl-C: a checkpoint and the report are written
        print(e, file=sys.stderr)
        return 130
    except RunFailed as e:
        print(e, file=sys.stderr)
        return 1
    _print_done(summary, run_dir)
    return 0


def _hydra_run(spec_path, smap, flags, overrides, cwd: Path, t_start: float, worker=None) -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dsl.compose import hydra_argv, locate, register, to_spec

    register(spec_path)

    def task(cfg):
        from compilers.pipeline import remove_run_dir, run_spec

        hc = HydraConfig.get()
        job_overrides = list(hc.overrides.task)
        run_dir = Path(hc.runtime.output_dir)
        multirun = hc.mode == RunMode.MULTIRUN
        if multirun:  # jobs side by side (hydra/launcher=joblib): split the CPUs before JAX starts here
            apply_env(thread_env(launcher_jobs(hc.launcher)))
        started = time.perf_counter()
        if not multirun:
            try:
                spec = to_spec(cfg, smap, spec_path, job_overrides)
            except SpecError as e:
                remove_run_dir(run_dir)
                print(locate(e, smap, job_overrides), file=sys.stderr)
                raise SystemExit(2)
            code = None
            if worker is not None:
                from omegaconf import OmegaConf

                raw = OmegaConf.to_container(cfg, resolve=True)
                raw.pop("hydra", None)
                charts = _ParentCharts(spec)
                try:
                    code = worker.run({"config": raw, "run_dir": str(run_dir), "cwd_arg": str(cwd), "t_start": t_start,
                                       "smap": [smap.file, smap.lines], "overrides": job_overrides},
                                      answer=charts.answer, prepare=charts.prepare)
                finally:
                    charts.close()
            if code is None:
                code = _single_run(spec, run_dir, cwd, t_start, smap, job_overrides)
            if code:
                raise SystemExit(code)
            return None
        # a sweep's job (a single run returned above): its line in the sweep's table, its objective
        from compilers.runs.preemption import Watch, hand_on

        with Watch():   # a submitit job's preemption signal (see compilers.runs.preemption)
            try:
                spec = to_spec(cfg, smap, spec_path, job_overrides)
                summary = run_spec(spec, run_dir, cwd, t_start=started, sweep_job=True)
            except (SpecError, RunFailed) as e:
                e = locate(e, smap, job_overrides) if isinstance(e, SpecError) else e
                print(e, file=sys.stderr)
                _sweep_line(hc.sweep.dir, hc.job.num, job_overrides, run_dir, None, str(e))
                return None
            except RunInterrupted as e:  # Ctrl-C: a checkpoint and the report are written; the sweep stops too
                print(e, file=sys.stderr)
                if not e.preempted:
                    _sweep_line(hc.sweep.dir, hc.job.num, job_overrides, run_dir, None, str(e))
                    raise SystemExit(130)
                summary, preempted = None, e.preempted
        if summary is None:   # preempted: submitit requeues the job, whose run writes the job's line
            not_requeued = hand_on(preempted)
            if not_requeued:   # its requeues ran out: the job ends here, its run resumable by hand
                error = (f"{spec.name}: the job was not requeued ({not_requeued}); go on with: "
                         f"python -m dsl resume {run_dir}")
                print(error, file=sys.stderr)
                _sweep_line(hc.sweep.dir, hc.job.num, job_overrides, run_dir, None, error)
            return None
        _sweep_line(hc.sweep.dir, hc.job.num, job_overrides, run_dir, summary, None)
        return objective_value(spec, summary)  # what sweepers such as optuna optimise

    def prepare_job(cfg):
        """hydra/launcher=vmap, inside Hydra's run_job: the job's spec, or its one-line error."""
        hc = HydraConfig.get()
        job = {"overrides": list(hc.overrides.task), "run_dir": Path(hc.runtime.output_dir),
               "sweep_dir": Path(hc.sweep.dir), "num": hc.job.num}
        try:
            job["spec"] = to_spec(cfg, smap, spec_path, job["overrides"])
        except SpecError as e:
            job["error"] = str(locate(e, smap, job["overrides"]))
            print(job["error"], file=sys.stderr)
            _sweep_line(job["sweep_dir"], job["num"], job["overrides"], job["run_dir"], None, job["error"])
        return job

    def run_jobs(jobs: list, max_members: int) -> list:
        """hydra/launcher=vmap: trains the prepared jobs, one vmapped program per group."""
        from compilers.pipeline import run_group
        from compilers.train.group import group_jobs

        values = [None] * len(jobs)
        interrupted = False
        specs = [j.get("spec") if j else None for j in jobs]
        for group in group_jobs(specs, max_members):
            outs = run_group([specs[i] for i in group], [jobs[i]["run_dir"] for i in group], cwd,
                             t_start=time.perf_counter(), sweep_job=True)
            for i, out in zip(group, outs):
                job = jobs[i]
                if isinstance(out, BaseException):
                    interrupted = interrupted or isinstance(out, RunInterrupted)
                    error = str(locate(out, smap, job["overrides"]) if isinstance(out, SpecError) else out)
                    print(error, file=sys.stderr)
                    _sweep_line(job["sweep_dir"], job["num"], job["overrides"], job["run_dir"], None, error,
                                members=len(group))
                else:
                    _sweep_line(job["sweep_dir"], job["num"], job["overrides"], job["run_dir"], out, None,
                                members=len(group))
                    try:
                        values[i] = objective_value(specs[i], out)
                    except SpecError as e:
                        print(e, file=sys.stderr)
            if interrupted:
                raise SystemExit(130)
        return values

    task.prepare_job, task.run_jobs = prepare_job, run_jobs
    sys.argv = [sys.argv[0]] + hydra_argv(spec_path) + flags + overrides
    hydra.main(version_base="1.3", config_path=None, config_name=None)(task)()


def _print_done(summary: dict, run_dir: Path) -> None:
    m = summary.get("metrics", {})
    split = "test" if "test" in m else ("val" if "val" in m else "train")
    shown = "  ".join(f"{k} {v:.4f}" for k, v in m.get(split, {}).items() if isinstance(v, (int, float)))
    secs = summary.get("times", {}).get("total_s", 0.0)
    print(f"{summary['name']}: {split} {shown}  ({secs:.1f} s)\nreport: {run_dir / 'report.html'}")


def _sweep_line(sweep_dir, num: int, overrides, run_dir: Path, summary: dict | None, error: str | None,
                members: int | None = None) -> None:
    """One line per job in <sweep dir>/sweep.jsonl: overrides, status, final metrics (and, under
    hydra/launcher=vmap, how many jobs trained in the job's vmapped program). Written by process 0
    only when several processes train each job together (compilers.train.distributed)."""
    from compilers.train.distributed import is_primary

    if not is_primary():
        return
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    line = {"job": num, "overrides": overrides, "run_dir": str(run_dir),
            "status": "failed" if error else "completed"}
    if members is not None:
        line["members"] = members
    if error:
        line["error"] = error
    else:
        line["metrics"] = summary.get("metrics", {})
        line["best_epoch"] = summary.get("best_epoch")
        line["total_s"] = summary.get("times", {}).get("total_s")
    with open(sweep_dir / "sweep.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
