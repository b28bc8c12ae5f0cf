"""`python -m dsl serve`: a local, read-only web app over the runs and sweeps under a folder.

Starlette routes, served by uvicorn (dsl/commands/serve.py). Pages:
- `/`: every run and sweep (name, status, start time, latest or final metrics), sortable and
  filterable in the page; the page polls `/api/runs` every 2 s, so new runs appear as they start.
- `/run/PATH`: a run's charts (charts/*.vl.json) and its facts. While the run trains, the page
  polls `/api/metrics/PATH?offset=N` (the whole lines of metrics.jsonl after byte N) every second
  and streams the new epochs into the learning curves with Vega's `view.change`, no re-embed.
- `/sweep/PATH/`: the comparison page of compilers/charts/sweep.py.
- `/vega.js`: vl-convert's Vega/Vega-Lite/vega-embed bundle: no request leaves the machine.
- `/files/PATH`: any file under the served folders (a chart's JSON).

Safe by default: GET (and HEAD) only; every PATH is resolved, symlinks included, and must lie
inside a served folder, else 404.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

CURVES = "learning_curves"
POLL_RUN_MS = 1000     # a new epoch reaches the page within about this long
POLL_INDEX_MS = 2000


# --- where files may come from -------------------------------------------------------------------

class Roots:
    """The served folders. URL paths are relative to `base`; a path is served only when it
    resolves (symlinks followed) inside one of `folders`."""

    def __init__(self, folders: list[Path], base: Path):
        self.base = Path(os.path.realpath(base))
        self.folders = [Path(os.path.realpath(f)) for f in folders]

    def resolve(self, rel: str) -> Path | None:
        """URL path -> the real path inside a served folder, or None (traversal, outside, NUL)."""
        if "\x00" in rel or "\\" in rel:
            return None
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            return None
        real = Path(os.path.realpath(self.base.joinpath(*parts)))
        if not any(real == f or f in real.parents for f in self.folders):
            return None
        return real if real.exists() else None

    def rel(self, path: Path) -> str:
        return Path(os.path.realpath(path)).relative_to(self.base).as_posix()


def default_roots(dir_: str | Path | None, cwd: Path) -> Roots:
    """DIR given: that folder. Otherwise outputs/ and multirun/ of the current directory."""
    if dir_ is not None:
        d = Path(dir_)
        return Roots([d], d)
    return Roots([cwd / "outputs", cwd / "multirun"], cwd)


# --- reading runs back ----------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_lines(path: Path, offset: int = 0) -> tuple[list[dict], int, bool]:
    """The whole JSON lines of `path` after byte `offset` -> (rows, new offset, reset).

    A line still being written (no newline yet) waits for the next call. An offset past the end
    (the file was rewritten, as resume does) starts again from 0 with reset=True.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            reset = offset > size or offset < 0
            if reset:
                offset = 0
            f.seek(offset)
            data = f.read(size - offset)
    except OSError:
        return [], 0, offset != 0
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, offset + end, reset


def _started(run_dir: Path) -> float | None:
    for p in (run_dir / ".hydra" / "config.yaml", run_dir / "summary.json", run_dir / "multirun.yaml",
              run_dir / "sweep.jsonl"):
        try:
            return p.stat().st_mtime
        except OSError:
            continue
    return None


def _epochs_planned(run_dir: Path) -> int | None:
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
        value = cfg["train"]["epochs"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _finite_numbers(row: dict) -> dict:
    return {k: v for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")}


def run_info(roots: Roots, run_dir: Path) -> dict:
    """One run for the index: name, status, start, epochs, final (or latest) metrics."""
    from compilers.charts.sweep import flat_metrics

    summary = _read_json(run_dir / "summary.json")
    summary = summary if isinstance(summary, dict) else {}
    rows, _, _ = read_lines(run_dir / "metrics.jsonl")
    latest = _finite_numbers(rows[-1]) if rows else {}
    final = {k: v for k, v in flat_metrics(summary.get("metrics") or {}).items() if v is not None}
    metrics = final or {k: v for k, v in latest.items() if k != "epoch"}
    parent = run_dir.parent
    sweep = roots.rel(parent) if (parent / "sweep.jsonl").is_file() or (parent / "multirun.yaml").is_file() else None
    return {"kind": "run", "path": roots.rel(run_dir), "name": str(summary.get("name") or run_dir.name),
            "status": str(summary.get("status") or ("failed" if not summary else "completed")),
            "started": _started(run_dir), "epoch": latest.get("epoch"), "epochs": _epochs_planned(run_dir),
            "metrics": metrics, "final": bool(final), "sweep": sweep}


def listing(roots: Roots) -> dict:
    """{"runs": [...], "sweeps": [...]} under every served folder, newest first."""
    from compilers.charts.sweep import _walk

    runs, sweeps, seen = [], [], set()
    for folder in roots.folders:
        if not folder.is_dir():
            continue
        run_dirs, sweep_dirs = _walk(folder)
        for d in run_dirs:
            real = os.path.realpath(d)
            if real not in seen and roots.resolve(roots.rel(d)) is not None:
                seen.add(real)
                runs.append(run_info(roots, Path(real)))
        # A sweep still running has Hydra's multirun.yaml and no sweep.jsonl yet.
        started = [d.parent for d in run_dirs if (d.parent / "multirun.yaml").is_file()]
        for d in sorted(set(sweep_dirs) | set(started)):
            real = Path(os.path.realpath(d))
            if str(real) in seen or roots.resolve(roots.rel(real)) is None:
                continue
            seen.add(str(real))
            jobs = [r for r in runs if r["sweep"] == roots.rel(real)]
            statuses = sorted({r["status"] for r in jobs})
            n_lines = len(read_lines(real / "sweep.jsonl")[0])
            sweeps.append({"kind": "sweep", "path": roots.rel(real), "name": jobs[0]["name"] if jobs else real.name,
                           "status": "running" if "running" in statuses else ", ".join(statuses) or "completed",
                           "started": _started(real),
                           "epoch": None, "epochs": None, "metrics": {"jobs": max(n_lines, len(jobs))},
                           "final": True, "sweep": None})
    key = lambda r: -(r["started"] or 0)   # noqa: E731
    return {"runs": sorted(runs, key=key), "sweeps": sorted(sweeps, key=key)}


def live_curves(run_dir: Path) -> dict:
    """The learning curves of what metrics.jsonl holds now, for streaming: {"spec", "sets",
    "offset"}; sets maps each Vega data set to its quantity. spec None before the first epoch."""
    from compilers.charts.base import ChartSkip
    from compilers.charts.training import LearningCurvesOptions, learning_curves

    rows, offset, _ = read_lines(run_dir / "metrics.jsonl")
    record = SimpleNamespace(history=rows, best_epoch=None, monitor=None)
    try:
        chart = learning_curves(record, LearningCurvesOptions())
    except ChartSkip:
        return {"spec": None, "sets": {}, "offset": offset}
    spec = chart.to_dict()
    sets = {}
    for name, values in (spec.get("datasets") or {}).items():
        sets[name] = None
        for panel in _panels(spec):
            if (panel.get("data") or {}).get("name") == name:
                t = panel.get("title")
                sets[name] = t.get("text") if isinstance(t, dict) else t
    return {"spec": spec, "sets": {k: v for k, v in sets.items() if v}, "offset": offset}


def _panels(spec: dict) -> list[dict]:
    out = [spec]
    for key in ("concat", "hconcat", "vconcat"):
        for sub in spec.get(key) or []:
            out += _panels(sub)
    return out


def chart_files(run_dir: Path) -> list[tuple[str, str]]:
    """[(name, title)] of charts/*.vl.json, in the order summary.json lists the charts."""
    files = {p.name[:-len(".vl.json")]: p for p in sorted((run_dir / "charts").glob("*.vl.json"))}
    summary = _read_json(run_dir / "summary.json")
    order = list((summary or {}).get("charts") or {}) if isinstance(summary, dict) else []
    names = [n for n in order if n in files] + [n for n in files if n not in order]
    out = []
    for n in names:
        spec = _read_json(files[n]) or {}
        t = spec.get("title")
        out.append((n, (t.get("text") if isinstance(t, dict) else t) or n))
    return out


# --- pages ----------------------------------------------------------------------------------------

INDEX_CSS = """
table.runs{border-collapse:collapse;font-size:13px;background:#fff;margin-top:14px}
table.runs th,table.runs td{padding:4px 10px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
table.runs th{cursor:pointer;user-select:none;color:#555}
table.runs th[data-dir="asc"]::after{content:" ▲"}table.runs th[data-dir="desc"]::after{content:" ▼"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.status-running{color:#1a7f37;font-weight:600}.status-failed{color:#b00}.status-interrupted{color:#a60}
input#filter{font-size:14px;padding:4px 8px;width:320px}
.m{color:#666;font-size:12px}
table.runs td.m{white-space:normal;max-width:560px}
#progress{font-size:14px;margin:6px 0}
#live{font-size:12px;color:#1a7f37}
"""


def _shell(title: str, header: str, main: str, script: str, css: str = "") -> str:
    from compilers.charts.report import CSS, e

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<link rel="icon" href="data:,">
<style>{CSS}{INDEX_CSS}{css}</style>
<script src="/vega.js"></script>
</head>
<body>
<header>
{header}
</header>
<main>
{main}
</main>
<script>{script}</script>
</body>
</html>
"""


INDEX_JS = """(function(){
var rows=[],sortKey='started',sortDir='desc';
var cols=[['name','name'],['kind','kind'],['status','status'],['started','started'],['epoch','epoch'],['metrics','metrics']];
function fmt(v){if(v===null||v===undefined)return '–';if(typeof v==='number')
  return Number.isInteger(v)?String(v):v.toPrecision(4);return String(v);}
function when(t){if(!t)return '–';var d=new Date(t*1000);return d.toISOString().replace('T',' ').slice(0,19);}
function metricsText(m){return Object.keys(m||{}).map(function(k){return k+' '+fmt(m[k]);}).join('  ');}
function val(r,k){if(k==='metrics')return metricsText(r.metrics);var v=r[k];return v===null||v===undefined?'':v;}
function draw(){
  var q=document.getElementById('filter').value.toLowerCase();
  var shown=rows.filter(function(r){return !q||[r.name,r.path,r.status,r.kind,metricsText(r.metrics)].join(' ').toLowerCase().indexOf(q)>=0;});
  shown.sort(function(a,b){var x=val(a,sortKey),y=val(b,sortKey);var c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
    return sortDir==='asc'?c:-c;});
  var tb=document.querySelector('table.runs tbody');tb.textContent='';
  shown.forEach(function(r){
    var tr=document.createElement('tr');tr.setAttribute('data-path',r.path);tr.setAttribute('data-status',r.status);
    function td(text,cls){var c=document.createElement('td');c.textContent=text;if(cls)c.className=cls;tr.appendChild(c);return c;}
    var c=td('');var a=document.createElement('a');
    a.href=(r.kind==='sweep'?'/sweep/':'/run/')+r.path.split('/').map(encodeURIComponent).join('/')+(r.kind==='sweep'?'/':'');
    a.textContent=r.name;c.appendChild(a);var p=document.createElement('div');p.className='m';p.textContent=r.path;c.appendChild(p);
    td(r.kind);td(r.status,'status-'+r.status);td(when(r.started));
    td(r.epoch===null||r.epoch===undefined?'–':fmt(r.epoch)+(r.epochs?' / '+r.epochs:''),'num');
    td(metricsText(r.metrics)+(r.final||r.kind==='sweep'?'':' (latest)'),'m');
    tb.appendChild(tr);
  });
  document.getElementById('count').textContent=shown.length+' of '+rows.length;
  document.querySelectorAll('table.runs th').forEach(function(th){
    th.setAttribute('data-dir',th.getAttribute('data-key')===sortKey?sortDir:'');});
}
function load(){fetch('/api/runs').then(function(r){return r.json();}).then(function(d){
  rows=d.sweeps.concat(d.runs);draw();document.body.setAttribute('data-loaded','1');})
  .catch(function(err){console.warn('listing failed',err);});}
var head=document.querySelector('table.runs thead tr');
cols.forEach(function(c){var th=document.createElement('th');th.textContent=c[1];th.setAttribute('data-key',c[0]);
  th.addEventListener('click',function(){if(sortKey===c[0])sortDir=sortDir==='asc'?'desc':'asc';else{sortKey=c[0];sortDir='asc';}draw();});
  head.appendChild(th);});
document.getElementById('filter').addEventListener('input',draw);
load();setInterval(load,%(poll)d);
})();"""


def index_page(roots: Roots) -> str:
    from compilers.charts.report import e

    where = ", ".join(str(f) for f in roots.folders)
    header = (f"<h1>Runs and sweeps</h1><dl><dt>from</dt><dd>{e(where)}</dd></dl>"
              '<input id="filter" type="search" placeholder="filter: name, status, path, metric" '
              'aria-label="filter"> <span class="m" id="count"></span>')
    main = '<table class="runs"><thead><tr></tr></thead><tbody></tbody></table>'
    return _shell("runs", header, main, INDEX_JS % {"poll": POLL_INDEX_MS})


RUN_JS = """(function(){
var cfg=%(cfg)s;
var opts={actions:{export:true,source:true,compiled:false,editor:false},renderer:'canvas'};
var offset=cfg.offset,live=null,epochs=cfg.epochs;
// vega.changeset(); vl-convert's bundle sets window.vega to null, and a View carries the same function.
function changeset(view){return window.vega&&window.vega.changeset?window.vega.changeset():view.changeset();}
function save(url,name){var a=document.createElement('a');a.href=url;a.download=name;document.body.appendChild(a);a.click();a.remove();}
function embed(el,spec,name){
  var drawn=vegaEmbed(el,spec,opts);
  var fig=el.closest('figure');
  fig.querySelectorAll('a.dl[data-format="png"],a.dl[data-format="svg"]').forEach(function(a){
    a.addEventListener('click',function(ev){ev.preventDefault();var f=a.getAttribute('data-format');
      drawn.then(function(r){return r.view.toImageURL(f,f==='png'?2:1);}).then(function(u){save(u,a.getAttribute('download'));});});});
  var j=fig.querySelector('a.dl[data-format="json"]');
  j.href=URL.createObjectURL(new Blob([JSON.stringify(spec,null,2)],{type:'application/json'}));
  return drawn.then(function(res){el.vegaView=res.view;el.setAttribute('data-state','drawn');return res;},function(err){
    el.setAttribute('data-state','error');el.textContent='This chart could not be drawn: '+err;
    console.error('chart '+name+' could not be drawn:',err);});
}
cfg.files.forEach(function(c){var el=document.getElementById('chart-'+c.name);
  fetch(c.url).then(function(r){return r.json();}).then(function(spec){return embed(el,spec,c.name);});});
function startLive(spec,sets){
  var el=document.getElementById('chart-live-curves');el.textContent='';
  live=embed(el,spec,'live learning curves').then(function(res){return {view:res.view,sets:sets};});
}
if(cfg.live&&cfg.live.spec)startLive(cfg.live.spec,cfg.live.sets);
function progress(rows,status){
  if(rows.length){var last=rows[rows.length-1];
    document.getElementById('epoch').textContent=String(last.epoch)+(epochs?' of '+epochs:'');
    var parts=Object.keys(last).filter(function(k){return k!=='epoch'&&typeof last[k]==='number';})
      .map(function(k){return k+' '+last[k].toPrecision(4);});
    document.getElementById('latest').textContent=parts.join('  ');}
  var st=document.getElementById('status');
  if(status!==st.textContent&&status!=='running'){
    // Finished: the trainer has written every chart by now; offer them rather than reload.
    var a=document.getElementById('finished');a.hidden=false;}
  st.textContent=status;st.className='status-'+status;
  document.body.setAttribute('data-status',status);
}
function stream(rows){
  if(!live)return Promise.resolve();
  return live.then(function(l){
    Object.keys(l.sets).forEach(function(name){var q=l.sets[name],add=[];
      rows.forEach(function(r){if(typeof r.epoch!=='number')return;
        if(typeof r[q]==='number')add.push({epoch:r.epoch,split:'train',value:r[q]});
        if(typeof r['val_'+q]==='number')add.push({epoch:r.epoch,split:'val',value:r['val_'+q]});});
      if(add.length)l.view.change(name,changeset(l.view).insert(add)).run();});
    markEpoch(rows);
  });
}
function markEpoch(rows){
  var ep=rows.filter(function(r){return typeof r.epoch==='number';}).map(function(r){return r.epoch;});
  if(ep.length)document.getElementById('chart-live-curves').setAttribute('data-epoch',String(Math.max.apply(null,ep)));
}
var busy=false;
function poll(){
  if(busy||!cfg.live)return;busy=true;
  fetch(cfg.metrics+'?offset='+offset).then(function(r){return r.json();}).then(function(d){
    if(d.reset||(!live&&d.rows.length)){
      return fetch(cfg.curves).then(function(r){return r.json();}).then(function(c){
        offset=c.offset;if(c.spec){startLive(c.spec,c.sets);live.then(function(){markEpoch(d.rows);});}
        progress(d.rows,d.status);});}
    offset=d.offset;progress(d.rows,d.status);return stream(d.rows);
  }).catch(function(err){console.warn('poll failed',err);}).then(function(){busy=false;});
}
if(cfg.live){setInterval(poll,%(poll)d);}
})();"""


def section_of(name: str) -> str:
    """A chart's report section (Data, Training, ...) from its name: the kind, or kind_N."""
    import compilers.charts  # noqa: F401  (fills the chart registry)
    from dsl.registry import CHARTS

    kind = name
    if kind not in CHARTS and "_" in kind and kind.rsplit("_", 1)[1].isdigit():
        kind = kind.rsplit("_", 1)[0]
    return CHARTS.get(kind).meta.get("section", "Other") if kind in CHARTS else "Other"


def _sections(entries: list) -> str:
    """Charts in report.py's section order, each section with its heading and anchor; charts
    that were not drawn listed in their section with the reason."""
    from compilers.charts.report import _ordered_sections, e, slug

    if not entries:
        return '<p class="empty">No charts yet.</p>'
    out = []
    for section, group in _ordered_sections(entries):
        drawn = [x.html for x in group if x.html]
        skipped = [x for x in group if not x.html]
        out.append(f'<section id="{e("section-" + slug(section))}"><h2>{e(section)}</h2>')
        if drawn:
            out.append('<div class="charts">' + "".join(drawn) + "</div>")
        if skipped:
            out.append('<ul class="skipped">' + "".join(
                f"<li><code>{e(x.name)}</code> not drawn: {e(x.reason)}</li>" for x in skipped) + "</ul>")
        out.append("</section>")
    return "".join(out)


def _figure(name: str, title: str) -> str:
    from compilers.charts.report import figure

    return figure(SimpleNamespace(name=name, title=title, warning=None))


def run_page(roots: Roots, run_dir: Path) -> str:
    from compilers.charts.report import _metrics_table, e

    from urllib.parse import quote

    info = run_info(roots, run_dir)
    summary = _read_json(run_dir / "summary.json") or {}
    rel = quote(info["path"])
    files = chart_files(run_dir)
    running = info["status"] == "running"
    live = None
    if running or not any(n == CURVES for n, _ in files):
        live = live_curves(run_dir)
        files = [(n, t) for n, t in files if n != CURVES]
    skipped = {k: v for k, v in (summary.get("charts") or {}).items() if v != "ok"} if isinstance(summary, dict) else {}
    entries = []
    if live is not None:
        fig = _figure("live-curves", "Learning curves")
        if live["spec"] is None:
            fig = fig.replace('data-name="live-curves">', 'data-name="live-curves" data-state="waiting">'
                              "waiting for the first epoch…", 1)
        entries.append(SimpleNamespace(section="Training", html=fig))
    entries += [SimpleNamespace(section=section_of(n), html=_figure(n, t)) for n, t in files]
    entries += [SimpleNamespace(section=section_of(k), html=None, name=k, reason=v) for k, v in skipped.items()]
    main = _sections(entries)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])) if info["started"] else "–"
    rows = read_lines(run_dir / "metrics.jsonl")[0]
    last = _finite_numbers(rows[-1]) if rows else {}
    latest = "  ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "epoch")
    epoch = "–" if info["epoch"] is None else f"{info['epoch']:g}"
    if info["epoch"] is not None and info["epochs"]:
        epoch += f" of {info['epochs']}"
    status = e(info["status"])
    header = (f'<p class="m"><a href="/">all runs</a></p><h1>{e(info["name"])}</h1>'
              f'<dl><dt>path</dt><dd>{e(info["path"])}</dd>'
              f'<dt>status</dt><dd id="status" class="status-{status}">{status}</dd>'
              f'<dt>started</dt><dd>{e(started)}</dd><dt>epoch</dt><dd id="epoch">{e(epoch)}</dd>'
              f'<dt>latest</dt><dd id="latest" class="m">{e(latest)}</dd></dl>'
              + ('<p id="live">live: this page follows metrics.jsonl '
                 '<a id="finished" href="" hidden>finished: reload for every chart</a></p>' if running else "")
              + _metrics_table(summary if isinstance(summary, dict) else {}))
    cfg = {"offset": live["offset"] if live else 0, "epochs": info["epochs"],
           "live": {"spec": live["spec"], "sets": live["sets"]} if live and running else None,
           "metrics": f"/api/metrics/{rel}", "curves": f"/api/curves/{rel}",
           "files": [{"name": n, "url": f"/files/{rel}/charts/{quote(n)}.vl.json"} for n, _ in files]}
    if live is not None and not running and live["spec"] is not None:
        # A finished run without a stored learning-curves file: draw the curves once, no polling.
        cfg["static"] = live["spec"]
    from compilers.charts.report import script_safe_json

    js = RUN_JS % {"cfg": script_safe_json(cfg), "poll": POLL_RUN_MS}
    if "static" in cfg:
        js += ("(function(){var c=%s;vegaEmbed(document.getElementById('chart-live-curves'),c).then(function(){"
               "document.getElementById('chart-live-curves').setAttribute('data-state','drawn');});})();"
               % script_safe_json(cfg["static"]))
    return _shell(f"{info['name']} · run", header, main, js)


def sweep_page(roots: Roots, sweep_dir: Path) -> str:
    """The sweep's comparison page (sweep.py's, with the bundle inline as `compare` writes it).
    Its links to each job's report.html are relative to the sweep folder: served at
    /sweep/PATH/, they land on /sweep/PATH/JOB/report.html, which redirects to the run's page."""
    from compilers.charts.report import page_html
    from compilers.charts.sweep import SWEEP_CSS, collect, compare, comparison_parts

    runs = collect([sweep_dir])
    if not runs:
        from compilers.charts.report import e

        return _shell("sweep", f"<h1>{e(sweep_dir.name)}</h1>", '<p class="empty">No runs yet.</p>', "")
    return page_html(*comparison_parts(compare(runs), sweep_dir, [Path(roots.rel(sweep_dir))]), css=SWEEP_CSS)


# --- the app --------------------------------------------------------------------------------------

LOCAL_HOSTS = ("127.0.0.1", "localhost")


def create_app(roots: Roots, allowed_hosts: list[str] | tuple[str, ...] | None = None):
    """The app. `allowed_hosts`: the Host headers it answers (others get 400), so that a web page
    elsewhere cannot reach a loopback server through a rebound DNS name; None: any."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    bundle: dict[str, bytes] = {}

    def found(rel: str, kind: str | None = None) -> Path:
        path = roots.resolve(rel)
        if path is None:
            raise HTTPException(404)
        if kind == "run" and not (path / "summary.json").is_file():
            raise HTTPException(404)
        if kind == "file" and not path.is_file():
            raise HTTPException(404)
        return path

    async def index(request):
        return HTMLResponse(index_page(roots))

    async def vega(request):
        if "js" not in bundle:
            from compilers.charts.report import javascript_bundle

            bundle["js"] = javascript_bundle().encode("utf-8")
        return Response(bundle["js"], media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    async def api_runs(request):
        return JSONResponse(listing(roots), headers={"Cache-Control": "no-store"})

    async def run(request):
        path = found(request.path_params["path"], "run")
        return HTMLResponse(run_page(roots, path))

    async def api_metrics(request):
        path = found(request.path_params["path"], "run")
        try:
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            raise HTTPException(400, "offset must be a whole number of bytes")
        rows, new, reset = read_lines(path / "metrics.jsonl", offset)
        summary = _read_json(path / "summary.json")
        status = str(summary.get("status") or "completed") if isinstance(summary, dict) else "failed"
        return JSONResponse({"rows": rows, "offset": new, "reset": reset, "status": status},
                            headers={"Cache-Control": "no-store"})

    async def api_curves(request):
        path = found(request.path_params["path"], "run")
        from starlette.concurrency import run_in_threadpool

        return JSONResponse(await run_in_threadpool(live_curves, path), headers={"Cache-Control": "no-store"})

    async def sweep(request):
        rel = request.path_params["path"]
        if rel.endswith("/report.html") or rel == "report.html":
            target = rel[:-len("report.html")].rstrip("/")
            path = found(target, "run")
            return RedirectResponse("/run/" + roots.rel(path), status_code=302)
        path = found(rel.rstrip("/"))
        if not (path / "sweep.jsonl").is_file() and not (path / "multirun.yaml").is_file():
            raise HTTPException(404)
        if not rel.endswith("/"):
            return RedirectResponse("/sweep/" + roots.rel(path) + "/", status_code=302)
        from starlette.concurrency import run_in_threadpool

        return HTMLResponse(await run_in_threadpool(sweep_page, roots, path))

    async def files(request):
        return FileResponse(found(request.path_params["path"], "file"), headers={"Cache-Control": "no-store"})

    routes = [Route("/", index, methods=["GET"]), Route("/vega.js", vega, methods=["GET"]),
              Route("/api/runs", api_runs, methods=["GET"]),
              Route("/api/metrics/{path:path}", api_metrics, methods=["GET"]),
              Route("/api/curves/{path:path}", api_curves, methods=["GET"]),
              Route("/run/{path:path}", run, methods=["GET"]), Route("/sweep/{path:path}", sweep, methods=["GET"]),
              Route("/files/{path:path}", files, methods=["GET"])]
    middleware = []
    if allowed_hosts is not None:
        from starlette.middleware import Middleware
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    return Starlette(routes=routes, middleware=middleware)
