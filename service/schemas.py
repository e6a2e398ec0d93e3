"""Request/response bodies of the HTTP API (pydantic v2; they are also the OpenAPI schema at /docs).

Only shape and emptiness are checked here. Size limits (context length, batch length) are
configurable per app and answered with 413, so they live in app.py, not in these static types.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _text(v: str) -> str:
    """Not blank, and no lone UTF-16 surrogate."""
    if not v.strip():
        raise ValueError("must not be empty or whitespace")
    # JSON may carry a lone surrogate ("\\udc00"); it is not a character, cannot be encoded,
    # and has no place in a passage: refuse it here (422) rather than fail while reading (500).
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"contains a lone UTF-16 surrogate (U+{ord(v[e.start]):04X}) at character {e.start}") from None
    return v


class PassageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200, description="Names the passage in the answers.")
    text: str = Field(description="The passage.")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        return _text(v)


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
    context: str | None = Field(None, description="The passage the answer is extracted from (any length up to the "
                                                  "server limit; long passages are read in overlapping windows).")
    contexts: list[PassageIn] | None = Field(
        None, min_length=1, description="Instead of `context`: several passages, each with an id. Answers are "
                                        "ranked across all of them on one scale and name their passage.")
    top_k: int = Field(1, ge=1, le=20, description="How many candidate spans to return, best first.")
    max_answer_length: int = Field(30, ge=1, le=512, description="Longest answer, in word pieces.")
    handle_impossible: bool = Field(
        False,
        description='SQuAD v2 behaviour: answer "" (with its score) when the no-answer score beats every span.',
    )
    min_score: float | None = Field(
        None, ge=0.0, le=1.0, description="Answers scoring below this are left out; when none is left the response "
                                          "says no_answer (default: the server's --min_score).")

    @field_validator("question", "context")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        return v if v is None else _text(v)

    @model_validator(mode="after")
    def _one_of_context_and_contexts(self) -> "AnswerRequest":
        if (self.context is None) == (self.contexts is None):
            raise ValueError("give either context or contexts, not both and not neither")
        if self.contexts is not None and len({p.id for p in self.contexts}) < len(self.contexts):
            raise ValueError("contexts: passage ids must be unique")
        return self


class AnswerSpan(BaseModel):
    text: str = Field(description="Exact substring of the context: context[start:end] == text.")
    score: float = Field(description="The estimated probability that this answer is right, where the model has a "
                                     "calibrator (`calibrated` in /v1/model); else its share of the n-best softmax.")
    start: int = Field(description="Character offset (Unicode code points) where the answer starts.")
    end: int = Field(description="Character offset one past the answer's last character.")
    passage_id: str | None = Field(None, description="With `contexts`: the passage the answer is in (offsets are "
                                                     "into its text).")


class AnswerResponse(BaseModel):
    answers: list[AnswerSpan]
    no_answer: bool = Field(False, description="True when no answer reached min_score: `answers` is empty.")
    best_rejected_score: float | None = Field(None, description="With no_answer: the score of the best candidate.")
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
    calibrated: bool = Field(False, description="Whether scores are calibrated probabilities of being right.")
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
