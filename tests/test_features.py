import unicodedata

import numpy as np
import pytest
from transformers import AutoTokenizer

from squad_qa import default_base_model_path
from squad_qa.data import features as F
from squad_qa.data.squad import make_example, read_squad_examples
from squad_qa.data.feature_store import SquadFeatures
from squad_qa.data.features import convert_examples_to_features


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(default_base_model_path())



def train_example(question, context, answer, answer_start, qas_id="q"):
    ex = make_example(qas_id, question, context)
    assert context[answer_start:answer_start + len(answer)] == answer
    ex.answer_text, ex.start_char = answer, answer_start
    ex.start_position = ex.char_to_word_offset[answer_start]
    ex.end_position = ex.char_to_word_offset[answer_start + len(answer) - 1]
    ex.answers = [{"text": answer, "answer_start": answer_start}]
    return ex


# --- A plain-Python transcription of run_squad's convert_examples_to_features (one tokenize() call per
# whitespace word, the window loop, _check_is_max_context, _improve_answer_span): the reference. ---

def reference_features(ex, tok, max_seq_length, doc_stride, max_query_length, is_training):
    query = tok.tokenize(ex.question_text)[:max_query_length]
    tok_to_orig, orig_to_tok, all_doc = [], [], []
    for i, word in enumerate(ex.doc_tokens):
        orig_to_tok.append(len(all_doc))
        for sub in tok.tokenize(word):
            tok_to_orig.append(i)
            all_doc.append(sub)
    tok_start = tok_end = None
    if is_training and not ex.is_impossible:
        tok_start = orig_to_tok[ex.start_position]
        tok_end = orig_to_tok[ex.end_position + 1] - 1 if ex.end_position < len(ex.doc_tokens) - 1 else len(all_doc) - 1
        answer = " ".join(tok.tokenize(ex.answer_text))
        for s in range(tok_start, tok_end + 1):
            found = False
            for e in range(tok_end, s - 1, -1):
                if " ".join(all_doc[s:e + 1]) == answer:
                    tok_start, tok_end, found = s, e, True
                    break
            if found:
                break
    max_doc = max_seq_length - len(query) - 3
    spans, start = [], 0
    while start < len(all_doc):
        length = min(len(all_doc) - start, max_doc)
        spans.append((start, length))
        if start + length == len(all_doc):
            break
        start += min(length, doc_stride)

    def is_max_context(span_index, position):
        best, best_index = None, None
        for j, (s, n) in enumerate(spans):
            if not s <= position <= s + n - 1:
                continue
            score = min(position - s, s + n - 1 - position) + 0.01 * n
            if best is None or score > best:
                best, best_index = score, j
        return span_index == best_index

    out = []
    for j, (s, n) in enumerate(spans):
        tokens = ["[CLS]"] + query + ["[SEP]"]
        orig_map, max_ctx = {}, {}
        for i in range(n):
            orig_map[len(tokens)] = tok_to_orig[s + i]
            max_ctx[len(tokens)] = is_max_context(j, s + i)
            tokens.append(all_doc[s + i])
        tokens.append("[SEP]")
        start_position = end_position = 0
        if is_training and not ex.is_impossible and s <= tok_start and tok_end <= s + n - 1:
            start_position, end_position = tok_start - s + len(query) + 2, tok_end - s + len(query) + 2
        out.append(dict(tokens=tokens, orig_map=orig_map, max_ctx=max_ctx, start=start_position, end=end_position))
    return out


def assert_same_as_reference(examples, feats, tok, L, stride, qlen, is_training):
    f = 0
    for e, ex in enumerate(examples):
        for j, ref in enumerate(reference_features(ex, tok, L, stride, qlen, is_training)):
            got = feats[f]
            assert (got.example_index, got.doc_span_index) == (e, j), ex.qas_id
            assert got.tokens == ref["tokens"], ex.qas_id
            assert got.input_ids[:len(ref["tokens"])] == tok.convert_tokens_to_ids(ref["tokens"])
            assert got.token_to_orig_map == ref["orig_map"], ex.qas_id
            assert got.token_is_max_context == ref["max_ctx"], ex.qas_id
            assert (got.start_position, got.end_position) == (ref["start"], ref["end"]), ex.qas_id
            f += 1
    assert f == len(feats)


def test_layout_of_one_window(tok):
    ex = make_example("q", "Who won?", "John won the big prize.")
    feats = convert_examples_to_features([ex], tok, max_seq_length=32, doc_stride=8, max_query_length=8,
                                         show_progress=False)
    (f,) = [feats[0]]
    assert f.tokens == ["[CLS]", "who", "won", "?", "[SEP]", "john", "won", "the", "big", "prize", ".", "[SEP]"]
    n = len(f.tokens)
    assert f.attention_mask == [1] * n + [0] * (32 - n)
    assert f.token_type_ids == [0] * 5 + [1] * 7 + [0] * (32 - n)
    assert f.p_mask == [0, 1, 1, 1, 1] + [0] * 6 + [1] * (32 - 11)
    assert f.input_ids[n:] == [tok.pad_token_id] * (32 - n)
    assert f.token_to_orig_map == {5: 0, 6: 1, 7: 2, 8: 3, 9: 4, 10: 4}  # "prize." is one word
    assert f.offsets[5:11] == [(0, 4), (5, 8), (9, 12), (13, 16), (17, 22), (22, 23)]
    assert f.offsets[4] == (-1, -1) and f.offsets[11] == (-1, -1)
    assert f.paragraph_len == 6 and f.cls_index == 0 and feats.context_start[0] == 5 and feats.seq_len[0] == 12


def test_stride_windows_and_max_context_ties(tok):
    # 40 one-piece words, 24-token windows with a 3-token question: 18 context tokens per window.
    context = " ".join(["alpha", "beta", "gamma", "delta"] * 10)
    ex = make_example("q", "what is it", context)
    for stride in (1, 5, 8, 16):
        feats = convert_examples_to_features([ex], tok, max_seq_length=24, doc_stride=stride, max_query_length=4,
                                             show_progress=False)
        starts = [int(feats[i].token_to_orig_map[feats.context_start[i]]) for i in range(len(feats))]
        expected = [0]
        while expected[-1] + 18 < 40:
            expected.append(expected[-1] + stride)
        assert starts == expected, stride
        assert_same_as_reference([ex], feats, tok, 24, stride, 4, False)
        # Every context token is max-context in exactly one window.
        owners = np.zeros(40, int)
        for i in range(len(feats)):
            for pos, is_max in feats[i].token_is_max_context.items():
                owners[feats[i].token_to_orig_map[pos]] += is_max
        assert owners.tolist() == [1] * 40


def test_answer_span_improvement_with_punctuation(tok):
    context = "The mathematician (1895-1943). was born there."
    ex = train_example("When was he born?", context, "1895", context.index("1895"))
    assert ex.doc_tokens[ex.start_position] == "(1895-1943)."
    feats = convert_examples_to_features([ex], tok, max_seq_length=32, doc_stride=8, max_query_length=8,
                                         is_training=True, show_progress=False)
    f = feats[0]
    assert f.tokens[f.start_position:f.end_position + 1] == ["1895"]
    assert context[f.offsets[f.start_position][0]:f.offsets[f.end_position][1]] == "1895"


def test_answer_crossing_window_edges_points_at_cls(tok):
    words = [f"word{i}" for i in range(30)]
    context = " ".join(words)
    ex = train_example("which words?", context, "word10 word11 word12 word13", context.index("word10"))
    feats = convert_examples_to_features([ex], tok, max_seq_length=24, doc_stride=4, max_query_length=8,
                                         is_training=True, show_progress=False)
    assert_same_as_reference([ex], feats, tok, 24, 4, 8, True)
    inside = [i for i in range(len(feats)) if not feats.is_impossible[i]]
    outside = [i for i in range(len(feats)) if feats.is_impossible[i]]
    assert inside and outside
    for i in outside:
        assert feats.start_position[i] == feats.end_position[i] == 0
    for i in inside:
        f = feats[i]
        assert context[f.offsets[f.start_position][0]:f.offsets[f.end_position][1]] == ex.answer_text


@pytest.mark.parametrize("context, answer", [
    ("北京是中国的首都。上海是最大的城市。", "上海"),          # no spaces: one run_squad "word"
    ("東京は日本の首都です。", "日本"),
    ("Emoji 😀 party at the café tonight", "café"),
    ("Decomposed cafe\u0301 is still cafe\u0301 here", "cafe\u0301"),
    ("Spaces   between\u00a0words \u202f and\ttabs", "between\u00a0words"),
])
def test_unicode_offsets_map_back_to_exact_characters(tok, context, answer):
    ex = train_example("where?", context, answer, context.index(answer))
    feats = convert_examples_to_features([ex], tok, max_seq_length=64, doc_stride=16, max_query_length=8,
                                         is_training=True, show_progress=False)
    f = feats[0]
    assert not f.is_impossible
    assert context[f.offsets[f.start_position][0]:f.offsets[f.end_position][1]] == answer
    _assert_offsets_consistent(feats, [ex], tok)


def _assert_offsets_consistent(feats, examples, tok):
    """Every context token's offsets cover text that normalises to the token, inside its run_squad word."""
    for i in range(len(feats)):
        ex = examples[feats.example_index[i]]
        c0, n = feats.context_start[i], feats.paragraph_len[i]
        for p in range(c0, c0 + n):
            s, e = feats.offsets[i, p]
            piece = feats.vocab[feats.input_ids[i, p]]
            assert 0 <= s < e <= len(ex.context_text)
            assert ex.char_to_word_offset[s] == feats.token_to_orig[i, p]
            if piece != "[UNK]":
                text = unicodedata.normalize("NFD", ex.context_text[s:e].lower())
                text = "".join(c for c in text if unicodedata.category(c) != "Mn")
                assert text == piece.removeprefix("##"), (ex.qas_id, piece, ex.context_text[s:e])


def test_v2_impossible_examples_point_at_cls(tok):
    ex = make_example("q", "Who?", "Nobody is mentioned here at all.")
    ex.is_impossible = True
    feats = convert_examples_to_features([ex], tok, max_seq_length=32, doc_stride=8, max_query_length=8,
                                         is_training=True, show_progress=False)
    assert feats[0].is_impossible and (feats[0].start_position, feats[0].end_position) == (0, 0)


def test_question_truncated_to_max_query_length(tok):
    ex = make_example("q", " ".join(["why"] * 50), "Because.")
    feats = convert_examples_to_features([ex], tok, max_seq_length=40, doc_stride=8, max_query_length=10,
                                         show_progress=False)
    assert feats.context_start[0] == 12 and feats[0].tokens[1:11] == ["why"] * 10


@pytest.mark.parametrize("args, match", [
    ((384, 318, 64), r"doc_stride \(318\) must be in 1..316"),
    ((384, 0, 64), "doc_stride"),
    ((60, 8, 64), "must leave room for the question"),
    ((384, 128, 0), "max_query_length must be >= 1"),
])
def test_parameters_validated_up_front(tok, args, match):
    with pytest.raises(ValueError, match=match):
        convert_examples_to_features([make_example("q", "a?", "b.")], tok, *args, show_progress=False)


def test_max_seq_length_checked_against_model_positions(tok):
    with pytest.raises(ValueError, match="exceeds the model's 512 position"):
        convert_examples_to_features([make_example("q", "a?", "b.")], tok, max_seq_length=600, show_progress=False)


def test_slow_tokenizer_refused():
    class Slow:
        is_fast = False
    with pytest.raises(TypeError, match="fast tokenizer"):
        convert_examples_to_features([], Slow())


def test_cache_hit_and_invalidation(tok, tmp_path, monkeypatch):
    examples = [make_example(f"q{i}", "Who won the prize?", "Marie Curie won the prize in 1903.") for i in range(3)]
    first = convert_examples_to_features(examples, tok, 64, 16, 16, cache_dir=tmp_path, show_progress=False)
    assert len(list(tmp_path.glob("features-*.npz"))) == 1

    calls = []
    real = F._convert
    monkeypatch.setattr(F, "_convert", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = convert_examples_to_features(examples, tok, 64, 16, 16, cache_dir=tmp_path, show_progress=False)
    assert calls == []  # a hit: nothing recomputed
    for name in first._arrays:
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert again[0] == first[0]

    convert_examples_to_features(examples, tok, 64, 8, 16, cache_dir=tmp_path, show_progress=False)  # new stride
    examples[0].question_text = "Who lost?"
    convert_examples_to_features(examples, tok, 64, 16, 16, cache_dir=tmp_path, show_progress=False)  # new text
    assert len(calls) == 2 and len(list(tmp_path.glob("features-*.npz"))) == 3


def test_select_and_save_roundtrip(tok, tmp_path):
    ex = make_example("q", "what?", " ".join(["token"] * 100))
    feats = convert_examples_to_features([ex], tok, 32, 8, 8, show_progress=False)
    sub = feats.select([1, 3])
    assert len(sub) == 2 and sub.doc_span_index.tolist() == [1, 3]
    sub.save(tmp_path / "f.npz")
    back = SquadFeatures.load(tmp_path / "f.npz")
    assert back[1] == sub[1]


def test_real_dev_and_train_match_run_squad_reference(tok, squad_dir):
    """The whole conversion against the per-word run_squad transcription, on real SQuAD text."""
    dev = read_squad_examples(squad_dir / "dev-v1.1.json.gz", is_training=False)
    feats = convert_examples_to_features(dev, tok, show_progress=False)
    assert len(feats) >= len(dev)
    assert np.all(np.bincount(feats.example_index, minlength=len(dev)) >= 1)
    # Long contexts (several windows) are where the details matter: take every multi-window question
    # from the first articles, plus a slice of ordinary ones.
    multi = np.flatnonzero(np.bincount(feats.example_index) > 1)[:150]
    subset = [dev[i] for i in sorted(set(multi.tolist()) | set(range(150)))]
    sub_feats = convert_examples_to_features(subset, tok, show_progress=False)
    assert_same_as_reference(subset, sub_feats, tok, 384, 128, 64, False)
    _assert_offsets_consistent(sub_feats, subset, tok)

    train = read_squad_examples(squad_dir / "train-v1.1.json.gz", is_training=True)[:300]
    train_feats = convert_examples_to_features(train, tok, 256, 64, 64, is_training=True, show_progress=False)
    assert_same_as_reference(train, train_feats, tok, 256, 64, 64, True)


def test_windows_needed_counts_the_windows_conversion_builds(tok):
    tokenizer = tok
    from squad_qa.data.squad import make_example
    from squad_qa.data.features import convert_examples_to_features, windows_needed

    filler = "The committee met again on Tuesday and discussed the budget at length, café 🎉 北京. "
    pairs = [("Who?", "Ann met Bob."), ("What did the committee discuss " * 9 + "?", filler * 40),
             ("Where?", filler * 7), ("When?", " \u200b ")]
    for geometry in ((384, 128, 64), (96, 32, 16)):
        counts = windows_needed(tokenizer, [q for q, _ in pairs], [c for _, c in pairs], *geometry)
        features = convert_examples_to_features([make_example(str(i), q, c) for i, (q, c) in enumerate(pairs)],
                                                tokenizer, *geometry, is_training=False)
        built = np.bincount(np.asarray(features.example_index), minlength=len(pairs)).tolist()
        assert counts == built and counts[1] > 3, (geometry, counts, built)
