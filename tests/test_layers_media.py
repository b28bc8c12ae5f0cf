"""Image and sequence layers: exact parameter counts, shapes, padding masks, errors at the layer."""

from __future__ import annotations

import numpy as np
import pytest

import dsl.registry as reg
from dsl.errors import SpecError
from dsl.parse import parse_item
from dsl.spec import Model

from conftest import ROOT

reg.load_all()


def plan(layers, shape, dtype="float32", vocab=None, task="classification", n=10):
    from compilers.model.build import build_model

    items = tuple(parse_item(x, reg.LAYERS, f"model.layers[{i}]") for i, x in enumerate(layers))
    return build_model(Model(items), shape, task, n, input_dtype=dtype, vocab_size=vocab)


def table(p):
    return [(r["index"], r["kind"], tuple(r["output_shape"]), r["params"]) for r in p.rows]


def test_digits_cnn_counts():
    p = plan([{"conv": 16}, "relu", {"conv": {"features": 32, "kernel": 3}}, "relu", "max_pool", "flatten",
              {"dense": 64}, "relu"], (8, 8, 1))
    assert table(p) == [
        ("0", "conv", (8, 8, 16), 3 * 3 * 1 * 16 + 16),
        ("1", "relu", (8, 8, 16), 0),
        ("2", "conv", (8, 8, 32), 3 * 3 * 16 * 32 + 32),
        ("3", "relu", (8, 8, 32), 0),
        ("4", "max_pool", (4, 4, 32), 0),
        ("5", "flatten", (512,), 0),
        ("6", "dense", (64,), 512 * 64 + 64),
        ("7", "relu", (64,), 0),
        ("8", "dense", (10,), 64 * 10 + 10),
    ]
    assert p.total_params == 38282


def test_conv_1d_valid_stride_and_pools():
    p = plan([{"reshape": [16, 1]}, {"conv": {"features": 4, "kernel": 5, "padding": "VALID", "stride": 2}},
              {"avg_pool": 2}, "global_avg_pool"], (16,), task="regression", n=1)
    assert table(p)[:4] == [("0", "reshape", (16, 1), 0), ("1", "conv", (6, 4), 5 * 1 * 4 + 4),
                            ("2", "avg_pool", (3, 4), 0), ("3", "global_avg_pool", (4,), 0)]


def test_text_layers_counts():
    p = plan([{"embedding": 32}, {"lstm": 64}, {"dense": 32}], (16,), "int32", 50, n=2)
    lstm = 4 * (32 * 64) + 4 * (64 * 64 + 64)  # input kernels, recurrent kernels with bias, per gate
    assert table(p) == [("0", "embedding", (16, 32), 50 * 32), ("1", "lstm", (64,), lstm),
                        ("2", "dense", (32,), 64 * 32 + 32), ("3", "dense", (2,), 32 * 2 + 2)]
    p = plan([{"embedding": {"features": 32, "positions": True}}, {"transformer": 4}, "global_avg_pool"],
             (16,), "int32", 50, n=2)
    d = 32
    block = 2 * (2 * d) + 4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)  # norms, q/k/v/out, mlp
    assert table(p)[:3] == [("0", "embedding", (16, 32), 50 * 32 + 16 * 32), ("1", "transformer", (16, 32), block),
                            ("2", "global_avg_pool", (32,), 0)]
    p = plan([{"embedding": 8}, {"gru": {"features": 16, "return_sequences": True}}, {"attention": 2},
              {"rnn": 4}], (12,), "int32", 20, n=2)
    gru = 3 * (8 * 16) + 3 * (16 * 16) + 4 * 16  # input and recurrent kernels; biases of r, z, n (input) and n (hidden)
    rnn = 16 * 4 + 4 * 4 + 4
    assert table(p)[1:4] == [("1", "gru", (12, 16), gru), ("2", "attention", (12, 16), 4 * (16 * 16 + 16)),
                             ("3", "rnn", (4,), rnn)]


@pytest.mark.parametrize("layers,shape,dtype,path,text", [
    ([{"conv": 4}], (64,), "float32", "model.layers[0].conv", "set data.shape"),
    ([{"embedding": 4}], (64,), "float32", "model.layers[0].embedding", "needs token ids"),
    ([{"dense": 30}, {"reshape": [7, 7]}], (64,), "float32", "model.layers[1].reshape", "cannot reshape (30,)"),
    ([{"reshape": [8, 8, 1]}, {"max_pool": 16}], (64,), "float32", "model.layers[1].max_pool", "larger than the input"),
    ([{"reshape": [8, 8]}, {"attention": 3}], (64,), "float32", "model.layers[1].attention", "do not split into 3 heads"),
    ([{"lstm": 4}], (64,), "float32", "model.layers[0].lstm", "needs a sequence"),
    ([{"reshape": [8, 8, 1]}, {"conv": 4}], (64,), "float32", "model.head", "add flatten or global_avg_pool"),
])
def test_errors_name_the_layer(layers, shape, dtype, path, text):
    with pytest.raises(SpecError) as info:
        plan(layers, shape, dtype, vocab=10)
    assert info.value.path == path and text in info.value.message, (info.value.path, info.value.message)


def _apply(p, x):
    import jax

    variables = p.net.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)
    return np.asarray(p.net.apply(variables, x, train=False)), variables


@pytest.mark.parametrize("middle", [[{"lstm": 8}], [{"gru": 8}], [{"transformer": 2}, "global_avg_pool"],
                                    [{"attention": 2}, "global_avg_pool"]])
def test_padding_does_not_change_the_output(middle):
    import jax

    short = plan([{"embedding": 8}, *middle], (4,), "int32", 20, n=3)
    long = plan([{"embedding": 8}, *middle], (7,), "int32", 20, n=3)
    a = np.array([[5, 6, 7, 0], [3, 0, 0, 0]], np.int32)
    b = np.array([[5, 6, 7, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0, 0]], np.int32)
    ya, variables = _apply(short, a)
    yb = np.asarray(long.net.apply(variables, b, train=False))
    np.testing.assert_allclose(ya, yb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((4, 8, 8, 3), (3, 3), (1, 1), "SAME"), ((4, 9, 7, 2), (3, 2), (2, 1), "SAME"),
    ((4, 9, 7, 2), (3, 3), (2, 2), "VALID"), ((3, 11, 5), (4,), (1,), "SAME"),
    ((3, 11, 5), (3,), (2,), "VALID"), ((2, 5, 5, 1), (1, 1), (1, 1), "SAME")])
def test_im2col_convolution_equals_the_real_one(shape, kernel, stride, padding):
    """Values and both gradients of the patch-matrix form match lax.conv_general_dilated."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from compilers.model.layers import im2col_conv

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=kernel + (shape[-1], 6)), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC") if len(shape) == 4 else ("NWC", "WIO", "NWC")

    def f(conv):
        return lambda x, w: (conv(x, w, stride, padding, dimension_numbers=dn) ** 2).sum()

    real, ours = lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=dn), \
        im2col_conv(x, w, stride, padding, dimension_numbers=dn)
    assert ours.shape == real.shape
    np.testing.assert_allclose(ours, real, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.grad(f(im2col_conv), (0, 1))(x, w), jax.grad(f(lax.conv_general_dilated), (0, 1))(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_the_plan_scans_convolutions_as_im2col_on_the_cpu():
    """loop auto/scan: a scanned epoch with im2col convolutions (same parameters as the real
    convolution); loop step keeps the real convolution. Both train to the same numbers."""
    import jax

    from compilers.pipeline import plan_spec
    from compilers.train.step import epoch_order, hyperparams, make_programs
    from dsl.parse import parse_spec

    assert jax.default_backend() == "cpu"
    spec = {"name": "c", "seed": 0, "data": {"source": "digits", "shape": [8, 8, 1], "prep": ["min_max"],
                                             "split": {"test": 0.2, "val": 0.0}},
            "model": {"layers": [{"conv": {"features": 4, "activation": "relu"}}, {"conv": {"features": 4, "stride": 2}},
                                 "flatten"]},
            "train": {"batch_size": 64, "epochs": 2}, "plots": []}
    results = {}
    for loop in ("auto", "scan", "step"):
        data, p = plan_spec(parse_spec({**spec, "train": {**spec["train"], "loop": loop}}), ROOT)
        convs = [m for m in p.model.net.layers if hasattr(m, "im2col")]
        assert len(convs) == 2 and all(m.im2col == (loop != "step") for m in convs)
        assert p.train.loop == ("step" if loop == "step" else "scan")
        programs = make_programs(p)
        state = programs.init(np.int32(0), hyperparams(p))
        X, Y = jax.device_put(data.x["train"]), jax.device_put(data.y["train"])
        losses = []
        for e in range(2):
            state, stats, _ = programs.train_epoch(state, X, Y, epoch_order(0, e + 1, p.sizes["train"], p.train.batch_size), None)
            losses.append(float(stats["loss"]) / float(stats["n"]))
        results[loop] = (losses, jax.tree_util.tree_map(np.asarray, state.params))
    for loop in ("scan", "step"):
        np.testing.assert_allclose(results[loop][0], results["auto"][0], rtol=1e-4)
        for a, b in zip(jax.tree_util.tree_leaves(results[loop][1]), jax.tree_util.tree_leaves(results["auto"][1])):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
