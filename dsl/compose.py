"""From `conf=SPEC` and overrides to a Spec, through Hydra.

The language defaults (generated from the spec dataclasses and the registries) are composed
beneath the user's spec: the primary config is a node in Hydra's ConfigStore whose defaults list
is [dsl/language, <the spec>, _self_]. So every key of the language can be overridden without
`+`, a spec may compose groups of the project's conf/ tree, and sweeps and launchers work as
Hydra users expect.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from dsl import registry as reg
from dsl.errors import SpecError, unknown
from dsl.source_map import SourceMap, dotted
from dsl.spec import Item, Spec

PRIMARY = "__dsl__"
CONF_PACKAGE = "pkg://conf"
RUN_DIR = "outputs/${name}/${now:%Y-%m-%d}_${now:%H-%M-%S}"
SWEEP_DIR = "multirun/${name}/${now:%Y-%m-%d}_${now:%H-%M-%S}"
# Hydra's own callbacks (in Hydra's config, not the user's): the comparison report at the end of
# every multirun, whatever the launcher or sweeper.
CALLBACKS = {"sweep_report": {"_target_": "dsl.callbacks.SweepReport"}}


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def shipped_specs() -> dict[str, Path]:
    found = {}
    for folder in (project_root() / "examples",):
        for p in sorted(folder.glob("*.yaml")):
            found[p.stem] = p
    return found


def resolve_conf(value: str | None, cwd: Path) -> Path:
    """`conf=` value -> the spec file: a path, or the name of a shipped spec."""
    if not value:
        raise SpecError("conf", "missing: give the spec, e.g. `conf=examples/iris.yaml` or `conf=iris`")
    p = Path(value).expanduser()
    candidates = [p if p.is_absolute() else cwd / p]
    if p.suffix not in (".yaml", ".yml"):
        candidates += [cwd / f"{value}.yaml", cwd / "examples" / f"{value}.yaml"]
    shipped = shipped_specs()
    for c in candidates:
        if c.is_file():
            return c.resolve()
    if p.stem in shipped and p.suffix == "" and "/" not in value:
        return shipped[p.stem]
    if p.suffix in (".yaml", ".yml") or "/" in value:
        raise SpecError("conf", f"spec file not found: {value} (relative to {cwd})")
    raise SpecError("conf", unknown("spec", value, shipped))


def read_yaml(path: Path, shown: str, what: str = "the spec") -> tuple[Any, SourceMap]:
    """A YAML file -> (its value, its source map); encoding, syntax and duplicate-key errors, with lines."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpecError("", f"cannot read {what}: {e.strerror}", file=shown) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SpecError("", f"{what} is not UTF-8 text", file=shown, line=line) from None
    if "\x00" in text:
        raise SpecError("", f"{what} is a binary file, not YAML", file=shown)
    try:
        raw = yaml.safe_load(text)
        smap = SourceMap.from_text(shown, text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).split("\n")[0]
        raise SpecError("", f"YAML syntax error: {problem}", file=shown,
                        line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise SpecError("", "YAML nested too deeply", file=shown) from None
    if smap.duplicate:
        key, line, first = smap.duplicate
        raise SpecError(key, f"duplicate key '{dotted(key).rsplit('.', 1)[-1]}' (first on line {first})",
                        file=shown, line=line)
    return raw, smap


def precheck_file(path: Path, shown: str) -> SourceMap:
    """Reads the spec file as YAML: syntax, encoding, emptiness and `_target_` errors, with lines."""
    raw, smap = read_yaml(path, shown)
    if raw is None:
        raise SpecError("", "the spec is empty; it needs at least data and model sections", file=shown, line=1)
    if not isinstance(raw, dict):
        raise SpecError("", f"a spec is a mapping of sections (name, data, model, train, plots), "
                            f"got a {type(raw).__name__}", file=shown, line=1)
    from dsl.parse import find_target

    try:
        find_target(raw)
    except SpecError as e:
        raise e.located(shown, smap.line(e.path)) from None
    return smap


# --- the language defaults, generated from the dataclasses and registries ------------------------

def _option_names(registry: reg.Registry, files: bool | None = None) -> list[str]:
    names: list[str] = []
    for entry in registry:
        if files is not None and bool(entry.meta.get("file")) != files:
            continue
        for f in entry.fields():
            if f.name not in names:
                names.append(f.name)
    return names


def _defaults_of(cls) -> dict:
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "file":
            continue
        tp = hints[f.name]
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            value = f.default
        if dataclasses.is_dataclass(value):
            out[f.name] = _defaults_of(type(value))
        elif tp is Item or (f.name in ("layers", "prep")):
            out[f.name] = "???" if f.name in ("source", "layers") else None
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def language_defaults() -> dict:
    """Every key of the language with its default (null where an entry's dataclass decides)."""
    from dsl.spec import Spec

    reg.load_all()
    d = _defaults_of(Spec)
    d["data"]["prep"] = []
    d["data"]["options"] = {n: None for n in _option_names(reg.SOURCES) if n != "path"}
    d["train"]["optimizer"] = {"name": "adam", **{n: None for n in _option_names(reg.OPTIMIZERS)}}
    d["train"]["schedule"] = {"name": "constant", **{n: None for n in _option_names(reg.SCHEDULES)}}
    d["hydra"] = {"run": {"dir": RUN_DIR}, "sweep": {"dir": SWEEP_DIR, "subdir": "${hydra.job.num}"},
                  "job": {"chdir": False, "name": "dsl"},
                  "help": {"app_name": "dsl",
                           "header": "dsl: one YAML spec -> a compiled JAX training run and charts\n"
                                     "usage: python -m dsl run conf=SPEC [key=value ...] [-m] [Hydra flags]",
                           "footer": "Every key of the configuration above can be overridden as key=value; "
                                     "-m sweeps comma-separated values.\n`python -m dsl list` names every "
                                     "kind; docs/reference.md describes every option.\nPowered by Hydra."}}
    return d


def register(spec_path: Path) -> None:
    from hydra.core.config_store import ConfigStore

    from dsl.launcher import register as register_launcher

    register_launcher()   # hydra/launcher=vmap
    cs = ConfigStore.instance()
    cs.store(group="dsl", name="language", package="_global_", node=language_defaults())
    cs.store(name=PRIMARY, node={"defaults": ["dsl/language", spec_path.stem, "_self_",
                                              {"override hydra/job_logging": "none"}],
                                 "hydra": {"searchpath": [CONF_PACKAGE], "callbacks": CALLBACKS}})


def hydra_argv(spec_path: Path) -> list[str]:
    return ["--config-dir", str(spec_path.parent), "--config-name", PRIMARY]


def compose(spec_path: Path, overrides: list[str], *, hydra: bool = False):
    """The composed config without running anything (validate, override checks); `hydra=True`
    keeps Hydra's own node (launcher, sweeper), unresolved."""
    from hydra import compose as hcompose, initialize_config_dir
    from hydra.errors import HydraException

    register(spec_path)
    with initialize_config_dir(config_dir=str(spec_path.parent), version_base="1.3"):
        try:
            cfg = hcompose(config_name=PRIMARY, overrides=list(overrides), return_hydra_config=hydra)
        except HydraException as e:  # some say nothing themselves (a bad interpolation): their cause's words
            if str(e).strip() or e.__cause__ is None:
                raise
            raise type(e)(str(e.__cause__).strip().split("\n")[0]) from e.__cause__
        if _may_compose_files(spec_path, overrides):
            check_composed(spec_path, overrides)
        return cfg


def _may_compose_files(spec_path: Path, overrides: list[str]) -> bool:
    """Whether a file besides the spec may be composed: the spec has a defaults list or a hydra
    section (a search path), or the command line chooses a config group. (Saves check_composed's
    second pass over Hydra's defaults list, about 0.1 s, for the common spec.)"""
    text = spec_path.read_text(encoding="utf-8", errors="replace")
    if re.search(r"^(defaults|hydra)\s*:", text, re.M):
        return True
    top = {f.name for f in dataclasses.fields(Spec)}
    keys = [split_override(o)[0].lstrip("+~") for o in overrides]
    return any("/" in k or ("." not in k and k not in top) for k in keys)


def check_composed(spec_path: Path, overrides: list[str]) -> None:
    """The files a spec composes (its `defaults:` list, from its folder or a search path it adds)
    obey the spec's own rule: nothing in them may name Python code. Inside initialize_config_dir."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from dsl.parse import find_target

    loader = GlobalHydra.instance().config_loader()
    sources = loader.get_sources()
    for d in loader.compute_defaults_list(PRIMARY, list(overrides), RunMode.RUN).defaults:
        source = next((s for s in sources if d.config_path and s.is_config(d.config_path)), None)
        if source is None or source.scheme() != "file":   # the project's and Hydra's own configs
            continue
        file = (Path(source.path) / f"{d.config_path}.yaml").resolve()
        if file == spec_path.resolve():   # precheck_file read it
            continue
        try:
            shown = os.path.relpath(file)
        except ValueError:
            shown = str(file)
        raw, smap = read_yaml(file, shown, "the composed file")
        prefix = d.package or ""
        try:
            find_target(raw, prefix)
        except SpecError as e:
            inner = e.path[len(prefix) + 1:] if prefix and e.path.startswith(prefix + ".") else e.path
            raise e.located(shown, smap.line(inner)) from None


# --- overrides ---------------------------------------------------------------------------------

def split_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value


def check_overrides(cfg, overrides: list[str]) -> None:
    """An override of a key the language does not have: one line with the nearest valid key."""
    from omegaconf import DictConfig, ListConfig

    for text in overrides:
        key, value = split_override(text)
        if not key or key.startswith(("+", "~", "hydra", "hydra/")) or "/" in key or "@" in key or "=" not in text:
            continue
        node = cfg
        walked = []
        for part in key.split("."):
            if isinstance(node, DictConfig):
                if part not in node:
                    where = ".".join(walked)
                    choices = [str(k) for k in node.keys()]
                    msg = unknown("key", part, choices)
                    if where == "vars":
                        msg += f"; to add a new variable write +{key}={value}"
                    raise SpecError(key, f"cannot override: {msg}")
                node = node._get_node(part)
                node = node if isinstance(node, (DictConfig, ListConfig)) else None
            elif isinstance(node, ListConfig):
                if not part.isdigit() or int(part) >= len(node):
                    raise SpecError(key, f"cannot override: index {part} is out of range "
                                         f"(the list has {len(node)} items; replace it whole with '{'.'.join(walked)}=[...]')")
                node = node._get_node(int(part))
                node = node if isinstance(node, (DictConfig, ListConfig)) else None
            else:
                parent = ".".join(walked)
                raise SpecError(key, f"cannot override: {parent} is a single value, not a mapping with '{part}' "
                                     f"(replace it whole: {parent}=...)")
            walked.append(part)


def to_spec(cfg, smap: SourceMap, spec_path: Path, overrides: list[str]) -> Spec:
    """Resolved config -> Spec; errors point at the spec's line or at the command-line override."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from dsl.parse import parse_spec

    try:
        raw = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        path = getattr(e, "full_key", None) or ""
        msg = re.sub(r"^\w+ raised while resolving interpolation: ", "", str(e).split("\n")[0]).strip('"')
        raise SpecError(path, f"cannot resolve: {msg}").located(smap.file, smap.line(path)) from None
    raw.pop("hydra", None)
    try:
        return parse_spec(raw, file=None, smap=SourceMap(None))
    except SpecError as e:
        raise locate(e, smap, overrides) from None


def locate(e: SpecError, smap: SourceMap, overrides: list[str]) -> SpecError:
    """Points an error at the spec's line, or at the command-line override that set the key."""
    if e.file is not None or "(set on the command line: " in e.message:  # located already
        return e
    d = dotted(e.path)
    for text in overrides:
        k = split_override(text)[0].lstrip("+")
        if "=" in text and d and (d == k or d.startswith(k + ".") or k.startswith(d + ".")):
            e.message += f" (set on the command line: {text})"
            return e
    return e.located(smap.file, smap.line(e.path))
