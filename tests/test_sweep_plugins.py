"""Hydra's plugins with the CLI: the joblib launcher (jobs in parallel processes, CPUs split between
them) and the optuna sweeper (a search space, the run's `objective` as the value it optimises)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SMALL

JOBLIB = str(ROOT / "examples" / "moons_joblib.yaml")
OPTUNA = str(ROOT / "examples" / "moons_optuna.yaml")



def _runs(sweep: Path) -> dict[int, Path]:
    return {int(p.name): p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()}


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


# --- the CPU split for jobs that run side by side ------------------------------------------------

def test_thread_env_gives_each_job_its_share_of_the_cpus():
    from dsl.commands.run import thread_env

    env = thread_env(2, cpus=16)
    assert env["PJRT_NPROC"] == "8"  # XLA:CPU's thread pools
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "8"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"  # jobs sharing a GPU
    assert "XLA_FLAGS" not in env
    assert thread_env(3, cpus=16)["PJRT_NPROC"] == "5"
    one = thread_env(2, cpus=2)
    assert one["PJRT_NPROC"] == "1" and one["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"
    assert thread_env(8, cpus=2)["PJRT_NPROC"] == "1"  # more jobs than CPUs: one thread each
    assert thread_env(-1, cpus=4)["PJRT_NPROC"] == "1"  # joblib's -1: one job per CPU
    assert thread_env(-3, cpus=4)["PJRT_NPROC"] == "2"  # -3: all CPUs but two -> 2 jobs
    assert thread_env(1, cpus=16) == {} and thread_env(-4, cpus=4) == {}  # one job at a time: untouched


def test_apply_env_keeps_what_the_user_set(monkeypatch):
    from dsl.commands.run import apply_env, launcher_jobs

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    apply_env({"OMP_NUM_THREADS": "1", "PJRT_NPROC": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"})
    assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["PJRT_NPROC"] == "1"
    assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                               "--xla_cpu_multi_thread_eigen=false"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    apply_env({"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"})
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=true"
    assert launcher_jobs({"n_jobs": 2}) == 2 and launcher_jobs({"_target_": "basic"}) == 1
    assert launcher_jobs(None) == 1


def test_thread_env_takes_effect_in_a_fresh_process():
    """The env a job sets before JAX starts sizes XLA's CPU pool (its threads are named XLAEigen)."""
    code = ("import os; from dsl.commands.run import apply_env, thread_env; apply_env(thread_env(2, cpus=2));"
            "import jax.numpy as jnp; (jnp.ones((64, 64)) @ jnp.ones((64, 64))).block_until_ready();"
            "names = [open(f'/proc/self/task/{t}/comm').read() for t in os.listdir('/proc/self/task')];"
            "print(sum('XLAEigen' in n for n in names))")
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux /proc")
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
    p = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1"


# --- joblib: jobs in parallel processes ---------------------------------------------------------

def test_joblib_sweep_completes_every_job(tmp_path):
    # the example selects hydra/launcher=joblib with n_jobs=2 in its own defaults
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "dsl", "run", "-m", f"conf={JOBLIB}", "seed=0,1,2",
                        "train.epochs=2", "plots=[]"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "Joblib.Parallel(n_jobs=2" in p.stdout + p.stderr
    (sweep,) = list((tmp_path / "multirun" / "moons-joblib").iterdir())
    runs = _runs(sweep)
    assert sorted(runs) == [0, 1, 2]
    lines = [json.loads(l) for l in (sweep / "sweep.jsonl").read_text().splitlines()]
    assert sorted(l["job"] for l in lines) == [0, 1, 2]
    seeds = set()
    for l in lines:
        assert l["status"] == "completed", l
        run = Path(l["run_dir"])
        assert run == runs[l["job"]]
        summary = _summary(run)
        assert summary["status"] == "completed" and summary["epochs_run"] == 2
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
        cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        seeds.add(cfg["seed"])
        launcher = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]["launcher"]
        assert "joblib" in launcher["_target_"] and launcher["n_jobs"] == 2
    assert seeds == {0, 1, 2}


# --- optuna: the run's objective is what the sweeper optimises ----------------------------------

def _optuna(cli, sweep: Path, *overrides: str):
    code, out, err = cli("run", "-m", f"conf={OPTUNA}", "hydra.sweeper.n_trials=3", "train.epochs=3",
                         "plots=[]", f"hydra.sweep.dir={sweep}", *overrides)
    assert code == 0, err
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    runs = _runs(sweep)
    assert sorted(runs) == [0, 1, 2]
    return result, runs


def _overrides(run: Path) -> dict[str, str]:
    return dict(o.split("=", 1) for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()))


def test_optuna_maximises_the_objective_each_run_returns(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    # the example selects hydra/sweeper=optuna in its own defaults; objective: val_accuracy
    result, runs = _optuna(cli, tmp_path / "sweep")
    values = {n: _summary(r)["metrics"]["val"]["accuracy"] for n, r in runs.items()}
    assert result["best_value"] == pytest.approx(max(values.values()), rel=1e-9)
    best = [n for n, r in runs.items() if
            float(_overrides(r)["train.optimizer.lr"]) == pytest.approx(result["best_params"]["train.optimizer.lr"])]
    assert len(best) == 1 and values[best[0]] == pytest.approx(result["best_value"], rel=1e-9)
    # the search space came from the spec: three different learning rates and a width from the choice
    assert len({_overrides(r)["train.optimizer.lr"] for r in runs.values()}) == 3
    assert {_overrides(r)["vars.width"] for r in runs.values()} <= {"8", "16", "32"}


def test_optuna_minimises_another_objective(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    result, runs = _optuna(cli, tmp_path / "sweep", "objective=test_loss", "hydra.sweeper.direction=minimize")
    values = [_summary(r)["metrics"]["test"]["loss"] for r in runs.values()]
    assert result["best_value"] == pytest.approx(min(values), rel=1e-9)
    assert len(set(values)) == 3  # the trials differ, so min is a real choice


def test_objective_value_reads_the_final_metrics():
    from dsl.commands.run import natural_direction, objective_name, objective_value
    from dsl.parse import parse_spec

    summary = {"monitor": "val_loss", "metrics": {"train": {"loss": 0.3, "accuracy": 0.8},
                                                  "val": {"loss": 0.25, "accuracy": 0.9},
                                                  "test": {"loss": 0.2, "accuracy": 0.95}}}
    spec = parse_spec(yaml.safe_load(SMALL))
    assert objective_name(spec) == "val_loss" and objective_value(spec, summary) == 0.25  # the monitor
    assert natural_direction(spec) == "minimize"
    for name, value, direction in (("val_accuracy", 0.9, "maximize"), ("test_loss", 0.2, "minimize"),
                                   ("accuracy", 0.8, "maximize"), ("train_loss", 0.3, "minimize")):
        spec = parse_spec({**yaml.safe_load(SMALL), "objective": name})
        assert objective_value(spec, summary) == value and natural_direction(spec) == direction
    # a run without a validation split monitors the training loss: that is what it returns
    spec = parse_spec({**yaml.safe_load(SMALL), "train": {"epochs": 2, "early_stopping": {"mode": "max"}}})
    assert objective_value(spec, {**summary, "monitor": "loss"}) == 0.3
    assert natural_direction(spec) == "maximize"  # an explicit early-stopping mode wins


# --- errors: one line, exit status 2, nothing trained ------------------------------------------

@pytest.mark.parametrize("text,expected", [
    (SMALL + "objective: val_acuracy\n",
     "bad.yaml:11 objective: unknown objective 'val_acuracy' (did you mean 'val_accuracy'?)"),
    (SMALL + "objective: val_f1\n",
     "bad.yaml:11 objective: 'val_f1' is not recorded: add f1 to train.metrics (it lists accuracy)"),
    (SMALL.replace("options: {n_samples: 200}", "options: {n_samples: 200}\n  split: {val: 0}")
     + "objective: val_accuracy\n",
     "bad.yaml:12 objective: 'val_accuracy' needs a validation split, but data.split.val is 0"),
    (SMALL.replace("metrics: [accuracy]", "metrics: auto") + "objective: val_r2\n",
     "bad.yaml:11 objective: 'val_r2' is not recorded by this run; choose from loss, accuracy, val_loss, "
     "val_accuracy, test_loss, test_accuracy"),
])
def test_objective_errors(text, expected, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    code, _, err = cli("run", "conf=bad.yaml")
    assert code == 2, err
    assert err.strip() == expected
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.json"))


def test_objective_error_from_the_command_line(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", "-m", f"conf={OPTUNA}", "objective=val_acc")
    assert code == 2
    assert err.strip() == ("objective: unknown objective 'val_acc' (did you mean 'val_accuracy'?) "
                           "(set on the command line: objective=val_acc)")
    assert not (tmp_path / "multirun").exists()


def test_direction_that_does_not_fit_the_objective(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", "-m", f"conf={OPTUNA}", "hydra.sweeper.direction=minimize")
    assert code == 2
    assert err.strip() == ("hydra.sweeper.direction: minimize does not fit objective val_accuracy, which is "
                           "better higher: set hydra.sweeper.direction=maximize "
                           "(set on the command line: hydra.sweeper.direction=minimize)")
    (tmp_path / "spec.yaml").write_text("defaults:\n  - override hydra/sweeper: optuna\n" + SMALL
                                        + "hydra:\n  sweeper:\n    direction: maximize\n")
    code, _, err = cli("run", "-m", "conf=spec.yaml")
    assert code == 2
    assert err.strip() == ("spec.yaml:15 hydra.sweeper.direction: maximize does not fit objective val_loss, "
                           "which is better lower: set hydra.sweeper.direction=minimize or name another objective")
    code, _, err = cli("run", "-m", f"conf={OPTUNA}", "hydra.sweeper.direction=[maximize,minimize]")
    assert code == 2 and "lists 2 directions" in err
    assert not (tmp_path / "multirun").exists()


def test_spec_cannot_name_a_function_for_the_sweeper(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text("defaults:\n  - override hydra/sweeper: optuna\n" + SMALL
                                        + "hydra:\n  sweeper:\n    custom_search_space: os.system\n")
    code, _, err = cli("run", "-m", "conf=spec.yaml")
    assert code == 2
    assert err.strip().startswith("spec.yaml:15 hydra.sweeper.custom_search_space: specs never execute code")
    assert not (tmp_path / "multirun").exists()
