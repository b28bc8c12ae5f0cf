"""`python -m dsl run`'s training process, started first thing so that start-up uses both CPUs.

A single run spends its first second or two on two independent things: Python composing and
checking the spec with Hydra (and Hydra making the run directory), and importing JAX, flax and
optax. Done one after the other they add up; `Worker.start()` forks a child before either, the
child imports the training side while the parent composes, and the parent hands the child the
checked job (JSON: the resolved spec, the run directory, the start time) once Hydra calls the
task. The child trains, writes the run and prints what a run prints; the parent waits for it and
exits with its status. Meanwhile the parent, idle, imports the chart side (altair) and starts the
image processes, once the child says its data has loaded and is small (a notice over the pipe);
at the end the child asks it to draw the charts and write the report from the saved run record (a
request over the pipe), so neither lands on the child's critical path. A large data set trains
without them (~100 MiB per image process): the parent starts them when asked to draw, after the
child has freed the data.

- Signals: the child has a process group of its own, so a terminal's Ctrl-C reaches the parent
  only, which passes SIGINT and SIGTERM on to the child once it has a job: one Ctrl-C is one
  interruption (the run stops after the epoch and writes a checkpoint and its report). Before its
  job the child ignores SIGINT, and it ends when the parent does (Linux's parent-death signal,
  SIGKILL, and the end of the job pipe elsewhere), so a spec error or Ctrl-C during composition
  leaves no process, and `kill -9` of the command ends the run as it did before the fork.
- Environment: a job whose environment differs from the one the child was forked with (Hydra's
  `hydra.job.env_set`, set after the fork: JAX reads some of it at import) is declined, and the
  parent runs it itself, as it does where there is no fork (`DSL_WORKER=0`, Windows).
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import sys
from typing import Any, Callable

# what a run imports before it trains (the spec arrives parsed, so no omegaconf, and the charts are
# the command's, so no altair); then pandas, when the job may need it (`_child`)
_PRELOAD = ("jax", "jax.numpy", "flax.linen", "optax", "compilers.pipeline", "compilers.plan",
            "compilers.data.load", "compilers.train.loop", "compilers.train.step")


def enabled() -> bool:
    return hasattr(os, "fork") and os.environ.get("DSL_WORKER", "1") != "0"


class Worker:
    """The parent's handle on the child."""

    def __init__(self, pid: int, to_child: int, from_child: int):
        self.pid, self._to, self._from = pid, to_child, from_child

    @classmethod
    def start(cls, serve: Callable[[dict, Callable[..., dict]], int],
              wants_pandas: Callable[[dict | None], bool] | None = None) -> "Worker | None":
        """Forks the child; in the parent, returns the handle (None if the fork failed). In the child
        this call does not return: it preloads, runs `serve(job, ask)` (`ask(request)` -> the parent's
        answer) and leaves by SystemExit. pandas is preloaded last, unless `wants_pandas(job)` says
        no: asked with the job when it is already there, else with None (the columnar loader reads
        numeric files and built-in tables without pandas)."""
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            return None
        if pid == 0:
            os.close(down_w)
            os.close(up_r)
            _child(down_r, up_w, serve, wants_pandas)   # raises SystemExit or exits
        os.close(down_r)
        os.close(up_w)
        return cls(pid, down_w, up_r)

    def run(self, job: dict, answer: Callable[[dict], dict], prepare: Callable[[], Any] | None = None) -> int | None:
        """Hands `job` (JSON-able) to the child, answers its requests with `answer(request)` until it
        ends, and returns its exit status; None when it declined the job (the caller runs it
        in-process) or could not take it. `prepare()` runs once, at the child's first message: a
        notice that needs no answer (`notify`, sent when its data has loaded and is small) or its
        first request. Not sooner: until the child has loaded its data, both CPUs are busy, and
        what `prepare` starts would be held beside the data."""
        try:
            _send(self._to, {**job, "env": dict(os.environ), "cwd": os.getcwd()})
            reply = _receive(self._from)
        except OSError:
            reply = None
        if not reply or not reply.get("accepted"):
            self.abandon()
            return None
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        prepared = prepare is None

        def ready() -> None:
            nonlocal prepared
            if not prepared:
                prepared = True
                try:
                    prepare()
                except Exception:   # the child's requests are answered with the error
                    pass

        try:
            while True:
                try:
                    request = _receive(self._from)
                except OSError:
                    request = None
                if request is None:
                    break
                ready()
                if request.get("notice"):   # nothing to answer ({"notice": "prepare"}: done by ready())
                    continue
                try:
                    response = answer(request)
                except Exception as e:   # the child then does the work itself
                    response = {"error": f"{type(e).__name__}: {e}"}
                try:
                    _send(self._to, response)
                except OSError:
                    break
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    break
                except InterruptedError:
                    continue
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.abandon()
        code = os.waitstatus_to_exitcode(status)
        if code < 0:   # killed by signal N (the kernel's OOM killer, kill -9): say so; 128 + N, as a shell does
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            print(f"the training process (pid {self.pid}) was ended by {name}", file=sys.stderr, flush=True)
            return 128 - code
        return code

    def _forward(self, signum, frame) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def abandon(self) -> None:
        """Closes the parent's ends: a child still waiting for its job finds the pipe closed and ends."""
        for fd in (self._to, self._from):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._to = self._from = -1
        try:
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _send(fd: int, message: dict) -> None:
    data = json.dumps(message).encode()
    _write_all(fd, struct.pack("<Q", len(data)) + data)


def _receive(fd: int) -> dict | None:
    """The next JSON frame, or None at the end of the pipe."""
    head = _read_exactly(fd, 8)
    if head is None:
        return None
    body = _read_exactly(fd, struct.unpack("<Q", head)[0])
    return None if body is None else json.loads(body)


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def die_with_parent() -> None:
    """Linux: SIGKILL to this process when its parent ends (prctl PR_SET_PDEATHSIG), as if the
    signal that ended the parent had been sent to the whole run (`kill -9` of the command)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _child(down: int, up: int, serve: Callable[[dict, Callable[..., dict]], int],
           wants_pandas: Callable[[dict | None], bool] | None = None) -> None:
    parent = os.getppid()
    try:
        os.setpgid(0, 0)           # the terminal's Ctrl-C goes to the parent, which passes it on
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # In a process group of its own the child is in the terminal's background: with `stty tostop` its
    # progress lines would stop it (SIGTTOU) unless the signal is ignored, which lets them through.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    die_with_parent()
    if os.getppid() != parent:     # the parent ended before the death signal was set
        os._exit(0)
    env = dict(os.environ)
    import gc
    import importlib

    # No garbage collection while importing: with JAX's objects in the heap, each automatic full
    # collection walks millions of them, and an import makes few cycles (~20% of the preload). What
    # the preload made is then frozen: later collections leave it alone.
    gc.disable()
    job = None
    try:
        for name in _PRELOAD:
            try:
                importlib.import_module(name)
            except Exception:   # the job imports it again and reports what is wrong
                break
        try:
            from dsl.registry import load_all

            load_all()
        except Exception:
            pass
        # pandas (~0.3 s, ~40 MiB) last: when the job is here already, only if it needs it (this
        # process's preload is then what the run waits for); else while the command composes
        try:
            if select.select([down], [], [], 0)[0]:
                job = _receive(down)
            if wants_pandas is None or wants_pandas(job):
                importlib.import_module("pandas")
        except Exception:   # the job imports it if it needs it; a broken pipe shows below
            pass
    finally:
        gc.freeze()
        gc.enable()
    try:
        job = job or _receive(down)
    except (OSError, ValueError):
        job = None
    if job is None or job.pop("env") != env:
        try:
            _send(up, {"accepted": False})
        except OSError:
            pass
        os._exit(0)
    _send(up, {"accepted": True})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(job.pop("cwd"))

    def ask(request: dict, meanwhile: Callable[[], Any] | None = None) -> dict:
        """The parent's answer to `request`; `meanwhile()` runs (once, whatever happens) while it works."""
        try:
            _send(up, request)
        finally:
            if meanwhile is not None:
                meanwhile()
        return _receive(down) or {"error": "the command ended"}

    def notify(what: str) -> None:
        """Tells the parent `what` ("prepare"), expecting no answer; OSError if it is gone."""
        _send(up, {"notice": what})

    ask.notify = notify
    code = serve(job, ask)
    raise SystemExit(code)
