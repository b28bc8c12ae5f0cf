"""Big data: a generated CSV of --rows x --cols (default 1,000,000 x 50, float32 values and a binary
target) trained by a small MLP, in a child process whose peak memory is measured. Run by hand:

    python benchmarks/big_data.py                      # 1,000,000 x 50, 2 epochs
    python benchmarks/big_data.py --rows 200000 --epochs 1

Prints: the CSV's size, load time (read + split + prep, summary.json's data_s), training samples/s,
whole-run wall time, and peak RSS against the float32 size of the data (the goal: at most 3x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
name: big
seed: 0
data:
  source: {csv}
  target: y
  prep: [standardize]
  split: {{test: 0.1, val: 0.05}}
model:
  layers: [{{dense: 64}}, relu, {{dense: 64}}, relu]
train:
  epochs: {epochs}
  batch_size: 1024
  optimizer: {{name: adam, lr: 1.0e-3}}
  metrics: [accuracy]
report: {{images: none}}
plots: [learning_curves]
"""


def write_csv(path: Path, rows: int, cols: int) -> None:
    """Chunked so that writing stays small in memory: y = [x . w > 0], w fixed."""
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.normal(size=cols).astype(np.float32)
    with open(path, "w") as f:
        f.write(",".join([f"x{j}" for j in range(cols)] + ["y"]) + "\n")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            x = rng.normal(size=(n, cols)).astype(np.float32)
            y = (x @ w > 0).astype(np.int8)
            block = np.column_stack([x.round(4), y])
            np.savetxt(f, block, delimiter=",", fmt=["%.4f"] * cols + ["%d"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsl-big-"))
    csv = work / "big.csv"
    t = time.perf_counter()
    write_csv(csv, args.rows, args.cols)
    print(f"wrote {csv} ({csv.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t:.1f} s", flush=True)
    spec = work / "big.yaml"
    spec.write_text(SPEC.format(csv=csv, epochs=args.epochs))
    env = {**os.environ, "DSL_CACHE_DIR": str(work / "cache"), "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dsl", "run", f"conf={spec}", f"hydra.run.dir={work / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024      # Linux: KiB
    summary = json.loads((work / "run" / "summary.json").read_text())
    times = summary["times"]
    n_train = summary["data"]["sizes"]["train"]
    data_bytes = args.rows * (args.cols + 1) * 4
    train_s = max(times["train_s"] - times.get("compile_s", 0.0), 1e-9)
    rate = n_train * max(args.epochs - 1, 1) / train_s if args.epochs > 1 else n_train / times["train_s"]
    result = {"rows": args.rows, "cols": args.cols, "csv_mib": round(csv.stat().st_size / 2**20, 1),
              "float32_mib": round(data_bytes / 2**20, 1), "load_s": times["data_s"], "plan_s": times["plan_s"],
              "train_s": times["train_s"], "samples_per_s_after_first_epoch": round(rate),
              "wall_s": round(wall, 1), "peak_rss_mib": round(peak / 2**20, 1),
              "peak_over_float32": round(peak / data_bytes, 2), "test_accuracy": summary["metrics"]["test"]["accuracy"]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
