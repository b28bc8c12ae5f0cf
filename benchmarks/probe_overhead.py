"""What the chart probes cost: training with them (gradient norms in every step, weight histograms
every epoch, the post-training probes) against training without. Run by hand:

    python benchmarks/probe_overhead.py [--epochs 30] [--repeats 3]

Goal (the chart-catalogue issue): with every probe on, training stays within 1.5x of none.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DSL_COMPILATION_CACHE", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compilers.pipeline import plan_spec  # noqa: E402
from compilers.train import step  # noqa: E402
from compilers.train.loop import train  # noqa: E402
from dsl.commands.run import prepare  # noqa: E402

CASES = {"digits MLP 64-256-128-10": ["conf=examples/iris.yaml", "data.source=digits", "data.target=null",
                                      "model.layers=[{dense: 256}, relu, {dense: 128}, relu]"],
         "digits CNN": ["conf=examples/digits_cnn.yaml"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for name, conf in CASES.items():
        _, _, _, _, spec = prepare([*conf, "plots=[]", f"train.epochs={args.epochs}", "train.early_stopping=null"],
                                   ROOT, sweep_ok=False)
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for probes in (True, False):
                step.PROBES = probes
                data, plan = plan_spec(spec, ROOT)
                run = {}
                with tempfile.TemporaryDirectory() as d:
                    train(plan, data, Path(d), progress=False, times=run)
                # steady-state training: the loop's wall time less the first (compiling) epoch
                times[probes].append(run["train_s"] - run["compile_s"])
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"{name}: {args.epochs} epochs, probes on {on:.2f} s, off {off:.2f} s, ratio {on / off:.2f}x")


if __name__ == "__main__":
    main()
