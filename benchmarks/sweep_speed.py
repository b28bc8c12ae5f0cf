"""Sweep speed: a 16-job sweep (4 learning rates x 4 seeds) with Hydra's basic launcher and with
`hydra/launcher=vmap`, against one job of the same sweep. Run by hand (not a test):

    python benchmarks/sweep_speed.py                 # moons MLP and digits MLP, 16 jobs each
    python benchmarks/sweep_speed.py --only moons --skip-basic

Every figure is the wall time of a whole `python -m dsl run -m ...` command (Python start-up,
imports, data, compilation, training, charts, the sweep report), with a warm compilation cache
(one untimed warm-up sweep of each configuration first). "one job" is a one-job sweep, so it
writes exactly what each job of the 16-job sweeps writes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LRS = "0.03,0.01,0.003,0.001"
SEEDS = "0,1,2,3"

SPECS = {
    "moons": "examples/moons.yaml",   # 2-32-32-32-2 with a residual block, 60 epochs, batch 64
    "digits": """\
name: digits-mlp
seed: 0
data:
  source: digits
  prep: [standardize]
  split: {test: 0.2, val: 0.1}
model:
  layers: [{dense: 256}, relu, {dense: 128}, relu]
train:
  epochs: 20
  batch_size: 32
  optimizer: {name: adam, lr: 1.0e-3}
  metrics: [accuracy]
plots: [learning_curves, confusion_matrix, weights]
""",
}


def run(args: list[str], cwd: Path, env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dsl", "run", *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(SPECS), help="one model only")
    ap.add_argument("--skip-basic", action="store_true", help="leave out the basic launcher (slow)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsl-sweep-bench-"))
    env = {**os.environ, "DSL_CACHE_DIR": str(work / "cache"), "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    results = {}
    for name, spec in SPECS.items():
        if args.only and name != args.only:
            continue
        if spec.endswith(".yaml"):
            conf = str(ROOT / spec)
        else:
            conf = str(work / f"{name}.yaml")
            Path(conf).write_text(spec)
        n = 0

        def sweep(*extra):
            nonlocal n
            n += 1
            return run(["-m", f"conf={conf}", f"hydra.sweep.dir={work / name / str(n)}", *extra], ROOT, env)

        grid = [f"train.optimizer.lr={LRS}", f"seed={SEEDS}"]
        sweep("hydra/launcher=vmap", *grid)            # warm-up: fills the compilation cache
        sweep("seed=0")
        row = {"one job": sweep("seed=0"), "vmap, 16 jobs": sweep("hydra/launcher=vmap", *grid)}
        if not args.skip_basic:
            row["basic, 16 jobs"] = sweep(*grid)
        results[name] = row
        one = row["one job"]
        shown = "  ".join(f"{k} {v:6.1f} s ({v / one:4.1f}x)" for k, v in row.items())
        print(f"{name:7s} {shown}", flush=True)
    print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
