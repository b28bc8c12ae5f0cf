"""`python -m dsl serve`: the app through Starlette's TestClient, then in Debian's Chromium.

One DIR per module: a real 3-epoch iris run, a hand-written run that is still "running", a
two-job sweep (copies of the iris run) and symlinks, one pointing outside DIR. The browser tests
serve DIR with uvicorn on a free loopback port and abort every request to anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

LIVE = "outputs/live/2026-01-01_00-00-00"
LATER_RUNS = ("outputs/late/run", "outputs/fresh/run")   # made by the browser tests, as runs start
IRIS = "outputs/iris/2026-01-01_00-00-01"
SWEEP = "multirun/iris/2026-01-01_00-00-02"
SWEEPING = "multirun/live/2026-01-01_00-00-03"    # a sweep still running: no sweep.jsonl yet


def live_row(epoch: int) -> str:
    return json.dumps({"epoch": epoch, "loss": 1.0 / epoch, "val_loss": 1.2 / epoch,
                       "accuracy": 0.5 + 0.05 * epoch, "val_accuracy": 0.45 + 0.05 * epoch}) + "\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """DIR with the runs, a sweep and the symlinks; the iris run trained once."""
    from dsl.cli import main

    root = tmp_path_factory.mktemp("serve")
    iris = root / IRIS
    cwd, argv = os.getcwd(), sys.argv[:]
    os.chdir(ROOT)
    try:
        main(["run", "conf=iris", "train.epochs=3", f"hydra.run.dir={iris}"])
    except SystemExit as e:
        assert not e.code, f"the run failed with exit status {e.code}"
    finally:
        os.chdir(cwd)
        sys.argv[:] = argv
    assert json.loads((iris / "summary.json").read_text())["status"] == "completed"

    live = root / LIVE
    live.mkdir(parents=True)
    (live / "summary.json").write_text(json.dumps({"name": "live-one", "task": "classification", "status": "running"}))
    (live / "metrics.jsonl").write_text(live_row(1) + live_row(2))

    sweep = root / SWEEP
    sweep.mkdir(parents=True)
    lines = []
    for job, lr in enumerate(("0.01", "0.1")):
        shutil.copytree(iris, sweep / str(job))
        (sweep / str(job) / ".hydra").mkdir(exist_ok=True)
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n")
        lines.append(json.dumps({"job": job, "run_dir": str(sweep / str(job)), "overrides": [f"optimizer.lr={lr}"],
                                 "status": "completed"}))
    (sweep / "sweep.jsonl").write_text("\n".join(lines) + "\n")

    sweeping = root / SWEEPING
    (sweeping / "0").mkdir(parents=True)
    (sweeping / "multirun.yaml").write_text("hydra: {}\n")
    (sweeping / "0" / "summary.json").write_text(json.dumps({"name": "sweeping", "status": "running"}))

    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("secret")
    (outside / "summary.json").write_text(json.dumps({"name": "outside", "status": "completed"}))
    (root / "outputs" / "escape").symlink_to(outside)                      # a folder outside DIR
    (root / "outputs" / "secret.txt").symlink_to(outside / "secret.txt")   # a file outside DIR
    (root / "outputs" / "inside.json").symlink_to(iris / "summary.json")   # inside: allowed
    return root


@pytest.fixture(scope="module")
def client(served):
    from starlette.testclient import TestClient

    from compilers.runs.serve import Roots, create_app

    with TestClient(create_app(Roots([served], served))) as c:
        yield c


# --- the app ----------------------------------------------------------------------------------------

def test_listing(client, served):
    r = client.get("/api/runs")
    assert r.status_code == 200
    data = r.json()
    runs = {x["path"]: x for x in data["runs"]}
    started = {p for p in LATER_RUNS if (served / p).exists()}
    assert set(runs) == {LIVE, IRIS, f"{SWEEP}/0", f"{SWEEP}/1", f"{SWEEPING}/0"} | started   # nothing outside
    assert runs[LIVE]["status"] == "running" and runs[LIVE]["name"] == "live-one"
    assert runs[LIVE]["epoch"] == 2 and runs[LIVE]["metrics"]["loss"] == 0.5 and not runs[LIVE]["final"]
    assert runs[IRIS]["status"] == "completed" and runs[IRIS]["epochs"] == 3 and runs[IRIS]["final"]
    assert "test_accuracy" in runs[IRIS]["metrics"] and isinstance(runs[IRIS]["started"], float)
    assert runs[f"{SWEEP}/0"]["sweep"] == SWEEP and runs[IRIS]["sweep"] is None
    sweeps = {s["path"]: s for s in data["sweeps"]}
    assert {p: (s["metrics"]["jobs"], s["status"]) for p, s in sweeps.items()} == {
        SWEEP: (2, "completed"), SWEEPING: (1, "running")}
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/vega.js">' in page.text and "/api/runs" in page.text


def test_run_page(client, served):
    r = client.get(f"/run/{IRIS}")
    assert r.status_code == 200
    names = sorted(p.name[:-len(".vl.json")] for p in (served / IRIS / "charts").glob("*.vl.json"))
    assert "learning_curves" in names and len(names) >= 3
    for n in names:
        assert f'id="chart-{n}"' in r.text and f"/files/{IRIS}/charts/{n}.vl.json" in r.text
        spec = client.get(f"/files/{IRIS}/charts/{n}.vl.json")
        on_disk = json.loads((served / IRIS / "charts" / f"{n}.vl.json").read_text())
        assert spec.status_code == 200 and spec.json() == on_disk
    assert "iris-mlp" in r.text and "completed" in r.text
    # One script of its own, the bundle by URL: the page is small and works offline.
    assert r.text.count("<script") == 2 and len(r.text) < 100_000
    assert client.get(f"/run/{IRIS}/charts").status_code == 404          # not a run
    js = client.get("/vega.js")
    assert js.status_code == 200 and "vegaEmbed" in js.text and js.headers["content-type"].startswith("text/javascript")


def test_live_run_page_and_metrics(client, served):
    r = client.get(f"/run/{LIVE}")
    assert r.status_code == 200 and 'id="chart-live-curves"' in r.text and "live: this page follows" in r.text
    m = client.get(f"/api/metrics/{LIVE}", params={"offset": 0}).json()
    assert [row["epoch"] for row in m["rows"]] == [1, 2] and m["status"] == "running" and not m["reset"]
    size = (served / LIVE / "metrics.jsonl").stat().st_size
    assert m["offset"] == size
    again = client.get(f"/api/metrics/{LIVE}", params={"offset": size}).json()
    assert again["rows"] == [] and again["offset"] == size
    # A line still being written waits; an offset past the end starts again.
    from compilers.runs.serve import read_lines

    half = served / "half.jsonl"
    half.write_text(live_row(1) + live_row(2)[:10])
    rows, off, reset = read_lines(half, 0)
    assert [x["epoch"] for x in rows] == [1] and off == len(live_row(1)) and not reset
    rows, off, reset = read_lines(half, 10_000)
    assert reset and [x["epoch"] for x in rows] == [1]
    assert client.get(f"/api/metrics/{LIVE}", params={"offset": "x"}).status_code == 400
    c = client.get(f"/api/curves/{LIVE}").json()
    assert c["offset"] == size and sorted(c["sets"].values()) == ["accuracy", "loss"]
    assert set(c["sets"]) <= set(c["spec"]["datasets"])


def test_sweep_page(client, served):
    r = client.get(f"/sweep/{SWEEP}/")
    assert r.status_code == 200
    assert "Learning curves" in r.text and "optimizer.lr" in r.text and 'href="0/report.html"' in r.text
    assert client.get(f"/sweep/{SWEEP}", follow_redirects=False).headers["location"] == f"/sweep/{SWEEP}/"
    job = client.get(f"/sweep/{SWEEP}/0/report.html", follow_redirects=False)
    assert job.status_code == 302 and job.headers["location"] == f"/run/{SWEEP}/0"
    assert client.get(f"/sweep/{IRIS}/").status_code == 404              # a run is not a sweep
    running = client.get(f"/sweep/{SWEEPING}/")                             # still running: its jobs so far
    assert running.status_code == 200 and "running" in running.text
    # The file sweep.py writes is the same page.
    from compilers.charts.sweep import collect, compare, write_comparison

    out = write_comparison(compare(collect([served / SWEEP])), served / SWEEP / "report.html", [Path(SWEEP)])
    assert out.read_text() == r.text.replace("\r\n", "\n")


@pytest.mark.parametrize("url", [
    "/files/../../etc/passwd", "/files/outputs/../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd",
    "/files/outputs/%2e%2e/%2e%2e/etc/passwd", "/files/..%2f..%2fetc%2fpasswd", "/files/%2E%2E%2Fetc%2Fpasswd",
    "/files/outputs%2f..%2f..%2fetc%2fpasswd", "/run/..%2f..%2f", "/api/metrics/%2e%2e", "/files/outputs/..",
    "/files/outputs/escape/secret.txt", "/files/outputs/secret.txt", "/run/outputs/escape", "/files/no/such/file",
    "/files/outputs/iris/..%5c..%5cetc%5cpasswd", "/files/%00"])
def test_outside_dir_is_404(client, url):
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code, r.text[:200])
    assert "secret" not in r.text and "root:" not in r.text


def test_containment_rules(served, tmp_path):
    from compilers.runs.serve import Roots

    roots = Roots([served], served)
    assert roots.resolve("outputs/inside.json") == (served / IRIS / "summary.json").resolve()
    assert roots.resolve(f"{IRIS}/summary.json") is not None
    for bad in ("..", "../x", "outputs/../..", "outputs/escape", "outputs/escape/secret.txt", "outputs/secret.txt",
                "a\x00b", "outputs\\..\\..", "/etc/passwd"):
        assert roots.resolve(bad) is None, bad
    # The inside link works through the app too; and default roots are outputs/ and multirun/ only.
    from compilers.runs.serve import default_roots

    d = default_roots(None, served)
    assert d.folders == [(served / "outputs").resolve(), (served / "multirun").resolve()]
    (served / "elsewhere.txt").write_text("x")
    assert d.resolve("elsewhere.txt") is None and d.resolve(f"{IRIS}/summary.json") is not None


def test_symlink_inside_is_served(client, served):
    r = client.get("/files/outputs/inside.json")
    assert r.status_code == 200 and r.json()["name"] == "iris-mlp"


def test_loopback_answers_only_loopback_names(served):
    from starlette.testclient import TestClient

    from compilers.runs.serve import LOCAL_HOSTS, Roots, create_app

    app = create_app(Roots([served], served), LOCAL_HOSTS)
    for base in ("http://127.0.0.1:6006", "http://localhost:6006"):
        with TestClient(app, base_url=base) as c:
            assert c.get("/api/runs").status_code == 200
    with TestClient(app, base_url="http://attacker.example:6006") as c:   # a rebound DNS name
        r = c.get("/api/runs")
        assert r.status_code == 400 and "iris" not in r.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_read_only(client, method):
    for url in ("/", "/api/runs", f"/files/{IRIS}/summary.json", f"/run/{IRIS}"):
        assert client.request(method, url).status_code == 405, (method, url)


def test_cli_args():
    from dsl.commands.serve import UsageError, parse_args

    assert parse_args([]) == (None, "127.0.0.1", 6006)
    assert parse_args(["runs", "--port", "7000", "--host=0.0.0.0"]) == (Path("runs"), "0.0.0.0", 7000)
    for bad in (["--port", "x"], ["--port=70000"], ["--what"], ["a", "b"], ["--host"]):
        with pytest.raises(UsageError):
            parse_args(bad)


# --- in a real browser ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(served):
    import uvicorn

    from compilers.runs.serve import Roots, create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(Roots([served], served)), host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


class Page:
    """A page of the app, every request elsewhere aborted, everything that went wrong recorded."""

    def __init__(self, browser, base: str, path: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda err: self.errors.append(f"page: {err}"))

        def route(r):
            if r.request.url.startswith((base + "/", "data:", "blob:")):
                r.continue_()
            else:
                self.blocked.append(r.request.url)
                r.abort()

        self.page.route("**/*", route)
        self.page.goto(base + path, wait_until="load")

    def problems(self) -> list[str]:
        return self.errors + [f"network request: {u}" for u in self.blocked]

    def close(self):
        self.context.close()


def test_index_in_browser(browser, server, served):
    page = Page(browser, server, "/")
    try:
        p = page.page
        p.wait_for_selector("body[data-loaded]", timeout=20_000)
        paths = p.eval_on_selector_all("table.runs tbody tr", "trs => trs.map(t => t.dataset.path)")
        started = {p for p in LATER_RUNS if (served / p).exists()}
        assert set(paths) == {LIVE, IRIS, f"{SWEEP}/0", f"{SWEEP}/1", SWEEP, f"{SWEEPING}/0", SWEEPING} | started
        assert p.get_attribute(f'tr[data-path="{LIVE}"]', "data-status") == "running"
        assert "live-one" in p.inner_text(f'tr[data-path="{LIVE}"]')
        # Filter, then sort by name both ways.
        p.fill("#filter", "live-one")
        assert p.eval_on_selector_all("table.runs tbody tr", "trs => trs.map(t => t.dataset.path)") == [LIVE]
        p.fill("#filter", "")
        p.click('th[data-key="name"]')
        names = p.eval_on_selector_all("table.runs tbody tr td:first-child a", "as => as.map(a => a.textContent)")
        assert names == sorted(names) and len(names) == 7 + len(started)
        p.click('th[data-key="name"]')
        assert p.eval_on_selector_all("table.runs tbody tr td:first-child a",
                                      "as => as.map(a => a.textContent)") == sorted(names, reverse=True)
        p.click('th[data-key="started"]')
        p.screenshot(path="/tmp/serve_index.png", full_page=True)
        # A run that starts now shows up without a reload.
        p.evaluate("window.sameDocument = 1")
        new = served / LATER_RUNS[0]
        new.mkdir(parents=True)
        (new / "summary.json").write_text(json.dumps({"name": "late-starter", "status": "running"}))
        p.wait_for_selector('tr[data-path="outputs/late/run"]', timeout=10_000)
        assert p.evaluate("window.sameDocument") == 1
        assert not page.problems(), page.problems()
    finally:
        page.close()


def test_run_page_in_browser(browser, server, served):
    names = [p.name[:-len(".vl.json")] for p in (served / IRIS / "charts").glob("*.vl.json")]
    page = Page(browser, server, f"/run/{IRIS}")
    try:
        p = page.page
        p.wait_for_function("Array.from(document.querySelectorAll('.chart')).every(el => el.dataset.state)",
                            timeout=30_000)
        state = p.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('.chart')).map(el =>
            [el.id, [el.dataset.state, !!el.querySelector('canvas.marks, svg.marks')]]))""")
        assert sorted(state) == sorted(f"chart-{n}" for n in names)
        assert all(s == ["drawn", True] for s in state.values()), state
        assert p.locator("canvas.marks, svg.marks").count() == len(names)
        assert p.inner_text("h1") == "iris-mlp"
        # In report.py's sections: the curves under Training, weights under Model.
        assert p.locator("#section-training #chart-learning_curves").count() == 1
        assert p.locator("#section-model #chart-weights").count() == 1
        splits = p.eval_on_selector_all("table.metrics tbody th", "els => els.map(e => e.innerText)")
        assert splits == ["train", "val", "test"]
        assert not page.problems(), page.problems()
        p.screenshot(path="/tmp/serve_run.png", full_page=True)
    finally:
        page.close()


def test_live_run_in_browser(browser, server, served):
    page = Page(browser, server, f"/run/{LIVE}")
    try:
        p = page.page
        p.wait_for_selector('#chart-live-curves[data-state="drawn"] canvas.marks', timeout=30_000)
        p.evaluate("window.sameDocument = 1")
        with open(served / LIVE / "metrics.jsonl", "a") as f:
            f.write(live_row(3))
        # Within a few seconds: the new epoch in the chart's data and in the progress line.
        p.wait_for_function("document.getElementById('chart-live-curves').dataset.epoch === '3'", timeout=10_000)
        p.wait_for_function("document.getElementById('epoch').textContent.startsWith('3')", timeout=10_000)
        assert "loss 0.3333" in p.inner_text("#latest")
        data = "name => document.getElementById('chart-live-curves').vegaView.data(name).map(d => [d.epoch, d.split])"
        for name in ("curve_0", "curve_1"):
            rows = p.evaluate(f"({data})('{name}')")
            assert [3.0, "train"] in rows and [3.0, "val"] in rows
        with open(served / LIVE / "metrics.jsonl", "a") as f:
            f.write(live_row(4) + live_row(5))
        p.wait_for_function("document.getElementById('chart-live-curves').dataset.epoch === '5'", timeout=10_000)
        assert p.evaluate("window.sameDocument") == 1          # no reload
        assert p.locator("#chart-live-curves canvas.marks").count() == 1   # streamed, not re-embedded
        assert not page.problems(), page.problems()
        p.screenshot(path="/tmp/serve_live.png", full_page=True)
    finally:
        page.close()


def test_sweep_page_in_browser(browser, server):
    page = Page(browser, server, f"/sweep/{SWEEP}/")
    try:
        p = page.page
        p.wait_for_function("Array.from(document.querySelectorAll('.chart')).every(el => el.dataset.state)",
                            timeout=30_000)
        assert p.locator(".chart").count() >= 2
        assert p.locator('.chart[data-state="drawn"]').count() == p.locator(".chart").count()
        p.click('table.runs a[href="0/report.html"]')
        p.wait_for_url(f"{server}/run/{SWEEP}/0", timeout=10_000)
        assert not page.problems(), page.problems()
    finally:
        page.close()


def test_run_that_has_not_finished_an_epoch_in_browser(browser, server, served):
    run = served / LATER_RUNS[1]
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"name": "fresh", "status": "running"}))
    (run / "metrics.jsonl").write_text("")
    page = Page(browser, server, "/run/outputs/fresh/run")
    try:
        p = page.page
        assert p.get_attribute("#chart-live-curves", "data-state") == "waiting"
        p.evaluate("window.sameDocument = 1")
        with open(run / "metrics.jsonl", "a") as f:
            f.write(live_row(1))
        # The first epoch draws the chart; the next ones stream into it.
        p.wait_for_selector('#chart-live-curves[data-state="drawn"] canvas.marks', timeout=15_000)
        p.wait_for_function("document.getElementById('chart-live-curves').dataset.epoch === '1'", timeout=10_000)
        with open(run / "metrics.jsonl", "a") as f:
            f.write(live_row(2))
        p.wait_for_function("document.getElementById('chart-live-curves').dataset.epoch === '2'", timeout=10_000)
        epochs = p.evaluate("document.getElementById('chart-live-curves').vegaView.data('curve_0').map(d => d.epoch)")
        assert sorted(set(epochs)) == [1.0, 2.0]
        assert p.is_hidden("#finished")
        (run / "summary.json").write_text(json.dumps({"name": "fresh", "status": "completed"}))
        p.wait_for_selector("#finished", state="visible", timeout=10_000)
        assert p.inner_text("#status") == "completed" and p.evaluate("window.sameDocument") == 1
        assert not page.problems(), page.problems()
    finally:
        page.close()


def test_user_strings_are_escaped(tmp_path):
    from starlette.testclient import TestClient

    from compilers.runs.serve import Roots, create_app

    xss = "<script>alert(1)</script>"
    run = tmp_path / "outputs" / "x"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"name": xss, "status": "running", "metrics": {"test": {xss: 1.0}}}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 0.5, xss: 0.1}) + "\n")
    with TestClient(create_app(Roots([tmp_path], tmp_path))) as c:
        page = c.get("/run/outputs/x").text
        assert xss not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert c.get("/api/runs").json()["runs"][0]["name"] == xss     # JSON; the index sets textContent
        assert "textContent" in c.get("/").text and "innerHTML" not in c.get("/").text
