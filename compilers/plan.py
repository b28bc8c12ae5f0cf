"""Spec + data description -> Plan: what will be built and run. No arrays, no I/O."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dsl.errors import SpecError
from dsl.registry import CHARTS, LOSSES, METRICS
from dsl.spec import Item, Spec
from compilers.model.build import ModelPlan, build_model
from compilers.train.losses import default_loss
from compilers.train.metrics import default_metrics, metric_mode


MAX_STEPS = 2**31 - 1   # optax counts steps in int32


@dataclass
class TrainPlan:
    epochs: int
    batch_size: int
    steps_per_epoch: int
    loss: Item
    metrics: tuple[str, ...]
    binary_logit: bool
    monitor: str                 # history key that picks the best epoch
    mode: str                    # "min" | "max"
    patience: int | None
    loop: str                    # "scan" | "step"
    optimizer: Item
    schedule: Item
    with_hist: bool              # score histograms needed (auc)
    feed: str = "device"         # "device": the training split on the device | "chunks": streamed (see _choose_feed)
    chunk_rows: int = 0          # rows per chunk (a multiple of batch_size) when feed is "chunks"


@dataclass
class Plan:
    spec: Spec
    task: str
    n_classes: int
    input_shape: tuple[int, ...]
    sizes: dict[str, int]
    model: ModelPlan
    train: TrainPlan
    charts: tuple[Item, ...]


def _choose_loop(requested: str, spec: Spec) -> tuple[str, bool]:
    """(loop, im2col): scan over minibatches in one jitted call per epoch by default.

    XLA:CPU runs real convolutions inside scan or vmap ~15x slower (jax#12868), so on the CPU a
    scanned loop computes convolutions as matrix products over patches (im2col), which runs
    at full speed there (benchmarks/train_speed.py); `loop: step` keeps the real convolution,
    one jitted call per minibatch. GPU/TPU scan real convolutions.
    """
    loop = "scan" if requested == "auto" else requested
    if loop != "scan":
        return loop, False
    import jax

    kinds = set()

    def walk(items):
        for it in items:
            kinds.add(it.kind)
            if it.kind in ("residual", "repeat"):
                walk(it.options.layers)

    walk(spec.model.layers)
    return loop, jax.default_backend() == "cpu" and "conv" in kinds


FEED_FRACTION = 0.5   # feed: auto streams chunks when the training split needs more than this share of the device
CHUNK_BYTES = 32 << 20  # chunk_rows: null gives chunks of about this size (larger ones only cost memory),
CHUNK_SHARE = 8         # or of 1/CHUNK_SHARE of that share of the device where that is smaller (two are in flight)


def _choose_feed(t, n_train: int, batch: int, steps: int, input_shape, input_dtype: str) -> tuple[str, int]:
    """(feed, chunk_rows). `auto` keeps the training split on the device unless its x and y need more
    than FEED_FRACTION of the device's memory (`build.device_memory`: an accelerator's limit, the
    machine's RAM on a CPU, or DSL_DEVICE_MEMORY_BYTES); then each epoch streams it in chunks.
    A chunk holds whole minibatches; by default about CHUNK_BYTES (less on a device whose memory is
    small: FEED_FRACTION / CHUNK_SHARE of it), enough that sending it costs little next to training it."""
    import math

    import numpy as np

    from compilers.model.build import device_memory

    row_bytes = math.prod(input_shape) * np.dtype(input_dtype).itemsize + 4      # x + y (float32 or int32)
    budget = device_memory()
    feed = t.feed
    if feed == "auto":
        feed = "chunks" if budget is not None and n_train * row_bytes > FEED_FRACTION * budget else "device"
    if feed == "device":
        return "device", 0
    if t.chunk_rows is None:
        share = min(CHUNK_BYTES, (budget if budget is not None else 2**40) * FEED_FRACTION / CHUNK_SHARE)
        rows = max(1, int(share // (row_bytes * batch))) * batch
    else:
        rows = t.chunk_rows
        if rows % batch and rows < steps * batch:     # (a chunk holding every row is the whole epoch)
            lower, upper = rows // batch * batch, -(-rows // batch) * batch
            sizes = f"{lower} or {upper}" if lower else f"{upper}"
            raise SpecError("train.chunk_rows", f"{rows} rows per chunk is not a whole number of minibatches "
                                                f"of {batch} (train.batch_size); use {sizes}")
    return "chunks", min(rows, steps * batch)


def _check_steps(t, steps: int) -> None:
    """What is counted in epochs (training, warm-up, decay) must fit the step counter."""
    if t.epochs * steps > MAX_STEPS:
        raise SpecError("train.epochs", f"{t.epochs:,} epochs of {steps:,} steps are more steps than a run "
                                        f"can count ({MAX_STEPS:,}); use fewer epochs or a larger batch_size")
    for f in dataclasses.fields(t.schedule.options):
        value = getattr(t.schedule.options, f.name)
        if f.name.endswith("_epochs") and isinstance(value, (int, float)) and value * steps > MAX_STEPS:
            raise SpecError("train.schedule", f"{f.name} {value:g} is more steps than a run can count "
                                              f"({MAX_STEPS:,} at {steps:,} steps per epoch)")


def compile_spec(spec: Spec, task: str, n_classes: int, input_shape: tuple[int, ...],
                 sizes: dict[str, int], input_dtype: str = "float32", vocab_size: int | None = None,
                 model: ModelPlan | None = None) -> Plan:
    """Checks that the pieces fit together and plans the model, training and charts."""
    t = spec.train
    loss_name = default_loss(task) if t.loss == "auto" else t.loss
    loss_entry = LOSSES.get(loss_name, "train.loss")
    if task not in loss_entry.meta.get("tasks", (task,)):
        raise SpecError("train.loss", f"'{loss_name}' is a {loss_entry.meta['tasks'][0]} loss; this task is "
                        f"{task} (use auto, or one of: {', '.join(e.name for e in LOSSES if task in e.meta['tasks'])})")
    binary_logit = bool(loss_entry.meta.get("binary_logit"))
    if binary_logit and n_classes != 2:
        raise SpecError("train.loss", f"binary_cross_entropy needs exactly 2 classes, the target has {n_classes}; "
                        "use cross_entropy")
    metrics = default_metrics(task) if t.metrics == "auto" else t.metrics
    for i, m in enumerate(metrics):
        tasks = METRICS.get(m).meta.get("tasks", (task,))
        if task not in tasks:
            ok = [e.name for e in METRICS if task in e.meta.get("tasks", ())]
            raise SpecError(f"train.metrics[{i}]", f"'{m}' is a {tasks[0]} metric; this task is {task} "
                            f"(choose from {', '.join(ok)})")
    has_val = sizes.get("val", 0) > 0
    keys = ["loss", *metrics]
    available = keys + ([f"val_{k}" for k in keys] if has_val else [])
    es = t.early_stopping
    monitor = es.monitor if es is not None else "val_loss"
    if monitor not in available:
        if es is not None and es.patience is not None:
            hint = "" if has_val else " (there is no validation split: set data.split.val > 0)"
            raise SpecError("train.early_stopping.monitor",
                            f"'{monitor}' is not recorded{hint}; choose from {', '.join(available)}")
        monitor = "val_loss" if has_val else "loss"
    mode = es.mode if es is not None and es.mode != "auto" else metric_mode(monitor)
    if spec.objective is not None:
        recorded = [f"{p}{k}" for p, split in (("", "train"), ("train_", "train"), ("val_", "val"), ("test_", "test"))
                    if sizes.get(split, 0) > 0 for k in keys]
        if spec.objective not in recorded:
            raise SpecError("objective", f"'{spec.objective}' is not recorded by this run; choose from "
                                         f"{', '.join(k for k in recorded if not k.startswith('train_'))}")
    n_train = sizes["train"]
    batch = min(t.batch_size, n_train)
    if t.devices != "auto":
        import jax

        have = len(jax.devices())   # those of all processes when the run is several
        if t.devices > have:
            where = "this machine has" if jax.process_count() == 1 else f"the {jax.process_count()} processes have"
            raise SpecError("train.devices", f"{t.devices} devices asked for; {where} {have} "
                                             f"({jax.default_backend()}): use auto or at most {have}")
        if jax.process_count() > 1 and 1 < t.devices < have:
            raise SpecError("train.devices", f"{t.devices} devices asked for; a run of {jax.process_count()} "
                                             f"processes trains on all {have} of their devices: use auto or {have}")
        if batch % t.devices:
            raise SpecError("train.batch_size", f"{batch} rows per step cannot be split evenly over "
                                                f"{t.devices} devices (train.devices); use a multiple of {t.devices}")
    steps = -(-n_train // batch)
    _check_steps(t, steps)
    loop, im2col = _choose_loop(t.loop, spec)
    if model is None:  # given when models that share one structure are planned together
        model = build_model(spec.model, input_shape, task, n_classes, binary_logit, input_dtype, vocab_size,
                            im2col=im2col)
    train = TrainPlan(epochs=t.epochs, batch_size=batch, steps_per_epoch=steps, loss=Item(loss_name, loss_entry.options(), "train.loss"),
                      metrics=tuple(metrics), binary_logit=binary_logit, monitor=monitor, mode=mode,
                      patience=es.patience if es is not None else None, loop=loop,
                      optimizer=t.optimizer, schedule=t.schedule,
                      with_hist=any(METRICS.get(m).meta.get("needs_hist") for m in metrics))
    train.feed, train.chunk_rows = _choose_feed(t, n_train, batch, steps, input_shape, input_dtype)
    from compilers.charts import plot_items

    charts = plot_items(spec.plots, task, input_shape, input_dtype)
    return Plan(spec=spec, task=task, n_classes=n_classes, input_shape=tuple(input_shape), sizes=dict(sizes),
                model=model, train=train, charts=charts)
