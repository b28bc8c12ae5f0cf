"""dsl/parse.py and dsl/source_map.py, as units: item forms, strict keys, `_target_`, type
conversion, key-path -> line, and a property test that no input crashes the parser."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Literal, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl import registry as reg
from dsl.errors import SpecError
from dsl.parse import convert, parse_item, parse_named, parse_spec
from dsl.source_map import SourceMap, dotted
from dsl.spec import Checkpoint, Data, EarlyStopping, Item, Model, Spec, Split, Train

reg.load_all()

BASE = {"data": {"source": "iris"}, "model": {"layers": [{"dense": 8}, "relu"]}}


def spec_with(*edits) -> dict:
    """BASE with (path tuple, value) edits; a path walks dicts (creating them) and list indices."""
    raw = copy.deepcopy(BASE)
    for path, value in edits:
        node = raw
        for p in path[:-1]:
            node = node[p] if isinstance(node, list) or p in node else node.setdefault(p, {})
        node[path[-1]] = value
    return raw


def error(raw) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return info.value


def layer(raw, path="model.layers[0]") -> Item:
    return parse_item(raw, reg.LAYERS, path)


# =============================================================================================
# The three item forms: `kind`, `kind: arg`, `kind: {options}`


def _item_families():
    # Sources are not items (data.source is a name, its options live under data.options).
    return [r for f, r in reg.FAMILIES.items() if f != "source"]


def _defaultable(entry) -> bool:
    try:
        entry.options()
    except (TypeError, ValueError):  # a required option, or a check in __post_init__
        return False
    return True


BARE_ENTRIES = [pytest.param(r, e, id=f"{r.family}:{e.name}") for r in _item_families() for e in r
                if _defaultable(e)]


@pytest.mark.parametrize("registry,entry", BARE_ENTRIES)
def test_bare_null_and_empty_forms_are_equal(registry, entry):
    path = "x[0]"
    bare = parse_item(entry.name, registry, path)
    assert bare == parse_item({entry.name: None}, registry, path) == parse_item({entry.name: {}}, registry, path)
    assert bare == Item(entry.name, entry.options(), path)
    if entry.positional is not None:
        default = next(f for f in entry.fields() if f.name == entry.positional).default
        if default is not None and default is not dataclasses.MISSING:
            assert parse_item({entry.name: default}, registry, path) == bare
            assert parse_item({entry.name: {entry.positional: default}}, registry, path) == bare


@pytest.mark.parametrize("short,long", [
    ({"dense": 5}, {"dense": {"features": 5}}),
    ({"dense": 5.0}, {"dense": {"features": 5}}),
    ({"dropout": 0.25}, {"dropout": {"rate": 0.25}}),
    ({"elu": 0.5}, {"elu": {"alpha": 0.5}}),
    ({"leaky_relu": 0.2}, {"leaky_relu": {"negative_slope": 0.2}}),
    ({"residual": [{"dense": 4}, "relu"]}, {"residual": {"layers": [{"dense": {"features": 4}}, {"relu": None}]}}),
    ({"repeat": {"times": 2, "layers": ["relu"]}}, {"repeat": {"times": 2.0, "layers": [{"relu": {}}]}}),
])
def test_short_and_long_layer_forms_are_equal(short, long):
    assert layer(short) == layer(long)


def test_nested_items_carry_their_paths():
    item = layer({"residual": [{"dense": 4}, "relu"]}, "model.layers[3]")
    assert [it.path for it in item.options.layers] == ["model.layers[3].residual[0]", "model.layers[3].residual[1]"]
    assert item.options.layers[0].features == 4  # options read as attributes of the item


@pytest.mark.parametrize("registry,short,long", [
    (reg.PREP, {"impute": "median"}, {"impute": {"strategy": "median"}}),
    (reg.PREP, {"standardize": "a"}, {"standardize": {"columns": ["a"]}}),
    (reg.PREP, {"standardize": ["a", "b"]}, {"standardize": {"columns": ["a", "b"]}}),
    (reg.CHARTS, {"weights": 0}, {"weights": {"layer": "0"}}),
], ids=["impute", "columns-scalar", "columns-list", "weights"])
def test_short_and_long_forms_in_other_families(registry, short, long):
    assert parse_item(short, registry, "p[0]") == parse_item(long, registry, "p[0]")


def test_the_forms_give_equal_specs():
    a = parse_spec(spec_with((("model", "layers"), [{"dense": 8}, "relu", {"dropout": 0.1}])))
    b = parse_spec(spec_with((("model", "layers"), [{"dense": {"features": 8}}, {"relu": None},
                                                    {"dropout": {"rate": 0.1}}])))
    assert a == b


def test_a_value_for_a_kind_without_a_positional_option():
    e = error(spec_with((("model", "layers"), [{"relu": 3}])))
    assert e.path == "model.layers[0].relu"
    assert "takes no single value" in e.message


def test_several_kinds_in_one_item():
    e = error(spec_with((("model", "layers"), [{"dense": 3, "relu": None}])))
    assert e.path == "model.layers[0]"
    assert "several keys: dense, relu" in e.message


@pytest.mark.parametrize("bad", [3, 2.5, True, ["relu"], {}])
def test_an_item_that_is_no_kind(bad):
    e = error(spec_with((("model", "layers"), [bad])))
    assert e.path == "model.layers[0]"


def test_unknown_kind_suggests_the_nearest():
    e = error(spec_with((("model", "layers"), ["relu", {"dnese": 3}])))
    assert (e.path, e.message) == ("model.layers[1]", "unknown layer kind 'dnese' (did you mean 'dense'?)")


def test_missing_required_option():
    e = error(spec_with((("model", "layers"), [{"dense": {"activation": "relu"}}])))
    assert (e.path, e.message) == ("model.layers[0].dense", "missing required option 'features'")


def test_parse_named_forms():
    path = "train.optimizer"
    assert parse_named("sgd", reg.OPTIMIZERS, path, "adam") == parse_named({"name": "sgd"}, reg.OPTIMIZERS, path, "adam")
    assert parse_named(None, reg.OPTIMIZERS, path, "adam").kind == "adam"
    assert parse_named({"lr": 0.5}, reg.OPTIMIZERS, path, "adam").options.lr == 0.5
    # The language defaults compose every optimizer's options beneath a spec as null: skipped.
    item = parse_named({"name": "sgd", "lr": 0.1, "weight_decay": None, "b1": None}, reg.OPTIMIZERS, path, "adam")
    assert item == parse_named({"name": "sgd", "lr": 0.1}, reg.OPTIMIZERS, path, "adam")
    # ...but an option of another optimizer with a value is an error
    with pytest.raises(SpecError) as info:
        parse_named({"name": "sgd", "weight_decay": 0.1}, reg.OPTIMIZERS, path, "adam")
    assert info.value.path == "train.optimizer.weight_decay"


# =============================================================================================
# Strict keys at every level, with did-you-mean

UNKNOWN_KEYS = [
    # (where, edit, error path, suggestion)
    ("top", ((("modle",), {}),), "modle", "model"),
    ("data", ((("data", "targt"), "x"),), "data.targt", "target"),
    ("data.split", ((("data", "split", "tset"), 0.1),), "data.split.tset", "test"),
    ("data.options", ((("data", "source"), "moons"), (("data", "options", "n_sample"), 10)),
     "data.options.n_sample", "n_samples"),
    ("data.prep", ((("data", "prep"), [{"impute": {"strategi": "mean"}}]),), "data.prep[0].impute.strategi", "strategy"),
    ("model", ((("model", "haed"), "auto"),), "model.haed", "head"),
    ("train", ((("train", "epoch"), 3),), "train.epoch", "epochs"),
    ("train.early_stopping", ((("train", "early_stopping", "patiense"), 3),), "train.early_stopping.patiense", "patience"),
    ("train.checkpoint", ((("train", "checkpoint", "evrey"), 3),), "train.checkpoint.evrey", "every"),
    ("train.optimizer", ((("train", "optimizer"), {"name": "adam", "lrr": 0.1}),), "train.optimizer.lrr", "lr"),
    ("train.schedule", ((("train", "schedule"), {"name": "cosine", "alpah": 0.1}),), "train.schedule.alpah", "alpha"),
    ("layer options", ((("model", "layers"), [{"dense": {"featurs": 3}}]),), "model.layers[0].dense.featurs", "features"),
    ("nested layer options", ((("model", "layers"), [{"residual": [{"dense": {"featurs": 3}}]}]),),
     "model.layers[0].residual[0].dense.featurs", "features"),
    ("plot options", ((("plots",), [{"weights": {"titel": "w"}}]),), "plots[0].weights.titel", "title"),
]


@pytest.mark.parametrize("where,edits,path,near", UNKNOWN_KEYS, ids=[c[0] for c in UNKNOWN_KEYS])
def test_unknown_key_is_an_error_with_did_you_mean(where, edits, path, near):
    e = error(spec_with(*edits))
    assert e.path == path
    assert e.message.startswith("unknown "), e.message
    assert e.message.endswith(f"(did you mean '{near}'?)"), e.message


def test_unknown_key_without_a_near_one_lists_the_valid_ones():
    e = error(spec_with((("train", "zzzzzz"), 1)))
    assert e.path == "train.zzzzzz"
    assert "expected one of:" in e.message and "epochs" in e.message


def test_hydra_keys_are_allowed_at_the_top_only():
    assert isinstance(parse_spec({**BASE, "defaults": ["_self_"]}), Spec)
    assert error(spec_with((("model", "defaults"), []))).path == "model.defaults"


# =============================================================================================
# `_target_` anywhere

TARGET = {"_target_": "os.system"}
TARGET_PLACES = [
    ("top", ((("_target_",), "os.system"),), "_target_"),
    ("data", ((("data", "_target_"), "os.system"),), "data._target_"),
    ("data.split", ((("data", "split"), TARGET),), "data.split._target_"),
    ("data.options", ((("data", "options"), TARGET),), "data.options._target_"),
    ("model", ((("model", "_target_"), "x"),), "model._target_"),
    ("layer options", ((("model", "layers"), [{"dense": {"features": 3, **TARGET}}]),), "model.layers[0].dense._target_"),
    ("nested layer options", ((("model", "layers"), [{"residual": [{"dense": {"features": 3, **TARGET}}]}]),),
     "model.layers[0].residual[0].dense._target_"),
    ("prep options", ((("data", "prep"), [{"impute": TARGET}]),), "data.prep[0].impute._target_"),
    ("train", ((("train", "_target_"), "x"),), "train._target_"),
    ("train.optimizer", ((("train", "optimizer"), {"name": "adam", **TARGET}),), "train.optimizer._target_"),
    ("train.schedule", ((("train", "schedule"), TARGET),), "train.schedule._target_"),
    ("train.early_stopping", ((("train", "early_stopping"), TARGET),), "train.early_stopping._target_"),
    ("train.checkpoint", ((("train", "checkpoint"), TARGET),), "train.checkpoint._target_"),
    ("plot options", ((("plots",), [{"weights": TARGET}]),), "plots[0].weights._target_"),
]


@pytest.mark.parametrize("where,edits,path", TARGET_PLACES, ids=[c[0] for c in TARGET_PLACES])
def test_target_key_is_refused(where, edits, path):
    e = error(spec_with(*edits))
    assert (e.path, e.message) == (path, "specs never execute code: '_target_' is not allowed")


@pytest.mark.parametrize("where,edits", [
    ("layer kind", ((("model", "layers"), [TARGET]),)),
    ("nested layer kind", ((("model", "layers"), [{"repeat": {"times": 2, "layers": [TARGET]}}]),)),
    ("prep kind", ((("data", "prep"), [TARGET]),)),
    ("plot kind", ((("plots",), [TARGET]),)),
    ("optimizer name", ((("train", "optimizer"), {"name": "_target_"}),)),
    ("vars", ((("vars",), TARGET),)),
    ("nested vars", ((("vars",), {"a": [TARGET]}),)),
])
def test_target_as_a_kind_or_value_is_refused(where, edits):
    e = error(spec_with(*edits))
    assert "_target_" in str(e)


# =============================================================================================
# Type conversion


def test_int_from_a_whole_float():
    value = convert(3.0, int, "p", "n")
    assert value == 3 and type(value) is int
    item = parse_spec(spec_with((("model", "layers"), [{"dense": 3.0}]))).model.layers[0]
    assert item.features == 3 and type(item.features) is int


@pytest.mark.parametrize("bad", [3.5, True, False, "3", "three", [3], {"a": 3}, float("nan"), float("inf"), 1e300])
def test_int_refuses(bad):
    with pytest.raises(SpecError) as info:
        convert(bad, int, "p", "n")
    assert info.value.message.startswith("n must be an integer, got "), info.value.message


def test_int_errors_through_the_spec():
    e = error(spec_with((("model", "layers"), [{"dense": 3.5}])))
    assert (e.path, e.message) == ("model.layers[0].dense", "features must be a positive integer, got 3.5")
    e = error(spec_with((("train", "epochs"), 0)))
    assert (e.path, e.message) == ("train.epochs", "epochs must be a positive integer, got 0")


def test_bool_is_strict():
    assert convert(True, bool, "p", "b") is True and convert(False, bool, "p", "b") is False
    for bad in (1, 0, "true", "yes", 1.0, None):
        with pytest.raises(SpecError):
            convert(bad, bool, "p", "b")
    e = error(spec_with((("data", "split"), {"stratify": "true"})))
    assert (e.path, e.message) == ("data.split", "stratify must be true or false, got 'true'")
    e = error(spec_with((("model", "layers"), [{"dense": {"features": 4, "use_bias": 1}}])))
    assert (e.path, e.message) == ("model.layers[0].dense", "use_bias must be true or false, got 1")


def test_float_from_int_and_numeric_text():
    value = convert(2, float, "p", "x")
    assert value == 2.0 and type(value) is float
    # PyYAML reads `1e-3` (no dot) as a string
    assert convert("1e-3", float, "p", "x") == 0.001
    lr = parse_spec(spec_with((("train", "optimizer"), {"name": "adam", "lr": 1}))).train.optimizer.lr
    assert lr == 1.0 and type(lr) is float


@pytest.mark.parametrize("bad", [True, "abc", [1.0], {"a": 1}, float("nan"), float("inf"), "-inf", 10 ** 400, -10 ** 400],
                         ids=["true", "abc", "list", "dict", "nan", "inf", "-inf-text", "1e400-int", "-1e400-int"])
def test_float_refuses(bad):
    with pytest.raises(SpecError) as info:
        convert(bad, float, "p", "x")
    assert info.value.message.startswith("x must be a"), info.value.message


def test_huge_integer_for_a_float_option_is_a_spec_error():
    # YAML reads `lr: 1000...0` (400 digits) as a Python int; float() of it overflows.
    e = error(spec_with((("train", "optimizer"), {"name": "adam", "lr": 10 ** 400})))
    assert e.path == "train.optimizer"
    assert e.message.startswith("lr must be a finite number")


def test_float_ranges():
    with pytest.raises(SpecError) as info:
        convert(-0.5, float, "p", "rate", {"ge": 0.0, "lt": 1.0})
    assert info.value.message == "rate must be a finite number >= 0.0 and < 1.0, got -0.5"
    assert convert(0.0, float, "p", "rate", {"ge": 0.0, "lt": 1.0}) == 0.0


def test_str_conversion():
    assert convert(5, str, "p", "s") == "5"
    assert convert("a", str, "p", "s") == "a"
    for bad in (True, [1], {"a": 1}):
        with pytest.raises(SpecError):
            convert(bad, str, "p", "s")


def test_str_choices_suggest_the_nearest():
    e = error(spec_with((("model", "layers"), [{"dense": {"features": 4, "activation": "rleu"}}])))
    assert (e.path, e.message) == ("model.layers[0].dense", "unknown activation 'rleu' (did you mean 'relu'?)")


def test_literal():
    assert convert("none", Literal["auto", "none"], "p", "head") == "none"
    e = error(spec_with((("model", "head"), "non")))
    assert (e.path, e.message) == ("model.head", "head must be one of auto, none, got 'non' (did you mean 'none'?)")


def test_tuple_conversion():
    assert convert("a", tuple[str, ...], "p", "c") == ("a",)
    assert convert(["a", 1], tuple[str, ...], "p", "c") == ("a", "1")
    assert convert([8, 8.0, 1], tuple[int, ...], "p", "s") == (8, 8, 1)
    with pytest.raises(SpecError) as info:
        convert([8, 2.5], tuple[int, ...], "data.shape", "shape")
    assert (info.value.path, info.value.message) == ("data.shape[1]", "shape[1] must be an integer, got 2.5")
    with pytest.raises(SpecError):
        convert({"a": 1}, tuple[str, ...], "p", "c")


def test_null_where_optional_is_accepted():
    assert convert(None, Optional[int], "p", "seed") is None
    s = parse_spec(spec_with((("data", "split"), {"seed": None}), (("train", "early_stopping"), None),
                             (("data", "target"), None), (("train", "metrics"), None)))
    assert s.data.split.seed is None and s.train.early_stopping is None and s.data.target is None
    assert s.train.metrics == ()


@pytest.mark.parametrize("edits,path,name", [
    (((("seed",), None),), "seed", "seed"),
    (((("name",), None),), "name", "name"),
    (((("data", "split"), {"test": None}),), "data.split", "test"),
    (((("model", "layers"), [{"dense": {"features": None}}]),), "model.layers[0].dense", "features"),
    (((("model", "layers"), [{"dropout": {"rate": None}}]),), "model.layers[0].dropout", "rate"),
    (((("train", "checkpoint"), {"every": None}),), "train.checkpoint", "every"),
    (((("train", "early_stopping"), {"monitor": None}),), "train.early_stopping", "monitor"),
    (((("train", "devices"), None),), "train.devices", "devices"),
    *[(((("train", key), None),), f"train.{key}", key) for key in ("epochs", "batch_size", "precision", "loop", "feed")],
], ids=["seed", "name", "split.test", "dense.features", "dropout.rate", "checkpoint.every",
        "early_stopping.monitor", "devices", "epochs", "batch_size", "precision", "loop", "feed"])
def test_null_where_not_optional_is_an_error(edits, path, name):
    e = error(spec_with(*edits))
    assert (e.path, e.message) == (path, f"{name} must be set, got null")


# =============================================================================================
# SourceMap

YAML_TEXT = """\
name: t
data:
  source: iris
  split:
    test: 0.2
model:
  layers:
    - dense: 8
    - relu
    - dense:
        features: 4
        activation: tanh
    - residual:
        - dense: 8
        - relu
train: {epochs: 3, optimizer: {name: adam, lr: 0.01}}
plots:
  - weights: {layer: 0}
"""


@pytest.mark.parametrize("path,line", [
    ("name", 1),
    ("data", 2),
    ("data.source", 3),
    ("data.split.test", 5),
    ("model.layers", 7),
    ("model.layers[0]", 8),
    ("model.layers[0].dense", 8),
    ("model.layers[1]", 9),
    ("model.layers[2].dense", 10),
    ("model.layers[2].dense.features", 11),
    ("model.layers[2].dense.activation", 12),
    ("model.layers[3].residual", 13),
    ("model.layers[3].residual[0].dense", 14),
    ("model.layers[3].residual[1]", 15),
    ("train.epochs", 16),
    ("train.optimizer.lr", 16),
    ("plots[0].weights.layer", 18),
])
def test_source_map_lines(path, line):
    smap = SourceMap.from_text("s.yaml", YAML_TEXT)
    assert smap.line(path) == line
    assert smap.lines.get(path, line) == line  # spelled-out paths are stored as such


@pytest.mark.parametrize("path,line", [
    ("model.layers[1].relu", 9),                     # a bare item has no key of its own
    ("model.layers[2].dense.use_bias", 10),          # an option the file does not write
    ("model.layers[9]", 7),                          # past the end of the list
    ("model.layers[9].dense.features", 7),
    ("train.early_stopping.patience", 16),           # a section the file does not write
    ("data.split", 4),
    ("model.layers[3].residual[5].dense", 13),
])
def test_source_map_falls_back_to_the_nearest_ancestor(path, line):
    assert SourceMap.from_text("s.yaml", YAML_TEXT).line(path) == line


def test_source_map_without_an_ancestor_or_text():
    smap = SourceMap.from_text("s.yaml", YAML_TEXT)
    assert smap.line("zzz") is None and smap.line("zzz.a[0]") is None and smap.line("") is None
    assert SourceMap.from_text("s.yaml", "a: [b\n").line("a") is None  # a YAML syntax error: no lines
    assert SourceMap.from_text("s.yaml", "").line("a") is None
    assert SourceMap(None).line("model.layers[0]") is None


def test_source_map_of_a_top_level_list():
    smap = SourceMap.from_text(None, "- a\n- b: 1\n")
    assert smap.line("[0]") == 1 and smap.line("[1].b") == 2


def test_dotted():
    assert dotted("model.layers[2].dense") == "model.layers.2.dense"
    assert dotted("model.layers[10].residual[0]") == "model.layers.10.residual.0"
    assert dotted("train.epochs") == "train.epochs"


def test_parse_spec_errors_carry_file_and_line():
    import yaml

    text = YAML_TEXT.replace("    - dense: 8\n    - relu", "    - dense: -3\n    - relu", 1)
    smap = SourceMap.from_text("s.yaml", text)
    with pytest.raises(SpecError) as info:
        parse_spec(yaml.safe_load(text), file="s.yaml", smap=smap)
    e = info.value
    assert (e.file, e.line, e.path) == ("s.yaml", 8, "model.layers[0].dense")
    assert str(e) == "s.yaml:8 model.layers[0].dense: features must be a positive integer, got -3"


def test_yaml_text_parses():
    import yaml

    s = parse_spec(yaml.safe_load(YAML_TEXT))
    assert [it.kind for it in s.model.layers] == ["dense", "relu", "dense", "residual"]
    assert s.model.layers[2].activation == "tanh"
    assert s.train.optimizer.lr == 0.01 and s.train.epochs == 3
    assert s.plots[0].kind == "weights" and s.plots[0].layer == "0"


# =============================================================================================
# Property: any YAML-like tree gives a Spec or a SpecError, never another exception


def _field_names(*classes):
    return [f.name for c in classes for f in dataclasses.fields(c)]


def _option_names(registry):
    return sorted({f.name for e in registry for f in e.fields()})


KEY_NAMES = sorted(set(
    _field_names(Spec, Data, Split, Model, Train, EarlyStopping, Checkpoint)
    + ["options", "defaults", "hydra", "_target_", "name", "times", "layers"]
    + [n for r in reg.FAMILIES.values() for n in r.names()]
    + [n for r in reg.FAMILIES.values() for n in _option_names(r)]))
WORDS = sorted(set(
    [n for r in reg.FAMILIES.values() for n in r.names()]
    + ["auto", "none", "???", "classification", "regression", "float32", "bfloat16", "scan", "step",
       "mean", "median", "val_loss", "min", "max", "x.csv", "dir/y.parquet", "a.txt", "a/b", "..", "",
       "1e-3", "nan", "-inf", "3", "true", "_target_"]))

keys = st.one_of(st.sampled_from(KEY_NAMES), st.text(max_size=6), st.integers(-2, 3), st.booleans(), st.none())
# Values at the edges of each type check (YAML gives arbitrarily large ints, .nan, .inf, null).
EDGES = [None, True, False, 0, 1, -1, 3, 0.0, 0.5, 1.0, 1.5, -1.0, 2.5, 1e300, float("nan"), float("inf"),
         -float("inf"), 2 ** 53 + 1, 2 ** 63, 10 ** 400, -10 ** 400, "", "auto", "x", [], {}]
scalars = st.one_of(
    st.sampled_from(EDGES), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS), st.text(max_size=8),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def _items(registry):
    """Items of a registry in every form, with plausible option names."""
    names = st.sampled_from(registry.names())
    options = st.dictionaries(st.one_of(st.sampled_from(_option_names(registry) or ["x"]), keys), trees, max_size=3)
    return st.one_of(names, st.dictionaries(names, st.one_of(trees, options), min_size=1, max_size=2), trees)


def _section(required: dict, optional: dict):
    return st.one_of(st.fixed_dictionaries(required, optional=optional), trees)


layer_items = _items(reg.LAYERS)
nested_layers = st.one_of(
    st.fixed_dictionaries({"residual": st.lists(layer_items, max_size=3)}),
    st.fixed_dictionaries({"repeat": st.fixed_dictionaries({}, optional={"times": trees, "layers": st.lists(layer_items, max_size=3)})}),
)
named = lambda registry: st.one_of(  # noqa: E731
    st.sampled_from(registry.names()),
    st.dictionaries(st.one_of(st.sampled_from(["name"] + _option_names(registry)), keys),
                    st.one_of(st.sampled_from(registry.names()), trees), max_size=4),
    trees)
specs = st.one_of(
    trees,
    st.fixed_dictionaries({}, optional={
        "name": trees, "seed": trees, "task": st.one_of(st.sampled_from(["classification", "regression"]), trees),
        "vars": trees,
        "data": _section({"source": st.one_of(st.sampled_from(reg.SOURCES.names() + ["x.csv", "y.pq", "z.txt"]), trees)}, {
            "target": trees, "features": trees, "shape": trees,
            "options": st.dictionaries(st.one_of(st.sampled_from(_option_names(reg.SOURCES)), keys), trees, max_size=3),
            "prep": st.one_of(st.lists(_items(reg.PREP), max_size=3), trees),
            "split": st.dictionaries(st.one_of(st.sampled_from(_field_names(Split)), keys), trees, max_size=3)}),
        "model": _section({"layers": st.one_of(st.lists(st.one_of(layer_items, nested_layers), max_size=4), trees)},
                          {"head": st.one_of(st.sampled_from(["auto", "none"]), trees)}),
        "train": _section({}, {
            "epochs": trees, "batch_size": trees, "loss": st.one_of(st.sampled_from(reg.LOSSES.names()), trees),
            "optimizer": named(reg.OPTIMIZERS), "schedule": named(reg.SCHEDULES),
            "metrics": st.one_of(st.lists(st.sampled_from(reg.METRICS.names()), max_size=3), trees),
            "early_stopping": st.one_of(st.dictionaries(st.sampled_from(_field_names(EarlyStopping)), trees, max_size=3), trees),
            "checkpoint": st.one_of(st.dictionaries(st.sampled_from(_field_names(Checkpoint)), trees, max_size=2), trees),
            "devices": trees, "precision": trees, "loop": trees, "feed": trees, "chunk_rows": trees}),
        "plots": st.one_of(st.lists(_items(reg.CHARTS), max_size=3), trees),
    }),
)


# Valid specs that use every section; the mutation strategy below breaks them in one to three
# places, so that the fuzzing reaches the deep parts of the parser (a random tree mostly stops at
# the first top-level key).
VALID_SPECS = [
    {"name": "a", "seed": 1, "task": "classification", "vars": {"w": 8},
     "data": {"source": "moons", "options": {"n_samples": 100, "noise": 0.1}, "target": "y",
              "features": ["x0", "x1"], "shape": [2], "prep": ["standardize", {"impute": "mean"},
                                                               {"clip": {"min": -3, "max": 3}}],
              "split": {"test": 0.2, "val": 0.1, "stratify": True, "seed": 3}},
     "model": {"layers": [{"dense": {"features": 8, "activation": "relu", "use_bias": True}},
                          {"residual": [{"dense": 8}, "layer_norm"]},
                          {"repeat": {"times": 2, "layers": [{"dense": 8}, {"dropout": 0.1}, {"elu": 1.0}]}},
                          "batch_norm", "flatten"], "head": "auto"},
     "train": {"epochs": 2, "batch_size": 16, "loss": "cross_entropy",
               "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1, "clip_norm": 1.0},
               "schedule": {"name": "cosine", "warmup_epochs": 1, "alpha": 0.1},
               "metrics": ["accuracy", "f1"], "early_stopping": {"monitor": "val_loss", "patience": 3, "mode": "min"},
               "checkpoint": {"every": 1, "keep": 2}, "devices": 1, "precision": "float32", "loop": "scan",
               "feed": "chunks", "chunk_rows": 64},
     "plots": ["learning_curves", {"weights": {"layer": "0", "title": "w"}}, {"confusion_matrix": {}}]},
    {"data": {"source": "data/x.csv", "options": {"sep": ";"}, "target": "t",
              "prep": [{"one_hot": {"columns": ["c"]}}, {"log": {"offset": 1.0}}, {"drop_na": ["t"]}]},
     "model": {"layers": [{"dense": 3}], "head": "none"}, "task": "regression",
     "train": {"loss": "huber", "optimizer": "sgd", "schedule": {"name": "step", "every_epochs": 2, "factor": 0.5},
               "metrics": "auto", "early_stopping": None},
     "plots": "auto"},
]


def _slots(node):
    """(container, key or index) of every value in a tree, depth first."""
    pairs = node.items() if isinstance(node, dict) else enumerate(node)
    for k, child in list(pairs):
        yield node, k
        if isinstance(child, (dict, list)):
            yield from _slots(child)


@st.composite
def mutated_specs(draw):
    """A valid spec with one to three slots replaced (by a scalar or a tree), deleted, or added to."""
    raw = copy.deepcopy(draw(st.sampled_from(VALID_SPECS)))
    for _ in range(draw(st.integers(1, 3))):
        slots = list(_slots(raw))
        where, key = draw(st.sampled_from(slots)) if slots else (raw, "name")
        action = draw(st.sampled_from(["scalar", "scalar", "tree", "delete", "add"]))
        if action == "scalar":
            where[key] = draw(st.one_of(st.sampled_from(EDGES), scalars))
        elif action == "tree":
            where[key] = draw(trees)
        elif action == "delete":
            del where[key]
        elif isinstance(where, dict):
            where[draw(keys)] = draw(trees)
        else:
            where.append(draw(trees))
    return raw


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(mutated_specs(), mutated_specs(), specs))  # two thirds broken valid specs
def test_parse_spec_raises_only_spec_errors(raw):
    try:
        result = parse_spec(raw)
    except SpecError as e:
        assert isinstance(e.path, str) and isinstance(e.message, str) and e.message
        assert str(e)  # the one-line form renders
        return
    assert isinstance(result, Spec)


def test_valid_specs_parse():
    # The property test's grammar can produce valid specs too: a few by hand.
    s = parse_spec(spec_with((("train",), {"optimizer": {"name": "lion", "lr": 1e-4}, "schedule": "cosine",
                                           "metrics": ["accuracy", "f1"], "early_stopping": None}),
                             (("plots",), ["learning_curves", {"weights": {"layer": "0"}}])))
    assert s.train.optimizer.kind == "lion" and s.train.schedule.kind == "cosine"
    assert s.train.metrics == ("accuracy", "f1") and s.train.early_stopping is None
    assert math.isclose(s.train.optimizer.lr, 1e-4)


def _leaf_slots(node, path=()):
    pairs = node.items() if isinstance(node, dict) else enumerate(node)
    for k, child in pairs:
        if isinstance(child, (dict, list)):
            yield from _leaf_slots(child, path + (k,))
        else:
            yield path + (k,)


@pytest.mark.parametrize("base", range(len(VALID_SPECS)))
def test_every_value_of_a_valid_spec_replaced_by_every_edge_value(base):
    """Exhaustive and deterministic where the property test samples: each scalar of a valid spec
    replaced by each edge value gives a Spec or a SpecError."""
    crashes = []
    for path in _leaf_slots(VALID_SPECS[base]):
        for value in EDGES:
            raw = copy.deepcopy(VALID_SPECS[base])
            node = raw
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = copy.deepcopy(value)
            try:
                parse_spec(raw)
            except SpecError:
                pass
            except Exception as e:  # noqa: BLE001 - the point of the test
                crashes.append(f"{'.'.join(map(str, path))} = {value!r:.40}: {type(e).__name__}: {e}")
    assert not crashes, "\n".join(crashes)
