"""Features -> batches -> logits: the one path windows take through the model.

    model_input_names(model)          the window inputs a model's forward takes (decided once per model)
    collate(features, idx)            a batch of tensors cut out of the column-wise features
    length_batches(lengths, size)     row numbers grouped so that batches carry little padding
    predict_logits(model, features)   start/end logits for every window, padded or packed batches
    LengthGroupedBatchSampler         training batches of similar lengths, sharded over DDP ranks

Shared by training (the sampler and collate), training-time evaluation and the reader behind predict.py and the
service (predict_logits), so a window is batched the same way wherever it is answered.

Dynamic padding: a batch is only as wide as its longest window. `length_batches` sorts windows by
length and also cuts a batch where padding would exceed a quarter of it, which matters for a
service's few requests of mixed lengths. Packed batches (squad_qa/model/packing.py) have no padding at
all: consecutive windows, back to back in one row.
"""

from __future__ import annotations

import contextlib
import inspect
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from squad_qa.model.packing import check_packing_enabled, pack, unpack


WINDOW_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_names(model) -> tuple[str, ...]:
    """The window inputs (of ``WINDOW_INPUTS``) that ``model``'s forward takes by name.

    BERT takes all three; MPNet / DistilBERT-style models have no ``token_type_ids`` (their forward
    would reject it, or swallow it in ``**kwargs``), and models with ``type_vocab_size <= 1`` have one
    token type only, so it is not passed to them. Looks through
    torch.compile / DDP wrappers; an ensemble (squad_qa/model/ensemble.py) needs what any member takes.
    Call it once per model and hand the result to ``collate(..., input_names=)`` for every batch.
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile
    model = getattr(model, "module", model)  # DistributedDataParallel
    member_inputs = getattr(model, "member_inputs", None)
    if member_inputs is not None:  # ModelEnsemble
        names = {n for inputs in member_inputs for n in inputs}
        return tuple(n for n in WINDOW_INPUTS if n in names)
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return WINDOW_INPUTS
    if not any(n in params for n in WINDOW_INPUTS):  # forward(*args, **kwargs): cannot tell
        return WINDOW_INPUTS
    # A model with a single token type (RoBERTa-style, type_vocab_size 1) takes the argument but could not
    # embed BERT windows' type 1 on the context: give it none (its default is all zeros).
    type_vocab_size = getattr(getattr(model, "config", None), "type_vocab_size", None)
    single_type = type_vocab_size is not None and type_vocab_size <= 1
    return tuple(n for n in WINDOW_INPUTS if n in params and not (single_type and n == "token_type_ids"))


def collate(features, idx, pad_to: int | None = None, pad_multiple: int = 1, with_targets: bool = True,
            with_valid_mask: bool = False, input_names: tuple[str, ...] = WINDOW_INPUTS) -> dict[str, torch.Tensor]:
    """Slice a batch out of the column-wise features, cut to the batch's longest window (dynamic padding).

    ``input_names``: which of ``WINDOW_INPUTS`` go into the batch; ``model_input_names(model)`` for
    a model without ``token_type_ids`` (the default, all three, is what BERT takes).

    ``pad_to`` forces a fixed width (e.g. max_seq_length, for comparison); ``pad_multiple`` rounds the width up
    (8 on GPUs: tensor-core friendly shapes).  ``valid_mask`` marks the positions an answer may take (context
    tokens + CLS, i.e. p_mask == 0): label smoothing and R-Drop spread/compare probability mass only there.
    """
    idx = np.asarray(idx)
    width = int(pad_to) if pad_to else int(features.seq_len[idx].max())
    width = min(int(math.ceil(width / pad_multiple) * pad_multiple), features.max_seq_length)
    batch = {name: torch.from_numpy(getattr(features, name)[idx, :width].astype(np.int64)) for name in input_names}
    if with_targets:
        batch["start_positions"] = torch.from_numpy(features.start_position[idx].astype(np.int64))
        batch["end_positions"] = torch.from_numpy(features.end_position[idx].astype(np.int64))
    if with_valid_mask:
        batch["valid_mask"] = torch.from_numpy(features.p_mask[idx, :width] == 0)
    return batch


def length_batches(lengths: np.ndarray, batch_size: int, max_padding: float = 0.25) -> list[np.ndarray]:
    """Batches of row numbers, longest first, each padded to its first (longest) row's length.

    A batch is closed when it holds ``batch_size`` rows or when the next row would make more than
    ``max_padding`` of its padded tokens padding. Over a whole dataset neighbouring lengths are
    nearly equal and batches fill up; a service's few requests of mixed lengths would otherwise pad
    a 60-token window to 380 and spend most of the forward pass on padding.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    lengths = np.asarray(lengths)[order].astype(np.int64)
    batches, start, real = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        count = i - start + 1
        if i > start and (count > batch_size or real + n < (1 - max_padding) * count * lengths[start]):
            batches.append(order[start:i])
            start, real = i, 0
        real += n
    if len(order):
        batches.append(order[start:])
    return batches


@torch.inference_mode()
def predict_logits(model, features, indices: np.ndarray, batch_size: int, device: torch.device,
                   amp: contextlib.AbstractContextManager | None = None, pad_multiple: int = 1,
                   show_progress: bool = False, packed: bool = False,
                   input_names: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Start/end logits for ``features[indices]``, float32 ``[len(indices), L]`` (columns >= seq_len unused).

    ``input_names``: the inputs the model takes (``model_input_names``; worked out here, once per
    call, when None).

    ``packed=True`` (a model set up with ``packing.enable_packing``): each batch of up to
    ``batch_size`` windows goes through the model as one padding-free row (see squad_qa/model/packing.py).
    """
    width = features.max_seq_length
    start = np.zeros((len(indices), width), dtype=np.float32)
    end = np.zeros((len(indices), width), dtype=np.float32)
    indices = np.asarray(indices)
    if input_names is None:
        input_names = model_input_names(model)
    if packed:  # no padding to avoid: consecutive windows, up to batch_size per row
        check_packing_enabled(model)
        batches = [np.arange(lo, min(lo + batch_size, len(indices))) for lo in range(0, len(indices), batch_size)]
    else:  # batches of similar lengths (little padding)
        batches = length_batches(features.seq_len[indices], batch_size)
    was_training = model.training
    model.eval()
    for rows in tqdm(batches, desc="evaluating", disable=not show_progress, leave=False):
        if packed:
            batch, window, position = pack(features, indices[rows])
        else:
            batch = collate(features, indices[rows], pad_multiple=pad_multiple, with_targets=False,
                            input_names=input_names)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with amp if amp is not None else contextlib.nullcontext():
            out = model(**batch)
        # results go back to their rows
        if packed:
            unpack(out.start_logits, window, position, start, rows)
            unpack(out.end_logits, window, position, end, rows)
        else:
            t = out.start_logits.shape[1]
            start[rows, :t] = out.start_logits.float().cpu().numpy()
            end[rows, :t] = out.end_logits.float().cpu().numpy()
    model.train(was_training)
    return start, end


class LengthGroupedBatchSampler:
    """Shuffled batches of similar-length features, so a batch is padded to its own longest window, not 384.

    Per epoch: a permutation (seeded by (seed, epoch), so resuming can replay it), cut into mega-batches of
    ``mega_batch_mult * batch_size`` features, each sorted by length and cut into batches; then the batch order is
    shuffled, and the batch holding the longest window goes first so an out-of-memory error shows at step 1.
    With ``num_replicas > 1`` this is DistributedSampler over batches: the list is padded by wrapping around to a
    multiple of the world size and rank r takes batches r, r + R, ... (disjoint, equally many per rank).
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 42, group_by_length: bool = True,
                 mega_batch_mult: int = 50, num_replicas: int = 1, rank: int = 0) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.mega_batch_mult = mega_batch_mult
        self.num_replicas = num_replicas
        self.rank = rank
        self.num_global_batches = math.ceil(len(self.lengths) / batch_size)

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        n, bs = len(self.lengths), self.batch_size
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(n)
        if not self.group_by_length:
            batches = [perm[i:i + bs] for i in range(0, n, bs)]
        else:
            mega = bs * self.mega_batch_mult  # a multiple of bs: only the very last batch can be short
            batches = []
            for s in range(0, n, mega):
                chunk = perm[s:s + mega]
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                batches.extend(chunk[i:i + bs] for i in range(0, len(chunk), bs))
            batches = [batches[i] for i in rng.permutation(len(batches))]
            longest = int(np.argmax([self.lengths[b].max() for b in batches]))
            batches[0], batches[longest] = batches[longest], batches[0]
        if self.num_replicas > 1:
            total = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
            batches = [batches[i % len(batches)] for i in range(total)]
        return batches

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches for ``epoch`` (deterministic given seed and epoch)."""
        return self.global_batches(epoch)[self.rank::self.num_replicas]

    def __len__(self) -> int:
        return math.ceil(self.num_global_batches / self.num_replicas)
