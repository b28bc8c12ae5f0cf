"""Golden tests: every bad spec gives one line `FILE:LINE key.path: message` and exit status 2."""

from __future__ import annotations

import textwrap

import pytest

GOOD = """\
name: t
data:
  source: iris
  prep: [standardize]
model:
  layers:
    - dense: 8
    - relu
train:
  epochs: 2
plots: []
"""

CASES = [
    # (name, spec text or a replacement of GOOD, expected stderr line)
    ("unknown section", GOOD.replace("model:", "modle:"),
     "bad.yaml:5 modle: unknown key 'modle' (did you mean 'model'?)"),
    ("unknown layer", GOOD.replace("- relu", "- rleu"),
     "bad.yaml:8 model.layers[1]: unknown layer kind 'rleu' (did you mean 'relu'?)"),
    ("wrong type", GOOD.replace("epochs: 2", "epochs: ten"),
     "bad.yaml:10 train.epochs: epochs must be a positive integer, got 'ten'"),
    ("out of range", GOOD.replace("- dense: 8", "- dense: -3"),
     "bad.yaml:7 model.layers[0].dense: features must be a positive integer, got -3"),
    ("out of range option", GOOD.replace("- relu", "- dropout: 1.5"),
     "bad.yaml:8 model.layers[1].dropout: rate must be a finite number >= 0.0 and < 1.0, got 1.5"),
    ("unknown option", GOOD.replace("- dense: 8", "- dense: {features: 8, activaton: relu}"),
     "bad.yaml:7 model.layers[0].dense.activaton: unknown option 'activaton' (did you mean 'activation'?)"),
    ("bad activation", GOOD.replace("- dense: 8", "- dense: {features: 8, activation: rel}"),
     "bad.yaml:7 model.layers[0].dense: unknown activation 'rel' (did you mean 'relu'?)"),
    ("unknown optimizer", GOOD.replace("epochs: 2", "epochs: 2\n  optimizer: {name: adamm}"),
     "bad.yaml:11 train.optimizer.name: unknown optimizer 'adamm' (did you mean 'adam'?)"),
    ("unknown data source", GOOD.replace("source: iris", "source: irsi"),
     "bad.yaml:3 data.source: unknown data source 'irsi' (did you mean 'iris'?)"),
    ("unknown chart", GOOD.replace("plots: []", "plots: [learning_curve]"),
     "bad.yaml:11 plots[0]: unknown chart kind 'learning_curve' (did you mean 'learning_curves'?)"),
    ("yaml syntax", GOOD.replace("  prep: [standardize]", "  prep: [standardize"),
     None),  # checked below: a syntax error names its line
    ("empty file", "", "bad.yaml:1: the spec is empty; it needs at least data and model sections"),
    ("comments only", "# nothing here\n", "bad.yaml:1: the spec is empty; it needs at least data and model sections"),
    ("not a mapping", "- a\n- b\n",
     "bad.yaml:1: a spec is a mapping of sections (name, data, model, train, plots), got a list"),
    ("_target_", GOOD.replace("- relu", "- relu\n    - _target_: os.system"),
     "bad.yaml:9 model.layers[2]._target_: specs never execute code: '_target_' is not allowed"),
    ("interpolation to a missing key", GOOD.replace("- dense: 8", "- dense: ${vars.width}"),
     None),
    ("missing model", "data: {source: iris}\n",
     "bad.yaml: model.layers: required: a list of layers, e.g. [{dense: 64}, relu]"),
    ("two kinds in one item", GOOD.replace("- relu", "- relu: null\n      dense: 3"), None),
    ("loss for the wrong task", GOOD.replace("epochs: 2", "epochs: 2\n  loss: mse"),
     "bad.yaml:11 train.loss: 'mse' is a regression loss; this task is classification (use auto, or one of: "
     "cross_entropy, binary_cross_entropy)"),
    ("metric for the wrong task", GOOD.replace("epochs: 2", "epochs: 2\n  metrics: [accuracy, r2]"),
     "bad.yaml:11 train.metrics[1]: 'r2' is a regression metric; this task is classification "
     "(choose from accuracy, precision, recall, f1, auc)"),
    ("residual changes the shape", GOOD.replace("- relu", "- residual: [{dense: 4}]"),
     "bad.yaml:8 model.layers[1].residual: a residual block must keep the shape: its layers turn (8,) into (4,)"),
    ("split leaves nothing", GOOD.replace("prep: [standardize]", "prep: [standardize]\n  split: {test: 0.6, val: 0.5}"),
     "bad.yaml:5 data.split: test + val must leave rows to train on, got 0.6 + 0.5"),
    ("missing target column", GOOD.replace("source: iris", "source: iris\n  target: specie"), None),
    ("missing data file", GOOD.replace("source: iris", "source: nowhere/data.csv"), None),
    ("monitor not recorded", GOOD.replace("epochs: 2", "epochs: 2\n  early_stopping: {monitor: val_acc, patience: 3}"),
     "bad.yaml:11 train.early_stopping.monitor: 'val_acc' is not recorded; choose from loss, accuracy, val_loss, val_accuracy"),
]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_spec_is_one_line_with_exit_2(name, text, expected, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    code, out, err = cli("validate", "conf=bad.yaml")
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    line = lines[0]
    if expected is not None:
        assert line == expected
    else:
        assert line.startswith("bad.yaml:"), line


def test_yaml_syntax_error_names_the_line(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(GOOD.replace("  prep: [standardize]", "  prep: [standardize"))
    code, _, err = cli("validate", "conf=bad.yaml")
    assert code == 2
    assert err.startswith("bad.yaml:5: YAML syntax error"), err


def test_missing_column_suggests_nearest(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(GOOD.replace("source: iris", "source: iris\n  target: specie"))
    code, _, err = cli("validate", "conf=bad.yaml")
    assert code == 2
    assert "data.target" in err and "'species'" in err, err


def test_text_feature_without_prep(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    rows = "\n".join(f"{i},{'ab'[i % 2]},{i % 2}" for i in range(40))
    (tmp_path / "d.csv").write_text("x,city,label\n" + rows + "\n")
    (tmp_path / "bad.yaml").write_text(GOOD.replace("source: iris", "source: d.csv\n  target: label"))
    code, _, err = cli("validate", "conf=bad.yaml")
    assert code == 2
    assert "city" in err and "one_hot" in err, err


def test_too_few_rows(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text("x,label\n1,0\n2,1\n")
    (tmp_path / "bad.yaml").write_text(GOOD.replace("source: iris", "source: d.csv\n  target: label"))
    code, _, err = cli("validate", "conf=bad.yaml")
    assert code == 2
    assert "data.split" in err or "rows" in err, err


def test_override_of_unknown_key_suggests_nearest(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.yaml").write_text(GOOD)
    code, _, err = cli("validate", "conf=good.yaml", "train.epoch=5")
    assert code == 2
    assert err.strip() == "train.epoch: cannot override: unknown key 'epoch' (did you mean 'epochs'?)"


def test_override_value_error_blames_the_command_line(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.yaml").write_text(GOOD)
    code, _, err = cli("validate", "conf=good.yaml", "train.epochs=-1")
    assert code == 2
    assert err.strip() == ("train.epochs: epochs must be a positive integer, got -1 "
                           "(set on the command line: train.epochs=-1)")


def test_unknown_spec_name_suggests_shipped(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("validate", "conf=irsi")
    assert code == 2
    assert err.strip() == "conf: unknown spec 'irsi' (did you mean 'iris'?)"


def test_failed_run_leaves_no_run_directory(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(GOOD.replace("source: iris", "source: iris\n  target: specie"))
    code, _, err = cli("run", "conf=bad.yaml")
    assert code == 2, err
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*"))
