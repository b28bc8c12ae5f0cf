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
    base = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "DSL_COMPILATION_CACHE": "0"}
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
