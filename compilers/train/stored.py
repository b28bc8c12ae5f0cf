"""Stored programs: a run of a spec that ran before skips tracing and lowering its largest programs.

JAX's persistent compilation cache (compilers.pipeline.configure_jax) skips XLA's compilation on a
second run, but JAX still traces the Python model code and lowers it to StableHLO before it can look
the executable up: ~0.4 s for a small model's epoch, most of what a warm run of a small spec waits
for before training. A stored program is the traced and lowered program itself, serialized with
`jax.export` (StableHLO in a versioned flatbuffer: data, never code), under a key made from
everything the program depends on:

- the plan it was made from (`fingerprint`: the spec, the data's shapes and sizes, the model and
  training plans), walked value by value: anything that cannot be named exactly (an object shown
  only by its address) leaves the program unstored;
- the source of `dsl/` and `compilers/`, the versions of jax, jaxlib, flax, optax and numpy, JAX's
  configuration, XLA_FLAGS, and the devices;
- the program's name and its arguments' structure, shapes and dtypes.

A stored program runs through `jax.jit(exported.call)` with the donation and compiler options of
the original, and JAX's cache then holds its executable. A first run exports (a trace and a lowering,
as before) and runs the exported program too, so every run of a spec runs the same program. Anything
that fails on the way (a program `jax.export` cannot serialize, a damaged file) runs the plain
`jax.jit`. Off with DSL_PROGRAM_CACHE=0 or DSL_COMPILATION_CACHE=0, and in a process that sees
several devices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import hashlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

FORMAT = 1   # the stored files' layout; a change makes every old key unused


# programs of this process loaded from the store / traced and exported / of those, not saved (a full
# disk, a missing serializer: the run goes on, and the next one traces them again) / traced as they
# are (jax.export could not take them); summary.json reports all four
COUNTS = {"loaded": 0, "exported": 0, "unsaved": 0, "unstored": 0}


class Unnamed(Exception):
    """A value of the plan has no exact description (so no key)."""


def _walk(value, out: list, depth: int = 0) -> None:
    if depth > 200:
        raise Unnamed("too deep")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        out.append(f"{type(value).__name__}:{value!r}")
    elif isinstance(value, enum.Enum):
        out.append(f"enum:{type(value).__qualname__}.{value.name}")
    elif isinstance(value, np.ndarray) or type(value).__module__.startswith(("jax", "jaxlib")) and hasattr(value, "dtype"):
        shape, dtype = getattr(value, "shape", ()), getattr(value, "dtype", None)
        if hasattr(value, "__array__") and not type(value).__name__.startswith(("ShapeDtypeStruct", "ShapedArray")):
            value = np.asarray(value)
            out.append(f"array:{shape}:{dtype}:{hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}")
        else:
            out.append(f"shape:{tuple(shape)}:{dtype}:{getattr(value, 'weak_type', False)}")
    elif isinstance(value, (np.generic, np.dtype)):
        out.append(f"np:{type(value).__name__}:{value!r}")
    elif isinstance(value, type):
        out.append(f"type:{value.__module__}.{value.__qualname__}")
    elif dataclasses.is_dataclass(value):
        out.append(f"dc:{type(value).__module__}.{type(value).__qualname__}(")
        for f in dataclasses.fields(value):
            if f.name in ("parent", "scope") and type(value).__module__.startswith("flax"):
                continue
            out.append(f.name + "=")
            _walk(getattr(value, f.name, None), out, depth + 1)
        out.append(")")
    elif isinstance(value, dict):
        out.append(f"{type(value).__name__}{{")
        for k in sorted(value, key=repr):
            _walk(k, out, depth + 1)
            _walk(value[k], out, depth + 1)
        out.append("}")
    elif isinstance(value, (list, tuple, frozenset, set)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        out.append(f"{type(value).__name__}[")
        for v in items:
            _walk(v, out, depth + 1)
        out.append("]")
    elif isinstance(value, functools.partial):
        out.append("partial(")
        for v in (value.func, value.args, value.keywords):
            _walk(v, out, depth + 1)
        out.append(")")
    elif callable(value) and hasattr(value, "__qualname__") and hasattr(value, "__module__"):
        # a function: its name, and what it closes over (a closure's values are part of what it does;
        # a bound method's object too)
        out.append(f"fn:{value.__module__}.{value.__qualname__}")
        if inspect.ismethod(value):
            _walk(value.__self__, out, depth + 1)
        for cell in getattr(value, "__closure__", None) or ():
            try:
                _walk(cell.cell_contents, out, depth + 1)
            except ValueError:      # an empty cell
                out.append("<empty>")
    else:
        text = repr(value)
        if " at 0x" in text or " object at " in text:
            raise Unnamed(f"{type(value).__module__}.{type(value).__qualname__}")
        out.append(f"repr:{type(value).__module__}.{type(value).__qualname__}:{text}")


@functools.lru_cache(maxsize=1)
def _environment() -> str:
    """What every stored program depends on besides its plan: the code, the libraries, the devices."""
    import jax

    h = hashlib.sha256(code_and_versions().encode())
    h.update(os.environ.get("XLA_FLAGS", "").encode())
    devices = jax.devices()
    h.update(f"{jax.default_backend()} {len(devices)} {devices[0].device_kind} {jax.process_count()}".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_and_versions() -> str:
    """A hash of the source of `dsl/` and `compilers/` and the versions of the libraries programs
    are made with (no device is asked for: JAX's backend stays unstarted)."""
    h = hashlib.sha256(f"format {FORMAT}\n".encode())
    root = Path(__file__).resolve().parents[2]
    for package in ("dsl", "compilers"):
        for path in sorted((root / package).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            h.update(f"{pkg}={version(pkg)}\n".encode())
        except PackageNotFoundError:
            h.update(f"{pkg}=?\n".encode())
    return h.hexdigest()


def _config() -> str:
    """JAX's configuration (x64, matmul precision, PRNG, ...), less where files go."""
    import jax

    values = getattr(jax.config, "values", {})
    return repr(sorted((k, repr(v)) for k, v in values.items()
                       if not any(s in k for s in ("cache", "dir", "log", "traceback", "debug"))))


def fingerprint(*parts) -> str | None:
    """A key for programs made from these values (a plan, options); None when one has no exact
    description, the store is off, or the process sees several devices (a mesh's arguments are
    spread over them; a stored program is one device's)."""
    if not enabled():
        return None
    import jax

    if jax.device_count() > 1:
        return None
    out: list = []
    try:
        _walk(parts, out)
    except (Unnamed, RecursionError):
        return None
    h = hashlib.sha256(_environment().encode())
    h.update(_config().encode())
    h.update("\n".join(out).encode())
    return h.hexdigest()


def enabled() -> bool:
    return (os.environ.get("DSL_PROGRAM_CACHE", "1") != "0"
            and os.environ.get("DSL_COMPILATION_CACHE", "1") != "0")


def _directory() -> Path:
    from compilers.pipeline import cache_root

    return cache_root() / "programs"


# pytree node types (optax's states, the training state) that exported trees may hold, registered
# for jax.export's serialization by their module and name
_REGISTERED: dict[str, type] = {}
_PLAIN = (dict, list, tuple, type(None))


def _node_types(treedef, found: dict) -> None:
    data = treedef.node_data()
    if data is not None and data[0] not in _PLAIN:
        cls, aux = data
        if not (hasattr(cls, "_fields") or aux in ((), None)):
            raise Unnamed(f"{cls.__qualname__} carries data")
        found[f"{cls.__module__}:{cls.__qualname__}"] = cls
    for child in treedef.children():
        _node_types(child, found)


def _register(name: str, cls: type) -> None:
    from jax import export

    if name in _REGISTERED:
        if _REGISTERED[name] is not cls:
            raise Unnamed(f"{name} names two types")
        return
    if hasattr(cls, "_fields"):
        export.register_namedtuple_serialization(cls, serialized_name=name)
    else:
        export.register_pytree_node_serialization(cls, serialized_name=name, serialize_auxdata=lambda aux: b"",
                                                  deserialize_auxdata=lambda data: ())
    _REGISTERED[name] = cls


def _resolve(name: str) -> type:
    """The type a stored program's tree names: looked up among the modules already imported (a
    stored file never makes anything import)."""
    module, _, qualname = name.partition(":")
    if not module.startswith(("optax.", "flax.", "compilers.")) or module not in sys.modules:
        raise Unnamed(name)
    obj: Any = sys.modules[module]
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type):
        raise Unnamed(name)
    return obj


_COMPILE_ONLY = False


@contextlib.contextmanager
def compiling_only():
    """Within it, calling a Program stores and compiles its program (the stored programs and XLA's
    cache then hold it, as after a run) and returns stand-ins (ones; keys of seed 0) of its outputs'
    shapes, without running it (compilers.train.precompile). Other jitted code runs as it is."""
    global _COMPILE_ONLY
    _COMPILE_ONLY = True
    try:
        yield
    finally:
        _COMPILE_ONLY = False


def compiling_only_now() -> bool:
    return _COMPILE_ONLY


def _value_like(s):
    """Ones (a key array: keys of data 0) of the shape, dtype and weak type of `s`, made on the host
    (no program compiled for them) and put on the device uncommitted."""
    import jax

    if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
        impl = s.dtype._impl
        return jax.random.wrap_key_data(np.zeros(tuple(s.shape) + tuple(impl.key_shape), np.uint32), impl=impl)
    value = np.ones(s.shape, s.dtype)
    if getattr(s, "weak_type", False):
        if value.shape == () and np.dtype(s.dtype) in (np.dtype(np.float32), np.dtype(np.int32)):
            weak = jax.device_put(value.item())   # a Python number: weakly typed
            if weak.dtype == value.dtype:
                return weak
        from jax._src.lax import lax as lax_internal

        return lax_internal._convert_element_type(jax.device_put(value), np.dtype(s.dtype), weak_type=True)
    return jax.device_put(value)


class Program:
    """`jax.jit(fn, donate_argnums=, compiler_options=)` whose traced program is stored under `key`
    (see the module's notes) and, on later runs, loaded instead of tracing `fn`. The jit traces a
    stand-in once per new shape of its arguments: the stand-in loads (or exports and stores) `fn`'s
    program for those shapes and calls it, so a call costs what a jitted call costs."""

    def __init__(self, fn: Callable, name: str, key: str | None, *, donate_argnums=(), compiler_options=None):
        import jax

        self._fn, self._name, self._key = fn, name, key
        self._outputs: dict = {}   # compiling_only: the outputs' shapes of each signature compiled
        self._jit = jax.jit(fn if key is None else self._stand_in, donate_argnums=donate_argnums,
                            compiler_options=compiler_options)

    def __call__(self, *args):
        if _COMPILE_ONLY:
            return self._compile_only(args)
        if self._key is None:
            return self._jit(*args)
        with _WITHOUT_LAPACK:
            return self._jit(*args)

    def _compile_only(self, args):
        """`compiling_only`: the program for these arguments' shapes is stored and compiled (so that
        both caches hold it) but not run; stand-ins of its outputs' shapes are returned."""
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(args)
        # the types (e.g. "~float32[]", weak) and whether each is placed on a device (committed: the
        # program then names its arguments' sharding, and so does the key of its executable)
        signature = (str(treedef), *((str(jax.typeof(x)), getattr(x, "committed", None)) for x in leaves))
        found = self._outputs.get(signature)
        if found is None:
            with _WITHOUT_LAPACK:
                lowered = self._jit.lower(*args)
                compiled = lowered.compile()
            found = self._outputs[signature] = (lowered.out_info, compiled.output_shardings)
        out, shardings = found
        values = jax.tree_util.tree_map(_value_like, out)
        # placed on a device (committed) as a call's outputs would be: a stored program's always
        # (`exported.call` names their sharding), a plain jit's where one of its arguments was
        if self._key is not None or any(getattr(x, "committed", False) for x in leaves):
            return jax.device_put(values, shardings)
        return values

    def lower(self, *args):
        """The jax `Lowered` of what a call with these arguments runs."""
        with _WITHOUT_LAPACK:
            return self._jit.lower(*args)

    def _stand_in(self, *args):
        try:
            exported = self._exported(args)
        except Exception:   # not exportable (e.g. a custom call with no stable form): traced as it is
            COUNTS["unstored"] += 1
            exported = None
        if exported is None:
            return self._fn(*args)
        if _lapack(exported):
            _WITHOUT_LAPACK.set_up()
        return exported.call(*args)

    def _exported(self, args):
        import jax
        from jax import export

        leaves, treedef = jax.tree_util.tree_flatten(args)
        avals = [x.aval for x in leaves]
        signature = "\n".join([self._key, self._name, str(treedef),
                               *(f"{a.shape} {a.dtype} {getattr(a, 'weak_type', False)}" for a in avals)])
        h = hashlib.sha256(signature.encode()).hexdigest()
        path = _directory() / h[:2] / f"{h}.bin"
        try:
            exported = _load(path)
        except Exception:   # damaged, or from another layout: made again
            exported = None
        if exported is not None:
            COUNTS["loaded"] += 1
        else:
            COUNTS["exported"] += 1
            specs = treedef.unflatten([jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False))
                                       for a in avals])
            exported = export.export(jax.jit(self._fn))(*specs)
            try:
                _store(exported, path)
            except Exception:   # still this run's program; counted, so that summary.json shows it
                COUNTS["unsaved"] += 1
        return exported


def _lapack(exported) -> bool:
    """Whether a program calls LAPACK (a CPU linear-algebra routine)."""
    return b"lapack" in bytes(exported.mlir_module_serialized)


class _WithoutLapack:
    """Lowering a call of an exported program first makes JAX set LAPACK up for the CPU, in case the
    program calls it; that imports scipy.linalg (~0.25 s). While a stored program is called, that
    step is skipped, and taken (`set_up`) for a program that does call LAPACK. (A JAX without this
    step is left as it is.)"""

    def __init__(self):
        self._module = self._saved = None
        self._found = False

    def _find(self):
        self._found = True
        try:
            from jax._src.export import _export
        except ImportError:
            return
        saved = getattr(_export, "_ensure_backends_initialized", None)
        if callable(saved):
            self._module, self._saved = _export, saved

    def __enter__(self):
        if not self._found:
            self._find()
        if self._module is not None:
            self._module._ensure_backends_initialized = _skip
        return self

    def __exit__(self, *exc):
        if self._module is not None:
            self._module._ensure_backends_initialized = self._saved
        return False

    def set_up(self):
        if self._saved is not None:
            self._saved(("cpu",))


def _skip(platforms) -> None:
    return None


_WITHOUT_LAPACK = _WithoutLapack()


def _load(path: Path):
    from jax import export

    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    head, _, body = blob.partition(b"\n")
    names = json.loads(head.decode())
    for name in names:
        _register(name, _resolve(name))
    return export.deserialize(bytearray(body))


def _store(exported, path: Path) -> None:
    found: dict = {}
    for tree in (exported.in_tree, exported.out_tree):
        _node_types(tree, found)
    for name, cls in found.items():
        _register(name, cls)
    blob = json.dumps(sorted(found)).encode() + b"\n" + bytes(exported.serialize())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)   # whole or absent: two runs storing the same program race harmlessly
