"""Probes: small summaries of the model's insides, computed on the device.

`activation_summary` runs the trained model once over (up to one batch of) validation data with
flax's `capture_intermediates` and returns, per layer, a histogram of its outputs and the
fraction of units that never fire (exactly zero for every example), not the tensors themselves.
"""

from __future__ import annotations

import numpy as np

BINS = 40


def activation_summary(net, params, model_state, x, w) -> dict[str, dict]:
    """{'0': {'counts', 'edges', 'mean', 'std', 'zero_fraction', 'dead_fraction', 'units'}, ...}.

    x: one batch [B, ...]; w: [B] weights (0 marks padding rows).
    """
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(params, model_state, x, w):
        _, state = net.apply({"params": params, **model_state}, x, train=False,
                             capture_intermediates=True, mutable=["intermediates"])
        out = {}

        def walk(tree, prefix):
            for k, v in tree.items():
                if not k.startswith("layers_"):
                    continue
                index = prefix + k[len("layers_"):]
                if "__call__" in v:
                    out[index] = summarise(v["__call__"][-1].astype(jnp.float32), w)  # last call: a subclass calls super() first
                walk(v, index + ".")

        walk(state["intermediates"], "")
        return out

    def summarise(a, w):
        units = a.reshape(a.shape[0], -1)                                  # [B, U]
        mask = w[:, None] > 0
        big = jnp.finfo(jnp.float32).max
        lo = jnp.min(jnp.where(mask, units, big))
        hi = jnp.max(jnp.where(mask, units, -big))
        hi = jnp.where(hi > lo, hi, lo + 1.0)
        edges = jnp.linspace(lo, hi, BINS + 1)
        b = jnp.clip(((units - lo) / (hi - lo) * BINS).astype(jnp.int32), 0, BINS - 1)
        counts = jnp.zeros(BINS, jnp.float32).at[b.ravel()].add(jnp.broadcast_to(w[:, None], b.shape).ravel())
        n = jnp.maximum(w.sum(), 1.0)
        wsum = (w[:, None] * units)
        mean = wsum.sum() / (n * units.shape[1])
        var = (w[:, None] * (units - mean) ** 2).sum() / (n * units.shape[1])
        zero = (w[:, None] * (units == 0)).sum() / (n * units.shape[1])
        fired = (mask & (units != 0)).any(axis=0)                           # [U]
        return {"counts": counts, "edges": edges, "mean": mean, "std": jnp.sqrt(var),
                "zero_fraction": zero, "dead_fraction": 1.0 - fired.mean()}

    result = jax.device_get(run(params, model_state, x, w))
    return {k: {"counts": np.asarray(v["counts"]), "edges": np.asarray(v["edges"]),
                "mean": float(v["mean"]), "std": float(v["std"]), "zero_fraction": float(v["zero_fraction"]),
                "dead_fraction": float(v["dead_fraction"])} for k, v in result.items()}
