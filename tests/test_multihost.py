"""Training across processes (compilers/train/distributed.py): when jax.distributed starts, and two
processes of two CPU devices each train exactly as one process of four devices does.

The processes are real: `python -m dsl run` twice, told about each other by JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID, talking over localhost (XLA:CPU's collectives are gloo's).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from compilers.train.distributed import settings

SLURM_STEP = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node[001-002]", "SLURM_NTASKS": "4",
              "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}


def test_the_environment_decides_when_jax_distributed_starts():
    assert settings({}) is None
    explicit = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert settings(explicit) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}
    assert settings({**explicit, "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"}) is None
    assert settings({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}) is None       # half a description
    # a SLURM job step of several tasks: JAX reads the rest from SLURM's variables
    assert settings(SLURM_STEP) == {}
    assert settings({**SLURM_STEP, "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1"}) is None
    # the batch script of a job that asked for 4 tasks runs once: no step, no job step's node list
    batch = {k: v for k, v in SLURM_STEP.items() if k not in ("SLURM_STEP_NODELIST", "SLURM_STEP_NUM_TASKS")}
    assert settings(batch) is None
    assert settings({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:5", "OMPI_COMM_WORLD_SIZE": "2"}) == {}
    # DSL_DISTRIBUTED decides over everything else
    assert settings({"DSL_DISTRIBUTED": "1"}) == {}
    assert settings({**SLURM_STEP, "DSL_DISTRIBUTED": "0"}) is None
    assert settings({**explicit, "DSL_DISTRIBUTED": "0"}) is None
    with pytest.raises(ValueError, match="DSL_DISTRIBUTED='maybe'"):
        settings({"DSL_DISTRIBUTED": "maybe"})
    # the tasks of a job of submitit's local executor (JAX does not detect them itself)
    local = {"SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_JOB_ID": "4097"}
    assert settings(local) == {"coordinator_address": "127.0.0.1:61441", "num_processes": 2, "process_id": 1}
    assert settings({**local, "SUBMITIT_LOCAL_NTASKS": "1"}) is None


def test_jax_itself_detects_the_slurm_step_we_start_for(monkeypatch):
    """settings() says {} for a SLURM step and lets jax.distributed.initialize find the rest; this
    installed JAX must see that step too (a private module: a JAX upgrade may move it)."""
    slurm = pytest.importorskip("jax._src.clusters.slurm_cluster")
    for k, v in SLURM_STEP.items():
        monkeypatch.setenv(k, v)
    env = slurm.SlurmCluster
    assert env.is_env_present()
    assert (env.get_process_count(), env.get_process_id()) == (4, 1)
    assert env.get_coordinator_address(None, None).startswith("node001:")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _history(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_of_two_devices_train_like_one_process_of_four(tmp_path):
    args = [sys.executable, "-m", "dsl", "run", f"conf={ROOT / 'examples' / 'iris.yaml'}", "train.epochs=6",
            "train.batch_size=16", "train.devices=4", "plots=[]", "report.images=none"]
    # XLA's optimizations off (for every process alike) halve the compile time; the partitioning and
    # the collectives under test are the same
    base = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "DSL_COMPILATION_CACHE": "0",
            "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    for k in [k for k in base if k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "DSL_DISTRIBUTED"))]:
        del base[k]
    one = {**base, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    port = _free_port()
    several = {**base, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
               "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
    tmp1 = tmp_path / "tmp1"          # process 1's temporary files: its scratch run directory
    tmp1.mkdir()
    # Process 1 is given a run directory of its own (under srun every task would get the same one):
    # only Hydra's .hydra/ may appear there; process 0 writes the run.
    runs = {"one": (one, tmp_path / "one"),
            "p0": ({**several, "JAX_PROCESS_ID": "0"}, tmp_path / "several"),
            "p1": ({**several, "JAX_PROCESS_ID": "1", "TMPDIR": str(tmp1)}, tmp_path / "p1")}
    procs = {name: subprocess.Popen([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (env, run_dir) in runs.items()}
    out = {}
    try:
        for name, p in procs.items():
            out[name] = p.communicate(timeout=240)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for name, p in procs.items():
        assert p.returncode == 0, (name, out[name][1][-3000:])

    a, b = _history(tmp_path / "one"), _history(tmp_path / "several")
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b):
        for k in ra:
            if k != "time":
                assert abs(ra[k] - rb[k]) <= 1e-4 * max(1.0, abs(ra[k])), (k, ra[k], rb[k])
    sa = json.loads((tmp_path / "one" / "summary.json").read_text())
    sb = json.loads((tmp_path / "several" / "summary.json").read_text())
    for split, metrics in sa["metrics"].items():
        for k, v in metrics.items():
            assert abs(v - sb["metrics"][split][k]) <= 1e-4, (split, k)
    # process 0 wrote the whole run; process 1 wrote nothing of its own and left no scratch behind
    assert sorted(os.listdir(tmp_path / "several")) == sorted(os.listdir(tmp_path / "one"))
    assert (tmp_path / "several" / "checkpoints").is_dir() and (tmp_path / "several" / "report.html").is_file()
    assert os.listdir(tmp_path / "p1") == [".hydra"]
    assert os.listdir(tmp1) == []
    assert sorted(os.listdir(tmp_path)) == ["one", "p1", "several", "tmp1"]


def test_a_run_that_fails_in_two_processes_names_the_run_directory_in_each(tmp_path):
    """A run that diverges fails in every process. Process 1 trained into a scratch directory that it
    removed; its message names its own run directory (under srun, every task's is process 0's)."""
    rows = "\n".join(f"{i / 100},{i * 1e25}" for i in range(100))   # the squared error overflows float32
    (tmp_path / "huge.csv").write_text("x,y\n" + rows + "\n")
    (tmp_path / "huge.yaml").write_text("name: huge\ndata: {source: huge.csv, target: y}\n"
                                        "model: {layers: [{dense: 4}]}\ntrain: {epochs: 2, devices: 4}\n"
                                        "plots: []\nreport: {images: none}\n")
    base = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "DSL_COMPILATION_CACHE": "0",
            "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}", "JAX_NUM_PROCESSES": "2"}
    for k in [k for k in base if k.startswith(("SLURM_", "OMPI_", "DSL_DISTRIBUTED"))]:
        del base[k]
    procs = [subprocess.Popen([sys.executable, "-m", "dsl", "run", "conf=huge.yaml", f"hydra.run.dir=run{i}"],
                              cwd=tmp_path, env={**base, "JAX_PROCESS_ID": str(i)}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1)]
    try:
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, err) in enumerate(zip(procs, errs)):
        assert p.returncode == 1, (i, err[-3000:])
        (line,) = [l for l in err.splitlines() if "training loss became" in l]
        assert line.startswith("huge: the training loss became nan at epoch 1"), line
        assert line.endswith(f"report: {tmp_path / f'run{i}' / 'report.html'}"), line
        assert "Traceback" not in err
    assert json.loads((tmp_path / "run0" / "summary.json").read_text())["status"] == "failed"
    assert os.listdir(tmp_path / "run1") == [".hydra"]


# --- the cluster example: Hydra's submitit launcher ----------------------------------------------

CLUSTER = ROOT / "examples" / "cluster_submitit.yaml"


def test_the_cluster_example_composes_with_the_submitit_slurm_launcher(cli):
    code, out, err = cli("validate", f"conf={CLUSTER}")
    assert code == 0, err
    code, out, err = cli("run", f"conf={CLUSTER}", "--cfg", "hydra")   # prints Hydra's config; runs nothing
    assert code == 0, err
    import yaml

    launcher = yaml.safe_load(out)["hydra"]["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["timeout_min"] == 60 and launcher["partition"] is None
    assert (launcher["signal_delay_s"], launcher["max_num_timeout"]) == (120, 3)   # requeued when stopped


def test_a_spec_may_not_give_the_launcher_shell_commands(tmp_path, cli):
    spec = tmp_path / "setup.yaml"
    spec.write_text("defaults:\n  - override hydra/launcher: submitit_slurm\ndata: {source: moons}\n"
                    "model: {layers: [{dense: 4}]}\nhydra:\n  launcher:\n    setup: [\"echo hi\"]\n")
    code, out, err = cli("validate", f"conf={spec}")
    assert code == 2
    assert "setup.yaml:7 hydra.launcher.setup: specs never execute code" in err


LOCAL = """\
defaults:
  - override hydra/launcher: submitit_local
name: two-tasks
data:
  source: iris
  prep: [standardize]
  split: {test: 0.2, val: 0.1, stratify: true}
model:
  layers: [{dense: 16}, relu, {dropout: 0.1}]
train: {epochs: 3, batch_size: 16, devices: 4}
plots: []
report: {images: none}
hydra:
  launcher: {tasks_per_node: 2, timeout_min: 4}
"""


def test_a_sweep_through_the_submitit_launcher_trains_each_job_on_two_processes(tmp_path):
    """The submitit launcher's local executor runs each job as 2 tasks, as SLURM would; each task
    has 2 CPU devices, so train.devices: 4 trains only if the tasks start jax.distributed together."""
    (tmp_path / "two_tasks.yaml").write_text(LOCAL)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "DSL_COMPILATION_CACHE": "0",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    for k in [k for k in env if k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "DSL_DISTRIBUTED"))]:
        del env[k]
    done = subprocess.run([sys.executable, "-m", "dsl", "run", "-m", "conf=two_tasks.yaml", "seed=3",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "sweep" / "sweep.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["status"] == "completed", lines     # written by task 0 only
    run = tmp_path / "sweep" / "0"
    assert len(_history(run)) == 3
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    logs = sorted(p.name for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2 and logs[0].endswith("_0_log.out") and logs[1].endswith("_1_log.out")


# --- preemption: submitit's signal, a checkpoint, the job requeued, the run going on -------------

PREEMPTED = """\
defaults:
  - override hydra/launcher: submitit_local
name: preempted
data:
  source: digits
  split: {{test: 0.2, val: 0.1, stratify: true}}
model:
  layers: [{{dense: 32}}, relu]
train: {{epochs: {epochs}, batch_size: 32, checkpoint: {{every: 50}}{devices}}}
plots: []
report: {{images: none}}
hydra:
  launcher: {{timeout_min: 4, tasks_per_node: {tasks}}}
"""


def _task_pids(sweep) -> list[int]:
    """The submitit tasks running jobs of `sweep` (their command line names its folder), by task number."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ")
            environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and str(sweep).encode() in cmd:
            rank = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"SUBMITIT_LOCAL_GLOBALID=")]
            found[int(rank[0]) if rank else 0] = int(entry)
    return [found[k] for k in sorted(found)]


def _preempt(tmp_path, env, *, tasks: int, signal_task: int | None, epochs: int, sweep: str = "sweep",
             attempts: int = 1):
    """A one-job sweep through submitit's local executor whose task `signal_task` gets SIGUSR2 (as
    SLURM sends it before the time limit) once 3 epochs are written (None: never), in each of its
    first `attempts` attempts (the job requeued is new processes); -> (the sweep directory, the
    submitit logs' text)."""
    import signal
    import time

    devices = ", devices: 4" if tasks > 1 else ""
    (tmp_path / "preempted.yaml").write_text(PREEMPTED.format(epochs=epochs, tasks=tasks, devices=devices))
    sweep = tmp_path / sweep
    command = subprocess.Popen([sys.executable, "-m", "dsl", "run", "-m", "conf=preempted.yaml",
                                f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics, sent, start = sweep / "0" / "metrics.jsonl", [], time.monotonic()
    seen: dict = {}     # each attempt's tasks -> the epochs written when they were first seen

    def written() -> int:
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    try:
        while command.poll() is None and time.monotonic() - start < 240:
            if signal_task is not None and len(sent) < attempts:
                pids = tuple(_task_pids(sweep))
                if len(pids) == tasks and pids not in seen:
                    seen[pids] = written()
                elif len(pids) == tasks and seen[pids] is not None and written() >= seen[pids] + 3:
                    os.kill(pids[signal_task], signal.SIGUSR2)
                    sent.append(written())
                    seen[pids] = None
            time.sleep(0.01)
    finally:
        if command.poll() is None:
            command.kill()
    out = command.communicate()[0]
    assert command.returncode == 0, out[-3000:]
    assert signal_task is None or (len(sent) == attempts and sent[-1] < epochs), "the run ended before it could be preempted"
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    return sweep, logs


def _plain_env():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "DSL_COMPILATION_CACHE": "0"}
    for k in [k for k in env if k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "DSL_DISTRIBUTED", "SUBMITIT_"))]:
        del env[k]
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task through /proc")
def test_a_preempted_submitit_job_is_requeued_and_goes_on_from_its_checkpoint(tmp_path):
    """SIGUSR2 mid-training: the run stops after the epoch, writes a checkpoint and its report,
    submitit requeues the job, and the job requeued goes on from the checkpoint to the end: every
    epoch once, each the same numbers as a run never stopped."""
    env = _plain_env()
    sweep, logs = _preempt(tmp_path, env, tasks=1, signal_task=0, epochs=150)
    assert "SIGUSR2: the job is preempted or its time is running out; training stops after the epoch in hand" in logs
    assert "Requeued job" in logs
    stopped = [line for line in logs.splitlines() if line.startswith("preempted: preempted (SIGUSR2) after epoch")]
    assert len(stopped) == 1 and "the job goes on when it is requeued" in stopped[0], logs[-3000:]
    run = sweep / "0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and "preempted" not in summary
    lines = [json.loads(x) for x in (sweep / "sweep.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["status"] == "completed"      # the stopped attempt wrote none
    # the same as a run never stopped (the sweep's own spec, trained whole in a directory of its own)
    done = subprocess.run([sys.executable, "-m", "dsl", "run", "conf=preempted.yaml", f"hydra.run.dir={tmp_path / 'whole'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    def numbers(run_dir):
        return [{k: v for k, v in row.items() if k != "time"} for row in _history(run_dir)]

    history = numbers(run)
    assert [row["epoch"] for row in history] == list(range(1, 151))
    assert history == numbers(tmp_path / "whole")
    assert summary["metrics"] == json.loads((tmp_path / "whole" / "summary.json").read_text())["metrics"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task through /proc")
def test_a_job_whose_requeues_ran_out_writes_its_line_and_leaves_a_run_to_resume(tmp_path):
    """submitit requeues a timed-out job max_num_timeout times (3 for its local executor; with a
    time limit of 4 minutes every signal counts as the time running out); at the 4th signal it does
    not. That job ends with its line in the sweep's table, not with submitit's error and a
    traceback, and its run goes on by hand from the last checkpoint."""
    env = _plain_env()
    sweep, logs = _preempt(tmp_path, env, tasks=1, signal_task=0, epochs=150, attempts=4)
    requeued = [x for x in logs.splitlines() if x.startswith("INFO:submitit:Requeued job")]   # (logged twice)
    assert len(requeued) == 3 and "Job not requeued because: timed-out too many times" in logs
    run = sweep / "0"
    (line,) = [json.loads(x) for x in (sweep / "sweep.jsonl").read_text().splitlines()]
    assert line["status"] == "failed"
    assert line["error"] == (f"preempted: the job was not requeued (timed-out too many times); "
                             f"go on with: python -m dsl resume {run}")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["preempted"] == "SIGUSR2"
    stopped_at = summary["epochs_run"]
    assert 12 <= stopped_at < 150 and len(_history(run)) == stopped_at
    done = subprocess.run([sys.executable, "-m", "dsl", "resume", str(run)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"going on from the checkpoint of epoch {stopped_at}" in done.stdout + done.stderr
    assert [row["epoch"] for row in _history(run)] == list(range(1, 151))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the tasks through /proc")
def test_a_signal_to_one_process_stops_every_process_after_the_same_epoch(tmp_path):
    """A job of 2 tasks training together (jax.distributed): SIGUSR2 reaches task 1 alone, yet both
    stop after the same epoch (they agree each epoch), task 0 has submitit requeue the job, and both
    tasks of the job requeued go on from the checkpoint that process 0 wrote (process 0 reads it for
    both) to the numbers of a job never stopped."""
    env = {**_plain_env(), "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    sweep, logs = _preempt(tmp_path, env, tasks=2, signal_task=1, epochs=100)
    assert "Requeued job" in logs
    stopped = [line for line in logs.splitlines() if line.startswith("preempted: preempted (SIGUSR2) after epoch")]
    epochs = {line.split(" after epoch ")[1].split(" of ")[0] for line in stopped}
    assert len(stopped) == 2 and len(epochs) == 1, logs[-3000:]         # both tasks, after the same epoch
    went_on = [line for line in logs.splitlines() if line.startswith("preempted: going on from the checkpoint of epoch")]
    assert len(went_on) == 2 and {line.rsplit(" ", 1)[1] for line in went_on} == epochs, logs[-3000:]
    run = sweep / "0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    lines = [json.loads(x) for x in (sweep / "sweep.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["status"] == "completed"
    whole, _ = _preempt(tmp_path, env, tasks=2, signal_task=None, epochs=100, sweep="whole")

    def numbers(run_dir):
        return [{k: v for k, v in row.items() if k != "time"} for row in _history(run_dir)]

    assert [row["epoch"] for row in numbers(run)] == list(range(1, 101))
    assert numbers(run) == numbers(whole / "0")
    assert summary["metrics"] == json.loads((whole / "0" / "summary.json").read_text())["metrics"]
