"""Probes: small summaries of the model's insides.

`activation_summary` runs the trained model once over (up to PROBE_ROWS rows of) validation data
with flax's `capture_intermediates`, and reduces each layer's outputs to a histogram, moments and
the fraction of units that never fire (exactly zero for every example). It runs once, after
training, so the reduction is done in NumPy: a compiled histogram program cost more to compile
(~1 s on the CPU) than the whole reduction costs to run.
"""

from __future__ import annotations

import numpy as np

BINS = 40
PROBE_ROWS = 512


def activation_summary(net, params, model_state, x, w) -> dict[str, dict]:
    """{'0': {'counts', 'edges', 'mean', 'std', 'zero_fraction', 'dead_fraction'}, ...}.

    x: one batch [B, ...]; w: [B] weights (0 marks padding rows).
    """
    import jax

    n = int(min(PROBE_ROWS, int(np.asarray(w).sum())))
    x = x[:n]

    @jax.jit
    def run(params, model_state, x):
        _, state = net.apply({"params": params, **model_state}, x, train=False,
                             capture_intermediates=True, mutable=["intermediates"])
        out = {}

        def walk(tree, prefix):
            for k, v in tree.items():
                if not k.startswith("layers_"):
                    continue
                index = prefix + k[len("layers_"):]
                if "__call__" in v:
                    out[index] = v["__call__"][-1]  # last call: a subclass calls super() first
                walk(v, index + ".")

        walk(state["intermediates"], "")
        return out

    return {k: summarise(np.asarray(v, dtype=np.float32)) for k, v in jax.device_get(run(params, model_state, x)).items()}


def summarise(a: np.ndarray) -> dict:
    units = a.reshape(a.shape[0], -1)                 # [n, units]
    finite = units[np.isfinite(units)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(finite, bins=BINS, range=(lo, hi))
    return {"counts": counts.astype(np.float64), "edges": edges, "mean": float(finite.mean()) if finite.size else 0.0,
            "std": float(finite.std()) if finite.size else 0.0, "zero_fraction": float((units == 0).mean()),
            "dead_fraction": float((units == 0).all(axis=0).mean())}
