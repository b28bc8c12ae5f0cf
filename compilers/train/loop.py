"""The training loop: Python steps over epochs only (logging, early stopping, checkpoints)."""

from __future__ import annotations

import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from dsl.registry import METRICS
from compilers.memory import configure as configure_malloc, give_back
from compilers.runs.record import RunRecord


def _metrics_of(stats: dict, metrics: tuple[str, ...], prefix: str = "") -> dict:
    n = max(float(stats["n"]), 1e-12)
    row = {f"{prefix}loss": float(stats["loss"]) / n}
    for m in metrics:
        row[f"{prefix}{m}"] = METRICS.get(m).build(None)(stats)
    return row


_SCHEDULES: dict = {}


def _schedule_at(schedule, steps: np.ndarray) -> np.ndarray:
    """The learning rate at each step, in one compiled call (optax schedules are jnp functions:
    called on an array outside jit, each of their operations would compile on its own). The
    steps are padded to a power of two from 2048, so that a run's calls share one program."""
    import jax

    steps = np.asarray(steps, np.int64)
    n = max(2048, 1 << max(int(steps.size) - 1, 0).bit_length())
    padded = np.zeros(n, np.int32)
    padded[: steps.size] = steps
    fn = _SCHEDULES.get(id(schedule))
    if fn is None or fn[0] is not schedule:
        from compilers.train import stored

        fn = _SCHEDULES[id(schedule)] = (schedule, stored.Program(
            lambda s: jax.numpy.broadcast_to(schedule(s), s.shape), "schedule", stored.fingerprint("schedule", schedule)))
    return np.asarray(fn[1](padded), dtype=np.float64)[: steps.size].copy()


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


class Tracker:
    """One model's epoch-by-epoch bookkeeping: its history, best epoch, early stopping and divergence."""

    def __init__(self, plan, log=None):
        tp, es = plan.train, plan.spec.train.early_stopping
        self.plan, self.log = plan, log
        self.min_delta = es.min_delta if es is not None else 0.0
        self.restore_best = es.restore_best if es is not None else False
        self.history: list[dict] = []
        self.grad_norms: list[np.ndarray] = []
        self.best_value, self.best_epoch, self.since_best = None, None, 0
        self.last_finite = None
        self.diverged: str | None = None
        self.stopped_early = False
        self.interrupted = False    # Ctrl-C: stopped after this epoch, to be resumed
        self.preempted: int | None = None   # ... by a cluster job's preemption signal (its number)
        self.done = False
        self.has_best = False

    def observe(self, epoch: int, stats: dict, vstats: dict | None, lr: float, elapsed: float) -> bool:
        """Records one epoch; returns True when it is the best so far (its parameters are kept)."""
        tp = self.plan.train
        self.grad_norms.append(np.asarray(stats.pop("grad_norm")) / tp.steps_per_epoch)
        row = {"epoch": epoch, **_metrics_of(stats, tp.metrics)}
        if vstats is not None:
            row.update(_metrics_of(vstats, tp.metrics, "val_"))
        row["lr"] = lr
        row["time"] = round(elapsed, 4)
        self.history.append(row)
        if self.log is not None:
            self.log.epoch(row)
        if not math.isfinite(row["loss"]):
            where = (f"the last finite loss was {self.last_finite[1]:.4g} at epoch {self.last_finite[0]}"
                     if self.last_finite else "no epoch had a finite loss")
            self.diverged = (f"the training loss became {row['loss']} at epoch {epoch}; {where} "
                             f"(lower train.optimizer.lr, set train.optimizer.clip_norm, or scale the data)")
            self.done = True
            return False
        self.last_finite = (epoch, row["loss"])
        value = row.get(tp.monitor)
        improved = _improved(value, self.best_value, tp.mode, self.min_delta)
        if improved:
            self.best_value, self.best_epoch, self.since_best = value, epoch, 0
            self.has_best = self.restore_best
        else:
            self.since_best += 1
        if tp.patience is not None and self.since_best >= tp.patience:
            self.stopped_early = True
            self.done = True
        if epoch >= tp.epochs:
            self.done = True
        return improved and self.restore_best

    @property
    def row(self) -> dict:
        return self.history[-1]

    _SAVED = ("history", "best_value", "best_epoch", "since_best", "last_finite", "diverged", "stopped_early",
              "has_best")

    def to_meta(self) -> dict:
        """The bookkeeping a checkpoint keeps (plain JSON; gradient norms go with the arrays)."""
        return {k: getattr(self, k) for k in self._SAVED}

    def from_meta(self, meta: dict, grad_norms) -> None:
        for k in self._SAVED:
            setattr(self, k, meta[k])
        if self.last_finite is not None:
            self.last_finite = tuple(self.last_finite)
        self.grad_norms = [np.asarray(g) for g in grad_norms]
        self.done = bool(self.diverged or self.stopped_early or len(self.history) >= self.plan.train.epochs)


_TAKE = None


def _meta(tr: Tracker, probes: dict) -> dict:
    return {"tracker": tr.to_meta(), "probe_parts": sorted(probes)}


def _take(tree, i: int | None):
    """Member i of a vmapped pytree (the tree itself when nothing is vmapped), in one compiled call.
    When the group's members are spread over several devices, the member comes back through the
    host, uncommitted (as a single model's arrays are), so that any program can take it."""
    global _TAKE
    import jax

    if i is None:
        return tree
    if _TAKE is None:
        _TAKE = jax.jit(lambda t, i: jax.tree_util.tree_map(lambda a: a[i], t))
    out = _TAKE(tree, i)
    leaves = jax.tree_util.tree_leaves(out)
    if leaves and len(getattr(leaves[0], "devices", lambda: ())()) > 1:
        out = jax.device_put(jax.device_get(out))
    return out


def member_mesh(devices, members: int):
    """The 1-D mesh ("members") a vmapped group of `members` models is spread over: train.devices
    (`auto`: every device) or fewer, the most that divide the members evenly; None for one device,
    and in a run of several processes (there a group trains on each process's first device)."""
    import jax

    from compilers.train.step import device_count

    if jax.process_count() > 1:
        return None
    d = spread(device_count(devices), members)
    if d <= 1:
        return None
    from jax.sharding import Mesh

    return Mesh(np.array(jax.devices()[:d]), ("members",))


def spread(devices: int, members: int) -> int:
    """How many of `devices` a group of `members` models trains on: the most that divide it evenly."""
    n = max(1, min(devices, members))
    return max(k for k in range(1, n + 1) if members % k == 0)


def _put(mesh, tree, members: bool):
    """Host arrays -> device arrays: split over `mesh` on their leading (member) axis when `members`,
    else whole on each of its devices; on the default device when there is no mesh."""
    import jax

    if mesh is None:
        return jax.device_put(tree)
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("members") if members else PartitionSpec()))


EVAL_CHUNK_BATCHES = 16   # evaluation batches per transfer to the device (32,768 rows at most)


def _splits(data) -> list[str]:
    return [k for k in ("train", "val", "test") if k in data.x and data.x[k].shape[0] > 0]


def _eval_batch(data) -> int:
    """One evaluation batch size for every split: splits that fit one batch share one compiled evaluation."""
    from compilers.train.step import eval_batch_size

    return eval_batch_size(max([data.x[k].shape[0] for k in _splits(data)], default=1))


def _eval_chunks(x, y, batch: int, rows: int | None = None):
    """A split's host arrays as device chunks (x, y, w) [batches, batch, ...] of at most `rows` rows
    (default EVAL_CHUNK_BATCHES batches): a split that fits is one chunk, as it always was; a larger
    one is never padded or copied whole. Each chunk is sent while the one before is evaluated."""
    import jax

    from compilers.train import stored
    from compilers.train.step import pad_split

    rows = max(batch, (rows or EVAL_CHUNK_BATCHES * batch) // batch * batch)
    starts = range(0, x.shape[0], rows)
    if stored.compiling_only_now() and len(starts) > 2:   # the chunks' shapes: the first one's and the last one's
        starts = (starts[0], starts[-1])
    for a in starts:
        yield jax.device_put(pad_split(x[a:a + rows], y[a:a + rows], batch))


def _evaluate(fn, params, model_state, x, y, batch: int, *, outputs: bool = False, rows: int | None = None):
    """Summed statistics of a split (and its outputs [n, ...] on the host when `outputs`), chunk by chunk."""
    import jax

    total, outs = None, []
    for xyw in _eval_chunks(x, y, batch, rows):
        result = fn(params, model_state, *xyw)
        stats, out = result if outputs else (result, None)
        stats = jax.device_get(stats)
        total = stats if total is None else jax.tree_util.tree_map(np.add, total, stats)
        if outputs:
            outs.append(np.asarray(out))
    if not outputs:
        return total
    return total, np.concatenate(outs)[: x.shape[0]]


def _stack_hists(hists, n: int, member: int | None = None) -> np.ndarray:
    """The first n epochs' weight histograms [n, layers, bins] (of one member of a vmapped group), on
    the host: fetched at once and stacked by NumPy (`jnp.stack` of a hundred arrays traces and looks
    up a program of that many arguments, ~25 ms)."""
    import jax

    host = jax.device_get(list(hists[:n]))
    return np.stack(host if member is None else [h[member] for h in host])


class _ChunkFeed:
    """train.feed: chunks. Each epoch takes the same padded row order as the device feed
    (`step.epoch_order` of the model's seed and the epoch), gathers it on the host in
    chunks of whole minibatches, sends each chunk to the device while the previous one trains (the
    call is asynchronous), trains it with the same compiled steps in order, adds the chunks'
    statistics (sums) and evaluates the validation split, also in chunks, after the last one. The
    minibatches are exactly the device feed's, so the models are the same."""

    def __init__(self, programs, plan, data):
        import jax

        from compilers.train.step import batch_weights, eval_batch_size

        tp = plan.train
        self.programs, self.x, self.y = programs, data.x["train"], data.y["train"]
        self.val = (data.x["val"], data.y["val"]) if "val" in _splits(data) else None
        self.val_batch = eval_batch_size(self.val[0].shape[0]) if self.val is not None else 0   # as the device feed's
        self.steps_per_chunk = max(1, tp.chunk_rows // tp.batch_size)
        n = self.x.shape[0]
        self.weights = batch_weights(n, -(-n // tp.batch_size), tp.batch_size, np)   # every epoch's (0: padding)
        self.add = jax.jit(lambda a, b: jax.tree_util.tree_map(lambda u, v: u + v, a, b))

    def _put(self, idx, w):
        import jax

        from compilers.data.dataset import aligned_empty

        rows = idx.reshape(-1)
        xc = aligned_empty((rows.size, *self.x.shape[1:]), self.x.dtype)    # aligned: a CPU uses it in place
        np.take(self.x, rows, axis=0, out=xc, mode="clip")
        return jax.device_put((xc, self.y[rows], w))

    def epoch(self, state, idx):
        """idx: the epoch's rows [steps, batch] (`step.epoch_order`)."""
        import jax

        w = self.weights
        k = self.steps_per_chunk
        total, pending = None, self._put(idx[:k], w[:k])
        for a in range(0, idx.shape[0], k):
            xc, yc, wc = pending
            state, stats, _ = self.programs.train_epoch(state, xc, yc, None, None, weights=wc)
            del xc, yc, wc, pending
            if a + k < idx.shape[0]:     # gathered and sent while this chunk trains
                pending = self._put(idx[a + k:a + 2 * k], w[a + k:a + 2 * k])
            total = stats if total is None else self.add(total, stats)
            jax.block_until_ready(stats)   # at most two chunks alive: dispatch runs ahead otherwise
        vstats = None
        if self.val is not None:
            vstats = _evaluate(self.programs.evaluate, state.params, state.model_state, *self.val,
                               self.val_batch, rows=k * w.shape[1])
        return state, total, vstats


def train(plan, data, run_dir: Path, *, progress: bool = True, log=None, times: dict | None = None) -> RunRecord:
    """Trains the planned model on `data`, writing metrics.jsonl and checkpoints as it goes."""
    return train_group([plan], [data], [run_dir], progress=progress, logs=[log],
                       times=[times if times is not None else {}])[0]


class _Interrupt:
    """Ctrl-C during training asks the loop to stop after the epoch in hand (a checkpoint and the
    report of what was done are written); a second Ctrl-C stops at once. A cluster job's preemption
    signal does the same (compilers.runs.preemption)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.requested:
                    raise KeyboardInterrupt
                self.requested = True
                print("\nstopping after this epoch (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

            signal.signal(signal.SIGINT, handler)
        return self

    def now(self) -> tuple[bool, int | None]:
        """(stop after this epoch, the preemption signal if it came) as of now, the same in every
        process of a run of several (a signal reaches each at its own moment: any one's request
        stops them all, after the same epoch). Called once per epoch; a later signal counts next epoch."""
        from compilers.runs.preemption import came
        from compilers.train.distributed import process_count, process_max

        preempted = came()
        requested = self.requested or preempted is not None
        if process_count() > 1:
            any_requested, any_preempted = process_max(int(requested), preempted or 0)
            requested, preempted = bool(any_requested), any_preempted or None
        return requested, preempted

    def __exit__(self, *exc):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def train_group(plans: list, datas: list, run_dirs: list, *, progress: bool = True, logs=None,
                times: list[dict] | None = None, shared_data: bool | None = None,
                resume: bool = False, after_first_epoch=None, deferred_checkpoints: list | None = None,
                compile_only: bool = False) -> list[RunRecord]:
    """Trains models that share one compiled structure (plans that differ only in seed and optimizer
    values): one model as it is, several as ONE `jax.vmap`ped program, each with its own parameters,
    optimizer state, shuffles, early stopping and best epoch. Returns one RunRecord per plan.

    `resume` (one model): go on from the run directory's latest checkpoint, exactly where it was.
    `after_first_epoch`: called once the first epoch trained here (and its compilation) is done.
    `deferred_checkpoints`: a list, to which each record's final checkpoint is appended as a callable
    (writes it and waits for it) for the caller to run, e.g. while the charts are drawn.
    `compile_only`: the stored programs are compiled and not run (`stored.compiling_only`; their
    outputs are stand-ins), one epoch, no checkpoint (compilers.train.precompile)."""
    if compile_only:
        from compilers.train import stored

        with stored.compiling_only():
            return _train_group(plans, datas, run_dirs, progress=progress, logs=logs, times=times,
                                shared_data=shared_data, resume=False, after_first_epoch=None,
                                deferred_checkpoints=deferred_checkpoints, compile_only=True)
    return _train_group(plans, datas, run_dirs, progress=progress, logs=logs, times=times, shared_data=shared_data,
                        resume=resume, after_first_epoch=after_first_epoch,
                        deferred_checkpoints=deferred_checkpoints)


def _train_group(plans, datas, run_dirs, *, progress, logs, times, shared_data, resume, after_first_epoch,
                 deferred_checkpoints, compile_only: bool = False):
    import jax
    import jax.numpy as jnp

    from compilers.runs.checkpoint import Checkpoints, state_from_tree, state_tree
    from compilers.train import step as step_module
    from compilers.train.step import epoch_order, eval_batch_size, hyperparams, make_programs, pad_split

    # From here on, large buffers (XLA's for an epoch or an evaluation chunk) are mappings of their
    # own that leave the process when freed (not while loading: its NumPy temporaries, ~8 MiB each,
    # would each be mapped and faulted in anew, ~0.3 s on the big_data benchmark)
    configure_malloc()
    M = len(plans)
    logs = logs or [None] * M
    times = times or [{} for _ in range(M)]
    vm = M > 1
    if shared_data is None:
        shared_data = all(_same_data(datas[0], d) for d in datas[1:])
    plan0, tp = plans[0], plans[0].train
    t0 = time.perf_counter()
    programs = make_programs(plan0, members=M if vm else None, shared_data=shared_data)
    single = make_programs(plan0) if vm else programs   # final evaluation, one model at a time

    def stack(arrays):
        return np.stack(arrays) if vm and not shared_data else arrays[0]

    # A vmapped group on several devices (train.devices): its members are spread over them, each
    # device training M / d of the models (`member_mesh`); `put` places host arrays accordingly.
    members_on = member_mesh(plan0.spec.train.devices, M) if vm else None
    put = partial(_put, members_on)
    # the devices the run trains on (summary.json): a group's members', or one model's data-parallel mesh
    n_devices = ((members_on.devices.size if members_on is not None else 1) if vm
                 else step_module.device_count(plan0.spec.train.devices))
    data_per_member = vm and not shared_data
    # train.feed (planned in compilers/plan.py): the training split on the device once, or streamed in
    # chunks. A vmapped group, and a run of several processes, are always fed from the device.
    chunks = _ChunkFeed(programs, plan0, datas[0]) if tp.feed == "chunks" and not vm and jax.process_count() == 1 \
        else None
    train_xy = None if chunks else (put(stack([d.x["train"] for d in datas]), data_per_member),
                                    put(stack([d.y["train"] for d in datas]), data_per_member))
    has_val = "val" in datas[0].x and datas[0].x["val"].shape[0] > 0
    val = None
    if has_val and chunks is None:
        vb = eval_batch_size(datas[0].x["val"].shape[0])
        padded = [pad_split(d.x["val"], d.y["val"], vb) for d in datas]
        val = put(tuple(stack([p[j] for p in padded]) for j in range(3)), data_per_member)
    seeds = [p.spec.seed for p in plans]
    hps = [hyperparams(p) for p in plans]
    keys0 = np.asarray(seeds, np.int32) if vm else np.int32(seeds[0])   # init's seeds, as host arrays
    if vm:
        state = programs.init(put(keys0, True), put(jax.tree_util.tree_map(lambda *v: np.asarray(v), *hps), True))
    else:
        state = programs.init(keys0, hps[0])
    # each model's own learning rate at the end of each epoch, computed once
    ends = np.arange(1, tp.epochs + 1) * tp.steps_per_epoch - 1
    unit_lr = _schedule_at(programs.unit_schedule, ends)
    epoch_lr = [unit_lr * float(p.train.optimizer.options.lr) for p in plans]
    ckpts = [Checkpoints(d, p.spec.train.checkpoint.keep) for p, d in zip(plans, run_dirs)]
    trackers = [Tracker(p, lg) for p, lg in zip(plans, logs)]
    label = plan0.spec.name if not vm else f"{plan0.spec.name} x{M}"
    bar = _Progress(tp.epochs, label, tp.monitor, progress)
    copy = jax.jit(lambda t: jax.tree_util.tree_map(jnp.copy, t))
    select = jax.jit(lambda mask, new, old: jax.tree_util.tree_map(
        lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old))
    best = copy((state.params, state.model_state)) if vm and any(t.restore_best for t in trackers) else None
    best_single = None
    edges = programs.hist_edges(state.params)   # fixed bins of the weight histograms (initial weights)
    hists = []
    finals: list = [None] * M                    # (params, model_state, state) of models that stopped
    compile_s = 0.0
    start = 1

    def probe_arrays(i, n):
        out = {}
        if trackers[i].grad_norms and trackers[i].grad_norms[0].size:
            out["grad_norms"] = np.stack(trackers[i].grad_norms[:n]).astype(np.float32)
        if hists and programs.grad_layers:
            out["hists"] = _stack_hists(hists, n, i if vm else None)
            out["edges"] = _take(edges, i if vm else None)
        return out

    def best_of(i):
        if not trackers[i].has_best:
            return None
        return _take(best, i) if vm else best_single

    if resume:
        if vm:
            raise ValueError("resume trains one model")
        # In a run of several processes process 0 alone reads the checkpoint (the others have none)
        # and every process takes its values from it (`from_first`); in one process it is as it is.
        from compilers.train.distributed import from_first, is_primary

        latest = from_first(ckpts[0].latest())
        if latest is not None:
            meta = from_first(ckpts[0].restore_meta(latest) if is_primary() else None)
            k, parts = len(meta["tracker"]["history"]), meta["parts"]
            target = {"state": state_tree(state)}
            if "best" in parts:
                target["best"] = {"params": state.params, "model_state": state.model_state}
            if "probes" in parts:
                L, B = edges.shape[0], edges.shape[1] - 1
                target["probes"] = {key: value for key, value in (
                    ("grad_norms", np.zeros((k, L), np.float32)), ("hists", jnp.zeros((k, L, B), jnp.float32)),
                    ("edges", edges)) if key in meta.get("probe_parts", ())}
            tree = from_first(ckpts[0].restore_tree(latest, target) if is_primary() else target, arrays=True)
            state = state_from_tree(tree["state"], state)
            probes = tree.get("probes", {})
            trackers[0].from_meta(meta["tracker"], probes.get("grad_norms", np.zeros((k, 0), np.float32)))
            if "best" in tree:
                best_single = (tree["best"]["params"], tree["best"]["model_state"])
            if "hists" in probes:
                edges = probes["edges"]
                hists = [probes["hists"][j] for j in range(k)]
            start = k + 1
            print(f"{plan0.spec.name}: going on from the checkpoint of epoch {latest}", file=sys.stderr, flush=True)
            if trackers[0].done:
                finals[0] = state
    try:
        with _Interrupt() as interrupt:
            for epoch in range(start, tp.epochs + 1):
                if trackers[0].done and not vm:
                    break
                e0 = time.perf_counter()
                order = epoch_order(seeds if vm else seeds[0], epoch, plan0.sizes["train"], tp.batch_size)
                if members_on is not None:
                    order = put(order, True)
                if chunks is not None:
                    state, stats, vstats = chunks.epoch(state, order)
                else:
                    state, stats, vstats = programs.train_epoch(state, *train_xy, order, val)
                if step_module.PROBES:
                    hists.append(programs.weight_hist(state.params, edges))  # on the device, [(M,) layers, bins]
                stats, vstats = jax.device_get((stats, vstats))
                if epoch == start:
                    if epoch == 1:
                        compile_s = time.perf_counter() - e0  # first epoch: compilation + one epoch
                    give_back()   # what XLA's compiler freed (~100 MiB of small blocks) leaves the process
                    if after_first_epoch is not None:
                        after_first_epoch()
                improved = np.zeros(M, bool)
                for i, tr in enumerate(trackers):
                    if tr.done:
                        continue
                    s_i = stats if not vm else {k: v[i] for k, v in stats.items()}
                    v_i = vstats if not vm or vstats is None else {k: v[i] for k, v in vstats.items()}
                    improved[i] = tr.observe(epoch, dict(s_i), v_i, float(epoch_lr[i][epoch - 1]), time.perf_counter() - t0)
                if improved.any():
                    if vm:
                        best = select(jnp.asarray(improved), (state.params, state.model_state), best)
                    else:
                        best_single = copy((state.params, state.model_state))
                live = [i for i, tr in enumerate(trackers) if not tr.done]
                bar.update(epoch, trackers[live[0] if live else 0].row)
                if compile_only:   # every later epoch calls the same programs
                    break
                stop, preempted = interrupt.now()
                for i, tr in enumerate(trackers):
                    every = plans[i].spec.train.checkpoint.every
                    if (finals[i] is None and every and epoch % every == 0 and epoch < tp.epochs and not tr.done
                            and not stop):
                        ckpts[i].save(epoch, _take(state, i if vm else None), meta=_meta(tr, probe_arrays(i, epoch)),
                                      best=best_of(i), probes=probe_arrays(i, epoch))
                    if tr.done and finals[i] is None:
                        finals[i] = copy(_take(state, i)) if vm else state
                if stop and live:
                    for i, tr in enumerate(trackers):
                        if not tr.done:
                            tr.done, tr.interrupted, tr.preempted = True, True, preempted
                            finals[i] = copy(_take(state, i)) if vm else state
                            ckpts[i].save(epoch, finals[i], meta=_meta(tr, probe_arrays(i, epoch)), best=best_of(i),
                                          probes=probe_arrays(i, epoch))
                    break
                if not live:
                    break
    finally:
        bar.close()
    train_s = time.perf_counter() - t0
    train_xy = val = None   # the device's copies of the labels and the padded validation split
    records = []
    for i, (plan, data, tr) in enumerate(zip(plans, datas, trackers)):
        st = finals[i] if finals[i] is not None else _take(state, i if vm else None)
        params, ms = st.params, st.model_state
        if tr.has_best:
            params, ms = _take(best, i) if vm else best_single
        n = len(tr.history)
        member_hists = None
        if hists:
            member_hists = _stack_hists(hists, n, i if vm else None)
        times[i].update(compile_s=round(compile_s, 4), train_s=round(train_s, 4))
        if vm:
            times[i]["members"] = M
        records.append(_finish(plan, data, single, params, ms, tr, member_hists, _take(edges, i if vm else None),
                               times[i]))
        records[-1].summary["feed"] = ({"kind": "chunks", "chunk_rows": tp.chunk_rows} if chunks is not None
                                       else {"kind": "device"})
        records[-1].summary["devices"] = n_devices
        # The final checkpoint (also the parameters the run reports), after the final evaluation:
        # orbax is imported (~25 MiB) and the save's buffers held once the evaluation is done.
        def write_checkpoint(i=i, tr=tr, n=n, st=st, params=params, ms=ms):
            if not tr.interrupted:
                ckpts[i].save(n, st, meta=_meta(tr, probe_arrays(i, n)), best=best_of(i), probes=probe_arrays(i, n),
                              model=(params, ms))
            ckpts[i].close()

        if deferred_checkpoints is not None:
            deferred_checkpoints.append(write_checkpoint)
        else:
            write_checkpoint()
    return records


def _same_data(a, b) -> bool:
    for split in ("train", "val", "test"):
        xa, xb = a.x.get(split), b.x.get(split)
        if (xa is None) != (xb is None):
            return False
        if xa is not None and not (np.array_equal(xa, xb) and np.array_equal(a.y[split], b.y[split])):
            return False
    return True


def _finish(plan, data, programs, final_params, final_ms, tr: Tracker, hist_counts, edges, times: dict) -> RunRecord:
    """Final evaluation of every split with the final (or best) parameters, the probes, the record."""
    import jax

    from compilers.train.metrics import probabilities_np
    from compilers.train.probes import activation_summary, collect, data_sample, decision_grid

    spec, tp = plan.spec, plan.train
    e0 = time.perf_counter()
    dev, batch = _splits(data), _eval_batch(data)
    final, outputs = {}, {}
    for split in dev:
        stats, outputs[split] = _evaluate(programs.evaluate_predict, final_params, final_ms, data.x[split],
                                          data.y[split], batch, outputs=True)
        final[split] = _metrics_of(stats, tp.metrics)
    predictions = {}
    for split in ("test", "val"):
        if split not in dev:
            continue
        out = outputs[split]
        entry = {"y_true": np.asarray(data.y[split])}
        if plan.task == "classification":
            proba = probabilities_np(out, tp.binary_logit)
            entry.update(y_pred=proba.argmax(-1).astype(np.int32), proba=proba.astype(np.float32))
        else:
            entry["y_pred"] = np.asarray(out[..., 0], dtype=np.float32)
        predictions[split] = entry
    hist_counts, hist_edges = jax.device_get((hist_counts, edges)) if hist_counts is not None else (None, None)
    weight_histograms = {} if hist_counts is None else {
        layer: {"counts": np.asarray(hist_counts[:, i]), "edges": np.asarray(hist_edges[i])}
        for i, layer in enumerate(programs.grad_layers)}
    gradients = {layer: np.asarray([g[i] for g in tr.grad_norms]) for i, layer in enumerate(programs.grad_layers)
                 if tr.grad_norms and tr.grad_norms[0].size}
    probe_split = next(s for s in ("val", "test", "train") if s in dev)
    activations = activation_summary(plan.model.net, final_params, final_ms, data.x[probe_split],
                                     np.ones(data.x[probe_split].shape[0]))
    probes = collect(plan, final_params, final_ms, data)
    grid = decision_grid(plan, final_params, final_ms, data)
    give_back()   # the evaluation programs' compilation
    times.update(eval_s=round(time.perf_counter() - e0, 4))

    history = tr.history
    total_steps = len(history) * tp.steps_per_epoch
    steps = np.unique(np.linspace(0, max(total_steps - 1, 0), num=min(total_steps, 2000)).astype(np.int64))
    lrs = _schedule_at(programs.unit_schedule, steps) * float(tp.optimizer.options.lr)
    record = RunRecord(
        name=spec.name, task=plan.task, history=history,
        layers=plan.model.rows, class_names=data.class_names, feature_names=list(data.feature_names),
        predictions=predictions, weights=_layer_weights(jax.device_get(final_params)),
        lr_curve={"step": steps, "epoch": steps / tp.steps_per_epoch, "lr": lrs},
        data={"source": data.description, "n_rows": int(sum(plan.sizes.values())),
              "n_features": len(data.feature_names), "input_shape": list(plan.input_shape),
              "splits": dict(plan.sizes), "target": data.target},
        monitor=tp.monitor, best_epoch=tr.best_epoch, activations=activations,
        examples=probes["examples"], feature_maps=probes["feature_maps"], attention=probes["attention"],
        embedding=probes.get("embedding", {}), embedding_layer=probes.get("embedding_layer"),
        vocabulary=getattr(data, "vocabulary", None), data_sample=data_sample(data), decision_grid=grid,
        gradients=gradients, weight_histograms=weight_histograms,
    )
    record.summary = {"metrics": final, "best_epoch": tr.best_epoch, "best_value": tr.best_value,
                      "monitor": tp.monitor, "epochs_run": len(history), "stopped_early": tr.stopped_early,
                      "restored_best": tr.has_best}
    if tr.diverged:
        record.summary.update(status="failed", reason=tr.diverged)
    elif tr.preempted:
        import signal

        name = signal.Signals(tr.preempted).name
        record.summary.update(status="interrupted", preempted=name,
                              reason=f"preempted ({name}) after epoch {len(history)} of {tp.epochs}; a checkpoint "
                                     f"of that epoch was written, from which the job goes on when it is requeued")
    elif tr.interrupted:
        record.summary.update(status="interrupted",
                              reason=f"interrupted (Ctrl-C) after epoch {len(history)} of {tp.epochs}; "
                                     f"a checkpoint of that epoch was written")
    return record
