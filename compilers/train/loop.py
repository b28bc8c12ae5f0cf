"""The training loop: Python steps over epochs only (logging, early stopping, checkpoints)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from dsl.registry import METRICS
from compilers.runs.record import RunRecord


def _metrics_of(stats: dict, metrics: tuple[str, ...], prefix: str = "") -> dict:
    n = max(float(stats["n"]), 1e-12)
    row = {f"{prefix}loss": float(stats["loss"]) / n}
    for m in metrics:
        row[f"{prefix}{m}"] = METRICS.get(m).build(None)(stats)
    return row


def _schedule_at(schedule, steps: np.ndarray) -> np.ndarray:
    """The learning rate at each step, in one vectorised call (constant schedules return a scalar)."""
    return np.broadcast_to(np.asarray(schedule(steps), dtype=np.float64), steps.shape).copy()


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _layer_weights(params) -> dict[str, dict[str, np.ndarray]]:
    """{'0': {'kernel': ..}, '4.1': {...}} from the nested `layers_i` parameter tree."""
    out: dict[str, dict[str, np.ndarray]] = {}

    def walk(tree, prefix):
        leaves = {}
        for k, v in tree.items():
            if isinstance(v, dict):
                if k.startswith("layers_"):
                    walk(v, prefix + k[len("layers_"):] + ".")
                else:  # a wrapped flax submodule (e.g. Dropout's): fold into this layer
                    walk({**v}, prefix)
            else:
                leaves[k] = np.asarray(v)
        if leaves and prefix:
            out.setdefault(prefix[:-1], {}).update(leaves)

    walk(params, "")
    return out


class _Progress:
    """A rich progress bar on a terminal; one line per ~10% of epochs otherwise."""

    def __init__(self, epochs: int, name: str, monitor: str, enabled: bool):
        self.epochs, self.monitor, self.enabled = epochs, monitor, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.bar = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False)
            self.task = self.bar.add_task(name, total=epochs, info="")
            self.bar.start()

    def update(self, epoch: int, row: dict) -> None:
        info = f"loss {row['loss']:.4f}"
        if self.monitor in row and self.monitor != "loss":
            v = row[self.monitor]
            info += f"  {self.monitor} {v:.4f}" if v is not None and math.isfinite(v) else f"  {self.monitor} nan"
        if self.bar is not None:
            self.bar.update(self.task, completed=epoch, info=info)
        elif self.enabled and (epoch == 1 or epoch == self.epochs or epoch % max(1, self.epochs // 10) == 0):
            print(f"epoch {epoch}/{self.epochs}  {info}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(plan, data, run_dir: Path, *, progress: bool = True, log=None, times: dict | None = None) -> RunRecord:
    """Trains the planned model on `data`, writing metrics.jsonl and checkpoints as it goes."""
    import jax
    import jax.numpy as jnp

    from compilers.runs.checkpoint import Checkpoints
    from compilers.train.metrics import probabilities
    from compilers.train import step as step_module
    from compilers.train.step import eval_batch_size, make_programs, pad_split

    times = times if times is not None else {}
    spec, tp = plan.spec, plan.train
    t0 = time.perf_counter()
    programs = make_programs(plan)
    splits = [k for k in ("train", "val", "test") if k in data.x and data.x[k].shape[0] > 0]
    train_xy = (jax.device_put(data.x["train"]), jax.device_put(data.y["train"]))
    dev = {k: jax.device_put(pad_split(data.x[k], data.y[k], eval_batch_size(data.x[k].shape[0]))) for k in splits}
    # learning rate at the end of each epoch, computed once
    epoch_lr = _schedule_at(programs.schedule, np.arange(1, tp.epochs + 1) * tp.steps_per_epoch - 1)
    state = programs.init(spec.seed)
    base_key = jax.random.key(spec.seed)
    ckpt = Checkpoints(run_dir, spec.train.checkpoint.keep)
    has_val = "val" in dev
    es = spec.train.early_stopping
    min_delta = es.min_delta if es is not None else 0.0
    restore_best = es.restore_best if es is not None else False
    history: list[dict] = []
    best_value, best_epoch, best_state, since_best = None, None, None, 0
    bar = _Progress(tp.epochs, spec.name, tp.monitor, progress)
    copy = jax.jit(lambda t: jax.tree_util.tree_map(jnp.copy, t))
    edges = programs.hist_edges(state.params)   # fixed bins of the weight histograms (initial weights)
    hists, grad_norms = [], []
    compile_s = 0.0
    stopped_early = False
    diverged = None
    last_finite = None
    try:
        for epoch in range(1, tp.epochs + 1):
            e0 = time.perf_counter()
            key = jax.random.fold_in(base_key, epoch)
            state, stats, vstats = programs.train_epoch(state, *train_xy, key, dev.get("val"))
            if step_module.PROBES:
                hists.append(programs.weight_hist(state.params, edges))  # on the device, [layers, bins]
            stats, vstats = jax.device_get((stats, vstats))
            grad_norms.append(np.asarray(stats.pop("grad_norm")) / tp.steps_per_epoch)
            row = {"epoch": epoch, **_metrics_of(stats, tp.metrics)}
            if vstats is not None:
                row.update(_metrics_of(vstats, tp.metrics, "val_"))
            row["lr"] = float(epoch_lr[epoch - 1])
            row["time"] = round(time.perf_counter() - t0, 4)
            if epoch == 1:
                compile_s = time.perf_counter() - e0  # first epoch: compilation + one epoch
            history.append(row)
            if log is not None:
                log.epoch(row)
            bar.update(epoch, row)
            if not math.isfinite(row["loss"]):
                where = (f"the last finite loss was {last_finite[1]:.4g} at epoch {last_finite[0]}"
                         if last_finite else "no epoch had a finite loss")
                diverged = (f"the training loss became {row['loss']} at epoch {epoch}; {where} "
                            f"(lower train.optimizer.lr, set train.optimizer.clip_norm, or scale the data)")
                break
            last_finite = (epoch, row["loss"])
            value = row.get(tp.monitor)
            if _improved(value, best_value, tp.mode, min_delta):
                best_value, best_epoch, since_best = value, epoch, 0
                if restore_best:
                    best_state = copy((state.params, state.model_state))
            else:
                since_best += 1
            every = spec.train.checkpoint.every
            if every and epoch % every == 0 and epoch < tp.epochs:
                ckpt.save(epoch, state)
            if tp.patience is not None and since_best >= tp.patience:
                stopped_early = True
                break
    finally:
        bar.close()
    train_s = time.perf_counter() - t0
    ckpt.save(len(history), state)
    final_params, final_ms = state.params, state.model_state
    if restore_best and best_state is not None:
        final_params, final_ms = best_state

    # Final evaluation of every split with the final (or best) parameters.
    e0 = time.perf_counter()
    final, outputs = {}, {}
    for split, xyw in dev.items():
        stats, out = jax.device_get(programs.evaluate_predict(final_params, final_ms, *xyw))
        final[split] = _metrics_of(stats, tp.metrics)
        outputs[split] = np.asarray(out)[: data.x[split].shape[0]]
    predictions = {}
    for split in ("test", "val"):
        if split not in dev:
            continue
        out = outputs[split]
        entry = {"y_true": np.asarray(data.y[split])}
        if plan.task == "classification":
            proba = np.asarray(probabilities(out, tp.binary_logit))
            entry.update(y_pred=proba.argmax(-1).astype(np.int32), proba=proba.astype(np.float32))
        else:
            entry["y_pred"] = np.asarray(out[..., 0], dtype=np.float32)
        predictions[split] = entry
    hist_counts, hist_edges = jax.device_get((jnp.stack(hists), edges)) if hists else (None, None)
    weight_histograms = {} if hist_counts is None else {
        layer: {"counts": np.asarray(hist_counts[:, i]), "edges": np.asarray(hist_edges[i])}
        for i, layer in enumerate(programs.grad_layers)}
    gradients = {layer: np.asarray([g[i] for g in grad_norms]) for i, layer in enumerate(programs.grad_layers)}
    probe_split = next(s for s in ("val", "test", "train") if s in dev)
    from compilers.train.probes import activation_summary

    activations = activation_summary(plan.model.net, final_params, final_ms, data.x[probe_split],
                                     np.ones(data.x[probe_split].shape[0]))
    from compilers.train.probes import collect, data_sample, decision_grid

    probes = collect(plan, final_params, final_ms, data)
    grid = decision_grid(plan, final_params, final_ms, data)
    times.update(compile_s=round(compile_s, 4), train_s=round(train_s, 4),
                 eval_s=round(time.perf_counter() - e0, 4))

    total_steps = len(history) * tp.steps_per_epoch
    steps = np.unique(np.linspace(0, max(total_steps - 1, 0), num=min(total_steps, 2000)).astype(np.int64))
    lrs = _schedule_at(programs.schedule, steps)
    ckpt.close()
    record = RunRecord(
        name=spec.name, task=plan.task, history=history,
        layers=plan.model.rows, class_names=data.class_names, feature_names=list(data.feature_names),
        predictions=predictions, weights=_layer_weights(jax.device_get(final_params)),
        lr_curve={"step": steps, "epoch": steps / tp.steps_per_epoch, "lr": lrs},
        data={"source": data.description, "n_rows": int(sum(plan.sizes.values())),
              "n_features": len(data.feature_names), "input_shape": list(plan.input_shape),
              "splits": dict(plan.sizes), "target": data.target},
        monitor=tp.monitor, best_epoch=best_epoch, activations=activations,
        examples=probes["examples"], feature_maps=probes["feature_maps"], attention=probes["attention"],
        embedding=probes.get("embedding", {}), embedding_layer=probes.get("embedding_layer"),
        vocabulary=getattr(data, "vocabulary", None), data_sample=data_sample(data), decision_grid=grid,
        gradients=gradients, weight_histograms=weight_histograms,
    )
    record.summary = {"metrics": final, "best_epoch": best_epoch, "best_value": best_value,
                      "monitor": tp.monitor, "epochs_run": len(history), "stopped_early": stopped_early,
                      "restored_best": bool(restore_best and best_state is not None)}
    if diverged:
        record.summary.update(status="failed", reason=diverged)
    return record
