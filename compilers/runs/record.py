"""RunRecord: everything a finished (or running) run hands to the charts.

The trainer fills it; charts only read it. It is saved beside the run (metrics.jsonl,
summary.json, record.npz, record.json) and loaded again by `python -m dsl plot RUN_DIR`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class RunRecord:
    name: str
    task: str                                   # "classification" | "regression"
    history: list[dict]                         # one dict per epoch: epoch, loss, val_loss,
                                                # <metric>, val_<metric>, lr, time (seconds)
    summary: dict = field(default_factory=dict)  # what summary.json holds
    layers: list[dict] = field(default_factory=list)
    # ^ one row per layer, in order, nested layers included: index ("0", "2.1"), kind, path
    #   (spec key path), depth (0 top level), output_shape (list, batch axis omitted),
    #   params (int), activation (str|None), param_shapes ({"kernel": [..], ...})
    class_names: list[str] | None = None        # classification only
    feature_names: list[str] = field(default_factory=list)
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # ^ split ("test", "val") -> {"y_true": [n], "y_pred": [n], "proba": [n, C] (classification)}
    #   y_true / y_pred are class indices (int) for classification, values (float) for regression.
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # ^ final parameters by layer index ("0", "2.1") -> {"kernel": array, "bias": array, ...}
    lr_curve: dict[str, np.ndarray] = field(default_factory=dict)
    # ^ {"step": [k], "epoch": [k] (fractional), "lr": [k]}: learning rate by step, at most ~2000 points
    data: dict[str, Any] = field(default_factory=dict)
    # ^ {"source", "n_rows", "n_features", "input_shape", "splits": {"train": n, "val": n, "test": n}}
    activations: dict[str, dict] = field(default_factory=dict)
    # ^ layer index -> {"counts": [40], "edges": [41], "mean", "std", "zero_fraction" (outputs exactly 0),
    #   "dead_fraction" (units that are 0 for every probed example)}: outputs of each layer on up to
    #   one batch of validation (else test, else train) data, after training
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    # ^ a few test examples for the image and sequence charts (k <= 64):
    #   {"x": [k, *input_shape] the model's inputs (after prep; images in [0, 1] when `image` prep ran),
    #    "row": [k] int, index into predictions["test"] (so y_true/y_pred/proba of example i are at row[i]),
    #    "saliency": [k, *input_shape] |d output(true class or the prediction) / d input| (absent if not computed)}
    #   For token inputs x holds token ids and saliency is [k, T] per-token attribution by occlusion
    #   (how much the true class's probability, or the prediction, changes when the token becomes <unk>).
    #   Image saliency is SmoothGrad: the mean |gradient| over the input and noisy copies of it.
    feature_maps: dict[str, np.ndarray] = field(default_factory=dict)
    # ^ conv layer index -> its outputs for the first k <= 8 examples: [k, H, W, C] (2-D) or [k, T, C] (1-D)
    embedding: dict[str, np.ndarray] = field(default_factory=dict)
    # ^ {"points": [n <= 2000, d] hidden features of test rows at the layer before the head,
    #    "row": [n] int, index into predictions["test"]}; the layer index is `embedding_layer`
    embedding_layer: str | None = None
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    # ^ attention/transformer layer index -> weights [k <= 8, heads, T, T] for the first k examples
    data_sample: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # ^ tabular data for the data charts, at most 2000 rows sampled evenly (tables only; empty for
    #   images and tokens): {"raw": {column: [n] values (numbers as float, text as str)},
    #   "prepared": {feature: [n] float32 training-split rows after prep}, "prepared_target": {"y": [n]}}
    #   The raw sample covers all rows (every split); its target column is data["target"].
    gradients: dict[str, np.ndarray] = field(default_factory=dict)
    # ^ layer index -> [epochs] global norm of that layer's parameter gradients, averaged over the
    #   epoch's steps (computed inside the compiled epoch)
    weight_histograms: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # ^ layer index -> {"counts": [epochs, 30] histogram of the layer's kernel (or first parameter) at
    #   the end of each epoch, "edges": [31] fixed bins (the range of the initial and final weights, padded)}
    decision_grid: dict[str, np.ndarray] = field(default_factory=dict)
    # ^ two-feature classification only: {"x0": [G], "x1": [G] grid axes in prepared feature units,
    #   "proba": [G, G, C] predicted probabilities at (x1[i], x0[j]) -> proba[i, j]}
    vocabulary: list[str] | None = None
    # ^ token id -> token for text data; id 0 is padding ("<pad>"), id 1 out-of-vocabulary ("<unk>")
    monitor: str | None = None                  # the early-stopping/best-epoch history key
    best_epoch: int | None = None

    # --- persistence -------------------------------------------------------------------
    def save(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        arrays: dict[str, np.ndarray] = {}
        for group, attr in NESTED.items():      # group/outer/inner
            for outer, d in getattr(self, attr).items():
                for k, v in d.items():
                    arrays[f"{group}/{outer}/{k}"] = np.asarray(v)
        for group, attr in FLAT.items():        # group/key
            for k, v in getattr(self, attr).items():
                arrays[f"{group}/{k}"] = np.asarray(v)
        tmp = run_dir / "record.npz.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        tmp.replace(run_dir / "record.npz")
        meta = {"name": self.name, "task": self.task, "layers": self.layers,
                "class_names": self.class_names, "feature_names": self.feature_names,
                "data": self.data, "monitor": self.monitor, "best_epoch": self.best_epoch,
                "embedding_layer": self.embedding_layer, "vocabulary": self.vocabulary}
        _write_json(run_dir / "record.json", meta)

    @classmethod
    def load(cls, run_dir: Path) -> "RunRecord":
        run_dir = Path(run_dir)
        meta = json.loads((run_dir / "record.json").read_text())
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        summary = json.loads((run_dir / "summary.json").read_text())
        rec = cls(history=history, summary=summary, **meta)
        with np.load(run_dir / "record.npz") as z:
            for key in z.files:
                group, first, *rest = key.split("/")
                v = z[key]
                if group in FLAT:
                    getattr(rec, FLAT[group])[first] = v
                elif group in NESTED:
                    inner = "/".join(rest)  # data-sample column names may hold "/"
                    getattr(rec, NESTED[group]).setdefault(first, {})[inner] = v if v.ndim or group != "act" else float(v)
        return rec


# record.npz key prefixes -> RunRecord fields: NESTED fields are {outer: {inner: array}}, FLAT ones {key: array}
NESTED = {"pred": "predictions", "weights": "weights", "act": "activations", "wh": "weight_histograms",
          "ds": "data_sample"}
FLAT = {"lr": "lr_curve", "ex": "examples", "fmap": "feature_maps", "emb": "embedding", "attn": "attention",
        "grad": "gradients", "grid": "decision_grid"}


def _write_json(path: Path, value: Any) -> None:
    """Writes to a temporary name, then renames: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=_jsonable))
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


write_json = _write_json
