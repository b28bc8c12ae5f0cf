"""A large file's programs compiled before its data is read.

The first run of a spec compiles its programs, and XLA's compiler then takes ~100 MiB of heap and
pages in ~50 MiB of its own code, beside whatever the run holds: with a large table that is the
run's memory peak (a 1,000,000 x 50 CSV: ~120 MiB over a run whose programs are compiled already).
So before a run reads a large CSV or Parquet source (`sources.large_files`: 64 MiB or more), the
training process forks a process that

- reads only the files' header, target column and the text columns `one_hot` encodes
  (`columnar.stand_in`: the labels, the classes, the split sizes and the categories, everything the
  programs' shapes depend on; the features stand in as zeros that hold no memory),
- plans the run as the run will, and goes through the training loop once (`train_group` with
  `compile_only`): every stored program is traced, stored and compiled and not run
  (`stored.compiling_only`), the small jitted code around them runs on stand-ins, one epoch,
- and exits, its memory with it.

The run then loads every program from the caches (the stored programs and XLA's executables), as a
run of a spec that ran before does. Costs: the pass over the target column (~1 s on that CSV), and
the compilation moves rather than adds. It happens once: a marker (`cache_root()/precompiled/`,
keyed by the code, the libraries, the spec and the files' sizes and times) says it was done, and a
later run of the same spec and files skips it. Nothing depends on it for correctness: a program the
process did not compile (a shape it did not foresee) is compiled by the run, as without it, and a
process that fails changes nothing but the time it took. Off with DSL_PRECOMPILE=0, and where the
caches are off. Taken for one model trained in one process, on one device, with the scan loop, from
features prepared by steps that keep the rows (`columnar.SHAPE_STEPS`); a spec whose programs the
process cannot foresee (several devices, the per-step loop) is marked after one try.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

def enabled() -> bool:
    from compilers.train import stored

    return hasattr(os, "fork") and os.environ.get("DSL_PRECOMPILE", "1") != "0" and stored.enabled()


def marker(spec, files: list[Path]) -> Path | None:
    """The file whose presence says this spec's programs were compiled for these files (None: the
    spec has no exact description)."""
    from compilers.pipeline import cache_root
    from compilers.train import stored

    out: list = []
    try:
        stored._walk(spec, out)
    except (stored.Unnamed, RecursionError):
        return None
    h = hashlib.sha256(stored.code_and_versions().encode())
    h.update(stored._config().encode())
    for name in ("XLA_FLAGS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES"):
        h.update(f"{name}={os.environ.get(name, '')}\n".encode())
    h.update("\n".join(out).encode())
    for full in files:
        st = full.stat()
        h.update(f"\n{full.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    return cache_root() / "precompiled" / h.hexdigest()


def wanted(spec, cwd: Path) -> Path | None:
    """The marker to write, when this run should compile ahead: a large CSV or Parquet source
    (`sources.large_files`), not compiled ahead before, in a process that has not started JAX's
    backend (a fork would not have it) and is the run's only one."""
    from compilers.data import columnar
    from compilers.train import distributed

    source = spec.data.source
    if not enabled() or source is None or source.kind not in columnar.FILES or distributed.process_count() > 1 or \
            not columnar.eligible(spec) or any(item.kind not in columnar.SHAPE_STEPS for item in spec.data.prep):
        return None
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return None
    except (ImportError, AttributeError):
        return None
    from compilers.data.sources import SourceContext, large_files

    try:
        files = large_files(source.options.path, SourceContext(cwd=Path(cwd), seed=spec.seed))
        if not files:
            return None
        path = marker(spec, files)
    except Exception:   # (a missing file: the load says so)
        return None
    return None if path is None or path.exists() else path


def compile_ahead(spec, cwd: Path, path: Path) -> bool:
    """Compiles the run's programs in a process of its own (see the module's notes), which then
    writes the marker `path` (`wanted`); whether it compiled them."""
    pid = os.fork()
    if pid == 0:   # the child: never returns
        code = 1
        try:
            from dsl.worker import die_with_parent

            die_with_parent()   # the run's end (kill -9 too) ends this process
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            compiled = _compile(spec, cwd)
            # marked either way: compiled, or a run of this spec and these files never compiles ahead
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            code = 0 if compiled else DECLINED
        except BaseException:   # the run compiles what this did not
            pass
        finally:
            os._exit(code)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except BaseException:    # Ctrl-C: the child goes too
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
            raise
    return os.waitstatus_to_exitcode(status) == 0


DECLINED = 3   # the child's exit status when the run's programs cannot be foreseen


def _compile(spec, cwd: Path) -> bool:
    """Whether the run's programs were compiled; False where this spec and these files never are."""
    import tempfile

    import jax

    from compilers.data.columnar import stand_in
    from compilers.pipeline import compile_data
    from compilers.train.loop import train_group

    if jax.device_count() > 1:   # a mesh's programs (train.devices): not foreseen here
        return False
    data = stand_in(spec, cwd)
    if data is None:
        return False
    plan = compile_data(spec, data)
    if plan.train.loop != "scan":   # one call per step: the epoch would run, not compile
        return False
    with tempfile.TemporaryDirectory() as run_dir:
        train_group([plan], [data], [Path(run_dir)], progress=False, compile_only=True, deferred_checkpoints=[])
    return True
