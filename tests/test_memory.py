"""A run's memory: glibc's mmap threshold fixed (freed large buffers leave the process), orbax
imported only when a checkpoint is written or read, altair imported after the first epoch when
the training split is large (benchmarks/big_data.py measures the peak itself)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from compilers import pipeline
from compilers.train import loop
from dsl.parse import parse_spec

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"   # as compilers.memory finds it


def child(code: str, **env) -> str:
    import os

    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


RSS_AFTER_FREE = """
    import numpy as np
    from compilers import memory

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    print(memory.configure())
    big = np.ones(24 << 18, np.float32)   # 24 MiB, a mapping of its own; freed, glibc raises its threshold
    del big
    before = rss()
    a = np.ones(6 << 18, np.float32)       # 6 MiB: from the heap once the threshold is raised
    del a
    print(rss() - before)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc")
def test_a_freed_large_buffer_leaves_the_process():
    configured, kept = child(RSS_AFTER_FREE).split()
    assert configured == "True"
    assert int(kept) < 1 << 20, f"{int(kept) >> 20} MiB of a freed 6 MiB buffer still resident"


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc")
def test_dsl_malloc_0_leaves_malloc_alone():
    configured, kept = child(RSS_AFTER_FREE, DSL_MALLOC="0").split()
    assert configured == "False"
    assert int(kept) > 4 << 20   # glibc's own behaviour, which the setting above changes


def test_checkpoints_import_orbax_at_the_first_save(tmp_path):
    out = child(f"""
        import sys
        from compilers.runs.checkpoint import Checkpoints

        ck = Checkpoints({str(tmp_path)!r}, 2)
        ck.close()
        print("orbax.checkpoint" in sys.modules)
        ck = Checkpoints({str(tmp_path)!r}, 2)
        print(ck.latest(), "orbax.checkpoint" in sys.modules)
        ck.close()
    """)
    assert out.split() == ["False", "None", "True"]
    assert (tmp_path / "checkpoints").is_dir()    # made by the manager, as before


def tiny_spec(images: str = "none"):
    return parse_spec({"name": "mem", "seed": 0,
                       "data": {"source": "moons", "options": {"n_samples": 300}, "prep": ["standardize"]},
                       "model": {"layers": [{"dense": 8}, "relu"]},
                       "train": {"epochs": 2, "batch_size": 32}, "report": {"images": images},
                       "plots": ["learning_curves"]})


@pytest.mark.parametrize("large", [False, True])
def test_altair_preload_waits_for_the_first_epoch_of_a_large_split(tmp_path, monkeypatch, large):
    trims, started = [], []
    monkeypatch.setattr(loop, "give_back", lambda: trims.append(1))
    monkeypatch.setattr(pipeline, "_preload_altair", lambda: started.append(len(trims)) or _Done())
    monkeypatch.setattr(pipeline, "PRELOAD_AFTER_BYTES", 0 if large else 1 << 40)
    summary = pipeline.run_spec(tiny_spec(), tmp_path / "run", Path("."), progress=False)
    assert summary["status"] == "completed"
    # the first epoch's trim comes right before the callback; a small split starts at once
    assert started == ([1] if large else [0])


class _Done:
    def join(self):
        pass


PARQUET_POOL = """
    import sys
    from pathlib import Path

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from compilers.data.load import load_dataset
    from dsl.parse import parse_spec

    root = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(400_000, 16)).astype(np.float32), columns=[f"x{j}" for j in range(16)])
    frame["y"] = (frame["x0"] > 0).astype(np.int8)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), root / "t.parquet", row_group_size=50_000)
    table_bytes = 400_000 * 17 * 4
    del frame
    pool = pa.default_memory_pool()
    pool.release_unused()
    before = pool.max_memory()
    data = load_dataset(parse_spec({"data": {"source": str(root / "t.parquet"), "target": "y"},
                                    "model": {"layers": [{"dense": 4}]}}), root)
    assert data.x["train"].dtype == np.float32 and sum(x.shape[0] for x in data.x.values()) == 400_000
    print(before, pool.max_memory(), table_bytes)
"""


def test_a_parquet_file_is_read_a_column_chunk_at_a_time(tmp_path):
    """pyarrow's ParquetFile pre-buffers every column chunk of the file by default: more than the
    table again in its memory pool (1.7x here) while the loader copies the batches into float32
    blocks. Read a piece of each column chunk at a time, the pool holds ~0.3x of this small table
    (per-column buffers and one batch; ~0.1x of a 1,000,000 x 50 file)."""
    code = PARQUET_POOL.replace("sys.argv[1]", repr(str(tmp_path)))
    before, peak, table = map(int, child(code).split())
    assert peak - before < table * 0.5, (before, peak, table)


class _FakeRenderer:
    """Stands in for compilers.charts.renderer.Renderer: takes no image (each is drawn in-process)."""

    def __init__(self, events):
        self.events = events
        events.append("start")

    def submit(self, *args, **kwargs):
        return False

    def wait(self):
        return []

    def close(self):
        if "closed" not in self.__dict__:
            self.closed = True
            self.events.append("close")


def _watch_training(monkeypatch, events):
    train_group = loop.train_group

    def train(*args, **kwargs):
        events.append("train")
        return train_group(*args, **kwargs)

    monkeypatch.setattr(loop, "train_group", train)


@pytest.mark.parametrize("large", [False, True])
def test_the_image_processes_are_not_held_beside_a_large_split_while_it_trains(tmp_path, monkeypatch, large):
    events = []
    monkeypatch.setattr(pipeline, "PRELOAD_AFTER_BYTES", 0 if large else 1 << 40)
    monkeypatch.setattr(pipeline, "_start_renderer", lambda *a: _FakeRenderer(events))
    _watch_training(monkeypatch, events)
    summary = pipeline.run_spec(tiny_spec("png"), tmp_path / "run", Path("."), progress=False)
    assert summary["status"] == "completed" and (tmp_path / "run" / "charts" / "learning_curves.png").is_file()
    # a large split: the processes started with the run are closed once the data is loaded, and
    # started again for the charts, after the data is freed
    assert events == (["start", "close", "train", "start", "close"] if large else ["start", "train", "close"])


@pytest.mark.parametrize("large", [False, True])
def test_the_data_is_freed_before_the_charts_and_the_chart_side_is_told_when_to_start(tmp_path, monkeypatch, large):
    """In `python -m dsl run`'s training process (chart_drawer, chart_preparer set by dsl.worker's
    job): the command starts its image processes when told (a small split, once loaded) or when
    asked to draw (a large one); by then the data set is freed."""
    import weakref

    from compilers.data import load

    events, datasets = [], []
    load_dataset = load.load_dataset

    def loading(*args, **kwargs):
        data = load_dataset(*args, **kwargs)
        datasets.append(weakref.ref(data))
        return data

    def drawer(run_dir, plan, summary, images, validate, t, t_start, meanwhile=None):
        events.append("draw")
        assert [ref() for ref in datasets] == [None], "the data set is still held while the charts are drawn"
        if meanwhile is not None:
            meanwhile()
        return None   # drawn here, then

    monkeypatch.setattr(load, "load_dataset", loading)
    monkeypatch.setattr(pipeline, "PRELOAD_AFTER_BYTES", 0 if large else 1 << 40)
    monkeypatch.setattr(pipeline, "chart_drawer", drawer)
    monkeypatch.setattr(pipeline, "chart_preparer", lambda: events.append("prepare"))
    _watch_training(monkeypatch, events)
    summary = pipeline.run_spec(tiny_spec("png"), tmp_path / "run", Path("."), progress=False)
    assert summary["status"] == "completed" and len(datasets) == 1
    assert events == (["train", "draw"] if large else ["prepare", "train", "draw"])
