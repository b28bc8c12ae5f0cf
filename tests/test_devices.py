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
                 "metrics": summary["metrics"], "programs": summary["programs"]}
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
    for a, b in zip(one["history"], four["history"]):
        for k in a:
            if k != "time":
                assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])), (k, a[k], b[k])
    for split, metrics in one["metrics"].items():
        for k, v in metrics.items():
            assert abs(v - four["metrics"][split][k]) <= 1e-4, (split, k)
    # the gradients really are reduced across devices
    assert "all-reduce" in result["hlo"]
    assert result["errors"][0].startswith("train.devices: 8 devices asked for; this machine has 4")
    assert result["errors"][1].startswith("train.batch_size: 10 rows per step cannot be split evenly over 4")
