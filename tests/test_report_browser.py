"""report.html in a real browser: Debian's Chromium driven by Python playwright, offline.

A real (3-epoch) training run writes a report; the page is opened from file:// with every
request that is not file:, data: or blob: aborted, and must draw every chart with no console or
page error, link every section and chart from its contents, show Vega's tooltip on hover and
export charts as PNG, SVG and JSON. A hand-made run whose name, class labels and column names are
`<script>alert(1)</script>` must show them as text and fire no dialog; so must a real run of a
spec whose name and chart title, and a CSV whose column and class labels, are markup.

Never a downloaded browser: playwright drives /usr/bin/chromium (`.ci/run` installs the Debian
package). When either is missing the tests FAIL, saying what to install: they do not skip.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

SECTIONS = ("Data", "Training", "Model", "Evaluation", "Interpretation")
XSS = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'
SHOT = Path("/tmp/report_shot.png")


# --- the browser --------------------------------------------------------------------------------



class Page:
    """A report opened offline, with everything that went wrong on it recorded."""

    def __init__(self, browser, path: Path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        self.page = self.context.new_page()
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.dialogs: list[str] = []
        self.blocked: list[str] = []
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda err: self.page_errors.append(str(err)))

        def dialog(d):
            self.dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        self.page.on("dialog", dialog)

        def route(r):
            url = r.request.url
            if url.startswith(("file:", "data:", "blob:")):
                r.continue_()
            else:   # the page must work offline: any network request is a failure
                self.blocked.append(url)
                r.abort()

        self.page.route("**/*", route)
        self.page.goto(path.resolve().as_uri(), wait_until="load")
        # Every chart container ends up 'drawn' (or 'error', with the error in the console).
        self.page.wait_for_function(
            "Array.from(document.querySelectorAll('.chart')).every(function(el){return el.dataset.state})",
            timeout=20_000)

    def problems(self) -> list[str]:
        return ([f"console error: {m}" for m in self.console_errors] + [f"page error: {m}" for m in self.page_errors]
                + [f"dialog: {m}" for m in self.dialogs] + [f"network request: {u}" for u in self.blocked])

    def hover_for_tooltip(self, selector: str) -> str:
        """Moves the mouse over the chart's marks on a grid until Vega's tooltip shows; its text."""
        canvas = self.page.locator(f"{selector} canvas.marks, {selector} svg.marks").first
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0, selector
        shown = """() => { const t = document.getElementById('vg-tooltip-element');
            if (!t) return ''; const s = getComputedStyle(t), r = t.getBoundingClientRect();
            return s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0
                ? t.innerText : ''; }"""
        step = 15
        for y in range(step, int(box["height"]), step):
            for x in range(step, int(box["width"]), step):
                self.page.mouse.move(box["x"] + x, box["y"] + y)
                text = self.page.evaluate(shown)
                if text.strip():
                    return text
        return ""

    def close(self):
        self.context.close()


def _drawn_state(page) -> dict:
    """{container id: [state, has an svg or canvas of marks]} for every chart container."""
    return page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('.chart')).map(el =>
        [el.id, [el.dataset.state, !!el.querySelector('canvas.marks, svg.marks')]]))""")


# --- a real run -----------------------------------------------------------------------------------

PLOTS = "[learning_curves,lr_schedule,confusion_matrix,predictions,weights,architecture,residuals]"


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    """examples/moons.yaml for 3 epochs; residuals is asked for and cannot be drawn (classification)."""
    from dsl.cli import main

    run_dir = tmp_path_factory.mktemp("browser") / "run"
    cwd, argv = os.getcwd(), sys.argv[:]
    os.chdir(ROOT)
    try:
        main(["run", f"conf={ROOT / 'examples' / 'moons.yaml'}", "train.epochs=3", f"plots={PLOTS}",
              f"hydra.run.dir={run_dir}"])
    except SystemExit as e:
        assert not e.code, f"the run failed with exit status {e.code}"
    finally:
        os.chdir(cwd)
        sys.argv[:] = argv
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    return run_dir, summary


def test_report_in_browser(browser, moons_run):
    run_dir, summary = moons_run
    drawn = [name for name, status in summary["charts"].items() if status == "ok"]
    skipped = {name: status for name, status in summary["charts"].items() if status != "ok"}
    assert len(drawn) >= 5 and set(skipped) == {"residuals"}
    page = Page(browser, run_dir / "report.html")
    try:
        p = page.page
        # Every drawn chart has its container, drawn with a canvas or svg of marks; no others.
        state = _drawn_state(p)
        assert sorted(state) == sorted(f"chart-{n}" for n in drawn)
        assert all(s == ["drawn", True] for s in state.values()), state
        assert p.locator("canvas.marks, svg.marks").count() == len(drawn)

        # Sections in order, each with a heading and an anchor, linked from the contents.
        sections = p.eval_on_selector_all("main > section", "els => els.map(s => [s.id, s.querySelector('h2').innerText])")
        names = [h.split("↑")[0].strip() for _, h in sections]
        assert names == [s for s in SECTIONS if s in names] and {"Training", "Model", "Evaluation"} <= set(names)
        toc = p.eval_on_selector_all("nav#contents a", "els => els.map(a => a.getAttribute('href'))")
        for anchor, _ in sections:
            assert f"#{anchor}" in toc
        for name in [*drawn, *skipped]:
            assert f"#chart-{name}" in toc and p.locator(f"#chart-{name}").count() == 1, name
        p.click(f'nav#contents a[href="#chart-{drawn[-1]}"]')
        assert p.evaluate("location.hash") == f"#chart-{drawn[-1]}"

        # The chart that could not be drawn is listed in its section with its reason.
        residuals = p.locator("#section-evaluation .skipped #chart-residuals")
        assert "applies to regression" in residuals.inner_text()

        # The header: run name, facts, final metrics for train/val/test.
        assert p.inner_text("h1") == "moons"
        header = p.inner_text("header")
        assert "classification" in header and "best epoch" in header and "moons: 1000 rows" in header
        rows = p.eval_on_selector_all("table.metrics tbody th", "els => els.map(e => e.innerText)")
        assert rows == ["train", "val", "test"]

        # A tooltip on hover.
        assert "confusion_matrix" in drawn
        text = page.hover_for_tooltip("#chart-confusion_matrix")
        assert text.strip(), "no tooltip appeared over the confusion matrix"

        # Downloads from the page: JSON (the embedded spec), PNG and SVG (drawn from the view).
        fig = p.locator("#fig-confusion_matrix")
        got = {}
        for fmt in ("json", "png", "svg"):
            with p.expect_download() as dl:
                fig.locator(f'a.dl[data-format="{fmt}"]').click()
            got[fmt] = (dl.value.suggested_filename, Path(dl.value.path()).read_bytes())
        spec = json.loads((run_dir / "charts" / "confusion_matrix.vl.json").read_text())
        assert got["json"][0] == "confusion_matrix.vl.json" and json.loads(got["json"][1]) == spec
        assert got["png"][0] == "confusion_matrix.png" and got["png"][1][:8] == b"\x89PNG\r\n\x1a\n"
        assert got["svg"][0] == "confusion_matrix.svg" and got["svg"][1].lstrip().startswith(b"<svg")

        assert not page.problems(), page.problems()
        p.evaluate("window.scrollTo(0, 0)")
        p.mouse.move(0, 0)
        p.screenshot(path=str(SHOT), full_page=True)
    finally:
        page.close()


# --- user strings are text ------------------------------------------------------------------------

def _xss_record():
    from compilers.runs.record import RunRecord

    rng = np.random.default_rng(0)
    n, classes = 120, [XSS, "b & c", XSS_IMG]
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 2
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    kernel = rng.normal(0, 0.5, (2, 8))
    layers = [{"index": "0", "kind": "dense", "path": "model.layers[0]", "depth": 0, "output_shape": [8],
               "params": 24, "activation": "relu", "param_shapes": {"kernel": [2, 8], "bias": [8]}},
              {"index": "1", "kind": "dense", "path": "model.layers[1]", "depth": 0, "output_shape": [3],
               "params": 27, "activation": None, "param_shapes": {"kernel": [8, 3], "bias": [3]}}]
    history = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.1 / e, "accuracy": 0.5 + 0.1 * e,
                "val_accuracy": 0.45 + 0.1 * e} for e in range(1, 5)]
    return RunRecord(
        name=XSS, task="classification", history=history,
        summary={"metrics": {"train": {"loss": 0.25, "accuracy": 0.9}, "test": {"loss": 0.3, "accuracy": 0.85}},
                 "best_epoch": 4, "params": 51},
        layers=layers, class_names=classes, feature_names=[XSS, XSS_IMG],
        predictions={"test": {"y_true": y, "y_pred": proba.argmax(1), "proba": proba}},
        weights={"0": {"kernel": kernel, "bias": np.zeros(8)}},
        data={"source": f"{XSS} data", "n_rows": n, "n_features": 2, "splits": {"test": n}},
        monitor="val_loss", best_epoch=4)


def test_user_strings_are_text(browser, tmp_path):
    import compilers.charts  # noqa: F401  (fills the chart registry)
    from compilers.charts.render import Rendered, render_charts
    from compilers.charts.report import write_report
    from dsl.registry import CHARTS
    from dsl.spec import Item

    rec = _xss_record()
    items = [Item(k, CHARTS.get(k).options()) for k in ("learning_curves", "confusion_matrix", "weights")]
    items.append(Item("weights", CHARTS.get("weights").options(layer=XSS)))   # skipped, naming the layer
    rendered = render_charts(rec, items, tmp_path / "charts", png=False)
    assert [r.skipped is None for r in rendered] == [True, True, True, False]
    assert XSS in rendered[-1].skipped
    # A chart whose own title and data carry markup (titles come from specs).
    rendered.append(Rendered(kind="custom", name="custom", section="Data", title=XSS_IMG, spec={
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": XSS_IMG,
        "data": {"values": [{"label": XSS, "n": 3}, {"label": XSS_IMG, "n": 5}]},
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {"x": {"field": "label", "type": "nominal"}, "y": {"field": "n", "type": "quantitative"}}}))
    write_report(rec, rendered, tmp_path / "report.html")

    page = Page(browser, tmp_path / "report.html")
    try:
        p = page.page
        assert p.inner_text("h1") == XSS
        assert p.title() == f"{XSS} · report"
        body = p.inner_text("body")
        assert f"{XSS} data" in body                               # the data description
        assert XSS in p.inner_text("#section-model .skipped")      # the skip reason names the layer
        assert XSS_IMG in p.inner_text("nav#contents")             # a chart title, as text
        # Nothing was injected: the report's two scripts, no <img>, no dialog.
        assert p.locator("script").count() == 2 and p.locator("img").count() == 0
        state = _drawn_state(p)
        assert len(state) == 4 and all(s == ["drawn", True] for s in state.values()), state
        # Class labels reach the tooltip as text (vega-tooltip escapes them).
        text = page.hover_for_tooltip("#chart-confusion_matrix")
        assert text.strip()
        assert XSS in text or XSS_IMG in text or "b & c" in text, text
        p.mouse.move(0, 0)
        assert not page.problems(), page.problems()
    finally:
        page.close()



# --- a real run on hostile data -------------------------------------------------------------------

XSS_COLUMN = "<script>alert(1)</script>"
XSS_LABEL = "<img src=x onerror=alert(2)>"
XSS_BOLD = "<b onmouseover=alert(3)>b & c</b>"
XSS_NAME = "<img src=y onerror=alert(4)>"       # a run name has no '/', so no closing tag
XSS_TITLE = "<svg/onload=alert(5)>"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A real run (2 epochs) of a spec whose name and chart title, and a CSV whose only feature
    column and class labels, are markup."""
    from dsl.cli import main

    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    rows = [f"{v:.3f},{(XSS_LABEL, XSS_BOLD)[k]}" for v, k in zip(rng.normal(labels * 2.0, 1.0), labels)]
    (d / "hostile.csv").write_text("\n".join([f"{XSS_COLUMN},label", *rows]) + "\n")
    (d / "s.yaml").write_text(json.dumps({   # JSON is YAML: every string quoted as it is
        "name": XSS_NAME, "data": {"source": "hostile.csv", "target": "label"},
        "model": {"layers": [{"dense": 4}, "relu"]}, "train": {"epochs": 2, "batch_size": 16},
        "plots": [{"learning_curves": {"title": XSS_TITLE}}, "confusion_matrix", "feature_histograms"],
        "report": {"images": "none"}}))
    cwd, argv = os.getcwd(), sys.argv[:]
    os.chdir(d)
    try:
        main(["run", "conf=s.yaml"])
    except SystemExit as e:
        assert not e.code, f"the run failed with exit status {e.code}"
    finally:
        os.chdir(cwd)
        sys.argv[:] = argv
    (run_dir,) = (d / "outputs" / XSS_NAME).iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and set(summary["charts"].values()) == {"ok"}, summary["charts"]
    assert set(summary["data"]["classes"]) == {XSS_LABEL, XSS_BOLD}
    return run_dir


def test_hostile_names_are_text(browser, hostile_run):
    page = Page(browser, hostile_run / "report.html")
    try:
        p = page.page
        assert p.locator("h1").is_visible() and p.inner_text("h1") == XSS_NAME
        assert p.title() == f"{XSS_NAME} · report"
        assert XSS_TITLE in p.inner_text("nav#contents")
        # Nothing was injected: the report's own two scripts, no element from the strings.
        assert p.locator("script").count() == 2
        assert p.locator("img, b[onmouseover], svg[onload]").count() == 0
        assert all(s == ["drawn", True] for s in _drawn_state(p).values())
        # The column name and the class labels reach Vega's tooltips as text.
        text = page.hover_for_tooltip("#chart-feature_histograms")
        assert XSS_COLUMN in text, text
        text = page.hover_for_tooltip("#chart-confusion_matrix")
        assert XSS_LABEL in text or XSS_BOLD in text, text
        p.mouse.move(0, 0)
        assert not page.dialogs, page.dialogs
        assert not page.problems(), page.problems()
    finally:
        page.close()
