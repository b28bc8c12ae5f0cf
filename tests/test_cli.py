"""The command line, as a user types it: run, multirun, validate, list, plot, Hydra's flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

IRIS = str(ROOT / "examples" / "iris.yaml")


def dsl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "dsl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_run_as_a_user_types_it(tmp_path):
    p = dsl("run", f"conf={IRIS}", "train.epochs=2", "vars.width=16", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = list((tmp_path / "outputs" / "iris-mlp").iterdir())
    cfg = (run / ".hydra" / "config.yaml").read_text()
    assert "width: 16" in cfg and "epochs: 2" in cfg
    assert "Traceback" not in p.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["params"] == 4 * 16 + 16 + 16 * 32 + 32 + 32 * 3 + 3
    # the persistent compilation cache is on by default: the run wrote its compiled programs there
    cache = Path(os.environ["DSL_CACHE_DIR"]) / "jax"
    assert cache.is_dir() and any(cache.iterdir())


def test_multirun_writes_one_run_per_job_and_sweep_jsonl(tmp_path):
    p = dsl("run", "-m", f"conf={IRIS}", "seed=0,1", "vars.width=8,16", "train.epochs=1", "plots=[]", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (sweep,) = list((tmp_path / "multirun" / "iris-mlp").iterdir())
    lines = [json.loads(l) for l in (sweep / "sweep.jsonl").read_text().splitlines()]
    assert sorted(l["job"] for l in lines) == [0, 1, 2, 3]
    assert {tuple(o for o in l["overrides"] if o.startswith(("seed", "vars"))) for l in lines} == {
        ("seed=0", "vars.width=8"), ("seed=0", "vars.width=16"), ("seed=1", "vars.width=8"), ("seed=1", "vars.width=16")}
    for l in lines:
        assert l["status"] == "completed"
        assert "accuracy" in l["metrics"]["test"]
        assert (Path(l["run_dir"]) / "summary.json").is_file()


def test_cfg_job_prints_the_composed_spec_with_language_defaults(tmp_path):
    p = dsl("run", f"conf={IRIS}", "--cfg", "job", "train.devices=4", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "devices: 4" in p.stdout and "name: iris-mlp" in p.stdout and "checkpoint:" in p.stdout
    assert not (tmp_path / "outputs").exists()


def test_help(tmp_path):
    p = dsl("run", f"conf={IRIS}", "--help", cwd=tmp_path)
    assert p.returncode == 0 and "dsl" in p.stdout and "Powered by Hydra" in p.stdout
    p = dsl("--help", cwd=tmp_path)
    assert p.returncode == 0 and "validate" in p.stdout


def test_shipped_spec_by_name_and_run_dir_override(tmp_path):
    p = dsl("run", "conf=moons", "train.epochs=1", "plots=[]", f"hydra.run.dir={tmp_path / 'here'}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "here" / "summary.json").is_file()


def test_sweep_without_m_is_an_error(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", f"conf={IRIS}", "seed=0,1")
    assert code == 2 and err.strip() == "seed: 'seed=0,1' is a sweep; add -m to run one job per value"


def test_validate_prints_the_plan(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("validate", f"conf={IRIS}")
    assert code == 0, err
    assert "3 dense(tanh)" in out and "(32,)" in out and "2,080" in out
    assert "total" in out and "2,499" in out
    assert "optimizer adam" in out and "schedule  cosine" in out
    assert "charts    learning_curves, confusion_matrix, weights, activations" in out
    assert not (tmp_path / "outputs").exists()


def test_list_names_every_family(cli):
    code, out, _ = cli("list")
    assert code == 0
    for title in ("data sources", "prep steps", "layers", "losses", "optimizers", "schedules", "metrics", "charts"):
        assert title in out
    code, out, _ = cli("list", "layers")
    assert code == 0 and "dense" in out and "adam" not in out


def test_reference_doc_is_current():
    from dsl.commands.list import reference_markdown

    assert (ROOT / "docs" / "reference.md").read_text() == reference_markdown(), \
        "docs/reference.md is stale: python -m dsl list --markdown > docs/reference.md"


def test_plot_rerenders_a_finished_run(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", f"conf={IRIS}", "train.epochs=2", "plots=[learning_curves]")
    assert code == 0, err
    (run,) = list((tmp_path / "outputs" / "iris-mlp").iterdir())
    assert not (run / "charts" / "architecture.vl.json").exists()
    code, out, err = cli("plot", str(run), "plots=[architecture, confusion_matrix]")
    assert code == 0, err
    assert (run / "charts" / "architecture.vl.json").is_file()
    assert "2 of 2 charts" in out
    code, _, err = cli("plot", str(tmp_path))
    assert code == 2 and "not a finished run directory" in err


def test_unknown_command(cli):
    code, _, err = cli("trian")
    assert code == 2 and "did you mean 'train'" not in err and "unknown command 'trian'" in err


def test_nan_loss_fails_the_run_with_one_line_and_keeps_its_charts(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = "\n".join(f"{i / 100},{i * 1e25}" for i in range(100))   # the squared error overflows float32
    (tmp_path / "huge.csv").write_text("x,y\n" + rows + "\n")
    (tmp_path / "huge.yaml").write_text("name: huge\ndata: {source: huge.csv, target: y}\n"
                                        "model: {layers: [{dense: 4}]}\ntrain: {epochs: 5}\nplots: [learning_curves]\n")
    code, _, err = cli("run", "conf=huge.yaml", "hydra.run.dir=run")
    assert code == 1
    (line,) = [l for l in err.splitlines() if "training loss became" in l]
    assert line.startswith("huge: the training loss became nan at epoch 1")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "nan" in summary["reason"]
    assert (tmp_path / "run" / "charts" / "learning_curves.png").is_file()
    assert "Traceback" not in err


def test_a_terminal_sees_slow_work_going_on(monkeypatch, capsys):
    """On a terminal, work that takes a while (a data set loading, predict on a large file) shows a
    line with what it does so far; kept (a run's data) or removed (predict) when done; nothing for
    quick work or off a terminal."""
    import time

    from compilers.runs.status import Status

    class Terminal:
        def isatty(self):
            return True

        def write(self, text):
            return len(text)

        def flush(self):
            pass

    def wait_shown(status):
        for _ in range(500):
            if status.shown:
                return True
            time.sleep(0.01)
        return False

    monkeypatch.setattr(Status, "SHOW_AFTER_S", 0.0)
    monkeypatch.setattr(sys, "stderr", Terminal())
    with Status("big", "reading big.csv") as status:
        assert wait_shown(status)
        status.update("reading big.csv: 600 rows")
        assert status.bar.tasks[0].fields["info"] == "reading big.csv: 600 rows"
        status.done("read big.csv: 1,000 rows")
    out = capsys.readouterr().out
    assert "big" in out and "read big.csv: 1,000 rows" in out
    with Status("predict", "reading new.csv", keep=False) as status:
        assert wait_shown(status)
        status.update("new.csv: 65,536 rows predicted")
    assert status.bar.live.transient
    monkeypatch.setattr(Status, "SHOW_AFTER_S", 60.0)
    capsys.readouterr()
    with Status("big", "reading big.csv") as status:   # done before the line shows: nothing
        status.update("reading big.csv: 10 rows")
    assert not status.shown and capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    with Status("big", "reading big.csv") as status:
        assert status.bar is None
    with Status("big", "reading big.csv", False) as status:
        assert status.bar is None
