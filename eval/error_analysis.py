"""Error analysis: what kind of mistake each wrong answer is, and scores by question and answer type.

Every answer that is not an exact match gets one class, tried in this order:

    empty            no answer to an answerable question
    answered         an answer to an unanswerable (SQuAD 2.0) question
    number/unit      gold and prediction name quantities, and neither's quantities contain the
                     other's (1,300억 원 for 1,200억 원; 1,200억 for 1,200억 원: the unit is part of
                     the answer). A prediction that only adds or drops a whole quantity is not one.
    boundary         it overlaps the gold, and what differs is particles, endings or punctuation
                     (kiwipiepy's tags), or at most three characters (서울에서 for 서울)
    overlap          a span of the passage that overlaps the gold, but differs by more than that
    other span       another span of the passage, sharing nothing with the gold
    not in passage   text the passage does not contain (삼성전자 for 한빛전자 shares 전자, but is
                     no span of the passage: not an overlap)

Questions are typed by their first wh-word morpheme (누구, 언제, 어디, 얼마/몇, 무엇, 왜, 어떻게, else
기타), answers by what their morphemes hold (a date, another quantity, a proper noun, a common noun
phrase, else other; an unanswerable question's type is "no answer"). Each group's F1 and EM come
with their bootstrap intervals.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import NamedTuple

from koqa.data_tools.morphemes import Background, KiwiProcess, kiwi
from koqa.eval.metrics import char_f1, normalize_answer

ERROR_CLASSES = ("empty", "answered", "number/unit", "boundary", "overlap", "other span", "not in passage")
QUESTION_TYPES = {  # name: the wh-word morphemes that make it (kiwipiepy forms)
    "누구": ("누구",),
    "언제": ("언제",),
    "어디": ("어디",),
    "얼마/몇": ("얼마", "몇"),
    "무엇": ("무엇", "무슨", "뭐", "어느", "어떤"),
    "왜": ("왜",),
    "어떻게": ("어떻", "어떠", "어찌"),
}
OTHER_QUESTION = "기타"
ANSWER_TYPES = ("date", "quantity", "proper noun", "noun phrase", "other", "no answer")
DATE_UNITS = {"년", "월", "일", "시", "분", "초", "세기", "년대", "년도"}
# what may differ between two spans of the same answer: particles, endings, copula, suffixes, punctuation
FUNCTION_TAGS = ("J", "E", "VCP", "XS", "SF", "SP", "SS", "SE", "SO", "SW")
FEW_CHARS = 3
# morphemes that continue a number as its unit: numerals (억), bound nouns (원, 명, 년), symbols (%) and
# Latin letters (p, kg); a common noun (포인트) when it touches the number
UNIT_TAGS = ("NR", "NNB", "SW", "SL")


class Morpheme(NamedTuple):
    """What the analysis reads of one of kiwipiepy's tokens (which do not pickle, and so cannot come
    back from a KiwiProcess)."""

    form: str
    tag: str
    start: int
    len: int


# morphemes of the texts analyse() is about to classify, analysed in one batch (kiwipiepy spreads a
# batch over its threads; one call per text is several times slower)
_ANALYSED: dict[str, list[Morpheme]] = {}


def _tokens(text: str) -> list[Morpheme]:
    if text in _ANALYSED:
        return _ANALYSED[text]
    return _morphemes_of([text])[text]


def _analyse_batch(texts) -> None:
    _ANALYSED.update(_morphemes_of([t for t in texts if t not in _ANALYSED]))


def _morphemes_of(texts) -> dict[str, list[Morpheme]]:
    todo = list(dict.fromkeys(texts))
    analysed = kiwi().tokenize(todo)
    return {text: [Morpheme(t.form, t.tag, t.start, t.len) for t in tokens] for text, tokens in zip(todo, analysed)}


def _gold_texts(records: Sequence) -> list[str]:
    """The questions and gold answers, whose morphemes every analysis of these records reads."""
    return [r.question for r in records] + [a for r in records for a in r.answers]


def analyse_in_background(records: Sequence, process: KiwiProcess | None = None) -> Background | KiwiProcess:
    """Analyse the questions and gold answers beside the caller (while the answers are generated): in
    `process`, else on a thread of this process with its shared analyser; hand the result to
    `analyse`, which then has only the predictions left. A process is what `koqa eval` uses: kiwipiepy
    holds the GIL while it loads, which on a thread delays the engine's start by as long."""
    texts = _gold_texts(records)
    if process is None:
        return Background(_morphemes_of, texts)
    return process.submit(_morphemes_of, texts)


def quantities(text: str) -> list[tuple[str, str]]:
    """(number without separators, its unit) for each number in `text`: '1,200억 원으로' -> [('1200', '억원')]."""
    found: list[tuple[str, str]] = []
    tokens = _tokens(text)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.tag != "SN":
            i += 1
            continue
        unit, end, j = [], token.start + token.len, i + 1
        while j < len(tokens):
            nxt = tokens[j]
            touching = nxt.start == end
            if nxt.tag in UNIT_TAGS and nxt.form not in ",.":
                unit.append(nxt.form)
            elif nxt.tag.startswith("NN") and touching:
                unit.append(nxt.form)
            else:
                break
            end, j = nxt.start + nxt.len, j + 1
        found.append((token.form.replace(",", ""), "".join(unit)))
        i = j
    return found


def _contains(outer: list, inner: list) -> bool:
    rest = list(outer)
    for item in inner:
        if item not in rest:
            return False
        rest.remove(item)
    return True


def _only_function_morphemes(text: str) -> bool:
    tokens = _tokens(text)
    return bool(tokens) and all(t.tag.startswith(FUNCTION_TAGS) for t in tokens)


def classify_error(prediction: str, golds: Sequence[str], context: str) -> str:
    """The class (ERROR_CLASSES) of a prediction that is not an exact match of any gold answer,
    judged against the gold answer it scores best on."""
    if not golds:
        return "answered"
    if not normalize_answer(prediction):
        return "empty"
    gold = max(golds, key=lambda g: char_f1(prediction, g))
    gold_q, pred_q = quantities(gold), quantities(prediction)
    if gold_q and pred_q and not _contains(gold_q, pred_q) and not _contains(pred_q, gold_q):
        return "number/unit"
    p, g = (normalize_answer(x).replace(" ", "") for x in (prediction, gold))
    match = difflib.SequenceMatcher(None, p, g, autojunk=False).find_longest_match(0, len(p), 0, len(g))
    in_passage = _in_passage(prediction, context)
    if match.size and match.size >= min(2, len(p), len(g)):
        pieces = [p[: match.a], p[match.a + match.size :], g[: match.b], g[match.b + match.size :]]
        differs = "".join(pieces)
        if len(differs) <= FEW_CHARS or _only_function_morphemes(" ".join(x for x in pieces if x)):
            return "boundary"
        if in_passage:
            return "overlap"
    return "other span" if in_passage else "not in passage"


def _in_passage(prediction: str, context: str) -> bool:
    """Whether the passage holds the prediction, spaces aside."""
    return "".join(prediction.split()) in "".join(context.split())


def question_type(question: str) -> str:
    for token in _tokens(question):
        for name, forms in QUESTION_TYPES.items():
            if token.form in forms:
                return name
    return OTHER_QUESTION


def answer_type(answer: str) -> str:
    tokens = _tokens(answer)
    numbers = quantities(answer)
    if any(unit[:2] in DATE_UNITS or unit[:1] in DATE_UNITS for _, unit in numbers):
        return "date"
    if numbers or any(t.tag == "NR" for t in tokens):
        return "quantity"
    if any(t.tag == "NNP" for t in tokens):
        return "proper noun"
    if any(t.tag.startswith("NN") for t in tokens):
        return "noun phrase"
    return "other"


def analyse(records: Sequence, rows: Sequence[dict], analysed=None) -> dict:
    """Classify each row (adds `error`, `question_type`, `answer_type` to the rows of score_questions)
    and return the breakdowns for metrics.json: error-class counts, and F1/EM with intervals by
    question type and by answer type. `analysed`: what `analyse_in_background(records)` started."""
    by_id = {r.id: r for r in records}
    if analysed is not None:
        _ANALYSED.update(analysed.result())
    texts = _gold_texts(records)
    _analyse_batch(texts + [row["prediction"] for row in rows if row["em"] != 1.0])
    try:
        for row in rows:
            record = by_id[row["id"]]
            row["question_type"] = question_type(record.question)
            row["answer_type"] = answer_type(record.answers[0]) if record.answers else "no answer"
            wrong_answer = row["em"] != 1.0
            row["error"] = classify_error(row["prediction"], record.answers, record.context) if wrong_answer else ""
    finally:
        _ANALYSED.clear()
    wrong = [row for row in rows if row["error"]]
    return {
        "errors": {name: sum(row["error"] == name for row in wrong) for name in ERROR_CLASSES},
        "by_question_type": _groups(rows, "question_type", [*QUESTION_TYPES, OTHER_QUESTION]),
        "by_answer_type": _groups(rows, "answer_type", ANSWER_TYPES),
    }


def _groups(rows: Sequence[dict], key: str, order: Sequence[str]) -> dict:
    from koqa.eval.significance import bootstrap_interval

    out = {}
    for name in order:
        members = [row for row in rows if row[key] == name]
        if not members:
            continue
        f1, em = [row["f1"] for row in members], [row["em"] for row in members]
        out[name] = {
            "n": len(members),
            "f1": sum(f1) / len(f1),
            "f1_ci95": bootstrap_interval(f1),
            "exact_match": sum(em) / len(em),
            "exact_match_ci95": bootstrap_interval(em),
        }
    return out


def report_lines(analysis: dict, n: int) -> list[str]:
    """The error-analysis sections of report.md."""
    wrong = sum(analysis["errors"].values())
    lines = ["## Errors", "", f"{wrong} of {n} answers are not an exact match (errors.csv lists them):", ""]
    lines += ["| class | answers | share of errors |", "|---|---|---|"]
    for name, count in analysis["errors"].items():
        lines.append(f"| {name} | {count} | {count / wrong:.1%} |" if wrong else f"| {name} | 0 | - |")
    for title, key in (("question type", "by_question_type"), ("answer type", "by_answer_type")):
        lines += ["", f"## By {title}", "", f"| {title} | questions | F1 [95% interval] | EM [95% interval] |"]
        lines.append("|---|---|---|---|")
        for name, g in analysis[key].items():
            lines.append(
                f"| {name} | {g['n']} | {g['f1']:.4f} [{g['f1_ci95'][0]:.3f}, {g['f1_ci95'][1]:.3f}] | "
                f"{g['exact_match']:.4f} [{g['exact_match_ci95'][0]:.3f}, {g['exact_match_ci95'][1]:.3f}] |"
            )
    return lines + [""]
