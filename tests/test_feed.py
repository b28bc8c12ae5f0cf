"""train.feed: the training split on the device once, or streamed to it in chunks each epoch.

Chunks draw the device feed's padded row order from the epoch's key and cut it into whole
minibatches, so both feeds take the same steps on the same rows: the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compilers.data.load import load_dataset
from compilers.pipeline import compile_data, configure_jax
from dsl.errors import SpecError
from dsl.parse import parse_spec

configure_jax()


def make_spec(seed: int = 0, **train):
    return parse_spec({"name": "feed", "seed": seed,
                       "data": {"source": "moons", "options": {"n_samples": 600, "noise": 0.2}, "prep": ["standardize"]},
                       "model": {"layers": [{"dense": 16}, "relu", {"dropout": 0.1}, {"dense": 16}, "relu"]},
                       "train": {"epochs": 3, "batch_size": 32, **train}, "plots": []})


@pytest.fixture(scope="module")
def data():
    return load_dataset(make_spec(), Path("."))


def run(data, tmp_path, **train):
    from compilers.train.loop import train as train_run

    spec = make_spec(**train)
    plan = compile_data(spec, data)
    return plan, train_run(plan, data, tmp_path / f"run{len(list(tmp_path.iterdir()))}", progress=False)


def same_weights(a, b) -> bool:
    return a.weights.keys() == b.weights.keys() and all(
        np.array_equal(a.weights[k][w], b.weights[k][w]) for k in a.weights for w in a.weights[k])


def strip(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


@pytest.mark.parametrize("loop", ["scan", "step"])
def test_one_chunk_of_every_row_is_the_device_feed_exactly(data, tmp_path, loop):
    plan_d, device = run(data, tmp_path, feed="device", loop=loop)
    plan_c, chunks = run(data, tmp_path, feed="chunks", chunk_rows=100_000, loop=loop)
    assert (plan_d.train.feed, plan_c.train.feed) == ("device", "chunks")
    assert plan_c.train.chunk_rows == plan_c.train.steps_per_epoch * plan_c.train.batch_size   # one chunk
    assert same_weights(device, chunks)
    assert strip(device.history) == strip(chunks.history)
    assert device.summary["metrics"] == chunks.summary["metrics"]
    assert (device.summary["feed"], chunks.summary["feed"]) == (
        {"kind": "device"}, {"kind": "chunks", "chunk_rows": plan_c.train.chunk_rows})


@pytest.mark.parametrize("loop", ["scan", "step"])
def test_small_chunks_take_the_same_steps(data, tmp_path, loop):
    _, device = run(data, tmp_path, feed="device", loop=loop)
    plan, chunks = run(data, tmp_path, feed="chunks", chunk_rows=64, loop=loop)   # 2 batches a chunk, 7 chunks
    assert plan.train.steps_per_epoch > 2 * (plan.train.chunk_rows // 32)
    assert same_weights(device, chunks)                   # the same minibatches in the same order
    for a, b in zip(strip(device.history), strip(chunks.history)):
        assert a.keys() == b.keys()
        for k in a:   # statistics are sums added chunk by chunk: equal up to float32 rounding
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), k
    for split, m in device.summary["metrics"].items():
        assert chunks.summary["metrics"][split] == pytest.approx(m, rel=1e-6)


def test_a_different_seed_is_a_different_shuffle(data, tmp_path):
    from compilers.train.loop import train as train_run

    _, a = run(data, tmp_path, feed="chunks", chunk_rows=64)
    b = train_run(compile_data(make_spec(seed=1, feed="chunks", chunk_rows=64), data), data, tmp_path / "seed1",
                  progress=False)
    assert not same_weights(a, b)
    _, again = run(data, tmp_path, feed="chunks", chunk_rows=64)
    assert same_weights(a, again)                          # deterministic per seed


def test_auto_streams_when_the_split_exceeds_half_the_device(data, monkeypatch):
    spec = make_spec()
    n = data.x["train"].shape[0]
    need = n * (2 * 4 + 4)                                 # two float32 features and an int32 label per row
    monkeypatch.setenv("DSL_DEVICE_MEMORY_BYTES", str(2 * need + 1000))
    assert compile_data(spec, data).train.feed == "device"
    monkeypatch.setenv("DSL_DEVICE_MEMORY_BYTES", str(2 * need - 1000))
    plan = compile_data(spec, data)
    assert plan.train.feed == "chunks"
    # a chunk: 1/16 of the device's memory (small here), whole minibatches, at least one
    assert plan.train.chunk_rows % 32 == 0 and 32 <= plan.train.chunk_rows <= (2 * need) / 16 / 12 + 32
    monkeypatch.setenv("DSL_DEVICE_MEMORY_BYTES", "8192")   # (the model itself needs ~6 KB)
    assert compile_data(spec, data).train.chunk_rows == 32
    monkeypatch.setenv("DSL_DEVICE_MEMORY_BYTES", str(2**40))
    plan = compile_data(make_spec(feed="chunks"), data)   # 32 MiB of rows, capped at the epoch
    assert plan.train.chunk_rows == plan.train.steps_per_epoch * 32
    from compilers.plan import _choose_feed
    assert _choose_feed(make_spec(feed="chunks").train, 10**7, 32, 10**7 // 32, (2,), "float32") == (
        "chunks", 32 * ((32 << 20) // (12 * 32)))
    assert compile_data(make_spec(feed="device"), data).train.feed == "device"


def test_auto_training_in_chunks_end_to_end(data, tmp_path, monkeypatch):
    monkeypatch.setenv("DSL_DEVICE_MEMORY_BYTES", "8192")
    plan, chunks = run(data, tmp_path)
    assert plan.train.feed == "chunks" and chunks.summary["feed"]["kind"] == "chunks"
    monkeypatch.delenv("DSL_DEVICE_MEMORY_BYTES")
    _, device = run(data, tmp_path)
    assert same_weights(device, chunks)


def test_bad_values(data, monkeypatch):
    with pytest.raises(SpecError) as info:
        compile_data(make_spec(feed="chunks", chunk_rows=100), data)
    assert str(info.value) == ("train.chunk_rows: 100 rows per chunk is not a whole number of minibatches of 32 "
                               "(train.batch_size); use 96 or 128")
    with pytest.raises(SpecError) as info:
        compile_data(make_spec(feed="chunks", chunk_rows=20), data)
    assert str(info.value).endswith("use 32")
    compile_data(make_spec(feed="chunks", chunk_rows=10**9), data)             # every row in one chunk: fine
    for bad, shown in (("feed", "'chunk'"), ("chunk_rows", "0")):
        with pytest.raises(SpecError) as info:
            make_spec(**{bad: "chunk" if bad == "feed" else 0})
        assert info.value.path == f"train.{bad}" and shown in str(info.value)
    monkeypatch.setenv("DSL_DEVICE_MEMORY_BYTES", "lots")
    with pytest.raises(SpecError) as info:
        compile_data(make_spec(), data)
    assert str(info.value) == "DSL_DEVICE_MEMORY_BYTES: must be a positive number of bytes, got 'lots'"


def test_a_vmapped_group_is_fed_from_the_device(data, tmp_path):
    from compilers.train.loop import train_group

    specs = [make_spec(feed="chunks", chunk_rows=64), make_spec(feed="chunks", chunk_rows=64)]
    plans = [compile_data(s, data) for s in specs]
    records = train_group(plans, [data, data], [tmp_path / "a", tmp_path / "b"], progress=False)
    assert [r.summary["feed"] for r in records] == [{"kind": "device"}] * 2
    _, alone = run(data, tmp_path, feed="chunks", chunk_rows=64)
    np.testing.assert_allclose(records[0].history[-1]["loss"], alone.history[-1]["loss"], rtol=1e-4)


def test_evaluation_in_chunks_adds_up(data):
    """The final evaluation sends large splits in chunks (never a padded copy of the whole split)."""
    import jax

    from compilers.train.loop import _evaluate
    from compilers.train.step import hyperparams, make_programs

    plan = compile_data(make_spec(), data)
    programs = make_programs(plan)
    state = programs.init(np.int32(0), hyperparams(plan))
    x, y = data.x["train"], data.y["train"]
    whole, out_whole = _evaluate(programs.evaluate_predict, state.params, state.model_state, x, y, 64, outputs=True)
    parts, out_parts = _evaluate(programs.evaluate_predict, state.params, state.model_state, x, y, 64, outputs=True,
                                 rows=128)
    assert out_whole.shape[0] == x.shape[0] and np.array_equal(out_whole, out_parts)
    for k in whole:
        np.testing.assert_allclose(parts[k], whole[k], rtol=1e-5)
    assert jax.device_get(whole["n"]) == x.shape[0]
