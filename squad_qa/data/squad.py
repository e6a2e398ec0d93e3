"""SQuAD JSON -> SquadExample.

Reads SQuAD v1.1 and v2.0 files (``.json`` or ``.json.gz``) the way the original BERT ``run_squad.py``
does: the context is split on whitespace into ``doc_tokens`` and every character remembers which of
those words it belongs to (``char_to_word_offset``). Answers are located on *words* here; the
word-piece alignment happens later, in ``features.py``.

Bad input never disappears silently:
* A file that is not SQuAD-shaped (malformed JSON, a missing or mistyped key, an empty context)
  raises :class:`SquadFormatError` naming the file, the article (title and index) and the question id.
* In training mode, a question whose answer cannot be used (answer_start outside the context, answer
  text not found in the words at that position, no answer in v1.1 mode) is skipped, counted, and
  reported with a warning; pass ``skipped=[]`` to get the list. In evaluation mode every question is
  kept, because every question must be scored.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# run_squad's whitespace: space, tab, CR, LF and U+202F (NARROW NO-BREAK SPACE, common in French text).
# Everything else, NBSP included, is part of a word, exactly as in the original script.
_WHITESPACE = " \t\r\n\u202f"
_WORD_RE = re.compile(f"[^{_WHITESPACE}]+")


# Largest JSON text read (after decompression): 30x SQuAD v1.1 train. json.loads needs about twice
# the text in memory, so a bigger file would cost gigabytes before it could be refused as malformed.
MAX_JSON_BYTES = 1 << 30


class SquadFormatError(ValueError):
    """A SQuAD file that cannot be read as SQuAD; the message says where."""


@dataclass
class SquadExample:
    qas_id: str
    title: str
    question_text: str
    context_text: str
    doc_tokens: list[str]
    char_to_word_offset: list[int]
    answers: list[dict] = field(default_factory=list)
    plausible_answers: list[dict] = field(default_factory=list)
    answer_text: str | None = None
    start_char: int | None = None
    start_position: int = -1
    end_position: int = -1
    is_impossible: bool = False


@dataclass
class SkippedQuestion:
    qas_id: str
    title: str
    reason: str


def is_whitespace(c: str) -> bool:
    return c in _WHITESPACE


def whitespace_tokenize(text: str) -> tuple[list[str], list[int]]:
    """Split ``text`` into run_squad words and map every character to its word.

    Same result as run_squad's character loop: a whitespace character maps to the word before it
    (-1 before the first word). Written with a regex and a cumulative sum because the character loop
    is the slowest part of reading train-v1.1 in pure Python.
    """
    doc_tokens = _WORD_RE.findall(text)
    if not text:
        return doc_tokens, []
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ws = np.isin(chars, np.array([ord(c) for c in _WHITESPACE], dtype=np.uint32))
    starts = ~ws
    starts[1:] &= ws[:-1]  # a word starts at a non-space preceded by a space (or at 0)
    return doc_tokens, (np.cumsum(starts) - 1).tolist()


def load_squad_json(path: str | Path) -> dict:
    """Load a SQuAD file (``.json`` or ``.json.gz``) and check its top-level shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    packed = " (gzip)" if opener is gzip.open else ""
    try:
        with opener(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)  # capped: a small .gz can expand without bound
        if len(raw) > MAX_JSON_BYTES:
            raise SquadFormatError(f"{path}: over {MAX_JSON_BYTES:,} bytes of JSON{packed}; SQuAD files are "
                                   f"far smaller (train-v1.1: 29.6 MB), so this is not one")
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SquadFormatError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise SquadFormatError(f"{path}: JSON nested too deeply to be a SQuAD file") from None
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise SquadFormatError(f"{path}: cannot be read as UTF-8 JSON{packed}: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise SquadFormatError(f"{path}: expected a JSON object with a 'data' list of articles")
    return obj


def _expect(value, kind, where: str, what: str):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise SquadFormatError(f"{where}: field '{what}' should be {name}, got {type(value).__name__}")
    return value


def _answers(qa: dict, key: str, where: str) -> list[dict]:
    raw = _expect(qa.get(key, []), list, where, key)
    out = []
    for j, a in enumerate(raw):
        _expect(a, dict, where, f"{key}[{j}]")
        for k, kind in (("text", str), ("answer_start", int)):
            if k not in a:
                raise SquadFormatError(f"{where}: '{key}[{j}]' has no '{k}'")
            _expect(a[k], kind, where, f"{key}[{j}].{k}")
        out.append({"text": a["text"], "answer_start": a["answer_start"]})
    return out


def read_squad_examples(
    path: str | Path,
    is_training: bool,
    version_2_with_negative: bool = False,
    skipped: list[SkippedQuestion] | None = None,
    *,
    dataset: list | None = None,
) -> list[SquadExample]:
    """Read a SQuAD file into examples (run_squad's ``read_squad_examples``).

    In training mode the first answer is the target, located on whitespace words; questions whose
    answer cannot be recovered are skipped and appended to ``skipped`` (if given) and counted in a
    warning. ``version_2_with_negative`` reads ``is_impossible`` questions as no-answer targets.
    ``dataset``: the file's "data" list when the caller already loaded it (``path`` then only names it).
    """
    path = Path(path)
    if dataset is None:
        dataset = load_squad_json(path)["data"]
    examples: list[SquadExample] = []
    skipped = [] if skipped is None else skipped
    n_skipped_before = len(skipped)
    seen_ids: set[str] = set()
    bad_offsets: list[str] = []  # eval mode: questions kept although an answer_start is out of range

    for a_idx, article in enumerate(dataset):
        _expect(article, dict, f"{path}: article {a_idx}", "data[]")
        title = article.get("title", "")
        art_where = f"{path}: article {a_idx} ({title!r})"
        _expect(title, str, art_where, "title")
        paragraphs = _expect(article.get("paragraphs"), list, art_where, "paragraphs")
        for p_idx, paragraph in enumerate(paragraphs):
            par_where = f"{art_where}, paragraph {p_idx}"
            _expect(paragraph, dict, par_where, "paragraphs[]")
            context = _expect(paragraph.get("context"), str, par_where, "context")
            if not context.strip():
                raise SquadFormatError(f"{par_where}: empty context")
            qas = _expect(paragraph.get("qas"), list, par_where, "qas")
            # One tokenisation per paragraph, shared by its questions (the lists are not mutated).
            doc_tokens, char_to_word_offset = whitespace_tokenize(context)

            for q_idx, qa in enumerate(qas):
                _expect(qa, dict, par_where, f"qas[{q_idx}]")
                if "id" not in qa:
                    raise SquadFormatError(f"{par_where}, question {q_idx}: missing 'id'")
                qas_id = _expect(qa["id"], str, f"{par_where}, question {q_idx}", "id")
                where = f"{art_where}, question id {qas_id!r}"
                if qas_id in seen_ids:
                    raise SquadFormatError(f"{where}: duplicate question id")
                seen_ids.add(qas_id)
                question = _expect(qa.get("question"), str, where, "question")
                is_impossible = _expect(qa.get("is_impossible", False), bool, where, "is_impossible")
                answers = _answers(qa, "answers", where)
                plausible = _answers(qa, "plausible_answers", where)

                def skip(reason: str) -> None:
                    skipped.append(SkippedQuestion(qas_id, title, reason))

                if not question.strip():
                    if is_training:
                        skip("empty question")
                        continue
                    raise SquadFormatError(f"{where}: empty question")
                bad = [x for x in answers + plausible if not 0 <= x["answer_start"] < len(context)]
                if bad:
                    msg = f"answer_start {bad[0]['answer_start']} outside the context (length {len(context)})"
                    if is_training:
                        skip(msg)
                        continue
                    # Prediction never reads answers and scoring reads only their text: keep the
                    # question, count it, say so once below.
                    bad_offsets.append(f"{qas_id!r} ({msg})")

                ex = SquadExample(
                    qas_id=qas_id,
                    title=title,
                    question_text=question,
                    context_text=context,
                    doc_tokens=doc_tokens,
                    char_to_word_offset=char_to_word_offset,
                    answers=[] if is_impossible else answers,
                    plausible_answers=plausible,
                    is_impossible=is_impossible if version_2_with_negative else False,
                )
                if is_training:
                    if is_impossible and not version_2_with_negative:
                        skip("unanswerable (v2.0) question; pass version_2_with_negative=True")
                        continue
                    if not ex.is_impossible:
                        if not answers:
                            skip("no answer")
                            continue
                        reason = _locate_answer(ex, answers[0])
                        if reason:
                            skip(reason)
                            continue
                examples.append(ex)

    n_skipped = len(skipped) - n_skipped_before
    if n_skipped:
        logger.warning(
            "%s: skipped %d of %d questions (first: %s: %s)",
            path, n_skipped, n_skipped + len(examples), skipped[n_skipped_before].qas_id, skipped[n_skipped_before].reason,
        )
    if bad_offsets:
        logger.warning("%s: %d questions have an answer_start outside their context (first: %s); kept: "
                       "prediction does not use answers and scoring uses only their text", path, len(bad_offsets),
                       bad_offsets[0])
    logger.info("%s: read %d questions (%s mode)", path, len(examples), "training" if is_training else "eval")
    return examples


def _locate_answer(ex: SquadExample, answer: dict) -> str | None:
    """Set the training answer's word span on ``ex``; return a reason if it cannot be recovered.

    As in run_squad, the answer must be findable in the words it points at: answers whose offsets are
    wrong would otherwise train the model on the wrong span.
    """
    text, start = answer["text"], answer["answer_start"]
    end_char = start + len(text) - 1
    if not text or end_char >= len(ex.context_text):
        return f"answer {text!r} at {start} runs past the context"
    ex.answer_text, ex.start_char = text, start
    ex.start_position = ex.char_to_word_offset[start]
    ex.end_position = ex.char_to_word_offset[end_char]
    actual = " ".join(ex.doc_tokens[max(ex.start_position, 0) : ex.end_position + 1])
    cleaned = " ".join(_WORD_RE.findall(text))
    if ex.start_position < 0 or actual.find(cleaned) == -1:
        ex.answer_text, ex.start_char, ex.start_position, ex.end_position = None, None, -1, -1
        return f"could not find answer {cleaned!r} in {actual!r}"
    return None


def make_example(qas_id: str, question: str, context: str) -> SquadExample:
    """An evaluation-mode example built in memory (for the inference API)."""
    doc_tokens, char_to_word_offset = whitespace_tokenize(context)
    return SquadExample(qas_id, "", question, context, doc_tokens, char_to_word_offset)
