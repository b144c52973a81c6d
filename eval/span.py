"""Span snapping: replace a free-form answer by the context span that matches it best."""

from __future__ import annotations

import re

from koqa.eval.metrics import char_f1

_WORD = re.compile(r"\S+")


def snap_to_span(prediction: str, context: str, max_extra_words: int = 2) -> str:
    """The context span with the highest leaderboard F1 against `prediction`.

    A span starts at a word and ends inside a word (so "원으로" can end as "원": a trailing particle
    is not forced into the answer).

    A prediction that already occurs in the context is returned unchanged; an empty one stays empty.
    """
    prediction = prediction.strip()
    if not prediction or prediction in context:
        return prediction
    words = [(m.start(), m.end()) for m in _WORD.finditer(context)]
    longest = len(prediction.split()) + max_extra_words
    best, best_f1 = prediction, 0.0
    pred_chars = set(prediction)
    for i, (start, _) in enumerate(words):
        if not pred_chars.intersection(context[start : words[i][1]]):
            continue
        for j in range(i, min(i + longest, len(words))):
            for end in range(words[j][0] + 1, words[j][1] + 1):
                span = context[start:end]
                f1 = char_f1(prediction, span)
                if f1 > best_f1:
                    best, best_f1 = span, f1
    return best
