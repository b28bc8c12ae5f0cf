"""`python -m dsl list [FAMILY]`: every registered kind with its one-line description."""

from __future__ import annotations

from dsl import registry as reg
from dsl.errors import SpecError, unknown

TITLES = {"source": "data sources (data.source)", "prep": "prep steps (data.prep)", "layer": "layers (model.layers)",
          "loss": "losses (train.loss)", "optimizer": "optimizers (train.optimizer.name)",
          "schedule": "schedules (train.schedule.name)", "metric": "metrics (train.metrics)",
          "chart": "charts (plots)"}


def listing(families: list[str] | None = None) -> str:
    reg.load_all()
    lines = []
    for family, registry in reg.FAMILIES.items():
        if families and family not in families:
            continue
        lines.append(TITLES[family])
        width = max(len(e.name) for e in registry)
        for e in registry:
            opts = [f.name for f in e.fields()]
            suffix = f"  [{', '.join(opts)}]" if opts else ""
            lines.append(f"  {e.name:<{width}}  {reg.one_line(e.doc)}{suffix}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(args: list[str]) -> None:
    wanted = []
    aliases = {f + "s": f for f in reg.FAMILIES} | {"sources": "source", "layers": "layer", "charts": "chart",
                                                    "plots": "chart", "preps": "prep"}
    for a in args:
        name = aliases.get(a, a)
        if name not in reg.FAMILIES:
            import sys

            print(SpecError("", unknown("family", a, reg.FAMILIES)), file=sys.stderr)
            raise SystemExit(2)
        wanted.append(name)
    print(listing(wanted or None), end="")
