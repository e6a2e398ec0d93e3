"""SquadExample -> InputFeatures: run_squad's doc-stride windows, with the Rust tokenizer.

The window geometry (``max_seq_length``, ``doc_stride``, ``max_query_length``) is a
:class:`WindowConfig` (squad_qa/data/windows.py): the one place its defaults live and are checked.

A context is usually longer than what fits next to the question in ``max_seq_length`` tokens, so it
is cut into overlapping windows ("doc spans")::

    [CLS] question [SEP] context tokens s .. s+len-1 [SEP] [PAD] ...

The first window starts at token 0 and each next one ``doc_stride`` tokens later, until a window
reaches the end of the context (run_squad: ``start_offset += min(length, doc_stride)``).

Any encoder: the special tokens and token types of a window are the tokenizer's own, read once from
its pair template (:func:`special_layout`), never hard-coded BERT ids. For BERT that is the layout
above, byte for byte. RoBERTa / MPNet-style tokenizers put a DOUBLE separator between the segments
(HF's convention, ``<s> question </s></s> context </s>``), and that is implemented: such windows
hold 4 special tokens, so :func:`context_room` (and the window count, and
``WindowConfig.problems``) leave room for one more, and the context starts one position later; the
context pieces, their word map and offsets are otherwise those of the BERT path. Token types follow
the template (all 0 there); models whose forward has no ``token_type_ids`` (MPNet) are not given
them (batching.model_input_names). A template with anything but exactly one special token before the
question (the CLS-like token at position 0 that stands for "no answer") is refused with a ValueError.

Semantics follow the original ``run_squad.py`` (and transformers' legacy
``squad_convert_examples_to_features``); only the *how* differs:

* Word pieces come from one batched call of the fast (Rust) tokenizer over each distinct context,
  not from one Python ``tokenize()`` call per whitespace word. Every run_squad word boundary is also
  a BERT pre-tokenizer boundary, so the pieces are the same, and each piece is mapped back to its
  run_squad word through its character offset. Those offsets are kept (``offsets``): the decoder
  cuts answers straight out of the original context with them, which also works for text without
  spaces (CJK), where one "word" is a whole sentence.
* Windows are filled into preallocated numpy arrays; the result is column-wise (:class:`SquadFeatures`,
  in feature_store.py), indexable as run_squad-style :class:`InputFeatures`, and cacheable as a plain
  ``.npz``.

Max context: a token appears in several windows when they overlap. For prediction it "belongs" to the
window where it has the most context on both sides, ``min(left, right) + 0.01 * window_length``
(first window wins ties); the decoder only starts answers at such tokens.

Span improvement: the answer is located on whitespace words, but "(1895-1943)." is one word while
the answer "1895" is a single word piece. ``_improve_answer_span`` narrows the span to the tightest
piece sequence equal to the tokenised answer text, as run_squad does.
"""

from __future__ import annotations

import logging
import unicodedata
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from squad_qa.data.squad import SquadExample
from squad_qa.data.feature_store import SquadFeatures, cache_key
from squad_qa.data.windows import SpecialLayout, WindowConfig, context_room, count_windows

logger = logging.getLogger(__name__)

_TOKENIZE_BATCH = 2000
_DEFAULT_WINDOWS = WindowConfig()


def special_layout(tokenizer) -> SpecialLayout:
    """The tokenizer's pair layout, from its own post-processor (not hard-coded BERT ids).

    Windows put one special token first (the CLS-like token, position 0, which stands for "no
    answer"); a tokenizer whose pair template does not start with exactly one special token, or
    puts the context before the question, is refused with a ValueError naming it.
    """

    def build():
        enc = _backend(tokenizer).encode("question", "context", add_special_tokens=True)
        seq = list(enc.sequence_ids)
        parts: dict[str, list[int]] = {"prefix": [], "middle": [], "suffix": []}
        types: dict[str, list[int]] = {"prefix": [], "middle": [], "suffix": []}
        seen = set()
        qtype = ctype = 0
        for tok, t, sid in zip(enc.ids, enc.type_ids, seq):
            if sid is None:
                where = "prefix" if not seen else ("middle" if seen == {0} else "suffix")
                parts[where].append(tok)
                types[where].append(t)
            else:
                if sid == 0 and 1 in seen:
                    raise ValueError(f"{type(tokenizer).__name__}: its pair template puts the context before the "
                                     f"question; run_squad windows need question first")
                if sid == 0:
                    qtype = t
                else:
                    ctype = t
                seen.add(sid)
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        if len(parts["prefix"]) != 1:
            raise ValueError(f"tokenizer {name}: windows need exactly one special token (CLS-like) before the "
                             f"question, its pair template has {len(parts['prefix'])} "
                             f"(template: {enc.tokens})")
        return SpecialLayout(tuple(parts["prefix"]), tuple(parts["middle"]), tuple(parts["suffix"]),
                             tuple(types["prefix"]), qtype, tuple(types["middle"]), ctype, tuple(types["suffix"]))

    return _cached(tokenizer, "special_layout", build)


def windows_needed(tokenizer, questions: list[str], contexts: list[str],
                   max_seq_length: int = _DEFAULT_WINDOWS.max_seq_length,
                   doc_stride: int = _DEFAULT_WINDOWS.doc_stride,
                   max_query_length: int = _DEFAULT_WINDOWS.max_query_length) -> list[int]:
    """How many windows each (question, context) pair becomes, without building them: two batched
    Rust-tokenizer calls (the service prices a request with it before queueing it)."""
    backend = _backend(tokenizer)
    n_special = special_layout(tokenizer).n_special
    queries = backend.encode_batch_fast(list(questions), add_special_tokens=False)
    docs = backend.encode_batch_fast(list(contexts), add_special_tokens=False)
    return [count_windows(len(d.ids), min(len(q.ids), max_query_length), max_seq_length, doc_stride, n_special)
            for q, d in zip(queries, docs)]


def convert_examples_to_features(
    examples: Sequence[SquadExample],
    tokenizer,
    max_seq_length: int = _DEFAULT_WINDOWS.max_seq_length,
    doc_stride: int = _DEFAULT_WINDOWS.doc_stride,
    max_query_length: int = _DEFAULT_WINDOWS.max_query_length,
    is_training: bool = False,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
) -> SquadFeatures:
    """Convert examples into doc-stride windows (run_squad's ``convert_examples_to_features``).

    ``tokenizer`` must be a fast (Rust) tokenizer; its own special tokens frame each window
    (``special_layout``: BERT's ``[CLS] q [SEP] c [SEP]``, RoBERTa / MPNet's ``<s> q </s></s> c </s>``).
    With ``cache_dir`` the result is stored as ``features-<key>.npz`` keyed by the examples' content,
    the tokenizer and all parameters.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"a fast tokenizer is required (got {type(tokenizer).__name__}); load it with AutoTokenizer")
    model_max = getattr(tokenizer, "model_max_length", None)
    WindowConfig(max_seq_length, doc_stride, max_query_length).validate(
        model_max if isinstance(model_max, int) and model_max < 1_000_000 else None,
        special_layout(tokenizer).n_special)

    cache_path = None
    if cache_dir is not None:
        key = cache_key(examples, tokenizer, max_seq_length, doc_stride, max_query_length, is_training)
        cache_path = Path(cache_dir) / f"features-{key}.npz"
        if cache_path.is_file():
            logger.info("Loading cached features from %s", cache_path)
            return SquadFeatures.load(cache_path)

    features = _convert(examples, tokenizer, max_seq_length, doc_stride, max_query_length, is_training, show_progress)
    if cache_path is not None:
        features.save(cache_path)
        logger.info("Cached %d features in %s", len(features), cache_path)
    return features


@dataclass
class _Doc:
    """A tokenised context: piece ids, their run_squad words and character offsets."""

    ids: np.ndarray
    words: np.ndarray
    offsets: np.ndarray


# Per-tokenizer helpers, built once: the inference service converts a handful of examples per
# request, and re-parsing the tokenizer or re-listing its vocabulary would cost more than that.
_per_tokenizer: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached(tokenizer, key, build):
    cache = _per_tokenizer.setdefault(tokenizer, {})
    if key not in cache:
        cache[key] = build()
    return cache[key]


def _backend(tokenizer, max_length: int | None = None):
    """A private copy of the Rust tokenizer, without padding and with the truncation we ask for.

    Calling the Rust tokenizer directly skips transformers' per-encoding conversion into Python
    dicts, which costs more than the tokenisation itself on train-v1.1; the copy keeps the caller's
    tokenizer settings untouched.
    """

    def build():
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        if max_length is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(max_length=max_length)
        return backend

    return _cached(tokenizer, ("backend", max_length), build)


def _vocab(tokenizer) -> np.ndarray:
    """id -> piece string, for ``InputFeatures.tokens``."""
    return _cached(tokenizer, "vocab", lambda: np.array(
        tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), dtype=str))


def _absorb_combining_marks(text: str, offsets: np.ndarray) -> None:
    """Extend piece ends over the combining marks that follow them, in place.

    The uncased normaliser strips accents, and the Rust tokenizer then reports "cafe\u0301" (a
    decomposed "café") as the piece "cafe" covering only 4 characters. Cut with those offsets, an
    answer would lose its accent; a mark belongs to the character before it, so it joins that piece.
    """
    if not len(offsets):
        return
    ends = offsets[:, 1]
    next_starts = np.append(offsets[1:, 0], len(text))
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    gap = ends < next_starts
    # Combining marks all lie at U+0300 and above: look closer only at gaps that start there.
    gap[gap] = codepoints[ends[gap]] >= 0x300
    for i in np.flatnonzero(gap):
        e = int(ends[i])
        while e < next_starts[i] and unicodedata.category(text[e]).startswith("M"):
            e += 1
        offsets[i, 1] = e


def _tokenize_contexts(examples, tokenizer, show_progress) -> tuple[list[_Doc], list[int]]:
    index: dict[int, int] = {}  # id(context string) -> doc number; contexts are shared objects per paragraph
    by_text: dict[str, int] = {}
    contexts, c2w, doc_of_example = [], [], []
    for ex in examples:
        k = index.get(id(ex.context_text))
        if k is None:
            k = by_text.setdefault(ex.context_text, len(contexts))
            if k == len(contexts):
                contexts.append(ex.context_text)
                c2w.append(ex.char_to_word_offset)
            index[id(ex.context_text)] = k
        doc_of_example.append(k)

    docs: list[_Doc] = []
    backend = _backend(tokenizer)
    bar = tqdm(total=len(contexts), desc="tokenizing contexts", unit="ctx", disable=not show_progress)
    for b in range(0, len(contexts), _TOKENIZE_BATCH):
        batch = contexts[b : b + _TOKENIZE_BATCH]
        for j, enc in enumerate(backend.encode_batch(batch, add_special_tokens=False)):
            ids = enc.ids
            offs = np.asarray(enc.offsets, dtype=np.int32).reshape(-1, 2)
            if not batch[j].isascii():
                _absorb_combining_marks(batch[j], offs)
            char_to_word = np.asarray(c2w[b + j], dtype=np.int32)
            # A piece never starts on whitespace, so its first character names its run_squad word.
            words = char_to_word[offs[:, 0]] if len(offs) else np.zeros(0, np.int32)
            docs.append(_Doc(np.asarray(ids, dtype=np.int32), words, offs))
        bar.update(len(batch))
    bar.close()
    return docs, doc_of_example


def _improve_answer_span(doc_ids: np.ndarray, start: int, end: int, answer_ids: list[int]) -> tuple[int, int]:
    """The tightest piece span inside [start, end] equal to the tokenised answer (run_squad).

    run_squad compares space-joined piece strings; pieces contain no spaces, so that is a comparison of
    piece sequences of equal length, and only one end per start needs checking.
    """
    n = len(answer_ids)
    if n == 0:
        return start, end
    target = np.asarray(answer_ids, dtype=doc_ids.dtype)
    for s in range(start, end - n + 2):
        if np.array_equal(doc_ids[s : s + n], target):
            return s, s + n - 1
    return start, end


def _max_context_mask(starts: np.ndarray, lengths: np.ndarray, n_tokens: int) -> list[np.ndarray]:
    """For each window, a bool mask over its tokens: True where that window gives the most context.

    score(token p, window j) = min(p - start_j, end_j - p) + 0.01 * length_j; ties go to the first
    window (run_squad compares with a strict ``>``; argmax returns the first maximum).
    """
    if len(starts) == 1:
        return [np.ones(lengths[0], dtype=bool)]
    p = np.arange(n_tokens)
    left = p[None, :] - starts[:, None]
    right = (starts + lengths - 1)[:, None] - p[None, :]
    score = np.minimum(left, right) + 0.01 * lengths[:, None]
    score[(left < 0) | (right < 0)] = -np.inf
    best = score.argmax(axis=0)
    return [best[s : s + n] == j for j, (s, n) in enumerate(zip(starts, lengths))]


def _convert(examples, tokenizer, max_seq_length, doc_stride, max_query_length, is_training, show_progress):
    docs, doc_of_example = _tokenize_contexts(examples, tokenizer, show_progress)
    # run_squad truncates the tokenised question to max_query_length pieces.
    queries = [e.ids for e in _backend(tokenizer, max_query_length).encode_batch_fast(
        [ex.question_text for ex in examples], add_special_tokens=False)]
    answers = None
    if is_training:
        answers = [e.ids for e in _backend(tokenizer).encode_batch_fast(
            [ex.answer_text or "" for ex in examples], add_special_tokens=False)]

    layout = special_layout(tokenizer)
    n_special = layout.n_special
    # Plan every window first, so the arrays can be allocated once.
    plans = []
    for e, ex in enumerate(examples):
        n = len(docs[doc_of_example[e]].ids)
        room = context_room(max_seq_length, len(queries[e]), n_special)
        starts = np.arange(count_windows(n, len(queries[e]), max_seq_length, doc_stride, n_special)) * doc_stride
        lengths = np.minimum(n - starts, room)
        plans.append((starts, lengths))
    empty = sum(1 for s, _ in plans if len(s) == 0)
    if empty:
        logger.warning("%d questions have a context with no tokens and get no windows", empty)

    N, L = sum(len(s) for s, _ in plans), max_seq_length
    # The tokenizer's own special tokens and token types (special_layout), not hard-coded BERT ids.
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no padding token")
    prefix, middle, suffix = (np.asarray(x, np.int32) for x in (layout.prefix, layout.middle, layout.suffix))
    middle_types, suffix_types = np.asarray(layout.middle_types, np.int8), np.asarray(layout.suffix_types, np.int8)
    n_suffix = len(suffix)
    feats = SquadFeatures.allocate(N, L, pad_id)
    out = vars(feats)  # the arrays by name, filled in place below
    out["p_mask"][:, 0] = 0  # [CLS] stands for "no answer"

    f = 0
    for e in tqdm(range(len(examples)), desc="building windows", unit="q", disable=not show_progress,
                  mininterval=1.0):
        ex, doc, q = examples[e], docs[doc_of_example[e]], queries[e]
        starts, lengths = plans[e]
        if not len(starts):
            continue
        max_ctx = _max_context_mask(starts, lengths, len(doc.ids))

        tok_start = tok_end = -1
        if is_training and not ex.is_impossible:
            # First piece of the answer's first word .. last piece of its last word, then tightened.
            tok_start = int(np.searchsorted(doc.words, ex.start_position, side="left"))
            tok_end = int(np.searchsorted(doc.words, ex.end_position, side="right")) - 1
            tok_start, tok_end = _improve_answer_span(doc.ids, tok_start, tok_end, answers[e])

        q0 = len(prefix)  # 1: the CLS-like token, position 0 ("no answer")
        c0 = q0 + len(q) + len(middle)  # BERT: len(q) + 2; RoBERTa / MPNet: len(q) + 3
        for j, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
            out["input_ids"][f, :q0] = prefix
            out["input_ids"][f, q0:q0 + len(q)] = q
            out["input_ids"][f, q0 + len(q):c0] = middle
            out["input_ids"][f, c0:c0 + n] = doc.ids[s:s + n]
            out["input_ids"][f, c0 + n:c0 + n + n_suffix] = suffix
            out["attention_mask"][f, :c0 + n + n_suffix] = 1
            # token types: BERT 0 up to the first [SEP], 1 on the context and the last [SEP]
            out["token_type_ids"][f, :q0] = layout.prefix_types
            out["token_type_ids"][f, q0:q0 + len(q)] = layout.question_type
            out["token_type_ids"][f, q0 + len(q):c0] = middle_types
            out["token_type_ids"][f, c0:c0 + n] = layout.context_type
            out["token_type_ids"][f, c0 + n:c0 + n + n_suffix] = suffix_types
            out["p_mask"][f, c0:c0 + n] = 0
            out["token_is_max_context"][f, c0:c0 + n] = max_ctx[j]
            out["token_to_orig"][f, c0:c0 + n] = doc.words[s:s + n]
            out["offsets"][f, c0:c0 + n] = doc.offsets[s:s + n]
            out["seq_len"][f] = c0 + n + n_suffix
            out["example_index"][f] = e
            out["doc_span_index"][f] = j
            out["context_start"][f] = c0
            out["paragraph_len"][f] = n
            if is_training:
                if ex.is_impossible:
                    out["is_impossible"][f] = True
                elif s <= tok_start and tok_end <= s + n - 1:
                    out["start_position"][f] = tok_start - s + c0
                    out["end_position"][f] = tok_end - s + c0
                else:
                    # The answer is not (wholly) in this window: train it to point at [CLS].
                    out["is_impossible"][f] = True
            f += 1

    feats.vocab = _vocab(tokenizer)
    logger.info("Converted %d questions into %d windows", len(examples), N)
    return feats
