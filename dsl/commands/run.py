"""`python -m dsl run conf=SPEC [overrides]`: Hydra run or multirun of a spec."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from dsl.errors import RunFailed, SpecError

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
        raise SpecError("", f"cannot compose the spec: {msg}", file=smap.file) from None


def main(args: list[str]) -> None:
    t_start = time.perf_counter()
    cwd = Path.cwd()
    conf, flags, _ = split_args(args)
    if conf is None and any(f in flags for f in ("--help", "-h")):
        print("usage: python -m dsl run conf=SPEC [key=value ...] [-m] [Hydra flags]\n"
              "Give conf= to see the spec's full configuration and Hydra's options.")
        return
    multirun = any(f in flags for f in ("-m", "--multirun"))
    try:
        spec_path, smap, flags, overrides, _spec = prepare(args, cwd, sweep_ok=multirun)
    except SpecError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2)
    _hydra_run(spec_path, smap, flags, overrides, cwd, t_start)


def _hydra_run(spec_path, smap, flags, overrides, cwd: Path, t_start: float) -> None:
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
        started = time.perf_counter()
        try:
            spec = to_spec(cfg, smap, spec_path, job_overrides)
            summary = run_spec(spec, run_dir, cwd, t_start=t_start if not multirun else started)
        except SpecError as e:
            e = locate(e, smap, job_overrides)
            if not (run_dir / "metrics.jsonl").exists():
                remove_run_dir(run_dir) if not multirun else None
            print(e, file=sys.stderr)
            if multirun:
                _sweep_line(hc, job_overrides, run_dir, None, str(e))
                return None
            raise SystemExit(2)
        except RunFailed as e:
            print(e, file=sys.stderr)
            if multirun:
                _sweep_line(hc, job_overrides, run_dir, None, str(e))
                return None
            raise SystemExit(1)
        if multirun:
            _sweep_line(hc, job_overrides, run_dir, summary, None)
        else:
            _print_done(summary, run_dir)
        metrics = summary.get("metrics", {})
        return metrics.get("val") or metrics.get("test") or metrics.get("train")

    sys.argv = [sys.argv[0]] + hydra_argv(spec_path) + flags + overrides
    hydra.main(version_base="1.3", config_path=None, config_name=None)(task)()


def _print_done(summary: dict, run_dir: Path) -> None:
    m = summary.get("metrics", {})
    split = "test" if "test" in m else ("val" if "val" in m else "train")
    shown = "  ".join(f"{k} {v:.4f}" for k, v in m.get(split, {}).items() if isinstance(v, (int, float)))
    secs = summary.get("times", {}).get("total_s", 0.0)
    print(f"{summary['name']}: {split} {shown}  ({secs:.1f} s)\nreport: {run_dir / 'report.html'}")


def _sweep_line(hc, overrides, run_dir: Path, summary: dict | None, error: str | None) -> None:
    """One line per job in <sweep dir>/sweep.jsonl: overrides, status, final metrics."""
    sweep_dir = Path(hc.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    line = {"job": hc.job.num, "overrides": overrides, "run_dir": str(run_dir),
            "status": "failed" if error else "completed"}
    if error:
        line["error"] = error
    else:
        line["metrics"] = summary.get("metrics", {})
        line["best_epoch"] = summary.get("best_epoch")
        line["total_s"] = summary.get("times", {}).get("total_s")
    with open(sweep_dir / "sweep.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
