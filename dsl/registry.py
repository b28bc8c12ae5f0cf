"""One registry per family, keyed by the exact YAML name.

An entry is an options dataclass (defaults live on it and nowhere else) plus a pure builder.
The registries alone produce did-you-mean errors, the defaults Hydra composes beneath a spec,
`python -m dsl list` and the reference docs. Registering modules must not import JAX at import
time: builders import it when they run, so `validate --help` and `list` stay fast.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable

from dsl.errors import SpecError, unknown


def opt(default: Any = MISSING, doc: str = "", *, ge=None, gt=None, le=None, lt=None,
        choices=None, registry: str | None = None, default_factory: Any = MISSING):
    """A field of an options dataclass, with its one-line doc and range checks.

    `choices` may be a callable (names known only once every module registered);
    `registry` marks a field of items of that family (e.g. nested layers).
    """
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices,
            "registry": registry}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoOptions:
    """Takes no options."""


@dataclass(frozen=True)
class Entry:
    family: str
    name: str
    build: Callable
    options: type
    positional: str | None
    doc: str
    meta: dict

    def fields(self) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(self.options)


class Registry:
    """Names of one family (layers, losses, ...) and how to build each."""

    def __init__(self, family: str, noun: str):
        self.family = family
        self.noun = noun
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, options: type = NoOptions, *, positional: str | None = None,
                 **meta) -> Callable[[Callable], Callable]:
        """Decorator: `@LAYERS.register("dense", DenseOptions, positional="features")`.

        `positional` names the option that the short form `kind: value` sets.
        """

        def wrap(build: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.family} '{name}' registered twice")
            doc = inspect.getdoc(build) or inspect.getdoc(options) or ""
            self._entries[name] = Entry(self.family, name, build, options, positional,
                                        doc.strip(), dict(meta))
            return build

        return wrap

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str, path: str = "") -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise SpecError(path, unknown(self.noun, name, self._entries)) from None


SOURCES = Registry("source", "data source")
PREP = Registry("prep", "prep step")
LAYERS = Registry("layer", "layer kind")
LOSSES = Registry("loss", "loss")
OPTIMIZERS = Registry("optimizer", "optimizer")
SCHEDULES = Registry("schedule", "schedule")
METRICS = Registry("metric", "metric")
CHARTS = Registry("chart", "chart kind")

FAMILIES = {r.family: r for r in (SOURCES, PREP, LAYERS, LOSSES, OPTIMIZERS, SCHEDULES, METRICS, CHARTS)}

# Modules whose import fills the registries (none of them imports JAX at module level).
_REGISTERING = (
    "compilers.data.sources",
    "compilers.data.prep",
    "compilers.model.layers",
    "compilers.train.losses",
    "compilers.train.optim",
    "compilers.train.metrics",
    "compilers.charts",
)


def load_all() -> None:
    for module in _REGISTERING:
        importlib.import_module(module)


def one_line(doc: str) -> str:
    return doc.strip().split("\n\n")[0].replace("\n", " ") if doc else ""
