"""`python -m dsl validate conf=SPEC [overrides]`: check a spec and print its plan; no training."""

from __future__ import annotations

import sys
from pathlib import Path

from dsl.errors import SpecError


def describe(plan, data) -> str:
    """The plan as text: data, a layer table, the optimizer, schedule and charts."""
    spec, tp = plan.spec, plan.train
    lines = [f"spec      {spec.name}" + (f"  ({spec.file})" if spec.file else ""),
             f"task      {plan.task}" + (f", {plan.n_classes} classes" if plan.n_classes else ""),
             f"data      {data.description}",
             f"splits    " + ", ".join(f"{k} {v}" for k, v in plan.sizes.items()),
             f"input     {tuple(plan.input_shape)}", ""]
    rows = plan.model.rows
    def label_of(r):
        act = f"({r['activation']})" if r["kind"] == "dense" and r["activation"] else ""
        return "  " * r["depth"] + r["index"] + " " + r["kind"] + act

    kw = max(len("layer"), *(len(label_of(r)) for r in rows))
    lines.append(f"{'layer':<{kw}}  {'output shape':<16}{'params':>10}  where")
    for r in rows:
        label = label_of(r)
        shape = str(tuple(r["output_shape"])) if r["output_shape"] is not None else "?"
        lines.append(f"{label:<{kw}}  {shape:<16}{r['params']:>10,}  {r['path']}")
    lines.append(f"{'total':<{kw}}  {'':<16}{plan.model.total_params:>10,}")
    lines.append("")
    opt = tp.optimizer
    opts = ", ".join(f"{k}={v}" for k, v in vars(opt.options).items() if v is not None)
    sched = ", ".join(f"{k}={v}" for k, v in vars(tp.schedule.options).items() if v is not None)
    lines += [f"loss      {tp.loss.kind}" + (" (one logit)" if tp.binary_logit else ""),
              f"optimizer {opt.kind} ({opts})",
              f"schedule  {tp.schedule.kind} ({sched})",
              f"training  {tp.epochs} epochs x {tp.steps_per_epoch} steps of {tp.batch_size}; "
              f"loop: {tp.loop}; best epoch by {tp.monitor} ({tp.mode})"
              + (f"; early stopping after {tp.patience} epochs without improvement" if tp.patience else ""),
              f"metrics   {', '.join(tp.metrics) or '(loss only)'}",
              f"charts    {', '.join(c.kind for c in plan.charts) or '(none)'}"]
    return "\n".join(lines)


def main(args: list[str]) -> None:
    from dsl.commands.run import prepare
    from dsl.compose import locate

    cwd = Path.cwd()
    try:
        _path, smap, _flags, overrides, spec = prepare(args, cwd, sweep_ok=False)
        from compilers.pipeline import plan_spec

        try:
            data, plan = plan_spec(spec, cwd)
        except SpecError as e:
            raise locate(e, smap, overrides) from None
    except SpecError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2)
    print(describe(plan, data))
