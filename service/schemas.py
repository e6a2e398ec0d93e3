"""Request/response bodies of the HTTP API (pydantic v2; they are also the OpenAPI schema at /docs).

Only shape and emptiness are checked here. Size limits (context length, batch length) are
configurable per app and answered with 413, so they live in app.py, not in these static types.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AnswerRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",  # a typo'd option ("topk") is an error, not a silently ignored field
        json_schema_extra={
            "examples": [
                {
                    "question": "Which team won Super Bowl 50?",
                    "context": "Super Bowl 50 was won by the Denver Broncos, who beat the Carolina Panthers 24-10.",
                    "top_k": 1,
                }
            ]
        },
    )

    question: str = Field(max_length=2000, description="The question; must not be empty or whitespace. Only its "
                                                        "first 64 word pieces are read, as in training.")
    context: str = Field(description="The passage the answer is extracted from (any length up to the server limit; "
                                     "long passages are read in overlapping windows).")
    top_k: int = Field(1, ge=1, le=20, description="How many candidate spans to return, best first.")
    max_answer_length: int = Field(30, ge=1, le=512, description="Longest answer, in word pieces.")
    handle_impossible: bool = Field(
        False,
        description='SQuAD v2 behaviour: answer "" (with its score) when the no-answer score beats every span.',
    )

    @field_validator("question", "context")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty or whitespace")
        # JSON may carry a lone surrogate ("\\udc00"); it is not a character, cannot be encoded,
        # and has no place in a passage: refuse it here (422) rather than fail while reading (500).
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"contains a lone UTF-16 surrogate (U+{ord(v[e.start]):04X}) at character {e.start}") from None
        return v


class AnswerSpan(BaseModel):
    text: str = Field(description="Exact substring of the context: context[start:end] == text.")
    score: float = Field(description="Probability of this span among the n-best candidates.")
    start: int = Field(description="Character offset (Unicode code points) where the answer starts.")
    end: int = Field(description="Character offset one past the answer's last character.")


class AnswerResponse(BaseModel):
    answers: list[AnswerSpan]
    model: str
    took_ms: float = Field(description="Server-side time for this request, queueing included.")


class BatchAnswerResponse(BaseModel):
    results: list[AnswerResponse] = Field(description="One entry per request item, in order.")
    model: str
    took_ms: float


class HealthResponse(BaseModel):
    status: str
    model_loaded: bool
    model: str | None = None
    queued_requests: int = Field(0, description="Requests waiting for a model call.")
    queued_windows: int = Field(0, description="Their work, in windows (max_seq_length tokens each).")


class ModelInfo(BaseModel):
    name: str
    base: str | None = None
    teacher: str | None = Field(None, description="The model it was distilled from (--teacher), if any.")
    architecture: str
    max_seq_length: int
    doc_stride: int
    max_query_length: int
    metrics: dict[str, Any] | None = Field(None, description="Metrics recorded by training (squad_qa.json), if any.")
    note: str | None = None
    quantized: str | None = Field(None, description='"int8" when served with int8 matrix products.')
    dtype: str = Field("float32", description="Compute dtype of the forward pass (bfloat16/float16: autocast).")
    compiled: bool = Field(False, description="Whether the forward pass runs through torch.compile.")
    packed: bool = Field(False, description="Whether batches run packed, without padding (CPU, BERT models).")
    backend: str = Field("torch", description='"torch", or "onnx" (ONNX Runtime).')
    threads: int = Field(1, description="The model's intra-op threads.")
    max_batch_size: int
    max_wait_ms: float
    max_context_chars: int
    max_batch_items: int
    max_request_windows: int = Field(description="Most windows one request may need (413 above).")
    max_batch_windows: int = Field(description="Most windows per model call.")
    max_queued_windows: int = Field(description="Queue budget in windows (429 with Retry-After above).")
    request_timeout_s: float = Field(description="A request still queued after this long gets 504.")
    queued_requests: int = Field(description="Requests waiting for a model call now.")
    queued_windows: int = Field(description="Their work, in windows.")


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable kind: invalid_request, payload_too_large, internal_error, ...")
    message: str
    request_id: str
    detail: list[dict[str, Any]] | None = None
