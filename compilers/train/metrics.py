"""Metrics, computed from sufficient statistics.

Each train/eval step returns small sums (a confusion matrix, score histograms, error sums) that
are added over batches on the device; a metric is a pure function of those totals, evaluated on
the host once per epoch. So metrics cost nothing per step beyond the sums, and train and
validation metrics come out of the same code.
"""

from __future__ import annotations

import numpy as np

from dsl.registry import METRICS, NoOptions

AUC_BINS = 512      # score histogram resolution for auc (one-vs-rest, per class)
AUC_LOGIT = 12.0    # bins are even in log-odds over [-12, 12]: confident scores stay apart


def batch_stats(out, y, w, task: str, n_classes: int, binary_logit: bool, with_hist: bool,
                deferred: bool = False):
    """Device-side sums for one batch. out: model outputs [B, n_out]; w: [B] weights (0 = padding).

    With `deferred` (a scanned epoch), a classifier's batch gives its predicted classes ("pred",
    [B] int32) in place of the confusion matrix, and `finish_stats` makes the matrix from all of
    the epoch's predictions at once: one matrix product per epoch rather than per step."""
    import jax
    import jax.numpy as jnp

    if task == "regression":
        p = out[..., 0].astype(jnp.float32)
        e = p - y
        return {"n": w.sum(), "err": (w * e).sum(), "abs": (w * jnp.abs(e)).sum(),
                "sq": (w * e * e).sum(), "y": (w * y).sum(), "y2": (w * y * y).sum()}
    proba = probabilities(out, binary_logit)
    pred = jnp.argmax(proba, axis=-1).astype(jnp.int32)
    stats = {"pred": pred} if deferred else {"n": w.sum(), "confusion": confusion(y, pred, w, n_classes)}
    if with_hist:
        p = jnp.clip(proba, 1e-7, 1 - 1e-7)
        logit = jnp.clip(jnp.log(p) - jnp.log1p(-p), -AUC_LOGIT, AUC_LOGIT)
        b = jnp.clip(((logit + AUC_LOGIT) / (2 * AUC_LOGIT) * AUC_BINS).astype(jnp.int32), 0, AUC_BINS - 1)  # [B, C]
        pos = (y[:, None] == jnp.arange(n_classes)[None, :]).astype(jnp.int32)    # [B, C]
        cls = jnp.broadcast_to(jnp.arange(n_classes)[None, :], b.shape)
        hist = jnp.zeros((n_classes, 2, AUC_BINS), jnp.float32).at[cls, pos, b].add(w[:, None])
        stats["hist"] = hist
    return stats


def confusion(y, pred, w, n_classes: int):
    """[n_classes, n_classes] weighted counts (rows: true class). One-hot products rather than a
    scatter-add: XLA:CPU runs a scatter serially, a matrix product fast."""
    import jax
    import jax.numpy as jnp

    true_1h = jax.nn.one_hot(y, n_classes, dtype=jnp.float32) * w[:, None]
    return true_1h.T @ jax.nn.one_hot(pred, n_classes, dtype=jnp.float32)


def finish_stats(stats, y, w, n_classes: int):
    """A scanned epoch's stacked step statistics [steps, ...] -> their sums, the deferred confusion
    matrix made from the stacked predictions ("pred" [steps, batch]) and the rows' labels and
    weights ([steps, batch] each)."""
    import jax

    stats = dict(stats)
    pred = stats.pop("pred", None)
    out = jax.tree_util.tree_map(lambda s: s.sum(0), stats)
    if pred is not None:
        out["n"] = w.sum()
        out["confusion"] = confusion(y.reshape(-1), pred.reshape(-1), w.reshape(-1), n_classes)
    return out


def probabilities(out, binary_logit: bool):
    import jax
    import jax.numpy as jnp

    out = out.astype(jnp.float32)
    if binary_logit:
        p = jax.nn.sigmoid(out[..., 0])
        return jnp.stack([1 - p, p], axis=-1)
    return jax.nn.softmax(out, axis=-1)


def probabilities_np(out: np.ndarray, binary_logit: bool) -> np.ndarray:
    """`probabilities` on the host, in NumPy (float32): no device programs for a final pass."""
    out = np.asarray(out, np.float32)
    if binary_logit:
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-out[..., 0]))
        return np.stack([1 - p, p], axis=-1).astype(np.float32)
    z = np.exp(out - out.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def _prf(conf: np.ndarray):
    tp = np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(conf.sum(0) > 0, tp / conf.sum(0), 0.0)
        recall = np.where(conf.sum(1) > 0, tp / conf.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = conf.sum(1) > 0  # macro averages over the classes present in the split
    if not present.any():
        present = np.ones_like(present)
    return precision[present].mean(), recall[present].mean(), f1[present].mean()


@METRICS.register("accuracy", NoOptions, tasks=("classification",), mode="max")
def accuracy(o):
    """Fraction of examples whose most probable class is the true one."""
    return lambda s: float(np.trace(s["confusion"]) / max(s["confusion"].sum(), 1e-12))


@METRICS.register("precision", NoOptions, tasks=("classification",), mode="max")
def precision(o):
    """Macro-averaged precision: of the examples predicted as a class, the fraction that are."""
    return lambda s: float(_prf(s["confusion"])[0])


@METRICS.register("recall", NoOptions, tasks=("classification",), mode="max")
def recall(o):
    """Macro-averaged recall: of the examples of a class, the fraction found."""
    return lambda s: float(_prf(s["confusion"])[1])


@METRICS.register("f1", NoOptions, tasks=("classification",), mode="max")
def f1(o):
    """Macro-averaged F1, the harmonic mean of precision and recall per class."""
    return lambda s: float(_prf(s["confusion"])[2])


def auc_from_hist(hist: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC from per-class score histograms [C, 2, bins]."""
    aucs = []
    for c in range(hist.shape[0]):
        neg, pos = hist[c, 0], hist[c, 1]
        if pos.sum() == 0 or neg.sum() == 0:
            continue
        # Sweep the threshold from the top bin down; ties within a bin count half.
        tpr = np.concatenate([[0.0], np.cumsum(pos[::-1]) / pos.sum()])
        fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / neg.sum()])
        aucs.append(float(np.trapezoid(tpr, fpr)))
        if hist.shape[0] == 2:  # both one-vs-rest curves of a binary task are the same curve
            break
    return float(np.mean(aucs)) if aucs else float("nan")


@METRICS.register("auc", NoOptions, tasks=("classification",), mode="max", needs_hist=True)
def auc(o):
    """Area under the ROC curve, one-vs-rest, macro-averaged (512 log-odds bins)."""
    return lambda s: auc_from_hist(s["hist"])


@METRICS.register("mse", NoOptions, tasks=("regression",), mode="min")
def mse(o):
    """Mean squared error."""
    return lambda s: float(s["sq"] / max(s["n"], 1e-12))


@METRICS.register("mae", NoOptions, tasks=("regression",), mode="min")
def mae(o):
    """Mean absolute error."""
    return lambda s: float(s["abs"] / max(s["n"], 1e-12))


@METRICS.register("r2", NoOptions, tasks=("regression",), mode="max")
def r2(o):
    """Coefficient of determination: 1 - residual variance / target variance."""

    def fn(s):
        n = max(float(s["n"]), 1e-12)
        total = float(s["y2"]) - float(s["y"]) ** 2 / n
        return float(1.0 - float(s["sq"]) / total) if total > 0 else float("nan")

    return fn


def default_metrics(task: str) -> tuple[str, ...]:
    return ("accuracy",) if task == "classification" else ("r2", "mae")


def metric_mode(name: str) -> str:
    """'min' or 'max' for a history key such as val_loss or val_accuracy."""
    base = name[4:] if name.startswith("val_") else name
    base = base[5:] if base.startswith("test_") else base
    if base in ("loss", "lr"):
        return "min"
    return METRICS.get(base).meta.get("mode", "max") if base in METRICS else "min"
