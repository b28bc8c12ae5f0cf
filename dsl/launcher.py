"""`hydra/launcher=vmap`: a sweep's jobs that share one compiled structure train as ONE program.

Hydra hands the launcher every job's overrides. Each job is composed and set up as Hydra's basic
launcher does (its run directory with `.hydra/`, its job number), then the jobs are grouped by the
structure of their training program (`compilers.train.group`): a group trains as one
`jax.vmap`ped program with one compilation, and every job still gets its own complete run
directory. Jobs that change shapes fall into separate groups; a job whose spec is wrong fails
alone with its one-line error.

Hydra only instantiates launchers from classes in the `hydra_plugins` package; this one is
registered by hand (`register`) under that module name, so nothing has to be installed beside the
project. The `_target_` below lives in Hydra's own config group, never in a user's spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher

MODULE = "hydra_plugins.dsl_vmap_launcher"


@dataclass
class VmapLauncherConf:
    _target_: str = f"{MODULE}.VmapLauncher"
    max_members: int = 64   # most jobs in one vmapped program; a larger group is split


class VmapLauncher(Launcher):
    def __init__(self, max_members: int = 64) -> None:
        self.max_members = int(max_members)
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        from pathlib import Path

        from hydra.core.utils import JobStatus, configure_log, run_job, setup_globals
        from omegaconf import open_dict

        prepare = getattr(self.task_function, "prepare_job", None)
        run_jobs = getattr(self.task_function, "run_jobs", None)
        if prepare is None or run_jobs is None:
            raise RuntimeError("hydra/launcher=vmap runs dsl specs only (python -m dsl run -m conf=SPEC ...)")
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        returns, jobs = [], []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
                cfg.hydra.job.num = idx
            # Hydra's own job set-up (run directory, .hydra/, callbacks); the task only reads the spec.
            ret = run_job(hydra_context=self.hydra_context, task_function=prepare, config=cfg,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            returns.append(ret)
            jobs.append(ret.return_value if ret.status == JobStatus.COMPLETED else None)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        values = run_jobs(jobs, self.max_members)
        for ret, job, value in zip(returns, jobs, values):
            if job is not None:
                ret.return_value = value
        return returns


VmapLauncher.__module__ = MODULE


def register() -> None:
    """Makes `hydra/launcher=vmap` selectable (idempotent)."""
    import sys
    import types

    from hydra.core.plugins import Plugins

    # Hydra locates the class by its dotted name: make `hydra_plugins.dsl_vmap_launcher` this module.
    try:
        import hydra_plugins
    except ImportError:  # no Hydra plugin installed: an empty namespace package
        hydra_plugins = types.ModuleType("hydra_plugins")
        hydra_plugins.__path__ = []
        sys.modules["hydra_plugins"] = hydra_plugins
    sys.modules.setdefault(MODULE, sys.modules[__name__])
    setattr(hydra_plugins, MODULE.rsplit(".", 1)[1], sys.modules[__name__])
    plugins = Plugins.instance()
    if f"{MODULE}.VmapLauncher" not in plugins.class_name_to_class:
        plugins.register(VmapLauncher)
    ConfigStore.instance().store(group="hydra/launcher", name="vmap", node=VmapLauncherConf, provider="dsl")
