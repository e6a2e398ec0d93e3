"""Benchmark: small requests while a large one is in flight, fair window scheduling against FIFO.

One service (`python -m service`, 127.0.0.1), two settings, one after the other in the same run:

* ours: the defaults: a model call takes at most `max_batch_windows` (32) windows, shared evenly among
  the requests in progress, so a long request runs over many calls and small requests join the next;
* peer: whole requests in arrival order (`--max_batch_windows` larger than any request: every call
  runs each request it holds to the end), which is how the service scheduled work before.

Load: one client keeps sending a long context (about 100,000 characters of dev-v1.1 paragraphs,
~370 windows; its next request as soon as the last is answered), while `--concurrency` (4) clients
ask one-window dev-v1.1 questions for `--seconds` (40). Prints p50/p95/p99 latency of the small
requests, their questions/s and the long request's time, for both settings, and the ratios.

    python benchmarks/bench_load.py --model models/squad-minilm-l6
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import DEFAULT_DEV, load_questions, start_service, stop_service  # noqa: E402


def post(conn: http.client.HTTPConnection, question: str, context: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    body = json.dumps({"question": question, "context": context}).encode()
    conn.request("POST", "/v1/answer", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    return time.perf_counter() - t0, r.status


def percentile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def run(port: int, small: list[dict], long_context: str, concurrency: int, seconds: float) -> dict:
    stop = threading.Event()
    lat: list[float] = []
    long_times: list[float] = []
    errors: list[int] = []

    def long_client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while not stop.is_set():
            took, status = post(conn, "What did the committee decide?", long_context)
            (long_times if status == 200 else errors).append(took if status == 200 else status)

    def small_client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        i = k
        while not stop.is_set():
            q = small[i % len(small)]
            took, status = post(conn, q["question"], q["context"])
            (lat if status == 200 else errors).append(took if status == 200 else status)
            i += concurrency

    threads = [threading.Thread(target=long_client)]
    threads += [threading.Thread(target=small_client, args=(k,)) for k in range(concurrency)]
    threads[0].start()
    time.sleep(0.5)  # the long request is in flight first
    t0 = time.perf_counter()
    for t in threads[1:]:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"n": len(lat), "qps": len(lat) / wall, "p50": percentile(lat, 0.5), "p95": percentile(lat, 0.95),
            "p99": percentile(lat, 0.99), "long": statistics.median(long_times) if long_times else float("nan"),
            "long_n": len(long_times), "errors": errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    p.add_argument("--predict_file", type=Path, default=DEFAULT_DEV)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--long_chars", type=int, default=100_000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max_batch_size", type=int, default=32)
    p.add_argument("--max_wait_ms", type=float, default=10.0)
    args = p.parse_args(argv)
    from squad_qa.model.model_dir import resolve_model_dir

    model = resolve_model_dir(args.model)
    questions = load_questions(args.predict_file, 2000)
    small = [q for q in questions if len(q["context"]) < 800][:400]  # one window each
    long_context, i = "", 0
    while len(long_context) < args.long_chars:
        long_context += questions[i]["context"] + "\n\n"
        i += 7
    long_context = long_context[: args.long_chars]
    results = {}
    for name, extra in (("ours (fair windows)", []), ("peer (whole requests, FIFO)", ["--max_batch_windows", "100000"])):
        server, port = start_service(model, args, ["--max_request_windows", "1000", *extra])
        try:
            results[name] = r = run(port, small, long_context, args.concurrency, args.seconds)
        finally:
            stop_service(server)
        print(f"{name:30s} small: {r['n']} answered, {r['qps']:.1f} q/s, p50 {1000 * r['p50']:.0f} ms, "
              f"p95 {1000 * r['p95']:.0f} ms, p99 {1000 * r['p99']:.0f} ms; long ({len(long_context):,} chars): "
              f"{r['long_n']} answered, median {r['long']:.1f} s; errors {len(r['errors'])}", flush=True)
    ours, peer = results.values()
    print(f"ratio peer/ours: p99 {peer['p99'] / ours['p99']:.1f}x, p50 {peer['p50'] / ours['p50']:.1f}x, "
          f"small q/s {ours['qps'] / max(peer['qps'], 1e-9):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
