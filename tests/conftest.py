"""Shared pytest fixtures (keep this file small; one fixture per shared resource)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

from squad_qa.files.run_record import METRICS_FILE, read_metrics

# The SQuAD files: ../shared/squad beside the checkout (CI has it there), or $SQUAD_DIR.
SQUAD_DIR = Path(os.environ.get("SQUAD_DIR", Path(__file__).resolve().parents[2] / "shared" / "squad"))
TINY_SQUAD = Path(__file__).resolve().parent / "fixtures" / "tiny_squad.json"  # the training tests' data


@pytest.fixture(scope="session")
def squad_dir() -> Path:
    """Integration tests read the real files; a missing folder is a failure, not a skip."""
    assert (SQUAD_DIR / "dev-v1.1.json.gz").is_file(), f"SQuAD files not found in {SQUAD_DIR} (set SQUAD_DIR)"
    return SQUAD_DIR


def tiny_bert_qa(out: Path, seed: int, layers: int, tokenizer_from: Path, **config_overrides) -> Path:
    """A tiny random BertForQuestionAnswering (width 32, real uncased vocabulary) and a copy of a tokenizer;
    ``config_overrides`` change its BertConfig (e.g. ``max_position_embeddings``, ``initializer_range``)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    config = BertConfig(**{"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": layers,
                           "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512,
                           **config_overrides})
    BertForQuestionAnswering(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_qa_checkpoint(tmp_path_factory) -> Path:
    """A tiny *random* BertForQuestionAnswering saved like a fine-tuned checkpoint.

    Real uncased vocabulary size (30522) and the real base tokenizer, so tokenisation, offsets
    and windows are exactly what the shipped model sees; 2 layers of width 32, so it loads and
    runs in milliseconds. Its answers are arbitrary but deterministic (seeded).
    """
    import squad_qa

    return tiny_bert_qa(tmp_path_factory.mktemp("tiny_qa_checkpoint"), seed=0, layers=2,
                         tokenizer_from=squad_qa.default_base_model_path())


@pytest.fixture(scope="session")
def second_checkpoint(tmp_path_factory, tiny_qa_checkpoint) -> Path:
    """Another tiny random BERT QA model (other seed, other depth) with the same tokenizer: an ensemble partner."""
    return tiny_bert_qa(tmp_path_factory.mktemp("second_checkpoint"), seed=1, layers=1,
                         tokenizer_from=tiny_qa_checkpoint)


@pytest.fixture(scope="session")
def live_server(tiny_qa_checkpoint):
    """The real service (uvicorn, HTTP on a free 127.0.0.1 port) around the tiny checkpoint, in a
    background thread. Yields (base_url, app); shut down at the end of the session."""
    from server import running_server

    from service.app import create_app

    app = create_app(tiny_qa_checkpoint)
    with running_server(app) as base_url:
        yield base_url, app


def torchrun_train(train_args: list[str], nproc: int = 2, timeout: float = 240) -> str:
    """scripts/train_squad.py under ``torchrun --standalone`` on CPU; returns the log, fails the test on a
    non-zero exit or a timeout (the workers run in their own process group, so a timeout kills them too)."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(repo / "scripts" / "train_squad.py"), *train_args]
    # The log goes to a file, not a pipe: torchrun's workers may sit in sessions of their own, and a worker
    # that outlives a killed torchrun would hold a pipe open and hang the test instead of failing it.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            _kill_matching(str(repo / "scripts" / "train_squad.py"), train_args)
            out.seek(0)
            pytest.fail("torchrun timed out:\n" + out.read()[-4000:])
        out.seek(0)
        log = out.read()
    assert proc.returncode == 0, log[-4000:]
    return log


def _kill_matching(script: str, args: list[str]) -> None:
    """SIGKILL the processes running ``script`` with ``args`` (a timed-out torchrun's orphaned workers)."""
    want = "\0".join([script, *args])
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and want in (proc / "cmdline").read_text():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def load_script(path: str | Path):
    """A script as a module (scripts/ is not a package): a bare name is ``scripts/<name>.py``, else a path (a
    fixture maker). Registered in sys.modules: dataclasses defined in it need that."""
    import importlib.util

    path = Path(path) if Path(path).suffix == ".py" else Path(__file__).resolve().parents[1] / "scripts" / f"{path}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def run_args(model: Path, out: Path, *extra: str, train_file: Path = TINY_SQUAD) -> list[str]:
    """train.py's flags for a tiny training run (``extra`` after them: a repeated flag wins)."""
    return ["--model_name_or_path", str(model), "--train_file", str(train_file), "--output_dir", str(out),
            "--max_seq_length", "128", "--doc_stride", "48", "--per_device_train_batch_size", "4",
            "--learning_rate", "1e-3", "--logging_steps", "1", "--save_steps", "0", "--seed", "7",
            "--do_train", *extra]


def metrics_rows(out: Path) -> list[dict]:
    """A run's metrics.jsonl, one dict per line (event rows included: tests that look at resume markers)."""
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


def train_rows(out: Path) -> list[dict]:
    """A run's training rows (``run_record.read_metrics``)."""
    return read_metrics(out / METRICS_FILE)[0]


def eval_rows(out: Path) -> list[dict]:
    """A run's evaluation rows (``run_record.read_metrics``)."""
    return read_metrics(out / METRICS_FILE)[1]


def weights(path: Path) -> dict:
    """A model folder's model.safetensors, as tensors."""
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def max_diff(a: dict, b: dict, key_part: str = "") -> float:
    """The largest absolute difference between two state dicts over the keys containing ``key_part``."""
    keys = [k for k in a if key_part in k]
    assert keys and set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in keys)


def window_mask(seq_lens: list[int], width: int, context_start: int):
    """The loss tests' valid-position mask (``losses.span_valid_mask``) for rows of these lengths padded to
    ``width``: CLS plus the context from ``context_start`` up to the row's final [SEP]."""
    import torch

    from squad_qa.training.losses import span_valid_mask

    p_mask = torch.ones(len(seq_lens), width, dtype=torch.int8)
    attn = torch.zeros(len(seq_lens), width, dtype=torch.int8)
    for r, length in enumerate(seq_lens):
        attn[r, :length] = 1
        p_mask[r, 0] = 0
        p_mask[r, context_start:length - 1] = 0  # the last real token is [SEP]
    return span_valid_mask(p_mask, attn)


@pytest.fixture(scope="module")
def one_thread():
    """Training tests: on a shared 2-core machine intra-op threads on tiny matrices mostly wait for each
    other (measured ~10x slower per step than 1 thread); the loop itself does not depend on it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
