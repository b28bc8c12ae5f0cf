"""`python -m dsl run`'s training process (dsl.worker): forked first thing, it imports JAX while the
command composes the spec, then trains the checked job. These run the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

IRIS = ROOT / "examples" / "iris.yaml"
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the training process is forked")


def _env(marker: str, worker: str = "1") -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), "DSL_WORKER": worker,
            "DSL_TEST_MARKER": f"{marker}-{os.getpid()}"}   # this test process's own runs only


def _run(tmp_path: Path, marker: str, *args: str, worker: str = "1") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsl", "run", *args], cwd=tmp_path, env=_env(marker, worker),
                          capture_output=True, text=True, timeout=600)


def _processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds DSL_TEST_MARKER=marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"DSL_TEST_MARKER={marker}-{os.getpid()}".encode() in env.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def _none_left(marker: str, within: float = 5.0) -> bool:
    end = time.time() + within
    while _processes_with(marker):
        if time.time() > end:
            return False
        time.sleep(0.05)
    return True


def _start_training(tmp_path: Path, marker: str, **streams) -> subprocess.Popen:
    """A run with no end in sight, once it has logged 3 epochs."""
    proc = subprocess.Popen([sys.executable, "-m", "dsl", "run", f"conf={IRIS}", "train.epochs=100000",
                             "train.early_stopping=null", "plots=[]", "hydra.run.dir=run"], cwd=tmp_path,
                            env=_env(marker), **streams)
    end = time.time() + 240
    metrics = tmp_path / "run" / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.time() < end
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("plots", ["[learning_curves, confusion_matrix]", "auto"])
def test_a_run_through_the_training_process_equals_one_in_a_single_process(tmp_path, plots):
    """The same metrics, and the same charts: the command draws them from the record the training
    process saved (with the image processes it started), not from that process's memory; for
    `plots: auto` it picks the same charts from the task and the inputs the child reports."""
    args = (f"conf={IRIS}", "train.epochs=4", f"plots={plots}")
    forked = _run(tmp_path, "w1", *args, "hydra.run.dir=forked")
    single = _run(tmp_path, "w0", *args, "hydra.run.dir=single", worker="0")
    assert forked.returncode == 0, forked.stderr
    assert single.returncode == 0, single.stderr
    a = json.loads((tmp_path / "forked" / "summary.json").read_text())
    b = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert a["status"] == b["status"] == "completed"
    assert a["metrics"] == b["metrics"]
    assert (tmp_path / "forked" / "metrics.jsonl").read_text().count("\n") == 4
    assert a["charts"] == b["charts"] and set(a["charts"].values()) == {"ok"}
    assert {"learning_curves", "confusion_matrix"} <= set(a["charts"])
    assert len(a["charts"]) == 2 if plots != "auto" else len(a["charts"]) >= 10   # auto: iris draws 14
    for name in a["charts"]:
        assert (tmp_path / "forked" / "charts" / f"{name}.vl.json").read_text() == \
            (tmp_path / "single" / "charts" / f"{name}.vl.json").read_text()
        assert (tmp_path / "forked" / "charts" / f"{name}.png").stat().st_size > 1000
    assert "learning_curves" in (tmp_path / "forked" / "report.html").read_text()
    assert set(a["times"]) == set(b["times"]) and a["times"]["charts_s"] > 0
    # the training process had JAX imported before its job arrived: the run's own imports are a few ms
    assert a["times"]["imports_s"] < 0.5
    assert "report: " in forked.stdout and "iris-mlp: test loss" in forked.stdout
    assert "Traceback" not in forked.stderr
    assert _none_left("w1") and _none_left("w0")


def test_bad_input_found_while_composing_leaves_no_process_and_no_run(tmp_path):
    done = _run(tmp_path, "bad1", f"conf={IRIS}", "train.epochs=many", "hydra.run.dir=run")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "train.epochs" in line and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
    assert _none_left("bad1")


def test_bad_data_found_by_the_training_process_is_one_line_and_removes_the_run(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,4\n5,6\n7,8\n")
    (tmp_path / "t.yaml").write_text("name: t\ndata: {source: t.csv, target: label}\nmodel: {layers: [{dense: 4}]}\n"
                                     "train: {epochs: 2}\nplots: []\n")
    done = _run(tmp_path, "bad2", "conf=t.yaml", "hydra.run.dir=run")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "label" in line and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
    assert _none_left("bad2")


def test_killing_the_command_ends_the_training_process(tmp_path):
    proc = _start_training(tmp_path, "kill9", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trainers = [p for p in _processes_with("kill9") if p != proc.pid]
    assert trainers, "the run trains in a process of its own"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _none_left("kill9")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "running"


def test_sigterm_to_the_command_reaches_the_training_process(tmp_path):
    proc = _start_training(tmp_path, "term", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert _none_left("term")


def test_a_job_that_changes_the_environment_runs_in_the_command_itself(tmp_path):
    """hydra.job.env_set is applied after the fork (JAX may read it at import): the training process
    declines such a job and the command trains it itself."""
    done = _run(tmp_path, "env", f"conf={IRIS}", "train.epochs=2", "plots=[]", "hydra.run.dir=run",
                "+hydra.job.env_set.DSL_SOMETHING=1")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["times"]["imports_s"] > 0.15   # JAX imported in the job
    assert _none_left("env")


def test_a_training_process_killed_from_outside_is_reported_by_the_command(tmp_path):
    """The kernel's OOM killer ends the training process, not the command: the command says so."""
    proc = _start_training(tmp_path, "oom", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (trainer,) = [p for p in _processes_with("oom") if p != proc.pid and
                  Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(proc.pid)]
    os.kill(trainer, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGKILL
    assert err.strip().splitlines()[-1] == f"the training process (pid {trainer}) was ended by SIGKILL"
    assert _none_left("oom")


PREPARE = """
import os, sys, time
from dsl import worker

worker._PRELOAD = ()
mode, flag = sys.argv[1], sys.argv[2]


def serve(job, ask):
    if mode == "notice":   # data loaded and small: the command prepares with no request to answer
        ask.notify("prepare")
        end = time.time() + 60
        while not os.path.exists(flag):
            if time.time() > end:
                return 3
            time.sleep(0.01)
    return 0 if ask({"draw": 1}) == {"prepared": 1} else 4


handle = worker.Worker.start(serve)
log = []


def prepare():
    log.append("prepare")
    open(flag, "w").close()


code = handle.run({}, lambda request: {"prepared": log.count("prepare")}, prepare=prepare)
print(code, log)
"""


@pytest.mark.parametrize("mode", ["notice", "request"])
def test_the_command_prepares_its_charts_once_at_the_training_process_s_word(tmp_path, mode):
    """The image processes and altair start when the training process says its data is loaded and
    small (a notice, answered by nothing), else when it first asks for something (its charts)."""
    out = subprocess.run([sys.executable, "-c", PREPARE, mode, str(tmp_path / "prepared")], cwd=ROOT,
                         env=_env("prepare"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "['prepare']"]


LEAN = """
import sys, time
from dsl import worker

mode = sys.argv[1]
early = mode in ("needs", "lean")
worker._PRELOAD = ("slow_import",) if early else ()    # the job comes while the child preloads, or after
asked = []


def wants(job):
    asked.append(job is not None)
    return mode == "needs" if job is not None else mode != "large"


handle = worker.Worker.start(lambda job, ask: 10 + ("pandas" in sys.modules) + 2 * asked[0], wants_pandas=wants)
if not early:
    time.sleep(1)
print(handle.run({}, lambda request: {}))
"""


@pytest.mark.parametrize("mode,code", [("needs", 13), ("lean", 12), ("large", 10), ("late", 11)])
def test_the_training_process_preloads_pandas_only_for_a_job_that_may_need_it(mode, code, tmp_path):
    """Asked with the job when it came before the preload ended: pandas for one that needs it
    ("needs"), not for one the columnar loader reads ("lean"). Asked with None when it has not
    come: not for a large numeric file ("large"), else yes, while the command composes ("late")."""
    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(1)\n")
    env = {**_env("lean"), "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    out = subprocess.run([sys.executable, "-c", LEAN, mode], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(code)]


def test_which_runs_read_a_large_file(tmp_path, monkeypatch):
    from compilers.data import sources
    from dsl.commands import run

    monkeypatch.setattr(sources, "LARGE_FILE_BYTES", 1000)
    (tmp_path / "big.csv").write_text("a,y\n" + "1.5,0\n" * 200)          # 1,204 bytes
    (tmp_path / "small.csv").write_text("a,y\n1.5,0\n")
    (tmp_path / "parts").mkdir()
    for i in range(3):
        (tmp_path / "parts" / f"p-{i}.parquet").write_bytes(b"x" * 400)    # 1,200 bytes together
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {source: big.csv, target: y}\nmodel: {layers: [{dense: 2}]}\n")
    assert run.reads_a_large_file([f"conf={spec}"], tmp_path)
    assert not run.reads_a_large_file([f"conf={spec}", "data.source=small.csv"], tmp_path)
    assert run.reads_a_large_file([f"conf={spec}", "data.source='parts/p-*.parquet'"], tmp_path)
    assert not run.reads_a_large_file([f"conf={spec}", "data.source=iris"], tmp_path)
    assert not run.reads_a_large_file([f"conf={spec}", "data.source=${vars.file}"], tmp_path)
    assert not run.reads_a_large_file(["conf=missing.yaml"], tmp_path)
    assert not run.reads_a_large_file([f"conf={IRIS}"], tmp_path)


def test_which_jobs_want_pandas(tmp_path):
    from dsl.commands import run

    def wants(data):
        return run._wants_pandas([], tmp_path, {"config": {"data": data, "model": {"layers": [{"dense": 2}]}}})

    assert not wants({"source": "iris", "prep": ["standardize"]})             # a built-in table of numbers
    assert not wants({"source": "t.csv", "target": "y"})                      # a file the columnar loader reads
    assert wants({"source": "iris", "prep": [{"impute": "most_frequent"}]})   # a step only the frame path does
    assert wants({"source": "t.npz"})
    assert wants({"source": 3})                                               # not a spec: as before
    assert run._wants_pandas([f"conf={IRIS}"], tmp_path, None)                 # no job yet, no large file
