"""`python -m dsl COMMAND ...`: thin dispatch; the work lives in importable functions."""

from __future__ import annotations

import sys

USAGE = """usage: python -m dsl COMMAND [conf=SPEC] [overrides...]

commands:
  run conf=SPEC [key=value ...]      train a spec (Hydra: -m sweeps, --cfg job, --help, launchers)
  validate conf=SPEC [key=value ...] check a spec; print the model's layers, shapes, parameters and the plan
  list [FAMILY]                      every data source, prep step, layer, loss, optimizer, schedule,
                                     metric and chart kind, with a one-line description
  plot RUN_DIR [plots=[...]]         re-render a finished run's charts and report
  compare DIR [DIR ...] [--out FILE] one report comparing runs: run dirs, sweep dirs, folders of runs
  resume RUN_DIR                     go on with an interrupted run from its latest checkpoint
  predict RUN_DIR data.source=NEW [output=FILE]
                                     a finished run's predictions for new data (default RUN_DIR/predictions.csv)
  serve [DIR] [--port 6006] [--host 127.0.0.1]
                                     browse runs and sweeps in a browser, live while they train
"""

COMMANDS = ("run", "validate", "list", "plot", "compare", "resume", "predict", "serve")
LATER: tuple[str, ...] = ()


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}" if not message.startswith(("error", "/", ".")) and ":" not in message.split(" ")[0]
          else message, file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command in LATER:
        fail(f"error: `{command}` is not available in this version; available: {', '.join(COMMANDS)}")
    if command not in COMMANDS:
        from dsl.errors import unknown

        fail(f"error: {unknown('command', command, COMMANDS)}\n{USAGE}")
    from importlib import import_module

    import_module(f"dsl.commands.{command}").main(rest)


if __name__ == "__main__":
    main()
