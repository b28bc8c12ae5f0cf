"""Layer kinds. Each entry: an options dataclass and a builder `(options, ctx) -> flax module`.

Every module is called as `module(x, train=bool)` on a batch `[B, *shape]`. Builders import
flax when they run, so importing this module (for `dsl list`, `dsl validate --help`) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

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


def im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, precision=None, **kw):
    """`lax.conv_general_dilated` for channels-last inputs as one matrix product over patches.

    The patches are strided slices of the padded input (one per kernel position), so the
    gradient is slicing and padding too. XLA:CPU compiles a real convolution inside `lax.scan`
    or `vmap` to a slow generic path (jax#12868, ~15x slower); this form keeps the epoch's scan
    at full speed there. Kernel layout (k..., C_in, C_out), as flax's Conv stores it, so the
    parameters are the same whichever form computes them. Dilation and feature groups fall back
    to the real convolution.
    """
    import itertools

    import jax.numpy as jnp
    from jax import lax

    n = lhs.ndim - 2
    if (any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ()))
            or feature_group_count != 1):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision)
    ksize = rhs.shape[:n]
    pads = lax.padtype_to_pads(lhs.shape[1:-1], ksize, window_strides, padding) if isinstance(padding, str) \
        else padding
    x = jnp.pad(lhs, [(0, 0), *pads, (0, 0)]) if any(p != (0, 0) for p in map(tuple, pads)) else lhs
    out = [(x.shape[1 + d] - ksize[d]) // window_strides[d] + 1 for d in range(n)]
    cols = [x[(slice(None),) + tuple(slice(o, o + (m - 1) * s + 1, s) for o, m, s in zip(offs, out, window_strides))]
            for offs in itertools.product(*(range(k) for k in ksize))]
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)   # [B, *out, K*C_in]
    return jnp.dot(patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


@dataclass(frozen=True)
class BuildContext:
    """What a builder may need beyond its options: a way to build nested layer lists."""

    build_seq: object  # (tuple[Item, ...]) -> tuple[module, ...]
    vocab_size: Optional[int] = None  # token vocabulary of the data (embedding's default)
    im2col: bool = False              # convolutions as matrix products over patches (XLA:CPU under scan)


# --------------------------------------------------------------------------------------------
# Modules (flax.linen), created lazily so that flax is imported only when a model is built.

_MODULES: dict = {}


def modules():
    """The flax module classes; built once, on first use."""
    if _MODULES:
        return _MODULES
    import flax.linen as nn
    import jax.numpy as jnp
    import numpy as np

    class Dense(nn.Dense):
        activation: Optional[str] = None

        def __call__(self, x, train: bool = False, mask=None):
            y = super().__call__(x)
            return activation_fn(self.activation)(y) if self.activation else y

    class Dropout(nn.Module):
        """Inverted dropout whose rate is a value of the "hparams" collection rather than a constant
        of the program, so models that differ only in dropout rates share one compiled program
        (the vmap launcher sets each model's rate; see `dropout_rates`)."""

        rate: float = 0.0

        @nn.compact
        def __call__(self, x, train: bool = False, mask=None):
            if not self.rate:
                return x
            rate = self.variable("hparams", "rate", lambda: jnp.asarray(self.rate, jnp.float32)).value
            if not train:
                return x
            import jax

            keep = 1.0 - rate
            kept = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape)
            return jnp.where(kept, x / keep, jnp.zeros_like(x))

    class BatchNorm(nn.BatchNorm):
        def __call__(self, x, train: bool = False, mask=None):
            return super().__call__(x, use_running_average=not train)

    class LayerNorm(nn.LayerNorm):
        def __call__(self, x, train: bool = False, mask=None):
            return super().__call__(x)

    class Activation(nn.Module):
        name_: str = "relu"
        alpha: float = 1.0
        negative_slope: float = 0.01

        def __call__(self, x, train: bool = False, mask=None):
            return activation_fn(self.name_, alpha=self.alpha, negative_slope=self.negative_slope)(x)

    class Flatten(nn.Module):
        def __call__(self, x, train: bool = False, mask=None):
            return x.reshape(x.shape[0], -1)

    def spatial(x, name: str, lo: int = 1, hi: int = 2) -> int:
        dims = x.ndim - 2
        if not lo <= dims <= hi:
            shape = tuple(x.shape[1:])
            want = "a sequence [T, C] or an image [H, W, C]" if hi == 2 else "a sequence [T, C]"
            raise LayerError((), f"{name} needs {want} per example, got shape {shape}; "
                                 "set data.shape (e.g. [8, 8, 1]) or add a reshape layer")
        return dims

    def tup(v, n):
        v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
        return v * n if len(v) == 1 else v

    class Conv(nn.Module):
        features: int = 16
        kernel: tuple = (3,)
        stride: tuple = (1,)
        padding: str = "SAME"
        activation: Optional[str] = None
        use_bias: bool = True
        im2col: bool = False   # compute as a matrix product over patches (see im2col_conv)

        @nn.compact
        def __call__(self, x, train: bool = False, mask=None):
            n = spatial(x, "conv")
            kernel, stride = tup(self.kernel, n), tup(self.stride, n)
            if len(kernel) != n or len(stride) != n:
                raise LayerError((), f"kernel {self.kernel} and stride {self.stride} must have 1 or {n} entries "
                                     f"for a {n}-D input")
            y = nn.Conv(self.features, kernel, strides=stride, padding=self.padding, use_bias=self.use_bias,
                        conv_general_dilated=im2col_conv if self.im2col else None, name="conv")(x)
            return activation_fn(self.activation)(y) if self.activation else y

    class Pool(nn.Module):
        kind: str = "max"
        window: tuple = (2,)
        stride: Optional[tuple] = None
        padding: str = "VALID"

        def __call__(self, x, train: bool = False, mask=None):
            n = spatial(x, f"{self.kind}_pool")
            window = tup(self.window, n)
            stride = tup(self.stride, n) if self.stride else window
            if any(w > d for w, d in zip(window, x.shape[1:-1])) and self.padding == "VALID":
                raise LayerError((), f"window {window} is larger than the input {tuple(x.shape[1:-1])}")
            fn = nn.max_pool if self.kind == "max" else nn.avg_pool
            return fn(x, window, strides=stride, padding=self.padding)

    class GlobalAvgPool(nn.Module):
        def __call__(self, x, train: bool = False, mask=None):
            spatial(x, "global_avg_pool")
            if mask is not None and x.ndim == 3:  # mean over real time steps only
                m = mask[..., None].astype(x.dtype)
                return (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
            return x.mean(axis=tuple(range(1, x.ndim - 1)))

    class Reshape(nn.Module):
        shape: tuple = ()

        def __call__(self, x, train: bool = False, mask=None):
            size = int(np.prod(x.shape[1:]))
            target = tuple(self.shape)
            if -1 in target:
                known = int(np.prod([d for d in target if d != -1]))
                if known == 0 or size % known:
                    raise LayerError((), f"cannot reshape {tuple(x.shape[1:])} ({size} values) into {target}")
                target = tuple(size // known if d == -1 else d for d in target)
            if int(np.prod(target)) != size:
                raise LayerError((), f"cannot reshape {tuple(x.shape[1:])} ({size} values) into {target}")
            return x.reshape(x.shape[0], *target)

    class Embedding(nn.Module):
        vocab_size: int = 2
        features: int = 32
        positions: bool = False

        @nn.compact
        def __call__(self, x, train: bool = False, mask=None):
            if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
                raise LayerError((), f"embedding needs token ids [T] per example (a `tokenize` prep step), "
                                     f"got {tuple(x.shape[1:])} of {x.dtype}")
            y = nn.Embed(self.vocab_size, self.features, name="embed")(x)
            if self.positions:
                pos = self.param("positions", nn.initializers.normal(0.02), (x.shape[1], self.features))
                y = y + pos[None]
            return y

    class Recurrent(nn.Module):
        cell: str = "lstm"
        features: int = 32
        return_sequences: bool = False

        @nn.compact
        def __call__(self, x, train: bool = False, mask=None):
            spatial(x, self.cell, 1, 1)
            cells = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}
            lengths = mask.sum(-1).astype(jnp.int32) if mask is not None else None
            rnn = nn.RNN(cells[self.cell](self.features), name=self.cell)
            outs = rnn(x, seq_lengths=lengths)
            if self.return_sequences:
                return outs
            if lengths is None:
                return outs[:, -1]
            last = jnp.clip(lengths - 1, 0, x.shape[1] - 1)
            return outs[jnp.arange(x.shape[0]), last]

    class Attention(nn.Module):
        heads: int = 4
        dropout: float = 0.0

        @nn.compact
        def __call__(self, x, train: bool = False, mask=None):
            spatial(x, "attention", 1, 1)
            d = x.shape[-1]
            if d % self.heads:
                raise LayerError((), f"{d} features do not split into {self.heads} heads")
            att_mask = nn.make_attention_mask(mask, mask) if mask is not None else None
            return nn.MultiHeadDotProductAttention(
                num_heads=self.heads, dropout_rate=self.dropout, deterministic=not train,
                name="attention")(x, x, mask=att_mask, sow_weights=True)

    class Transformer(nn.Module):
        heads: int = 4
        mlp: Optional[int] = None
        dropout: float = 0.0

        @nn.compact
        def __call__(self, x, train: bool = False, mask=None):
            spatial(x, "transformer", 1, 1)
            d = x.shape[-1]
            h = Attention(self.heads, self.dropout, name="attention")(nn.LayerNorm(name="norm1")(x), train, mask)
            x = x + nn.Dropout(self.dropout, deterministic=not train)(h)
            h = nn.LayerNorm(name="norm2")(x)
            h = nn.Dense(self.mlp or 4 * d, name="mlp_in")(h)
            h = nn.Dense(d, name="mlp_out")(nn.gelu(h))
            return x + nn.Dropout(self.dropout, deterministic=not train)(h)

    class Sequence(nn.Module):
        """Layers applied in order; a failing layer is named by its index."""

        layers: tuple = ()
        residual: bool = False

        def __call__(self, x, train: bool = False, mask=None):
            # `mask` [B, T] marks real (non-padding) time steps of token sequences: an embedding
            # layer sets it from its ids (0 = padding); a layer that changes the time axis drops it.
            y = x
            for i, layer in enumerate(self.layers):
                try:
                    out = layer(y, train=train, mask=mask)
                    if isinstance(layer, Embedding):
                        mask = y != 0
                    elif mask is not None and (out.ndim < 3 or out.shape[:2] != y.shape[:2]):
                        mask = None
                    y = out
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
                    Activation=Activation, Flatten=Flatten, Sequence=Sequence, Conv=Conv, Pool=Pool,
                    GlobalAvgPool=GlobalAvgPool, Reshape=Reshape, Embedding=Embedding, Recurrent=Recurrent,
                    Attention=Attention, Transformer=Transformer, jnp=jnp)
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


def dropout_rates(net) -> dict:
    """The "hparams" collection of a built network: {'layers_5': {'rate': 0.2}, ...} for every
    dropout layer with a rate, nested as flax names the submodules of a Sequence."""
    import numpy as np

    Dropout = modules()["Dropout"]
    out = {}
    for i, layer in enumerate(getattr(net, "layers", ()) or ()):
        if isinstance(layer, Dropout):
            if layer.rate:
                out[f"layers_{i}"] = {"rate": np.float32(layer.rate)}
        else:
            inner = dropout_rates(layer)
            if inner:
                out[f"layers_{i}"] = inner
    return out


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


@dataclass(frozen=True)
class ConvOptions:
    features: int = opt(doc="output channels (filters)", gt=0)
    kernel: tuple[int, ...] = opt((3,), "kernel size: one number for every axis, or one per spatial axis")
    stride: tuple[int, ...] = opt((1,), "stride: one number, or one per spatial axis")
    padding: Literal["SAME", "VALID"] = opt("SAME", "SAME keeps the spatial size (at stride 1); VALID shrinks it")
    activation: Optional[str] = opt(None, "an activation applied to the output", choices=_activation_names)
    use_bias: bool = opt(True, "add a learned bias")

    def __post_init__(self):
        if any(k < 1 for k in self.kernel) or any(s < 1 for s in self.stride):
            raise ValueError(f"kernel and stride must be positive, got kernel {list(self.kernel)}, stride {list(self.stride)}")


@LAYERS.register("conv", ConvOptions, positional="features", params=True)
def conv(o: ConvOptions, ctx: BuildContext):
    """Convolution, 1-D over sequences [T, C] or 2-D over images [H, W, C] (chosen by the input's rank)."""
    return modules()["Conv"](features=o.features, kernel=o.kernel, stride=o.stride, padding=o.padding,
                             activation=o.activation, use_bias=o.use_bias, im2col=ctx.im2col)


@dataclass(frozen=True)
class PoolOptions:
    window: tuple[int, ...] = opt((2,), "window size: one number, or one per spatial axis")
    stride: Optional[tuple[int, ...]] = opt(None, "stride; default: the window")
    padding: Literal["SAME", "VALID"] = opt("VALID", "VALID drops a partial window at the edge")


@LAYERS.register("max_pool", PoolOptions, positional="window")
def max_pool(o: PoolOptions, ctx: BuildContext):
    """Maximum over each window (1-D or 2-D)."""
    return modules()["Pool"](kind="max", window=o.window, stride=o.stride, padding=o.padding)


@LAYERS.register("avg_pool", PoolOptions, positional="window")
def avg_pool(o: PoolOptions, ctx: BuildContext):
    """Average over each window (1-D or 2-D)."""
    return modules()["Pool"](kind="avg", window=o.window, stride=o.stride, padding=o.padding)


@LAYERS.register("global_avg_pool", NoOptions)
def global_avg_pool(o, ctx: BuildContext):
    """Average over all spatial axes (over the real time steps of padded token sequences)."""
    return modules()["GlobalAvgPool"]()


@dataclass(frozen=True)
class ReshapeOptions:
    shape: tuple[int, ...] = opt(doc="the new shape of each example; one entry may be -1")


@LAYERS.register("reshape", ReshapeOptions, positional="shape")
def reshape(o: ReshapeOptions, ctx: BuildContext):
    """Reshapes each example, e.g. [64] -> [8, 8, 1]."""
    return modules()["Reshape"](shape=o.shape)


@dataclass(frozen=True)
class EmbeddingOptions:
    features: int = opt(doc="size of each token's vector", gt=0)
    vocab_size: Optional[int] = opt(None, "number of token ids; default: the data's vocabulary", gt=0)
    positions: bool = opt(False, "add a learned embedding of each position (what attention needs to see order)")


@LAYERS.register("embedding", EmbeddingOptions, positional="features", params=True)
def embedding(o: EmbeddingOptions, ctx: BuildContext):
    """Token ids [T] -> vectors [T, features]; id 0 (padding) is masked in later layers."""
    vocab = o.vocab_size or ctx.vocab_size
    if not vocab:
        raise ValueError("embedding needs token data (a `tokenize` prep step) or vocab_size")
    return modules()["Embedding"](vocab_size=vocab, features=o.features, positions=o.positions)


@dataclass(frozen=True)
class RecurrentOptions:
    features: int = opt(doc="size of the hidden state", gt=0)
    return_sequences: bool = opt(False, "return the state at every step [T, features] instead of the last [features]")


def _recurrent(cell: str, doc: str) -> None:
    def build(o: RecurrentOptions, ctx: BuildContext):
        return modules()["Recurrent"](cell=cell, features=o.features, return_sequences=o.return_sequences)

    build.__doc__ = doc
    LAYERS.register(cell, RecurrentOptions, positional="features", params=True)(build)


_recurrent("lstm", "Long short-term memory over a sequence [T, C] (flax OptimizedLSTMCell); padding is skipped.")
_recurrent("gru", "Gated recurrent unit over a sequence [T, C] (flax GRUCell); padding is skipped.")
_recurrent("rnn", "A plain (Elman) recurrent layer over a sequence [T, C] (flax SimpleCell).")


@dataclass(frozen=True)
class AttentionOptions:
    heads: int = opt(4, "attention heads; the input's features must divide evenly", gt=0)
    dropout: float = opt(0.0, "dropout on the attention weights while training", ge=0.0, lt=1.0)


@LAYERS.register("attention", AttentionOptions, positional="heads", params=True)
def attention(o: AttentionOptions, ctx: BuildContext):
    """Multi-head self-attention over a sequence [T, C], padding masked (flax MultiHeadDotProductAttention)."""
    return modules()["Attention"](heads=o.heads, dropout=o.dropout)


@dataclass(frozen=True)
class TransformerOptions:
    heads: int = opt(4, "attention heads; the input's features must divide evenly", gt=0)
    mlp: Optional[int] = opt(None, "hidden units of the feed-forward part; default 4 x features", gt=0)
    dropout: float = opt(0.0, "dropout after attention and feed-forward while training", ge=0.0, lt=1.0)


@LAYERS.register("transformer", TransformerOptions, positional="heads", params=True)
def transformer(o: TransformerOptions, ctx: BuildContext):
    """A pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x)); keeps [T, C]."""
    return modules()["Transformer"](heads=o.heads, mlp=o.mlp, dropout=o.dropout)


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
