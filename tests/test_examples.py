"""Every shipped example runs (2 epochs) and leaves a complete run directory; accuracy goals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _run_dir(base: Path) -> Path:
    dirs = [p.parent for p in base.rglob("summary.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_two_epochs(path, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(ROOT)  # the examples' data paths are relative to the repository root
    code, out, err = cli("run", f"conf={path}", "train.epochs=2", f"hydra.run.dir={tmp_path}/outputs/x/run")
    assert code == 0, err
    run = _run_dir(tmp_path / "outputs")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["epochs_run"] == 2
    times = summary["times"]
    phases = ("startup_s", "imports_s", "data_s", "plan_s", "compile_s", "train_s", "eval_s", "charts_s")
    assert set(times) >= {*phases, "total_s"}
    # the phases follow one another (compile_s is the first epoch, inside train_s)
    assert sum(times[k] for k in phases if k != "compile_s") <= times["total_s"] + 0.05
    assert summary["params"] > 0 and "jax" in summary["versions"]
    assert (run / ".hydra" / "config.yaml").is_file()
    assert any((run / "checkpoints").iterdir())
    charts = summary["charts"]
    assert charts, "no charts"
    for name, status in charts.items():
        if status == "ok":
            assert (run / "charts" / f"{name}.vl.json").is_file()
            assert (run / "charts" / f"{name}.png").stat().st_size > 1000
    html = (run / "report.html").read_text()
    assert "vegaEmbed" in html and "cdn.jsdelivr" not in html
    assert "report:" in out


def _train(conf: str, *overrides: str) -> dict:
    from dsl.commands.run import prepare
    from compilers.pipeline import plan_spec
    from compilers.train.loop import train
    import tempfile

    _, _, _, _, spec = prepare([f"conf={conf}", "plots=[]", *overrides], ROOT, sweep_ok=False)
    data, plan = plan_spec(spec, ROOT)
    with tempfile.TemporaryDirectory() as d:
        record = train(plan, data, Path(d), progress=False)
    return record.summary["metrics"]["test"]


def test_breast_cancer_accuracy():
    assert _train("examples/breast_cancer.yaml")["accuracy"] >= 0.95


def test_diabetes_r2():
    assert _train("examples/diabetes.yaml")["r2"] >= 0.40


def test_moons_accuracy():
    assert _train("examples/moons.yaml")["accuracy"] >= 0.95


def test_iris_accuracy_over_splits():
    # 30 test rows: one split decides a lot (seed 0's test split is hard: an RBF SVM gets 0.90 on
    # it), so the goal is checked as the mean over five seeds, each drawing its own split.
    accs = [_train("examples/iris.yaml", f"seed={s}")["accuracy"] for s in range(5)]
    assert np.mean(accs) >= 0.93, accs


def test_same_spec_same_seed_same_metrics(tmp_path):
    from dsl.commands.run import prepare
    from compilers.pipeline import plan_spec
    from compilers.train.loop import train

    _, _, _, _, spec = prepare(["conf=examples/moons.yaml", "plots=[]", "train.epochs=3"], ROOT, sweep_ok=False)
    histories = []
    for i in range(2):
        data, plan = plan_spec(spec, ROOT)
        rec = train(plan, data, tmp_path / str(i), progress=False)
        histories.append([{k: v for k, v in row.items() if k != "time"} for row in rec.history])
    assert histories[0] == histories[1]


def test_digits_cnn_accuracy():
    assert _train("examples/digits_cnn.yaml")["accuracy"] >= 0.96


def test_word_order_is_learned_by_lstm_and_transformer():
    # A bag of words scores ~0.5 on this data (both classes have the same word counts).
    assert _train("examples/order_lstm.yaml")["accuracy"] >= 0.95
    assert _train("examples/order_transformer.yaml")["accuracy"] >= 0.95
