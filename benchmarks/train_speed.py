"""Training speed: the DSL's compiled loop against the best hand-written JAX loops.

Same model, data, initial parameters, optimizer (Adam 1e-3) and batch size; samples/second
after compilation and one untimed round, median of --repeats timings of --epochs epochs each, all
loops of a model timed round-robin in one process so that a slow spell of the machine hits every
loop alike; the DSL's ratio to the best hand-written loop is printed two ways: of the median rates,
and the median of each round's ratio.
Run by hand (not a test):

    python benchmarks/train_speed.py                 # the three models below
    python benchmarks/train_speed.py --only cnn --epochs 20 --repeats 5

Models (as the issue names them): the digits MLP 64-256-128-10 (batch 32), the digits CNN
conv16-conv32-pool-dense64 on 8x8x1 (batch 32), and a 160,000 x 100 synthetic MLP 512-512
(batch 256).

Hand-written loops, plain `jax.jit` over pure pytrees (parameters and optimizer state as
pytrees, the flax module used only as a function):
  step      a jitted train_step per minibatch, the data on the device, gathered by index
  scan      one jitted call per epoch: `lax.scan` over the shuffled minibatches
  scan+i2c  (convolutional model) the same scan with convolutions as im2col matrix products,
            the known way around XLA:CPU's slow convolutions inside scan (jax#12868)
  ..., host order: the same scan, the epoch's order drawn on the host with NumPy and passed in
            (as the DSL does) instead of `jax.random.permutation` inside the jitted epoch
The hand-written loops drop the last partial minibatch; the DSL keeps every row (padding the last
minibatch with zero weights) and also computes its metrics' statistics in the epoch. Every loop's
timing includes drawing its epochs' orders.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("DSL_COMPILATION_CACHE", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax
import flax.linen as nn

from compilers.model.layers import im2col_conv
from compilers.pipeline import plan_spec
from compilers.train.step import epoch_order, hyperparams, make_programs
from dsl.parse import parse_spec


def _cnn(im2col: bool):
    conv = im2col_conv if im2col else None
    return nn.Sequential([nn.Conv(16, (3, 3), conv_general_dilated=conv), nn.relu,
                          nn.Conv(32, (3, 3), conv_general_dilated=conv), nn.relu,
                          lambda x: nn.max_pool(x, (2, 2), (2, 2)), lambda x: x.reshape(x.shape[0], -1),
                          nn.Dense(64), nn.relu, nn.Dense(10)])


MODELS = {
    "mlp": {
        "title": "digits MLP 64-256-128-10",
        "spec": {"name": "bench", "seed": 0,
                 "data": {"source": "digits", "prep": ["standardize"], "split": {"test": 0.2, "val": 0.0}},
                 "model": {"layers": [{"dense": 256}, "relu", {"dense": 128}, "relu"]},
                 "train": {"batch_size": 32, "optimizer": {"name": "adam", "lr": 1e-3}}, "plots": []},
        "hand": {"step": lambda: nn.Sequential([nn.Dense(256), nn.relu, nn.Dense(128), nn.relu, nn.Dense(10)])},
        "epochs": 10,
    },
    "cnn": {
        "title": "digits CNN conv16-conv32-pool-dense64 on 8x8x1",
        "spec": {"name": "bench", "seed": 0,
                 "data": {"source": "digits", "shape": [8, 8, 1], "prep": ["min_max"],
                          "split": {"test": 0.2, "val": 0.0}},
                 "model": {"layers": [{"conv": {"features": 16, "activation": "relu"}},
                                      {"conv": {"features": 32, "activation": "relu"}}, "max_pool", "flatten",
                                      {"dense": {"features": 64, "activation": "relu"}}]},
                 "train": {"batch_size": 32, "optimizer": {"name": "adam", "lr": 1e-3}}, "plots": []},
        "hand": {"step": lambda: _cnn(False), "scan+i2c": lambda: _cnn(True)},
        "epochs": 5,
    },
    "wide": {
        "title": "160,000 x 100 synthetic MLP 512-512",
        "spec": {"name": "bench", "seed": 0,
                 "data": {"source": "blobs", "options": {"n_samples": 200000, "n_features": 100, "centers": 2,
                                                          "noise": 8.0},
                          "split": {"test": 0.2, "val": 0.0}},
                 "model": {"layers": [{"dense": 512}, "relu", {"dense": 512}, "relu"]},
                 "train": {"batch_size": 256, "optimizer": {"name": "adam", "lr": 1e-3}}, "plots": []},
        "hand": {"step": lambda: nn.Sequential([nn.Dense(512), nn.relu, nn.Dense(512), nn.relu, nn.Dense(2)])},
        "epochs": 1,
    },
}


def dsl_loop(spec: dict, epochs: int):
    data, plan = plan_spec(parse_spec(spec), Path.cwd())
    programs = make_programs(plan)
    state = programs.init(jnp.int32(0), hyperparams(plan))
    X, Y = jax.device_put(data.x["train"]), jax.device_put(data.y["train"])
    n, batch = plan.sizes["train"], plan.train.batch_size
    state, stats, _ = programs.train_epoch(state, X, Y, epoch_order(0, 0, n, batch), None)  # compile
    jax.block_until_ready(stats)
    done = 0

    def run():
        nonlocal state, done
        t = time.perf_counter()
        for e in range(epochs):
            # the DSL's loop: the epoch's row order drawn on the host, one call, its statistics read
            done += 1
            state, stats, _ = programs.train_epoch(state, X, Y, epoch_order(0, done, n, batch), None)
            jax.device_get(stats["loss"])
        return time.perf_counter() - t

    label = "dsl (scan epoch" + (", im2col convolutions)" if _uses_im2col(plan) else ")") \
        if plan.train.loop == "scan" else "dsl (jitted step per minibatch)"
    return label, run, data.x["train"].shape[0], data


def _uses_im2col(plan) -> bool:
    def walk(m):
        return getattr(m, "im2col", False) or any(walk(x) for x in getattr(m, "layers", ()))

    return walk(plan.model.net)


def hand_loops(makers: dict, data, batch: int, epochs: int) -> dict:
    """name -> (run, samples per epoch). Every loop starts from the same initial parameters."""
    Xh, Yh = data.x["train"], data.y["train"].astype(np.int32)
    n = Xh.shape[0]
    steps = n // batch
    X, Y = jax.device_put(Xh), jax.device_put(Yh)
    tx = optax.adam(1e-3)
    loops = {}
    for kind, make in makers.items():
        model = make()
        params = jax.jit(model.init)(jax.random.key(0), Xh[:1])["params"]

        def loss_fn(p, x, y, model=model):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()

        def step(p, o, x, y, loss_fn=loss_fn):
            loss, g = jax.value_and_grad(loss_fn)(p, x, y)
            u, o = tx.update(g, o, p)
            return optax.apply_updates(p, u), o, loss

        @partial(jax.jit, donate_argnums=(0, 1))
        def train_step(p, o, X, Y, idx, step=step):
            return step(p, o, X[idx], Y[idx])

        def scan_epoch(p, o, X, Y, idx, step=step, loss_fn=loss_fn):
            def body(carry, i):
                p, o, _ = step(*carry, X[i], Y[i])
                return (p, o), None

            (p, o), _ = jax.lax.scan(body, (p, o), idx)
            return p, o, loss_fn(p, X[idx[-1]], Y[idx[-1]])

        @partial(jax.jit, donate_argnums=(0, 1))
        def train_epoch(p, o, X, Y, key, scan_epoch=scan_epoch):
            return scan_epoch(p, o, X, Y, jax.random.permutation(key, n)[:steps * batch].reshape(steps, batch))

        train_epoch_order = jax.jit(scan_epoch, donate_argnums=(0, 1))   # the order drawn on the host

        def per_epoch_host(params=params, train_epoch=train_epoch_order):
            p, o = jax.tree_util.tree_map(jnp.copy, params), tx.init(params)
            order = lambda e: np.random.default_rng(e).permutation(n)[:steps * batch].reshape(steps, batch)  # noqa: E731
            p, o, loss = train_epoch(p, o, X, Y, order(99))  # compile
            jax.block_until_ready(p)
            t = time.perf_counter()
            for e in range(epochs):
                p, o, loss = train_epoch(p, o, X, Y, order(e))
                float(loss)
            return time.perf_counter() - t

        def per_step(params=params, train_step=train_step):
            state = [jax.tree_util.tree_map(jnp.copy, params), tx.init(params)]
            p, o, _ = train_step(*state, X, Y, jnp.arange(batch))  # compile
            jax.block_until_ready(p)
            t = time.perf_counter()
            for e in range(epochs):
                perm = jax.random.permutation(jax.random.key(e), n)
                for s in range(steps):
                    p, o, loss = train_step(p, o, X, Y, perm[s * batch:(s + 1) * batch])
                float(loss)
            return time.perf_counter() - t

        def per_epoch(params=params, train_epoch=train_epoch):
            p, o = jax.tree_util.tree_map(jnp.copy, params), tx.init(params)
            p, o, loss = train_epoch(p, o, X, Y, jax.random.key(99))  # compile
            jax.block_until_ready(p)
            t = time.perf_counter()
            for e in range(epochs):
                p, o, loss = train_epoch(p, o, X, Y, jax.random.key(e))
                float(loss)
            return time.perf_counter() - t

        if kind == "step":
            loops["hand-written (jit step)"] = (per_step, steps * batch)
            if "scan+i2c" not in makers:
                loops["hand-written (scan epoch)"] = (per_epoch, steps * batch)
                loops["hand-written (scan epoch, host order)"] = (per_epoch_host, steps * batch)
        else:
            name = kind.replace('i2c', 'im2col')
            loops[f"hand-written ({name})"] = (per_epoch, steps * batch)
            loops[f"hand-written ({name}, host order)"] = (per_epoch_host, steps * batch)
    return loops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=0, help="epochs per timing (default: per model)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"{os.cpu_count()} CPUs; median of {args.repeats} timings, loops round-robin")
    summary = []
    for key in args.only or list(MODELS):
        m = MODELS[key]
        epochs = args.epochs or m["epochs"]
        ours, run, n, data = dsl_loop(m["spec"], epochs)
        loops = {ours: (run, n)}
        loops.update(hand_loops(m["hand"], data, m["spec"]["train"]["batch_size"], epochs))
        for fn, _ in loops.values():
            fn()    # one untimed round: whatever a loop does once (its first dispatches) stays out
        times = {label: [] for label in loops}
        for _ in range(args.repeats):
            for label, (fn, _) in loops.items():
                times[label].append(fn())
        rate = {label: loops[label][1] * epochs / statistics.median(t) for label, t in times.items()}
        print(f"\n{m['title']}, batch {m['spec']['train']['batch_size']}, {n:,} training rows, "
              f"{epochs} epoch(s) per timing")
        base = rate[ours]
        for label, r in rate.items():
            print(f"  {label:<44} {r:>10,.0f} samples/s   dsl / this = {base / r:5.2f}x")
        best = max((r, label) for label, r in rate.items() if label != ours)
        # the same comparison round by round (each round times every loop back to back, so a slow
        # spell of the machine hits both sides of a ratio): the median of those ratios
        paired = statistics.median(loops[ours][1] * t_best / (loops[best[1]][1] * t_ours)
                                   for t_ours, t_best in zip(times[ours], times[best[1]]))
        summary.append((m["title"], base, best[1], best[0], paired))
    print("\nDSL against the best hand-written loop (ratio of median rates; median of the rounds' ratios):")
    for title, base, label, r, paired in summary:
        print(f"  {title:<48} {base / r:5.2f}x  {paired:5.2f}x   ({base:,.0f} vs {r:,.0f} samples/s, {label})")


if __name__ == "__main__":
    main()
