"""The prepared data set the trainer and the charts receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

RAW_SAMPLE_ROWS = 2000   # rows of the raw table a Dataset keeps for the data charts (evenly spaced)
ALIGN = 64               # bytes: JAX on a CPU uses 64-byte aligned NumPy arrays in place (device_put copies others)


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ALIGN-byte boundary, so that
    `jax.device_put` on a CPU can use it without a copy (pages are committed as they are written)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + ALIGN, np.uint8)
    start = (-buf.ctypes.data) % ALIGN
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def zero_pages(shape, dtype=np.float32) -> np.ndarray:
    """A C-contiguous array of zeros in an anonymous mapping of its own (page-aligned): its pages
    cost no memory until written (reading one maps the kernel's one zero page), and `jax.device_put`
    on a CPU uses it in place. For arrays that stand in for data by their shape alone."""
    import mmap

    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape, dtype=np.int64))
    # private: a page of a shared anonymous mapping is real memory once read
    pages = mmap.mmap(-1, max(1, count * dtype.itemsize), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(pages, dtype, count).reshape(shape)


@dataclass
class Table:
    """What a source returns: a raw frame (tabular sources) or arrays (npz, image folders),
    and what it knows about its target and task."""

    frame: Any = None                   # pandas.DataFrame, raw; None for array sources
    target: str | None = None           # the source's own target column, if it has one
    task: str | None = None             # "classification" | "regression" | None (infer)
    description: str = ""               # one line for the report header, e.g. "iris (150 rows)"
    # Array sources set these instead of `frame`:
    x: np.ndarray | None = None         # [n, *example_shape], float32
    y: np.ndarray | None = None         # [n] labels (any dtype), or class indices when class_names is set
    class_names: list[str] | None = None  # index -> label when y holds class indices (image folders)
    kind: str = ""                      # the source's registered name, e.g. "image_folder"
    # Built-in tables of numbers set these instead of `frame` (with `y`, and `class_names` for
    # classes): read by the columnar loader without pandas; `numeric_frame()` for the frame path.
    matrix: np.ndarray | None = None    # [n, F] the feature columns' values
    columns: list[str] | None = None    # their names

    @property
    def is_array(self) -> bool:
        return self.x is not None

    def numeric_frame(self):
        """The pandas frame of a table given as `matrix` (features, then the target column: class
        names as strings, or numbers)."""
        import pandas as pd

        frame = pd.DataFrame(self.matrix, columns=self.columns)
        if self.class_names is not None:
            frame[self.target] = pd.Series(np.asarray(self.class_names, dtype=object)[self.y], dtype=str)
        else:
            frame[self.target] = np.asarray(self.y, dtype=np.float64).reshape(-1)
        return frame


@dataclass
class Columns:
    """A small table as NumPy columns (`columns` in order, `values` by name, the rows' `index`): the
    raw rows the data charts draw, where the columnar loader read the data without pandas. Each
    column holds what `DataFrame[c].to_numpy()` would: float64 numbers, strings with NaN for a gap."""
    columns: list[str]
    values: dict[str, np.ndarray]
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def column(self, name: str) -> np.ndarray:
        return self.values[name]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({c: self.values[c] for c in self.columns}, index=self.index)


@dataclass
class Dataset:
    task: str                                   # "classification" | "regression"
    feature_names: list[str]                    # after prep (one_hot expands columns)
    class_names: list[str] | None               # classification: index -> label
    x: dict[str, np.ndarray]                    # "train"/"val"/"test" -> [n, *input_shape]: float32,
    #                                             or int32 token ids [n, max_len] after `tokenize`
    #                                             (float32 is exact only up to 2**24; ids stay integers)
    y: dict[str, np.ndarray]                    # int32 [n] class index, or float32 [n] (regression)
    input_shape: tuple[int, ...]                # one example's shape
    raw: Any = None                             # the table before prep (features + target): the
    #                                             whole table up to RAW_SAMPLE_ROWS rows, else that many
    #                                             evenly spaced rows (what the data charts draw); a
    #                                             pandas.DataFrame, or `Columns` from the columnar
    #                                             loader; None for array data (npz, image folders)
    target: str = ""                            # target column name
    prep_state: list[dict] = field(default_factory=list)  # JSON-able fitted state per prep step
    description: str = ""
    vocabulary: list[str] | None = None         # text: token id -> token; 0 "<pad>", 1 "<unk>"

    @property
    def n_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    def sizes(self) -> dict[str, int]:
        return {k: int(v.shape[0]) for k, v in self.x.items()}
