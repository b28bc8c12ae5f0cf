"""Every entry of every registry, parametrised from the registries themselves (as optax tests
every optimizer): a new entry is picked up here without editing this file, and an entry that needs
a hand-written reference (a layer's example, a loss's or a metric's formula) fails with a message
that says what to add.

Layers: output shapes, train/eval behaviour, activations against jax.nn. build_model: exact
parameter counts and layer-table shapes (as flax's examples pin them). Losses: values against
numpy. Optimizers: each minimises a quadratic; clip_norm clips. Schedules: warm-up, sign, ends.
Metrics: from batch_stats sums against scikit-learn. All: docs and `python -m dsl list`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsl import registry as reg
from dsl.errors import SpecError
from dsl.parse import parse_item, parse_named
from dsl.spec import TASKS, Model

reg.load_all()

ROOT = Path(__file__).resolve().parents[1]


def _names(registry: reg.Registry) -> list[str]:
    return registry.names()


# =============================================================================================
# Docs and `python -m dsl list`: every entry of every registry

ALL_ENTRIES = [pytest.param(e, id=f"{family}:{e.name}")
               for family, registry in reg.FAMILIES.items() for e in registry]


@pytest.mark.parametrize("entry", ALL_ENTRIES)
def test_entry_has_a_one_line_doc(entry):
    first = reg.one_line(entry.doc)
    assert first.strip(), f"{entry.family} '{entry.name}' has no docstring (on its builder or options class)"
    assert entry.doc.strip().splitlines()[0].strip(), entry.doc


@pytest.mark.parametrize("entry", ALL_ENTRIES)
def test_every_option_has_a_doc(entry):
    assert dataclasses.is_dataclass(entry.options), entry.options
    for f in dataclasses.fields(entry.options):
        assert "doc" in f.metadata, f"{entry.family} '{entry.name}': option '{f.name}' is not declared with opt()"
        assert str(f.metadata["doc"]).strip(), f"{entry.family} '{entry.name}': option '{f.name}' has no doc"


@pytest.mark.parametrize("entry", ALL_ENTRIES)
def test_positional_names_an_option(entry):
    if entry.positional is not None:
        assert entry.positional in {f.name for f in entry.fields()}, entry


def _listed(text: str) -> dict[str, list[str]]:
    """`dsl list` output -> {section title: [entry names]}."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if not line.strip():
            current = None
        elif not line.startswith(" "):
            current = line.strip()
            sections[current] = []
        else:
            sections[current].append(line.split()[0])
    return sections


def test_listing_names_every_entry_of_every_registry():
    from dsl.commands.list import TITLES, listing

    sections = _listed(listing())
    assert set(sections) == {TITLES[f] for f in reg.FAMILIES}
    for family, registry in reg.FAMILIES.items():
        assert sections[TITLES[family]] == registry.names(), family


def test_python_m_dsl_list_names_every_entry():
    proc = subprocess.run([sys.executable, "-m", "dsl", "list"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = {name for names in _listed(proc.stdout).values() for name in names}
    for family, registry in reg.FAMILIES.items():
        missing = set(registry.names()) - listed
        assert not missing, (family, missing)


def test_listing_does_not_import_jax():
    code = ("import sys; from dsl.commands.list import listing; listing(); "
            "print('jax' in sys.modules, 'flax' in sys.modules, 'optax' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "False"], proc.stdout


# =============================================================================================
# LAYERS

# kind -> (raw item, input shape per example, expected output shape per example).
# A new layer kind needs a line here (its activation-style kinds are covered automatically).
LAYER_EXAMPLES = {
    "dense": ({"dense": 5}, (3,), (5,)),
    "dropout": ({"dropout": 0.5}, (6,), (6,)),
    "batch_norm": ("batch_norm", (6,), (6,)),
    "layer_norm": ("layer_norm", (6,), (6,)),
    "flatten": ("flatten", (2, 3), (6,)),
    "residual": ({"residual": [{"dense": 6}, "relu"]}, (6,), (6,)),
    "repeat": ({"repeat": {"times": 2, "layers": [{"dense": 4}]}}, (6,), (4,)),
    "conv": ({"conv": {"features": 4, "kernel": 3}}, (6, 6, 2), (6, 6, 4)),
    "max_pool": ("max_pool", (6, 6, 2), (3, 3, 2)),
    "avg_pool": ({"avg_pool": 3}, (9, 2), (3, 2)),
    "global_avg_pool": ("global_avg_pool", (5, 5, 3), (3,)),
    "reshape": ({"reshape": [2, -1]}, (6,), (2, 3)),
    "embedding": ({"embedding": {"features": 4, "vocab_size": 10}}, (5,), (5, 4)),
    "lstm": ({"lstm": 3}, (5, 2), (3,)),
    "gru": ({"gru": {"features": 3, "return_sequences": True}}, (5, 2), (5, 3)),
    "rnn": ({"rnn": 3}, (5, 2), (3,)),
    "attention": ({"attention": 2}, (5, 4), (5, 4)),
    "transformer": ({"transformer": 2}, (5, 4), (5, 4)),
}
# Kinds that read token ids (int32 in [0, 10)) rather than floats.
TOKEN_INPUT = {"embedding"}
# Kinds whose output depends on `train` (everything else must give the same output either way).
TRAIN_DEPENDENT = {"dropout", "batch_norm"}


def _is_activation(name: str) -> bool:
    return bool(reg.LAYERS.get(name).meta.get("activation"))


def _example(name: str):
    if name in LAYER_EXAMPLES:
        return LAYER_EXAMPLES[name]
    if _is_activation(name):
        return name, (6,), (6,)
    pytest.fail(f"layer '{name}' has no example in tests/test_registry.py LAYER_EXAMPLES: "
                "add (raw item, input shape, output shape)")


def build_seq(items):
    """What build.py's _build_seq does: the BuildContext that builds nested layer lists."""
    from compilers.model.layers import BuildContext

    ctx = BuildContext(build_seq=build_seq)
    return tuple(reg.LAYERS.get(it.kind).build(it.options, ctx) for it in items)


def build_layer(raw):
    item = parse_item(raw, reg.LAYERS, "model.layers[0]")
    (module,) = build_seq((item,))
    return module


def init_layer(module, x):
    import jax

    return module.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)


def apply_layer(module, variables, x, train: bool):
    """One call; batch statistics may update in train mode (the update is dropped)."""
    import jax

    if train:
        out, _ = module.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                              mutable=["batch_stats"])
        return out
    return module.apply(variables, x, train=False)


def run_layer(module, x, train: bool):
    """Initialises (eval mode, fixed keys) and applies once."""
    return apply_layer(module, init_layer(module, x), x, train)


def _input(shape, seed=0):
    rng = np.random.default_rng(seed)
    # Offset and scaled so that batch statistics differ from the initial running ones.
    return np.asarray(rng.normal(1.5, 3.0, size=(8, *shape)), np.float32)


@pytest.mark.parametrize("name", _names(reg.LAYERS))
def test_layer_output_shape_and_train_mode(name):
    raw, in_shape, out_shape = _example(name)
    module = build_layer(raw)
    x = _input(in_shape) if name not in TOKEN_INPUT else np.random.default_rng(0).integers(0, 10, (8, *in_shape))
    variables = init_layer(module, x)
    y_eval = np.asarray(apply_layer(module, variables, x, train=False))
    y_train = np.asarray(apply_layer(module, variables, x, train=True))
    assert y_eval.shape == (8, *out_shape)
    assert y_train.shape == (8, *out_shape)
    assert np.isfinite(y_eval).all() and np.isfinite(y_train).all()
    # Deterministic: the same call twice gives the same output (dropout: the same key, the same mask).
    np.testing.assert_array_equal(y_eval, np.asarray(apply_layer(module, variables, x, train=False)))
    np.testing.assert_array_equal(y_train, np.asarray(apply_layer(module, variables, x, train=True)))
    if name in TRAIN_DEPENDENT:
        assert not np.allclose(y_eval, y_train), f"{name}: train=True should change the output"
    else:
        np.testing.assert_array_equal(y_eval, y_train)


def test_dropout_scales_kept_units_and_is_identity_at_eval():
    module = build_layer({"dropout": 0.5})
    x = np.ones((64, 32), np.float32)
    np.testing.assert_array_equal(np.asarray(run_layer(module, x, train=False)), x)
    y = np.asarray(run_layer(module, x, train=True))
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.3 < (y == 0).mean() < 0.7
    # rate 0 is the identity in both modes
    zero = build_layer({"dropout": 0.0})
    np.testing.assert_array_equal(np.asarray(run_layer(zero, x, train=True)), x)


def test_batch_norm_normalises_over_the_batch_in_train_mode():
    module = build_layer("batch_norm")
    x = _input((6,))
    y = np.asarray(run_layer(module, x, train=True))
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(0), 1.0, atol=1e-3)
    # At evaluation the initial running statistics (mean 0, var 1) leave x almost unchanged.
    np.testing.assert_allclose(np.asarray(run_layer(module, x, train=False)), x, rtol=1e-4, atol=1e-4)


def test_layer_norm_normalises_each_example():
    y = np.asarray(run_layer(build_layer("layer_norm"), _input((6,)), train=False))
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1.0, atol=1e-3)


def test_residual_adds_its_input():
    import jax

    module = build_layer({"residual": [{"dense": 6}]})
    x = _input((6,))
    variables = module.init({"params": jax.random.key(0)}, x, train=False)
    p = variables["params"]["layers_0"]
    expected = x + x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    np.testing.assert_allclose(np.asarray(module.apply(variables, x, train=False)), expected, rtol=1e-5, atol=1e-5)


def test_repeat_copies_have_their_own_parameters():
    import jax

    module = build_layer({"repeat": {"times": 3, "layers": [{"dense": 4}]}})
    variables = module.init({"params": jax.random.key(0)}, _input((4,)), train=False)
    params = variables["params"]
    assert sorted(params) == ["layers_0", "layers_1", "layers_2"]
    kernels = [np.asarray(params[k]["kernel"]) for k in sorted(params)]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])


def _jax_activation(name: str):
    import jax
    import jax.numpy as jnp

    fn = getattr(jax.nn, name, None) or getattr(jnp, name, None)
    if fn is None:
        pytest.fail(f"activation '{name}' has no jax.nn / jax.numpy function of the same name")
    return fn


ACTIVATION_LAYERS = [e.name for e in reg.LAYERS if e.meta.get("activation")]


@pytest.mark.parametrize("name", ACTIVATION_LAYERS)
def test_activation_layer_equals_jax_nn(name):
    x = _input((6,))
    got = np.asarray(run_layer(build_layer(name), x, train=False))
    np.testing.assert_allclose(got, np.asarray(_jax_activation(name)(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("raw,fn", [
    ({"elu": 0.5}, lambda jnn, x: jnn.elu(x, alpha=0.5)),
    ({"elu": {"alpha": 2.0}}, lambda jnn, x: jnn.elu(x, alpha=2.0)),
    ({"leaky_relu": 0.2}, lambda jnn, x: jnn.leaky_relu(x, negative_slope=0.2)),
    ("leaky_relu", lambda jnn, x: jnn.leaky_relu(x, negative_slope=0.01)),
], ids=["elu-0.5", "elu-alpha-2", "leaky-0.2", "leaky-default"])
def test_activation_options(raw, fn):
    import jax.nn as jnn

    x = _input((6,))
    got = np.asarray(run_layer(build_layer(raw), x, train=False))
    np.testing.assert_allclose(got, np.asarray(fn(jnn, x)), rtol=1e-6, atol=1e-6)


def test_softmax_is_over_the_last_axis():
    y = np.asarray(run_layer(build_layer("softmax"), _input((2, 5)), train=False))
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("activation", reg.LAYERS.get("dense").options.__dataclass_fields__["activation"]
                         .metadata["choices"]())
def test_dense_activation_option(activation):
    import jax

    module = build_layer({"dense": {"features": 4, "activation": activation}})
    x = _input((3,))
    variables = module.init({"params": jax.random.key(0)}, x, train=False)
    p = variables["params"]
    linear = x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    expected = np.asarray(_jax_activation(activation)(linear))
    np.testing.assert_allclose(np.asarray(module.apply(variables, x, train=False)), expected, rtol=1e-5, atol=1e-6)


def test_dense_without_bias():
    import jax

    module = build_layer({"dense": {"features": 4, "use_bias": False}})
    variables = module.init({"params": jax.random.key(0)}, _input((3,)), train=False)
    assert set(variables["params"]) == {"kernel"}


# =============================================================================================
# build_model: exact parameter counts and the layer table


def model(*raws, head: str = "auto") -> Model:
    return Model(tuple(parse_item(r, reg.LAYERS, f"model.layers[{i}]") for i, r in enumerate(raws)), head)


def build(m: Model, input_shape, task="classification", n_classes=3, **kw):
    from compilers.model.build import build_model

    return build_model(m, tuple(input_shape), task, n_classes, **kw)


def table(plan):
    return [(r["index"], r["kind"], r["path"], r["output_shape"], r["params"]) for r in plan.rows]


def test_mlp_parameter_count_and_table():
    plan = build(model({"dense": 64}, "relu", {"dense": 32}), (4,), "classification", 3)
    assert plan.total_params == 4 * 64 + 64 + 64 * 32 + 32 + 32 * 3 + 3 == 2499
    assert table(plan) == [
        ("0", "dense", "model.layers[0]", [64], 4 * 64 + 64),
        ("1", "relu", "model.layers[1]", [64], 0),
        ("2", "dense", "model.layers[2]", [32], 64 * 32 + 32),
        ("3", "dense", "model.head", [3], 32 * 3 + 3),
    ]
    assert plan.rows[0]["param_shapes"] == {"kernel": [4, 64], "bias": [64]}
    assert [r["activation"] for r in plan.rows] == [None, "relu", None, None]
    assert plan.output_shape == (3,) and plan.n_out == 3


def test_built_net_runs_with_the_planned_shapes():
    import jax

    plan = build(model({"dense": 16}, "relu", "dropout", {"dense": {"features": 8, "activation": "tanh"}}, "batch_norm"),
                 (5,), "classification", 4)
    x = _input((5,))
    variables = plan.net.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)
    assert sum(np.asarray(v).size for v in jax.tree_util.tree_leaves(variables["params"])) == plan.total_params
    assert jax.tree_util.tree_map(lambda a: a.shape, variables) == jax.tree_util.tree_map(
        lambda a: a.shape, plan.variable_shapes)
    assert plan.net.apply(variables, x, train=False).shape == (8, 4)


def test_regression_and_binary_logit_heads_have_one_unit():
    reg_plan = build(model({"dense": 8}), (3,), "regression", 0)
    assert reg_plan.n_out == 1 and reg_plan.total_params == 3 * 8 + 8 + 8 + 1
    bin_plan = build(model({"dense": 8}), (3,), "classification", 2, binary_logit=True)
    assert bin_plan.n_out == 1 and bin_plan.output_shape == (1,)
    two = build(model({"dense": 8}), (3,), "classification", 2)
    assert two.n_out == 2 and two.total_params == 3 * 8 + 8 + 8 * 2 + 2


def test_batch_norm_and_layer_norm_parameter_counts():
    plan = build(model({"dense": 8}, "batch_norm", "relu", "layer_norm"), (4,), "regression", 1)
    # batch_norm and layer_norm: a scale and a bias per feature; running mean/var are not parameters
    assert table(plan) == [
        ("0", "dense", "model.layers[0]", [8], 4 * 8 + 8),
        ("1", "batch_norm", "model.layers[1]", [8], 2 * 8),
        ("2", "relu", "model.layers[2]", [8], 0),
        ("3", "layer_norm", "model.layers[3]", [8], 2 * 8),
        ("4", "dense", "model.head", [1], 8 + 1),
    ]
    assert plan.total_params == 40 + 16 + 16 + 9 == 81
    stats = plan.variable_shapes["batch_stats"]["layers_1"]
    assert {k: v.shape for k, v in stats.items()} == {"mean": (8,), "var": (8,)}
    assert set(plan.variable_shapes["params"]["layers_3"]) == {"scale", "bias"}


def test_residual_block_table():
    plan = build(model({"dense": 8}, {"residual": [{"dense": 8}, "relu"]}), (3,), "classification", 2)
    assert table(plan) == [
        ("0", "dense", "model.layers[0]", [8], 3 * 8 + 8),
        ("1", "residual", "model.layers[1]", [8], 8 * 8 + 8),
        ("1.0", "dense", "model.layers[1].residual[0]", [8], 8 * 8 + 8),
        ("1.1", "relu", "model.layers[1].residual[1]", [8], 0),
        ("2", "dense", "model.head", [2], 8 * 2 + 2),
    ]
    assert [r["depth"] for r in plan.rows] == [0, 0, 1, 1, 0]
    assert plan.total_params == 32 + 72 + 18


def test_repeat_has_separate_parameter_sets():
    plan = build(model({"repeat": {"times": 3, "layers": [{"dense": 4}, "relu"]}}), (4,), "regression", 1)
    assert plan.total_params == 3 * (4 * 4 + 4) + (4 + 1) == 65
    rows = table(plan)
    assert rows[0] == ("0", "repeat", "model.layers[0]", [4], 60)
    assert rows[1:-1] == [
        (f"0.{2 * c + j}", kind, f"model.layers[0].repeat.layers[{j}] (copy {c + 1})", [4], params)
        for c in range(3) for j, (kind, params) in enumerate([("dense", 20), ("relu", 0)])
    ]
    assert rows[-1] == ("1", "dense", "model.head", [1], 5)
    inner = plan.variable_shapes["params"]["layers_0"]
    assert sorted(inner) == ["layers_0", "layers_2", "layers_4"]  # one kernel per copy
    assert all(inner[k]["kernel"].shape == (4, 4) for k in inner)


def test_flatten_before_the_head():
    plan = build(model({"dense": 5}, "flatten"), (4, 3), "classification", 3)
    assert table(plan) == [
        ("0", "dense", "model.layers[0]", [4, 5], 3 * 5 + 5),
        ("1", "flatten", "model.layers[1]", [20], 0),
        ("2", "dense", "model.head", [3], 20 * 3 + 3),
    ]


def test_head_none_uses_the_last_layer():
    plan = build(model({"dense": 8}, "relu", {"dense": 3}, head="none"), (4,), "classification", 3)
    assert plan.total_params == 40 + 27
    assert [r["path"] for r in plan.rows] == ["model.layers[0]", "model.layers[1]", "model.layers[2]"]
    assert plan.output_shape == (3,)


def test_head_none_with_the_wrong_width_is_a_spec_error():
    with pytest.raises(SpecError) as info:
        build(model({"dense": 8}, "relu", {"dense": 5}, head="none"), (4,), "classification", 3)
    assert info.value.path == "model.head"
    assert "(3,)" in info.value.message and "(5,)" in info.value.message


def test_head_auto_needs_one_axis():
    with pytest.raises(SpecError) as info:
        build(model({"dense": 5}), (4, 3), "classification", 3)
    assert info.value.path == "model.head"
    assert "flatten" in info.value.message


def test_residual_that_changes_the_shape_is_reported_at_its_item():
    with pytest.raises(SpecError) as info:
        build(model({"dense": 8}, {"residual": [{"dense": 4}]}), (3,), "classification", 3)
    assert info.value.path == "model.layers[1].residual"
    assert "(8,)" in info.value.message and "(4,)" in info.value.message


def test_residual_inside_repeat_names_the_copy():
    with pytest.raises(SpecError) as info:
        build(model({"repeat": {"times": 2, "layers": [{"residual": [{"dense": 5}]}]}}), (4,), "regression", 1)
    assert info.value.path == "model.layers[0].repeat.layers[0].residual"
    assert "(copy 1 of 2)" in info.value.message


# =============================================================================================
# LOSSES


def _softplus(z):
    return np.logaddexp(0.0, z)


def _ref_cross_entropy(out, y, o):
    z = out - out.max(-1, keepdims=True)
    return np.log(np.exp(z).sum(-1)) - z[np.arange(len(y)), y]


def _ref_binary_cross_entropy(out, y, o):
    z = out[:, 0]
    return _softplus(z) - y * z


def _ref_huber(out, y, o):
    e = np.abs(out[:, 0] - y)
    d = o.delta
    return np.where(e <= d, 0.5 * e ** 2, d * (e - 0.5 * d))


# name -> (n_out, label kind, numpy reference). A new loss needs a line here.
LOSS_REFERENCES = {
    "cross_entropy": (4, "class", _ref_cross_entropy),
    "binary_cross_entropy": (1, "binary", _ref_binary_cross_entropy),
    "mse": (1, "real", lambda out, y, o: (out[:, 0] - y) ** 2),
    "mae": (1, "real", lambda out, y, o: np.abs(out[:, 0] - y)),
    "huber": (1, "real", _ref_huber),
}


def _loss_inputs(n_out, labels, seed=0):
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 2.0, size=(16, n_out)).astype(np.float32)
    if labels == "class":
        y = rng.integers(0, n_out, size=16)
    elif labels == "binary":
        y = rng.integers(0, 2, size=16)
    else:
        y = rng.normal(0.0, 2.0, size=16).astype(np.float32)
    return out, y


@pytest.mark.parametrize("name", _names(reg.LOSSES))
def test_loss_matches_numpy(name):
    if name not in LOSS_REFERENCES:
        pytest.fail(f"loss '{name}' has no numpy reference in tests/test_registry.py LOSS_REFERENCES")
    n_out, labels, ref = LOSS_REFERENCES[name]
    item = parse_item(name, reg.LOSSES, "train.loss")
    fn = reg.LOSSES.get(name).build(item.options)
    out, y = _loss_inputs(n_out, labels)
    got = np.asarray(fn(out, y))
    assert got.shape == (16,)
    np.testing.assert_allclose(got, ref(out.astype(np.float64), y, item.options), rtol=1e-5, atol=1e-5)
    assert (got >= 0).all()


def test_huber_delta_option():
    item = parse_item({"huber": {"delta": 0.5}}, reg.LOSSES, "train.loss")
    fn = reg.LOSSES.get("huber").build(item.options)
    out, y = _loss_inputs(1, "real", seed=3)
    np.testing.assert_allclose(np.asarray(fn(out, y)), _ref_huber(out.astype(np.float64), y, item.options),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", _names(reg.LOSSES))
def test_loss_declares_its_tasks(name):
    tasks = reg.LOSSES.get(name).meta.get("tasks")
    assert tasks, f"loss '{name}' registers no tasks=..."
    assert set(tasks) <= set(TASKS)


def test_default_losses_are_registered_for_their_task():
    from compilers.train.losses import default_loss

    for task in TASKS:
        assert task in reg.LOSSES.get(default_loss(task)).meta["tasks"]


# =============================================================================================
# OPTIMIZERS and SCHEDULES

EPOCHS, PER_EPOCH = 20, 10
TOTAL = EPOCHS * PER_EPOCH


def optimizer_item(name, **options):
    return parse_named({"name": name, "lr": 0.1, **options}, reg.OPTIMIZERS, "train.optimizer", "adam")


def schedule_item(name, **options):
    return parse_named({"name": name, **options}, reg.SCHEDULES, "train.schedule", "constant")


def _quadratic_params():
    import jax.numpy as jnp

    return {"a": jnp.array([1.0, -2.0, 1.5]), "b": jnp.array([[0.5, -1.0], [2.0, 0.25]])}


def _quadratic(params):
    import jax.numpy as jnp

    # Different curvatures per leaf; minimum 0 at the origin.
    return 0.5 * jnp.sum(params["a"] ** 2) + 1.5 * jnp.sum(params["b"] ** 2)


@pytest.mark.parametrize("name", _names(reg.OPTIMIZERS))
def test_optimizer_minimises_a_quadratic(name):
    import jax
    import optax

    from compilers.train.optim import make_optimizer

    item = optimizer_item(name)
    tx = make_optimizer(item, optax.constant_schedule(item.options.lr))
    params = _quadratic_params()

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            g = jax.grad(_quadratic)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=200)
        return p

    start = float(_quadratic(params))
    end = float(_quadratic(run(params)))
    assert math.isfinite(end)
    assert end < 0.1 * start, (name, start, end)


@pytest.mark.parametrize("name", _names(reg.OPTIMIZERS))
def test_clip_norm_clips_the_gradient_first(name):
    import jax
    import jax.numpy as jnp
    import optax

    from compilers.train.optim import make_optimizer

    sched = optax.constant_schedule(0.1)
    clipped = make_optimizer(optimizer_item(name, clip_norm=1.0), sched)
    plain = make_optimizer(optimizer_item(name), sched)
    params = _quadratic_params()
    huge = jax.tree_util.tree_map(lambda p: 1e6 * jnp.ones_like(p), params)
    norm = float(optax.tree.norm(huge))
    unit = jax.tree_util.tree_map(lambda g: g / norm, huge)
    u_clipped, _ = clipped.update(huge, clipped.init(params), params)
    u_plain, _ = plain.update(unit, plain.init(params), params)
    for a, b in zip(jax.tree_util.tree_leaves(u_clipped), jax.tree_util.tree_leaves(u_plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
    assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree_util.tree_leaves(u_clipped))


def test_clip_norm_bounds_an_sgd_update():
    import jax
    import jax.numpy as jnp
    import optax

    from compilers.train.optim import make_optimizer

    tx = make_optimizer(optimizer_item("sgd", clip_norm=1.0), optax.constant_schedule(0.1))
    params = _quadratic_params()
    huge = jax.tree_util.tree_map(lambda p: 1e9 * jnp.ones_like(p), params)
    updates, _ = tx.update(huge, tx.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(0.1, rel=1e-5)
    # without clip_norm the same gradient gives a huge step
    tx = make_optimizer(optimizer_item("sgd"), optax.constant_schedule(0.1))
    updates, _ = tx.update(huge, tx.init(params), params)
    assert float(optax.tree.norm(updates)) > 1e7


def test_optimizer_follows_the_schedule():
    import jax.numpy as jnp
    import optax

    from compilers.train.optim import make_optimizer

    tx = make_optimizer(optimizer_item("sgd"), lambda step: 0.1 * (step + 1))
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    seen = []
    for _ in range(3):
        u, state = tx.update({"w": jnp.ones(2)}, state, params)
        seen.append(-float(u["w"][0]))
    np.testing.assert_allclose(seen, [0.1, 0.2, 0.3], rtol=1e-6)


def _values(item, lr=0.1):
    from compilers.train.optim import make_schedule

    import jax
    import jax.numpy as jnp

    f = make_schedule(item, lr, EPOCHS, PER_EPOCH)
    values = np.asarray(jax.jit(jax.vmap(f))(jnp.arange(TOTAL + 1)), np.float64)
    # The jitted values are those the train step sees; eagerly they agree up to float32 rounding.
    for t in (0, 1, PER_EPOCH, TOTAL // 2, TOTAL):
        eager = float(f(t))
        assert eager >= 0.0
        assert eager == pytest.approx(values[t], rel=1e-6, abs=1e-7 * lr)
    return values


@pytest.mark.parametrize("name", _names(reg.SCHEDULES))
def test_schedule_warm_up(name):
    lr = 0.1
    v = _values(schedule_item(name, warmup_epochs=2), lr)
    warm = 2 * PER_EPOCH
    assert v[0] == 0.0
    assert v[warm] == pytest.approx(lr, rel=1e-6)
    assert v[warm // 2] == pytest.approx(lr / 2, rel=1e-6)
    assert (np.diff(v[: warm + 1]) > 0).all()  # rises linearly
    assert np.isfinite(v).all() and (v >= -1e-7 * lr).all()  # >= 0 up to float32 rounding under jit
    assert (v <= lr * (1 + 1e-6)).all()


@pytest.mark.parametrize("name", _names(reg.SCHEDULES))
def test_schedule_without_warm_up_starts_at_lr(name):
    v = _values(schedule_item(name), 0.1)
    assert v[0] == pytest.approx(0.1, rel=1e-6)
    assert np.isfinite(v).all() and (v >= -1e-8).all()


def test_constant_schedule():
    np.testing.assert_allclose(_values(schedule_item("constant")), 0.1, rtol=1e-6)


def test_cosine_ends_near_alpha_lr():
    v = _values(schedule_item("cosine", alpha=0.1, warmup_epochs=2))
    assert v[-1] == pytest.approx(0.01, rel=1e-4)
    assert v[-2] == pytest.approx(0.01, rel=1e-2)
    assert (np.diff(v[2 * PER_EPOCH:]) <= 1e-9).all()  # decays after warm-up


def test_step_drops_by_factor():
    v = _values(schedule_item("step", every_epochs=5, factor=0.5))
    assert v[0] == pytest.approx(0.1) and v[5 * PER_EPOCH - 1] == pytest.approx(0.1)
    assert v[5 * PER_EPOCH] == pytest.approx(0.05)
    assert v[10 * PER_EPOCH] == pytest.approx(0.025)
    assert v[15 * PER_EPOCH] == pytest.approx(0.0125)


def test_exponential_decays_by_rate_per_decay_epochs():
    v = _values(schedule_item("exponential", decay_rate=0.5, decay_epochs=2))
    assert v[2 * PER_EPOCH] == pytest.approx(0.05, rel=1e-5)
    assert v[4 * PER_EPOCH] == pytest.approx(0.025, rel=1e-5)


def test_linear_ends_at_end_lr():
    v = _values(schedule_item("linear", end=0.2))
    assert v[TOTAL // 2] == pytest.approx(0.06, rel=1e-5)
    assert v[TOTAL] == pytest.approx(0.02, rel=1e-5)


# =============================================================================================
# METRICS


def _classification_case(n_classes, binary_logit, seed=0):
    rng = np.random.default_rng(seed)
    n = 600
    y = rng.integers(0, n_classes, size=n)
    n_out = 1 if binary_logit else n_classes
    # Informative but noisy logits, so that every metric is far from 0 and 1.
    out = rng.normal(0.0, 1.5, size=(n, n_out))
    if binary_logit:
        out[:, 0] += 1.2 * (2 * y - 1)
    else:
        out[np.arange(n), y] += 1.2
    return out.astype(np.float32), y


def _regression_case(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(2.0, 3.0, size=500).astype(np.float32)
    out = (0.8 * y + rng.normal(0.0, 1.5, size=500)).astype(np.float32)[:, None]
    return out, y


@functools.lru_cache(maxsize=None)
def _case(case: str):
    """(out, y, summed stats, n_classes, binary_logit) of one case, computed once for every metric."""
    if case == "regression":
        out, y = _regression_case()
        return out, y, _summed_stats(out, y, "regression", 0, False), 0, False
    n_classes, binary_logit = {"multiclass": (4, False), "binary-logit": (2, True), "two-softmax": (2, False)}[case]
    out, y = _classification_case(n_classes, binary_logit)
    return out, y, _summed_stats(out, y, "classification", n_classes, binary_logit), n_classes, binary_logit


def _summed_stats(out, y, task, n_classes, binary_logit):
    """batch_stats over two batches padded with weight-0 rows, added up as the loop does."""
    import jax
    import jax.numpy as jnp

    from compilers.train.metrics import batch_stats

    batch_stats = jax.jit(batch_stats, static_argnums=(3, 4, 5, 6))

    half = len(y) // 2
    pad = 37  # both batches padded to the same shape: one compilation
    parts = []
    for lo, hi in ((0, half), (half, len(y))):
        o, t, w = out[lo:hi], y[lo:hi], np.ones(hi - lo, np.float32)
        o = np.concatenate([o, np.full((pad, o.shape[1]), 9.0, o.dtype)])
        t = np.concatenate([t, np.zeros(pad, t.dtype)])
        w = np.concatenate([w, np.zeros(pad, np.float32)])
        parts.append(batch_stats(jnp.asarray(o), jnp.asarray(t), jnp.asarray(w), task, n_classes,
                                 binary_logit, with_hist=True))
    return {k: np.asarray(parts[0][k]) + np.asarray(parts[1][k]) for k in parts[0]}


def _proba(out, binary_logit):
    out = out.astype(np.float64)
    if binary_logit:
        p = 1 / (1 + np.exp(-out[:, 0]))
        return np.stack([1 - p, p], -1)
    e = np.exp(out - out.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sk_auc(y, proba):
    from sklearn.metrics import roc_auc_score

    if proba.shape[1] == 2:
        return roc_auc_score(y, proba[:, 1])
    return roc_auc_score(y, proba, multi_class="ovr", average="macro")


def _sk_classification(name):
    from sklearn import metrics as sk

    return {
        "accuracy": lambda y, p: sk.accuracy_score(y, p.argmax(-1)),
        "precision": lambda y, p: sk.precision_score(y, p.argmax(-1), average="macro", zero_division=0),
        "recall": lambda y, p: sk.recall_score(y, p.argmax(-1), average="macro", zero_division=0),
        "f1": lambda y, p: sk.f1_score(y, p.argmax(-1), average="macro", zero_division=0),
        "auc": _sk_auc,
    }.get(name)


def _sk_regression(name):
    from sklearn import metrics as sk

    return {"mse": sk.mean_squared_error, "mae": sk.mean_absolute_error, "r2": sk.r2_score}.get(name)


METRIC_CASES = [pytest.param(name, case, id=f"{name}-{case}")
                for name in _names(reg.METRICS)
                for case, task in (("multiclass", "classification"), ("binary-logit", "classification"),
                                   ("two-softmax", "classification"), ("regression", "regression"))
                if task in reg.METRICS.get(name).meta.get("tasks", TASKS)]


@pytest.mark.parametrize("name,case", METRIC_CASES)
def test_metric_matches_sklearn(name, case):
    fn = reg.METRICS.get(name).build(reg.METRICS.get(name).options())
    out, y, stats, n_classes, binary_logit = _case(case)
    assert float(stats["n"]) == len(y)  # padding rows (weight 0) do not count
    if case == "regression":
        ref = _sk_regression(name)
        if ref is None:
            pytest.fail(f"metric '{name}' has no scikit-learn reference in tests/test_registry.py")
        expected = float(ref(y.astype(np.float64), out[:, 0].astype(np.float64)))
        assert fn(stats) == pytest.approx(expected, rel=1e-5, abs=1e-5)
        return
    ref = _sk_classification(name)
    if ref is None:
        pytest.fail(f"metric '{name}' has no scikit-learn reference in tests/test_registry.py")
    expected = float(ref(y, _proba(out, binary_logit)))
    assert 0.05 < expected < 0.95  # a case where a wrong formula would show
    tol = 2e-3 if name == "auc" else 1e-5
    assert fn(stats) == pytest.approx(expected, abs=tol), (name, case)


@pytest.mark.parametrize("name", _names(reg.METRICS))
def test_metric_declares_tasks_and_mode(name):
    meta = reg.METRICS.get(name).meta
    assert meta.get("tasks") and set(meta["tasks"]) <= set(TASKS)
    assert meta.get("mode") in ("min", "max")


def test_default_metrics_are_registered_for_their_task():
    from compilers.train.metrics import default_metrics

    for task in TASKS:
        for m in default_metrics(task):
            assert task in reg.METRICS.get(m).meta["tasks"]
