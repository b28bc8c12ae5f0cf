"""Chart images from child processes that start with the run.

vl-convert runs Vega in an embedded JavaScript engine whose start costs about a second of CPU
before the first image; converting in the same process puts that second, and every image, on
the run's critical path, since the engine holds the interpreter while it works. A run that will
write images starts its children first thing (two where there are two CPUs, one for a few charts:
compilers.pipeline.image_processes): their engines start
while the run loads data, compiles and trains, and at the end they convert each chart, side by
side, while the run builds the next one and writes the report. Images are drawn from the chart
without its selections (`static_spec`).

Protocol: one JSON object per line each way. The child answers {"ready": true} once its engine
is warm (not awaited) and then, for each {"id", "spec", "path", "fmt", "scale"}, writes the
image (temporary name + rename) and answers {"id", "error", "seconds"}.

    python -m compilers.charts.renderer     # the child; needs only vl_convert
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

_TINY = {"data": {"values": [{"a": 1}]}, "mark": "point",
         "encoding": {"x": {"field": "a", "type": "quantitative"}}, "title": "warm"}


def static_spec(spec: dict) -> dict:
    """The spec as it looks before anyone interacts with it, without its selections.

    An image cannot be hovered, brushed or zoomed, and Vega builds every selection's event
    streams and signals all the same: without them the learning curves convert in half the time.
    Every selection is empty in a still image, so a condition on one takes its selected branch
    when the selection's `empty` is true (the default) and its other branch otherwise; a filter
    by one keeps every row (empty true) or none; a scale domain from one is the data's own.
    Parameters that are not selections (sliders, variables) stay. A layer drawn fully transparent
    (the marks a hover reads its tooltip from) is left out when a visible layer beside it plots the
    same data on the same x and y fields, so that it spans no other scale domain: it draws nothing,
    and Vega still lays it out (a third of the learning curves' conversion).
    """
    names: set[str] = set()

    def collect(o):
        if isinstance(o, dict):
            params = o.get("params")
            for p in params if isinstance(params, list) else ():
                if isinstance(p, dict) and "select" in p and "name" in p:
                    names.add(p["name"])
            for k, v in o.items():
                if k not in _DATA_KEYS:
                    collect(v)
        elif isinstance(o, list):
            for v in o:
                collect(v)

    collect(spec)
    if not names:
        return spec

    def is_sel(c):
        return isinstance(c, dict) and c.get("param") in names

    def walk(o):
        if isinstance(o, list):
            return [w for w in (walk(v) for v in o) if w is not _DROP]
        if not isinstance(o, dict):
            return o
        if "filter" in o and is_sel(o["filter"]):
            return _DROP if o["filter"].get("empty", True) else {**o, "filter": "false"}
        out = {}
        for k, v in o.items():
            if k in _DATA_KEYS:
                out[k] = v
            elif k == "params" and isinstance(v, list):
                kept = [p for p in v if not (isinstance(p, dict) and p.get("name") in names)]
                if kept:
                    out[k] = walk(kept)
            elif k == "domain" and is_sel(v):
                continue
            elif k != "condition":
                out[k] = walk(v)
        if "condition" in o:
            conds = o["condition"] if isinstance(o["condition"], list) else [o["condition"]]
            kept = []
            for c in conds:
                if not is_sel(c):
                    kept.append(walk(c))
                elif c.get("empty", True):   # matches every mark: its branch is the value
                    for key in [k for k in out if k in ("value", "field", "datum", "expr", "type", "scale",
                                                        "legend", "title", "aggregate", "bin", "timeUnit")]:
                        del out[key]
                    out.update({k: walk(v) for k, v in c.items() if k not in ("param", "empty")})
                    break
            if kept:
                out["condition"] = kept if isinstance(o["condition"], list) else kept[0]
        return out

    return _drop_hidden_layers(walk(spec))


def _hidden(layer) -> bool:
    enc = layer.get("encoding") if isinstance(layer, dict) else None
    mark = layer.get("mark") if isinstance(layer, dict) else None
    return (isinstance(enc, dict) and enc.get("opacity") == {"value": 0}) or \
        (isinstance(mark, dict) and mark.get("opacity") == 0 and "opacity" not in (enc or {}))


def _plots_like(layer: dict, other: dict) -> bool:
    """Same data (none of its own, or the same), no transforms, the same x and y fields."""
    if layer.get("data") != other.get("data") or "transform" in layer or "transform" in other:
        return False
    enc, other_enc = layer.get("encoding") or {}, other.get("encoding") or {}
    return all(isinstance(enc.get(ch), dict) and isinstance(other_enc.get(ch), dict)
               and "field" in enc[ch] and enc[ch].get("field") == other_enc[ch].get("field")
               and enc[ch].get("type") == other_enc[ch].get("type")
               and enc[ch].get("scale") == other_enc[ch].get("scale")
               for ch in ("x", "y"))


def _drop_hidden_layers(o):
    if isinstance(o, list):
        return [_drop_hidden_layers(v) for v in o]
    if not isinstance(o, dict):
        return o
    out = {k: (v if k in _DATA_KEYS else _drop_hidden_layers(v)) for k, v in o.items()}
    layers = out.get("layer")
    if isinstance(layers, list) and len(layers) > 1:
        kept = [la for la in layers if not (_hidden(la) and any(
            not _hidden(v) and isinstance(v, dict) and _plots_like(la, v) for v in layers))]
        if kept:
            out["layer"] = kept
    return out


_DROP = object()
_DATA_KEYS = ("datasets", "data", "values")   # rows, not spec: never walked


def convert(spec: dict, fmt: str, scale: float) -> bytes:
    """An image of the spec as it first appears (static_spec); the spec itself if that fails."""
    import vl_convert as vlc

    def convert(s):
        return vlc.vegalite_to_png(s, scale=scale) if fmt == "png" else vlc.vegalite_to_svg(s).encode()

    still = static_spec(spec)
    if still is spec:
        return convert(spec)
    try:
        return convert(still)
    except Exception:
        return convert(spec)


class _Child:
    def __init__(self, env: dict, cwd: str, answers: "queue.Queue"):
        import threading

        self.proc = subprocess.Popen([sys.executable, "-m", "compilers.charts.renderer"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd,
                                     text=True, bufsize=1)
        self.load = 0   # bytes of spec sent: a stand-in for the work queued
        self.reader = threading.Thread(target=self._read, args=(answers,), daemon=True)
        self.reader.start()

    def _read(self, answers) -> None:
        try:
            for line in self.proc.stdout:
                try:
                    answers.put(json.loads(line))
                except ValueError:
                    continue
        except (OSError, ValueError):
            pass
        answers.put({"gone": self})

    def send(self, text: str) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            self.proc.stdin.write(text)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        self.load += len(text)
        return True

    def close(self) -> None:
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


class Renderer:
    """The parent's end: `submit` jobs as charts are built, then `wait` for their answers.

    `processes` children (default: 2 where there are 2 or more CPUs): each job goes to the one with
    the least work queued, so the images of the last charts convert side by side."""

    def __init__(self, processes: int | None = None):
        import queue

        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        n = processes or max(1, min(2, os.cpu_count() or 1))
        self.answers: queue.Queue = queue.Queue()
        self.children = [_Child(env, root, self.answers) for _ in range(n)]
        self.pending: dict[int, tuple] = {}
        self._next = 0

    def submit(self, spec: dict, path: Path, fmt: str, scale: float, tag=None) -> bool:
        """Queues one image; False when every child is gone (the caller converts it itself)."""
        self._next += 1
        text = json.dumps({"id": self._next, "spec": spec, "path": str(path), "fmt": fmt, "scale": scale},
                          separators=(",", ":")) + "\n"
        for child in sorted(self.children, key=lambda c: c.load):
            if child.send(text):
                self.pending[self._next] = (tag, path, fmt, child)
                return True
        return False

    def wait(self, timeout: float = 600.0) -> list[tuple]:
        """[(tag, path, fmt, error or None, seconds)] for every submitted job. A job no child
        answered (they died, or took longer than `timeout` in all) comes back with an error."""
        import queue

        out = []
        gone = 0
        deadline = time.monotonic() + timeout
        while self.pending and gone < len(self.children):
            try:
                msg = self.answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if "gone" in msg:   # a child ended: the jobs it had are not coming
                gone += 1
                for key in [k for k, job in self.pending.items() if job[3] is msg["gone"]]:
                    tag, path, fmt, _ = self.pending.pop(key)
                    out.append((tag, path, fmt, "the image process stopped", 0.0))
                continue
            job = self.pending.pop(msg.get("id"), None)
            if job is not None:
                out.append((*job[:3], msg.get("error"), float(msg.get("seconds", 0.0))))
        for tag, path, fmt, _ in self.pending.values():
            out.append((tag, path, fmt, "the image process stopped", 0.0))
        self.pending.clear()
        return out

    def close(self) -> None:
        """Stops the children at once: every job they took has been answered (its file written
        first), and waiting for their JavaScript engines to wind down would only add to the time."""
        for child in self.children:
            child.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _serve() -> None:
    try:
        os.nice(5)   # the run's own process comes first when both want a CPU
    except OSError:
        pass
    try:
        convert(_TINY, "png", 1.0)   # starts the engine and loads the fonts
    except Exception:
        pass
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        try:
            job = json.loads(line)
        except ValueError:
            continue
        error = None
        try:
            data = convert(job["spec"], job["fmt"], float(job["scale"]))
            path = Path(job["path"])
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        except Exception as e:   # the spec is still there; only this image is missing
            error = f"{job.get('fmt')} failed: {type(e).__name__}: {' '.join(str(e).split())[:280]}"
        print(json.dumps({"id": job.get("id"), "error": error, "seconds": round(time.perf_counter() - t0, 4)}),
              flush=True)


if __name__ == "__main__":
    _serve()
