"""The Dacon / KorQuAD 1.0 metrics: character F1, exact match, and token F1.

Normalisation (KorQuAD evaluate-v1.0): text is first put in Unicode NFC (a decomposed 한 is one
character, as on screen; the official script compares code points, and on NFC text, as every KorQuAD
file is, the two agree), then the characters ' " 《 》 < > 〈 〉 ( ) ‘ ’ become spaces,
text is lower-cased, ASCII punctuation is deleted and whitespace collapsed.  Leaderboard F1 is
the harmonic mean of precision and recall over the multiset of non-space characters; every
question scores its best gold answer; a dataset scores the mean, unanswered questions scoring 0.
All scores are fractions in [0, 1].

A question with no gold answer (unanswerable, SQuAD 2.0) scores as the SQuAD 2.0 script scores it:
1 on every metric for a prediction that normalises to nothing, 0 for any other.
"""

from __future__ import annotations

import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

_TO_SPACE = str.maketrans({c: " " for c in "'\"《》<>〈〉()‘’"})
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.translate(_TO_SPACE).lower().translate(_PUNCT).split())


def _f1(pred_items: Sequence[str], gold_items: Sequence[str]) -> float:
    common = Counter(pred_items) & Counter(gold_items)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_items)
    recall = same / len(gold_items)
    return 2 * precision * recall / (precision + recall)


def char_f1(prediction: str, gold: str) -> float:
    """Leaderboard F1 of one prediction against one gold answer."""
    return _f1(list(normalize_answer(prediction).replace(" ", "")), list(normalize_answer(gold).replace(" ", "")))


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def whitespace_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def morpheme_tokens(text: str) -> list[str]:
    from koqa.data_tools.morphemes import kiwi

    return [t.form for t in kiwi().tokenize(normalize_answer(text))]


def token_f1(prediction: str, gold: str, tokenize: Callable[[str], list[str]] = whitespace_tokens) -> float:
    return _f1(tokenize(prediction), tokenize(gold))


def best_over_gold(metric: Callable[[str, str], float], prediction: str, golds: Iterable[str]) -> float:
    return max((metric(prediction, g) for g in golds), default=0.0)


def score_one(prediction: str, golds: Sequence[str], *, morphemes: bool = False) -> dict[str, float]:
    if not golds:  # unanswerable: only an empty prediction is right
        return dict.fromkeys(("f1", "exact_match", "token_f1"), float(not normalize_answer(prediction or "")))
    tokenize = morpheme_tokens if morphemes else whitespace_tokens
    return {
        "f1": best_over_gold(char_f1, prediction, golds),
        "exact_match": best_over_gold(exact_match, prediction, golds),
        "token_f1": best_over_gold(lambda p, g: token_f1(p, g, tokenize), prediction, golds),
    }


def score_dataset(
    gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str], *, morphemes: bool = False
) -> dict[str, float | int]:
    """Mean metrics over every gold question; a question without a prediction scores 0."""
    totals = {"f1": 0.0, "exact_match": 0.0, "token_f1": 0.0}
    answered = 0
    for qid, golds in gold.items():
        if qid not in predictions:
            continue
        answered += 1
        for key, value in score_one(predictions[qid], golds, morphemes=morphemes).items():
            totals[key] += value
    n = len(gold)
    result: dict[str, float | int] = {k: (v / n if n else 0.0) for k, v in totals.items()}
    result.update(n=n, answered=answered)
    return result
