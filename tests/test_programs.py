"""What the compiled epoch computes depends on what the run will draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import ROOT

IRIS = str(ROOT / "examples" / "iris.yaml")


def _epoch(*overrides):
    import jax

    from compilers.pipeline import plan_spec
    from compilers.train.step import epoch_order, hyperparams, make_programs
    from dsl.commands.run import prepare

    spec = prepare([f"conf={IRIS}", *overrides], Path.cwd(), sweep_ok=False)[4]
    data, plan = plan_spec(spec, ROOT)
    programs = make_programs(plan)
    state = programs.init(np.int32(0), hyperparams(plan))
    X, Y = jax.device_put(data.x["train"]), jax.device_put(data.y["train"])
    text = programs.lower_epoch(state, X, Y, epoch_order(0, 1, plan.sizes["train"], plan.train.batch_size), None).as_text()
    _, stats, _ = programs.train_epoch(state, X, Y, epoch_order(0, 1, plan.sizes["train"], plan.train.batch_size), None)
    return programs, jax.device_get(stats), text


def test_gradient_norms_are_computed_only_for_the_gradients_chart():
    drawn, with_stats, with_text = _epoch("plots=[gradients]")
    _, without_stats, without_text = _epoch("plots=[learning_curves]")
    _, auto_stats, _ = _epoch("plots=auto")                         # auto draws gradients
    n_layers = len(drawn.grad_layers)
    assert n_layers == 3                                            # iris: dense, dense, head
    assert with_stats["grad_norm"].shape == auto_stats["grad_norm"].shape == (n_layers,)
    assert np.all(with_stats["grad_norm"] > 0)
    assert without_stats["grad_norm"].shape == (0,)
    assert without_text.count("sqrt") < with_text.count("sqrt")
    # the rest of the epoch is the same
    np.testing.assert_allclose(without_stats["loss"], with_stats["loss"], rtol=1e-6)
    np.testing.assert_array_equal(without_stats["confusion"], with_stats["confusion"])


def test_a_run_without_the_gradients_chart_records_none(tmp_path):
    from compilers.pipeline import run_spec
    from dsl.commands.run import prepare

    for plots, grads in (("[learning_curves]", 0), ("[learning_curves,gradients]", 3)):
        spec = prepare([f"conf={IRIS}", "train.epochs=3", f"plots={plots}"], Path.cwd(), sweep_ok=False)[4]
        run = tmp_path / str(grads)
        assert run_spec(spec, run, ROOT, progress=False)["status"] == "completed"
        saved = np.load(run / "record.npz")
        assert len([k for k in saved.files if k.startswith("grad/")]) == grads
