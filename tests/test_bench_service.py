"""benchmarks/bench_service.py compares our service with transformers' QA pipeline. Its agreement
figure only means something if both models see the same windows: the pipeline's doc_stride is an
overlap, run_squad's a step, so the benchmark converts one into the other per question."""

import sys
from pathlib import Path

from transformers import AutoTokenizer

from squad_qa import default_base_model_path
from squad_qa.data.squad import read_squad_examples
from squad_qa.data.features import convert_examples_to_features

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_service import pipeline_doc_stride  # noqa: E402


def test_pipeline_doc_stride_gives_run_squad_windows(squad_dir):
    tok = AutoTokenizer.from_pretrained(default_base_model_path())
    examples = read_squad_examples(squad_dir / "dev-v1.1.json.gz", is_training=False)
    # The questions whose context needs several windows (at 384 tokens): 183 of the 10,570.
    long = [ex for ex in examples if len(tok(ex.question_text, ex.context_text)["input_ids"]) > 384]
    assert len(long) == 183
    feats = convert_examples_to_features(long, tok, 384, 128, 64, show_progress=False)
    ours = [feats.input_ids[i, : feats.seq_len[i]].tolist() for i in range(len(feats.seq_len))]
    theirs, naive = [], 0
    for ex in long:
        # What the pipeline does with a fast tokenizer (question first, truncate the context only).
        enc = tok(ex.question_text, ex.context_text, truncation="only_second", max_length=384,
                  stride=pipeline_doc_stride(tok, ex.question_text), return_overflowing_tokens=True)
        theirs += enc["input_ids"]
        default = tok(ex.question_text, ex.context_text, truncation="only_second", max_length=384, stride=128,
                      return_overflowing_tokens=True)["input_ids"]
        naive += sum(w not in ours for w in default)
    assert len(theirs) == len(ours) > len(long)
    assert theirs == ours
    assert naive > 0  # passing doc_stride=128 straight through would cut other windows
