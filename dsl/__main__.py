"""`python -m dsl`: the command, then a quick exit.

Once a command has finished (its files closed, its threads and checkpoints waited for), the
exit handlers run (logging, worker pools) and the process ends without tearing the interpreter
down object by object: with JAX, XLA and a JavaScript engine loaded that teardown alone took
about a second. An uncaught exception exits the usual way, with its traceback.
"""

import atexit
import os
import sys
import threading

from dsl.cli import main


def _exit(code) -> None:
    if code is None:
        code = 0
    elif not isinstance(code, int):   # SystemExit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    try:
        # what the interpreter does at exit, in its order: threading's exit callbacks (they shut
        # down worker pools such as joblib's), then a wait for non-daemon threads, then atexit's
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        else:
            for thread in threading.enumerate():
                if thread is not threading.main_thread() and not thread.daemon:
                    thread.join()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


try:
    main()
except SystemExit as e:
    _exit(e.code)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    _exit(130)
_exit(0)
