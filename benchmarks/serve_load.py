"""Load on `python -m dsl serve`: 20 concurrent clients on loopback polling a live run. Run by hand:

    python benchmarks/serve_load.py                   # 20 clients, 30 s, each polling every 100 ms
    python benchmarks/serve_load.py --interval 0      # as fast as they can (closed loop)

The server is a real `python -m dsl serve DIR` subprocess on a free port; DIR holds one hand-made
"running" run whose metrics.jsonl a background writer extends by one epoch every 0.2 s. Each
client is a thread with one keep-alive connection that does what a run page does (GET
/api/metrics/RUN?offset=N, carrying its offset forward) and, every 2 s, what the index does (GET
/api/runs). Self-stopping after --seconds; the server is stopped at the end. Prints requests/s,
errors (non-200 answers, broken connections, rows missing or repeated), and latency percentiles.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = "outputs/live/run"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def row(epoch: int) -> str:
    return json.dumps({"epoch": epoch, "loss": 1.0 / epoch, "val_loss": 1.1 / epoch, "accuracy": 1 - 0.5 / epoch,
                       "val_accuracy": 1 - 0.6 / epoch}) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between one client's polls (0: none)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / RUN
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"name": "load", "status": "running"}))
        (run / "metrics.jsonl").write_text("".join(row(e) for e in range(1, 11)))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "dsl", "serve", tmp, "--port", str(port)], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
        try:
            deadline = time.time() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        raise SystemExit(f"the server did not start: {server.stderr.read().decode()[-2000:]}")
                    time.sleep(0.1)
            report(run, port, args)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


def report(run: Path, port: int, args) -> None:
    stop = threading.Event()
    written = [10]

    def writer():
        with open(run / "metrics.jsonl", "a") as f:
            while not stop.wait(0.2):
                written[0] += 1
                f.write(row(written[0]))
                f.flush()

    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    last_epochs: list[int] = []

    def client(k: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        offset, seen, next_index = 0, 0, 0.0
        mine, errs = [], []
        while not stop.is_set():
            now = time.perf_counter()
            url = "/api/runs" if now >= next_index else f"/api/metrics/{RUN}?offset={offset}"
            if url == "/api/runs":
                next_index = now + 2.0
            t = time.perf_counter()
            try:
                conn.request("GET", url)
                resp = conn.getresponse()
                body = resp.read()
                dt = time.perf_counter() - t
                if resp.status != 200:
                    errs.append(f"{url}: HTTP {resp.status}")
                elif url != "/api/runs":
                    d = json.loads(body)
                    for r in d["rows"]:
                        if r["epoch"] != seen + 1:
                            errs.append(f"client {k}: epoch {r['epoch']} after {seen}")
                        seen = r["epoch"]
                    offset = d["offset"]
                mine.append(dt)
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                errs.append(f"{url}: {type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            if args.interval:
                stop.wait(args.interval)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(errs)
            last_epochs.append(seen)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=client, args=(k,))
                                                  for k in range(args.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join(30)
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

    behind = [written[0] - e for e in last_epochs]
    print(f"{args.clients} clients, {wall:.1f} s, poll interval {args.interval * 1000:.0f} ms, "
          f"{os.cpu_count()} CPUs")
    print(f"requests: {len(lat)}  ({len(lat) / wall:.0f} requests/s)")
    print(f"errors: {len(errors)}" + (f"  first: {errors[:3]}" if errors else ""))
    print(f"latency ms: p50 {pct(50):.1f}  p90 {pct(90):.1f}  p99 {pct(99):.1f}  max {1000 * lat[-1]:.1f}")
    print(f"epochs written {written[0]}; clients' last epoch behind by at most {max(behind)}")


if __name__ == "__main__":
    main()
