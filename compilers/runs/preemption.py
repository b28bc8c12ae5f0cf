"""A cluster job's preemption signal.

SLURM, through Hydra's submitit launcher, sends a job SIGUSR2 (or the signal that
SUBMITIT_PREEMPT_SIGNAL names) when it preempts the job or `signal_delay_s` before its time runs
out; submitit's handler then requeues the job and exits at once, wherever the run was.

While a job's run goes (`Watch`, entered by the command around it), that handler is set aside: the
signal is noted (`came`), and the training loop (compilers.train.loop) stops after the epoch in
hand, writes a checkpoint and the report, and marks the run preempted. Then `hand_on` gives
the signal to submitit's handler, which requeues the job; the requeued job finds the run in its
directory and goes on from the checkpoint (compilers.pipeline.requeued_run). A signal that comes
once training is over lets the run finish: the job ends done, not requeued.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_came: int | None = None     # the signal, once it came while a run was watched


def came() -> int | None:
    """The preemption signal's number if it came during the watched run, else None."""
    return _came


def job_signal() -> signal.Signals | None:
    """submitit's preemption signal when this process runs a submitit job (submitit's handler for
    it is set: submitit sets it before it calls the job), else None."""
    sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if not isinstance(sig, signal.Signals):
        return None
    owner = getattr(signal.getsignal(sig), "__self__", None)
    return sig if owner is not None and type(owner).__module__.startswith("submitit") else None


class Watch:
    """`with Watch():` around a job's run (`hand_on` after it, when the run stopped for the signal).
    Outside a submitit job (or off the main thread) it changes nothing."""

    def __init__(self):
        self._signal: signal.Signals | None = None
        self._old = None

    def __enter__(self) -> "Watch":
        global _came
        _came = None
        if threading.current_thread() is threading.main_thread():
            sig = job_signal()
            if sig is not None:
                self._signal, self._old = sig, signal.getsignal(sig)
                signal.signal(sig, self._on_signal)
        return self

    @staticmethod
    def _on_signal(signum, frame) -> None:
        global _came
        if _came is None:
            print(f"\n{signal.Signals(signum).name}: the job is preempted or its time is running out; training "
                  f"stops after the epoch in hand", file=sys.stderr, flush=True)
        _came = signum

    def __exit__(self, *exc) -> bool:
        if self._signal is not None:
            signal.signal(self._signal, self._old)
            self._signal = None
        return False


def hand_on(signum: int) -> str | None:
    """After `Watch`: gives the signal that stopped the run (here, or in another process of the run)
    to submitit's handler, set back by then, which requeues the job and exits; in a task other than
    the job's first it only logs the signal and returns None. When submitit does not requeue the job
    (its requeues ran out: the launcher's max_num_timeout), returns submitit's reason; the job ends."""
    try:
        signal.raise_signal(signum)
    except Exception as e:
        if type(e).__name__ != "UncompletedJobError" or not type(e).__module__.startswith("submitit"):
            raise
        reason = str(e).split("because:", 1)[-1].strip().rstrip(".")
        return reason or "submitit did not requeue it"
    return None
