"""The chart-image child process: images as the in-process conversion writes them, errors per
image, and a fallback when the child is gone."""

from __future__ import annotations

import json
import os

import pytest

from test_charts import classification_record

PNG = b"\x89PNG\r\n\x1a\n"
BAR = {"data": {"values": [{"k": "a", "v": 1}, {"k": "b", "v": 3}]}, "mark": "bar",
       "encoding": {"x": {"field": "k", "type": "nominal"}, "y": {"field": "v", "type": "quantitative"}}}


def items_of(kinds):
    from dsl.registry import CHARTS
    from dsl.spec import Item

    return [Item(k, CHARTS.get(k).options()) for k in kinds]


def test_the_child_writes_images_and_answers_each_job(tmp_path):
    from compilers.charts.renderer import Renderer

    with Renderer() as r:
        assert r.submit(BAR, tmp_path / "a.png", "png", 1.0, tag="a")
        assert r.submit({"mark": "nonsense-mark", "data": {"values": []}}, tmp_path / "b.png", "png", 1.0, tag="b")
        assert r.submit(BAR, tmp_path / "c.svg", "svg", 1.0, tag="c")
        answers = {tag: (path, fmt, error) for tag, path, fmt, error, _ in r.wait(timeout=120)}
    assert set(answers) == {"a", "b", "c"}
    assert answers["a"][2] is None and (tmp_path / "a.png").read_bytes().startswith(PNG)
    assert answers["b"][2].startswith("png failed:") and "\n" not in answers["b"][2]
    assert not (tmp_path / "b.png").exists() and not list(tmp_path.glob("*.tmp"))
    assert answers["c"][2] is None and (tmp_path / "c.svg").read_text().lstrip().startswith("<svg")
    assert all(c.proc.poll() is not None for c in r.children)   # closed with the context


def test_render_charts_through_the_child_matches_in_process(tmp_path):
    """The same record drawn both ways: the same chart files, PNGs with the same pixel size."""
    import struct

    from compilers.charts.render import render_charts
    from compilers.charts.renderer import Renderer
    record = classification_record(3)
    items = items_of(["learning_curves", "confusion_matrix", "residuals"])   # residuals: skipped
    with Renderer() as r:
        via = render_charts(record, items, tmp_path / "a" / "charts", renderer=r)
    local = render_charts(record, items, tmp_path / "b" / "charts")
    assert [(x.name, sorted(x.files), x.skipped is None) for x in via] == \
        [(x.name, sorted(x.files), x.skipped is None) for x in local]
    for x in via:
        for f in x.files:
            if f.endswith(".png"):
                a, b = (tmp_path / "a" / f).read_bytes(), (tmp_path / "b" / f).read_bytes()
                assert a.startswith(PNG)
                assert struct.unpack(">II", a[16:24]) == struct.unpack(">II", b[16:24])


def test_a_child_that_dies_mid_job_fails_only_its_jobs(tmp_path):
    """Two children; one is killed with a job in hand: that job comes back with an error at once
    (no waiting for a timeout), the other child's job is written."""
    from compilers.charts.renderer import Renderer

    with Renderer(processes=2) as r:
        assert len(r.children) == 2
        assert r.submit(BAR, tmp_path / "a.png", "png", 1.0, tag="a")   # to the first (least loaded)
        assert r.submit(BAR, tmp_path / "b.png", "png", 1.0, tag="b")   # to the second
        victim = r.pending[1][3]
        victim.proc.kill()
        answers = {tag: error for tag, _, _, error, _ in r.wait(timeout=120)}
    assert set(answers) == {"a", "b"}
    assert answers["b"] is None and (tmp_path / "b.png").read_bytes().startswith(PNG)
    assert answers["a"] in (None, "the image process stopped")   # it may have finished before the kill


def test_a_dead_child_falls_back_to_converting_in_process(tmp_path):
    from compilers.charts.render import render_charts
    from compilers.charts.renderer import Renderer
    r = Renderer()
    for child in r.children:
        child.proc.kill()
        child.proc.wait()
    out = render_charts(classification_record(3), items_of(["confusion_matrix"]), tmp_path / "charts", renderer=r)
    r.close()
    assert out[0].files == ["charts/confusion_matrix.vl.json", "charts/confusion_matrix.png"]
    assert (tmp_path / "charts" / "confusion_matrix.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize("images,sweep_job,plots,started", [
    ("auto", False, "auto", True), ("auto", True, "auto", False), ("none", False, "auto", False),
    ("svg", True, "auto", True), ("auto", False, [], False)])
def test_the_child_starts_only_for_runs_that_write_images(images, sweep_job, plots, started):
    from compilers.pipeline import _start_renderer
    from dsl.parse import parse_spec

    spec = parse_spec({"name": "r", "data": {"source": "iris"}, "model": {"layers": [{"dense": 4}]},
                       "plots": plots, "report": {"images": images}})
    r = _start_renderer([spec], [None], sweep_job)
    try:
        assert (r is not None) == started
    finally:
        if r is not None:
            r.close()


def test_static_spec_takes_each_selection_as_empty():
    from compilers.charts.renderer import static_spec

    spec = {
        "params": [{"name": "pick", "select": {"type": "point", "fields": ["k"]}, "bind": "legend"},
                   {"name": "hover", "select": {"type": "point"}, "views": ["v"]},
                   {"name": "cut", "value": 0.5, "bind": {"input": "range", "min": 0, "max": 1}}],
        "datasets": {"d": [{"params": 3, "condition": {"param": "pick"}}]},
        "data": {"name": "d"},
        "transform": [{"filter": {"param": "pick"}}, {"filter": {"param": "hover", "empty": False}},
                      {"filter": "datum.v > cut"}],
        "mark": "point",
        "encoding": {
            "opacity": {"condition": {"param": "pick", "value": 1}, "value": 0.2},           # empty: selected
            "size": {"condition": {"param": "hover", "value": 80, "empty": False}, "value": 20},   # unselected
            "color": {"condition": [{"test": "datum.v > cut", "value": "red"}, {"param": "pick", "field": "k",
                                                                                  "type": "nominal"}],
                      "value": "gray"},
            "x": {"field": "v", "type": "quantitative", "scale": {"domain": {"param": "hover"}}},
        },
    }
    out = static_spec(spec)
    assert out["params"] == [spec["params"][2]]                       # the slider stays
    assert out["datasets"] == spec["datasets"] and out["data"] == spec["data"]   # rows untouched
    assert out["transform"] == [{"filter": "false"}, {"filter": "datum.v > cut"}]
    assert out["encoding"]["opacity"] == {"value": 1}
    assert out["encoding"]["size"] == {"value": 20}
    assert out["encoding"]["color"] == {"condition": [{"test": "datum.v > cut", "value": "red"}], "field": "k",
                                        "type": "nominal"}
    assert out["encoding"]["x"] == {"field": "v", "type": "quantitative", "scale": {}}
    assert static_spec({"mark": "point"}) == {"mark": "point"}


def test_static_spec_leaves_out_transparent_layers_that_span_nothing_new():
    from compilers.charts.renderer import static_spec

    line = {"mark": "line", "encoding": {"x": {"field": "epoch", "type": "quantitative"},
                                         "y": {"field": "value", "type": "quantitative"}}}
    dots = {"mark": {"type": "circle", "size": 48},
            "encoding": {**line["encoding"], "tooltip": [{"field": "value"}],
                         "opacity": {"condition": {"param": "hover", "value": 1, "empty": False}, "value": 0}}}
    elsewhere = {**dots, "encoding": {**dots["encoding"], "y": {"field": "other", "type": "quantitative"}}}
    rule = {"data": {"values": [{"best": 3}]}, "mark": "rule", "encoding": {"x": {"field": "best"}}}
    spec = {"params": [{"name": "hover", "select": {"type": "point", "on": "pointerover"}, "views": ["v"]}],
            "data": {"name": "d"}, "concat": [{"layer": [line, dots, rule]}, {"layer": [line, elsewhere]}]}
    out = static_spec(spec)
    assert out["concat"][0]["layer"] == [line, rule]       # hidden, and the line spans its domain
    assert len(out["concat"][1]["layer"]) == 2             # hidden, but its y field is another one
    assert out["concat"][1]["layer"][1]["encoding"]["opacity"] == {"value": 0}


def test_every_chart_kind_converts_without_its_selections():
    """The still images come from static_spec (with the spec itself only as a fallback): every
    chart kind with selections must convert that way."""
    import vl_convert as vlc

    from compilers.charts.render import build_spec
    from compilers.charts.renderer import static_spec
    from dsl.registry import CHARTS
    from dsl.spec import Item
    from test_charts import CASES, record_for

    converted = 0
    for key, kind in CASES:
        spec = build_spec(record_for(key), Item(kind, CHARTS.get(kind).options()), validate=False)
        still = static_spec(spec)
        if still is spec:
            continue
        assert '"select":' not in json.dumps({k: v for k, v in still.items() if k not in ("datasets", "data")})
        assert vlc.vegalite_to_svg(still).lstrip().startswith("<svg"), (key, kind)
        converted += 1
    assert converted >= 10


def test_a_few_charts_get_one_image_process(monkeypatch):
    from compilers.pipeline import FEW_CHARTS, image_processes

    monkeypatch.delenv("DSL_IMAGE_PROCESSES", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert image_processes(FEW_CHARTS) == image_processes(1) == 1
    assert image_processes(FEW_CHARTS + 1) == image_processes(None) == 2    # None: plots: auto
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert image_processes(None) == 1
    monkeypatch.setenv("DSL_IMAGE_PROCESSES", "3")
    assert image_processes(2) == 3
