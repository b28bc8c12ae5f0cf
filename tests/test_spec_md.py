"""SPEC.md's examples are tests: every YAML block validates; the complete spec is examples/iris.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

DOCS = [ROOT / "docs" / "SPEC.md"] + [p for p in [ROOT.parent / "shared" / "SPEC.md"] if p.is_file()]


def yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)


BLOCKS = [(doc, i, text) for doc in DOCS for i, text in enumerate(yaml_blocks(doc))]


def test_there_are_blocks():
    assert BLOCKS and all(yaml_blocks(d) for d in DOCS)


@pytest.mark.parametrize("doc,i,text", BLOCKS, ids=[f"{d.parent.name}-{i}" for d, i, _ in BLOCKS])
def test_block_validates(doc, i, text, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "block.yaml").write_text(text)
    code, out, err = cli("validate", "conf=block.yaml")
    assert code == 0, err
    assert "total" in out


def test_complete_spec_is_the_iris_example():
    spec_block = next(t for _, _, t in BLOCKS if t.startswith("# examples/iris.yaml"))
    assert yaml.safe_load(spec_block) == yaml.safe_load((ROOT / "examples" / "iris.yaml").read_text())


def test_every_command_in_the_spec_exists():
    from dsl.cli import COMMANDS, LATER

    text = (ROOT / "docs" / "SPEC.md").read_text()
    used = set(re.findall(r"python -m dsl (\w+)", text))
    assert used and used <= set(COMMANDS) | set(LATER), used - set(COMMANDS) - set(LATER)
