"""Big data: a generated CSV of --rows x --cols (default 1,000,000 x 50, float32 values and a binary
target) trained by a small MLP, in a child process whose peak memory is measured, once per
`train.feed` (device: the training split put on the device once; chunks: streamed in chunks of
--chunk-rows, default the language's own choice). Run by hand:

    python benchmarks/big_data.py                      # 1,000,000 x 50, 2 epochs, both feeds
    python benchmarks/big_data.py --rows 200000 --epochs 1 --feed chunks --chunk-rows 65536
    python benchmarks/big_data.py --csv /tmp/big.csv   # reuse (or keep) the generated file
    python benchmarks/big_data.py --format parquet     # the same table as a Parquet file
    python benchmarks/big_data.py --text               # plus a text column (one_hot) and string labels
    python benchmarks/big_data.py --parts 4            # the table in 4 files, read by a glob pattern

Prints per feed: the CSV's (and the Parquet file's) size, load time (read + split + prep, summary.json's data_s), training
samples/s, whole-run wall time, test accuracy, and memory against the float32 size of the data (the
goal: at most 3x): the peak RSS of the command's largest process (the training process), also less
the peak of the same run on --baseline-rows rows (what a run costs whatever its data: Python, JAX,
XLA's compiled programs, charts), and the whole command's (`command_pss_mib`: the largest sum of
the PSS of all its processes at once, the command, the training process and the chart-image
processes, sampled every 10 ms). Every run starts
with a cold compilation cache; --warm runs each feed a second time on the first run's caches (a
spec run again: XLA's executables and the stored programs load, nothing compiles).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
name: big
seed: 0
data:
  source: {source}
  target: y
  prep: {prep}
  split: {{test: 0.1, val: 0.05}}
model:
  layers: [{{dense: 64}}, relu, {{dense: 64}}, relu]
train:
  epochs: {epochs}
  batch_size: 1024
  optimizer: {{name: adam, lr: 1.0e-3}}
  metrics: [accuracy]
report: {{images: {images}}}
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


def write_text_csv(csv: Path, path: Path) -> None:
    """The CSV with text: a `city` column of 5 strings in front, 1% of x0 left empty, and the
    target as the strings negative/positive (in a process of its own: it holds the whole table)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(csv)
    rng = np.random.default_rng(1)
    x0 = table["x0"].to_numpy().copy()
    x0[rng.random(len(x0)) < 0.01] = np.nan
    labels = np.array(["negative", "positive"], dtype=object)[table["y"].to_numpy()]
    city = np.array(["paris", "lyon", "nice", "lille", "brest"], dtype=object)[rng.integers(0, 5, table.num_rows)]
    table = table.set_column(0, "x0", pa.array(x0, from_pandas=True))
    table = table.set_column(table.schema.get_field_index("y"), "y", pa.array(labels, type=pa.string()))
    pacsv.write_csv(table.add_column(0, "city", pa.array(city, type=pa.string())), path)


def write_parquet(csv: Path, path: Path) -> None:
    """The CSV's table as Parquet (float32 features, the target int8) with pyarrow's default row
    groups (up to 1,048,576 rows each; pandas' `to_parquet` writes the same), in a process of its
    own (`apart`): it holds the whole table while it writes."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(csv)
    schema = pa.schema([pa.field(f.name, pa.float32() if pa.types.is_floating(f.type) else
                                 pa.int8() if pa.types.is_integer(f.type) else f.type) for f in table.schema])
    pq.write_table(table.cast(schema), path)


def write_parts(source: Path, folder: Path, parts: int) -> None:
    """The table of `source` (CSV or Parquet) cut into `parts` files of consecutive rows,
    folder/part-1.<ext> ... (a table as Spark or Dask writes it), in a process of its own."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    csv = source.suffix == ".csv"
    table = pacsv.read_csv(source) if csv else pq.read_table(source)
    folder.mkdir(parents=True, exist_ok=True)
    n = table.num_rows
    for i in range(parts):
        part = table.slice(i * n // parts, (i + 1) * n // parts - i * n // parts)
        path = folder / f"part-{i + 1}{source.suffix}"
        pacsv.write_csv(part, path) if csv else pq.write_table(part, path)


def apart(fn, *args) -> None:
    """fn(*args) in a process of its own. A child's peak RSS as the kernel reports it (os.wait4)
    includes the memory of this process at the moment it forked the child (the copy it replaced
    by exec), so this process stays small: whatever writes the data files frees nothing back to it."""
    import multiprocessing

    p = multiprocessing.get_context("spawn").Process(target=fn, args=args)
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"{fn.__name__} failed (exit status {p.exitcode})")


def _tree(pid: int) -> list[int]:
    """pid and its descendants (Linux: /proc/PID/task/TID/children)."""
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    found += _tree(int(child))
    except OSError:   # ended meanwhile
        pass
    return found


def _pss(pid: int) -> int:
    """A process's proportional set size in bytes (its private pages, and its share of those it
    shares with others), 0 once it has ended."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """The largest sum, over the command and every process it started (the training process, the
    chart-image processes), of their PSS, sampled every `every` seconds: what the whole command
    holds at once. A peak shorter than a sample can be missed; the largest single process's peak
    (the kernel's, from wait4) is exact."""

    def __init__(self, pid: int, every: float = 0.01):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.stop = pid, every, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, sum(_pss(p) for p in _tree(self.pid)))
            self.stop.wait(self.every)


def run(spec: Path, work: Path, name: str, overrides: list[str]) -> tuple[dict, float, int, int]:
    """(summary.json, wall seconds, peak RSS bytes, peak summed PSS bytes) of one run of the
    command. The peak RSS is the largest of its processes' own (os.wait4: the command, and the
    descendants it waited for), not of all children so far; the PSS is summed over the command's
    processes at once (sampled; `TreeMemory`)."""
    env = {**os.environ, "DSL_CACHE_DIR": str(work / "cache"), "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    run_dir = work / name
    log = work / f"{name}.log"
    t = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-m", "dsl", "run", f"conf={spec}", f"hydra.run.dir={run_dir}",
                                  *overrides], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        tree = TreeMemory(child.pid)
        tree.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            tree.stop.set()
            tree.join()
    wall = time.perf_counter() - t
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(log.read_text()[-3000:])
    return json.loads((run_dir / "summary.json").read_text()), wall, usage.ru_maxrss * 1024, tree.peak   # KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--feed", choices=["device", "chunks", "both"], default="both")
    ap.add_argument("--chunk-rows", type=int, default=None, help="train.chunk_rows with --feed chunks (default: null)")
    ap.add_argument("--baseline-rows", type=int, default=2000, help="rows of the small run whose peak is subtracted (0: none)")
    ap.add_argument("--csv", type=Path, default=None, help="use this CSV if it exists, else write it there and keep it")
    ap.add_argument("--format", choices=["csv", "parquet"], default="csv",
                    help="the file the runs read: the CSV, or the same table as Parquet (written beside it)")
    ap.add_argument("--text", action="store_true",
                    help="add a text column (5 cities, one_hot), 1%% gaps in x0 (impute) and string labels")
    ap.add_argument("--images", choices=["auto", "none", "png", "svg", "both"], default="auto",
                    help="report.images of the runs (auto: PNGs, as a spec that does not say)")
    ap.add_argument("--warm", action="store_true", help="also run each feed a second time, its caches warm")
    ap.add_argument("--parts", type=int, default=1,
                    help="cut the file into this many (part-1 ... part-K) and read them by a glob pattern")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsl-big-"))
    try:
        csv = args.csv or work / "big.csv"
        if not csv.exists():
            t = time.perf_counter()
            apart(write_csv, csv, args.rows, args.cols)
            print(f"wrote {csv} ({csv.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t:.1f} s", flush=True)
        source = csv
        prep = "[impute, {one_hot: [city]}, standardize]" if args.text else "[standardize]"
        if args.text:
            source = work / "big_text.csv"
            apart(write_text_csv, csv, source)
        if args.format == "parquet":
            t = time.perf_counter()
            apart(write_parquet, source, work / "big.parquet")
            source = work / "big.parquet"
            print(f"wrote {source} ({source.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t:.1f} s", flush=True)
        file_bytes = source.stat().st_size
        if args.parts > 1:
            apart(write_parts, source, work / "parts", args.parts)
            files = sorted((work / "parts").iterdir())
            file_bytes = sum(f.stat().st_size for f in files)
            print(f"cut it into {len(files)} files ({file_bytes / 2**20:,.0f} MiB)", flush=True)
            source = work / "parts" / f"part-*{source.suffix}"
        spec = work / "big.yaml"
        spec.write_text(SPEC.format(source=source, epochs=args.epochs, prep=prep, images=args.images))
        data_bytes = args.rows * (args.cols + 1 + args.text) * 4     # every column of the file as float32
        base = 0
        if args.baseline_rows:
            small = work / "small.csv"
            apart(write_csv, small, args.baseline_rows, args.cols)
            if args.text:
                apart(write_text_csv, small, work / "small_text.csv")
                small = work / "small_text.csv"
            if args.format == "parquet":
                apart(write_parquet, small, work / "small.parquet")
                small = work / "small.parquet"
            (work / "small.yaml").write_text(SPEC.format(source=small, epochs=args.epochs, prep=prep, images=args.images))
            _, _, base, base_pss = run(work / "small.yaml", work, "small", [])
        feeds = ["device", "chunks"] if args.feed == "both" else [args.feed]
        results = []
        for feed in feeds:
            overrides = [f"train.feed={feed}"]
            if feed == "chunks" and args.chunk_rows:
                overrides.append(f"train.chunk_rows={args.chunk_rows}")
            summary, wall, peak, pss = run(spec, work, f"run_{feed}", overrides)
            times = summary["times"]
            n_train = summary["data"]["sizes"]["train"]
            train_s = max(times["train_s"] - times.get("compile_s", 0.0), 1e-9)
            rate = n_train * max(args.epochs - 1, 1) / train_s if args.epochs > 1 else n_train / times["train_s"]
            result = {"feed": summary.get("feed", {"kind": feed}), "format": args.format, "rows": args.rows,
                      "cols": args.cols, "csv_mib": round(csv.stat().st_size / 2**20, 1),
                      "file_mib": round(file_bytes / 2**20, 1), "parts": args.parts,
                      "float32_mib": round(data_bytes / 2**20, 1),
                      "load_s": times["data_s"], "plan_s": times["plan_s"], "compile_s": times.get("compile_s"),
                      "train_s": times["train_s"], "samples_per_s_after_first_epoch": round(rate),
                      "wall_s": round(wall, 1), "peak_rss_mib": round(peak / 2**20, 1),
                      "peak_over_float32": round(peak / data_bytes, 2),
                      "command_pss_mib": round(pss / 2**20, 1), "command_pss_over_float32": round(pss / data_bytes, 2),
                      "test_accuracy": summary["metrics"]["test"]["accuracy"]}
            if base:
                result.update(baseline_peak_mib=round(base / 2**20, 1), baseline_command_pss_mib=round(base_pss / 2**20, 1),
                              peak_less_baseline_over_float32=round((peak - base) / data_bytes, 2))
            if args.warm:   # the same run again: XLA's cache and the stored programs hit, nothing compiles
                summary, wall, peak, pss = run(spec, work, f"run_{feed}_warm", overrides)
                result["warm"] = {"wall_s": round(wall, 1), "load_s": summary["times"]["data_s"],
                                  "compile_s": summary["times"].get("compile_s"),
                                  "peak_rss_mib": round(peak / 2**20, 1), "peak_over_float32": round(peak / data_bytes, 2),
                                  "command_pss_mib": round(pss / 2**20, 1),
                                  "command_pss_over_float32": round(pss / data_bytes, 2),
                                  "programs": summary.get("programs")}
            results.append(result)
            print(json.dumps(result, indent=1), flush=True)
    finally:
        keep = args.csv is not None
        for p in sorted(work.rglob("*"), reverse=True):
            if keep and p == csv:
                continue
            p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
        if not keep or csv.parent != work:
            work.rmdir()


if __name__ == "__main__":
    main()
