"""Losses: per-example values from the model's outputs; optax's implementations."""

from __future__ import annotations

from dataclasses import dataclass

from dsl.registry import LOSSES, NoOptions, opt


@LOSSES.register("cross_entropy", NoOptions, tasks=("classification",))
def cross_entropy(o):
    """Softmax cross-entropy of the logits against integer class labels."""
    import jax
    import optax

    # Against one-hot labels rather than by picking each row's label: the same value, but its
    # gradient is softmax minus one-hot, where picking differentiates into a scatter, which XLA:CPU
    # runs serially (a few % of a small model's step).

    return lambda out, y: optax.softmax_cross_entropy(out, jax.nn.one_hot(y, out.shape[-1], dtype=out.dtype))


@LOSSES.register("binary_cross_entropy", NoOptions, tasks=("classification",), binary_logit=True)
def binary_cross_entropy(o):
    """Sigmoid cross-entropy of one logit against labels 0/1 (two-class tasks)."""
    import optax

    return lambda out, y: optax.sigmoid_binary_cross_entropy(out[..., 0], y.astype(out.dtype))


@LOSSES.register("mse", NoOptions, tasks=("regression",))
def mse(o):
    """Mean squared error."""
    return lambda out, y: (out[..., 0] - y) ** 2


@LOSSES.register("mae", NoOptions, tasks=("regression",))
def mae(o):
    """Mean absolute error."""
    import jax.numpy as jnp

    return lambda out, y: jnp.abs(out[..., 0] - y)


@dataclass(frozen=True)
class HuberOptions:
    delta: float = opt(1.0, "where the loss turns from quadratic to linear", gt=0.0)


@LOSSES.register("huber", HuberOptions, tasks=("regression",))
def huber(o: HuberOptions):
    """Huber loss: quadratic for small errors, linear for large ones."""
    import optax

    return lambda out, y: optax.huber_loss(out[..., 0], y, delta=o.delta)


def default_loss(task: str) -> str:
    return "cross_entropy" if task == "classification" else "mse"
