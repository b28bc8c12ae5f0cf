"""Where each key path of a YAML file sits: `model.layers[2].dense` -> line 14."""

from __future__ import annotations

import re

import yaml


class SourceMap:
    def __init__(self, file: str | None, lines: dict[str, int] | None = None):
        self.file = file
        self.lines = lines or {}
        self.duplicate: tuple[str, int, int] | None = None   # (key path, line, line of the first one)

    @classmethod
    def from_text(cls, file: str | None, text: str) -> "SourceMap":
        lines: dict[str, int] = {}
        duplicates: list[tuple[str, int, int]] = []
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return cls(file, lines)

        def walk(node, path: str) -> None:
            if isinstance(node, yaml.MappingNode):
                seen: dict[str, int] = {}
                for key, value in node.value:
                    name = str(key.value)
                    sub = f"{path}.{name}" if path else name
                    line = key.start_mark.line + 1
                    if name in seen and name != "<<":
                        duplicates.append((sub, line, seen[name]))
                    seen.setdefault(name, line)
                    lines[sub] = line
                    walk(value, sub)
            elif isinstance(node, yaml.SequenceNode):
                for i, value in enumerate(node.value):
                    sub = f"{path}[{i}]"
                    lines[sub] = value.start_mark.line + 1
                    walk(value, sub)

        if root is not None:
            walk(root, "")
        out = cls(file, lines)
        out.duplicate = duplicates[0] if duplicates else None
        return out

    def line(self, path: str) -> int | None:
        """The line of `path`, or of its nearest ancestor that the file spells out."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                break
            path = path[:cut]
        return self.lines.get(path)


def dotted(path: str) -> str:
    """`model.layers[2].dense` -> `model.layers.2.dense` (the form Hydra overrides use)."""
    return re.sub(r"\[(\d+)\]", r".\1", path)
