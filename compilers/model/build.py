"""Model plan: spec layers -> one flax module, with shapes and parameter counts per layer.

Shapes come from `jax.eval_shape` (nothing is allocated); a layer that cannot take its input
is reported at its spec key path before any training.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from dsl.errors import SpecError
from dsl.registry import LAYERS
from dsl.spec import Item, Model
from compilers.model.layers import BuildContext, LayerError, modules


@dataclass
class ModelPlan:
    net: Any                       # flax.linen module: net.apply(variables, x, train=...)
    rows: list[dict]               # the layer table (see RunRecord.layers)
    total_params: int
    output_shape: tuple[int, ...]  # per example
    n_out: int                     # width of the output the loss reads
    variable_shapes: Any = field(default=None, repr=False)  # eval_shape of init: pytree of ShapeDtypeStruct
    input_dtype: str = "float32"   # int32 for token ids


def _builder(vocab_size: int | None, im2col: bool = False):
    def build_seq(items: tuple[Item, ...]):
        ctx = BuildContext(build_seq=build_seq, vocab_size=vocab_size, im2col=im2col)
        out = []
        for it in items:
            try:
                out.append(LAYERS.get(it.kind).build(it.options, ctx))
            except ValueError as e:
                raise SpecError(f"{it.path}.{it.kind}", str(e)) from None
        return tuple(out)

    return build_seq


_build_seq = _builder(None)


def _item_at(items: tuple[Item, ...], index: tuple[int, ...]) -> tuple[Item | None, str]:
    """The spec item behind a (nested) layer index, and a note such as ' (copy 2 of 3)'."""
    item, note = None, ""
    for i in index:
        if item is not None:
            inner = item.options.layers
            if item.kind == "repeat":
                note = f" (copy {i // len(inner) + 1} of {item.options.times})"
                i = i % len(inner)
            items = inner
        if i >= len(items):
            return None, note
        item = items[i]
    return item, note


def _init_shapes(net, input_shape: tuple[int, ...], items: tuple[Item, ...], head_path: str, dtype="float32"):
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.dtype(dtype))
    try:   # the keys are made inside eval_shape too: nothing runs on the device
        return jax.eval_shape(lambda: net.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                               jnp.zeros(x.shape, x.dtype), train=False,
                                               capture_intermediates=True))
    except LayerError as e:
        item, note = _item_at(items, e.index)
        path = f"{item.path}.{item.kind}" if item is not None else head_path
        raise SpecError(path, f"{e.message}{note}") from None


def _count(tree) -> int:
    import jax

    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))  # exact: no int64 overflow


MAX_LAYERS = 10_000            # layers after every repeat is expanded
TRAINING_COPIES = 4            # parameters, gradients and two optimizer moments, each float32


def _count_layers(items: tuple[Item, ...]) -> int:
    """Layers once every repeat is expanded; SpecError at a repeat that makes too many."""
    total = 0
    for it in items:
        n = 1
        if it.kind in ("residual", "repeat"):
            n = _count_layers(it.options.layers) * (it.options.times if it.kind == "repeat" else 1)
            if n > MAX_LAYERS:
                raise SpecError(f"{it.path}.{it.kind}", f"expands to {n:,} layers; a model may have at most "
                                                        f"{MAX_LAYERS:,}")
        total += n
    return total


def device_memory() -> int | None:
    """Bytes of memory of the first device (an accelerator's limit, or the machine's RAM); None if unknown.

    DSL_DEVICE_MEMORY_BYTES, when set, is taken instead (tests; a device shared with other work)."""
    given = os.environ.get("DSL_DEVICE_MEMORY_BYTES", "").strip()
    if given:
        try:
            value = int(float(given))
        except ValueError:
            value = 0
        if value <= 0:
            raise SpecError("DSL_DEVICE_MEMORY_BYTES", f"must be a positive number of bytes, got {given!r}")
        return value
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except (AttributeError, NotImplementedError, RuntimeError):
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(rows: list[dict], total: int) -> None:
    """A model whose training state cannot fit the device fails here, at its largest layer, not in XLA."""
    limit = device_memory()
    need = total * 4 * TRAINING_COPIES
    if limit is None or need <= limit:
        return
    top = max((r for r in rows if r["depth"] == 0), key=lambda r: r["params"])
    path = top["path"] if top["path"] == "model.head" else f"{top['path']}.{top['kind']}"
    raise SpecError(path, f"the model has {total:,} parameters ({top['params']:,} here): training needs about "
                          f"{need / 2**30:,.0f} GiB, more than the device's {limit / 2**30:,.0f} GiB")


def _table(net_layers: int, items: tuple[Item, ...], variables, head: Item | None) -> list[dict]:
    params = variables.get("params", {})
    inter = variables.get("intermediates", {})
    rows: list[dict] = []

    def visit(items, p, it_, prefix, depth, copies=1):
        # items: spec items; p/it_: the params / intermediates dicts of the enclosing Sequence
        flat = [(k, item) for k in range(copies) for item in items]
        for j, (copy, item) in enumerate(flat):
            name = f"layers_{j}"
            index = f"{prefix}{j}"
            lp = p.get(name, {})
            out = it_.get(name, {}).get("__call__", (None,))[-1]
            shapes = {k: list(v.shape) for k, v in lp.items() if hasattr(v, "shape")}
            act = getattr(item.options, "activation", None) if item.kind == "dense" else (
                item.kind if LAYERS.get(item.kind).meta.get("activation") else None)
            path = item.path + (f" (copy {copy + 1})" if copies > 1 else "")
            rows.append({"index": index, "kind": item.kind, "path": path, "depth": depth,
                         "output_shape": list(out.shape[1:]) if out is not None else None,
                         "params": _count(lp), "activation": act, "param_shapes": shapes})
            if item.kind in ("residual", "repeat"):
                visit(item.options.layers, lp, it_.get(name, {}), index + ".", depth + 1,
                      item.options.times if item.kind == "repeat" else 1)

    visit(items, params, inter, "", 0)
    if head is not None:
        j = len(items)
        lp = params.get(f"layers_{j}", {})
        out = inter.get(f"layers_{j}", {}).get("__call__", (None,))[-1]
        rows.append({"index": str(j), "kind": "dense", "path": "model.head", "depth": 0,
                     "output_shape": list(out.shape[1:]) if out is not None else None,
                     "params": _count(lp), "activation": None,
                     "param_shapes": {k: list(v.shape) for k, v in lp.items()}})
    return rows


def build_model(model: Model, input_shape: tuple[int, ...], task: str, n_classes: int,
                binary_logit: bool = False, input_dtype: str = "float32",
                vocab_size: int | None = None, im2col: bool = False) -> ModelPlan:
    """The flax module the spec describes, with its layer table; SpecError at a bad layer.

    `im2col`: convolutions computed as matrix products over patches (same parameters)."""
    m = modules()
    _count_layers(model.layers)
    body = _builder(vocab_size, im2col)(model.layers)
    n_out = 1 if task == "regression" or binary_logit else n_classes
    if model.head == "auto":
        probe = m["Sequence"](layers=body)
        shapes = _init_shapes(probe, input_shape, model.layers, "model.head", input_dtype)
        out = shapes["intermediates"]["__call__"][-1].shape[1:] if body else tuple(input_shape)
        if len(out) != 1:
            last = model.layers[-1].path if model.layers else "data.shape"
            raise SpecError("model.head", f"the layers end with shape {tuple(out)} (after {last}); "
                            "the output head needs one axis: add flatten or global_avg_pool before it")
        head = Item("dense", None, "model.head")
        net = m["Sequence"](layers=body + (m["Dense"](features=n_out),))
    else:
        head = None
        net = m["Sequence"](layers=body)
    variables = _init_shapes(net, input_shape, model.layers, "model.head", input_dtype)
    out_shape = tuple(variables["intermediates"]["__call__"][-1].shape[1:])
    if model.head == "none" and out_shape != (n_out,):
        want = f"({n_out},)" + (" (one unit per class)" if task == "classification" and n_out > 1 else "")
        raise SpecError("model.head", f"with head: none the last layer must output shape {want} "
                        f"for this {task} task, got {out_shape}")
    rows = _table(len(body), model.layers, variables, head)
    total = _count(variables.get("params", {}))
    _check_memory(rows, total)
    shapes_only = {k: v for k, v in variables.items() if k != "intermediates"}
    return ModelPlan(net=net, rows=rows, total_params=total, output_shape=out_shape, n_out=n_out,
                     variable_shapes=shapes_only, input_dtype=str(input_dtype))
