"""Charts: `(RunRecord, options) -> altair chart` builders registered in `dsl.registry.CHARTS`.

Importing this package fills the registry (one module per chart family) without importing
altair, pandas or JAX. Rendering (`render.render_charts`) and the report (`report.write_report`)
are separate modules.
"""

from __future__ import annotations

from compilers.charts import evaluation, model, training  # noqa: F401  (register the charts)
from compilers.charts import interpret  # noqa: F401,E402  (registered after: listed after the others)
from compilers.charts import data  # noqa: F401,E402  (after interpret: `samples` leads the Data section)
from compilers.charts.base import SECTIONS, ChartSkip
from dsl.registry import CHARTS
from dsl.spec import Item

__all__ = ["ChartSkip", "SECTIONS", "applies", "auto_items", "is_auto"]


def applies(entry, task: str) -> bool:
    """Whether a registered chart applies to runs of this task."""
    return task in entry.meta.get("tasks", ("classification", "regression"))


def is_auto(entry, task: str) -> bool:
    """Whether `plots: auto` includes this chart for this task (meta auto: True or a tuple of tasks)."""
    auto = entry.meta.get("auto", False)
    if not applies(entry, task):
        return False
    return task in auto if isinstance(auto, (tuple, list)) else bool(auto)


def input_kind(input_shape, dtype) -> str:
    """'tokens' (integer ids), 'image' (a spatial example: rank >= 2) or 'tabular'."""
    import numpy as np

    if np.issubdtype(np.dtype(dtype), np.integer):
        return "tokens"
    return "image" if len(tuple(input_shape)) >= 2 else "tabular"


def plot_items(plots, task: str, input_shape, input_dtype) -> tuple[Item, ...]:
    """The charts a run draws: its `plots` list, or for `plots: auto` what suits its task and inputs."""
    if plots != "auto":
        return tuple(plots)
    kind = input_kind(input_shape, input_dtype)
    return auto_items(task, kind, tuple(input_shape)[0] if kind == "tabular" else None)


def auto_items(task: str, inputs: str | None = None, n_features: int | None = None) -> tuple[Item, ...]:
    """The charts `plots: auto` draws for a task, by section (Data first), then registration order.

    `inputs` ('tabular', 'image', 'tokens'; None: any) leaves out charts whose meta `inputs` does
    not list it, e.g. image grids for a table; a chart whose meta `n_features` asks for a number of
    features (the decision boundary: 2) is drawn only when `n_features` is that number."""
    entries = [e for e in CHARTS if is_auto(e, task)
               and (inputs is None or inputs in e.meta.get("inputs", (inputs,)))
               and e.meta.get("n_features", n_features) == n_features]
    order = {s: i for i, s in enumerate(SECTIONS)}
    entries.sort(key=lambda e: order.get(e.meta.get("section"), len(order)))
    return tuple(Item(e.name, e.options(), path="plots") for e in entries)
