"""The HTTP service: every route, every error body, micro-batching, and a real uvicorn under load."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

import squad_qa
import squad_qa.data.squad
import squad_qa.inference.reader as inference
import squad_qa.model.model_dir as model_dir
import squad_qa.model.compute as compute
from squad_qa.model.cpu import physical_cores, serving_recipe
from server import running_server

from service.app import create_app
from service.cli import serve_main
from service.middleware import BodyLimitMiddleware
from service.routes import STATIC_DIR
from squad_qa.inference.reader import QAReader
from squad_qa.model.model_dir import CheckpointError

UNICODE_CONTEXT = (
    "Zürich's Café Odeon opened in 1911 — it served naïve poets, 北京 visitors and émigrés 🎉. "
    "Straße, Ærøskøbing and São Paulo appear in its guest book,\u00a0twice;\ttabs\tand  double  spaces too."
)
LIMITS = {"max_context_chars": 5000, "max_batch_items": 4}


@pytest.fixture(scope="module")
def client(tiny_qa_checkpoint):
    with TestClient(create_app(tiny_qa_checkpoint, **LIMITS), raise_server_exceptions=False) as c:
        yield c


def assert_exact(answers: list[dict], context: str) -> None:
    assert answers, "no answer"
    for a in answers:
        assert context[a["start"] : a["end"]] == a["text"], a
        assert 0.0 <= a["score"] <= 1.0


def assert_error(r: httpx.Response, status: int, error: str, message: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"]) and body["request_id"] == r.headers["x-request-id"]
    if message is not None:
        assert re.search(message, body["message"]), body["message"]
    return body


# --------------------------------------------------------------------------------- the routes


def test_health_and_model(client, tiny_qa_checkpoint):
    assert client.get("/health").json() == {"status": "ok", "model_loaded": True, "model": tiny_qa_checkpoint.name,
                                            "queued_requests": 0, "queued_windows": 0}
    info = client.get("/v1/model").json()
    assert info["name"] == tiny_qa_checkpoint.name and info["architecture"] == "BertForQuestionAnswering"
    assert (info["max_seq_length"], info["doc_stride"], info["max_query_length"]) == (384, 128, 64)
    assert info["metrics"] is None  # no squad_qa.json: nothing is made up
    assert info["max_context_chars"] == 5000 and info["max_batch_items"] == 4
    assert info["max_request_windows"] == 512 and (info["queued_requests"], info["queued_windows"]) == (0, 0)
    # the service's default: the CPU kind's measured recipe (ONNX Runtime int8 where onnxruntime is installed)
    recipe = serving_recipe()
    assert (info["backend"], info["quantized"]) == (recipe.backend, recipe.quantize)
    assert info["dtype"] == ("bfloat16" if recipe.dtype == "auto" and compute.has_native_bf16("cpu") else "float32")
    assert info["threads"] == physical_cores()


def test_model_metrics_come_from_the_training_record(tmp_path, tiny_qa_checkpoint):
    ckpt = tmp_path / "trained"
    shutil.copytree(tiny_qa_checkpoint, ckpt)
    record = {"training_args": {"model_name_or_path": "minilm"}, "metrics": {"exact_match": 80.1, "f1": 87.6}}
    (ckpt / "squad_qa.json").write_text(json.dumps(record))
    with TestClient(create_app(ckpt)) as c:
        info = c.get("/v1/model").json()
    assert (info["name"], info["base"], info["metrics"]) == ("trained", "minilm", {"exact_match": 80.1, "f1": 87.6})


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/answer", "/v1/answer/batch", "/health", "/v1/model"} <= set(spec["paths"])
    assert "AnswerRequest" in spec["components"]["schemas"]


def test_web_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert '<label for="context">' in html and '<label for="question">' in html and 'aria-live="polite"' in html
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), f"{name} references another host"
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_answer_has_exact_offsets_in_unicode(client, tiny_qa_checkpoint):
    r = client.post("/v1/answer", json={"question": "Who visited the café?", "context": UNICODE_CONTEXT, "top_k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["answers"]) == 5 and body["model"] == tiny_qa_checkpoint.name and body["took_ms"] >= 0
    assert_exact(body["answers"], UNICODE_CONTEXT)
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


def test_answer_in_a_context_longer_than_one_window(client):
    context = " ".join(f"Sentence {i} mentions the río número {i} and its bridges." for i in range(80))
    assert len(context) < LIMITS["max_context_chars"]
    example = squad_qa.data.squad.make_example("q", "Which river?", context)
    assert len(client.app.state.reader.features_for([example])) >= 3
    body = client.post("/v1/answer", json={"question": "Which river?", "context": context, "top_k": 3}).json()
    assert_exact(body["answers"], context)


def test_batch_answers_in_order_and_match_single_requests(client):
    items = [
        {"question": "Who visited the café?", "context": UNICODE_CONTEXT, "top_k": 2},
        {"question": "When?", "context": "Café Odeon opened in 1911.", "max_answer_length": 1},
        {"question": "Where?", "context": "It stands on the Limmatquai in Zürich.", "handle_impossible": True},
    ]
    r = client.post("/v1/answer/batch", json=items)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3
    for item, result in zip(items, results):
        single = client.post("/v1/answer", json=item).json()
        assert [(a["text"], a["start"], a["end"]) for a in result["answers"]] == [
            (a["text"], a["start"], a["end"]) for a in single["answers"]
        ]
        assert_exact([a for a in result["answers"] if a["text"]], item["context"])


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_compiled_service_compiles_at_start_and_answers_like_the_eager_one(tiny_qa_checkpoint, packing):
    """--compile: the graphs are built while the app starts, so no request compiles anything (padded:
    batch size 1, which dynamo specialises, and any other; packed: batch size is always 1, one
    graph for every row length); the compiled model answers as the plain one does."""
    from torch._dynamo.utils import counters

    context = " ".join(f"Sentence {i} mentions the río número {i} and its bridges." for i in range(80))
    items = [
        {"question": "Which river?", "context": context, "top_k": 3},  # several windows
        {"question": "Who visited the café?", "context": UNICODE_CONTEXT, "top_k": 2},
        {"question": "When?", "context": "Café Odeon opened in 1911."},
    ]
    eager = QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu")
    before = counters["stats"]["unique_graphs"]
    with TestClient(create_app(tiny_qa_checkpoint, compile=True, dtype="float32", packing=packing, backend="torch")) as c:
        reader = c.app.state.reader
        assert reader.compiled and reader.forward_model is not reader.model
        info = c.get("/v1/model").json()
        assert info["compiled"] is True and info["packed"] is packing
        graphs = counters["stats"]["unique_graphs"]
        assert graphs - before >= (1 if packing else 2)  # built by the warm-up, before the app took requests
        single = c.post("/v1/answer", json=items[2]).json()
        batch = c.post("/v1/answer/batch", json=items).json()["results"]
        assert counters["stats"]["unique_graphs"] == graphs, "a request had to compile"
    expected = eager.answer_batch([inference.QAItem(**it) for it in items])
    for got, want, item in zip(batch, expected, items):
        assert [(a["text"], a["start"], a["end"]) for a in got["answers"]] == [(a.text, a.start, a.end) for a in want]
        assert [a["score"] for a in got["answers"]] == pytest.approx([a.score for a in want], rel=1e-4, abs=1e-6)
        assert_exact(got["answers"], item["context"])
    assert [(a["text"], a["start"], a["end"]) for a in single["answers"]] == \
        [(a["text"], a["start"], a["end"]) for a in batch[2]["answers"]]
    with pytest.raises(ValueError, match="compile is for float32 / bfloat16"):
        QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu", quantize="int8", compile=True)


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body,where",
    [
        ({"question": "", "context": "text"}, "body.question: .*empty"),
        ({"question": "   \t", "context": "text"}, "body.question: .*empty"),
        ({"question": "Why?", "context": " \n "}, "body.context: .*empty"),
        ({"context": "text"}, "body.question: Field required"),
        ({"question": 3, "context": "text"}, "body.question"),
        ({"question": "Why?", "context": "text", "top_k": 0}, "body.top_k"),
        ({"question": "Why?", "context": "text", "model": "/etc"}, "body.model: Extra inputs"),  # no model path
    ],
)
def test_invalid_requests_get_422(client, body, where):
    assert_error(client.post("/v1/answer", json=body), 422, "invalid_request", where)


def test_lone_surrogates_get_422_not_500(client):
    # JSON escapes and raw CESU-8 bytes (ED A0 80) both decode to a lone surrogate in Python.
    for raw, field in ((b'{"question": "Why?", "context": "abc \\udc00 def"}', "body.context"),
                       (b'{"question": "Why?", "context": "abc \xed\xa0\x80 def"}', "body.context"),
                       (b'{"question": "Wh\\ud800y?", "context": "abc def"}', "body.question")):
        r = client.post("/v1/answer", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (raw, r.status_code, r.text)
        assert r.json()["error"] == "invalid_request" and r.json()["message"].startswith(field), r.text


def test_malformed_json_gets_422(client):
    r = client.post("/v1/answer", content=b'{"question": "Why?", "context": ', headers={"content-type": "application/json"})
    body = assert_error(r, 422, "invalid_request", "JSON decode error")
    assert body["detail"][0]["type"] == "json_invalid"
    assert_error(client.post("/v1/answer/batch", json=[]), 422, "invalid_request", "at least 1 item")
    assert_error(client.post("/v1/answer/batch", json={"question": "a", "context": "b"}), 422, "invalid_request")
    # a list item that is bad is named by its index
    bad = [{"question": "ok?", "context": "fine"}, {"question": " ", "context": "fine"}]
    assert_error(client.post("/v1/answer/batch", json=bad), 422, "invalid_request", r"body\.1\.question")


def test_limits_get_413(client):
    big = "word " * (LIMITS["max_context_chars"] // 5 + 1)
    assert_error(client.post("/v1/answer", json={"question": "Why?", "context": big}), 413, "payload_too_large",
                 r"context has \d+ characters; the limit is 5000")
    items = [{"question": "Why?", "context": "fine"}, {"question": "Why?", "context": big}]
    assert_error(client.post("/v1/answer/batch", json=items), 413, "payload_too_large", "item 1: context")
    items = [{"question": "Why?", "context": "fine"}] * 5
    assert_error(client.post("/v1/answer/batch", json=items), 413, "payload_too_large", "batch has 5 items; the limit is 4")


def test_internal_failure_gets_500_with_request_id_and_no_trace(client, monkeypatch, caplog):
    reader = client.app.state.reader

    def broken(parts):
        raise RuntimeError("secret internal detail /srv/weights")

    monkeypatch.setattr(reader, "run_windows", broken)
    r = client.post("/v1/answer", json={"question": "Why?", "context": "Because."})
    body = assert_error(r, 500, "internal_error")
    assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
    assert body["request_id"] in body["message"]
    assert any(body["request_id"] in rec.getMessage() for rec in caplog.records)  # ... and in the server log
    monkeypatch.undo()
    assert client.post("/v1/answer", json={"question": "Why?", "context": "Because."}).status_code == 200


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_other_hosts(client, page):
    html = client.get(page).text
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)', html) + re.findall(r"(?:url|spec-url)\s*:\s*['\"]([^'\"]+)", html)
    assert refs, html[:500]
    assert not [r for r in refs if re.match(r"(?i)(https?:)?//", r)], refs  # no CDN, no fonts from elsewhere
    for ref in refs:
        if ref.endswith((".js", ".css", ".png")):
            assert client.get(ref).status_code == 200, ref


def test_unknown_route_is_a_json_404(client):
    assert_error(client.get("/v2/nothing"), 404, "not_found")


# ------------------------------------------------------------------------------ start-up rules


def test_app_refuses_the_base_encoder_at_startup():
    app = create_app(squad_qa.default_base_model_path())
    with pytest.raises(CheckpointError, match="qa_outputs") as raised:
        with TestClient(app):
            pass
    assert raised.value.hint and "train_squad.py" in raised.value.with_hint()  # the hint is built when printed


def test_serve_refuses_without_a_fine_tuned_model(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(model_dir.MODEL_ENV_VAR, raising=False)
    monkeypatch.setattr(model_dir, "DEFAULT_MODEL_DIR", tmp_path / "models" / "squad-minilm-l6")
    assert serve_main([]) == 2
    assert re.search(r"(?s)squad-minilm-l6 does not exist.*python scripts/train_squad.py", capsys.readouterr().err)
    assert serve_main(["--model", str(squad_qa.default_base_model_path())]) == 2
    assert "qa_outputs" in capsys.readouterr().err


def test_model_dir_from_environment(tiny_qa_checkpoint, monkeypatch):
    monkeypatch.setenv(model_dir.MODEL_ENV_VAR, str(tiny_qa_checkpoint))
    with TestClient(create_app()) as c:
        assert c.get("/health").json()["model"] == tiny_qa_checkpoint.name


# ------------------------------------------------------------------------------- micro-batching


class SlowReader(QAReader):
    """The tiny model plus a fixed delay per model call, to watch batching and the event loop."""

    delay = 0.4

    def run_windows(self, parts):
        time.sleep(self.delay)
        return super().run_windows(parts)


class FakeReader:
    """The batcher's side of a reader, without a model: an item ("name", n) is n windows (a plain
    item one); answers are empty lists. Subclasses decide what a model call does."""

    def prepare(self, items):
        return SimpleNamespace(items=items, windows=sum(it[1] if isinstance(it, tuple) else 1 for it in items))

    def run_windows(self, parts):
        pass

    def finish(self, job):
        return [[] for _ in job.items]


def test_concurrent_requests_share_model_calls_and_the_loop_stays_free(tiny_qa_checkpoint):
    base = QAReader.from_pretrained(tiny_qa_checkpoint)
    reader = SlowReader(base.model, base.tokenizer, model_dir=tiny_qa_checkpoint)
    with TestClient(create_app(reader=reader, max_batch_size=16, max_wait_ms=20)) as c:
        batcher = c.app.state.batcher
        body = {"question": "Who?", "context": "Ann met Bob in Zürich."}
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(c.post, "/v1/answer", json=body) for _ in range(8)]
            time.sleep(0.1)  # the first model call is running now
            t0 = time.perf_counter()
            assert c.get("/health").status_code == 200
            health_s = time.perf_counter() - t0
            responses = [f.result(timeout=60) for f in futures]
    assert all(r.status_code == 200 for r in responses)
    spans = [[(a["text"], a["start"], a["end"]) for a in r.json()["answers"]] for r in responses]
    assert all(s == spans[0] for s in spans)  # batched or alone, the same answer (scores: float noise)
    assert health_s < SlowReader.delay / 2, f"/health waited {health_s:.2f}s behind the model"
    assert batcher.requests_served == 8 and batcher.calls <= 3, (batcher.calls, batcher.requests_served)


def test_real_server_under_concurrency(live_server):
    """300 requests, 16 at a time, against uvicorn on a loopback port: no errors, exact offsets."""
    base_url, app = live_server
    contexts = [f"Request {i}: the ferry to Zürich leaves pier {i % 7} at {i % 12 + 1} o'clock, "
                f"and tickets cost {i} francs 🎫." for i in range(300)]

    def ask(i: int) -> tuple[int, dict]:
        r = http.post("/v1/answer", json={"question": "When does the ferry leave?", "context": contexts[i]})
        return r.status_code, r.json()

    calls_before = app.state.batcher.calls
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with httpx.Client(base_url=base_url, timeout=60, limits=limits) as http, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(300)))
    errors = [(i, s, b) for i, (s, b) in enumerate(results) if s != 200]
    assert not errors, errors[:3]
    for i, (_, body) in enumerate(results):
        assert_exact(body["answers"], contexts[i])
    calls = app.state.batcher.calls - calls_before
    assert calls < 300, "requests were never batched together"


def test_oversized_body_and_question_are_refused_before_the_model(client):
    limit = 4 * (4 * LIMITS["max_context_chars"] + 8192) + 4096  # derived from the other limits
    body = '{"question": "Why?", "context": "' + "x" * (limit + 10) + '"}'
    r = client.post("/v1/answer", content=body, headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large", rf"request body has \d+ bytes; the limit is {limit}")
    r = client.post("/v1/answer", json={"question": "why " * 600, "context": "fine"})
    assert_error(r, 422, "invalid_request", r"body\.question: String should have at most 2000 characters")


def test_stopping_the_batcher_answers_every_waiting_request():
    """Requests being gathered, run or retried one by one all get an error on shutdown, none hangs."""
    import asyncio
    import time

    from service.batcher import MicroBatcher

    class FailsInBatches(FakeReader):
        def run_windows(self, parts):
            time.sleep(0.2)
            if sum(len(rows) for _, rows in parts) > 1:
                raise RuntimeError("batch fails")

    async def scenario(max_wait_ms, n, pause):
        b = MicroBatcher(FailsInBatches(), max_batch_size=8, max_wait_ms=max_wait_ms)
        await b.start()
        b._last_batch_requests, b._last_batch_end = 2, time.monotonic()  # a batch of 2 just answered:
        # the next batch waits for its clients
        tasks = [asyncio.create_task(b.submit([object()])) for _ in range(n)]
        await asyncio.sleep(pause)
        await b.stop()
        done, pending = await asyncio.wait(tasks, timeout=2)
        assert not pending, "a request was left waiting after stop()"
        return [type(t.exception()).__name__ if t.exception() else "ok" for t in tasks]

    assert asyncio.run(scenario(5000, 1, 0.05)) == ["ServiceStopping"]  # stopped while gathering (503)
    assert "ServiceStopping" in asyncio.run(scenario(50, 3, 0.35))  # stopped during the one-by-one retry


def test_batches_wait_for_clients_just_answered_but_a_lone_client_never_waits():
    """8 steady clients settle into batches of 8 (not alternating small and large batches), and
    one client alone is never held back by max_wait_ms."""
    import asyncio

    from service.batcher import MicroBatcher

    class Recorder(FakeReader):
        def __init__(self):
            self.sizes = []

        def run_windows(self, parts):
            self.sizes.append(sum(len(rows) for _, rows in parts))
            time.sleep(0.03)  # a model call

    async def scenario(n_clients, rounds, max_wait_ms):
        reader = Recorder()
        b = MicroBatcher(reader, max_batch_size=32, max_wait_ms=max_wait_ms)
        await b.start()

        async def client():
            for _ in range(rounds):
                assert await b.submit([object()]) == [[]]
                await asyncio.sleep(0.003)  # the client's round trip before its next question

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(n_clients)))
        elapsed = time.perf_counter() - t0
        await b.stop()
        return reader.sizes, elapsed

    sizes, elapsed = asyncio.run(scenario(8, 10, 200))
    assert sum(sizes) == 80 and sizes[-6:] == [8] * 6, sizes
    # ... and a batch stops waiting once all 8 are back (10 model calls of 30 ms; waiting the
    # full 200 ms every time would take over 2 s)
    assert elapsed < 1.2, elapsed
    sizes, elapsed = asyncio.run(scenario(1, 10, 1000))
    assert sizes == [1] * 10 and elapsed < 3, (sizes, elapsed)  # waiting for company: 10 s and more


def test_chunked_body_over_the_limit_is_refused_while_it_arrives(live_server):
    """No Content-Length: the server counts the chunks and answers 413 at the first one past the
    limit, long before the 200 MiB the client would send (it never holds the body whole)."""
    import select
    import socket
    from urllib.parse import urlsplit

    base_url, app = live_server
    limit = next(m.kwargs["max_body"] for m in app.user_middleware if m.cls is BodyLimitMiddleware)
    url = urlsplit(base_url)
    chunk = b"x" * (1 << 20)
    sent, response = 0, b""
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/answer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < 200 << 20:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(30)
        while b"\r\n\r\n" not in response:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < limit + (16 << 20), (sent, limit)


# ------------------------------------------------------------------------------ bounded work


def test_work_over_the_window_budget_gets_413(tiny_qa_checkpoint):
    with TestClient(create_app(tiny_qa_checkpoint, max_request_windows=3)) as c:
        long = "The ferry leaves the pier at noon and returns in the evening. " * 60  # ~7 windows
        r = c.post("/v1/answer", json={"question": "When?", "context": long})
        assert_error(r, 413, "payload_too_large", r"the request needs \d+ windows of 384 tokens; the limit is 3")
        items = [{"question": "When?", "context": long[:600]}] * 4  # 1 window each: 4 > 3
        assert_error(c.post("/v1/answer/batch", json=items), 413, "payload_too_large", "needs 4 windows")
        assert c.post("/v1/answer", json={"question": "When?", "context": long[:600]}).status_code == 200


def test_full_queue_gets_429_with_retry_after_and_late_requests_504(tiny_qa_checkpoint):
    base = QAReader.from_pretrained(tiny_qa_checkpoint)
    reader = SlowReader(base.model, base.tokenizer, model_dir=tiny_qa_checkpoint)
    body = {"question": "Who?", "context": "Ann met Bob in Zürich."}  # 1 window
    app = create_app(reader=reader, max_batch_size=1, max_queued_windows=3, request_timeout_s=0.6)
    with TestClient(app) as c, ThreadPoolExecutor(6) as pool:
        futures = []
        for _ in range(5):
            futures.append(pool.submit(c.post, "/v1/answer", json=body))
            time.sleep(0.05)  # in order: 1 runs (0.4 s), 2 and 3 queue, 4 and 5 find the queue full
        health = c.get("/health").json()
        codes = [f.result(timeout=30) for f in futures]
    assert health["queued_requests"] == 3 and health["queued_windows"] == 3, health  # 1 running, 2 waiting
    assert [r.status_code for r in codes[:2]] == [200, 200]
    # the third waited 0.4 + 0.4 s for its turn: past the 0.6 s timeout, dropped unanswered
    assert_error(codes[2], 504, "timeout", "not answered within 0.6 s")
    for r in codes[3:]:
        assert_error(r, 429, "queue_full", "the queue holds 3 windows of work")
        assert int(r.headers["Retry-After"]) >= 1


def test_long_requests_share_calls_and_requests_nobody_waits_for_are_dropped():
    """Windows, not requests, are scheduled: a 10-window request runs over several calls of at most
    4 windows, one-window requests that arrive meanwhile join the very next call, and a request
    whose client went away never reaches the model."""
    import asyncio

    from service.batcher import MicroBatcher, share_windows

    assert share_windows([10, 1, 1, 1], 4) == [1, 1, 1, 1]
    assert share_windows([10, 3], 8) == [5, 3] and share_windows([2, 2], 8) == [2, 2]
    assert share_windows([9, 9, 9], 4) == [2, 1, 1]

    class Recorder(FakeReader):
        def __init__(self):
            self.calls = []

        def run_windows(self, parts):
            self.calls.append([(job.items[0][0], len(rows)) for job, rows in parts])
            time.sleep(0.1)

    async def scenario():
        reader = Recorder()
        b = MicroBatcher(reader, max_batch_size=32, max_wait_ms=0, max_batch_windows=4)
        await b.start()
        first = asyncio.create_task(b.submit([("first", 1)], windows=1))
        await asyncio.sleep(0.03)  # "first" is running now; the rest queue behind it
        big = asyncio.create_task(b.submit([("big", 10)], windows=10))
        gone = asyncio.create_task(b.submit([("gone", 2)], windows=2))
        small = [asyncio.create_task(b.submit([(f"small{i}", 1)], windows=1)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert (b.queued_requests, b.queued_windows) == (6, 16)  # "first" counts until its call is over
        gone.cancel()  # its client disconnected while it was queued
        await asyncio.gather(*small)
        late = asyncio.create_task(b.submit([("late", 1)], windows=1))  # arrives while big is running
        await asyncio.gather(first, big, late)
        await b.stop()
        return reader.calls

    calls = asyncio.run(scenario())
    assert calls[0] == [("first", 1)]
    assert calls[1] == [("big", 1), ("small0", 1), ("small1", 1), ("small2", 1)], calls
    assert sum(n for call in calls for name, n in call if name == "big") == 10
    assert all(len(call) <= 4 and sum(n for _, n in call) <= 4 for call in calls)
    late_call = next(i for i, call in enumerate(calls) if ("late", 1) in call)
    assert any(name == "big" for name, _ in calls[late_call]), calls  # interleaved, not after big
    assert all(name != "gone" for call in calls for name, _ in call)


def test_sigterm_exits_promptly_with_a_half_sent_request(tiny_qa_checkpoint):
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "service", "--model", str(tiny_qa_checkpoint), "--port", str(port),
                             "--shutdown_grace_s", "2", "--log_level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port)) as hold:  # a body that never finishes
            hold.sendall(b"POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"question\": ")
            time.sleep(0.2)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
            took = time.monotonic() - t0
        # uvicorn re-raises the signal once it has shut down cleanly: "killed by SIGTERM" is the normal exit
        assert rc in (0, -signal.SIGTERM) and took < 8, (rc, took)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_client_that_disconnects_costs_no_model_time(tiny_qa_checkpoint):
    """Over real HTTP: a request whose client hangs up while it waits never reaches the model."""
    import socket

    class Recording(SlowReader):
        delay = 0.6
        seen: list[str] = []

        def run_windows(self, parts):
            self.seen.extend(it.question for job, _ in parts for it in job.items)
            return super().run_windows(parts)

    base = QAReader.from_pretrained(tiny_qa_checkpoint)
    reader = Recording(base.model, base.tokenizer, model_dir=tiny_qa_checkpoint)
    app = create_app(reader=reader, max_wait_ms=0)
    with running_server(app) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        first = ThreadPoolExecutor(1).submit(
            httpx.post, f"{base_url}/v1/answer", json={"question": "first?", "context": "Ann met Bob."}, timeout=30)
        time.sleep(0.2)  # "first" is in the model now
        body = json.dumps({"question": "gone?", "context": "Ann met Bob."}).encode()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            time.sleep(0.1)  # queued behind "first"; then the client goes away
        assert first.result().status_code == 200
        time.sleep(1.0)  # the batcher has moved on
        assert reader.seen == ["first?"], reader.seen
        assert app.state.batcher.queued_requests == 0


# ------------------------------------------------------------------------ when packing breaks

LONG_CONTEXT = " ".join(f"Sentence {i} mentions the río número {i} and its bridges." for i in range(80))
KINDS = [("Who visited the café?", UNICODE_CONTEXT), ("Which river?", LONG_CONTEXT),
         ("When?", "Café Odeon opened in 1911.")]


def _every_kind_of_request(c: TestClient) -> list:
    """One-window and multi-window single requests, a batch, and concurrent requests (micro-batches)."""
    out = []
    for q, ctx in KINDS:
        r = c.post("/v1/answer", json={"question": q, "context": ctx, "top_k": 3})
        assert r.status_code == 200, r.text
        out.append(r.json()["answers"])
    r = c.post("/v1/answer/batch", json=[{"question": q, "context": ctx, "top_k": 3} for q, ctx in KINDS])
    assert r.status_code == 200, r.text
    out.extend(res["answers"] for res in r.json()["results"])
    with ThreadPoolExecutor(6) as pool:
        rs = list(pool.map(lambda i: c.post("/v1/answer", json={"question": KINDS[i % 3][0],
                                                                 "context": KINDS[i % 3][1], "top_k": 3}), range(6)))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    out.extend(r.json()["answers"] for r in rs)
    return [[(a["text"], a["start"], a["end"], round(a["score"], 4)) for a in answers] for answers in out]


@pytest.fixture(scope="module")
def padded_answers(tiny_qa_checkpoint):
    with TestClient(create_app(tiny_qa_checkpoint, packing=False, backend="torch"), raise_server_exceptions=False) as c:
        assert not c.app.state.reader.packed
        return _every_kind_of_request(c)


def test_a_failing_packing_probe_still_answers_every_kind_of_request(tiny_qa_checkpoint, padded_answers,
                                                                     monkeypatch):
    monkeypatch.setattr(QAReader, "probe_packing", lambda self: "forced to fail by the test")
    with TestClient(create_app(tiny_qa_checkpoint, backend="torch"), raise_server_exceptions=False) as c:
        assert not c.app.state.reader.packed and c.get("/v1/model").json()["packed"] is False
        assert _every_kind_of_request(c) == padded_answers


def test_a_failing_packed_model_call_answers_every_kind_of_request(tiny_qa_checkpoint, padded_answers, monkeypatch):
    """The packed forward pass starts raising after start-up (what transformers 5.25 did to multi-window
    rows): no 500; each request is answered with padded batches, as a padded service answers it."""
    import squad_qa.model.packing as packing

    with TestClient(create_app(tiny_qa_checkpoint, backend="torch"), raise_server_exceptions=False) as c:
        assert c.app.state.reader.packed

        def broken(*args, **kwargs):
            raise ValueError("a packed row has no padding: call the model without attention_mask")

        monkeypatch.setattr(packing, "window_attention", broken)
        assert _every_kind_of_request(c) == padded_answers
        assert not c.app.state.reader.packed


def test_serve_hashes_the_shipped_model_once(monkeypatch):
    """`squad-qa serve` checks the folder before binding its port and the app loads what it checked:
    model.safetensors (45 MB) is hashed once per start, not once per check."""
    import uvicorn

    import squad_qa.files.checksums as checksums

    monkeypatch.delenv(model_dir.MODEL_ENV_VAR, raising=False)
    hashed = []
    real = checksums.file_sha256
    monkeypatch.setattr(checksums, "file_sha256", lambda path: hashed.append(Path(path).name) or real(path))
    started = []

    def run(app, **kwargs):  # uvicorn.run, minus the socket: the app's start-up and shutdown
        with TestClient(app) as c:
            started.append(c.get("/v1/model").json()["name"])

    monkeypatch.setattr(uvicorn, "run", run)
    assert serve_main(["--port", "0"]) == 0
    assert started == ["squad-minilm-l6"]
    assert hashed.count("model.safetensors") == 1, hashed


def test_serve_flags_are_the_settings_fields():
    """One definition: every ServiceSettings field is a `squad-qa serve` flag with the field's default."""
    import dataclasses

    from service.cli import build_arg_parser
    from service.settings import ServiceSettings, from_args

    assert from_args(build_arg_parser().parse_args([])) == ServiceSettings()
    got = from_args(build_arg_parser().parse_args(["--no-packing", "--max-batch-size", "7", "--quantize", "int8",
                                                   "--model", "runs/x", "--request_timeout_s", "2.5"]))
    assert got == dataclasses.replace(ServiceSettings(), packing=False, max_batch_size=7, quantize="int8",
                                      model_dir="runs/x", request_timeout_s=2.5)
    with pytest.raises(SystemExit):
        build_arg_parser().parse_args(["--dtype", "float64"])


# --------------------------------------------------------------------------- several passages


def test_answers_over_several_passages_name_their_passage(client):
    passages = [{"id": "cafe", "text": UNICODE_CONTEXT}, {"id": "bowl", "text": "Super Bowl 50 was won by the Denver "
                 "Broncos, who beat the Carolina Panthers 24-10 in Santa Clara."}, {"id": "long", "text": " ".join(
                 f"Sentence {i} mentions the río número {i} and its bridges." for i in range(80))}]
    r = client.post("/v1/answer", json={"question": "Who won?", "contexts": passages, "top_k": 6})
    assert r.status_code == 200, r.text
    answers = r.json()["answers"]
    texts = {p["id"]: p["text"] for p in passages}
    assert len(answers) == 6 and {a["passage_id"] for a in answers} <= set(texts)  # ranked across passages
    for a in answers:
        assert texts[a["passage_id"]][a["start"]:a["end"]] == a["text"]
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    assert sum(a["score"] for a in answers) <= 1 + 1e-6  # shares of one list of every passage's candidates
    single = client.post("/v1/answer", json={"question": "Who won?", "context": texts["bowl"]}).json()["answers"]
    assert single[0]["passage_id"] is None


def test_context_or_contexts_but_not_both_and_ids_unique(client):
    q = "Who won?"
    for body, message in (({"question": q}, "either context or contexts"),
                          ({"question": q, "context": "x y", "contexts": [{"id": "a", "text": "x y"}]}, "not both"),
                          ({"question": q, "contexts": []}, "at least 1"),
                          ({"question": q, "contexts": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
                           "ids must be unique"),
                          ({"question": q, "contexts": [{"id": "a", "text": "  "}]}, "empty or whitespace")):
        assert_error(client.post("/v1/answer", json=body), 422, "invalid_request", message)
    long = {"question": q, "contexts": [{"id": "a", "text": "x"}, {"id": "big", "text": "word " * 2000}]}
    assert_error(client.post("/v1/answer", json=long), 413, "payload_too_large", "passage 'big' has 10000 characters")
    many = {"question": q, "contexts": [{"id": str(i), "text": "x"} for i in range(LIMITS["max_batch_items"] + 1)]}
    assert_error(client.post("/v1/answer", json=many), 413, "payload_too_large", "contexts has 5 passages")


def test_min_score_gives_an_explicit_no_answer(client, tiny_qa_checkpoint):
    body = {"question": "Who won?", "context": "The Broncos won the game in 2016.", "top_k": 3}
    answered = client.post("/v1/answer", json=body).json()
    assert answered["no_answer"] is False and answered["best_rejected_score"] is None and answered["answers"]
    best = answered["answers"][0]["score"]
    refused = client.post("/v1/answer", json={**body, "min_score": 1.0}).json()
    assert (refused["answers"], refused["no_answer"], refused["best_rejected_score"]) == ([], True, best)
    some = client.post("/v1/answer", json={**body, "min_score": best}).json()
    assert some["no_answer"] is False and [a["score"] for a in some["answers"]] == [best]
    batch = client.post("/v1/answer/batch", json=[body, {**body, "min_score": 1.0}]).json()["results"]
    assert [r["no_answer"] for r in batch] == [False, True]
    assert_error(client.post("/v1/answer", json={**body, "min_score": 1.5}), 422, "invalid_request", "min_score")
    with TestClient(create_app(tiny_qa_checkpoint, min_score=1.0)) as strict:  # the server's default
        assert strict.post("/v1/answer", json=body).json()["no_answer"] is True
        assert strict.post("/v1/answer", json={**body, "min_score": 0.0}).json()["no_answer"] is False
