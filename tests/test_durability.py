"""A run is durable: checkpoints hold the whole training state, `resume` goes on after kill -9 or
Ctrl-C and ends bitwise where an uninterrupted run ends, and the run's files never tear."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

IRIS = str(ROOT / "examples" / "iris.yaml")
# batch 4: 27 steps an epoch, slow enough to interrupt mid-run; checkpoints every 3 epochs
ARGS = ["train.epochs=40", "train.batch_size=4", "train.checkpoint.every=3", "train.checkpoint.keep=2",
        "plots=[learning_curves,gradients,weight_histograms]", "train.early_stopping.patience=30"]


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dsl", "run", f"conf={IRIS}", f"hydra.run.dir={run_dir}",
                             *ARGS, *extra], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _lines(run_dir: Path) -> int:
    try:
        return (run_dir / "metrics.jsonl").read_text().count("\n")
    except OSError:
        return 0


def _wait_for(run_dir: Path, proc: subprocess.Popen, epochs: int, timeout: float = 240.0) -> None:
    end = time.time() + timeout
    while _lines(run_dir) < epochs:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "the run did not get going"
        time.sleep(0.05)


def _final_state(run_dir: Path):
    from compilers.runs.checkpoint import Checkpoints

    ck = Checkpoints(run_dir, 10)
    try:
        tree, meta = ck.restore(ck.latest())
    finally:
        ck.close()
    return tree, meta


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _same_tree(a, b):
    import jax

    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))   # bitwise


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "run"
    proc = _start(run)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return run


def test_kill_9_then_resume_ends_bitwise_where_an_uninterrupted_run_ends(uninterrupted, tmp_path):
    run = tmp_path / "run"
    proc = _start(run)
    _wait_for(run, proc, 11)      # past the checkpoints of epochs 3, 6 and 9
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    assert _lines(run) < 40
    done = subprocess.run([sys.executable, "-m", "dsl", "resume", str(run)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    history, whole = _history(run), _history(uninterrupted)
    assert [h["epoch"] for h in history] == list(range(1, 41))          # every epoch exactly once
    for h, w in zip(history, whole):
        assert {k: v for k, v in h.items() if k != "time"} == {k: v for k, v in w.items() if k != "time"}
    (a, meta_a), (b, meta_b) = _final_state(run), _final_state(uninterrupted)
    _same_tree(a["state"]["params"], b["state"]["params"])
    _same_tree(a["state"]["opt_state"], b["state"]["opt_state"])
    _same_tree(a["model"], b["model"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["metrics"] == json.loads((uninterrupted / "summary.json").read_text())["metrics"]
    # the per-epoch probes survived the interruption too: the gradient chart has all 40 epochs
    record = json.loads((run / "record.json").read_text())
    assert (run / "charts" / "gradients.vl.json").is_file() and record


def test_ctrl_c_stops_after_the_epoch_with_a_checkpoint_and_a_report(uninterrupted, tmp_path):
    run = tmp_path / "run"
    proc = _start(run)
    _wait_for(run, proc, 5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "Ctrl-C" in summary["reason"]
    n = _lines(run)
    assert 5 <= n < 40
    assert (run / "report.html").is_file()
    _, meta = _final_state(run)
    assert len(meta["tracker"]["history"]) == n          # the checkpoint is of the last epoch logged
    assert "resume" in err.strip().splitlines()[-1]
    done = subprocess.run([sys.executable, "-m", "dsl", "resume", str(run)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (a, _), (b, _) = _final_state(run), _final_state(uninterrupted)
    _same_tree(a["model"], b["model"])
    assert [h["epoch"] for h in _history(run)] == list(range(1, 41))


def test_resume_refuses_what_cannot_go_on(uninterrupted, tmp_path, cli):
    code, _, err = cli("resume", str(uninterrupted))
    assert code == 2 and "has completed" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("resume", str(tmp_path))
    assert code == 2 and "not a run directory" in err
    code, _, err = cli("resume")
    assert code == 2 and "usage" in err


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    """kill -9 during a write can leave half a line; resume keeps whole lines of checkpointed epochs."""
    from compilers.pipeline import _keep_checkpointed_epochs, spec_of_run
    from compilers.runs.checkpoint import Checkpoints

    run = tmp_path / "run"
    proc = _start(run)
    _wait_for(run, proc, 8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 99, "loss": 0.1')           # torn
    ck = Checkpoints(run, 2)
    k = len(ck.restore_meta(ck.latest())["tracker"]["history"])
    ck.close()
    _keep_checkpointed_epochs(run, spec_of_run(run))
    assert [h["epoch"] for h in _history(run)] == list(range(1, k + 1))


def test_checkpoints_hold_the_whole_training_state(uninterrupted):
    tree, meta = _final_state(uninterrupted)
    assert set(meta["parts"]) >= {"state", "model", "probes", "best"}
    assert set(tree["state"]) == {"params", "model_state", "opt_state", "step", "rng"}
    rows = json.loads((uninterrupted / "summary.json").read_text())["data"]["sizes"]["train"]
    assert int(tree["state"]["step"]) == 40 * -(-rows // 4)         # 40 epochs of batches of 4
    assert {"lr", "b1", "b2", "eps"} <= set(tree["state"]["opt_state"]["hyperparams"] if isinstance(
        tree["state"]["opt_state"], dict) else tree["state"]["opt_state"][0])
    t = meta["tracker"]
    assert len(t["history"]) == 40 and t["best_epoch"] is not None and "since_best" in t
    assert np.asarray(tree["probes"]["grad_norms"]).shape[0] == 40
    # keep: 2 -> only the two newest checkpoints are left
    assert len([p for p in (uninterrupted / "checkpoints").iterdir() if p.name.isdigit()]) == 2


def test_same_spec_and_seed_give_identical_metrics(tmp_path, cli):
    def run(name, *extra):
        code, _, err = cli("run", f"conf={IRIS}", f"hydra.run.dir={tmp_path / name}", "train.epochs=6",
                           "plots=[]", *extra)
        assert code == 0, err
        return [{k: v for k, v in h.items() if k != "time"} for h in _history(tmp_path / name)]

    a, b, other = run("a"), run("b"), run("c", "seed=1")
    assert a == b                      # every value of every epoch, exactly
    assert a != other


# --- a cluster job's preemption signal (compilers.runs.preemption), in this process ---------------

class _Submitit:
    """Stands in for submitit's signal handler (compilers.runs.preemption knows it by its module)."""
    __module__ = "submitit.core.job_environment"

    def __init__(self):
        self.calls = []

    def handle(self, signum, frame):
        self.calls.append(signum)


@pytest.fixture()
def submitit_job(monkeypatch):
    """This process as a submitit job: submitit imported, its handler set for SIGUSR2."""
    monkeypatch.setitem(sys.modules, "submitit", sys.modules.get("submitit") or type(sys)("submitit"))
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    job = _Submitit()
    old = signal.signal(signal.SIGUSR2, job.handle)
    yield job
    signal.signal(signal.SIGUSR2, old)


def _spec(*extra):
    from dsl.commands.run import prepare

    return prepare([f"conf={IRIS}", "train.epochs=12", "train.batch_size=16", "train.checkpoint.every=5",
                    "plots=[learning_curves]", "report.images=none", "train.early_stopping=null", *extra],
                   ROOT, sweep_ok=False)[4]


def _numbers(run_dir: Path):
    return [{k: v for k, v in json.loads(x).items() if k != "time"}
            for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_preemption_signal_stops_training_after_the_epoch_and_the_requeued_job_goes_on(tmp_path, submitit_job):
    """The signal that comes before training (while the data loads) stops the run after its first
    epoch with a checkpoint; submitit's handler gets it only after the run's files are written; the
    job run again in the same directory goes on from the checkpoint to the numbers of a run never
    stopped."""
    from compilers.pipeline import requeued_run, run_spec
    from compilers.runs.preemption import Watch, came, hand_on
    from dsl.errors import RunInterrupted

    run = tmp_path / "job"
    with Watch():
        signal.raise_signal(signal.SIGUSR2)
        assert came() == signal.SIGUSR2 and submitit_job.calls == []    # set aside while the run goes
        with pytest.raises(RunInterrupted) as stopped:
            run_spec(_spec(), run, ROOT, progress=False, sweep_job=True)
    assert stopped.value.preempted == signal.SIGUSR2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["preempted"] == "SIGUSR2"
    assert summary["reason"].startswith("preempted (SIGUSR2) after epoch 1 of 12; a checkpoint")
    assert len(_numbers(run)) == 1 and (run / "report.html").exists() and (run / "checkpoints" / "1").is_dir()
    hand_on(stopped.value.preempted)
    assert submitit_job.calls == [signal.SIGUSR2]         # submitit's own handler: it requeues the job
    assert requeued_run(run)

    with Watch():
        summary = run_spec(_spec(), run, ROOT, progress=False, sweep_job=True)   # the job, requeued
    assert summary["status"] == "completed" and "preempted" not in summary and came() is None
    whole = run_spec(_spec(), tmp_path / "whole", ROOT, progress=False)
    assert _numbers(run) == _numbers(tmp_path / "whole") and len(_numbers(run)) == 12
    assert summary["metrics"] == whole["metrics"]
    assert not requeued_run(run)


def test_a_preemption_signal_after_training_lets_the_run_finish(tmp_path, submitit_job, monkeypatch):
    """Once training is over (the charts being drawn), the signal is noted and the run completes:
    the job ends done, and nothing asks submitit to requeue it."""
    from compilers import pipeline
    from compilers.runs.preemption import Watch, came

    draw = pipeline.draw_charts

    def draw_after_signal(*args, **kwargs):
        signal.raise_signal(signal.SIGUSR2)
        return draw(*args, **kwargs)

    monkeypatch.setattr(pipeline, "draw_charts", draw_after_signal)
    with Watch():
        summary = pipeline.run_spec(_spec(), tmp_path / "job", ROOT, progress=False, sweep_job=True)
        assert came() == signal.SIGUSR2
    assert summary["status"] == "completed" and len(_numbers(tmp_path / "job")) == 12
    assert submitit_job.calls == []


def test_outside_a_submitit_job_the_signal_is_left_alone(submitit_job, monkeypatch):
    from compilers.runs import preemption

    assert preemption.job_signal() == signal.SIGUSR2
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")      # submitit's handler is on USR2, not USR1
    assert preemption.job_signal() is None
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL")
    signal.signal(signal.SIGUSR2, lambda *a: None)             # a handler that is not submitit's
    assert preemption.job_signal() is None
    with preemption.Watch():
        assert signal.getsignal(signal.SIGUSR2) is not preemption.Watch._on_signal


def test_a_requeued_job_goes_on_with_a_run_that_did_not_finish(tmp_path):
    """SLURM_RESTART_COUNT > 0 (SLURM started the job again): a run left `running` (killed without
    the signal) or `interrupted` goes on; a finished one, or any run of a job never restarted, does not."""
    from compilers.pipeline import requeued_run

    run = tmp_path / "run"
    run.mkdir()
    assert not requeued_run(run, {"SLURM_RESTART_COUNT": "1"})          # no summary.json
    for status, first, again in (("running", False, True), ("interrupted", False, True),
                                 ("completed", False, False), ("failed", False, False)):
        (run / "summary.json").write_text(json.dumps({"status": status}))
        assert requeued_run(run, {}) is first and requeued_run(run, {"SLURM_RESTART_COUNT": "0"}) is first
        assert requeued_run(run, {"SLURM_RESTART_COUNT": "2"}) is again, status
    (run / "summary.json").write_text(json.dumps({"status": "interrupted", "preempted": "SIGUSR2"}))
    assert requeued_run(run, {})
