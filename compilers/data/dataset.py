"""The prepared data set the trainer and the charts receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Table:
    """What a source returns: a raw frame, and what it knows about its target and task."""

    frame: Any                          # pandas.DataFrame, raw
    target: str | None = None           # the source's own target column, if it has one
    task: str | None = None             # "classification" | "regression" | None (infer)
    description: str = ""               # one line for the report header, e.g. "iris (150 rows)"


@dataclass
class Dataset:
    task: str                                   # "classification" | "regression"
    feature_names: list[str]                    # after prep (one_hot expands columns)
    class_names: list[str] | None               # classification: index -> label
    x: dict[str, np.ndarray]                    # "train"/"val"/"test" -> float32 [n, *input_shape]
    y: dict[str, np.ndarray]                    # int32 [n] class index, or float32 [n] (regression)
    input_shape: tuple[int, ...]                # one example's shape
    raw: Any = None                             # pandas.DataFrame before prep (features + target)
    target: str = ""                            # target column name
    prep_state: list[dict] = field(default_factory=list)  # JSON-able fitted state per prep step
    description: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    def sizes(self) -> dict[str, int]:
        return {k: int(v.shape[0]) for k, v in self.x.items()}
