"""`python -m dsl serve [DIR] [--port 6006] [--host 127.0.0.1]`: browse runs and sweeps, live.

The app is compilers/runs/serve.py (Starlette), served by uvicorn. DIR defaults to outputs/ and
multirun/ of the current directory. Binds to 127.0.0.1 unless --host says otherwise; read-only.
"""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = "usage: python -m dsl serve [DIR] [--port 6006] [--host 127.0.0.1]"


class UsageError(Exception):
    pass


def parse_args(args: list[str]) -> tuple[Path | None, str, int]:
    dir_, host, port = None, "127.0.0.1", 6006
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if name in ("--port", "--host"):
            if not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"{name} needs a value; {USAGE}")
                value = args[i + 1]
                i += 1
            if name == "--host":
                host = value
            else:
                try:
                    port = int(value)
                except ValueError:
                    raise UsageError(f"--port must be a whole number, not {value!r}")
                if not 0 <= port <= 65535:
                    raise UsageError(f"--port must be between 0 and 65535, not {port}")
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a}; {USAGE}")
        elif dir_ is None:
            dir_ = Path(a)
        else:
            raise UsageError(f"give one directory; {USAGE}")
        i += 1
    return dir_, host, port


def main(args: list[str]) -> None:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE + "\n\nDIR: a folder of runs and sweeps (default: outputs/ and multirun/ here).")
        return
    try:
        dir_, host, port = parse_args(args)
        if dir_ is not None and not dir_.is_dir():
            raise UsageError(f"no such directory: {dir_}")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    import uvicorn

    from compilers.runs.serve import LOCAL_HOSTS, create_app, default_roots

    roots = default_roots(dir_, Path.cwd())
    print(f"serving {', '.join(map(str, roots.folders))} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    # On loopback, answer only requests addressed to loopback (no DNS rebinding); a host the
    # user chose to expose answers any name it is reached by.
    app = create_app(roots, LOCAL_HOSTS if host in LOCAL_HOSTS else None)
    uvicorn.run(app, host=host, port=port, log_level="warning")
