"""Render chart items into files: charts/<name>.vl.json and charts/<name>.png.

A chart never crashes the run: ChartSkip (cannot be drawn for this record) and any other error
(a bug) are both recorded on the Rendered entry as a one-line reason.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from compilers.charts.base import CONFIG, ChartSkip
from dsl.registry import CHARTS


@dataclass
class Rendered:
    kind: str
    name: str                       # file stem: the kind, or kind_2, kind_3 for a repeated kind
    section: str
    title: str
    spec: dict | None = None        # the Vega-Lite spec (None when skipped)
    files: list[str] = field(default_factory=list)   # paths relative to the run directory
    skipped: str | None = None      # one-line reason the chart is missing
    warning: str | None = None      # drawn, but an image file could not be written
    seconds: float = 0.0            # time to build the spec (and write its files)


def with_config(spec: dict) -> dict:
    """The spec with the house config beneath any config the chart set itself."""
    merged = copy.deepcopy(CONFIG)
    for key, value in (spec.get("config") or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    out = dict(spec)
    out["config"] = merged
    return out


def to_spec(chart: Any, *, validate: bool = True) -> dict:
    """An Altair chart -> its Vega-Lite dict, with the house config.

    Top-level `datasets` (see base.DataSets) are taken out while Altair converts and validates
    the rest, then put back as they are: they are plain JSON rows, and walking thousands of them
    through Altair's converter and the JSON schema costs seconds, not milliseconds. Validation
    sees the first rows of every data set, so a malformed row shape is still caught.
    """
    from altair.utils.schemapi import Undefined

    datasets = getattr(chart, "datasets", Undefined)
    if datasets is Undefined or not isinstance(datasets, dict):
        datasets = {}
    else:
        chart = chart.copy(deep=False)
        chart.datasets = Undefined
    with warnings.catch_warnings():
        # Charts share one selection across concatenated panels on purpose (a hover or brush that
        # acts on every panel); Altair merges the copies and warns.
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection")
        spec = chart.to_dict(validate=False)
    if datasets:
        spec["datasets"] = {**spec.get("datasets", {}), **datasets}
    if validate:
        from altair.vegalite.v6.schema.core import TopLevelSpec

        trimmed = dict(spec)
        if "datasets" in spec:
            trimmed["datasets"] = {k: v[:20] for k, v in spec["datasets"].items()}
        TopLevelSpec.validate(trimmed)
    return with_config(spec)


def build_spec(record: Any, item: Any, *, validate: bool = True) -> dict:
    """One item (kind + options) -> its Vega-Lite dict; raises ChartSkip or the builder's error.

    Without `validate`, Altair's debug mode is off while the chart is built: it checks every
    schema object against the Vega-Lite schema as it is made (~30% of building a chart)."""
    from altair.utils.schemapi import debug_mode

    entry = CHARTS.get(item.kind)
    with debug_mode(validate):
        return to_spec(entry.build(record, item.options), validate=validate)


def spec_title(spec: dict | None, fallback: str) -> str:
    t = (spec or {}).get("title")
    if isinstance(t, dict):
        t = t.get("text")
    if isinstance(t, list):
        t = " ".join(map(str, t))
    return str(t) if t else fallback


PNG_SCALE = 2.0   # device pixels per CSS pixel: sharp on high-DPI screens and in slides


def render_charts(record: Any, items: Iterable[Any], charts_dir: Path, *, png: bool = True,
                  svg: bool = False, workers: int | None = None, scale: float = PNG_SCALE,
                  validate: bool = True, renderer: Any = None) -> list[Rendered]:
    """Build every item's chart and write charts_dir/<name>.vl.json (and .png, .svg).

    `items` are Items (kind, options); "auto" is not accepted here (use `auto_items(task)`).
    Paths in `files` are relative to the run directory (charts_dir's parent): "charts/<name>.png".
    `validate=False` skips the Vega-Lite schema check (~0.1 s a chart): the jobs of a vmapped group
    after the first draw the same charts from records of the same shapes.
    Images are converted in a pool of two threads (`workers=1`: one after another). vl-convert
    runs Vega in one embedded JS engine, so threads only overlap rasterising and PNG encoding: on
    a 2-core machine, 7 charts took 0.9-1.4 s (scale 2) either way, threads 0-25% faster, and more
    than two threads gained nothing.
    `renderer` (compilers.charts.renderer.Renderer, started with the run): each image is sent to
    that child process as soon as its chart is built, so conversion overlaps building the rest.
    """
    charts_dir = Path(charts_dir)
    charts_dir.mkdir(parents=True, exist_ok=True)
    out: list[Rendered] = []
    seen: dict[str, int] = {}
    sent: set[tuple[str, str]] = set()   # (name, fmt) handed to the renderer
    for item in items:
        seen[item.kind] = seen.get(item.kind, 0) + 1
        name = item.kind if seen[item.kind] == 1 else f"{item.kind}_{seen[item.kind]}"
        entry = CHARTS.get(item.kind) if item.kind in CHARTS else None
        section = entry.meta.get("section", "Other") if entry else "Other"
        fallback = item.kind.replace("_", " ").capitalize()
        r = Rendered(kind=item.kind, name=name, section=section, title=fallback)
        t0 = time.perf_counter()
        try:
            spec = build_spec(record, item, validate=validate)
        except ChartSkip as e:
            r.skipped = _line(str(e)) or "cannot be drawn for this run"
        except Exception as e:  # a chart must never crash the run
            r.skipped = f"failed: {type(e).__name__}: {_line(str(e))}"
        else:
            r.spec = spec
            r.title = spec_title(spec, fallback)
            path = charts_dir / f"{name}.vl.json"
            _write_text(path, json.dumps(spec, separators=(",", ":")))
            r.files.append(_rel(path, charts_dir))
            if renderer is not None:
                for fmt, wanted in (("png", png), ("svg", svg)):
                    if wanted and renderer.submit(spec, charts_dir / f"{name}.{fmt}", fmt, scale, tag=r):
                        sent.add((name, fmt))
        r.seconds = time.perf_counter() - t0
        out.append(r)

    if renderer is not None and sent:
        for r, path, fmt, problem, seconds in renderer.wait():
            r.seconds += seconds
            if problem is None:
                r.files.append(_rel(Path(path), charts_dir))
            else:
                r.warning = problem
    jobs = [(r, fmt) for r in out if r.spec is not None
            for fmt, wanted in (("png", png), ("svg", svg)) if wanted and (r.name, fmt) not in sent]
    if jobs:
        n = workers or min(2, os.cpu_count() or 1, len(jobs))

        def convert(job):
            r, fmt = job
            t0 = time.perf_counter()
            try:
                path = charts_dir / f"{r.name}.{fmt}"
                data = _convert(r.spec, fmt, scale)
                _write_bytes(path, data)
                return r, fmt, _rel(path, charts_dir), None, time.perf_counter() - t0
            except Exception as e:  # the spec is still there; only the image is missing
                return r, fmt, None, f"{fmt} failed: {type(e).__name__}: {_line(str(e))}", time.perf_counter() - t0

        if n > 1:
            with ThreadPoolExecutor(max_workers=n) as pool:
                results = list(pool.map(convert, jobs))
        else:
            results = [convert(j) for j in jobs]
        for r, fmt, rel, problem, seconds in results:
            r.seconds += seconds
            if rel:
                r.files.append(rel)
            else:
                r.warning = problem
    return out


def _convert(spec: dict, fmt: str, scale: float) -> bytes:
    from compilers.charts.renderer import convert

    return convert(spec, fmt, scale)


def _rel(path: Path, charts_dir: Path) -> str:
    return f"{charts_dir.name}/{path.name}"


def _line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


__all__ = ["Rendered", "build_spec", "render_charts", "to_spec", "with_config"]
