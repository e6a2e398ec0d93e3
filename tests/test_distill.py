"""Knowledge distillation (--teacher): the KD loss, the teacher-logits cache, the id mapping, training end to end.

All on CPU with tiny random models built here: a BERT teacher with the student's own vocabulary (the identity
mapping) and an MPNet-like teacher whose tokenizer renames the specials (<s> </s> <pad> <unk>) and shifts
every id, as the real MPNet teacher's does.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import squad_qa
import squad_qa.training.distill as distill_module
from conftest import TINY_SQUAD, max_diff, run_args, torchrun_train, train_rows, weights, window_mask
from squad_qa.model.batching import predict_logits
from squad_qa.files.checksums import file_sha256, write_checksums
from squad_qa.data.squad import read_squad_examples
from squad_qa.training.distill import (CachedTeacher, LiveTeacher, TeacherCacheError, TeacherModel, compute_teacher_logits,
                              map_student_ids, teacher_fingerprint)
from squad_qa.model.logits_file import WindowLogits, load_window_logits
from squad_qa.data.features import convert_examples_to_features
from squad_qa.training.losses import compute_loss, kd_span_loss, rdrop_span_loss, span_loss, span_valid_mask
from squad_qa.training.train import main

SEQ, STRIDE, SAMPLES = 128, 48, 16


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 intra-op thread per module


@pytest.fixture(scope="module")
def student_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(squad_qa.default_base_model_path()))


@pytest.fixture(scope="module")
def train_data(student_tok):
    examples = read_squad_examples(str(TINY_SQUAD), is_training=True)[:SAMPLES]
    features = convert_examples_to_features(examples, student_tok, max_seq_length=SEQ, doc_stride=STRIDE,
                                            is_training=True, show_progress=False)
    return examples, features


def _mpnet_like_tokenizer(student_tok, drop: tuple[str, ...] = ()):
    """MPNet's specials at ids 0-3, then every student piece but ``drop`` at its id + 4, BERT's own [CLS] / [SEP] /
    [PAD] / [UNK] included, as in the real all-mpnet-base-v2 vocabulary: a mapping that only renamed the specials
    would put every other token on the wrong id."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for piece, _ in sorted(student_tok.get_vocab().items(), key=lambda kv: kv[1]):
        if piece not in drop:
            vocab[piece] = len(vocab)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordPiece(vocab, unk_token="<unk>")),
                                   bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def mpnet_teacher(tmp_path_factory, student_tok) -> Path:
    """A tiny random MPNetForQuestionAnswering, QA head scaled up so that its span distributions are peaked."""
    from transformers import MPNetConfig, MPNetForQuestionAnswering

    out = tmp_path_factory.mktemp("mpnet_teacher")
    tok = _mpnet_like_tokenizer(student_tok)
    torch.manual_seed(1)
    config = MPNetConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=256, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2)
    model = MPNetForQuestionAnswering(config)
    with torch.no_grad():
        model.qa_outputs.weight.mul_(30.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bert_teacher(tiny_qa_checkpoint) -> Path:
    return tiny_qa_checkpoint


# ---------------------------------------------------------------------------------------------------------
# (1) the loss


def _batch(seed=0, B=3, T=10):
    g = torch.Generator().manual_seed(seed)
    s, e, ts, te = (torch.randn(B, T, generator=g) * 2 for _ in range(4))
    return s, e, ts, te, window_mask([10, 8, 6][:B], T, context_start=4)


def test_kd_loss_matches_a_hand_computation():
    s, e, ts, te, mask = _batch()
    T = 2.0

    def kl_by_hand(stu, tea):
        total = 0.0
        for r in range(stu.shape[0]):
            pos = mask[r].nonzero().flatten().tolist()
            zs = [math.exp(float(stu[r, p]) / T) for p in pos]
            zt = [math.exp(float(tea[r, p]) / T) for p in pos]
            ps = [z / sum(zs) for z in zs]
            pt = [z / sum(zt) for z in zt]
            total += sum(b * (np.log(b) - np.log(a)) for a, b in zip(ps, pt))
        return total / stu.shape[0]

    expected = T * T * 0.5 * (kl_by_hand(s, ts) + kl_by_hand(e, te))
    got = kd_span_loss(s, e, ts, te, mask, T)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(kd_span_loss(s, e, s, e, mask, T)) == pytest.approx(0.0, abs=1e-6)  # same logits: no KL


def test_kd_loss_at_t1_is_cross_entropy_with_the_teacher_softmax_and_ignores_masked_positions():
    s, e, ts, te, mask = _batch(seed=3)
    # T=1, alpha=1: KL(p_t || p_s) = CE(p_t, p_s) - H(p_t); the gradient w.r.t. the student is that of CE.
    fill = torch.finfo(torch.float32).min

    def soft_ce_minus_entropy(stu, tea):
        pt = F.softmax(tea.masked_fill(~mask, fill), -1)
        logps = F.log_softmax(stu.masked_fill(~mask, fill), -1)
        ce = -(torch.where(mask, pt * logps, torch.zeros_like(pt))).sum(-1)
        ent = -(torch.where(mask, pt * pt.clamp_min(1e-30).log(), torch.zeros_like(pt))).sum(-1)
        return ce.mean(), ent.mean()

    (ce_s, h_s), (ce_e, h_e) = soft_ce_minus_entropy(s, ts), soft_ce_minus_entropy(e, te)
    kd = kd_span_loss(s, e, ts, te, mask, 1.0)
    assert float(kd) == pytest.approx(float(0.5 * (ce_s - h_s + ce_e - h_e)), rel=1e-5, abs=1e-6)
    # all positions valid: exactly F.cross_entropy with soft targets, minus the teacher's entropy
    full = torch.ones_like(mask)
    pt_s, pt_e = F.softmax(ts, -1), F.softmax(te, -1)
    ent = lambda p: -(p * p.log()).sum(-1).mean()  # noqa: E731
    ce = 0.5 * (F.cross_entropy(s, pt_s) + F.cross_entropy(e, pt_e))
    assert float(kd_span_loss(s, e, ts, te, full, 1.0)) == pytest.approx(
        float(ce - 0.5 * (ent(pt_s) + ent(pt_e))), rel=1e-5)
    # the student's gradients equal those of the soft cross-entropy
    s1 = s.clone().requires_grad_()
    kd_span_loss(s1, e, ts, te, full, 1.0).backward()
    s2 = s.clone().requires_grad_()
    (0.5 * F.cross_entropy(s2, pt_s)).backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-6)

    # masked positions never matter: scribble over them on both sides (huge, negative, nan-free)
    s_x, ts_x = s.clone(), ts.clone()
    s_x[~mask] = 1e4
    ts_x[~mask] = -3e4
    assert torch.equal(kd_span_loss(s_x, e, ts_x, te, mask, 2.0), kd_span_loss(s, e, ts, te, mask, 2.0))
    s3 = s_x.clone().requires_grad_()
    kd_span_loss(s3, e, ts_x, te, mask, 2.0).backward()
    assert torch.isfinite(s3.grad).all() and float(s3.grad[~mask].abs().max()) == 0.0


def test_compute_loss_mixes_kd_and_hard_loss_and_composes_with_rdrop():
    s, e, ts, te, mask = _batch(seed=5)
    sp, ep = torch.tensor([0, 5, 4]), torch.tensor([0, 6, 4])

    class Fake(torch.nn.Module):  # returns fixed logits (twice for R-Drop's doubled batch)
        def forward(self, input_ids, attention_mask, token_type_ids):
            rep = input_ids.shape[0] // s.shape[0]
            return argparse.Namespace(start_logits=s.repeat(rep, 1), end_logits=e.repeat(rep, 1))

    batch = {"input_ids": torch.zeros(3, 10, dtype=torch.long), "attention_mask": torch.ones(3, 10, dtype=torch.long),
             "token_type_ids": torch.zeros(3, 10, dtype=torch.long), "start_positions": sp, "end_positions": ep,
             "valid_mask": mask, "teacher_start": ts, "teacher_end": te}
    args = argparse.Namespace(rdrop_alpha=0.0, label_smoothing=0.1, kd_alpha=0.3, kd_temperature=2.0)
    import contextlib

    got = compute_loss(Fake(), batch, args, contextlib.nullcontext())
    hard = span_loss(s, e, sp, ep, mask, 0.1)
    assert torch.allclose(got, 0.3 * kd_span_loss(s, e, ts, te, mask, 2.0) + 0.7 * hard)
    args.rdrop_alpha = 1.0
    got = compute_loss(Fake(), batch, args, contextlib.nullcontext())
    hard = rdrop_span_loss(s, e, s, e, sp, ep, mask, alpha=1.0, label_smoothing=0.1)
    assert torch.allclose(got, 0.3 * kd_span_loss(s, e, ts, te, mask, 2.0) + 0.7 * hard)


# ---------------------------------------------------------------------------------------------------------
# (4) the id mapping


def test_mapping_to_an_mpnet_like_vocab_keeps_positions_and_renames_specials(student_tok, train_data):
    _, features = train_data
    teacher_tok = _mpnet_like_tokenizer(student_tok)
    ids = features.input_ids[:4]
    mapped, n_unk = map_student_ids(ids, student_tok, teacher_tok)
    assert mapped.shape == ids.shape and n_unk == 0
    rename = {"[CLS]": "<s>", "[SEP]": "</s>", "[PAD]": "<pad>", "[UNK]": "<unk>"}
    for row_s, row_t in zip(ids, mapped):
        s_pieces = student_tok.convert_ids_to_tokens(row_s.tolist())
        t_pieces = teacher_tok.convert_ids_to_tokens(row_t.tolist())
        assert t_pieces == [rename.get(p, p) for p in s_pieces]  # position for position
    assert (mapped[:, 0] == 0).all()  # [CLS] -> <s>
    assert (mapped[ids == student_tok.sep_token_id] == 2).all() and (mapped[ids == 0] == 1).all()
    assert not np.array_equal(mapped, ids)  # the ids really changed (shifted vocab)
    # the BERT teacher with the same vocabulary: the identity
    same, _ = map_student_ids(ids, student_tok, student_tok)
    assert np.array_equal(same, ids)


def test_pieces_missing_from_the_teacher_vocab_are_named_or_mapped_to_unk(student_tok, train_data, caplog):
    _, features = train_data
    ids = features.input_ids[:4]
    piece = student_tok.convert_ids_to_tokens(int(ids[0, 1]))  # the question's first piece
    n_occ = int((ids == ids[0, 1]).sum())
    teacher_tok = _mpnet_like_tokenizer(student_tok, drop=(piece,))
    with pytest.raises(TeacherCacheError, match=f"1 student pieces \\({n_occ} tokens of the windows\\).*{piece}"):
        map_student_ids(ids, student_tok, teacher_tok)
    with caplog.at_level(logging.WARNING, logger="squad_qa"):
        mapped, n_unk = map_student_ids(ids, student_tok, teacher_tok, missing="unk")
    assert n_unk == n_occ and (mapped[ids == ids[0, 1]] == 3).all()
    assert "mapped to the teacher's <unk>" in caplog.text


def test_teacher_logits_line_up_with_the_student_windows(student_tok, train_data, bert_teacher, mpnet_teacher):
    from transformers import AutoTokenizer

    from squad_qa.model.model_dir import load_qa_model

    _, features = train_data
    # BERT teacher, same vocab: what the evaluation path computes for these very windows
    start, end = compute_teacher_logits(bert_teacher, features, student_tok, batch_size=8)
    assert start.dtype == np.float32 and start.shape == (len(features), SEQ)
    model = load_qa_model(bert_teacher)
    ref_s, ref_e = predict_logits(model, features, np.arange(len(features)), 8, torch.device("cpu"))
    valid = np.arange(SEQ)[None, :] < features.seq_len[:, None]
    assert np.allclose(start[valid], ref_s[valid], atol=2e-3, rtol=2e-3)
    assert np.allclose(end[valid], ref_e[valid], atol=2e-3, rtol=2e-3)
    assert (start[~valid] == 0).all()
    # MPNet-like teacher: no token_type_ids, ids mapped; one window by hand
    s_m, _ = compute_teacher_logits(mpnet_teacher, features, student_tok, batch_size=8)
    teacher = load_qa_model(mpnet_teacher)
    ttok = AutoTokenizer.from_pretrained(str(mpnet_teacher))
    n = int(features.seq_len[2])
    ids = torch.tensor([ttok.convert_tokens_to_ids(
        [{"[CLS]": "<s>", "[SEP]": "</s>"}.get(p, p) for p in student_tok.convert_ids_to_tokens(
            features.input_ids[2, :n].tolist())])])
    with torch.no_grad():
        out = teacher(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert np.allclose(s_m[2, :n], out.start_logits[0].numpy(), atol=0.05, rtol=2e-3)


# ---------------------------------------------------------------------------------------------------------
# (2) + (5) training with a teacher, end to end


def _run_args(model: Path, out: Path, *extra: str) -> list[str]:
    """conftest's tiny run on this module's windows and first SAMPLES questions, at a higher rate."""
    return run_args(model, out, "--max_seq_length", str(SEQ), "--doc_stride", str(STRIDE), "--learning_rate", "2e-3",
                    "--max_train_samples", str(SAMPLES), *extra)


def _kl_to_teacher(model_dir: Path, features, logits: WindowLogits) -> float:
    from squad_qa.model.model_dir import load_qa_model

    model = load_qa_model(model_dir, trained_head=False)
    s, e = predict_logits(model, features, np.arange(len(features)), 8, torch.device("cpu"))
    mask = span_valid_mask(torch.from_numpy(features.p_mask), torch.from_numpy(features.attention_mask))
    return float(kd_span_loss(torch.from_numpy(s), torch.from_numpy(e), logits.start.float(), logits.end.float(),
                              mask, 1.0))


def test_fingerprint_takes_a_checked_folders_listed_sha256(tiny_qa_checkpoint, tmp_path, monkeypatch):
    """A teacher folder with a SHA256SUMS (the shipped model, a checkpoint) was verified by validate_args: its
    listed digest names the cache, and the weights are not hashed again."""
    folder = tmp_path / "teacher"
    shutil.copytree(tiny_qa_checkpoint, folder)
    plain = teacher_fingerprint(folder)["weights_sha256"]
    assert plain == file_sha256(folder / "model.safetensors")
    write_checksums(folder, ["model.safetensors", "config.json"])

    def no_hashing(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(distill_module, "file_sha256", no_hashing)
    assert teacher_fingerprint(folder)["weights_sha256"] == plain


def test_student_trained_on_cached_teacher_logits_moves_toward_the_teacher(tiny_qa_checkpoint, mpnet_teacher,
                                                                           train_data, tmp_path, caplog):
    _, features = train_data
    out, cache = tmp_path / "kd", tmp_path / "teacher_cache"
    assert main(_run_args(tiny_qa_checkpoint, out, "--teacher", str(mpnet_teacher), "--kd_alpha", "1.0",
                          "--kd_temperature", "1.0", "--teacher_cache_dir", str(cache), "--max_steps", "40",
                          "--learning_rate", "5e-3")) == 0
    files = list(cache.glob("teacher-logits-*.safetensors"))
    assert len(files) == 1
    logits = load_window_logits(files[0])
    assert len(logits) == len(features)
    assert json.loads(logits.meta["teacher"])["weights_sha256"] == teacher_fingerprint(mpnet_teacher)["weights_sha256"]
    before = _kl_to_teacher(tiny_qa_checkpoint, features, logits)
    after = _kl_to_teacher(out, features, logits)
    print(f"KL(teacher || student) over the {len(features)} training windows: before {before:.4f}, "
          f"after {after:.4f}")
    assert after < 0.25 * before  # measured: 2.40 -> 0.18
    info = json.loads((out / "squad_qa.json").read_text())["training_args"]
    assert info["teacher"] == str(mpnet_teacher) and info["kd_alpha"] == 1.0

    # a second run reuses the cache (no teacher forward), and --teacher FILE uses the file directly
    mtime = files[0].stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="squad_qa"):
        assert main(_run_args(tiny_qa_checkpoint, tmp_path / "kd2", "--teacher", str(mpnet_teacher),
                              "--teacher_cache_dir", str(cache), "--max_steps", "2")) == 0
        assert main(_run_args(tiny_qa_checkpoint, tmp_path / "kd3", "--teacher", str(files[0]),
                              "--max_steps", "2")) == 0
    assert "teacher logits: cached in" in caplog.text and f"teacher logits from {files[0]}" in caplog.text
    assert files[0].stat().st_mtime_ns == mtime
    rows2 = train_rows(tmp_path / "kd2")
    rows3 = train_rows(tmp_path / "kd3")
    assert rows2[0]["loss"] == rows3[0]["loss"]  # same logits, same default alpha/temperature

    # fewer questions: their own windows are found in the file; other windows (another --doc_stride) are refused
    assert main(_run_args(tiny_qa_checkpoint, tmp_path / "kd4", "--teacher", str(files[0]),
                          "--max_steps", "2", "--max_train_samples", "8")) == 0
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="squad_qa"):
        assert main(_run_args(tiny_qa_checkpoint, tmp_path / "kd5", "--teacher", str(files[0]),
                              "--max_steps", "2", "--doc_stride", "32")) == 2
    assert "its logits are of other windows: --doc_stride 48 there, 32 here" in caplog.text
    # more questions than the file holds: the missing windows are named
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="squad_qa"):
        assert main(_run_args(tiny_qa_checkpoint, tmp_path / "kd6", "--teacher", str(files[0]),
                              "--max_steps", "2", "--max_train_samples", "40")) == 2
    assert "--teacher " + str(files[0]) + " lacks" in caplog.text


def test_a_damaged_teacher_cache_is_a_one_line_error(tiny_qa_checkpoint, bert_teacher, tmp_path, caplog):
    cache = tmp_path / "cache"
    args = ["--teacher", str(bert_teacher), "--teacher_cache_dir", str(cache), "--max_steps", "1"]
    assert main(_run_args(tiny_qa_checkpoint, tmp_path / "a", *args)) == 0
    (cached,) = cache.glob("teacher-logits-*.safetensors")
    cached.write_bytes(cached.read_bytes()[:1000])  # cut short, as by a full disk
    with caplog.at_level(logging.ERROR, logger="squad_qa"):
        assert main(_run_args(tiny_qa_checkpoint, tmp_path / "b", *args)) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"--teacher {cached}: not a readable safetensors file" in errors[0].getMessage()


def test_kd_half_and_half_runs_writes_metrics_and_differs_from_plain_training(tiny_qa_checkpoint, bert_teacher,
                                                                              tmp_path):
    out, plain = tmp_path / "kd", tmp_path / "plain"
    assert main(_run_args(tiny_qa_checkpoint, out, "--teacher", str(bert_teacher), "--kd_alpha", "0.5",
                          "--cache_dir", str(tmp_path / "cache"), "--max_steps", "2", "--predict_file", str(TINY_SQUAD),
                          "--do_eval", "--max_eval_samples", "8")) == 0
    assert (out / "eval_results.json").is_file()
    assert list((tmp_path / "cache").glob("teacher-logits-*.safetensors"))  # default: --cache_dir
    assert main(_run_args(tiny_qa_checkpoint, plain, "--max_steps", "2")) == 0
    kd_rows = train_rows(out)
    plain_rows = train_rows(plain)
    assert len(kd_rows) == 2 and all(np.isfinite(r["loss"]) for r in kd_rows)
    assert kd_rows[0]["loss"] != pytest.approx(plain_rows[0]["loss"], rel=1e-4)


def test_live_teacher_scores_each_batch_as_the_cache_does(tiny_qa_checkpoint, mpnet_teacher, student_tok, train_data,
                                                         tmp_path):
    """--teacher_mode live: the same logits as the cached mode (up to its float16 rounding), batch by batch, and the
    same training (first losses equal to float16 precision)."""
    _, features = train_data
    start, end = compute_teacher_logits(mpnet_teacher, features, student_tok, batch_size=8)
    cached = CachedTeacher(WindowLogits(torch.from_numpy(start).half(), torch.from_numpy(end).half(), features.seq_len,
                                        [""] * len(features), features.doc_span_index))
    live = LiveTeacher(TeacherModel.load(mpnet_teacher, features.input_ids, student_tok), features)
    rows = np.array([5, 0, 9])
    width = int(features.seq_len[rows].max())
    (ls, le), (cs, ce) = live(rows, width), cached(rows, width)
    valid = torch.from_numpy(np.arange(width)[None, :] < features.seq_len[rows][:, None])
    assert ls.dtype == torch.float32 and ls.shape == (3, width)
    assert torch.allclose(ls[valid], cs[valid], atol=0.05, rtol=2e-3)
    assert torch.allclose(le[valid], ce[valid], atol=0.05, rtol=2e-3)

    runs = {}
    for mode in ("live", "cached"):
        out = tmp_path / mode
        assert main(_run_args(tiny_qa_checkpoint, out, "--teacher", str(mpnet_teacher), "--teacher_mode", mode,
                              "--cache_dir", str(tmp_path / "cache"), "--max_steps", "3")) == 0
        runs[mode] = [r["loss"] for r in train_rows(out)]
    assert len(runs["live"]) == 3
    assert runs["live"] == pytest.approx(runs["cached"], rel=2e-3)
    assert len(list((tmp_path / "cache").glob("teacher-logits-*.safetensors"))) == 1  # only the cached run wrote


def test_an_ensembles_saved_logits_teach_like_its_folder(tiny_qa_checkpoint, bert_teacher, second_checkpoint,
                                                         tmp_path):
    """predict.py --save_logits over the training file (read there as eval data: no answer needed) is a --teacher
    file: with one model it teaches exactly what that model's folder teaches; with two, their mean."""
    from squad_qa.inference.predict import main as predict_main

    geometry = ["--max_seq_length", str(SEQ), "--doc_stride", str(STRIDE), "--max_query_length", "64"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    assert predict_main(["--model", str(bert_teacher), "--predict_file", str(TINY_SQUAD), "--output_dir",
                         str(tmp_path / "p1"), "--save_logits", str(one), "--no_packing", *geometry]) == 0
    assert predict_main(["--model", str(bert_teacher), "--model", str(second_checkpoint), "--predict_file",
                         str(TINY_SQUAD), "--output_dir", str(tmp_path / "p2"), "--save_logits", str(two),
                         *geometry]) == 0
    losses = {}
    for name, teacher in (("folder", bert_teacher), ("file", one), ("ensemble", two)):
        out = tmp_path / name
        assert main(_run_args(tiny_qa_checkpoint, out, "--teacher", str(teacher), "--max_steps", "2",
                              "--kd_alpha", "1.0")) == 0
        losses[name] = [r["loss"] for r in train_rows(out)]
    assert losses["file"] == pytest.approx(losses["folder"], rel=1e-3)
    assert len(losses["ensemble"]) == 2 and all(np.isfinite(losses["ensemble"]))
    assert losses["ensemble"][0] != pytest.approx(losses["folder"][0], rel=1e-3)  # another teacher: the mean


@pytest.mark.parametrize("extra, message", [
    (["--kd_alpha", "0.5"], "--kd_alpha needs --teacher"),
    (["--kd_temperature", "3"], "--kd_temperature needs --teacher"),
    (["--teacher_cache_dir", "/tmp/x"], "--teacher_cache_dir needs --teacher"),
    (["--teacher", "TEACHER", "--kd_alpha", "1.5"], "--kd_alpha must be in [0, 1], got 1.5"),
    (["--teacher", "TEACHER", "--kd_temperature", "0"], "--kd_temperature must be > 0, got 0.0"),
    (["--teacher", "/nonexistent/teacher"], "--teacher /nonexistent/teacher: no such file or folder"),
    (["--teacher", "BASE"], "not a fine-tuned QA model folder"),
    (["--teacher", "JUNK"], "neither a QA model folder nor a logits file"),
    (["--teacher", "TEACHER", "--teacher_mode", "live", "--teacher_cache_dir", "/tmp/x"],
     "--teacher_cache_dir applies to --teacher_mode cached, not live"),
    (["--teacher_mode", "live"], "--teacher_mode needs --teacher"),
])
def test_bad_kd_flags_are_refused_before_any_work(tiny_qa_checkpoint, tmp_path, caplog, extra, message):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    names = {"TEACHER": str(tiny_qa_checkpoint), "BASE": str(squad_qa.default_base_model_path()), "JUNK": str(junk)}
    extra = [names.get(x, x) for x in extra]
    message = message.replace("JUNK", str(junk))
    out = tmp_path / "refused"
    with caplog.at_level(logging.ERROR, logger="squad_qa"):
        assert main(_run_args(tiny_qa_checkpoint, out, *extra)) == 2
    assert message in caplog.text
    assert sum(message in line for line in caplog.text.splitlines()) == 1  # one line says it
    assert not out.exists()


@pytest.mark.parametrize("mode", ["cached", "live"])
def test_killed_kd_run_resumes_to_the_same_weights(tiny_qa_checkpoint, mpnet_teacher, tmp_path, mode):
    where = ["--teacher_cache_dir", str(tmp_path / "cache")] if mode == "cached" else []
    common = ["--teacher", str(mpnet_teacher), "--teacher_mode", mode, *where, "--max_steps", "4",
              "--save_steps", "2", "--rdrop_alpha", "0.5", "--label_smoothing", "0.1"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(_run_args(tiny_qa_checkpoint, full, *common)) == 0
    assert main(_run_args(tiny_qa_checkpoint, killed, *common, "--stop_after_steps", "2")) == 0
    assert main(_run_args(tiny_qa_checkpoint, killed, *common, "--resume_from_checkpoint", "latest")) == 0
    assert max_diff(weights(full), weights(killed)) <= 1e-6


def test_torchrun_two_processes_share_one_teacher_cache(tiny_qa_checkpoint, mpnet_teacher, tmp_path):
    out, cache = tmp_path / "ddp", tmp_path / "cache"
    log = torchrun_train(_run_args(tiny_qa_checkpoint, out, "--max_steps", "2", "--teacher", str(mpnet_teacher),
                                   "--cache_dir", str(cache)))
    assert "world size 2" in log
    assert log.count("teacher logits: running") == 1  # rank 0 (rank 1 logs warnings only)
    assert len(list(cache.glob("teacher-logits-*.safetensors"))) == 1
    assert (out / "model.safetensors").is_file()


def test_torchrun_two_processes_each_run_a_live_teacher(tiny_qa_checkpoint, mpnet_teacher, tmp_path):
    out = tmp_path / "ddp-live"
    log = torchrun_train(_run_args(tiny_qa_checkpoint, out, "--max_steps", "2", "--teacher", str(mpnet_teacher),
                                   "--teacher_mode", "live", "--cache_dir", str(tmp_path / "cache")))
    assert "world size 2" in log and "runs alongside the student (live)" in log
    assert not list((tmp_path / "cache").glob("teacher-logits-*"))  # live: nothing cached
    rows = train_rows(out)
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
