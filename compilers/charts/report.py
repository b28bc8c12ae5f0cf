"""report.html: every chart of a run in one self-contained page that works offline.

One inline <script> holds the Vega/Vega-Lite/vega-embed bundle from vl-convert (cached on disk:
building it takes 1-3 s), a second one calls vegaEmbed once per chart and wires each chart's
PNG/SVG/JSON download links (drawn from the view, or the embedded spec as a Blob: no network).
Sections follow SECTIONS, with a table of contents; charts that could not be drawn are listed in
their section with the reason. Every user string is HTML-escaped; specs are embedded as JSON with
<, > and & written as \\u escapes. tests/test_report_browser.py opens the page in Chromium.
"""

from __future__ import annotations

import html
import json
import os
import re
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
    described = str(data.get("description") or data.get("source") or "")
    if described:
        parts.append(described)
    # The loader's description (the trainer stores it as `source`) already says "N rows, M
    # features": do not repeat it.
    if data.get("n_rows") is not None and " rows" not in described:
        parts.append(f"{_fmt(data['n_rows'])} rows")
    if data.get("n_features") is not None and " features" not in described:
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
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#fff;border-bottom:1px solid #ddd;padding:16px 28px}
h1{font-size:22px;margin:0 0 8px;overflow-wrap:anywhere}
h2{font-size:18px;margin:28px 0 12px;border-bottom:1px solid #ddd;padding-bottom:4px}
h2 .top{font-size:12px;font-weight:normal;margin-left:10px;text-decoration:none;color:#999}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0;font-size:14px}
dt{color:#666}dd{margin:0;overflow-wrap:anywhere}
table.metrics{border-collapse:collapse;font-size:13px;margin-top:8px}
table.metrics th,table.metrics td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
table.metrics thead th{color:#666;font-weight:normal}
table.metrics tbody th{text-align:left}
nav.toc{font-size:14px;margin-top:14px}
nav.toc h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:#666;border:0;margin:0 0 6px;padding:0}
nav.toc>ol{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:8px 40px}
nav.toc>ol>li>a{font-weight:600}
nav.toc ul{list-style:none;margin:4px 0 0;padding:0 0 0 12px;border-left:2px solid #e3e3e3}
nav.toc ul li{margin:2px 0}
nav.toc .muted{color:#999;font-size:12px}
main{padding:0 28px 40px}
.charts{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:12px;max-width:100%;overflow-x:auto}
figcaption{font-size:12px;color:#888;margin-top:6px;display:flex;gap:10px;justify-content:flex-end;align-items:baseline}
figcaption .warn{color:#a60;margin-right:auto}
a.dl{font-size:12px;text-decoration:none;border:1px solid #cfdcea;border-radius:3px;padding:1px 6px;background:#f5f9fd}
a.dl:hover{background:#e6f0fa}
.skipped{font-size:13px;color:#666;margin:12px 0 0;padding-left:18px}
.skipped li{margin:3px 0;overflow-wrap:anywhere}.skipped code{color:#333}
.error{color:#b00;font-size:13px;max-width:480px}
.empty{color:#666;font-size:14px}
a{color:#2a6fb0}
"""

# Runs after the bundle: one vegaEmbed per chart, then the download links. PNG and SVG come from
# the drawn view (view.toImageURL), JSON is the embedded spec as a Blob: all in the page, offline.
CHARTS_JS = """(function(){
var opts=%(opts)s;
var charts=%(charts)s;
function save(url,name){var a=document.createElement('a');a.href=url;a.download=name;
document.body.appendChild(a);a.click();a.remove();}
charts.forEach(function(c){
  var el=document.getElementById(c.id);
  var fig=el.closest('figure');
  var json=fig.querySelector('a.dl[data-format="json"]');
  json.href=URL.createObjectURL(new Blob([JSON.stringify(c.spec,null,2)],{type:'application/json'}));
  var drawn=vegaEmbed(el,c.spec,opts);
  fig.querySelectorAll('a.dl[data-format="png"],a.dl[data-format="svg"]').forEach(function(a){
    a.addEventListener('click',function(ev){
      ev.preventDefault();
      var fmt=a.getAttribute('data-format');
      drawn.then(function(res){return res.view.toImageURL(fmt,fmt==='png'?2:1);})
           .then(function(url){save(url,a.getAttribute('download'));})
           .catch(function(err){console.error('export of '+c.name+' failed:',err);});
    });
  });
  drawn.then(function(){el.setAttribute('data-state','drawn');}).catch(function(err){
    el.setAttribute('data-state','error');el.className='chart error';
    el.textContent='This chart could not be drawn: '+err;
    console.error('chart '+c.name+' could not be drawn:',err);
  });
});
})();"""


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(text).lower())


def _ordered_sections(rendered: list) -> list[tuple[str, list]]:
    """(section, charts) in SECTIONS order, then any other section in first-seen order."""
    groups: dict[str, list] = {}
    for r in rendered:
        groups.setdefault(r.section or "Other", []).append(r)
    names = [s for s in SECTIONS if s in groups] + [s for s in groups if s not in SECTIONS]
    return [(s, groups[s]) for s in names]


def _is_drawn(r: Any) -> bool:
    return r.skipped is None and r.spec is not None


def figure(r: Any) -> str:
    cid = e(f"chart-{r.name}")
    links = "".join(
        f'<a class="dl" href="#" data-format="{fmt}" download="{e(r.name)}.{ext}" '
        f'title="Download this chart as {label}">{label}</a>'
        for fmt, ext, label in (("png", "png", "PNG"), ("svg", "svg", "SVG"), ("json", "vl.json", "JSON")))
    warn = f'<span class="warn">{e(r.warning)}</span>' if r.warning else ""
    return (f'<figure id="fig-{e(r.name)}" aria-label="{e(r.title)}">'
            f'<div class="chart" id="{cid}" data-name="{e(r.name)}"></div>'
            f'<figcaption>{warn}{links}</figcaption></figure>')


def write_report(record: Any, rendered: Iterable[Any], path: Path) -> None:
    """Writes the run's report.html (to a temporary file first, then renames it into place).

    Sections in SECTIONS order (Data, Training, Model, Evaluation, Interpretation; anything else
    after), each with an anchor; a table of contents linking to every section and chart; every
    drawn chart downloadable as PNG, SVG and JSON from the page; charts that could not be drawn
    listed in their section with the one-line reason.
    """
    rendered = list(rendered)
    path = Path(path)

    toc, body, calls = [], [], []
    for section, group in _ordered_sections(rendered):
        anchor = e("section-" + slug(section))
        drawn = [r for r in group if _is_drawn(r)]
        skipped = [r for r in group if not _is_drawn(r)]
        entries = [f'<li><a href="#chart-{e(r.name)}">{e(r.title)}</a></li>' for r in drawn]
        entries += [f'<li><a href="#chart-{e(r.name)}">{e(r.title)}</a> <span class="muted">(not drawn)</span></li>'
                    for r in skipped]
        toc.append(f'<li><a href="#{anchor}">{e(section)}</a><ul>{"".join(entries)}</ul></li>')
        body.append(f'<section id="{anchor}"><h2>{e(section)}'
                    f'<a class="top" href="#contents" title="Back to the contents">↑ contents</a></h2>')
        if drawn:
            body.append('<div class="charts">' + "".join(figure(r) for r in drawn) + "</div>")
            calls += [{"id": f"chart-{r.name}", "name": r.name, "spec": r.spec} for r in drawn]
        if skipped:
            body.append('<ul class="skipped">' + "".join(
                f'<li id="chart-{e(r.name)}"><b>{e(r.title)}</b> (<code>{e(r.name)}</code>) not drawn: '
                f'{e(r.skipped or "no spec")}</li>' for r in skipped) + "</ul>")
        body.append("</section>")
    if not rendered:
        body.append('<p class="empty">This run asked for no charts.</p>')

    nav = (f'<nav class="toc" id="contents" aria-label="Contents"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>'
           if toc else "")
    header = f"<h1>{e(record.name)}</h1>\n<dl>{_facts(record)}</dl>\n{_metrics_table(record.summary or {})}\n{nav}"
    write_page(path, f"{record.name} · report", header, "".join(body), calls)


def page_html(title: str, header: str, main: str, calls: list[dict], css: str = "") -> str:
    """A whole offline page: the bundle once, `header` and `main` (HTML, already escaped), and one
    vegaEmbed per entry of `calls` ({"id", "name", "spec"}; each id names a `figure`'s chart)."""
    bundle = re.sub(r"</(script)", r"<\\/\1", javascript_bundle(), flags=re.IGNORECASE)
    charts_js = CHARTS_JS % {"opts": script_safe_json(EMBED_OPTIONS), "charts": script_safe_json(calls)}
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{CSS}{css}</style>
<script>{bundle}</script>
</head>
<body>
<header>
{header}
</header>
<main>
{main}
</main>
<script>{charts_js}</script>
</body>
</html>
"""


def write_page(path: Path, title: str, header: str, main: str, calls: list[dict], css: str = "") -> None:
    """Writes page_html(...) to a temporary file first, then renames it into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page_html(title, header, main, calls, css), encoding="utf-8")
    tmp.replace(path)
