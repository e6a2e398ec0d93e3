"""Benchmark: the HTTP service against transformers 4.57's `pipeline("question-answering")`.

Same checkpoint, same dev-v1.1 questions, same machine, same run, one after the other (never both
at once), in --repeats rounds (default 3) that alternate which side goes first; the figures are
the medians over rounds, and the per-round ratios are printed too. For each side: questions/s and
p50/p95 latency per question at concurrency 1 and 8, and how often the two give the same answer.

- Ours: `python -m service --model DIR` (uvicorn, micro-batching, its default backend) as a
  subprocess on 127.0.0.1; the clients are threads here, each POSTing one question at a time to
  /v1/answer over its own keep-alive connection (the standard library's http.client: the client
  shares the service's CPUs, and httpx costs 0.55 ms of client CPU per request against
  http.client's 0.10, measured with a no-op model; real clients run elsewhere). Latency is what
  the client sees, HTTP included. It runs with the service's defaults (--backend auto: the CPU
  kind's recipe, squad_qa/model/cpu.py); `--backend torch --dtype float32` compares like with like.
- Peers (--peers), each in its own interpreter, --legacy_python (default ~/venvs/legacy: torch 2.13 CPU,
  transformers 4.57.6, optimum 2.1 with optimum-onnx 0.1 and onnxruntime; made with `python3 -m venv
  ~/venvs/legacy && ~/venvs/legacy/bin/pip install torch==2.13.0 transformers==4.57.6
  "optimum-onnx[onnxruntime]==0.1.0" "optimum~=2.1.0"`), called in-process (no HTTP, which only
  favours them): "pipeline", `pipeline("question-answering")` on the torch model in float32;
  "optimum", optimum's ORTModelForQuestionAnswering (its ONNX export, float32) in that pipeline,
  the usual "fast CPU" recipe; "optimum-int8", the same quantised with optimum's AVX2 dynamic int8
  config. max_seq_len=384 and max_answer_len=30 like ours, and the same windows as ours: the
  pipeline's `doc_stride` is the *overlap* of consecutive windows (the tokenizer's stride),
  run_squad's is the *step* between their starts, so each question gets the overlap that makes the
  pipeline's windows start every 128 context tokens (`pipeline_doc_stride`). Then both models see
  identical inputs and only the decoders differ. Concurrency 8 = 8 threads each calling a pipeline
  (own tokenizer: fast tokenizers are not safe to share between threads; model weights shared).
  One more row, "pipeline batch_size=8", is its documented batching: one caller handing it 8
  questions at a time (latency = that call's time).
- Agreement: answer text equal at concurrency 1 (exact, and after SQuAD normalisation). The pipeline
  snaps answers to whole words by default (align_to_words); with a fine-tuned model answers are
  words anyway, but the random head of a speed-only checkpoint ends spans inside words, so
  agreement is measured with align_to_words=False (the model's own token span, as ours) unless
  --align_to_words is given.

    # speed-only dry run (no fine-tuned model yet): base encoder + seeded random QA head in /tmp
    python benchmarks/bench_service.py --make_speed_checkpoint /tmp/squad-qa-speed-only --num_questions 40
    # the real thing
    python benchmarks/bench_service.py --model models/squad-minilm-l6 --num_questions 500
    # the first 500 questions (one article) instead of 500 from all articles; ours with torch.compile
    python benchmarks/bench_service.py --model models/squad-minilm-l6 --sample first --compile
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx  # start-up polling only

from service.settings import ServiceSettings  # the service's defaults
from squad_qa.data.windows import WindowConfig, context_room
from squad_qa.model.compute import DTYPE_CHOICES
from squad_qa.scoring.metrics import normalize_answer as normalize  # the official SQuAD normalisation
from squad_qa.files.run_record import read_run_record, write_run_record

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEV = REPO / ".." / "shared" / "squad" / "dev-v1.1.json.gz"
SPEED_ONLY_NOTE = ("SPEED-ONLY checkpoint: the base encoder with a seeded *random* QA head. Its answers are "
                   "meaningless; it exists to time the serving path before a fine-tuned model exists.")


# ------------------------------------------------------------------------------ the checkpoint


def make_speed_checkpoint(out: Path, seed: int = 0) -> Path:
    """Base encoder + seeded random qa_outputs, saved like a fine-tuned checkpoint, clearly labelled."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    import squad_qa

    base = squad_qa.default_base_model_path()
    torch.manual_seed(seed)
    model = AutoModelForQuestionAnswering.from_pretrained(str(base))  # qa_outputs: fresh, seeded
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(out)
    record = {"note": SPEED_ONLY_NOTE, "speed_only": True, "seed": seed,
              "training_args": {"model_name_or_path": str(base), **WindowConfig().to_dict()}, "metrics": None}
    write_run_record(out, record)
    (out / "SPEED_ONLY_README.txt").write_text(SPEED_ONLY_NOTE + "\n")
    return out


# ------------------------------------------------------------------------------------ questions


def load_questions(path: Path, n: int, sample: str = "spread") -> list[dict]:
    """n questions of the file: {id, question, context, gold}.

    sample="spread" (the benchmark's default): every (total / n)-th question, so all articles are
    represented (for dev-v1.1's 500: 9 need several windows, 1.8%, the whole set 1.7%);
    "first": the first n in file order (for dev-v1.1's first 500: one article, Super_Bowl_50, whose
    long paragraphs need several windows 2.4x as often as the whole set, and whose questions come
    five or so per paragraph, so concurrent requests have similar lengths).
    """
    from squad_qa.data.squad import load_squad_json

    out = []
    for article in load_squad_json(path)["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                out.append({"id": qa["id"], "question": qa["question"], "context": para["context"],
                            "gold": [a["text"] for a in qa.get("answers", [])]})
    if sample == "first" or n >= len(out):
        return out[:n]
    if sample == "spread":
        return [out[i * len(out) // n] for i in range(n)]
    raise ValueError(f"sample must be 'first' or 'spread', got {sample!r}")


def pipeline_doc_stride(tokenizer, question: str, max_seq_length: int = 384, doc_stride: int = 128,
                        max_query_length: int = 64) -> int:
    """The pipeline's doc_stride (an overlap) that gives run_squad's windows (a step of doc_stride)."""
    q_len = min(max_query_length, len(tokenizer(question, add_special_tokens=False)["input_ids"]))
    return context_room(max_seq_length, q_len) - doc_stride  # overlap = window's context - step


def summarize(latencies: list[float], wall: float, n: int) -> dict:
    lat = sorted(latencies)
    return {"qps": n / wall, "p50_ms": 1000 * statistics.median(lat),
            "p95_ms": 1000 * lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))], "wall_s": wall}


# ---------------------------------------------------------------------------------- ours (HTTP)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(model: Path, args, extra: list[str] | tuple = ()) -> tuple[subprocess.Popen, int]:
    """`python -m service --model DIR` on a free loopback port, once /health says the model is loaded."""
    port = free_port()
    cmd = [sys.executable, "-m", "service", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--max_batch_size", str(args.max_batch_size), "--max_wait_ms", str(args.max_wait_ms),
           "--log_level", "warning", "--device", args.device, "--dtype", args.dtype, *extra]
    server = subprocess.Popen(cmd, cwd=REPO)
    deadline = time.monotonic() + 600
    while True:
        if server.poll() is not None:
            raise SystemExit(f"the service exited with {server.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server, port
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_service(server)
            raise SystemExit("the service did not become healthy in 600 s")
        time.sleep(0.25)


def stop_service(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def ask_service(port: int, questions: list[dict], concurrency: int, warmup: int = 0) -> dict:
    """POST every question to /v1/answer from `concurrency` client threads; timings and answers."""
    local = threading.local()  # one keep-alive connection per client thread

    def ask(q: dict) -> tuple[float, str]:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t0 = time.perf_counter()
        body = json.dumps({"question": q["question"], "context": q["context"], "max_answer_length": 30})
        local.conn.request("POST", "/v1/answer", body=body.encode(), headers={"Content-Type": "application/json"})
        r = local.conn.getresponse()
        data = r.read()
        elapsed = time.perf_counter() - t0
        if r.status != 200:
            raise SystemExit(f"/v1/answer answered {r.status}: {data[:500]!r}")
        answers = json.loads(data)["answers"]
        return elapsed, answers[0]["text"] if answers else ""

    for q in questions[:warmup]:
        ask(q)
    with ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        out = list(pool.map(ask, questions))
        wall = time.perf_counter() - t0
    return {**summarize([o[0] for o in out], wall, len(questions)), "answers": [o[1] for o in out]}


def run_ours(model: Path, questions: list[dict], concurrencies: list[int], args) -> dict:
    extra = (["--quantize", args.quantize] if args.quantize else []) + (["--compile"] if args.compile else [])
    extra += ["--backend", args.backend]
    server, port = start_service(model, args, extra)
    try:
        results = {"served": httpx.get(f"http://127.0.0.1:{port}/v1/model", timeout=10).json()}
        for i, c in enumerate(concurrencies):
            results[c] = ask_service(port, questions, c, warmup=args.warmup if i == 0 else 0)
        return results
    finally:
        stop_service(server)


# ------------------------------------------------------------------------- peer (legacy venv)

PEER_SCRIPT = textwrap.dedent(
    """
    import json, statistics, sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    cfg = json.load(open(sys.argv[1]))
    questions, model_dir, kind = cfg["questions"], cfg["model"], cfg["kind"]
    kw = dict(max_seq_len=384, max_question_len=64, max_answer_len=30, top_k=1,
              handle_impossible_answer=False, align_to_words=cfg["align_to_words"])
    device = cfg["device"]
    pipe_kw = {"device": device}
    if kind == "pipeline":  # float32 like our side's reference (the shipped model is stored in float16)
        model = AutoModelForQuestionAnswering.from_pretrained(model_dir, dtype=torch.float32).eval().to(device)
    else:  # optimum's recipe: export to ONNX (float32), optionally int8 with its AVX2 dynamic config
        import tempfile
        from optimum.onnxruntime import ORTModelForQuestionAnswering, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
        work = tempfile.mkdtemp()
        ORTModelForQuestionAnswering.from_pretrained(model_dir, export=True).save_pretrained(work)
        if kind == "optimum-int8":
            ORTQuantizer.from_pretrained(work).quantize(
                save_dir=work + "/int8", quantization_config=AutoQuantizationConfig.avx2(is_static=False))
            work += "/int8"
        model = ORTModelForQuestionAnswering.from_pretrained(work)
        pipe_kw = {}
    def make_pipe():  # own tokenizer per thread; the model weights are shared
        return pipeline("question-answering", model=model, tokenizer=AutoTokenizer.from_pretrained(model_dir),
                        **pipe_kw)
    local = threading.local()
    def pipe():
        if not hasattr(local, "pipe"):
            local.pipe = make_pipe()
        return local.pipe
    def ask(q):
        t0 = time.perf_counter()
        out = pipe()(question=q["question"], context=q["context"], doc_stride=q["doc_stride"], **kw)
        return time.perf_counter() - t0, out["answer"]
    for q in questions[: cfg["warmup"]]:
        ask(q)
    res = {"transformers": transformers.__version__, "kind": kind}
    for c in cfg["concurrencies"]:
        with ThreadPoolExecutor(c) as pool:
            t0 = time.perf_counter()
            out = list(pool.map(ask, questions))
            wall = time.perf_counter() - t0
        res[str(c)] = {"latencies": [o[0] for o in out], "wall": wall, "answers": [o[1] for o in out]}
    # Its own batching: one caller, 8 questions per call.
    p, lat, t0 = pipe(), [], time.perf_counter()
    for i in range(0, len(questions), 8):
        # one doc_stride per call: run_squad's windows only where every question of the chunk has
        # the same length (the timing is what this row is for; it is not used for agreement)
        chunk = [{"question": q["question"], "context": q["context"]} for q in questions[i:i + 8]]
        stride = min(q["doc_stride"] for q in questions[i:i + 8])
        t1 = time.perf_counter()
        p(chunk, batch_size=8, doc_stride=stride, **kw)
        lat += [time.perf_counter() - t1] * len(chunk)
    res["batch8"] = {"latencies": lat, "wall": time.perf_counter() - t0}
    json.dump(res, open(sys.argv[2], "w"))
    """
)


def run_peer(model: Path, questions: list[dict], concurrencies: list[int], args, kind: str = "pipeline") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, out_path, script = Path(tmp) / "cfg.json", Path(tmp) / "out.json", Path(tmp) / "peer.py"
        cfg_path.write_text(json.dumps({"questions": questions, "model": str(model), "concurrencies": concurrencies,
                                        "warmup": args.warmup, "align_to_words": args.align_to_words,
                                        "device": args.device, "kind": kind}))
        script.write_text(PEER_SCRIPT)
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
        subprocess.run([args.legacy_python, str(script), str(cfg_path), str(out_path)], check=True, env=env)
        raw = json.loads(out_path.read_text())
    results = {"transformers": raw["transformers"], "kind": kind}
    for c in concurrencies:
        r = raw[str(c)]
        results[c] = {**summarize(r["latencies"], r["wall"], len(questions)), "answers": r["answers"]}
    results["batch8"] = summarize(raw["batch8"]["latencies"], raw["batch8"]["wall"], len(questions))
    return results


# ------------------------------------------------------------------------------------- report


def median_rounds(runs: list[dict], keys: list) -> dict:
    """Per concurrency, the median over rounds of each figure; answers and the rest from round 1."""
    out = dict(runs[0])
    for k in keys:
        if all(k in r for r in runs):
            out[k] = {**runs[0][k], **{f: statistics.median(r[k][f] for r in runs)
                                       for f in ("qps", "p50_ms", "p95_ms", "wall_s")}}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="fine-tuned checkpoint folder")
    p.add_argument("--make_speed_checkpoint", type=Path, metavar="DIR",
                   help="build a SPEED-ONLY checkpoint (base encoder + seeded random QA head) in DIR and use it")
    p.add_argument("--predict_file", type=Path, default=DEFAULT_DEV)
    p.add_argument("--num_questions", type=int, default=500)
    p.add_argument("--sample", choices=["first", "spread"], default="spread",
                   help="N questions spread evenly over the file, all articles (default), or its first N "
                        "(dev-v1.1's first 500 are one article; see load_questions)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="rounds of both sides; figures are medians")
    p.add_argument("--max_batch_size", type=int, default=ServiceSettings.max_batch_size)
    p.add_argument("--max_wait_ms", type=float, default=ServiceSettings.max_wait_ms)
    p.add_argument("--device", default=None, help="cpu / cuda, for both sides (default: cuda when available)")
    p.add_argument("--legacy_python", default=str(Path.home() / "venvs" / "legacy" / "bin" / "python"))
    p.add_argument("--align_to_words", action="store_true", help="pipeline default answer snapping (see above)")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="serve ours with dynamic int8 Linear layers (CPU); the pipeline stays float32")
    p.add_argument("--compile", action="store_true", help="serve ours with --compile (torch.compile)")
    p.add_argument("--backend", default=ServiceSettings.backend, help="ours: the service's --backend (default auto)")
    p.add_argument("--peers", nargs="+", default=["pipeline", "optimum"],
                   choices=["pipeline", "optimum", "optimum-int8"],
                   help="the peers, each in --legacy_python: the transformers pipeline (torch float32), "
                        "optimum's ORTModelForQuestionAnswering (ONNX float32) in that pipeline, and the same "
                        "quantised with optimum's AVX2 dynamic int8 config")
    p.add_argument("--dtype", default=ServiceSettings.dtype, choices=DTYPE_CHOICES,
                   help="ours: the service's --dtype (its default, auto: bfloat16 where the hardware has it); "
                        "the pipeline stays float32")
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    if args.make_speed_checkpoint:
        model = make_speed_checkpoint(args.make_speed_checkpoint)
        print(f"built {model}: {SPEED_ONLY_NOTE}")
    elif args.model:
        model = args.model
    else:
        p.error("give --model DIR (fine-tuned) or --make_speed_checkpoint DIR")
    speed_only = read_run_record(model).get("speed_only", False)

    questions = load_questions(args.predict_file, args.num_questions, args.sample)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    for q in questions:
        q["doc_stride"] = pipeline_doc_stride(tok, q["question"])
    print(f"{len(questions)} questions ({args.sample}) from {args.predict_file.name}; model {model}"
          f"{' (SPEED-ONLY, random QA head)' if speed_only else ''}; device {args.device}, {os.cpu_count()} CPUs")
    # Rounds alternate which side goes first (a shared, noisy machine drifts); figures are medians.
    ours_runs, all_peer_runs = [], {kind: [] for kind in args.peers}
    for r in range(args.repeats):
        sides = [(lambda *a: run_ours(*a), ours_runs)] + [
            (lambda *a, kind=kind: run_peer(*a, kind=kind), runs) for kind, runs in all_peer_runs.items()]
        for run, runs in sides if r % 2 == 0 else sides[::-1]:
            runs.append(run(model, questions, args.concurrency, args))
    keys = list(args.concurrency) + ["batch8"]
    ours = median_rounds(ours_runs, keys)
    for kind, runs in all_peer_runs.items():
        if kind != args.peers[0]:
            other = median_rounds(runs, keys)
            print(f"\nours vs {kind} (transformers {other['transformers']}, in-process):")
            for c in args.concurrency:
                o, q = ours[c], other[c]
                print(f"  concurrency {c}: {o['qps']:.1f} / {q['qps']:.1f} q/s = {o['qps'] / q['qps']:.2f}x; "
                      f"p50 {o['p50_ms']:.1f} / {q['p50_ms']:.1f} ms; per round "
                      + ", ".join(f"{a[c]['qps'] / b[c]['qps']:.2f}x" for a, b in zip(ours_runs, runs)))
            same = sum(normalize(a) == normalize(b) for a, b in zip(ours[args.concurrency[0]]["answers"],
                                                                      other[args.concurrency[0]]["answers"]))
            print(f"  agreement (normalised): {same}/{len(questions)}")
    peer_runs = all_peer_runs[args.peers[0]]
    peer = median_rounds(peer_runs, keys)

    served = ours["served"]
    print(f"\nours: squad-qa HTTP service (max_batch_size {args.max_batch_size}, max_wait_ms {args.max_wait_ms}, "
          f"compute dtype {served.get('dtype')}{', torch.compile' if served.get('compiled') else ''}"
          f"{', int8' if served.get('quantized') else ''}, backend {served.get('backend')}, "
          f"{served.get('threads')} threads); peer: {peer['kind']}, transformers {peer['transformers']}, in-process")
    head = f"{'concurrency':<22}{'ours q/s':>10}{'peer q/s':>10}{'ratio':>7}   {'ours p50':>9}{'peer p50':>9}" \
           f"{'ratio':>7}   {'ours p95':>9}{'peer p95':>9}"
    print(head)
    print("-" * len(head))
    for c in args.concurrency:
        o, q = ours[c], peer[c]
        print(f"{c:<22}{o['qps']:>10.1f}{q['qps']:>10.1f}{o['qps'] / q['qps']:>6.2f}x   "
              f"{o['p50_ms']:>7.1f}ms{q['p50_ms']:>7.1f}ms{q['p50_ms'] / o['p50_ms']:>6.2f}x   "
              f"{o['p95_ms']:>7.1f}ms{q['p95_ms']:>7.1f}ms")
    b = peer["batch8"]
    c8 = ours.get(8)
    if c8:
        print(f"{'8 vs pipeline bs=8':<22}{c8['qps']:>10.1f}{b['qps']:>10.1f}{c8['qps'] / b['qps']:>6.2f}x   "
              f"{c8['p50_ms']:>7.1f}ms{b['p50_ms']:>7.1f}ms{b['p50_ms'] / c8['p50_ms']:>6.2f}x   "
              f"{c8['p95_ms']:>7.1f}ms{b['p95_ms']:>7.1f}ms")
    print(f"(medians of {args.repeats} rounds; q/s ratio = ours / peer, higher is better; "
          "p50 ratio = peer / ours, higher is better)")
    for c in args.concurrency:
        ratios = [o[c]["qps"] / q[c]["qps"] for o, q in zip(ours_runs, peer_runs)]
        print(f"  concurrency {c}: q/s ratio per round " + ", ".join(f"{x:.2f}x" for x in ratios))

    c0 = args.concurrency[0]
    ours_a, peer_a = ours[c0]["answers"], peer[c0]["answers"]
    exact = sum(a == b for a, b in zip(ours_a, peer_a))
    norm = sum(normalize(a) == normalize(b) for a, b in zip(ours_a, peer_a))
    n = len(questions)
    print(f"\nagreement with the pipeline (concurrency {c0}, align_to_words={args.align_to_words}): "
          f"exact {exact}/{n} = {100 * exact / n:.1f}%, normalised {norm}/{n} = {100 * norm / n:.1f}%")
    # Where the context needs several windows the two decoders differ by design (same windows, but
    # run_squad's max-context rule and raw-logit ranking across windows vs the pipeline's ranking by
    # per-window softmax). Report agreement for the single-window questions separately.
    single = [len(tok(q["question"], q["context"])["input_ids"]) <= 384 for q in questions]
    from squad_qa.scoring.metrics import exact_match_score, f1_score

    def vs_gold(answers: list[str], idx: list[int]) -> str:
        idx = [i for i in idx if questions[i]["gold"]]
        em = sum(max(exact_match_score(answers[i], g) for g in questions[i]["gold"]) for i in idx)
        f1 = sum(max(f1_score(answers[i], g) for g in questions[i]["gold"]) for i in idx)
        return f"EM {100 * em / max(1, len(idx)):5.1f} F1 {100 * f1 / max(1, len(idx)):5.1f}"

    print(f"  {'questions':<16}{'agree (normalised)':>22}   {'ours vs gold':<22}{'pipeline vs gold':<22}")
    for name, keep in (("all", None), ("one window", True), ("several windows", False)):
        idx = [i for i, s in enumerate(single) if keep is None or s == keep]
        if idx:
            same = sum(normalize(ours_a[i]) == normalize(peer_a[i]) for i in idx)
            agree = f"{same}/{len(idx)} = {100 * same / len(idx):.1f}%"
            print(f"  {name:<16}{agree:>22}   {vs_gold(ours_a, idx):<22}{vs_gold(peer_a, idx):<22}")
    for c in args.concurrency[1:]:
        same = sum(a == b for a, b in zip(ours[c]["answers"], ours_a))
        print(f"ours at concurrency {c} vs {c0} (batching must not change answers): {same}/{n}")
    shown = 0
    for q, a, b in zip(questions, ours_a, peer_a):
        if normalize(a) != normalize(b) and shown < 5:
            print(f"  differs {q['id']}: ours {a!r} | pipeline {b!r}")
            shown += 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
