"""train.precision: bfloat16 computes in bfloat16 from float32 master weights, and learns as float32 does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import ROOT

IRIS = str(ROOT / "examples" / "iris.yaml")


def _plan(*overrides):
    from compilers.pipeline import plan_spec
    from dsl.commands.run import prepare

    spec = prepare([f"conf={IRIS}", *overrides], Path.cwd(), sweep_ok=False)[4]
    return plan_spec(spec, ROOT)


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_weights():
    import jax
    import jax.numpy as jnp

    from compilers.train.step import epoch_order, hyperparams, make_programs

    data, plan = _plan("train.precision=bfloat16")
    programs = make_programs(plan)
    state = programs.init(jnp.int32(0), hyperparams(plan))
    X, Y = jnp.asarray(data.x["train"]), jnp.asarray(data.y["train"])
    order = epoch_order(0, 1, plan.sizes["train"], plan.train.batch_size)
    hlo = programs.lower_epoch(state, X, Y, order, None).as_text()
    assert "bf16" in hlo                                   # the network runs in bfloat16 ...
    state, stats, _ = programs.train_epoch(state, X, Y, order, None)
    for leaf in jax.tree_util.tree_leaves(state.params):   # ... its weights stay float32
        assert leaf.dtype == jnp.float32
    assert np.isfinite(float(stats["loss"]))
    _, plan32 = _plan()
    programs32 = make_programs(plan32)
    s32 = programs32.init(jnp.int32(0), hyperparams(plan32))
    assert "bf16" not in programs32.lower_epoch(s32, X, Y, order, None).as_text()


def test_bfloat16_learns_iris_about_as_well_as_float32(tmp_path):
    from compilers.pipeline import run_spec
    from dsl.commands.run import prepare

    def run(name, *extra):
        spec = prepare([f"conf={IRIS}", "plots=[]", *extra], Path.cwd(), sweep_ok=False)[4]
        run_spec(spec, tmp_path / name, ROOT, progress=False)
        return json.loads((tmp_path / name / "summary.json").read_text())

    f32, bf16 = run("f32"), run("bf16", "train.precision=bfloat16")
    history = [json.loads(x) for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(h["loss"]) for h in history)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]                       # it learns
    for split in ("val", "test"):
        assert abs(bf16["metrics"][split]["accuracy"] - f32["metrics"][split]["accuracy"]) <= 0.1
        assert abs(bf16["metrics"][split]["loss"] - f32["metrics"][split]["loss"]) <= 0.1


def test_importing_dsl_and_asking_for_help_do_not_import_jax():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import sys, dsl, dsl.cli, dsl.spec, dsl.parse, dsl.registry\n"
            "assert 'jax' not in sys.modules, 'import dsl imported jax'\n"
            "from dsl.cli import main\n"
            "main(['--help'])\n"
            "assert 'jax' not in sys.modules, '--help imported jax'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout
