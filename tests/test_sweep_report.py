"""The comparison report: a multirun's sweep report.html (Hydra callback) and `python -m dsl compare`.

Hand-made run directories (summary.json, metrics.jsonl, .hydra/overrides.yaml, sweep.jsonl) test
the charts, the ranking, importance and escaping quickly; a real 3-job moons sweep with one
failing job and a real iris run test the whole path through the command line.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, SMALL, spec_values
from compilers.charts.base import MAX_ROWS
from compilers.charts.sweep import (FOREST, MIN_IMPORTANCE_RUNS, NOT_SET, chart_specs, collect, compare, importance,
                                    write_sweep_report)

vlc = pytest.importorskip("vl_convert")

MOONS = str(ROOT / "examples" / "moons.yaml")
IRIS = str(ROOT / "examples" / "iris.yaml")
XSS = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'


# --- hand-made runs -----------------------------------------------------------------------------

def make_run(run_dir: Path, *, name="toy", overrides=(), val_loss=0.5, epochs=5, status="completed",
             monitor="val_loss", extra_metrics=None, report=True) -> Path:
    """A finished run directory as the trainer leaves it (only what the comparison reads)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    history = [{"epoch": e, "loss": val_loss * (1 + 2 / e) - 0.05, "val_loss": val_loss * (1 + 1.5 / e),
                "accuracy": 1 - val_loss / (1 + e), "val_accuracy": 1 - val_loss / e, "lr": 0.01, "time": 0.1 * e}
               for e in range(1, epochs + 1)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    metrics = {"train": {"loss": val_loss - 0.05, "accuracy": 1 - val_loss / 2},
               "val": {"loss": val_loss, "accuracy": 1 - val_loss / 3},
               "test": {"loss": val_loss + 0.02, "accuracy": 1 - val_loss / 3 - 0.01}}
    for split, values in (extra_metrics or {}).items():
        metrics.setdefault(split, {}).update(values)
    summary = {"name": name, "task": "classification", "status": status, "metrics": metrics,
               "best_epoch": epochs, "monitor": monitor, "times": {"total_s": 1.5}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    if report:
        (run_dir / "report.html").write_text("<!DOCTYPE html><title>run</title>")
    return run_dir


def make_sweep(sweep_dir: Path, jobs: list[dict], failed: dict[int, str] | None = None) -> Path:
    """jobs: make_run keyword arguments per job; failed: job number -> its one-line error."""
    failed = failed or {}
    lines = []
    for i, kw in enumerate(jobs):
        run_dir = sweep_dir / str(i)
        if i in failed:
            (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
            lines.append({"job": i, "overrides": list(kw.get("overrides", ())), "run_dir": str(run_dir),
                          "status": "failed", "error": failed[i]})
            continue
        make_run(run_dir, **kw)
        summary = json.loads((run_dir / "summary.json").read_text())
        lines.append({"job": i, "overrides": list(kw.get("overrides", ())), "run_dir": str(run_dir),
                      "status": "completed", "metrics": summary["metrics"], "best_epoch": summary["best_epoch"],
                      "total_s": 1.5})
    (sweep_dir / "sweep.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return sweep_dir


def grid_sweep(sweep_dir: Path) -> Path:
    """12 jobs: lr over three decades (log axis), width (linear), optimizer (categorical), seed;
    val_loss falls with log10(lr) and barely depends on the rest; job 12 failed."""
    jobs = []
    for lr in (0.0001, 0.001, 0.01):
        for width in (16, 64):
            for opt in ("adam", "sgd"):
                loss = 0.9 + 0.2 * math.log10(lr) + 0.01 * (width == 64) + 0.03 * (opt == "sgd")
                jobs.append({"overrides": ["train.epochs=5", f"train.optimizer.lr={lr}", f"vars.width={width}",
                                           f"train.optimizer.name={opt}"], "val_loss": round(loss, 4)})
    jobs.append({"overrides": ["train.epochs=5", "train.optimizer.lr=-1", "vars.width=16", "train.optimizer.name=adam"]})
    return make_sweep(sweep_dir, jobs, failed={12: "train.optimizer: lr must be a finite number > 0.0, got -1.0"})


# --- the charts -----------------------------------------------------------------------------------

def test_every_chart_compiles_with_vl_convert(tmp_path):
    cmp = compare(collect([grid_sweep(tmp_path / "sweep")]))
    rendered = chart_specs(cmp)
    assert [r.name for r in rendered] == ["learning_curves", "metric_by_param", "parallel_coordinates"]
    for r in rendered:
        assert r.skipped is None, (r.name, r.skipped)
        # vegalite_to_svg runs the whole Vega view: duplicate signals fail here, not in vegalite_to_vega
        svg = vlc.vegalite_to_svg(r.spec)
        assert svg.startswith("<svg") and len(svg) > 2000, r.name
        assert len(spec_values(r.spec)) <= MAX_ROWS + 100, r.name


def test_charts_show_the_runs_and_the_swept_values(tmp_path):
    cmp = compare(collect([grid_sweep(tmp_path / "sweep")]))
    assert cmp.objective == "val_loss" and cmp.lower
    assert [p.key for p in cmp.params] == ["train.optimizer.lr", "vars.width", "train.optimizer.name"]
    lr, width, opt = cmp.params
    assert lr.numeric and lr.log and width.numeric and not width.log and not opt.numeric
    assert opt.categories == ["adam", "sgd"] and cmp.fixed == {"train.epochs": "5"}
    specs = {r.name: r.spec for r in chart_specs(cmp)}
    # learning curves: every completed run, one panel per main quantity, legend-bound selection
    curves = specs["learning_curves"]
    runs = {row["run"] for row in spec_values(curves) if "epoch" in row}
    assert len(runs) == 12 and all(" · lr=" in r for r in runs)
    assert [p["title"] for p in curves["concat"]] == ["loss", "val_loss"]
    assert any(p.get("bind") == "legend" for p in curves.get("params", []))
    assert all("overrides" in row for row in spec_values(curves) if "epoch" in row)
    # the final metric by swept value: one panel per key, lr on a log axis, optimizer categorical
    panels = specs["metric_by_param"]["concat"]
    assert [p["title"] for p in panels] == ["lr (log axis)", "width", "name"]
    x_scales = [[layer["encoding"]["x"].get("scale", {}).get("type") for layer in p["layer"]] for p in panels]
    assert "log" in x_scales[0] and "log" not in x_scales[1]
    # parallel coordinates: fold over the swept values and metrics, normalised per axis in Vega-Lite
    par = specs["parallel_coordinates"]
    transforms = json.dumps(par)
    assert '"fold"' in transforms and '"joinaggregate"' in transforms
    axes = [row["label"] for row in next(v for v in par["datasets"].values() if v and set(v[0]) == {"field", "label"})]
    assert axes[:3] == ["lr", "width", "name"] and axes[-1] == "val_loss"


def test_metric_direction_and_ranking(tmp_path):
    # ranked by the monitor: accuracy descending
    for i, acc in enumerate((0.7, 0.9, 0.8)):
        make_run(tmp_path / "acc" / str(i), overrides=[f"seed={i}"], monitor="val_accuracy",
                 extra_metrics={"val": {"accuracy": acc}})
    cmp = compare(collect([tmp_path / "acc"]))
    assert cmp.objective == "val_accuracy" and not cmp.lower
    assert [r.id for r in cmp.ranked] == ["1", "2", "0"]
    # the spec's `objective` (in the resolved spec) wins over the monitor
    for i, (acc, loss) in enumerate(((0.9, 0.5), (0.8, 0.2))):
        run = make_run(tmp_path / "obj" / str(i), overrides=[f"seed={i}"], val_loss=loss,
                       extra_metrics={"test": {"accuracy": acc}})
        (run / ".hydra" / "config.yaml").write_text("name: toy\nobjective: test_accuracy\n")
    cmp = compare(collect([tmp_path / "obj"]))
    assert cmp.objective == "test_accuracy" and not cmp.lower and [r.id for r in cmp.ranked] == ["0", "1"]
    # a loss ascending, with a failed job last
    sweep = make_sweep(tmp_path / "loss", [{"overrides": [f"seed={i}"], "val_loss": v}
                                           for i, v in enumerate((0.4, 0.2, 0.3, 0.1))], failed={3: "boom"})
    cmp = compare(collect([sweep]))
    assert cmp.objective == "val_loss" and cmp.lower
    assert [r.id for r in cmp.runs] == ["1", "2", "0", "3"] and cmp.runs[-1].status == "failed"


def test_importance_and_correlation_match_a_direct_computation(tmp_path):
    from sklearn.ensemble import RandomForestRegressor

    cmp = compare(collect([grid_sweep(tmp_path / "sweep")]))
    imp = importance(cmp)
    assert imp.n == 12 and not imp.notes
    runs = cmp.ranked
    y = np.array([r.metrics["val_loss"] for r in runs])
    over = [dict(o.split("=", 1) for o in r.overrides) for r in runs]
    log_lr = np.log10([float(o["train.optimizer.lr"]) for o in over])
    width = np.array([float(o["vars.width"]) for o in over])
    adam = np.array([o["train.optimizer.name"] == "adam" for o in over], dtype=float)
    sgd = 1 - adam
    forest = RandomForestRegressor(**FOREST).fit(np.stack([log_lr, width, adam, sgd], axis=1), y)
    fi = forest.feature_importances_
    expected_imp = {"train.optimizer.lr": fi[0], "vars.width": fi[1], "train.optimizer.name": fi[2] + fi[3]}
    expected_corr = {"train.optimizer.lr": np.corrcoef(log_lr, y)[0, 1], "vars.width": np.corrcoef(width, y)[0, 1],
                     "train.optimizer.name": np.corrcoef(sgd, y)[0, 1]}
    got = {row["key"]: row for row in imp.rows}
    for key in expected_imp:
        assert got[key]["importance"] == pytest.approx(expected_imp[key], abs=1e-9), key
        assert got[key]["correlation"] == pytest.approx(expected_corr[key], abs=1e-9), key
    # the learning rate drives the loss: most important, strongly and positively correlated
    assert imp.rows[0]["key"] == "train.optimizer.lr" and imp.rows[0]["importance"] > 0.8
    assert got["train.optimizer.lr"]["correlation"] > 0.95
    assert sum(row["importance"] for row in imp.rows) == pytest.approx(1.0)


def test_too_few_runs_for_importance_says_so(tmp_path):
    sweep = make_sweep(tmp_path / "s", [{"overrides": [f"train.optimizer.lr={lr}"], "val_loss": v}
                                        for lr, v in ((0.001, 0.5), (0.01, 0.3), (0.1, 0.4))])
    cmp = compare(collect([sweep]))
    imp = importance(cmp)
    assert imp.n == 3 and all(row["importance"] is None for row in imp.rows)
    assert imp.notes[0].startswith("too few runs for parameter importance: 3 completed runs")
    assert f"at least {MIN_IMPORTANCE_RUNS} needed" in imp.notes[0]
    assert imp.rows[0]["correlation"] is not None   # three runs are enough for a correlation
    page = write_sweep_report([sweep], sweep / "report.html").read_text()
    assert "too few runs for parameter importance" in page


# --- the page -----------------------------------------------------------------------------------

def _rows(page: str) -> dict[str, str]:
    """data-run -> the table row's HTML."""
    body = page.split('<table class="runs">', 1)[1].split("</table>", 1)[0]
    return {html.unescape(m.group(1)): m.group(0) for m in re.finditer(r'<tr class="[^"]*" data-run="([^"]*)">.*?</tr>', body)}


def _hrefs(row: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]+)"', row)]


def test_user_strings_are_escaped(tmp_path):
    sweep = make_sweep(tmp_path / "s", [
        {"name": XSS, "overrides": [f"+vars.tag={XSS_IMG}"], "val_loss": 0.3},
        {"name": XSS, "overrides": ["+vars.tag=plain"], "val_loss": 0.2},
        {"overrides": ["+vars.tag=x"]}], failed={2: f"bad value {XSS}"})
    page = write_sweep_report([sweep], sweep / "report.html").read_text()
    assert XSS not in page and XSS_IMG not in page and "alert(2)\">" not in page
    assert html.escape(XSS) in page and html.escape(f"+vars.tag={XSS_IMG}") in page
    assert html.escape(f"bad value {XSS}") in page
    # inside the embedded specs, < and > are \\u escapes
    assert "\\u003cimg src=x" in page


def test_callback_writes_the_report_for_any_launcher(tmp_path, capsys):
    """Hydra calls on_multirun_end with its config, whatever launcher ran the jobs."""
    from omegaconf import OmegaConf

    from dsl.callbacks import SweepReport

    sweep = grid_sweep(tmp_path / "sweep")
    SweepReport().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert (sweep / "report.html").is_file()
    assert capsys.readouterr().out.strip() == f"sweep report: {sweep / 'report.html'}"
    # a report problem is one line, never an exception out of Hydra
    SweepReport().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "none")}}}))
    err = capsys.readouterr().err.strip()
    assert err.startswith("sweep report not written: ValueError: no runs found") and "\n" not in err


def test_callback_is_in_hydras_config_not_the_spec():
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from dsl.compose import PRIMARY, register

    register(Path(IRIS))
    node = ConfigStore.instance().load(f"{PRIMARY}.yaml").node
    assert OmegaConf.select(node, "hydra.callbacks.sweep_report._target_") == "dsl.callbacks.SweepReport"
    assert "_target_" not in Path(IRIS).read_text()


def test_no_jax_for_the_report(tmp_path):
    sweep = grid_sweep(tmp_path / "sweep")
    code = ("import sys; import dsl.callbacks; from compilers.charts.sweep import write_sweep_report; "
            f"write_sweep_report([{str(sweep)!r}], __import__('pathlib').Path({str(sweep / 'r.html')!r})); "
            "bad = [m for m in ('jax', 'flax', 'optax') if m in sys.modules]; assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (sweep / "r.html").is_file()


def test_collect_finds_a_moved_sweep_and_failed_jobs(tmp_path):
    sweep = grid_sweep(tmp_path / "old")
    moved = tmp_path / "new" / "sweep"
    moved.parent.mkdir()
    sweep.rename(moved)       # sweep.jsonl still names the old run directories
    runs = collect([moved])
    assert len(runs) == 13 and sum(r.path is not None and r.path.parent == moved for r in runs) == 13
    failed = [r for r in runs if not r.ok]
    assert len(failed) == 1 and failed[0].error.startswith("train.optimizer: lr must be")
    # a folder of sweeps: every run of every sweep, run directories never walked into
    make_sweep(tmp_path / "new" / "other", [{"overrides": ["seed=1"]}, {"overrides": ["seed=2"]}])
    assert len(collect([tmp_path / "new"])) == 15


# --- through the command line -------------------------------------------------------------------

def _main(args: list[str]) -> int:
    from dsl.cli import main

    argv0 = sys.argv[:]
    try:
        main(args)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv[:] = argv0


@pytest.fixture(scope="module")
def moons_sweep(tmp_path_factory):
    """A real 3-job moons sweep: two learning rates train, a negative one is a spec error."""
    cwd = tmp_path_factory.mktemp("sweep")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        code = _main(["run", "-m", f"conf={MOONS}", "train.epochs=3", "plots=[]", "train.optimizer.lr=0.01,0.1,-1"])
    finally:
        os.chdir(old)
    assert code == 0
    (sweep,) = list((cwd / "multirun" / "moons").iterdir())
    return sweep


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("iris")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        code = _main(["run", f"conf={IRIS}", "train.epochs=2", "plots=[]", "hydra.run.dir=runs/iris"])
    finally:
        os.chdir(old)
    assert code == 0
    return cwd / "runs" / "iris"


def test_a_real_sweep_writes_its_report(moons_sweep):
    lines = [json.loads(l) for l in (moons_sweep / "sweep.jsonl").read_text().splitlines()]
    assert sorted(l["job"] for l in lines) == [0, 1, 2]
    page = (moons_sweep / "report.html").read_text()
    assert "<script src" not in page    # offline: the bundle is inline
    rows = _rows(page)
    assert sorted(rows) == ["0", "1", "2"]
    # completed jobs link to their own reports, relative to the sweep directory, and the files exist
    for job in ("0", "1"):
        (href,) = _hrefs(rows[job])
        assert not href.startswith(("/", "file:")) and (moons_sweep / href).is_file() and href == f"{job}/report.html"
        assert 'class="status-completed"' in rows[job]
    # the failing job: in the table and in the failed section with its one-line error; the others finished
    (failed,) = [l for l in lines if l["status"] == "failed"]
    assert failed["job"] == 2 and "lr must be" in failed["error"]
    assert html.escape(failed["error"]) in rows["2"] and 'class="status-failed"' in rows["2"]
    section = page.split('id="section-failed"', 1)[1]
    assert html.escape(failed["error"]) in section.split("</section>", 1)[0]
    assert all(l["status"] == "completed" for l in lines if l["job"] != 2)
    # ranked by val_loss, lower first
    completed = {str(l["job"]): l["metrics"]["val"]["loss"] for l in lines if l["status"] == "completed"}
    assert list(rows) == sorted(completed, key=completed.get) + ["2"]
    # every chart's spec is embedded and compiles
    specs = json.loads(re.search(r"var charts=(\[.*?\]);\n", page).group(1))
    assert [c["name"] for c in specs] == ["learning_curves", "metric_by_param", "parallel_coordinates"]
    for c in specs:
        vlc.vegalite_to_svg(c["spec"])


def test_compare_two_unrelated_runs(moons_sweep, iris_run, tmp_path, monkeypatch, capsys):
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["compare", str(iris_run), str(moons_sweep / "0"), "--out", "cmp/both.html"], capsys)
    assert code == 0, err
    assert out.strip().endswith("report: cmp/both.html")
    page = (tmp_path / "cmp" / "both.html").read_text()
    rows = _rows(page)
    assert len(rows) == 2
    for rid, row in rows.items():
        (href,) = _hrefs(row)
        assert ((tmp_path / "cmp") / href).resolve().is_file()
    # what they share: both rank by val_loss; metrics only one of them has are left out
    cmp = compare(collect([iris_run, moons_sweep / "0"]))
    assert cmp.objective == "val_loss" and "val_auc" not in cmp.metrics and "val_accuracy" in cmp.metrics
    # swept values come from the overrides that differ: the moons job set a learning rate, iris did not
    lr = next(p for p in cmp.params if p.key == "train.optimizer.lr")
    assert not lr.numeric and NOT_SET in lr.categories
    assert {r.name for r in cmp.runs} == {"iris-mlp", "moons"}
    for r in chart_specs(cmp):
        assert r.skipped is None, r.skipped
        vlc.vegalite_to_svg(r.spec)


def test_compare_defaults_and_errors(moons_sweep, iris_run, tmp_path, monkeypatch, capsys):
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    before = (moons_sweep / "report.html").stat().st_mtime_ns
    code, out, err = run_cli(["compare", str(moons_sweep)], capsys)
    assert code == 0 and out.strip().endswith(f"report: {moons_sweep / 'report.html'}")
    assert (moons_sweep / "report.html").stat().st_mtime_ns >= before
    # one run: its own report.html stays; the comparison goes to a new file here
    own = (iris_run / "report.html").read_text()
    code, out, err = run_cli(["compare", str(iris_run)], capsys)
    assert code == 0 and (iris_run / "report.html").read_text() == own
    written = Path(out.strip().split("report: ")[1])
    assert written.parent == tmp_path and written.name.startswith("compare_") and written.is_file()
    # bad input: one line, exit status 2, no traceback
    (tmp_path / "empty").mkdir()
    for args, message in ((["compare", "missing"], "error: no such directory: missing"),
                          (["compare", "empty"], "error: no runs found in empty"),
                          (["compare"], "error: give at least one run or sweep directory"),
                          (["compare", str(iris_run), "--bogus"], "error: unknown option --bogus")):
        code, out, err = run_cli(args, capsys)
        assert code == 2 and err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err, (args, err)




def test_the_report_comes_with_another_sweeper(tmp_path, monkeypatch):
    """The callback lives in Hydra's config: the optuna sweeper's trials get the report too, and
    its best trial is the report's first."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.yaml").write_text(SMALL)
    code = _main(["run", "-m", "conf=small.yaml", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                  "hydra.sweeper.direction=minimize", "train.optimizer.lr=tag(log, interval(1e-3, 1e-1))"])
    assert code == 0
    (sweep,) = list((tmp_path / "multirun" / "small").iterdir())
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    page = (sweep / "report.html").read_text()
    rows = _rows(page)
    assert len(rows) == 3
    first = next(iter(rows.values()))
    lr = best["best_params"]["train.optimizer.lr"]
    assert f'title="{lr}"' in first
    # sampled learning rates are labelled with 4 digits, their full value in the cell's tooltip
    assert f">{lr:.4g}<" in first
