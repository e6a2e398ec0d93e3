"""Any encoder: an MPNet-like model (no token_type_ids, <s> / </s> specials, double separator) next to BERT.

The MPNet-style tokenizer is the BERT uncased WordPiece with its special tokens renamed (<s>, </s>,
<pad>, <unk>, <mask>), moved to other ids (0..4, so hard-coded BERT ids would show), and RoBERTa's
pair template (``<s> A </s></s> B </s>``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, MPNetConfig, MPNetForQuestionAnswering, PreTrainedTokenizerFast

import squad_qa
from conftest import run_args
from squad_qa.model.batching import collate, model_input_names
from squad_qa.data.squad import read_squad_examples
from squad_qa.model.ensemble import EnsembleError
from squad_qa.data.features import convert_examples_to_features, special_layout, windows_needed
from squad_qa.inference.reader import QAItem, QAReader
from squad_qa.inference.predict import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SQUAD = FIXTURES / "tiny_squad.json"
SPECIALS = {"[CLS]": "<s>", "[PAD]": "<pad>", "[SEP]": "</s>", "[UNK]": "<unk>", "[MASK]": "<mask>"}
NEW_IDS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}


def build_mpnet_tokenizer(out: Path) -> Path:
    from tokenizers import Tokenizer, processors

    spec = json.loads((squad_qa.default_base_model_path() / "tokenizer.json").read_text())
    vocab = {SPECIALS.get(t, t): i for t, i in spec["model"]["vocab"].items()}  # renamed, same ids
    by_id = {i: t for t, i in vocab.items()}
    for new, target in NEW_IDS.items():  # then swapped into their new ids
        at = vocab[new]
        other = by_id[target]
        by_id[target], by_id[at] = new, other
        vocab[new], vocab[other] = target, at
    spec["model"]["vocab"] = vocab
    spec["model"]["unk_token"] = "<unk>"
    for added in spec["added_tokens"]:
        added["content"] = SPECIALS.get(added["content"], added["content"])
        added["id"] = vocab[added["content"]]
    spec["padding"] = spec["truncation"] = None
    spec["post_processor"] = None
    backend = Tokenizer.from_str(json.dumps(spec))
    backend.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                  sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                  model_input_names=["input_ids", "attention_mask"], model_max_length=512)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bert_tokenizer():
    return AutoTokenizer.from_pretrained(str(squad_qa.default_base_model_path()))


@pytest.fixture(scope="module")
def mpnet_dir(tmp_path_factory) -> Path:
    """A tiny random MPNetForQuestionAnswering with the MPNet-style tokenizer, saved like a checkpoint."""
    out = build_mpnet_tokenizer(tmp_path_factory.mktemp("tiny_mpnet"))
    tok = AutoTokenizer.from_pretrained(str(out))
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=514, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    MPNetForQuestionAnswering(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def mpnet_tokenizer(mpnet_dir):
    return AutoTokenizer.from_pretrained(str(mpnet_dir))


def test_layouts_come_from_the_tokenizers_own_template(bert_tokenizer, mpnet_tokenizer):
    bert = special_layout(bert_tokenizer)
    assert (bert.prefix, bert.middle, bert.suffix, bert.n_special) == ((101,), (102,), (102,), 3)
    assert (bert.question_type, bert.context_type, bert.suffix_types) == (0, 1, (1,))
    mp = special_layout(mpnet_tokenizer)
    s, e = mpnet_tokenizer.cls_token_id, mpnet_tokenizer.sep_token_id
    assert (s, e, mpnet_tokenizer.pad_token_id) == (0, 2, 1)
    assert (mp.prefix, mp.middle, mp.suffix, mp.n_special) == ((s,), (e, e), (e,), 4)


def test_mpnet_windows_double_separator_and_same_context_positions(bert_tokenizer, mpnet_tokenizer):
    examples = read_squad_examples(SQUAD, is_training=True)
    geometry = dict(doc_stride=24, max_query_length=16)
    bert = convert_examples_to_features(examples, bert_tokenizer, max_seq_length=64, is_training=True,
                                        show_progress=False, **geometry)
    # One more special token: with one more position the windows hold the same context pieces.
    mp = convert_examples_to_features(examples, mpnet_tokenizer, max_seq_length=65, is_training=True,
                                      show_progress=False, **geometry)
    assert len(bert) == len(mp) > len(examples)  # several windows per question
    np.testing.assert_array_equal(mp.context_start, bert.context_start + 1)
    np.testing.assert_array_equal(mp.seq_len, bert.seq_len + 1)
    for name in ("paragraph_len", "example_index", "doc_span_index", "is_impossible"):
        np.testing.assert_array_equal(getattr(mp, name), getattr(bert, name))
    answerable = ~bert.is_impossible
    np.testing.assert_array_equal(mp.start_position[answerable], bert.start_position[answerable] + 1)
    np.testing.assert_array_equal(mp.end_position[answerable], bert.end_position[answerable] + 1)
    s, e, pad = mpnet_tokenizer.cls_token_id, mpnet_tokenizer.sep_token_id, mpnet_tokenizer.pad_token_id
    for f in range(len(bert)):
        b, m = bert[f], mp[f]
        # token_to_orig_map / offsets / max-context of the context pieces: the same, one position later
        assert {p + 1: w for p, w in b.token_to_orig_map.items()} == m.token_to_orig_map
        assert {p + 1: v for p, v in b.token_is_max_context.items()} == m.token_is_max_context
        c0, n = int(bert.context_start[f]), int(bert.paragraph_len[f])
        np.testing.assert_array_equal(mp.offsets[f, c0 + 1:c0 + 1 + n], bert.offsets[f, c0:c0 + n])
        np.testing.assert_array_equal(mp.input_ids[f, c0 + 1:c0 + 1 + n], bert.input_ids[f, c0:c0 + n])
        ids = mp.input_ids[f]
        q = c0 - 2  # question pieces
        assert ids[0] == s and ids[1:1 + q].tolist() == bert.input_ids[f, 1:1 + q].tolist()
        assert ids[1 + q:3 + q].tolist() == [e, e] and ids[c0 + 1 + n] == e
        assert (ids[c0 + 2 + n:] == pad).all()
        assert m.tokens[:1] == ["<s>"] and m.tokens[q + 1:q + 3] == ["</s>", "</s>"] and m.tokens[-1] == "</s>"
        assert m.p_mask[0] == 0 and m.cls_index == 0
        assert not mp.token_type_ids[f].any()  # the RoBERTa template: type 0 everywhere
        assert mp.attention_mask[f].sum() == bert.attention_mask[f].sum() + 1
    # the window count helper agrees with the windows built
    counts = windows_needed(mpnet_tokenizer, [ex.question_text for ex in examples],
                            [ex.context_text for ex in examples], 65, **geometry)
    assert sum(counts) == len(mp)


def test_same_geometry_leaves_room_for_the_extra_separator(bert_tokenizer, mpnet_tokenizer):
    examples = read_squad_examples(SQUAD, is_training=False)
    bert = convert_examples_to_features(examples, bert_tokenizer, 64, 24, 16, show_progress=False)
    mp = convert_examples_to_features(examples, mpnet_tokenizer, 64, 24, 16, show_progress=False)
    assert mp.seq_len.max() <= 64 and (mp.paragraph_len <= bert.paragraph_len).all()
    for e in range(len(examples)):  # every context piece is still in some window
        covered = lambda feats: {tuple(o) for f in np.flatnonzero(feats.example_index == e)
                                 for o in feats.offsets[f][feats.token_to_orig[f] >= 0].tolist()}
        assert covered(mp) == covered(bert)
    with pytest.raises(ValueError, match="4 special tokens"):
        convert_examples_to_features(examples, mpnet_tokenizer, 20, 2, 16, show_progress=False)


def test_model_inputs_are_what_the_forward_takes(tiny_qa_checkpoint, mpnet_dir, mpnet_tokenizer):
    from squad_qa.model.model_dir import load_qa_model

    bert, mp = load_qa_model(tiny_qa_checkpoint), load_qa_model(mpnet_dir)
    assert type(mp).__name__ == "MPNetForQuestionAnswering"
    assert model_input_names(bert) == ("input_ids", "attention_mask", "token_type_ids")
    assert model_input_names(mp) == ("input_ids", "attention_mask")
    examples = read_squad_examples(SQUAD, is_training=True)
    feats = convert_examples_to_features(examples, mpnet_tokenizer, 128, 48, 32, is_training=True,
                                         show_progress=False)
    batch = collate(feats, np.arange(4), input_names=model_input_names(mp))
    assert set(batch) == {"input_ids", "attention_mask", "start_positions", "end_positions"}
    assert set(collate(feats, np.arange(4))) >= {"token_type_ids"}  # the default stays BERT's


def test_tiny_mpnet_trains_a_step_and_answers_through_qareader(mpnet_dir, mpnet_tokenizer, tmp_path):
    from squad_qa.model.model_dir import load_qa_model

    torch.manual_seed(0)
    model = load_qa_model(mpnet_dir, trained_head=False).train()
    examples = read_squad_examples(SQUAD, is_training=True)
    feats = convert_examples_to_features(examples, mpnet_tokenizer, 128, 48, 32, is_training=True,
                                         show_progress=False)
    names = model_input_names(model)  # once per model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model.qa_outputs.weight.detach().clone()
    losses = []
    for step in range(3):
        batch = collate(feats, np.arange(8), input_names=names)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert not torch.equal(before, model.qa_outputs.weight)
    trained = tmp_path / "trained-mpnet"
    model.save_pretrained(trained)
    mpnet_tokenizer.save_pretrained(trained)

    reader = QAReader.from_pretrained(trained, device="cpu")
    assert reader.input_names == ("input_ids", "attention_mask") and reader.packed is False
    info = reader.describe()
    assert info["architecture"] == "MPNetForQuestionAnswering" and info["packed"] is False
    context = "The Normans gave their name to Normandy, a region in France. " * 12
    answers = reader.answer_batch([QAItem("Who gave their name to Normandy?", context, top_k=3),
                                   QAItem("Where is Normandy?", context[:80], top_k=2, handle_impossible=True)])
    assert answers[0] and all(context[a.start:a.end] == a.text for a in answers[0] + answers[1])
    # predict.py on it
    assert main(["--model", str(trained), "--predict_file", str(SQUAD), "--output_dir", str(tmp_path / "p")]) == 0
    predictions = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert set(predictions) == {ex.qas_id for ex in examples}


def test_packing_refuses_other_model_types(mpnet_dir, tiny_qa_checkpoint, capsys, tmp_path):
    with pytest.raises(ValueError, match=r"model type 'mpnet'") as err:
        QAReader.from_pretrained(mpnet_dir, device="cpu", packed=True)
    assert "\n" not in str(err.value)
    # BERT and MPNet windows do not line up: no ensemble of the two
    with pytest.raises(EnsembleError, match="tokenizers differ"):
        QAReader.from_pretrained([tiny_qa_checkpoint, mpnet_dir], device="cpu")
    code = main(["--model", str(tiny_qa_checkpoint), "--model", str(mpnet_dir), "--predict_file", str(SQUAD),
                 "--output_dir", str(tmp_path)])
    assert code == 2 and "cannot ensemble" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")  # conftest: 1 intra-op thread for the training loop
def test_train_py_fine_tunes_an_mpnet_encoder_and_the_reader_serves_it(mpnet_dir, tmp_path):
    """scripts/train_squad.py's loop, unchanged, on the MPNet-like model: features with the tokenizer's own
    specials, MPNet's relative_attention_bias in the optimizer's groups, evaluation without token_type_ids."""
    from squad_qa.training.train import main as train_main

    out = tmp_path / "run"
    rc = train_main(run_args(mpnet_dir, out, "--max_steps", "2", "--do_eval", "--predict_file", str(SQUAD),
                             train_file=SQUAD))
    assert rc in (0, None)
    assert json.loads((out / "eval_results.json").read_text())["f1"] >= 0
    reader = QAReader.from_pretrained(out, device="cpu")
    assert reader.max_seq_length == 128 and reader.input_names == ("input_ids", "attention_mask")
    context = "MPNet was trained here for two steps only."
    assert all(context[a.start:a.end] == a.text for a in reader.answer("What was trained?", context, top_k=3))


def test_train_py_refuses_a_stride_that_leaves_no_room_for_mpnets_fourth_special(mpnet_dir, tmp_path, caplog):
    """128 - 64 - 3 = 61 context tokens for BERT, 60 for MPNet's <s> q </s></s> c </s>, and the stride must be
    shorter than a window's context: --doc_stride 60 passes the flag checks (which know no tokenizer) and is
    refused, before anything is written, once the tokenizer is loaded."""
    from squad_qa.training.train import main as train_main

    out = tmp_path / "run"
    rc = train_main(run_args(mpnet_dir, out, "--doc_stride", "60", "--max_steps", "1", train_file=SQUAD))
    assert rc == 2
    assert "doc_stride (60) must be in 1..59" in caplog.text
    assert not out.exists()
