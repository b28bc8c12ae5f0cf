"""Writes examples/data/shapes/{circle,square,triangle}/NNN.png: 16x16 grayscale images.

A white shape on black at a random position, size and rotation, drawn at 4x and scaled down
(anti-aliased), with slight Gaussian noise; 100 images per class. Deterministic (seed 0):

    python examples/data/make_shapes.py
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE, SCALE, PER_CLASS, NOISE, SEED = 16, 4, 100, 0.04, 0
CLASSES = ("circle", "square", "triangle")
OUT = Path(__file__).resolve().parent / "shapes"


def polygon(cx: float, cy: float, r: float, sides: int, angle: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(angle + 2 * math.pi * k / sides), cy + r * math.sin(angle + 2 * math.pi * k / sides))
            for k in range(sides)]


def draw(shape: str, rng: np.random.Generator) -> np.ndarray:
    big = SIZE * SCALE
    image = Image.new("L", (big, big), 0)
    pen = ImageDraw.Draw(image)
    r = rng.uniform(3.5, 6.5) * SCALE                   # half the shape's extent, in big pixels
    cx, cy = rng.uniform(r + SCALE * 0.5, big - r - SCALE * 0.5, size=2)
    if shape == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":                             # corners on the circle of radius r
        pen.polygon(polygon(cx, cy, r, 4, math.pi / 4 + rng.uniform(-0.35, 0.35)), fill=255)
    else:
        pen.polygon(polygon(cx, cy, r, 3, rng.uniform(0, 2 * math.pi)), fill=255)
    small = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.float64) / 255.0
    small = small + rng.normal(0.0, NOISE, small.shape)
    return (np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(SEED)
    for shape in CLASSES:
        folder = OUT / shape
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
    for i in range(PER_CLASS):                          # interleaved: each class sees the same random stream
        for shape in CLASSES:
            Image.fromarray(draw(shape, rng), mode="L").save(OUT / shape / f"{i:03d}.png", optimize=True)
    total = sum(p.stat().st_size for p in OUT.rglob("*.png"))
    print(f"wrote {PER_CLASS * len(CLASSES)} images under {OUT} ({total / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
