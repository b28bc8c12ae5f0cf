"""hydra/launcher=vmap: which jobs train together, and that each job's results are those of the
same job trained alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

IRIS = str(ROOT / "examples" / "iris.yaml")


def _spec(*overrides: str, conf: str = IRIS):
    from dsl.commands.run import prepare

    return prepare([f"conf={conf}", *overrides], Path.cwd(), sweep_ok=False)[4]


def _key(*overrides: str, conf: str = IRIS):
    from compilers.train.group import structure_key

    return structure_key(_spec(*overrides, conf=conf))


@pytest.mark.parametrize("overrides", [
    ("seed=3",),
    ("train.optimizer.lr=0.5",),
    ("train.optimizer.eps=1e-6",),
    ("train.optimizer.name=adamw", "train.optimizer.weight_decay=0.1"),
    ("train.optimizer.b1=0.8",),
    ("data.split.seed=7",),
    ("train.early_stopping.patience=3",),
    ("train.checkpoint.every=2",),
    ("name=other",),
    ("plots=[learning_curves]",),
    ("report.images=svg",),
])
def test_traced_values_share_a_program(overrides):
    base = ("train.optimizer.name=adamw",) if "train.optimizer.name=adamw" in overrides else ()
    assert _key(*overrides) == _key(*base)


@pytest.mark.parametrize("overrides", [
    ("vars.width=32",),
    ("train.batch_size=8",),
    ("train.epochs=7",),
    ("train.optimizer.name=sgd",),
    ("train.optimizer.clip_norm=1.0",),
    ("train.schedule.name=constant",),
    ("model.layers.1=tanh",),
    ("train.metrics=[accuracy]",),
    ("data.split.val=0.2",),
])
def test_structural_values_split_groups(overrides):
    assert _key(*overrides) != _key()


CNN = str(ROOT / "examples" / "digits_cnn.yaml")   # ends with dropout 0.2


def test_dropout_rates_are_traced_but_dropping_dropout_is_not():
    assert _key("model.layers.5.dropout=0.5", conf=CNN) == _key(conf=CNN)
    assert _key("model.layers.5.dropout=0.0", conf=CNN) != _key(conf=CNN)


def test_dropout_rates_live_in_the_model_state():
    from compilers.pipeline import plan_spec
    from compilers.train.step import hyperparams

    _, plan = plan_spec(_spec("model.layers.5.dropout=0.3", conf=CNN), ROOT)
    assert hyperparams(plan)["model"] == {"layers_5": {"rate": np.float32(0.3)}}


def test_group_jobs_keeps_order_skips_failed_jobs_and_caps_groups():
    from compilers.train.group import group_jobs

    specs = [_spec("seed=0"), _spec("vars.width=32"), None, _spec("seed=1"), _spec("vars.width=32", "seed=5"),
             _spec("seed=2")]
    assert group_jobs(specs) == [[0, 3, 5], [1, 4]]
    assert group_jobs(specs, max_members=2) == [[0, 3], [1, 4], [5]]


def _jobs(sweep: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in (sweep / "sweep.jsonl").read_text().splitlines()]
    return {" ".join(sorted(o for o in line["overrides"] if not o.startswith("hydra"))): line for line in lines}


def _history(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _assert_same_history(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for k in ra:
            if k == "time":
                continue
            np.testing.assert_allclose(ra[k], rb[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """One vmap sweep and the same jobs with the basic launcher: 2 learning rates x 2 seeds, with
    different early-stopping patience per seed so the members stop at different epochs."""
    import sys

    from conftest import run_cli

    class Capsys:  # run_cli reads captured output; a module fixture has no capsys
        def readouterr(self):
            return "", ""

    out = tmp_path_factory.mktemp("vmap")
    common = ["run", "-m", f"conf={IRIS}", "train.epochs=12", "plots=[learning_curves,confusion_matrix]",
              "train.optimizer.lr=0.05,0.002", "seed=0,1", "train.early_stopping.patience=3"]
    dirs = {}
    for launcher in ("vmap", "basic"):
        sweep = out / launcher
        args = common + [f"hydra.sweep.dir={sweep}"] + (["hydra/launcher=vmap"] if launcher == "vmap" else [])
        code, _, _ = run_cli(args, Capsys())
        assert code == 0
        dirs[launcher] = sweep
    return dirs


def test_vmap_jobs_match_jobs_run_alone(sweeps):
    vm, basic = _jobs(sweeps["vmap"]), _jobs(sweeps["basic"])
    assert len(vm) == 4 and set(vm) == set(basic)
    assert all(line["members"] == 4 for line in vm.values())
    lengths = set()
    for key, line in vm.items():
        assert line["status"] == "completed", line
        a, b = _history(line["run_dir"]), _history(basic[key]["run_dir"])
        _assert_same_history(a, b)
        lengths.add(len(a))
        for split, metrics in line["metrics"].items():
            for name, value in metrics.items():
                assert value == pytest.approx(basic[key]["metrics"][split][name], rel=1e-4, abs=1e-6), (key, split, name)
        assert line["best_epoch"] == basic[key]["best_epoch"]
    # the learning rates differ 25-fold, so the models do not all stop together: early stopping
    # (and its best-epoch restore) is kept per model
    assert len(lengths) > 1 or max(lengths) == 12


def test_vmap_jobs_write_complete_run_directories(sweeps):
    for line in _jobs(sweeps["vmap"]).values():
        run = Path(line["run_dir"])
        for name in ("metrics.jsonl", "summary.json", "record.json", "prep.json", "report.html",
                     "charts/learning_curves.vl.json", "charts/confusion_matrix.vl.json", ".hydra/overrides.yaml"):
            assert (run / name).is_file(), name
        assert any((run / "checkpoints").iterdir())
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["times"]["members"] == 4
        # jobs of a sweep leave images to the browser (report.images: auto)
        assert not list((run / "charts").glob("*.png"))


def test_vmap_sweep_groups_by_shape_and_reports_a_failing_job(tmp_path, cli):
    sweep = tmp_path / "s"
    code, _, err = cli("run", "-m", f"conf={IRIS}", "hydra/launcher=vmap", f"hydra.sweep.dir={sweep}", "train.epochs=2",
                       "plots=[]", "vars.width=4,8", "train.optimizer.lr=0.01,-1")
    assert code == 0
    jobs = _jobs(sweep)
    assert len(jobs) == 4
    failed = [j for j in jobs.values() if j["status"] == "failed"]
    assert len(failed) == 2
    for j in failed:
        assert "train.optimizer.lr" in j["error"] and "\n" not in j["error"]
        assert j["error"].count("(set on the command line: train.optimizer.lr=-1)") == 1
    done = [j for j in jobs.values() if j["status"] == "completed"]
    assert len(done) == 2 and all(j["members"] == 1 for j in done)   # widths 4 and 8: two programs
    assert "train.optimizer.lr" in err


@pytest.mark.parametrize("loop", ["auto", "step"])
def test_vmap_conv_models(tmp_path, cli, loop):
    """Convolutional models vmapped (auto: a scanned epoch with im2col convolutions on the CPU;
    step: real convolutions, one jitted step at a time) keep each model's own numbers (two
    seeds: their data splits differ too; two dropout rates: one program)."""
    from compilers.pipeline import run_group

    conf = CNN
    over = ["train.epochs=2", "plots=[]", "model.layers.0.conv.features=4", "model.layers.1.conv.features=4",
            "model.layers.4.dense.features=8", f"train.loop={loop}"]
    specs = [_spec(*over, f"seed={s}", f"train.optimizer.lr={lr}", f"model.layers.5.dropout={rate}", conf=conf)
             for s, lr, rate in ((0, 1e-3, 0.2), (1, 3e-3, 0.6))]
    grouped = run_group(specs, [tmp_path / "g0", tmp_path / "g1"], ROOT, progress=False, sweep_job=True)
    alone = [run_group([s], [tmp_path / f"a{i}"], ROOT, progress=False, sweep_job=True)[0]
             for i, s in enumerate(specs)]
    for i, (g, a) in enumerate(zip(grouped, alone)):
        assert g["times"]["members"] == 2
        _assert_same_history(_history(tmp_path / f"g{i}"), _history(tmp_path / f"a{i}"))
    assert grouped[0]["metrics"]["test"]["loss"] != grouped[1]["metrics"]["test"]["loss"]


def test_optimizer_hyperparameters_live_in_the_state():
    """lr and the other float options are state, not constants: one program serves any values."""
    import jax
    import jax.numpy as jnp

    from compilers.pipeline import plan_spec
    from compilers.train.step import epoch_order, hyperparams, make_programs

    spec = _spec("train.optimizer.lr=0.1")
    _, plan = plan_spec(spec, ROOT)
    programs = make_programs(plan)
    hp = hyperparams(plan)
    assert set(hp["optimizer"]) == {"lr", "b1", "b2", "eps"}     # iris trains with adam
    assert hp["optimizer"]["lr"] == np.float32(0.1)
    assert hp["model"] == {"layers_2": {"rate": np.float32(0.1)}}   # iris's dropout: 0.1
    state = programs.init(jnp.int32(0), {"optimizer": {**hp["optimizer"], "lr": np.float32(0.0)}, "model": hp["model"]})
    x = jnp.zeros((plan.sizes["train"], *plan.input_shape), jnp.float32)
    y = jnp.zeros((plan.sizes["train"],), jnp.int32)
    before = jax.tree_util.tree_map(np.asarray, state.params)
    state, _, _ = programs.train_epoch(state, x, y, epoch_order(0, 1, plan.sizes["train"], plan.train.batch_size), None)
    # lr 0 leaves the weights where they were
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert float(state.opt_state.hyperparams["lr"]) == 0.0
