"""`python -m dsl resume RUN_DIR`: go on with an interrupted run from its latest checkpoint.

The run directory keeps everything: the spec (.hydra/config.yaml), the directory it ran from
(summary.json's `cwd`, for relative data paths) and the checkpoints (parameters, optimizer state,
rng, early-stopping state, the per-epoch probes). metrics.jsonl keeps the checkpoint's epochs;
later ones are trained again, so the run ends as if it had never stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dsl.errors import RunFailed, RunInterrupted, SpecError


def main(args: list[str]) -> None:
    try:
        if len(args) != 1 or args[0].startswith("-"):
            raise SpecError("", "usage: python -m dsl resume RUN_DIR")
        from compilers.pipeline import resume_run

        run_dir = Path(args[0])
        summary = resume_run(run_dir)
    except SpecError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2)
    except RunInterrupted as e:
        print(e, file=sys.stderr)
        raise SystemExit(130)
    except RunFailed as e:
        print(e, file=sys.stderr)
        raise SystemExit(1)
    from dsl.commands.run import _print_done

    _print_done(summary, run_dir)
