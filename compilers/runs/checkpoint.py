"""Orbax checkpoints of the training state, under RUN_DIR/checkpoints/<epoch>/."""

from __future__ import annotations

from pathlib import Path


class Checkpoints:
    def __init__(self, run_dir: Path, keep: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            (Path(run_dir) / "checkpoints").absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def save(self, epoch: int, state) -> None:
        """Starts an asynchronous save of `state` (a pytree) as checkpoint `epoch`."""
        import jax

        tree = {"params": state.params, "model_state": state.model_state, "opt_state": state.opt_state,
                "step": state.step, "rng": jax.random.key_data(state.rng)}
        self.manager.save(epoch, args=self._ocp.args.StandardSave(tree), force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
