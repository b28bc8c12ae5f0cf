"""Training speed: the DSL's compiled loop against hand-written flax + optax loops.

Same model, data, optimizer and batch size; samples/second after compilation, median of
--repeats timings of --epochs epochs each. Run by hand (not a test):

    python benchmarks/train_speed.py            # digits MLP 64-256-128-10 and digits CNN, batch 32
    python benchmarks/train_speed.py --epochs 20 --repeats 5

Hand-written loops:
  tutorial  a jitted train_step per minibatch, batches sliced from NumPy on the host
            (the flax tutorials' shape)
  resident  a jitted train_step per minibatch, data on the device, gathered by index
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("DSL_COMPILATION_CACHE", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax
import flax.linen as nn

from compilers.pipeline import plan_spec
from compilers.train.step import make_programs
from dsl.parse import parse_spec

MODELS = {
    "digits MLP 64-256-128-10": {
        "spec": {"name": "bench", "seed": 0,
                 "data": {"source": "digits", "prep": ["standardize"], "split": {"test": 0.2, "val": 0.0}},
                 "model": {"layers": [{"dense": 256}, "relu", {"dense": 128}, "relu"]},
                 "train": {"batch_size": 32, "optimizer": {"name": "adam", "lr": 1e-3}}, "plots": []},
        "hand": lambda: nn.Sequential([nn.Dense(256), nn.relu, nn.Dense(128), nn.relu, nn.Dense(10)]),
    },
    "digits CNN conv16-conv32-pool-dense64 on 8x8x1": {
        "spec": {"name": "bench", "seed": 0,
                 "data": {"source": "digits", "shape": [8, 8, 1], "prep": ["min_max"],
                          "split": {"test": 0.2, "val": 0.0}},
                 "model": {"layers": [{"conv": {"features": 16, "activation": "relu"}},
                                      {"conv": {"features": 32, "activation": "relu"}}, "max_pool", "flatten",
                                      {"dense": {"features": 64, "activation": "relu"}}]},
                 "train": {"batch_size": 32, "optimizer": {"name": "adam", "lr": 1e-3}}, "plots": []},
        "hand": lambda: nn.Sequential([nn.Conv(16, (3, 3)), nn.relu, nn.Conv(32, (3, 3)), nn.relu,
                                       lambda x: nn.max_pool(x, (2, 2), (2, 2)), lambda x: x.reshape(x.shape[0], -1),
                                       nn.Dense(64), nn.relu, nn.Dense(10)]),
    },
}


def dsl_loop(spec: dict, epochs: int):
    plan_data, plan = plan_spec(parse_spec(spec), Path.cwd())
    data = plan_data
    programs = make_programs(plan)
    state = programs.init(0)
    X, Y = jax.device_put(data.x["train"]), jax.device_put(data.y["train"])
    key = jax.random.key(0)
    state, stats, _ = programs.train_epoch(state, X, Y, key, None)  # compile
    jax.block_until_ready(stats)

    def run():
        nonlocal state
        t = time.perf_counter()
        for e in range(epochs):
            state, stats, _ = programs.train_epoch(state, X, Y, jax.random.fold_in(key, e), None)
            jax.device_get(stats["loss"])  # the DSL reads its epoch statistics every epoch
        return time.perf_counter() - t

    return run, data.x["train"].shape[0], data, plan.train.loop


def hand_loops(make_model, data, batch: int, epochs: int):
    model = make_model()
    Xh, Yh = data.x["train"], data.y["train"].astype(np.int32)
    n = Xh.shape[0]
    params = model.init(jax.random.key(0), Xh[:1])["params"]
    tx = optax.adam(1e-3)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()

    @jax.jit
    def train_step(p, o, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    @jax.jit
    def train_step_idx(p, o, X, Y, idx):
        return train_step.__wrapped__(p, o, X[idx], Y[idx])

    rng = np.random.default_rng(0)
    steps = n // batch

    def tutorial():
        p, o = params, tx.init(params)
        p, o, _ = train_step(p, o, Xh[:batch], Yh[:batch])  # compile
        jax.block_until_ready(p)
        t = time.perf_counter()
        for _ in range(epochs):
            perm = rng.permutation(n)
            for s in range(steps):
                i = perm[s * batch:(s + 1) * batch]
                p, o, loss = train_step(p, o, Xh[i], Yh[i])
            float(loss)
        return time.perf_counter() - t

    X, Y = jax.device_put(Xh), jax.device_put(Yh)

    def resident():
        p, o = params, tx.init(params)
        idx0 = jnp.arange(batch)
        p, o, _ = train_step_idx(p, o, X, Y, idx0)
        jax.block_until_ready(p)
        t = time.perf_counter()
        for e in range(epochs):
            perm = jax.random.permutation(jax.random.key(e), n)
            for s in range(steps):
                p, o, loss = train_step_idx(p, o, X, Y, perm[s * batch:(s + 1) * batch])
            float(loss)
        return time.perf_counter() - t

    return {"tutorial": (tutorial, steps * batch), "resident": (resident, steps * batch)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"{os.cpu_count()} CPUs; {args.epochs} epochs x {args.repeats} repeats, median")
    for name, m in MODELS.items():
        run, n, data, loop = dsl_loop(m["spec"], args.epochs)
        ours = "dsl (scan epoch)" if loop == "scan" else "dsl (jitted step loop)"
        loops = {ours: (run, n)}
        for label, (fn, per_epoch) in hand_loops(m["hand"], data, m["spec"]["train"]["batch_size"], args.epochs).items():
            loops[f"hand-written ({label})"] = (fn, per_epoch)
        # Round-robin repeats, so that a slow spell of the machine hits every loop alike.
        times = {label: [] for label in loops}
        for _ in range(args.repeats):
            for label, (fn, _) in loops.items():
                times[label].append(fn())
        rate = {label: loops[label][1] * args.epochs / statistics.median(t) for label, t in times.items()}
        print(f"\n{name}, batch {m['spec']['train']['batch_size']}, {n} training rows")
        base = rate[ours]
        for label, r in rate.items():
            print(f"  {label:<28} {r:>10,.0f} samples/s   dsl / this = {base / r:5.2f}x")


if __name__ == "__main__":
    main()
