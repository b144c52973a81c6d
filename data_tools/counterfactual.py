"""Counterfactual copies of training passages: each answer swapped for another answer of its kind.

A small training set is soon memorised: after two passes the model answers a training question
from the question alone, and learns little more about reading. A counterfactual copy of a passage
replaces every occurrence of each answer by a different training answer of the same kind
(`answer_kind`), in the passage and in the questions on it, and makes the replacement the gold
answer. In the copy, the question is the same but the answer is not, so only reading the passage
finds it. Kinds keep the copy grammatical enough: a number keeps its unit ("1998년" -> "2003년"),
a phrase keeps its word count, the part of speech of its last morpheme and whether its last
syllable ends in a consonant (which decides the particle after it: 이/가, 을/를, 은/는).

Only training answers are used as replacements, so no text from outside the training data enters.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from koqa.data_tools.morphemes import final_consonant, kiwi
from koqa.data_tools.records import QARecord

_NUMBER = re.compile(r"^[0-9][0-9,.]*\s*(\D{0,4})$")


def _final_consonant(char: str) -> str:
    """'b' when a Hangul syllable has a final consonant (받침), 'o' when it has none, 'x' otherwise."""
    jong = final_consonant(char)
    return "x" if jong is None else "b" if jong else "o"


# What a question asks for, from its question word or the noun it ends on; first match wins.
_ASKS = (
    ("when", re.compile(r"언제|연도|년도|몇 ?년|날짜|시기|몇 ?월|며칠")),
    ("who", re.compile(r"누구|누가|누군|인물|사람")),
    ("where", re.compile(r"어디|나라|국가|도시|지역|장소|곳은|곳이|곳의")),
    ("how many", re.compile(r"몇|얼마|나이|수는|수가")),
    ("name", re.compile(r"이름|명칭|제목")),
)


def asks_for(question: str) -> str:
    """The kind of thing a question asks for: when, who, where, how many, name, or other."""
    return next((kind for kind, pattern in _ASKS if pattern.search(question)), "other")


def answer_kind(answer: str, question: str = "") -> tuple:
    """What an answer may be swapped with: ("number", unit) for a number with an optional unit, else
    ("phrase", what the question asks for, the last morpheme's tag, the final consonant of the last
    syllable, words up to 3)."""
    match = _NUMBER.match(answer)
    if match:
        return ("number", match.group(1))
    tokens = kiwi().tokenize(answer)
    tag = tokens[-1].tag if tokens else ""
    return ("phrase", asks_for(question), str(tag), _final_consonant(answer[-1]), min(len(answer.split()), 3))


@dataclass
class CounterfactualCopies:
    records: list[QARecord]  # the copies; ids end in #cf1, #cf2...
    passages: int  # passage copies made
    kept_answer: dict[str, int]  # questions whose copy keeps the original answer, by reason
    left_out: dict[str, int]  # questions with no copy, by reason (their originals stay)


def _literal(text: str) -> str:
    """A pattern for the text that does not match inside a longer number ("2년" in "12년")."""
    pattern = re.escape(text)
    if text[:1].isdigit():
        pattern = r"(?<![0-9.,])" + pattern
    if text[-1:].isdigit():
        pattern += r"(?![0-9])"
    return pattern


def _swap(text: str, mapping: dict[str, str]) -> tuple[str, list[tuple[int, int, int, int]]]:
    """The text with every occurrence of the mapping's keys replaced (longest first, left to
    right), and the replaced spans as (old start, old end, new start, new end)."""
    pattern = re.compile("|".join(_literal(k) for k in sorted(mapping, key=len, reverse=True)))
    pieces, spans, last, shift = [], [], 0, 0
    for m in pattern.finditer(text):
        new = mapping[m.group(0)]
        pieces += [text[last : m.start()], new]
        spans.append((m.start(), m.end(), m.start() + shift, m.start() + shift + len(new)))
        shift += len(new) - (m.end() - m.start())
        last = m.end()
    pieces.append(text[last:])
    return "".join(pieces), spans


def _moved(offset: int, spans: list[tuple[int, int, int, int]]) -> int | None:
    """Where an offset of the old text lands in the new one; None inside a replaced span."""
    shift = 0
    for old_start, old_end, new_start, new_end in spans:
        if old_start == offset:
            return new_start
        if old_start < offset < old_end:
            return None
        if old_end <= offset:
            shift = new_end - old_end
    return offset + shift


def counterfactual_copies(records: Sequence[QARecord], copies: int, seed: int = 42) -> CounterfactualCopies:
    """`copies` counterfactual copies of every passage that has an answer to swap (see the module's
    docstring). Deterministic for a seed; each copy draws its replacements anew."""
    kinds: dict[str, tuple] = {}
    pools: dict[tuple, list[str]] = {}
    for r in records:
        if r.answers and r.answers[0] and r.answers[0] not in kinds:
            kinds[r.answers[0]] = kind = answer_kind(r.answers[0], r.question)
            pools.setdefault(kind, []).append(r.answers[0])
    by_context: dict[str, list[QARecord]] = {}
    for r in records:
        if r.answers and r.answers[0]:
            by_context.setdefault(r.context, []).append(r)

    rng = random.Random(seed)
    out, passages = [], 0
    kept: dict[str, int] = {}
    left_out: dict[str, int] = {}

    def count(table: dict[str, int], reason: str) -> None:
        table[reason] = table.get(reason, 0) + 1

    for copy in range(1, copies + 1):
        for context, group in by_context.items():
            answers = list(dict.fromkeys(r.answers[0] for r in group))
            # nested answers ("서울", "서울특별시") cannot both be swapped cleanly
            nested = {a for a in answers if any(a != b and (a in b or b in a) for b in answers)}
            mapping: dict[str, str] = {}
            for a in answers:
                if a in nested:
                    continue
                pool = pools[kinds[a]]
                for _ in range(20):  # a few random draws: the pools hold up to hundreds of answers
                    new = rng.choice(pool)
                    if (
                        new != a
                        and new not in context
                        and new not in mapping.values()
                        and not any(new in b or b in new for b in answers)
                    ):
                        mapping[a] = new
                        break
            if not mapping:
                for _ in group:
                    count(left_out, "no answer on the passage could be swapped")
                continue
            new_context, spans = _swap(context, mapping)
            made = 0
            for r in group:
                answer = r.answers[0]
                start = r.first_answer_start()
                new_answer = mapping.get(answer, answer)
                new_start = _moved(start, spans) if start >= 0 else None
                if new_start is None or new_context[new_start : new_start + len(new_answer)] != new_answer:
                    count(left_out, "the answer's place in the passage overlaps a swapped answer")
                    continue
                if answer not in mapping:
                    count(
                        kept,
                        "answer nested in another answer on the passage"
                        if answer in nested
                        else "no answer of the same kind to swap in",
                    )
                question = _swap(r.question, mapping)[0]
                out.append(
                    replace(
                        r,
                        id=f"{r.id}#cf{copy}",
                        context=new_context,
                        question=question,
                        answers=[new_answer],
                        answer_starts=[new_start],
                    )
                )
                made += 1
            passages += made > 0
    return CounterfactualCopies(out, passages, kept, left_out)
