"""Writes examples/data/order.csv: a text task that only word order can solve.

Each sentence has 8 to 12 words: filler words drawn from 30, plus "alpha" and "omega" once each
at random places. The label says which of the two comes first (alpha_first / omega_first). The
filler words, the sentence lengths and the two markers' positions (as a set) are drawn the same
way for both classes, so every bag of words is equally likely under either label: only the
order of the words tells the classes apart. 2000 rows, 1000 per class. Deterministic (seed 0):

    python examples/data/make_order.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

ROWS, SEED = 2000, 0
FILLER = ("the", "a", "cat", "dog", "bird", "fish", "runs", "jumps", "sleeps", "sees", "over", "under",
          "near", "far", "red", "blue", "green", "big", "small", "quick", "slow", "old", "new", "tree",
          "house", "river", "sun", "moon", "and", "then")
OUT = Path(__file__).resolve().parent / "order.csv"


def main() -> None:
    assert len(set(FILLER)) == 30
    rng = np.random.default_rng(SEED)
    labels = rng.permutation(np.arange(ROWS) % 2)       # exactly half of each
    with OUT.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["text", "label"])
        for label in labels:
            length = int(rng.integers(8, 13))
            words = list(rng.choice(FILLER, size=length - 2))
            first, second = sorted(rng.choice(length, size=2, replace=False))
            a, b = ("alpha", "omega") if label == 0 else ("omega", "alpha")
            words.insert(first, a)
            words.insert(second, b)
            out.writerow([" ".join(words), "alpha_first" if label == 0 else "omega_first"])
    print(f"wrote {ROWS} rows to {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
