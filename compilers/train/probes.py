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

_PROGRAMS: dict = {}


def _program(kind: str, net, *static):
    """One jitted probe program per (kind, model, static options). Flax modules compare by value, so
    runs of one structure (the jobs of a vmapped sweep) reuse the programs the first one compiled."""
    key = (kind, net, static)
    fn = _PROGRAMS.get(key)
    if fn is None:
        from compilers.train import stored

        if len(_PROGRAMS) > 64:
            _PROGRAMS.clear()
        fn = _PROGRAMS[key] = stored.Program(_BUILDERS[kind](net, *static), f"probe_{kind}",
                                             stored.fingerprint(kind, net, static))
    return fn


def activation_summary(net, params, model_state, x, w) -> dict[str, dict]:
    """{'0': {'counts', 'edges', 'mean', 'std', 'zero_fraction', 'dead_fraction'}, ...}.

    x: one batch [B, ...]; w: [B] weights (0 marks padding rows).
    """
    import jax

    n = int(min(PROBE_ROWS, int(np.asarray(w).sum())))
    x = x[:n]
    run = _program("activations", net)
    return {k: summarise(np.asarray(v, dtype=np.float32)) for k, v in jax.device_get(run(params, model_state, x)).items()}


def _activations_program(net):
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

    return run


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


EXAMPLES = 64          # test examples kept for the image/sequence charts
MAPS = 8               # examples whose feature maps and attention weights are kept
EMBED_ROWS = 1000      # test rows projected by the embedding chart
SMOOTHGRAD = 16        # gradients averaged for image saliency (the input and noisy copies)


def capture(net, params, model_state, x, wanted: tuple[str, ...] | None, attention: bool):
    """Outputs of the layers `wanted` (indices such as '0', '2.1'; None: all), and attention weights."""
    import jax

    return jax.device_get(_program("capture", net, wanted, attention)(params, model_state, x))


def _capture_program(net, wanted, attention):
    def run(params, model_state, x):
        _, state = net.apply({"params": params, **model_state}, x, train=False,
                             capture_intermediates=True, mutable=["intermediates"])
        outs, attn = {}, {}

        def walk(tree, prefix, top):
            for k, v in tree.items():
                if k.startswith("layers_"):
                    index = prefix + k[len("layers_"):]
                    if "__call__" in v and (wanted is None or index in wanted):
                        outs[index] = v["__call__"][-1]
                    walk(v, index + ".", index)
                elif isinstance(v, dict):
                    if attention and "attention_weights" in v and top is not None:
                        attn[top] = v["attention_weights"][-1]
                    walk(v, prefix, top)

        walk(state["intermediates"], "", None)
        return outs, attn

    return run


def saliency(net, params, model_state, x, y, task: str, binary_logit: bool, tokens: bool):
    """|d score / d input| per example, where score is the true class's logit (classification) or the
    prediction (regression). Token inputs have no gradient: their attribution is occlusion, the drop
    in the true class's probability (or the change of the prediction) when a token becomes <unk>."""
    if tokens:
        return np.asarray(_program("occlude", net, task, binary_logit)(params, model_state, x, y))
    grad = _program("gradient", net, task, binary_logit)
    if x.ndim <= 2:  # tabular: the plain gradient
        return np.abs(np.asarray(grad(params, model_state, x, y)))
    # Images and sequences: SmoothGrad (Smilkov et al. 2017), the mean |gradient| over the input
    # and noisy copies of it (noise 15% of the value range); plain gradients look like noise.
    rng = np.random.default_rng(0)
    sigma = 0.15 * float(np.ptp(x)) or 0.15
    grads = [np.abs(np.asarray(grad(params, model_state, x, y)))]
    for _ in range(SMOOTHGRAD - 1):
        noisy = x + rng.normal(0, sigma, x.shape).astype(x.dtype)
        grads.append(np.abs(np.asarray(grad(params, model_state, noisy, y))))
    return np.mean(grads, axis=0)


def _score(out, y, task, binary_logit):
    import jax.numpy as jnp

    if task == "regression":
        return out[..., 0]
    if binary_logit:
        return jnp.where(y == 1, 1.0, -1.0) * out[..., 0]
    return jnp.take_along_axis(out, y[:, None], axis=-1)[:, 0]


def _gradient_program(net, task, binary_logit):
    import jax

    def total(x, params, model_state, y):
        return _score(net.apply({"params": params, **model_state}, x, train=False), y, task, binary_logit).sum()

    grad = jax.grad(total)
    return lambda params, model_state, x, y: grad(x, params, model_state, y)


def _occlude_program(net, task, binary_logit):
    import jax
    import jax.numpy as jnp

    def prob(out, y):
        if task == "regression":
            return out[..., 0]
        p = jax.nn.sigmoid(out[..., 0]) if binary_logit else jax.nn.softmax(out, -1)
        return jnp.where(y == 1, p, 1 - p) if binary_logit else jnp.take_along_axis(p, y[:, None], -1)[:, 0]

    def occlude(params, model_state, x, y):
        def apply(x):
            return net.apply({"params": params, **model_state}, x, train=False)

        k, t = x.shape
        base = prob(apply(x), y)                                    # [k]
        eye = jnp.eye(t, dtype=bool)
        xs = jnp.where(eye[None], jnp.where(x[:, None, :] == 0, 0, 1), x[:, None, :])  # [k, t, t]
        ys = jnp.repeat(y, t)
        p = prob(apply(xs.reshape(k * t, t)), ys).reshape(k, t)
        return jnp.where(x == 0, 0.0, jnp.abs(base[:, None] - p))

    return occlude


def collect(plan, params, model_state, data) -> dict:
    """The probes the image, sequence and interpretation charts read (see RunRecord)."""
    split = "test" if data.x.get("test") is not None and data.x["test"].shape[0] else (
        "val" if data.x.get("val") is not None and data.x["val"].shape[0] else "train")
    X, Y = data.x[split], data.y[split]
    net = plan.model.net
    tokens = np.issubdtype(X.dtype, np.integer)
    k = min(EXAMPLES if not tokens else 16, X.shape[0])
    order = _spread(Y, plan.task)           # rows in turn from each class (splits may be class-ordered)
    rows = order[:k]
    out: dict = {"examples": {"x": X[rows], "row": rows if split == "test" else np.full(k, -1)}}
    out["examples"]["saliency"] = saliency(net, params, model_state, X[rows], Y[rows], plan.task,
                                           plan.train.binary_logit, tokens)
    layers = plan.model.rows
    convs = tuple(r["index"] for r in layers if r["kind"] == "conv")
    maps, attn = capture(net, params, model_state, X[rows[:MAPS]], convs, True)
    out["feature_maps"] = {i: np.asarray(v, np.float32) for i, v in maps.items()}
    out["attention"] = {i: np.asarray(v, np.float32) for i, v in attn.items()}
    # The embedding chart reads the last layer before the head (or the last layer, head: none).
    top = [r for r in layers if r["depth"] == 0 and r["path"] != "model.head" and r["kind"] != "dropout"]
    if top:
        layer = top[-1]["index"]
        pick = np.unique(np.linspace(0, X.shape[0] - 1, min(EMBED_ROWS, X.shape[0])).astype(int))
        outs, _ = capture(net, params, model_state, X[pick], (layer,), False)
        out["embedding"] = {"points": np.asarray(outs[layer], np.float32).reshape(len(pick), -1),
                            "row": pick if split == "test" else np.full(len(pick), -1)}
        out["embedding_layer"] = layer
    return out


def _spread(y: np.ndarray, task: str) -> np.ndarray:
    """Row indices taking each class in turn (classification), or every row in order (regression)."""
    if task != "classification":
        return np.arange(len(y))
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    order = [idx[i] for i in range(max(len(b) for b in by_class)) for idx in by_class if i < len(idx)]
    return np.asarray(order, dtype=np.int64)


SAMPLE_ROWS = 2000     # rows of the data sample the data charts read
GRID = 80              # decision-boundary grid points per axis


def data_sample(data) -> dict:
    """Raw and prepared table rows for the data charts (tables only), sampled evenly."""
    out: dict = {}
    from compilers.data.dataset import Columns

    raw = getattr(data, "raw", None)
    if raw is not None and hasattr(raw, "columns"):
        pick = np.unique(np.linspace(0, len(raw) - 1, min(SAMPLE_ROWS, len(raw))).astype(int))
        cols = {}
        for c in raw.columns:
            v = (raw.column(c) if isinstance(raw, Columns) else raw[c].to_numpy())[pick]
            try:
                cols[str(c)] = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                cols[str(c)] = np.asarray([("" if x is None else str(x)) for x in v], dtype=str)
        out["raw"] = cols
    x = data.x.get("train")
    if x is not None and x.ndim == 2 and np.issubdtype(x.dtype, np.floating):
        pick = np.unique(np.linspace(0, x.shape[0] - 1, min(SAMPLE_ROWS, x.shape[0])).astype(int))
        out["prepared"] = {str(name): x[pick, j].astype(np.float32) for j, name in enumerate(data.feature_names)}
        out["prepared_target"] = {"y": np.asarray(data.y["train"])[pick]}
    return out


def decision_grid(plan, params, model_state, data) -> dict:
    """Predicted probabilities over a grid of the two prepared features (two-feature classification)."""
    import jax

    x = data.x.get("train")
    if plan.task != "classification" or x is None or x.ndim != 2 or x.shape[1] != 2 \
            or not np.issubdtype(x.dtype, np.floating):
        return {}
    from compilers.train.metrics import probabilities

    allx = np.concatenate([v for v in data.x.values() if v.shape[0]], axis=0)
    lo, hi = allx.min(0), allx.max(0)
    pad = 0.1 * np.maximum(hi - lo, 1e-6)
    g0 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], GRID, dtype=np.float32)
    g1 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], GRID, dtype=np.float32)
    mesh = np.stack(np.meshgrid(g0, g1), axis=-1).reshape(-1, 2)      # row i: x1 = g1[i // G], x0 = g0[i % G]
    out = _program("grid", plan.model.net, plan.train.binary_logit)(params, model_state, mesh)
    return {"x0": g0, "x1": g1, "proba": np.asarray(out, np.float32).reshape(GRID, GRID, -1)}


def _grid_program(net, binary_logit):
    from compilers.train.metrics import probabilities

    return lambda p, s, m: probabilities(net.apply({"params": p, **s}, m, train=False), binary_logit)


_BUILDERS = {"activations": _activations_program, "capture": _capture_program, "gradient": _gradient_program,
             "occlude": _occlude_program, "grid": _grid_program}
