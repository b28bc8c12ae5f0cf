"""A large file's programs compiled ahead, in a process of their own (compilers.train.precompile):
the stand-in data set has the real one's shapes and labels, compiling only stores and compiles
without running, and the run that follows compiles nothing and trains the same model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compilers.data import columnar, sources
from compilers.data.load import load_dataset
from dsl.parse import parse_spec

ROOT = Path(__file__).resolve().parents[1]
N = 3000


def spec(data: dict, **top):
    return parse_spec({"data": data, "model": {"layers": [{"dense": 8}]}, **top})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("precompile")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(5, 2, N), "b": rng.integers(0, 100, N), "c": rng.normal(0, 1, N).round(3),
                          "flag": rng.random(N) > 0.5, "y": rng.integers(0, 3, N), "v": rng.normal(3, 1, N)})
    frame.loc[rng.choice(N, 30, replace=False), "a"] = np.nan
    frame.to_csv(root / "t.csv", index=False)
    frame.drop(columns="y").assign(label=rng.choice(["cat", "dog", "eel", "fox"], N)).to_csv(root / "labels.csv",
                                                                                             index=False)
    frame.to_parquet(root / "t.parquet")
    gaps = frame.copy()
    gaps.loc[rng.choice(N, 7, replace=False), "y"] = np.nan
    gaps.to_csv(root / "gaps.csv", index=False)
    text = frame.assign(city=rng.choice(["paris", "lyon", "10", "9"], N).astype(object),
                        tier=rng.choice(["gold", "silver"], N))
    text.loc[rng.choice(N, 20, replace=False), "city"] = None
    for k, row in enumerate(rng.choice(N, 12, replace=False)):   # towns of one row: some in no training row
        text.loc[row, "city"] = f"town {k}"
    text.to_csv(root / "text.csv", index=False)
    return root


CASES = [
    ({"source": "t.csv", "target": "y", "prep": ["impute", "standardize"]}, {}),
    ({"source": "t.parquet", "target": "y", "prep": [{"impute": {"strategy": "median"}}, "min_max"]}, {}),
    ({"source": "labels.csv", "target": "label", "prep": ["impute"], "split": {"test": 0.2, "val": 0.1}}, {}),
    ({"source": "t.parquet", "target": "v", "prep": ["impute", {"clip": {"min": 0}}, {"log": {"offset": 1}}]}, {}),
    ({"source": "t.csv", "target": "y", "features": ["b", "c", "v", "flag"], "shape": [2, 2]}, {"seed": 3}),
    ({"source": "t.csv", "target": "y", "features": ["b", "c"], "split": {"val": 0.0, "test": 0.3, "stratify": False}},
     {}),
    ({"source": "text.csv", "target": "y", "prep": ["impute", {"one_hot": ["city"]}, "standardize", "one_hot"]}, {}),
    ({"source": "text.csv", "target": "v", "features": ["tier", "b", "city"], "prep": ["one_hot"]}, {"seed": 5}),
]


@pytest.mark.parametrize("data,top", CASES)
def test_the_stand_in_has_the_loads_shapes_and_labels(files, data, top):
    s = spec(data, **top)
    real, ahead = load_dataset(s, files), columnar.stand_in(s, files)
    assert ahead is not None
    assert (ahead.task, ahead.class_names, ahead.feature_names, ahead.input_shape, ahead.target) == \
        (real.task, real.class_names, real.feature_names, real.input_shape, real.target)
    assert ahead.sizes() == real.sizes() and ahead.n_classes == real.n_classes
    for split in real.x:
        assert ahead.x[split].shape == real.x[split].shape and ahead.x[split].dtype == real.x[split].dtype
        assert ahead.x[split].flags.c_contiguous and not ahead.x[split].any()
        np.testing.assert_array_equal(ahead.y[split], real.y[split])
        assert ahead.y[split].dtype == real.y[split].dtype


def test_the_stand_in_holds_no_memory_for_its_features():
    """Its x are zero pages: mapped, never written, so not resident however large."""
    from compilers.data.dataset import zero_pages

    def resident_kib() -> int:
        return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1])

    before = resident_kib()
    x = zero_pages((2_000_000, 50))     # 381 MiB
    assert x.sum(dtype=np.float64) == 0.0 and x.shape == (2_000_000, 50) and x.dtype == np.float32
    assert x.ctypes.data % 4096 == 0
    assert resident_kib() - before < 32 * 1024


@pytest.mark.parametrize("data", [
    {"source": "text.csv", "target": "y", "prep": ["impute", {"one_hot": ["city"]}]},   # text left as it is
    {"source": "text.csv", "target": "y", "features": ["a", "b"], "prep": [{"one_hot": ["a"]}]},  # numbers
    {"source": "t.csv", "target": "y", "prep": ["drop_na"]},                   # drops rows
    {"source": "gaps.csv", "target": "y"},                                     # an error the load reports
    {"source": "t.csv", "target": "nope"},
    {"source": "missing.csv", "target": "y"},
    {"source": "iris", "target": "target"},                                    # not a file
], ids=["text", "one_hot_numbers", "drop_na", "target_gaps", "no_such_column", "no_such_file", "builtin"])
def test_no_stand_in_where_the_shapes_need_more_than_the_target(files, data):
    assert columnar.stand_in(spec(data), files) is None


def test_when_a_run_compiles_ahead(files, tmp_path, monkeypatch):
    from jax._src import xla_bridge

    from compilers.train import precompile

    monkeypatch.setenv("DSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)   # (this process has started JAX)
    s = spec({"source": "t.csv", "target": "y"})
    monkeypatch.setattr(sources, "LARGE_FILE_BYTES", 0)
    path = precompile.wanted(s, files)
    assert path is not None and not path.exists() and path.parent == tmp_path / "cache" / "precompiled"
    assert precompile.wanted(spec({"source": "t.csv", "target": "y", "prep": ["standardize"]}), files) not in (None, path)
    assert precompile.wanted(spec({"source": "iris", "target": "target"}), files) is None
    assert precompile.wanted(spec({"source": "t.csv", "target": "y", "prep": ["drop_na"]}), files) is None
    monkeypatch.setenv("DSL_PRECOMPILE", "0")
    assert precompile.wanted(s, files) is None
    monkeypatch.delenv("DSL_PRECOMPILE")
    monkeypatch.setenv("DSL_COMPILATION_CACHE", "0")
    assert precompile.wanted(s, files) is None
    monkeypatch.delenv("DSL_COMPILATION_CACHE")
    path.parent.mkdir(parents=True)
    path.touch()                                   # compiled ahead before: not again
    assert precompile.wanted(s, files) is None
    os.utime(files / "t.csv")                      # the file changed since
    assert precompile.wanted(s, files) not in (None, path)
    monkeypatch.setattr(sources, "LARGE_FILE_BYTES", 64 << 20)
    assert precompile.wanted(s, files) is None     # a small file: compiled beside its data, as it costs little
    monkeypatch.setattr(sources, "LARGE_FILE_BYTES", 0)
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    assert precompile.wanted(s, files) is None     # a fork would have no working JAX


def test_compiling_only_stores_and_compiles_without_running(tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp

    from compilers.train import stored

    monkeypatch.setenv("DSL_CACHE_DIR", str(tmp_path))
    ran = []

    def fn(state, x):
        jax.debug.callback(lambda: ran.append(1))
        return {"w": state["w"] + x.sum(), "k": jax.random.split(state["k"])[0], "n": state["n"] + 1}, x.mean(0) * 2.0

    program = stored.Program(fn, "t", stored.fingerprint("compiling only", tmp_path.name))
    state = {"w": jnp.zeros(3), "k": jax.random.key(1), "n": jnp.int32(0)}
    x = jax.device_put(np.arange(12, dtype=np.float32).reshape(4, 3))
    before = dict(stored.COUNTS)
    with stored.compiling_only():
        out, mean = program(state, x)
        again = program(out, x)          # a stand-in is a valid argument; the same shapes: nothing more compiled
    assert not ran
    assert stored.COUNTS["exported"] == before["exported"] + 1
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(state)
    assert [jax.typeof(v) for v in jax.tree_util.tree_leaves((out, mean))] == \
        [jax.typeof(v) for v in jax.tree_util.tree_leaves(program.lower(state, x).out_info)]
    np.testing.assert_array_equal(out["w"], np.ones(3))
    assert all(v.committed for v in jax.tree_util.tree_leaves((out, mean, again)))   # as a stored program's are
    real, real_mean = program(state, x)                                              # and outside, it runs
    assert ran and float(real["n"]) == 1.0
    np.testing.assert_allclose(real_mean, np.arange(12, dtype=np.float32).reshape(4, 3).mean(0) * 2)
    assert not stored.compiling_only_now()


RUN = """
import json, os, sys
from pathlib import Path
import jax
from jax import monitoring
events = {}
monitoring.register_event_listener(lambda e, **kw: events.__setitem__(e, events.get(e, 0) + 1))
from compilers.pipeline import configure_jax, run_spec
from compilers.train import precompile, stored
from dsl.parse import parse_spec
import compilers.data.sources as sources
sources.LARGE_FILE_BYTES = 0
configure_jax()
spec = parse_spec(json.loads(sys.argv[1]))
before = dict(events)
run_spec(spec, Path(sys.argv[2]), Path(sys.argv[3]), progress=False)
summary = json.loads((Path(sys.argv[2]) / "summary.json").read_text())
print(json.dumps({"metrics": summary["metrics"], "times": summary["times"], "programs": summary["programs"],
                  "misses": events.get("/jax/compilation_cache/cache_misses", 0),
                  "hits": events.get("/jax/compilation_cache/cache_hits", 0)}))
"""


@pytest.mark.parametrize("feed", ["device", "chunks", "mesh"])
def test_a_run_after_compiling_ahead_compiles_nothing_and_trains_the_same_model(files, tmp_path, feed):
    """In fresh processes (a fork needs JAX's backend unstarted): the first run of a spec forks the
    process that compiles ahead; the run itself then finds every program in the caches (no stored
    program traced, no XLA cache miss); a second run does not fork again; the metrics equal those of
    a run that compiled beside its data. With several devices the process declines (a mesh's
    programs are not foreseen): the run compiles them itself, and the spec is marked all the same."""
    mesh = feed == "mesh"
    feed = "device" if mesh else feed
    raw = {"name": "ahead", "seed": 0,
           "data": {"source": str(files / "t.csv"), "target": "y", "prep": ["impute", "standardize"],
                    "split": {"test": 0.2, "val": 0.1}},
           "model": {"layers": [{"dense": 16}, "relu", {"dropout": 0.1}]},
           "train": {"epochs": 3, "batch_size": 64, "metrics": ["accuracy"], "feed": feed, "chunk_rows": 512},
           "report": {"images": "none"}, "plots": "auto"}

    def run(name: str, cache: str, **env) -> dict:
        environ = {**os.environ, "DSL_CACHE_DIR": str(tmp_path / cache), "DSL_WORKER": "0", "JAX_PLATFORMS": "cpu",
                   **({"XLA_FLAGS": "--xla_force_host_platform_device_count=4"} if mesh else {}), **env}
        done = subprocess.run([sys.executable, "-c", RUN, json.dumps(raw), str(tmp_path / name), str(files)],
                              cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = run("first", "a"), run("second", "a")
    plain = run("plain", "b", DSL_PRECOMPILE="0")
    assert "compile_ahead_s" in first["times"]
    assert "compile_ahead_s" not in second["times"] and "compile_ahead_s" not in plain["times"]
    assert first["metrics"] == plain["metrics"] == second["metrics"]
    if mesh:
        assert first["misses"] == plain["misses"] > 5 and second["misses"] == 0
        return
    assert first["misses"] == 0 and first["hits"] > 5
    assert first["programs"]["exported"] == 0 and first["programs"]["loaded"] > 5
    assert plain["misses"] > 5 and plain["programs"]["exported"] > 5    # (what compiling beside the data does)
    assert len(list((tmp_path / "a" / "precompiled").iterdir())) == 1
