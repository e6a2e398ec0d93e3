"""What the reader takes and gives: a question over a context in, answers with character offsets out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Answer:
    text: str
    score: float  # probability of this span in the n-best list (run_squad's softmax over n-best)
    start: int  # character offsets into the context: context[start:end] == text
    end: int


@dataclass
class PreparedItems:
    """Items checked and cut into windows (``QAReader.prepare``), with room for their logits."""

    items: list
    examples: list
    features: Any  # SquadFeatures
    start: np.ndarray  # [windows, max_seq_length] start logits, filled by QAReader.run_windows
    end: np.ndarray

    @property
    def windows(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class QAItem:
    question: str
    context: str
    top_k: int = 1
    max_answer_length: int = 30
    handle_impossible: bool = False
