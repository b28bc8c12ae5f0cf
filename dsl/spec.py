"""The parsed spec: frozen dataclasses. Nothing past `dsl/parse.py` sees YAML or a DictConfig.

Fields carry their defaults, one-line docs and ranges (`opt`); the defaults Hydra composes beneath
a spec and the reference docs are generated from these classes and the registries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from dsl.registry import opt

TASKS = ("classification", "regression")
MAX_SEED = 2**32 - 1   # what NumPy, scikit-learn and JAX (32-bit) all take


@dataclass(frozen=True)
class Item:
    """One registered kind with its parsed options, e.g. a layer, a prep step, a chart."""

    kind: str
    options: Any
    path: str = field(default="", compare=False)  # where the spec says it (for errors), not what it means

    def __getattr__(self, name: str) -> Any:
        # Options read as attributes of the item: item.features, item.rate, ...
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, "options"), name)


@dataclass(frozen=True)
class Split:
    """How rows are divided into train, validation and test sets."""

    test: float = opt(0.2, "fraction of rows held out for the test set", ge=0.0, lt=1.0)
    val: float = opt(0.1, "fraction of rows held out for validation", ge=0.0, lt=1.0)
    stratify: bool = opt(True, "keep class proportions in every split (classification)")
    seed: Optional[int] = opt(None, "seed of the split; default: the top-level seed", ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class Data:
    """Where the data comes from and how it is prepared."""

    source: Item = opt(None, "a built-in data set name, or a path: .csv, .parquet, .npz, or a folder of images (one sub-folder per class)")
    target: Optional[str] = opt(None, "target column; built-in data sets know theirs")
    features: Optional[tuple[str, ...]] = opt(None, "columns to use; default: all but the target")
    shape: Optional[tuple[int, ...]] = opt(None, "reshape each example, e.g. [8, 8, 1]")
    prep: tuple[Item, ...] = opt((), "ordered preparation steps, fitted on the training split")
    split: Split = opt(default_factory=Split, doc="train/validation/test split")


@dataclass(frozen=True)
class Model:
    """The network: a sequence of layers, and the output head."""

    layers: tuple[Item, ...] = opt((), "a sequence of layers: `kind`, `kind: arg` or `kind: {options}`")
    head: Literal["auto", "none"] = opt(
        "auto", "auto: append the output layer the task needs; none: the last layer is the output")


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the monitored value has not improved for `patience` epochs."""

    monitor: str = opt("val_loss", "history key to watch, e.g. val_loss or val_accuracy")
    patience: Optional[int] = opt(None, "epochs without improvement before stopping; null: never stop", ge=1)
    mode: Literal["auto", "min", "max"] = opt("auto", "auto: min for losses and errors, max otherwise")
    min_delta: float = opt(0.0, "smallest change that counts as an improvement", ge=0.0)
    restore_best: bool = opt(True, "end with the parameters of the best epoch")


@dataclass(frozen=True)
class Checkpoint:
    """Orbax checkpoints of the training state."""

    every: int = opt(0, "save every N epochs; 0: only the final state", ge=0)
    keep: int = opt(1, "how many checkpoints to keep", ge=1)


@dataclass(frozen=True)
class Train:
    """How the model is trained."""

    epochs: int = opt(10, "passes over the training split", ge=1, le=1_000_000)
    batch_size: int = opt(32, "examples per step", ge=1)
    loss: str = opt("auto", "auto: cross_entropy for classification, mse for regression")
    optimizer: Item = opt(None, "optax optimizer: {name, lr, clip_norm, and the optimizer's own options}")
    schedule: Item = opt(None, "learning-rate schedule: {name, warmup_epochs, and its own options}")
    metrics: Any = opt("auto", "metric names, or auto (accuracy for classification, r2 and mae for regression)")
    early_stopping: Optional[EarlyStopping] = opt(default_factory=EarlyStopping, doc="stop when the monitored value stalls")
    checkpoint: Checkpoint = opt(default_factory=Checkpoint, doc="orbax checkpoints")
    feed: Literal["auto", "device", "chunks"] = opt(
        "auto", "device: the training split is put on the device once; chunks: each epoch's shuffled rows go "
                "to the device chunk by chunk (data larger than its memory); auto: chunks when the split's "
                "x and y exceed half the device's memory")
    chunk_rows: Optional[int] = opt(
        None, "rows per chunk with feed: chunks, a multiple of batch_size; null: about 32 MiB of rows "
              "(at most a sixteenth of the device's memory)", ge=1)
    devices: Any = opt("auto", "auto or a count of devices (data-parallel)")
    precision: Literal["float32", "bfloat16"] = opt("float32", "compute precision")
    loop: Literal["auto", "scan", "step"] = opt(
        "auto", "scan (and auto): one jitted call per epoch, convolutions as im2col matrix products on a CPU; "
                "step: one jitted call per minibatch")


@dataclass(frozen=True)
class Report:
    """What a run writes besides its report.html."""

    images: Literal["auto", "png", "svg", "both", "none"] = opt(
        "auto", "image files beside each chart's .vl.json: auto = png for a single run, none for the jobs of "
        "a sweep (their reports draw every chart and download PNG/SVG in the browser; "
        "`python -m dsl plot RUN_DIR` writes the files later)")


@dataclass(frozen=True)
class Spec:
    """A whole experiment."""

    name: str = opt("run", "name of the run; outputs go to outputs/<name>/<date>_<time>/")
    seed: int = opt(0, "seed of initialisation, shuffling and the split", ge=0, le=MAX_SEED)
    task: Optional[Literal["classification", "regression"]] = opt(None, "inferred from the target when omitted")
    vars: dict = opt(default_factory=dict, doc="free user variables, referenced as ${vars.name}; sweepable")
    data: Data = opt(default_factory=Data, doc="the data")
    model: Model = opt(default_factory=Model, doc="the network")
    train: Train = opt(default_factory=Train, doc="training")
    objective: Optional[str] = opt(
        None, "the final metric a run returns to a Hydra sweeper (optuna), named as in metrics.jsonl "
              "(val_accuracy, test_loss; a bare name is the training split); default: the early-stopping monitor")
    plots: Any = opt("auto", "auto, or a list of chart kinds with options")
    report: Report = opt(default_factory=Report, doc="what a run writes besides report.html")
    file: Optional[str] = field(default=None, compare=False)


# Base options shared by every entry of a family; an entry's options dataclass subclasses one.

@dataclass(frozen=True)
class OptimizerOptions:
    lr: float = opt(1e-3, "peak learning rate", gt=0.0)
    clip_norm: Optional[float] = opt(None, "clip gradients to this global norm", gt=0.0)


@dataclass(frozen=True)
class ScheduleOptions:
    warmup_epochs: float = opt(0.0, "linear warm-up from 0 to lr over this many epochs", ge=0.0)


@dataclass(frozen=True)
class ChartOptions:
    title: Optional[str] = opt(None, "chart title")
    width: Optional[int] = opt(None, "width in pixels", gt=0, le=10_000)
    height: Optional[int] = opt(None, "height in pixels", gt=0, le=10_000)
