"""Knowledge distillation at fine-tuning time: a teacher's start/end logits on the student's own windows.

    teacher_for_training(args, rt, examples, features, tokenizer)   what train.py calls (--teacher): a callable
                                                                     (feature rows, width) -> teacher logits
    CachedTeacher / LiveTeacher                                      the two modes (--teacher_mode)
    compute_teacher_logits(teacher_dir, features, student_tokenizer)  the teacher over every window, once
    student_to_teacher_ids(ids, student_tokenizer, teacher_tokenizer)  student ids -> teacher ids (a lookup table)
    map_student_ids(input_ids, student_tokenizer, teacher_tokenizer)   the same, applied to an array

Two modes (``--teacher_mode``):

* ``cached`` (default): the teacher runs ONCE over all training windows (batched, ``torch.no_grad``, autocast as
  configured, a progress bar) and its logits are written to a logits file (logits_file.py, float16 safetensors,
  no pickle) in ``--teacher_cache_dir`` (default ``--cache_dir``). Each step then reads its batch's rows, cut to
  the batch's width: a step costs no teacher forward, and later runs with the same windows and teacher skip the
  teacher entirely. ``--teacher FILE`` uses such a file directly, e.g. an ensemble's averaged logits written by
  ``predict.py --model A --model B --save_logits FILE`` over the training file.
* ``live``: the teacher sits next to the student on the same device and scores each micro-batch as it comes (no
  file, no up-front pass; the logits stay float32). It costs one teacher forward per micro-batch per epoch
  instead of one per window in all, so it only pays where the up-front pass is the bottleneck (one epoch, a
  teacher that changes, no disk) or where a GPU has idle capacity beside a small student.

Whichever mode, the teacher sees the STUDENT'S windows: its input ids are built from the student's ids, so
position ``p`` of the teacher's logits is position ``p`` of the student's window (same question truncation,
same doc stride, same context pieces). Each student id becomes its token string (student tokenizer), special
tokens are renamed ([CLS] -> the teacher's cls/bos, [SEP] -> sep/eos, [PAD] -> pad, [UNK] -> unk), then the string
becomes a teacher id (teacher vocab). For a BERT-family teacher with the same vocabulary this is the identity.
For an MPNet teacher (``<s> </s> <pad> <unk>``, no token_type_ids; the same WordPiece pieces as BERT uncased on
SQuAD text) note one difference from MPNet's own QA format: MPNet puts two separators ``</s></s>`` between
question and context, while a window built from BERT's single [SEP] gets one ``</s>`` there. No token is
inserted, so positions stay aligned; the teacher sees a slightly unusual (but close) input. token_type_ids are
given to the teacher only when its forward takes them (``batching.model_input_names``).

The cache file is named ``teacher-logits-<key>.safetensors``, where ``key`` hashes the windows themselves (the
student's input ids and lengths: what the teacher scores) and the teacher's fingerprint (its weight files'
sha256), so a copied teacher folder reuses it and anything else that changed gets a new file. Reading any logits
file goes through ``WindowLogits.aligned_to``: rows are matched to the training windows by (question id, window
number) and checked (geometry, every window present, same lengths); a mismatch is a one-line error.

DDP: in cached mode rank 0 computes and writes the cache while the others wait (``runtime.main_process_first``),
then every rank reads it; in live mode every rank holds its own teacher. Resuming needs nothing new: the logits
are a pure function of the windows and the teacher.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from transformers import AutoTokenizer

from squad_qa.model.batching import collate, model_input_names, predict_logits
from squad_qa.files.checksums import file_sha256, read_checksums
from squad_qa.model.logits_file import (LogitsFileError, WindowLogits, geometry_differences, load_window_logits,
                                       read_logits_metadata, save_window_logits, to_float16, window_qas_ids)
from squad_qa.model.model_dir import (CheckpointError, check_qa_checkpoint, load_qa_model, positions_problem,
                                     read_config_json, weight_files)
from squad_qa.training.config import KD_ALPHA_DEFAULT, KD_TEMPERATURE_DEFAULT, TEACHER_MODES
from squad_qa.training.runtime import autocast_context, main_process_first
from squad_qa.data.windows import WindowConfig

logger = logging.getLogger(__name__)

FILE_PREFIX = "teacher-logits-"

__all__ = ["TeacherCacheError", "TEACHER_MODES", "teacher_fingerprint", "windows_digest", "teacher_cache_path",
           "student_to_teacher_ids", "map_student_ids", "TeacherModel", "compute_teacher_logits", "CachedTeacher",
           "LiveTeacher", "teacher_for_training"]


class TeacherCacheError(ValueError):
    """A teacher or a teacher-logits file that cannot serve these training features (said in one line)."""


# ----------------------------------------------------------------------------------------------------------------
# identity of a teacher and of the windows it scores


def teacher_fingerprint(teacher_dir: str | Path) -> dict[str, str]:
    """``{"path", "weights_sha256"}``: the teacher's safetensors file(s) hashed (one file: its own sha256).

    A folder with a ``SHA256SUMS`` was checked against it by ``config.validate_args`` (check_qa_checkpoint):
    the digests listed there are used rather than hashing the weights a second time."""
    teacher_dir = Path(teacher_dir)
    files = weight_files(teacher_dir)
    if not files:
        raise TeacherCacheError(f"--teacher {teacher_dir}: no model.safetensors")
    listed = read_checksums(teacher_dir)
    digests = [listed.get(f.relative_to(teacher_dir).as_posix()) or file_sha256(f) for f in files]
    combined = digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()
    return {"path": str(teacher_dir.resolve()), "weights_sha256": combined}


def windows_digest(features) -> str:
    """sha256 of the windows' tokens and lengths: exactly what a teacher is asked to score."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(features.seq_len, dtype=np.int32).tobytes())
    h.update(np.ascontiguousarray(features.input_ids, dtype=np.int32).tobytes())
    return h.hexdigest()


def teacher_cache_dir(args: argparse.Namespace) -> str | None:
    """The folder ``--teacher_mode cached`` keeps the teacher's logits in: ``--teacher_cache_dir``, else
    ``--cache_dir``; None: computed each run, not cached."""
    return args.teacher_cache_dir or args.cache_dir


def teacher_cache_path(cache_dir: str | Path, windows_key: str, fingerprint: dict[str, str]) -> Path:
    """``<cache_dir>/teacher-logits-<key>.safetensors``; the key covers the windows and the teacher's weights
    (not its path: a copied teacher folder reuses the cache)."""
    h = hashlib.sha256(f"squad_qa.logits/1\n{windows_key}\n{fingerprint['weights_sha256']}".encode())
    return Path(cache_dir) / f"{FILE_PREFIX}{h.hexdigest()[:32]}.safetensors"


# ----------------------------------------------------------------------------------------------------------------
# student ids -> teacher ids


def _special_map(student_tok, teacher_tok) -> dict[str, str]:
    def first(*names: str) -> str | None:
        for n in names:
            v = getattr(teacher_tok, n, None)
            if v:
                return str(v)
        return None

    pairs = {"cls_token": first("cls_token", "bos_token"), "sep_token": first("sep_token", "eos_token"),
             "pad_token": first("pad_token"), "unk_token": first("unk_token")}
    out = {}
    for name, target in pairs.items():
        src = getattr(student_tok, name, None)
        if src is None:
            continue
        if target is None:
            raise TeacherCacheError(f"the teacher's tokenizer has no {name} (nor an equivalent) for the "
                                    f"student's {src}")
        out[str(src)] = target
    return out


def student_to_teacher_ids(student_ids: np.ndarray, student_tokenizer, teacher_tokenizer,
                           missing: str = "error") -> tuple[np.ndarray, int]:
    """A lookup table ``lut`` with ``lut[student_id] == teacher_id`` for every id in ``student_ids`` (any shape).

    Returns ``(lut int64 [max id + 1], number of tokens of student_ids mapped to the teacher's unk)``; ids that
    do not occur are -1. A piece the teacher's vocab lacks is a ``TeacherCacheError`` naming it (and how many
    distinct pieces and tokens are missing), or, with ``missing="unk"``, becomes the teacher's unk token with
    one warning carrying the counts.
    """
    if missing not in ("error", "unk"):
        raise ValueError(f"missing must be 'error' or 'unk', got {missing!r}")
    uniq, counts = np.unique(np.asarray(student_ids), return_counts=True)
    pieces = student_tokenizer.convert_ids_to_tokens([int(i) for i in uniq])
    specials = _special_map(student_tokenizer, teacher_tokenizer)
    vocab = teacher_tokenizer.get_vocab()
    lut = np.full(int(uniq.max()) + 1 if len(uniq) else 0, -1, dtype=np.int64)
    absent: list[int] = []
    for j, piece in enumerate(pieces):
        tid = vocab.get(specials.get(piece, piece))
        if tid is None:
            absent.append(j)
        else:
            lut[uniq[j]] = tid
    n_unk = 0
    if absent:
        n_unk = int(counts[absent].sum())
        names = [pieces[j] for j in absent]
        shown = ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")
        what = (f"{len(names)} student pieces ({n_unk} tokens of the windows) are not in the teacher's "
                f"vocabulary: {shown}")
        if missing == "error":
            raise TeacherCacheError(what)
        unk = teacher_tokenizer.unk_token
        if unk is None or unk not in vocab:
            raise TeacherCacheError(what + " (and the teacher has no unk token to map them to)")
        logger.warning("%s; mapped to the teacher's %s", what, unk)
        lut[uniq[absent]] = vocab[unk]
    return lut, n_unk


def map_student_ids(input_ids: np.ndarray, student_tokenizer, teacher_tokenizer,
                    missing: str = "error") -> tuple[np.ndarray, int]:
    """The student's ``input_ids`` (any shape) as teacher ids, position for position: ``(teacher_ids int64,
    number of tokens mapped to the teacher's unk)`` (see ``student_to_teacher_ids``)."""
    ids = np.asarray(input_ids)
    lut, n_unk = student_to_teacher_ids(ids, student_tokenizer, teacher_tokenizer, missing=missing)
    return lut[ids], n_unk


# ----------------------------------------------------------------------------------------------------------------
# the teacher model


@dataclass
class TeacherModel:
    """A fine-tuned QA model that scores student windows: the model (eval mode, on its device), the student ->
    teacher id table (on the same device), the inputs its forward takes, and the autocast to run it under."""

    model: torch.nn.Module
    lut: torch.Tensor  # int64 [student max id + 1]
    input_names: tuple[str, ...]
    device: torch.device
    amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext

    @classmethod
    def load(cls, teacher_dir: str | Path, student_ids: np.ndarray, student_tokenizer, *,
             device: torch.device | str = "cpu", amp: Callable[[], contextlib.AbstractContextManager] | None = None,
             missing: str = "error", model=None, teacher_tokenizer=None) -> "TeacherModel":
        """``model``/``teacher_tokenizer`` may be passed already loaded (tests); else read from ``teacher_dir``.
        ``student_ids``: every id the teacher will be shown (the training windows), for the id table."""
        device = torch.device(device)
        if teacher_tokenizer is None:
            teacher_tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
        if model is None:
            model = load_qa_model(teacher_dir, trained_head=True)
        lut, _ = student_to_teacher_ids(student_ids, student_tokenizer, teacher_tokenizer, missing=missing)
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model, torch.from_numpy(lut).to(device), model_input_names(model), device,
                   amp or contextlib.nullcontext)

    @torch.no_grad()
    def logits(self, features, rows: np.ndarray, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw float32 start/end logits ``[len(rows), width]`` (on ``device``) of the windows ``rows``."""
        batch = collate(features, rows, pad_to=width, with_targets=False, input_names=self.input_names)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        batch["input_ids"] = self.lut[batch["input_ids"]]
        with self.amp():
            out = self.model(**batch)
        return out.start_logits.float(), out.end_logits.float()


def compute_teacher_logits(teacher_dir: str | Path, features, student_tokenizer, batch_size: int = 64,
                           device: torch.device | str = "cpu",
                           amp: Callable[[], contextlib.AbstractContextManager] | None = None,
                           show_progress: bool = False, missing: str = "error",
                           teacher=None, teacher_tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's start/end logits on every window of ``features``: float32 ``[N, max_seq_length]``.

    Columns at and beyond a window's ``seq_len`` are 0 (never read: they are outside every valid mask).
    ``teacher``/``teacher_tokenizer`` may be passed already loaded (tests).
    """
    scorer = TeacherModel.load(teacher_dir, features.input_ids, student_tokenizer, device=device, amp=amp,
                               missing=missing, model=teacher, teacher_tokenizer=teacher_tokenizer)
    # the windows in the teacher's ids, then the evaluation path's batches (batching.predict_logits)
    mapped = replace(features, input_ids=scorer.lut.cpu().numpy().astype(np.int32)[features.input_ids])
    start, end = predict_logits(scorer.model, mapped, np.arange(len(features)), batch_size, scorer.device,
                                amp=scorer.amp(), show_progress=show_progress, input_names=scorer.input_names)
    pad = np.arange(features.max_seq_length)[None, :] >= features.seq_len[:, None]  # never a valid position
    start[pad] = 0.0
    end[pad] = 0.0
    return start, end


# ----------------------------------------------------------------------------------------------------------------
# what training calls


class CachedTeacher:
    """``--teacher_mode cached`` (or a logits file): rows of precomputed logits, gathered per batch on the host."""

    def __init__(self, logits: WindowLogits) -> None:
        self.logits = logits

    def __call__(self, rows: np.ndarray, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits.gather(rows, width)


class LiveTeacher:
    """``--teacher_mode live``: the teacher scores each micro-batch's windows on the training device."""

    def __init__(self, scorer: TeacherModel, features) -> None:
        self.scorer, self.features = scorer, features

    def __call__(self, rows: np.ndarray, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scorer.logits(self.features, rows, width)


def _read(path: Path, features, qas_ids: Sequence[str], window: Mapping[str, int]) -> CachedTeacher:
    """A logits file's rows for these training windows; any problem with it is a one-line TeacherCacheError."""
    try:
        return CachedTeacher(load_window_logits(path).aligned_to(features, qas_ids, window))
    except LogitsFileError as e:
        raise TeacherCacheError(f"--teacher {e}") from None


def teacher_for_training(args: argparse.Namespace, rt, examples, features, tokenizer) -> CachedTeacher | LiveTeacher:
    """``--teacher``: a logits file used as is, or a teacher folder run live or computed once and cached.

    Every rank gets the same logits; with a cache folder rank 0 computes and writes, the others wait.
    """
    teacher = Path(args.teacher)
    qas_ids = [ex.qas_id for ex in examples]
    window = WindowConfig.from_args(args).to_dict()
    amp = lambda: autocast_context(args, rt.device)  # noqa: E731 (a fresh context per forward)
    if teacher.is_file():
        logger.info("teacher logits from %s", teacher)
        return _read(teacher, features, qas_ids, window)
    if args.teacher_mode == "live":
        logger.info("teacher %s runs alongside the student (live)", teacher)
        return LiveTeacher(TeacherModel.load(teacher, features.input_ids, tokenizer, device=rt.device, amp=amp),
                           features)

    cache_dir = teacher_cache_dir(args)
    fingerprint = path = None  # no cache folder: computed for this run alone
    if cache_dir:  # the teacher's fingerprint only names (and is recorded in) the cache
        fingerprint = teacher_fingerprint(teacher)
        path = teacher_cache_path(cache_dir, windows_digest(features), fingerprint)
    with main_process_first(rt, cache_dir):
        if path is not None and path.is_file():
            logger.info("teacher logits: cached in %s", path)
            return _read(path, features, qas_ids, window)
        logger.info("teacher logits: running %s over %d training windows", teacher, len(features))
        start, end = compute_teacher_logits(teacher, features, tokenizer, batch_size=args.per_device_eval_batch_size,
                                            device=rt.device, amp=amp, show_progress=rt.is_main)
        if rt.device.type == "cuda":
            torch.cuda.empty_cache()  # the teacher is gone: give its memory back before the student trains
        # float16, as the cache file holds them: a run that computes the logits trains on what a resumed run reads
        start, end = to_float16(start), to_float16(end)
        if path is not None and rt.is_main:
            save_window_logits(path, start, end, features, qas_ids, window=window, models=[teacher],
                               squad_file=args.train_file, extra={"teacher": fingerprint})
            logger.info("teacher logits cached in %s", path)
    return CachedTeacher(WindowLogits(torch.from_numpy(start), torch.from_numpy(end), features.seq_len,
                                      window_qas_ids(qas_ids, features.example_index), features.doc_span_index,
                                      {k: str(v) for k, v in window.items()}))


def flag_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with --teacher and its --kd_* flags; [] when nothing. With a teacher, fills in the flags it
    left unset (KD_ALPHA_DEFAULT, KD_TEMPERATURE_DEFAULT, cached mode): they are None without one, so that a
    --kd_* flag without --teacher can be refused."""
    if args.teacher is None:
        return [f"--{flag} needs --teacher" for flag in ("kd_alpha", "kd_temperature", "teacher_cache_dir", "teacher_mode")
                if getattr(args, flag) is not None]
    if args.kd_alpha is None:
        args.kd_alpha = KD_ALPHA_DEFAULT
    if args.kd_temperature is None:
        args.kd_temperature = KD_TEMPERATURE_DEFAULT
    if args.teacher_mode is None:
        args.teacher_mode = "cached"
    errors = []
    if not 0.0 <= args.kd_alpha <= 1.0:
        errors.append(f"--kd_alpha must be in [0, 1], got {args.kd_alpha}")
    if not args.kd_temperature > 0:
        errors.append(f"--kd_temperature must be > 0, got {args.kd_temperature}")
    if not args.do_train:
        errors.append("--teacher needs --do_train")
    teacher = Path(args.teacher)
    if teacher.is_dir():
        try:
            check_qa_checkpoint(teacher, hint=False)
        except CheckpointError as e:
            return errors + [f"--teacher {teacher}: not a fine-tuned QA model folder: {e}"]
        config, problem = read_config_json(teacher)
        if problem:
            errors.append(f"--teacher {teacher}: {problem}")
        if positions_problem(args.max_seq_length, config, "teacher"):
            errors.append(positions_problem(args.max_seq_length, config, "teacher"))
        if args.teacher_mode == "live" and args.teacher_cache_dir is not None:
            errors.append("--teacher_cache_dir applies to --teacher_mode cached, not live (nothing is cached)")
        if args.teacher_cache_dir is not None and Path(args.teacher_cache_dir).exists() \
                and not Path(args.teacher_cache_dir).is_dir():
            errors.append(f"--teacher_cache_dir {args.teacher_cache_dir} exists and is not a folder")
    elif teacher.is_file():
        try:
            meta = read_logits_metadata(teacher)
        except LogitsFileError as e:
            return errors + [f"--teacher {teacher}: neither a QA model folder nor a logits file: {e}"]
        differ = geometry_differences(meta, WindowConfig.from_args(args).to_dict())
        if differ:
            errors.append(f"--teacher {teacher}: its logits are of other windows: " + ", ".join(differ))
        if args.teacher_cache_dir is not None:
            errors.append("--teacher_cache_dir applies to a teacher model folder, not to a logits file")
        if args.teacher_mode == "live":
            errors.append("--teacher_mode live needs a teacher model folder, not a logits file")
    else:
        errors.append(f"--teacher {teacher}: no such file or folder (a QA model folder or a teacher-logits "
                      ".safetensors file)")
    return errors
