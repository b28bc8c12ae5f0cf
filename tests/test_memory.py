"""A run's memory: glibc's mmap threshold fixed (freed large buffers leave the process;
benchmarks/big_data.py measures the peak itself)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


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
