"""The compiled programs: train_step, a whole epoch (scan), evaluation and prediction.

Training state is one explicit pytree (params, model_state, opt_state, step, rng). Data lives
on the device; an epoch's row order is drawn on the host (`epoch_order`, NumPy) and the compiled
program gathers the minibatches by index from it, so Python touches nothing per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from dsl.registry import LOSSES
from compilers.train.metrics import batch_stats, finish_stats
from compilers.train import stored
from compilers.train.optim import make_optimizer, make_schedule

EVAL_BATCH = 2048  # rows per evaluation minibatch
HIST_BINS = 30     # bins of the per-epoch weight histograms
PROBES = True      # per-epoch chart probes (gradient norms, weight histograms); off only to measure their cost


@struct.dataclass
class TrainState:
    params: Any
    model_state: Any     # non-trained collections (batch_stats), {} if none
    opt_state: Any
    step: jax.Array      # int32, optimizer steps taken
    rng: jax.Array       # base key; each step folds in its step number


@dataclass
class Programs:
    init: Callable         # (seed, hyperparams) -> TrainState
    train_epoch: Callable  # (state, X, Y, order, val) -> (state, stats, val_stats | None)  [state donated];
    #                        order: the epoch's rows [(members,) steps, batch] (`epoch_order`);
    #                        with weights= [steps, batch] (one model): X, Y hold a chunk's rows in order
    #                        (steps * batch of them; order and val unused) -> (state, stats, None)
    evaluate: Callable     # (params, model_state, X, Y, W) -> stats, on pad_split batches [jitted]
    evaluate_predict: Callable  # (params, model_state, X, Y, W) -> (stats, outputs [batches*batch, ...])
    schedule: Callable     # step -> learning rate
    tx: Any
    grad_layers: tuple     # layer indices ("0", "3", ...) of stats["grad_norm"] entries
    weight_hist: Callable  # (params, edges) -> [layers, bins] histogram counts of each layer's weights
    hist_edges: Callable   # (params) -> [layers, bins + 1] fixed bins from the initial weights
    unit_schedule: Callable  # step -> the schedule's shape (peak 1); a model's lr multiplies it
    members: int | None = None  # vmapped over this many models (leading axis of state and stats)
    lower_epoch: Callable | None = None  # (state, X, Y, order, val) -> the epoch's jax `Lowered` program
    #                                     (its compiler options included: not for use inside a jit)


def device_count(devices) -> int:
    """train.devices -> how many devices train: `auto` takes every device, those of all processes
    when the run is several (compilers.train.distributed)."""
    n = len(jax.devices())
    return n if devices == "auto" else int(devices)


def device_mesh(devices):
    """A 1-D mesh ("batch") over the devices train.devices asks for; None for one device."""
    n = device_count(devices)
    if n <= 1:
        return None
    from jax.sharding import Mesh
    import numpy as np

    return Mesh(np.array(jax.devices()[:n]), ("batch",))


def hyperparams(plan) -> dict:
    """The values a plan's program reads from its state rather than bakes in, as float32 scalars:
    {"optimizer": {lr, weight_decay, ...}, "model": the dropout rates (layers.dropout_rates)}."""
    import numpy as np

    from compilers.model.layers import dropout_rates
    from compilers.train.optim import traced_options

    return {"optimizer": {k: np.float32(v) for k, v in traced_options(plan.train.optimizer).items()},
            "model": dropout_rates(plan.model.net)}


def epoch_order(seed, epoch: int, n: int, batch: int):
    """An epoch's minibatches: row indices [steps, batch] (int32) covering each of the n training
    rows once in a random order, the last minibatch padded with the order's first rows (weighted 0,
    see `batch_weights`). Drawn on the host with NumPy from (seed, epoch): the same order on every
    backend and in every process, and a permutation of 850,000 rows takes ~15 ms where XLA:CPU's
    sort-based `jax.random.permutation` takes ~0.4 s (and ~35 MiB to compile). `seed`: a model's
    seed, or a sequence of them (a vmapped group) -> [members, steps, batch]."""
    import numpy as np

    if not isinstance(seed, (int, np.integer)):
        return np.stack([epoch_order(s, epoch, n, batch) for s in seed])
    steps = -(-n // batch)
    order = np.random.default_rng([int(seed) & (2**64 - 1), int(epoch)]).permutation(n).astype(np.int32)
    pad = steps * batch - n
    if pad:
        order = np.concatenate([order, np.resize(order, pad)])   # (np.resize repeats a tiny split)
    return order.reshape(steps, batch)


def batch_weights(n: int, steps: int, batch: int, xp=jnp):
    """Weights [steps, batch] of an epoch's minibatches: 1 for the n rows, 0 for the padding; made by
    `xp` (jax.numpy inside a compiled epoch, numpy on the host)."""
    return (xp.arange(steps * batch) < n).astype(xp.float32).reshape(steps, batch)


REGION_ANALYSIS_MAX_PARAMS = 128 * 1024   # parameters: up to this many, CPU copy insertion uses region analysis


def _loop_options(plan) -> dict | None:
    """XLA options of the scanned-epoch programs. On a CPU, for a small model, copy insertion with
    region analysis: the loop then updates the parameters in place rather than copying some of them
    every step (measured: the digits MLP 64-256-128-10 trains ~5-10% faster). Not for a larger one:
    the copies let XLA's runtime overlap a layer's optimizer update with the steps still reading
    its weights, and in place the 160,000 x 100 MLP 512-512 (315k parameters) trained 10-15% slower."""
    if jax.default_backend() != "cpu":
        return None
    shapes = jax.tree_util.tree_leaves((plan.model.variable_shapes or {}).get("params", {}))
    n = sum(math.prod(getattr(v, "shape", ())) for v in shapes)
    return {"xla_cpu_copy_insertion_use_region_analysis": True} if n <= REGION_ANALYSIS_MAX_PARAMS else None


def eval_batch_size(n: int) -> int:
    """Rows per evaluation batch of a split of n rows: the next power of two, at least 64 (so small
    splits share one compiled program), at most EVAL_BATCH."""
    return min(EVAL_BATCH, max(64, 1 << (max(n, 1) - 1).bit_length()))


def pad_split(x, y, batch: int):
    """Host arrays -> [batches, batch, ...] x, y and weights (0 marks padding rows)."""
    import numpy as np

    n = x.shape[0]
    steps = max(1, -(-n // batch))
    pad = steps * batch - n
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)]) if pad else y
    return (x.reshape(steps, batch, *x.shape[1:]), y.reshape(steps, batch, *y.shape[1:]),
            w.reshape(steps, batch))


def make_programs(plan, *, members: int | None = None, shared_data: bool = True) -> Programs:
    """The jitted programs of a plan. With `members`, every program is `jax.vmap`ped over that many
    models that share the plan's structure: states, keys and stats gain a leading axis, and the
    data too unless `shared_data` (then every member reads the same arrays)."""
    net = plan.model.net
    tp = plan.train
    task, n_classes = plan.task, max(plan.n_classes, 1)
    loss_fn = LOSSES.get(tp.loss.kind).build(tp.loss.options)
    unit_schedule = make_schedule(tp.schedule, 1.0, tp.epochs, tp.steps_per_epoch)
    lr = float(tp.optimizer.options.lr)
    schedule = lambda step: lr * unit_schedule(step)  # noqa: E731  (this plan's own learning rate)
    # One model reads only its lr from the state (an lr sweep shares the compiled program); a vmapped
    # group reads every float option, since its members' values differ.
    tx = make_optimizer(tp.optimizer, unit_schedule, unit=True, traced=None if members is not None else ("lr",))
    stats_of = partial(batch_stats, task=task, n_classes=n_classes, binary_logit=tp.binary_logit,
                       with_hist=tp.with_hist)
    input_shape = plan.input_shape
    n_train, batch = plan.sizes["train"], tp.batch_size
    # top-level layers that have parameters, in layer order: "layers_0", "layers_3", ...
    layer_keys = sorted((plan.model.variable_shapes or {}).get("params", {}), key=lambda k: int(k.split("_")[1]))
    # Each layer's gradient norm, per step, for the `gradients` chart: only when the run draws it
    # (a few % of a small model's step). A vmapped group computes it for every member (their
    # plots may differ; the program is one).
    grad_norms = PROBES and bool(layer_keys) and (members is not None or any(
        getattr(c, "kind", None) == "gradients" for c in plan.charts))

    def init(seed, hparams):
        key = jax.random.key(seed)
        pkey, dkey, skey = jax.random.split(key, 3)
        x = jnp.zeros((1, *input_shape), plan.model.input_dtype)
        variables = net.init({"params": pkey, "dropout": dkey}, x, train=False)
        variables = dict(variables)
        params = variables.pop("params")
        if hparams["model"]:
            variables["hparams"] = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), hparams["model"])
        opt_state = tx.init(params)._replace(
            hyperparams={k: jnp.asarray(v, jnp.float32) for k, v in hparams["optimizer"].items()})
        return TrainState(params=params, model_state=variables, opt_state=opt_state,
                          step=jnp.zeros((), jnp.int32), rng=skey)

    # train.devices: data-parallel over a 1-D mesh on the batch axis. Each minibatch is sharded across
    # the devices, parameters and optimizer state are replicated, and XLA's partitioner reduces the
    # gradients. One device (or a vmapped group): no mesh, the program as it is.
    mesh = device_mesh(plan.spec.train.devices) if members is None else None
    # a run of this plan that ran before loads these programs traced and lowered (compilers.train.stored)
    key = None if mesh is not None else stored.fingerprint(
        plan, members, shared_data, PROBES, EVAL_BATCH, HIST_BINS)

    def program(fn, name, **options):
        return stored.Program(fn, name, key, **options)

    def shard_batch(v):
        if mesh is None or v.shape[0] % mesh.size:   # (evaluation batches of another size stay whole)
            return v
        from jax.sharding import NamedSharding, PartitionSpec

        return jax.lax.with_sharding_constraint(v, NamedSharding(mesh, PartitionSpec("batch")))

    # train.precision: bfloat16 computes the network in bfloat16 from float32 master weights (the
    # optimizer, its state and the loss stay float32; gradients flow back through the casts).
    compute = jnp.bfloat16 if plan.spec.train.precision == "bfloat16" else None

    def lower(tree):
        return jax.tree_util.tree_map(
            lambda a: a.astype(compute) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

    def forward(params, model_state, x, train: bool, rng):
        if compute is not None:
            params, x = lower(params), lower(x)
        variables = {"params": params, **model_state}
        if train and model_state:
            out, new_state = net.apply(variables, x, train=True, rngs={"dropout": rng}, mutable=list(model_state))
            # running statistics keep their dtype (a scan's carry must)
            new_state = jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype), new_state, dict(model_state))
        else:
            out, new_state = net.apply(variables, x, train=train, rngs={"dropout": rng}), model_state
        return (out.astype(jnp.float32) if compute is not None else out), new_state

    def train_step(state: TrainState, x, y, w, deferred: bool = False):
        x, y, w = shard_batch(x), shard_batch(y), shard_batch(w)
        rng = jax.random.fold_in(state.rng, state.step)

        def objective(params):
            out, model_state = forward(params, state.model_state, x, True, rng)
            loss = (loss_fn(out, y) * w).sum() / jnp.maximum(w.sum(), 1.0)
            return loss, (out, model_state)

        (loss, (out, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        grad_norm = (jnp.stack([optax.tree.norm(grads[k]) for k in layer_keys]) if grad_norms
                     else jnp.zeros((0,), jnp.float32))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        stats = stats_of(jax.lax.stop_gradient(out), y, w, deferred=deferred)
        stats["loss"] = loss * w.sum()
        stats["grad_norm"] = grad_norm  # summed over the epoch's steps; the loop divides
        return state.replace(params=params, opt_state=opt_state, model_state=model_state,
                             step=state.step + 1), stats

    # Evaluation reads splits padded to whole batches of `eval_batch` rows (see `pad_split`), so
    # small data sets evaluate every split with one compiled program.
    def eval_scan(params, model_state, X, Y, W, keep_outputs: bool):
        def body(carry, b):
            x, y, w = (shard_batch(v) for v in b)
            out, _ = forward(params, model_state, x, False, jax.random.key(0))
            stats = stats_of(out, y, w)
            stats["loss"] = (loss_fn(out, y) * w).sum()
            return carry, (stats, out if keep_outputs else None)

        _, (stats, out) = jax.lax.scan(body, 0, (X, Y, W))
        stats = jax.tree_util.tree_map(lambda s: s.sum(0), stats)
        return (stats, out.reshape(-1, *out.shape[2:])) if keep_outputs else stats

    d = None if shared_data else 0    # vmap axis of the data arrays

    def vm(f, in_axes):
        return f if members is None else jax.vmap(f, in_axes=in_axes)

    evaluate = program(vm(partial(eval_scan, keep_outputs=False), (0, 0, d, d, d)), "evaluate")
    evaluate_predict = program(vm(partial(eval_scan, keep_outputs=True), (0, 0, d, d, d)), "evaluate_predict")

    if tp.loop == "scan":
        loop_options = _loop_options(plan)

        def one_epoch(state, X, Y, idx, val):
            # One compiled call per epoch: every minibatch step in the given order, then the validation pass.
            w = batch_weights(n_train, idx.shape[0], batch)

            def body(state, b):
                i, wb = b
                return train_step(state, X[i], Y[i], wb, deferred=True)

            state, stats = jax.lax.scan(body, state, (idx, w))
            vstats = None if val is None else eval_scan(state.params, state.model_state, *val, keep_outputs=False)
            return state, finish_stats(stats, Y[idx], w, n_classes), vstats

        epoch_program = program(vm(one_epoch, (0, d, d, 0, d)), "epoch", donate_argnums=0,
                                compiler_options=loop_options)
        epoch_program_noval = program(vm(lambda s, X, Y, k: one_epoch(s, X, Y, k, None), (0, d, d, 0)),
                                      "epoch_noval", donate_argnums=0, compiler_options=loop_options)

        def one_chunk(state, X, Y, W):
            # A chunk of the epoch (train.feed: chunks): its rows already in order, whole minibatches.
            steps = W.shape[0]
            xb, yb = X.reshape(steps, batch, *X.shape[1:]), Y.reshape(steps, batch, *Y.shape[1:])
            state, stats = jax.lax.scan(lambda s, b: train_step(s, *b, deferred=True), state, (xb, yb, W))
            return state, finish_stats(stats, yb, W, n_classes)

        chunk_program = program(one_chunk, "chunk", donate_argnums=0, compiler_options=loop_options)

        def train_epoch(state, X, Y, order, val, weights=None):
            if weights is not None:
                return (*chunk_program(state, X, Y, weights), None)
            return epoch_program(state, X, Y, order, val) if val is not None \
                else epoch_program_noval(state, X, Y, order)

        def lower_epoch(state, X, Y, order, val):
            return epoch_program.lower(state, X, Y, order, val) if val is not None \
                else epoch_program_noval.lower(state, X, Y, order)
    else:
        # One jitted call per minibatch: XLA:CPU compiles convolutions inside scan to a slow path.
        import numpy as np

        steps = -(-n_train // batch)
        weights_all = batch_weights(n_train, steps, batch, np)
        if members is not None:
            weights_all = np.broadcast_to(weights_all, (members, steps, batch))
        weights_dev = []   # weights_all on the device, put there once

        def one_step(state, acc, X, Y, idx, w, k):
            state, stats = train_step(state, X[idx[k]], Y[idx[k]], w[k])
            return state, jax.tree_util.tree_map(jnp.add, acc, stats)

        step_acc = jax.jit(vm(one_step, (0, 0, d, d, 0, 0, None)), donate_argnums=(0, 1))
        stats_shape = jax.jit(vm(lambda s, X, Y, idx, w: train_step(s, X[idx[0]], Y[idx[0]], w[0])[1],
                                 (0, d, d, 0, 0)))
        zero = None

        def train_epoch(state, X, Y, order, val, weights=None):
            nonlocal zero
            if weights is not None:   # a chunk (train.feed: chunks): X's rows in order, whole minibatches
                steps = weights.shape[0]
                idx, w = jnp.arange(steps * batch).reshape(steps, batch), weights
                val = None
            else:
                idx = jax.device_put(order)
                if isinstance(idx, jax.core.Tracer):   # (lower_epoch)
                    w = weights_all
                else:
                    if not weights_dev:    # put where the order is (over a group's devices, or not)
                        weights_dev.append(jax.device_put(weights_all, idx.sharding))
                    w = weights_dev[0]
            if zero is None:   # the statistics' shapes (shapes only: lower_epoch calls this inside a trace)
                zero = jax.eval_shape(stats_shape, state, X, Y, idx, w)
            acc = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), zero)
            for k in range(idx.shape[-2]):   # idx: [(members,) steps, batch]
                state, acc = step_acc(state, acc, X, Y, idx, w, k)
            return state, acc, None if val is None else evaluate(state.params, state.model_state, *val)

        def lower_epoch(state, X, Y, order, val):
            return jax.jit(train_epoch).lower(state, X, Y, order, val)

    def layer_weights(params):
        """Each layer's weights as one vector: its kernels/embeddings, else all its parameters."""
        out = []
        for k in layer_keys:
            leaves = jax.tree_util.tree_leaves_with_path(params[k])
            main = [v for path, v in leaves if str(getattr(path[-1], "key", "")) in ("kernel", "embedding")]
            out.append(jnp.concatenate([v.ravel() for v in (main or [v for _, v in leaves])]))
        return out

    def hist_edges(params):
        rows = []
        for v in layer_weights(params):
            m = jnp.maximum(2.0 * jnp.max(jnp.abs(v)), 1e-3)
            rows.append(jnp.linspace(-m, m, HIST_BINS + 1))
        return jnp.stack(rows) if rows else jnp.zeros((0, HIST_BINS + 1))

    def weight_hist(params, edges):
        rows = []
        for v, e in zip(layer_weights(params), edges):
            # counts from comparisons against the inner edges (vectorised; a scatter-add runs serially
            # on XLA:CPU); values past the outer edges fall into the end bins
            below = (v[:, None] < e[None, 1:-1]).sum(0).astype(jnp.float32)        # [bins - 1], cumulative
            cum = jnp.concatenate([below, jnp.array([v.size], jnp.float32)])
            rows.append(jnp.diff(cum, prepend=0.0))
        return jnp.stack(rows) if rows else jnp.zeros((0, HIST_BINS))

    programs = Programs(grad_layers=tuple(k.split("_")[1] for k in layer_keys),
                        weight_hist=program(vm(weight_hist, (0, 0)), "weight_hist"),
                        hist_edges=program(vm(hist_edges, 0), "hist_edges"),
                        init=program(vm(init, (0, 0)), "init"), train_epoch=train_epoch, evaluate=evaluate,
                        evaluate_predict=evaluate_predict, schedule=schedule, tx=tx, unit_schedule=unit_schedule,
                        members=members, lower_epoch=lower_epoch)
    if mesh is not None and jax.process_count() > 1:   # the mesh spans processes: global arrays in, local out
        from compilers.train.distributed import across_processes

        programs = across_processes(programs, mesh)
    return programs
