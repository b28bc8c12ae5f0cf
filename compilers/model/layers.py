"""Layer kinds. Each entry: an options dataclass and a builder `(options, ctx) -> flax module`.

Every module is called as `module(x, train=bool)` on a batch `[B, *shape]`. Builders import
flax when they run, so importing this module (for `dsl list`, `dsl validate --help`) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from dsl.registry import LAYERS, NoOptions, opt
from dsl.spec import Item

# name -> (jax.nn function name, default options); the activation layers and `activation:` options.
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "elu", "leaky_relu", "swish", "softplus", "softmax")
# Activations with a flat zero region (a unit can die); used by the activations chart and probes.
RELU_LIKE = ("relu",)


def activation_fn(name: str, **kw):
    """The jax function of an activation, by its YAML name."""
    import jax

    fns = {
        "relu": jax.nn.relu,
        "gelu": jax.nn.gelu,
        "tanh": jax.numpy.tanh,
        "sigmoid": jax.nn.sigmoid,
        "elu": lambda x: jax.nn.elu(x, alpha=kw.get("alpha", 1.0)),
        "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=kw.get("negative_slope", 0.01)),
        "swish": jax.nn.swish,
        "softplus": jax.nn.softplus,
        "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    }
    return fns[name]


def _activation_names():
    return ACTIVATIONS


@dataclass(frozen=True)
class BuildContext:
    """What a builder may need beyond its options: a way to build nested layer lists."""

    build_seq: object  # (tuple[Item, ...], path) -> tuple[module, ...]


# --------------------------------------------------------------------------------------------
# Modules (flax.linen), created lazily so that flax is imported only when a model is built.

_MODULES: dict = {}


def modules():
    """The flax module classes; built once, on first use."""
    if _MODULES:
        return _MODULES
    import flax.linen as nn
    import jax.numpy as jnp

    class Dense(nn.Dense):
        activation: Optional[str] = None

        def __call__(self, x, train: bool = False):
            y = super().__call__(x)
            return activation_fn(self.activation)(y) if self.activation else y

    class Dropout(nn.Module):
        rate: float = 0.0

        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dropout(self.rate, deterministic=not train, name="dropout")(x) if self.rate else x

    class BatchNorm(nn.BatchNorm):
        def __call__(self, x, train: bool = False):
            return super().__call__(x, use_running_average=not train)

    class LayerNorm(nn.LayerNorm):
        def __call__(self, x, train: bool = False):
            return super().__call__(x)

    class Activation(nn.Module):
        name_: str = "relu"
        alpha: float = 1.0
        negative_slope: float = 0.01

        def __call__(self, x, train: bool = False):
            return activation_fn(self.name_, alpha=self.alpha, negative_slope=self.negative_slope)(x)

    class Flatten(nn.Module):
        def __call__(self, x, train: bool = False):
            return x.reshape(x.shape[0], -1)

    class Sequence(nn.Module):
        """Layers applied in order; a failing layer is named by its index."""

        layers: tuple = ()
        residual: bool = False

        def __call__(self, x, train: bool = False):
            y = x
            for i, layer in enumerate(self.layers):
                try:
                    y = layer(y, train=train)
                except LayerError as e:
                    e.index = (i,) + e.index
                    raise
                except Exception as e:  # shape errors raised by flax/jax while tracing
                    raise LayerError((i,), str(e).split("\n")[0]) from None
            if self.residual:
                if y.shape != x.shape:
                    raise LayerError((), f"a residual block must keep the shape: its layers turn "
                                         f"{tuple(x.shape[1:])} into {tuple(y.shape[1:])}")
                y = x + y
            return y

    _MODULES.update(Dense=Dense, Dropout=Dropout, BatchNorm=BatchNorm, LayerNorm=LayerNorm,
                    Activation=Activation, Flatten=Flatten, Sequence=Sequence, jnp=jnp)
    return _MODULES


class LayerError(Exception):
    """A layer that cannot take its input; `index` is its position (nested: a path)."""

    def __init__(self, index: tuple, message: str):
        super().__init__(message)
        self.index = index
        self.message = message


# --------------------------------------------------------------------------------------------
# Registered kinds


@dataclass(frozen=True)
class DenseOptions:
    features: int = opt(doc="output units", gt=0)
    activation: Optional[str] = opt(None, "an activation applied to the output", choices=_activation_names)
    use_bias: bool = opt(True, "add a learned bias")


@LAYERS.register("dense", DenseOptions, positional="features", params=True)
def dense(o: DenseOptions, ctx: BuildContext):
    """Fully connected layer on the last axis: y = x @ kernel + bias."""
    return modules()["Dense"](features=o.features, use_bias=o.use_bias, activation=o.activation)


@dataclass(frozen=True)
class DropoutOptions:
    rate: float = opt(0.5, "fraction of units zeroed while training", ge=0.0, lt=1.0)


@LAYERS.register("dropout", DropoutOptions, positional="rate")
def dropout(o: DropoutOptions, ctx: BuildContext):
    """Randomly zeroes a fraction of units while training; identity at evaluation."""
    return modules()["Dropout"](rate=o.rate)


@dataclass(frozen=True)
class BatchNormOptions:
    momentum: float = opt(0.99, "decay of the running statistics", gt=0.0, lt=1.0)
    epsilon: float = opt(1e-5, "added to the variance", gt=0.0)


@LAYERS.register("batch_norm", BatchNormOptions, params=True)
def batch_norm(o: BatchNormOptions, ctx: BuildContext):
    """Normalises each feature over the batch; running statistics at evaluation."""
    return modules()["BatchNorm"](momentum=o.momentum, epsilon=o.epsilon)


@dataclass(frozen=True)
class LayerNormOptions:
    epsilon: float = opt(1e-6, "added to the variance", gt=0.0)


@LAYERS.register("layer_norm", LayerNormOptions, params=True)
def layer_norm(o: LayerNormOptions, ctx: BuildContext):
    """Normalises each example over its last axis, with a learned scale and bias."""
    return modules()["LayerNorm"](epsilon=o.epsilon)


@LAYERS.register("flatten", NoOptions)
def flatten(o, ctx: BuildContext):
    """Flattens each example to one axis."""
    return modules()["Flatten"]()


@dataclass(frozen=True)
class ResidualOptions:
    layers: tuple[Item, ...] = opt(doc="the layers of the block", registry="layer")


@LAYERS.register("residual", ResidualOptions, positional="layers", nested=True)
def residual(o: ResidualOptions, ctx: BuildContext):
    """A skip connection: x + layers(x); the layers must keep the shape."""
    return modules()["Sequence"](layers=ctx.build_seq(o.layers), residual=True)


@dataclass(frozen=True)
class RepeatOptions:
    times: int = opt(doc="how many copies (each with its own parameters)", gt=0)
    layers: tuple[Item, ...] = opt(doc="the layers to repeat", registry="layer")


@LAYERS.register("repeat", RepeatOptions, nested=True)
def repeat(o: RepeatOptions, ctx: BuildContext):
    """The same layers `times` times in a row, each copy with its own parameters."""
    return modules()["Sequence"](layers=ctx.build_seq(o.layers * o.times))


_ACT_DOCS = {
    "relu": "max(x, 0).",
    "gelu": "Gaussian error linear unit, x * Phi(x) (tanh approximation).",
    "tanh": "Hyperbolic tangent.",
    "sigmoid": "Logistic function 1 / (1 + e^-x).",
    "elu": "Exponential linear unit: x if x > 0 else alpha * (e^x - 1).",
    "leaky_relu": "x if x > 0 else negative_slope * x.",
    "swish": "x * sigmoid(x) (SiLU).",
    "softplus": "log(1 + e^x), a smooth relu.",
    "softmax": "Normalised exponential over the last axis.",
}


@dataclass(frozen=True)
class EluOptions:
    alpha: float = opt(1.0, "scale of the negative part", gt=0.0)


@dataclass(frozen=True)
class LeakyOptions:
    negative_slope: float = opt(0.01, "slope for x < 0", ge=0.0)


def _register_activation(name: str) -> None:
    options = {"elu": EluOptions, "leaky_relu": LeakyOptions}.get(name, NoOptions)
    positional = {"elu": "alpha", "leaky_relu": "negative_slope"}.get(name)

    def build(o, ctx: BuildContext):
        return modules()["Activation"](name_=name, alpha=getattr(o, "alpha", 1.0),
                                       negative_slope=getattr(o, "negative_slope", 0.01))

    build.__doc__ = "Activation: " + _ACT_DOCS[name]
    LAYERS.register(name, options, positional=positional, activation=True)(build)


for _name in ACTIVATIONS:
    _register_activation(_name)
