"""Training across processes (several hosts, or several processes on one host): `jax.distributed`.

A run is one process unless its environment says otherwise. `initialize()` (called by
`compilers.pipeline.configure_jax`, before any JAX computation) starts `jax.distributed` when

  * DSL_DISTRIBUTED=1: JAX finds the processes itself (SLURM, Open MPI, Cloud TPU, ...; see
    `jax.distributed.initialize`); DSL_DISTRIBUTED=0 keeps the run in one process whatever else is set;
  * JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID are all set (host:port of process
    0, how many processes, this one's number), with more than one process;
  * the process is one task of a SLURM job step with more than one task (`srun`, or Hydra's submitit
    launcher with nodes x tasks_per_node > 1): the variables JAX's own SLURM detection reads are set
    and SLURM_STEP_NUM_TASKS (else SLURM_NTASKS) > 1;
  * the process is one of several started by Open MPI's mpirun (OMPI_MCA_orte_hnp_uri is set and
    OMPI_COMM_WORLD_SIZE > 1);
  * the process is one task of a job of submitit's local executor with more than one task
    (hydra/launcher=submitit_local with tasks_per_node > 1): the tasks meet on 127.0.0.1.

How the run is shared out: every process loads the same data (same spec, same seed) and keeps the
whole training state, replicated. `train.devices` counts the devices of all processes
(`jax.devices()`), and the data-parallel mesh spans them. The compiled programs that use the mesh
(an epoch, an evaluation) take their inputs as global arrays replicated over the mesh, built from
each process's own copy, and hand back process-local arrays; so every process runs the same steps,
XLA reduces the gradients across processes, and the bookkeeping between programs (early stopping,
checkpoints, probes) stays local and identical everywhere. Only process 0 writes the run directory
(`compilers.pipeline.run_group`); the others write into a private scratch directory that is removed
at the end.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")
# what jax._src.clusters.slurm_cluster.SlurmCluster.is_env_present requires (jax 0.4.30 .. 0.10)
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def _int(env, name: str) -> int | None:
    try:
        return int(str(env.get(name, "")).strip())
    except ValueError:
        return None


def settings(env=None) -> dict | None:
    """The keyword arguments for `jax.distributed.initialize` that the environment asks for ({} lets
    JAX detect the cluster itself), or None when the run is one process."""
    env = os.environ if env is None else env
    flag = str(env.get("DSL_DISTRIBUTED", "")).strip().lower()
    if flag in _OFF:
        return None
    if flag and flag not in _ON:
        raise ValueError(f"DSL_DISTRIBUTED={env['DSL_DISTRIBUTED']!r}: use 1 (start jax.distributed) or 0 (never)")
    address, n, pid = env.get("JAX_COORDINATOR_ADDRESS"), _int(env, "JAX_NUM_PROCESSES"), _int(env, "JAX_PROCESS_ID")
    if address and n is not None and pid is not None:
        if n > 1 or flag in _ON:
            return {"coordinator_address": address, "num_processes": n, "process_id": pid}
        return None
    if flag in _ON:
        return {}
    if all(v in env for v in _SLURM_VARS):
        tasks = _int(env, "SLURM_STEP_NUM_TASKS") if "SLURM_STEP_NUM_TASKS" in env else _int(env, "SLURM_NTASKS")
        if tasks is not None and tasks > 1:
            return {}
    if "OMPI_MCA_orte_hnp_uri" in env and (_int(env, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return {}
    tasks, job = _int(env, "SUBMITIT_LOCAL_NTASKS"), _int(env, "SUBMITIT_LOCAL_JOB_ID")
    if tasks is not None and tasks > 1 and job is not None and _int(env, "SUBMITIT_LOCAL_GLOBALID") is not None:
        # the tasks of one job of submitit's local executor (hydra/launcher=submitit_local), which
        # JAX does not detect: process 0 listens on a port chosen from the job's id, as JAX does for SLURM
        port = env.get("JAX_COORDINATOR_PORT") or str(65536 - 4096 + job % 4096)
        return {"coordinator_address": f"127.0.0.1:{port}", "num_processes": tasks,
                "process_id": _int(env, "SUBMITIT_LOCAL_GLOBALID")}
    return None


def initialize(env=None) -> bool:
    """Starts `jax.distributed` if the environment asks for it (see `settings`) and it has not been
    started; True when this process is one of several. Must run before any JAX computation."""
    kwargs = settings(env)
    if kwargs is None:
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    timeout = _int(os.environ if env is None else env, "DSL_DISTRIBUTED_TIMEOUT")
    if timeout is not None:
        kwargs["initialization_timeout"] = timeout
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:
        raise RuntimeError(f"jax.distributed.initialize failed ({e}); the environment asked for several "
                           f"processes (set DSL_DISTRIBUTED=0 to run this process alone)") from e
    return True


def _jax_if_started():
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    try:
        return jax if jax.distributed.is_initialized() else None
    except AttributeError:
        return None


def process_index() -> int:
    """This process's number (0 when the run is one process). Imports nothing: before
    `initialize`, it reads the environment."""
    jax = _jax_if_started()
    if jax is not None:
        return jax.process_index()
    kwargs = settings()
    if kwargs is None:
        return 0
    if "process_id" in kwargs:
        return kwargs["process_id"]
    for name in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
        if _int(os.environ, name) is not None:
            return _int(os.environ, name)
    return 0


def process_count() -> int:
    jax = _jax_if_started()
    return jax.process_count() if jax is not None else 1


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0, or the only process)."""
    return process_index() == 0


def process_max(*values: int) -> list[int]:
    """Each of `values`, the largest of every process's (one collective: every process must call it
    at the same point of the run)."""
    import numpy as np
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray(values, np.int32))   # [processes, len(values)]
    return [int(v) for v in np.asarray(gathered).reshape(-1, len(values)).max(axis=0)]


def from_first(value, arrays: bool = False):
    """Process 0's `value`, in every process of a run of several (a collective: every process calls
    it at the same point); in a run of one process, `value` itself. Plain JSON values by default
    (None, numbers, strings, lists, dicts: sent as text); with `arrays`, a pytree of arrays whose
    shapes and dtypes every process gives alike (the others' values are ignored), which comes back
    as NumPy arrays."""
    if process_count() == 1:
        return value
    import json

    import numpy as np
    from jax.experimental import multihost_utils

    if arrays:
        return multihost_utils.broadcast_one_to_all(value)
    text = np.frombuffer(json.dumps(value).encode(), np.uint8) if is_primary() else np.zeros(0, np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.asarray(text.size, np.int64)))
    padded = np.zeros(size, np.uint8)
    padded[:text.size] = text
    return json.loads(bytes(multihost_utils.broadcast_one_to_all(padded)).decode())


# --- global arrays at the boundary of the programs that use the mesh -----------------------------

def to_global(tree, mesh):
    """Every array leaf -> a global jax.Array replicated over `mesh` (all processes' devices), built
    from this process's copy (each process holds the same values). Global leaves pass as they are."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    devices = set(mesh.devices.flat)
    local = mesh.local_devices
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if isinstance(x, jax.Array):
            if set(x.sharding.device_set) == devices:
                return x
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
            if not x.is_fully_addressable:
                raise ValueError(f"an array on devices {x.sharding.device_set} is neither this process's "
                                 f"nor the mesh's")
        elif not isinstance(x, (np.ndarray, np.generic, int, float, bool)):
            return x
        return jax.make_array_from_single_device_arrays(
            np.shape(x), replicated, [jax.device_put(x, d) for d in local])

    return jax.tree_util.tree_map(one, tree)


def to_local(tree):
    """Every global array leaf -> this process's copy on its first device: a replicated array's
    own shard, a sharded one gathered from all processes."""
    import jax
    import jax.numpy as jnp

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        from jax.experimental import multihost_utils

        return jax.device_put(jnp.asarray(multihost_utils.process_allgather(x, tiled=True)), jax.local_devices()[0])

    return jax.tree_util.tree_map(one, tree)


def across_processes(programs, mesh):
    """`programs` (compilers.train.step.Programs) whose mesh spans several processes: the programs
    that use the mesh take global inputs and give local outputs (see the module's docstring). The
    global copies of the arrays an epoch reads again and again (the data, the validation split) are
    kept while their local arrays live; the training state, which an epoch donates, is not kept."""
    import dataclasses
    import weakref

    import jax

    kept: dict = {}

    def kept_global(x):
        if not isinstance(x, jax.Array) or not x.is_fully_addressable:
            return to_global(x, mesh)
        hit = kept.get(id(x))
        if hit is not None and hit[0]() is x:
            return hit[1]
        g = to_global(x, mesh)
        kept[id(x)] = (weakref.ref(x, lambda _, k=id(x): kept.pop(k, None)), g)
        return g

    def wrap(f, donated: int | None = None):
        def run(*args: Any, **kwargs: Any):
            args = tuple(to_global(a, mesh) if i == donated else jax.tree_util.tree_map(kept_global, a)
                         for i, a in enumerate(args))
            kwargs = {k: jax.tree_util.tree_map(kept_global, v) for k, v in kwargs.items()}
            return to_local(f(*args, **kwargs))

        return run

    return dataclasses.replace(programs, train_epoch=wrap(programs.train_epoch, donated=0),
                               evaluate=wrap(programs.evaluate), evaluate_predict=wrap(programs.evaluate_predict))
