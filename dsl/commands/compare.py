"""`python -m dsl compare DIR [DIR ...] [--out FILE]`: one comparison report over finished runs.

A DIR may be a run directory (it holds summary.json), a sweep directory (sweep.jsonl), or any
folder holding runs. The report is the one a multirun writes into its sweep directory
(compilers/charts/sweep.py). Where it goes by default: DIR/report.html for one sweep directory
or one folder of runs; otherwise (several DIRs, or a single run, whose own report.html must stay)
compare_<date>_<time>.html in the current directory.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

USAGE = "usage: python -m dsl compare DIR [DIR ...] [--out FILE]"


class UsageError(Exception):
    pass


def parse_args(args: list[str]) -> tuple[list[Path], Path | None]:
    dirs, out = [], None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-o", "--out"):
            if i + 1 >= len(args):
                raise UsageError(f"{a} needs a file name; {USAGE}")
            out = Path(args[i + 1])
            i += 2
            continue
        if a.startswith("--out="):
            out = Path(a[len("--out="):])
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a}; {USAGE}")
        else:
            dirs.append(Path(a))
        i += 1
    if not dirs:
        raise UsageError(f"give at least one run or sweep directory; {USAGE}")
    return dirs, out


def default_out(dirs: list[Path], cwd: Path) -> Path:
    """DIR/report.html for one directory that is not itself a run; else a new file in cwd."""
    if len(dirs) == 1 and not (dirs[0] / "summary.json").is_file():
        return dirs[0] / "report.html"
    return cwd / f"compare_{time.strftime('%Y-%m-%d_%H-%M-%S')}.html"


def main(args: list[str]) -> None:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE + "\n\nDIR: a run directory, a sweep directory or any folder holding runs.")
        return
    try:
        dirs, out = parse_args(args)
        for d in dirs:
            if not d.exists():
                raise UsageError(f"no such directory: {d}")
            if not d.is_dir():
                raise UsageError(f"not a directory: {d}")
        from compilers.charts.sweep import collect, compare, write_comparison

        runs = collect(dirs)
        if not runs:
            raise UsageError(f"no runs found in {', '.join(map(str, dirs))} (a run directory holds summary.json)")
        out = out or default_out(dirs, Path.cwd())
        if out.is_dir():
            out = out / "report.html"
        if out.name == "report.html" and (out.parent / "summary.json").is_file():
            raise UsageError(f"{out} is a run's own report; give another --out")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    t = time.perf_counter()
    cmp = compare(runs)
    try:
        write_comparison(cmp, out, dirs)
    except OSError as e:
        print(f"error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(2)
    failed = sum(1 for r in cmp.runs if not r.ok)
    print(f"{len(cmp.runs)} runs compared" + (f" ({failed} failed)" if failed else "")
          + f" in {time.perf_counter() - t:.1f} s\nreport: {out}")
