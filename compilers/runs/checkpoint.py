"""Orbax checkpoints of a run, under RUN_DIR/checkpoints/<epoch>/.

A checkpoint holds everything training needs to go on exactly where it stopped:

  tree/state    params, model_state, opt_state (with the optimizer's traced values), step, rng
  tree/best     the best epoch's params and model_state (when early stopping restores them)
  tree/probes   per-epoch gradient norms and weight histograms so far, and the histogram bins
  tree/model    (the final checkpoint) the parameters the run reports: the best epoch's or the last
  meta          the loop's bookkeeping (epoch, best value and epoch, epochs since the best, ...)

The data split is not stored: it is rebuilt from the spec and its seed, which give the same rows.
Orbax writes each checkpoint to a temporary directory and renames it when complete, so a process
killed mid-save leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def state_tree(state) -> dict:
    import jax

    return {"params": state.params, "model_state": state.model_state, "opt_state": state.opt_state,
            "step": state.step, "rng": jax.random.key_data(state.rng)}


def state_from_tree(tree: dict, like):
    """A TrainState from a restored tree (the rng comes back as raw key data)."""
    import jax

    return like.replace(params=tree["params"], model_state=tree["model_state"], opt_state=tree["opt_state"],
                        step=tree["step"], rng=jax.random.wrap_key_data(tree["rng"]))


class _NoCheckpoints:
    """The checkpoint manager of a process that is not process 0 of a run of several: it writes
    nothing (process 0 checkpoints the state, which every process holds whole)."""

    def all_steps(self):
        return []

    def latest_step(self):
        return None

    def save(self, *args, **kwargs):
        return False

    def wait_until_finished(self):
        pass

    def close(self):
        pass


class Checkpoints:
    """A run's checkpoint manager. orbax (~25 MiB once imported) is imported, and the directory
    made, at the first save or look-up: a run's memory peak is its first epoch's compilation,
    before any checkpoint."""

    def __init__(self, run_dir: Path, keep: int):
        self._directory, self._keep = (Path(run_dir) / "checkpoints").absolute(), keep
        self._manager = None

    @property
    def _ocp(self):
        import orbax.checkpoint as ocp

        return ocp

    @property
    def manager(self):
        if self._manager is None:
            self._manager = self._open()
        return self._manager

    def _open(self):
        from compilers.train.distributed import process_count, process_index

        # A run of several processes (compilers.train.distributed): every process holds the whole
        # state as its own local arrays, so process 0 checkpoints alone (orbax's barriers span only
        # it) and writes them as NumPy arrays (orbax refuses host-local jax.Arrays there).
        self._several = process_count() > 1
        if self._several and process_index() != 0:
            return _NoCheckpoints()
        ocp = self._ocp
        multi = {}
        if self._several:
            self._directory.mkdir(parents=True, exist_ok=True)   # orbax's create=True needs all processes
            multi = {"multiprocessing_options": ocp.options.MultiprocessingOptions(primary_host=0,
                                                                                   active_processes={0})}
        return ocp.CheckpointManager(
            self._directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=not self._several, **multi),
            item_names=("tree", "meta"),
        )

    def save(self, epoch: int, state, *, meta: dict, best=None, probes: dict | None = None, model=None) -> None:
        """Starts an asynchronous save of checkpoint `epoch`; `meta` is plain JSON."""
        manager = self.manager
        tree: dict[str, Any] = {"state": state_tree(state)}
        if best is not None:
            tree["best"] = {"params": best[0], "model_state": best[1]}
        if probes:
            tree["probes"] = probes
        if model is not None:
            tree["model"] = {"params": model[0], "model_state": model[1]}
        if self._several:
            import jax
            import numpy as np

            tree = jax.tree_util.tree_map(lambda v: np.asarray(v) if isinstance(v, jax.Array) else v, tree)
        import json

        # a copy as it is now: the save finishes in the background while training goes on
        meta = json.loads(json.dumps({**meta, "parts": sorted(tree)}))
        ocp = self._ocp
        if epoch in manager.all_steps():   # e.g. Ctrl-C right after the periodic save: replace it
            manager.wait_until_finished()
            manager.delete(epoch)
        manager.save(epoch, args=ocp.args.Composite(tree=ocp.args.StandardSave(tree),
                                                    meta=ocp.args.JsonSave(meta)), force=True)

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def restore_meta(self, epoch: int) -> dict:
        ocp = self._ocp
        return self.manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_tree(self, epoch: int, target: dict | None = None) -> dict:
        """Checkpoint `epoch`'s arrays; `target` (a tree of arrays) gives the structure (NamedTuples of
        the optimizer state included), dtypes and devices to restore into."""
        ocp = self._ocp
        tree_args = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
        return self.manager.restore(epoch, args=ocp.args.Composite(tree=tree_args))["tree"]

    def restore(self, epoch: int, target: dict | None = None) -> tuple[dict, dict]:
        """-> (tree, meta) of checkpoint `epoch`."""
        return self.restore_tree(epoch, target), self.restore_meta(epoch)

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()


def load_model(run_dir: Path) -> tuple[Any, Any]:
    """(params, model_state) that the finished run in `run_dir` reports (its final checkpoint's
    `model`), as nested dicts of arrays in flax's layout."""
    ck = Checkpoints(run_dir, keep=1_000_000)
    try:
        epoch = ck.latest()
        if epoch is None:
            raise FileNotFoundError(f"{Path(run_dir) / 'checkpoints'} holds no checkpoint")
        tree, meta = ck.restore(epoch)
        if "model" not in meta.get("parts", ()):
            raise FileNotFoundError(f"the run in {run_dir} has not finished: its latest checkpoint "
                                    f"(epoch {epoch}) holds no final model")
        return tree["model"]["params"], tree["model"].get("model_state", {})
    finally:
        ck.close()
