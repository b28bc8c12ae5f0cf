"""Stored programs (compilers.train.stored): a spec's second run loads its traced programs instead of
tracing the model again, trains to the same numbers, and a stored file is data, never code."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from compilers.train import stored


def _spec(*extra):
    from dsl.commands.run import prepare

    return prepare([f"conf={ROOT / 'examples' / 'iris.yaml'}", "train.epochs=3", "plots=[]", *extra],
                   ROOT, sweep_ok=False)[4]


def _run(tmp_path, name, *extra):
    from compilers.pipeline import run_spec
    from compilers.train import loop, probes

    probes._PROGRAMS.clear()      # the programs a process keeps for its next runs: each run here
    loop._SCHEDULES.clear()       # starts as a new process would
    before = dict(stored.COUNTS)
    summary = run_spec(_spec(*extra), tmp_path / name, ROOT, progress=False)
    history = [{k: v for k, v in json.loads(line).items() if k != "time"}
               for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return summary["metrics"], history, {k: stored.COUNTS[k] - before[k] for k in before}


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """A store of this test's own (the session's cache holds other tests' programs)."""
    monkeypatch.setenv("DSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DSL_PROGRAM_CACHE", raising=False)
    return tmp_path / "cache" / "programs"


def test_a_second_run_loads_its_programs_and_trains_to_the_same_numbers(tmp_path, store, monkeypatch):
    first = _run(tmp_path, "first", "seed=3")
    assert first[2]["exported"] >= 4 and first[2]["loaded"] == first[2]["unsaved"] == first[2]["unstored"] == 0
    files = sorted(store.rglob("*.bin"))
    assert len(files) == first[2]["exported"]
    second = _run(tmp_path, "second", "seed=3")
    assert second[2] == {"loaded": first[2]["exported"], "exported": 0, "unsaved": 0, "unstored": 0}
    assert second[:2] == first[:2]
    # the same numbers as the plain jitted programs, to the last bit
    monkeypatch.setenv("DSL_PROGRAM_CACHE", "0")
    plain = _run(tmp_path, "plain", "seed=3")
    assert plain[2] == {"loaded": 0, "exported": 0, "unsaved": 0, "unstored": 0}
    assert plain[:2] == first[:2]


def test_a_damaged_or_foreign_file_is_made_again(tmp_path, store):
    first = _run(tmp_path, "first")
    files = sorted(store.rglob("*.bin"))
    files[0].write_bytes(b"not a program")
    head = b'["os:system"]\n'   # a tree that names a type outside optax, flax and compilers
    files[1].write_bytes(head + files[1].read_bytes().partition(b"\n")[2])
    again = _run(tmp_path, "again")
    assert again[2] == {"loaded": len(files) - 2, "exported": 2, "unsaved": 0, "unstored": 0}
    assert again[:2] == first[:2]
    assert files[0].read_bytes() != b"not a program" and not files[1].read_bytes().startswith(head)


def test_another_model_is_another_program(tmp_path, store):
    _run(tmp_path, "first")
    n = len(list(store.rglob("*.bin")))
    other = _run(tmp_path, "wider", "vars.width=48")
    # only the program that does not depend on the model (the learning-rate schedule) is shared
    assert other[2]["loaded"] == 1 and other[2]["exported"] >= 4
    assert len(list(store.rglob("*.bin"))) == n + other[2]["exported"]


def test_a_program_that_cannot_be_saved_is_counted_and_the_run_goes_on(tmp_path, store, monkeypatch):
    first = _run(tmp_path, "first", "seed=5")

    def refuse(exported, path):
        raise ImportError("no serializer")

    monkeypatch.setattr(stored, "_store", refuse)
    monkeypatch.setenv("DSL_CACHE_DIR", str(tmp_path / "other"))   # nothing to load: every program is made
    again = _run(tmp_path, "again", "seed=5")
    assert again[2]["exported"] == first[2]["exported"] and again[2]["unsaved"] == again[2]["exported"]
    assert not (tmp_path / "other" / "programs").exists()
    assert again[:2] == first[:2]


def test_the_store_is_off_when_asked(tmp_path, store, monkeypatch):
    monkeypatch.setenv("DSL_COMPILATION_CACHE", "0")
    assert _run(tmp_path, "off")[2] == {"loaded": 0, "exported": 0, "unsaved": 0, "unstored": 0}
    assert not store.exists()


def test_fingerprints_name_values_exactly():
    def scaled(k):
        return lambda x: k * x

    assert stored.fingerprint({"a": 1}) == stored.fingerprint({"a": 1})
    assert stored.fingerprint({"a": 1}) != stored.fingerprint({"a": 1.0})
    assert stored.fingerprint(scaled(2)) != stored.fingerprint(scaled(3))     # what a closure holds
    assert stored.fingerprint(np.zeros(5000)) != stored.fingerprint(np.eye(1, 5000)[0])   # every element
    assert stored.fingerprint(functools.partial(scaled, 2)) != stored.fingerprint(functools.partial(scaled, 3))
    assert stored.fingerprint(object()) is None       # shown only by its address: no key, nothing stored
    assert stored.fingerprint([1, {"x": object()}]) is None


def test_a_stored_file_names_only_types_already_imported():
    with pytest.raises(stored.Unnamed):
        stored._resolve("os:system")
    with pytest.raises(stored.Unnamed):
        stored._resolve("optax.not_imported_module:State")
    import optax

    assert stored._resolve("optax._src.transform:ScaleByAdamState") is optax.ScaleByAdamState


def test_a_second_command_loads_every_program(tmp_path):
    """End to end, two processes: the second `python -m dsl run` loads the programs the first stored
    (summary.json says how many of each), and the initialisation and the epoch are not traced
    again (JAX logs the traces it makes outside an export)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "JAX_LOG_COMPILES": "1",
           "DSL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("DSL_PROGRAM_CACHE", None)
    logs, counts = [], []
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-m", "dsl", "run", f"conf={ROOT / 'examples' / 'iris.yaml'}",
                               "train.epochs=2", "plots=[]", f"hydra.run.dir={tmp_path / name}"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        logs.append(done.stderr)
        counts.append(json.loads((tmp_path / name / "summary.json").read_text())["programs"])
    n = counts[0]["exported"]
    assert n >= 4 and counts == [{"loaded": 0, "exported": n, "unsaved": 0, "unstored": 0},
                                 {"loaded": n, "exported": 0, "unsaved": 0, "unstored": 0}]
    for log in logs:
        assert "Finished tracing _stand_in for jit" in log
        assert "Finished tracing init for jit" not in log and "Finished tracing one_epoch for jit" not in log
    # with the store off, the same command traces them
    env["DSL_PROGRAM_CACHE"] = "0"
    done = subprocess.run([sys.executable, "-m", "dsl", "run", f"conf={ROOT / 'examples' / 'iris.yaml'}",
                           "train.epochs=2", "plots=[]", f"hydra.run.dir={tmp_path / 'c'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Finished tracing init for jit" in done.stderr and "Finished tracing one_epoch for jit" in done.stderr
