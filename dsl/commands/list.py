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
    if "--markdown" in args:
        print(reference_markdown(), end="")
        return
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


def _type_name(tp) -> str:
    import typing

    text = getattr(tp, "__name__", None) or str(tp)
    text = str(tp).replace("typing.", "") if text.startswith("typing") or "[" in str(tp) else text
    return text.replace("dsl.spec.Item", "layer").replace("NoneType", "null")


def reference_markdown() -> str:
    """docs/reference.md: every registered kind, its description and options, from the registries."""
    import dataclasses
    import typing

    reg.load_all()
    from dsl import spec as S

    out = ["# Reference", "",
           "Generated from the spec dataclasses and the registries by `python -m dsl list --markdown`;",
           "do not edit by hand (a test checks that it is current).", ""]
    out += ["## Sections", ""]
    for cls, where in ((S.Spec, "top level"), (S.Data, "data"), (S.Split, "data.split"), (S.Model, "model"),
                       (S.Train, "train"), (S.EarlyStopping, "train.early_stopping"),
                       (S.Checkpoint, "train.checkpoint")):
        hints = typing.get_type_hints(cls)
        out += [f"### {where}", "", (cls.__doc__ or "").strip(), "", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            if f.name == "file":
                continue
            if f.default_factory is not dataclasses.MISSING:
                default = "(section)" if dataclasses.is_dataclass(f.default_factory) else f"`{f.default_factory()!r}`"
            else:
                default = "required" if f.default is None and f.name in ("source",) else f"`{f.default!r}`"
            out.append(f"| `{f.name}` | {default} | {f.metadata.get('doc', '')} |")
        out.append("")
    for family, registry in reg.FAMILIES.items():
        out += [f"## {TITLES[family]}", ""]
        for e in registry:
            out += [f"### `{e.name}`", "", e.doc.strip(), ""]
            fields = [f for f in dataclasses.fields(e.options)]
            if fields:
                hints = typing.get_type_hints(e.options)
                out += ["| option | type | default | meaning |", "|---|---|---|---|"]
                for f in fields:
                    default = "required" if f.default is dataclasses.MISSING else f"`{f.default!r}`"
                    if e.positional == f.name:
                        default += " (short form: `" + e.name + ": value`)"
                    out.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {default} | {f.metadata.get('doc', '')} |")
                out.append("")
    return "\n".join(out).rstrip() + "\n"
