"""report.html: every chart of a run in one self-contained page that works offline.

One inline <script> holds the Vega/Vega-Lite/vega-embed bundle from vl-convert (cached on disk:
building it takes 1-3 s), a second one calls vegaEmbed once per chart. Every user string is
HTML-escaped; specs are embedded as JSON with <, > and & written as \\u escapes.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Iterable

from compilers.charts.base import SECTIONS

EMBED_OPTIONS = {"actions": {"export": True, "source": True, "compiled": False, "editor": False},
                 "renderer": "canvas"}


# --- the JavaScript bundle ---------------------------------------------------------------------

def cache_dir() -> Path:
    """The user cache directory of this project ($XDG_CACHE_HOME/dsl, else ~/.cache/dsl)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dsl"


def bundle_path() -> Path:
    import vl_convert as vlc

    return cache_dir() / f"vega-bundle-{vlc.__version__}.js"


def javascript_bundle() -> str:
    """vl_convert.javascript_bundle(), cached on disk per vl-convert version."""
    path = bundle_path()
    try:
        text = path.read_text(encoding="utf-8")
        if text:
            return text
    except OSError:
        pass
    import vl_convert as vlc

    text = vlc.javascript_bundle()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only costs time
    return text


def script_safe_json(value: Any) -> str:
    """JSON that cannot end or confuse a <script> element: <, >, & and U+2028/9 as \\u escapes."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=_plain)
    except ValueError:  # NaN or infinity somewhere: JSON has no such numbers, Vega reads null
        text = json.dumps(_finite(value), separators=(",", ":"), allow_nan=False, default=_plain)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# --- the page -----------------------------------------------------------------------------------

def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:.4g}"
    if value is None:
        return "–"
    return str(value)


def _data_line(data: dict) -> str:
    if not data:
        return ""
    parts = []
    if data.get("description"):
        parts.append(str(data["description"]))
    elif data.get("source") is not None:
        parts.append(str(data["source"]))
    if data.get("n_rows") is not None:
        parts.append(f"{_fmt(data['n_rows'])} rows")
    if data.get("n_features") is not None:
        parts.append(f"{_fmt(data['n_features'])} features")
    shape = data.get("input_shape")
    if shape:
        parts.append("input shape (" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")")
    splits = data.get("splits") or {}
    if splits:
        parts.append("split " + " / ".join(f"{k} {_fmt(v)}" for k, v in splits.items()))
    return " · ".join(parts)


def _metrics_table(summary: dict) -> str:
    metrics = summary.get("metrics") or {}
    splits = [s for s in ("train", "val", "test") if isinstance(metrics.get(s), dict) and metrics[s]]
    splits += [s for s in metrics if s not in splits and isinstance(metrics[s], dict) and metrics[s]]
    if not splits:
        return ""
    names: list[str] = []
    for s in splits:
        names += [k for k in metrics[s] if k not in names]
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    body = "".join(
        f"<tr><th>{e(s)}</th>" + "".join(f"<td>{e(_fmt(metrics[s].get(n)))}</td>" for n in names) + "</tr>"
        for s in splits)
    return f'<table class="metrics"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>'


def _facts(record: Any) -> str:
    summary = record.summary or {}
    items = [("task", record.task)]
    line = _data_line(record.data or {})
    if line:
        items.append(("data", line))
    if summary.get("params") is not None:
        items.append(("parameters", _fmt(summary["params"])))
    best = summary.get("best_epoch", record.best_epoch)
    if best is not None:
        items.append(("best epoch", _fmt(best) + (f" (by {record.monitor})" if record.monitor else "")))
    if record.history:
        items.append(("epochs run", _fmt(len(record.history))))
    times = summary.get("times") or {}
    if times:
        items.append(("time", ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" if isinstance(v, (int, float))
                                        else f"{k} {v}" for k, v in times.items())))
    return "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items)


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#fff;border-bottom:1px solid #ddd;padding:16px 28px}
h1{font-size:22px;margin:0 0 8px}
h2{font-size:18px;margin:28px 0 12px;border-bottom:1px solid #ddd;padding-bottom:4px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0;font-size:14px}
dt{color:#666}dd{margin:0}
table.metrics{border-collapse:collapse;font-size:13px;margin-top:8px}
table.metrics th,table.metrics td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
table.metrics thead th{color:#666;font-weight:normal}
table.metrics tbody th{text-align:left}
nav{font-size:14px;margin-top:10px}nav a{margin-right:14px}
main{padding:0 28px 40px}
.charts{display:flex;flex-wrap:wrap;gap:18px}
figure{margin:0;background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:12px;max-width:100%;overflow-x:auto}
.skipped{font-size:13px;color:#666}.skipped code{color:#333}
.error{color:#b00;font-size:13px}
figcaption{font-size:12px;color:#888;margin-top:6px;text-align:right}
a{color:#2a6fb0}
"""


def write_report(record: Any, rendered: Iterable[Any], path: Path) -> None:
    """Writes the run's report.html (to a temporary file first, then renames it into place)."""
    rendered = list(rendered)
    path = Path(path)
    order = {s: i for i, s in enumerate(SECTIONS)}
    sections: dict[str, list] = {}
    for r in sorted(rendered, key=lambda r: order.get(r.section, len(order))):
        sections.setdefault(r.section, []).append(r)

    toc, body, calls = [], [], []
    for section, group in sections.items():
        anchor = "section-" + "".join(ch if ch.isalnum() else "-" for ch in section.lower())
        drawn = [r for r in group if r.skipped is None and r.spec is not None]
        skipped = [r for r in group if r.skipped is not None or r.spec is None]
        links = ", ".join(f'<a href="#chart-{e(r.name)}">{e(r.title)}</a>' for r in drawn)
        toc.append(f'<li><a href="#{anchor}">{e(section)}</a>' + (f": {links}" if links else "") + "</li>")
        body.append(f'<section id="{anchor}"><h2>{e(section)}</h2><div class="charts">')
        for r in drawn:
            # Links to the chart's files, relative to the run directory where the report lives.
            links = " · ".join(f'<a href="{e(f)}">{e(f.rsplit(".", 1)[-1] if not f.endswith(".vl.json") else "vl.json")}</a>'
                               for f in r.files)
            caption = f'<figcaption>{links}</figcaption>' if links else ""
            body.append(f'<figure id="fig-{e(r.name)}"><div id="chart-{e(r.name)}"></div>{caption}</figure>')
            calls.append((f"chart-{r.name}", r.spec))
        body.append("</div>")
        if skipped:
            body.append('<ul class="skipped">' + "".join(
                f"<li><code>{e(r.name)}</code> not drawn: {e(r.skipped or 'no spec')}</li>" for r in skipped)
                + "</ul>")
        body.append("</section>")

    bundle = javascript_bundle()
    if "</script" in bundle.lower():  # not the case in vl-convert 1.9; cheap insurance
        bundle = bundle.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    charts_js = (
        "(function(){var opts=" + script_safe_json(EMBED_OPTIONS) + ";var charts="
        + script_safe_json([{"id": i, "spec": s} for i, s in calls]) + ";"
        "charts.forEach(function(c){vegaEmbed('#'+c.id,c.spec,opts).catch(function(err){"
        "var el=document.getElementById(c.id);el.className='error';"
        "el.textContent='This chart could not be drawn: '+err;});});})();"
    )
    title = f"{record.name} · report"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{CSS}</style>
<script>{bundle}</script>
</head>
<body>
<header>
<h1>{e(record.name)}</h1>
<dl>{_facts(record)}</dl>
{_metrics_table(record.summary or {})}
<nav><ul style="margin:6px 0;padding-left:18px">{''.join(toc)}</ul></nav>
</header>
<main>
{''.join(body)}
</main>
<script>{charts_js}</script>
</body>
</html>
"""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
