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


def test_the_step_loop_can_be_lowered_before_it_trains():
    """train.loop: step: lower_epoch traces the epoch (its Python loop of jitted steps) once; nothing
    made inside that trace may be kept for the calls that follow, which train as usual."""
    import jax

    from compilers.pipeline import plan_spec
    from compilers.train.step import epoch_order, hyperparams, make_programs
    from dsl.commands.run import prepare

    spec = prepare([f"conf={IRIS}", "train.loop=step"], Path.cwd(), sweep_ok=False)[4]
    data, plan = plan_spec(spec, ROOT)
    X, Y = jax.device_put(data.x["train"]), jax.device_put(data.y["train"])
    n, batch = plan.sizes["train"], plan.train.batch_size

    def losses(lower_first: bool):
        programs = make_programs(plan)
        state = programs.init(np.int32(0), hyperparams(plan))
        if lower_first:
            assert programs.lower_epoch(state, X, Y, epoch_order(0, 1, n, batch), None).as_text().startswith("module")
        out = []
        for epoch in (1, 2, 3):
            state, stats, _ = programs.train_epoch(state, X, Y, epoch_order(0, epoch, n, batch), None)
            stats = jax.device_get(stats)
            assert stats["n"] == n
            out.append(float(stats["loss"]) / n)
        return out

    lowered = losses(True)
    assert np.isfinite(lowered).all() and len(set(lowered)) == 3
    assert lowered == losses(False)


def test_an_epoch_order_covers_every_row_once_and_pads_with_the_first():
    from compilers.train.step import epoch_order

    a, b = epoch_order(3, 1, 10, 4), epoch_order(3, 2, 10, 4)
    assert a.shape == (3, 4) and a.dtype == np.int32
    assert sorted(a.ravel()[:10]) == list(range(10)) and list(a.ravel()[10:]) == list(a.ravel()[:2])
    assert not np.array_equal(a, b)                               # another epoch, another order
    assert np.array_equal(a, epoch_order(3, 1, 10, 4))             # the same (seed, epoch), the same
    assert not np.array_equal(a, epoch_order(4, 1, 10, 4))
    group = epoch_order([3, 4], 1, 10, 4)                           # a vmapped group: one per seed
    assert group.shape == (2, 3, 4) and np.array_equal(group[0], a)
    tiny = epoch_order(0, 1, 3, 8)                                  # fewer rows than a batch
    assert tiny.shape == (1, 8) and sorted(tiny[0, :3]) == [0, 1, 2]
