"""train.devices: data-parallel training over a mesh on the batch axis gives the metrics of one device.

The CPU is split into 4 devices with XLA_FLAGS=--xla_force_host_platform_device_count=4, which must
be set before JAX starts: the runs happen in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = r"""
import json, sys
from pathlib import Path
import jax, jax.numpy as jnp
assert len(jax.local_devices()) == 4
from compilers.pipeline import plan_spec, run_spec
from compilers.train.step import epoch_order, hyperparams, make_programs
from dsl.commands.run import prepare
from dsl.errors import SpecError

out, root = Path(sys.argv[1]), Path(sys.argv[2])
def spec(*extra):
    return prepare([f"conf={root / 'examples' / 'iris.yaml'}", "train.epochs=15", "train.batch_size=16",
                    "plots=[]", *extra], root, sweep_ok=False)[4]
result = {}
for n in (1, 4):
    summary = run_spec(spec(f"train.devices={n}"), out / str(n), root, progress=False)
    result[n] = {"history": [json.loads(x) for x in (out / str(n) / "metrics.jsonl").read_text().splitlines()],
                 "metrics": summary["metrics"], "programs": summary["programs"], "devices": summary["devices"]}
data, plan = plan_spec(spec("train.devices=4"), root)
programs = make_programs(plan)
state = programs.init(jnp.int32(0), hyperparams(plan))
X, Y = jnp.asarray(data.x["train"]), jnp.asarray(data.y["train"])
result["hlo"] = programs.lower_epoch(state, X, Y, epoch_order(0, 1, plan.sizes["train"], plan.train.batch_size), None).compile().as_text()
errors = []
for extra in (["train.devices=8"], ["train.devices=4", "train.batch_size=10"]):
    try:
        plan_spec(spec(*extra), root)
    except SpecError as e:
        errors.append(str(e))
result["errors"] = errors
print(json.dumps(result))
"""


def _same_numbers(history1, history4, metrics1, metrics4) -> None:
    """Every epoch's line (but its time) and every final metric agree within 1e-4."""
    for a, b in zip(history1, history4):
        for k in a:
            if k != "time":
                assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])), (k, a[k], b[k])
    for split, metrics in metrics1.items():
        for k, v in metrics.items():
            assert abs(v - metrics4[split][k]) <= 1e-4, (split, k)


def test_four_devices_give_the_metrics_of_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "DSL_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(ROOT)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    one, four = result["1"], result["4"]
    # a process that sees several devices traces its programs (a stored program is one device's)
    assert one["programs"] == four["programs"] == {"loaded": 0, "exported": 0, "unsaved": 0, "unstored": 0}
    assert len(one["history"]) == len(four["history"]) == 15
    assert (one["devices"], four["devices"]) == (1, 4)
    _same_numbers(one["history"], four["history"], one["metrics"], four["metrics"])
    # the gradients really are reduced across devices
    assert "all-reduce" in result["hlo"]
    assert result["errors"][0].startswith("train.devices: 8 devices asked for; this machine has 4")
    assert result["errors"][1].startswith("train.batch_size: 10 rows per step cannot be split evenly over 4")


def test_a_vmapped_group_spreads_its_members_over_the_devices(tmp_path):
    """hydra/launcher=vmap with train.devices=4 on 4 devices: each device trains one of the 4 models,
    and every job's epochs and final metrics are those it gets with the group on one device."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "DSL_CACHE_DIR": str(tmp_path / "cache")}
    runs = {}
    for n in (1, 4):
        sweep = tmp_path / f"on{n}"
        done = subprocess.run([sys.executable, "-m", "dsl", "run", "-m", f"conf={ROOT / 'examples' / 'moons.yaml'}",
                               "hydra/launcher=vmap", "seed=0,1,2,3", "train.epochs=4", "plots=[]",
                               f"train.devices={n}", f"hydra.sweep.dir={sweep}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[n] = [(json.loads((sweep / str(j) / "summary.json").read_text()),
                    [json.loads(x) for x in (sweep / str(j) / "metrics.jsonl").read_text().splitlines()])
                   for j in range(4)]
    for (s1, h1), (s4, h4) in zip(runs[1], runs[4]):
        assert (s1["devices"], s4["devices"]) == (1, 4)
        assert s1["times"]["members"] == s4["times"]["members"] == 4      # one group of four, both times
        assert len(h1) == len(h4) == 4
        _same_numbers(h1, h4, s1["metrics"], s4["metrics"])
    # the four models differ (the seeds are theirs), so a mix-up of members would show
    assert len({h[-1]["loss"] for _, h in runs[4]}) == 4


def test_how_many_devices_a_group_takes():
    from compilers.train.loop import spread

    assert [spread(4, m) for m in (1, 2, 3, 4, 6, 8, 16)] == [1, 2, 3, 4, 3, 4, 4]
    assert spread(1, 16) == 1 and spread(8, 12) == 6 and spread(2, 7) == 1
