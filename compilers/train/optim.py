"""Optimizers and learning-rate schedules: optax values that compose.

An optimizer builder gets its options and a schedule (a function of the step) and returns an
optax GradientTransformation; `clip_norm` chains `optax.clip_by_global_norm` in front.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from dsl.registry import OPTIMIZERS, SCHEDULES, opt
from dsl.spec import OptimizerOptions, ScheduleOptions


@dataclass(frozen=True)
class SgdOptions(OptimizerOptions):
    pass


@OPTIMIZERS.register("sgd", SgdOptions)
def sgd(o, lr):
    """Plain stochastic gradient descent."""
    import optax

    return optax.sgd(lr)


@dataclass(frozen=True)
class MomentumOptions(OptimizerOptions):
    momentum: float = opt(0.9, "decay of the velocity", ge=0.0, lt=1.0)
    nesterov: bool = opt(False, "Nesterov momentum")


@OPTIMIZERS.register("momentum", MomentumOptions)
def momentum(o, lr):
    """SGD with (optionally Nesterov) momentum."""
    import optax

    return optax.sgd(lr, momentum=o.momentum, nesterov=o.nesterov)


@dataclass(frozen=True)
class AdamOptions(OptimizerOptions):
    b1: float = opt(0.9, "decay of the first moment", ge=0.0, lt=1.0)
    b2: float = opt(0.999, "decay of the second moment", ge=0.0, lt=1.0)
    eps: float = opt(1e-8, "added to the denominator", gt=0.0)


@OPTIMIZERS.register("adam", AdamOptions)
def adam(o, lr):
    """Adam (Kingma & Ba)."""
    import optax

    return optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)


@dataclass(frozen=True)
class AdamWOptions(AdamOptions):
    weight_decay: float = opt(1e-4, "decoupled weight decay", ge=0.0)


@OPTIMIZERS.register("adamw", AdamWOptions)
def adamw(o, lr):
    """Adam with decoupled weight decay."""
    import optax

    return optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)


@dataclass(frozen=True)
class RmsOptions(OptimizerOptions):
    decay: float = opt(0.9, "decay of the squared-gradient average", ge=0.0, lt=1.0)
    eps: float = opt(1e-8, "added to the denominator", gt=0.0)
    momentum: Optional[float] = opt(None, "momentum", ge=0.0, lt=1.0)


@OPTIMIZERS.register("rmsprop", RmsOptions)
def rmsprop(o, lr):
    """RMSProp."""
    import optax

    return optax.rmsprop(lr, decay=o.decay, eps=o.eps, momentum=o.momentum)


@dataclass(frozen=True)
class AdagradOptions(OptimizerOptions):
    eps: float = opt(1e-7, "added to the denominator", gt=0.0)


@OPTIMIZERS.register("adagrad", AdagradOptions)
def adagrad(o, lr):
    """Adagrad."""
    import optax

    return optax.adagrad(lr, eps=o.eps)


@dataclass(frozen=True)
class LambOptions(AdamOptions):
    eps: float = opt(1e-6, "added to the denominator", gt=0.0)
    weight_decay: float = opt(0.0, "weight decay", ge=0.0)


@OPTIMIZERS.register("lamb", LambOptions)
def lamb(o, lr):
    """LAMB: layer-wise adaptive large-batch optimizer."""
    import optax

    return optax.lamb(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)


@dataclass(frozen=True)
class LionOptions(OptimizerOptions):
    b1: float = opt(0.9, "interpolation of the update", ge=0.0, lt=1.0)
    b2: float = opt(0.99, "decay of the momentum", ge=0.0, lt=1.0)
    weight_decay: float = opt(1e-3, "decoupled weight decay", ge=0.0)


@OPTIMIZERS.register("lion", LionOptions)
def lion(o, lr):
    """Lion (evolved sign momentum); use a learning rate 3-10x smaller than Adam's."""
    import optax

    return optax.lion(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)


def traced_options(item) -> dict[str, float]:
    """The optimizer's options that can live in its state as numbers rather than in its program:
    every float-valued option (lr, weight_decay, b1, b2, eps, momentum, clip_norm when set)."""
    import dataclasses

    values = {f.name: getattr(item.options, f.name) for f in dataclasses.fields(item.options)}
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class HyperState(NamedTuple):
    hyperparams: dict    # name -> float32 scalar: this member's values of traced_options
    inner_state: Any


def make_optimizer(item, schedule_fn, *, unit: bool = False, traced=None):
    """The optax transformation of an optimizer item, driven by `schedule_fn(step)`.

    With `unit`, `schedule_fn` is the schedule's shape (peak 1), and lr and the other float options
    are hyperparameters held in the optimizer state (`HyperState`) rather than constants of the
    program: models that differ only in them share one compiled program, which is what lets the
    vmap launcher train them side by side with `jax.vmap`.

    `traced` names the options the update reads from the state (None: all of them); the others are
    the item's own values, constants of the program (XLA folds them: b1, b2 and eps read from the
    state cost a small model ~5% of its step). The state holds every option either way, so
    checkpoints keep one structure.
    """
    import dataclasses

    import optax

    entry = OPTIMIZERS.get(item.kind)

    def build(options, lr_fn):
        tx = entry.build(options, lr_fn)
        if options.clip_norm is not None:
            tx = optax.chain(optax.clip_by_global_norm(options.clip_norm), tx)
        return tx

    if not unit:
        return build(item.options, schedule_fn)

    import jax.numpy as jnp

    initial = traced_options(item)

    def factory(hp):
        options = dataclasses.replace(item.options, **hp)
        return build(options, lambda count: hp["lr"] * schedule_fn(count))

    def init(params):
        hp = {k: jnp.asarray(v, jnp.float32) for k, v in initial.items()}
        return HyperState(hp, factory(initial).init(params))

    def update(updates, state, params=None):
        hp = state.hyperparams if traced is None else {k: v for k, v in state.hyperparams.items() if k in traced}
        updates, inner = factory(hp).update(updates, state.inner_state, params)
        return updates, HyperState(state.hyperparams, inner)

    return optax.GradientTransformation(init, update)


# --- schedules: builder(options, lr, total_steps, steps_per_epoch) -> optax schedule (after warm-up)

@dataclass(frozen=True)
class ConstantOptions(ScheduleOptions):
    pass


@SCHEDULES.register("constant", ConstantOptions)
def constant(o, lr, steps, per_epoch):
    """The same learning rate throughout (after any warm-up)."""
    import optax

    return optax.constant_schedule(lr)


@dataclass(frozen=True)
class CosineOptions(ScheduleOptions):
    alpha: float = opt(0.0, "final learning rate as a fraction of lr", ge=0.0, le=1.0)


@SCHEDULES.register("cosine", CosineOptions)
def cosine(o, lr, steps, per_epoch):
    """Cosine decay from lr to alpha * lr over the run."""
    import optax

    return optax.cosine_decay_schedule(lr, max(steps, 1), alpha=o.alpha)


@dataclass(frozen=True)
class ExponentialOptions(ScheduleOptions):
    decay_rate: float = opt(0.95, "factor applied every decay_epochs", gt=0.0)
    decay_epochs: float = opt(1.0, "epochs per decay_rate factor", gt=0.0)


@SCHEDULES.register("exponential", ExponentialOptions)
def exponential(o, lr, steps, per_epoch):
    """Smooth exponential decay: lr * decay_rate ** (epoch / decay_epochs)."""
    import optax

    return optax.exponential_decay(lr, transition_steps=max(1, round(o.decay_epochs * per_epoch)),
                                   decay_rate=o.decay_rate)


@dataclass(frozen=True)
class StepOptions(ScheduleOptions):
    every_epochs: int = opt(30, "epochs between drops", gt=0)
    factor: float = opt(0.1, "multiplies lr at each drop", gt=0.0)


@SCHEDULES.register("step", StepOptions)
def step(o, lr, steps, per_epoch):
    """Piecewise constant: lr times factor every `every_epochs` epochs."""
    import optax

    every = o.every_epochs * per_epoch
    bounds = {k * every: o.factor for k in range(1, max(1, steps // every) + 1)}
    return optax.piecewise_constant_schedule(lr, bounds)


@dataclass(frozen=True)
class LinearOptions(ScheduleOptions):
    end: float = opt(0.0, "final learning rate as a fraction of lr", ge=0.0)


@SCHEDULES.register("linear", LinearOptions)
def linear(o, lr, steps, per_epoch):
    """Linear decay from lr to end * lr over the run."""
    import optax

    return optax.linear_schedule(lr, lr * o.end, max(steps, 1))


def make_schedule(item, lr: float, epochs: int, per_epoch: int):
    """step -> learning rate: a linear warm-up, then the named schedule."""
    import optax

    total = epochs * per_epoch
    warm = int(round(item.options.warmup_epochs * per_epoch))
    main = SCHEDULES.get(item.kind).build(item.options, lr, max(total - warm, 1), per_epoch)
    import jax.numpy as jnp

    sched = main if warm <= 0 else optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])
    return lambda step: jnp.maximum(sched(step), 0.0)  # XLA rounding can dip a decay to -1e-9
