"""Shared test setup: CPU only, a private compilation cache, helpers that run the CLI in-process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("DSL_VALIDATE_CHARTS", "1")   # runs check each chart against the Vega-Lite schema

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A spec that trains in a second: sweeps and plugins are tested with it.
SMALL = """\
name: small
data:
  source: moons
  options: {n_samples: 200}
model:
  layers: [{dense: 8}, tanh]
train:
  epochs: 2
  metrics: [accuracy]
plots: []
"""


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    os.environ["DSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("dsl-cache"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _absl_writes_to_the_real_stderr():
    """absl's logging handler (orbax imports absl) keeps the sys.stderr of the moment it was made, and
    its close() closes that stream unless it is the sys.stderr of the moment it is closed. Under
    pytest both are capture files: Hydra's logging setup in a later test closed an earlier test's
    capture, and pytest failed on it. The real stderr is never closed by absl."""
    try:
        from absl import logging as absl_logging
    except ImportError:
        yield
        return
    handler = absl_logging.get_absl_handler().python_handler
    handler.stream = sys.__stderr__
    yield


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Runs `python -m dsl ARGS` in this process -> (exit status, stdout, stderr)."""
    from dsl.cli import main

    argv0 = sys.argv[:]
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv[:] = argv0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli(capsys):
    return lambda *args: run_cli(list(args), capsys)


def spec_values(spec: dict) -> list[dict]:
    """Every data row of a spec: top-level datasets and inline `data: {values: [...]}`."""
    out = [row for v in spec.get("datasets", {}).values() for row in v]

    def walk(node):
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and isinstance(data.get("values"), list):
                out.extend(data["values"])
            for k, v in node.items():
                if k != "datasets":
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return out


# --- the browser of the browser tests: Debian's chromium driven by playwright, never a downloaded one

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"Python playwright is not installed ({e}): pip install -e '.[test]' "
                    "(with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1; the browser is Debian's chromium)",
                    pytrace=False)
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does this)", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
