"""Synthetic questions from the training passages: a phrase of a sentence becomes a question word.

A small training set is soon memorised: by the third pass the model answers a training question
from the question alone. The training passages hold many more answerable phrases than the questions
asked about them. This module turns a sentence of a passage into a question about one of its noun
phrases, with kiwipiepy's morphemes:

    로널드 레이건 대통령 밑에서 국무장관을 지냈다.  ->  로널드 레이건 대통령 밑에서 무엇을 지냈는가?
                                                        (answer: 국무장관)

- The answer is a run of nouns, numbers or foreign words (up to 4 words) right before a particle.
- It becomes 무엇 (the particle takes its form after a consonant: 을, 이, 은, 과, 으로), 언제 for a
  date (the particle 에 dropped) or 몇 + unit for a counted number ("2번째로" -> "몇 번째로").
- The clause before the answer's clause is left out (cut after the last ", " that ends a clause), and
  the sentence's ending becomes a question ("지냈다." -> "지냈는가?", "정치인이다." -> "정치인인가?").

Such questions share most of their words with the passage, unlike real ones, so they teach finding
the sentence and the phrase, not paraphrase. Only the training passages are read.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from koqa.data_tools.morphemes import final_consonant, kiwi
from koqa.data_tools.records import QARecord

_NOUNISH = {"NNG", "NNP", "NNB", "NR", "SN", "SL", "SH", "XSN", "XPN"}
_ENTITY = {"NNP", "SN", "SL", "SH"}
_PARTICLES = {"JKS", "JKO", "JKB", "JKG", "JC"}  # not JX: "무엇은", "무엇도" read badly
_DATE_UNITS = {"년", "월", "일", "년대", "세기"}
# particle forms that change after a consonant-final word (무엇, or a unit such as 명)
_AFTER_CONSONANT = {"가": "이", "를": "을", "는": "은", "와": "과", "로": "으로", "랑": "이랑", "나": "이나"}
_AFTER_VOWEL = {v: k for k, v in _AFTER_CONSONANT.items()}
# nouns that end no answer: dependent nouns ("것", "때") and places relative to something ("밑", "사이")
_NOT_ANSWERS = {
    "것",
    "수",
    "때",
    "등",
    "중",
    "뒤",
    "후",
    "전",
    "데",
    "바",
    "적",
    "듯",
    "채",
    "뿐",
    "측",
    "밑",
    "위",
    "아래",
    "앞",
    "안",
    "속",
    "밖",
    "옆",
    "사이",
    "이후",
    "이전",
    "당시",
    "동안",
    "경우",
}


MAX_QUESTION_CHARS = 70  # real KorQuAD questions are shorter than most sentences


@dataclass
class SyntheticQuestions:
    records: list[QARecord]  # ids are the passage's first question id + "#syn1", "#syn2"...
    passages: int  # passages that got at least one question
    candidates: int  # questions that could be made, before the cap per passage


# final consonants (their index from final_consonant) that decide a particle's form or a verb ending
_NIEUN, _RIEUL, _BIEUP_SIOT, _SSANG_SIOT = 4, 8, 18, 20


def _particle_after(word: str, particle: str) -> str:
    """The particle's form after `word` (이/가, 을/를, 은/는, 과/와, 으로/로...)."""
    jong = final_consonant(word[-1]) if word else None
    if jong is None:
        return particle
    if jong:
        # 로 stays 로 after ㄹ: a unit like "킬로미터" ends in a vowel, "달" in ㄹ
        if particle == "로" and jong == _RIEUL:
            return particle
        return _AFTER_CONSONANT.get(particle, particle)
    return _AFTER_VOWEL.get(particle, particle)


def _question_ending(text: str) -> str | None:
    """A declarative sentence without its final punctuation, as a question; None when its ending is
    not one of the common written endings."""
    if text.endswith("이다"):
        return text[:-2] + "인가?"
    if not text.endswith("다") or len(text) < 2:
        return None
    before = text[-2]
    jong = final_consonant(before)
    if jong in (_SSANG_SIOT, _BIEUP_SIOT):  # 했다, 있다; 없다
        return text[:-1] + "는가?"
    if jong == _NIEUN:  # 한다, 된다 -> 하는가, 되는가
        return text[:-2] + chr(ord(before) - _NIEUN) + "는가?"
    return None


def _answers_in(sentence: str) -> list[tuple[int, int, str, int]]:
    """(answer start, answer end, question word with particle, particle end) for each noun run
    directly followed by a particle, offsets in the sentence."""
    tokens = kiwi().tokenize(sentence)
    found = []
    for i, tok in enumerate(tokens):
        if tok.tag.split("-")[0] not in _PARTICLES or i == 0:
            continue
        j = i
        while j > 0 and tokens[j - 1].tag in _NOUNISH:
            prev, nxt = tokens[j - 1], tokens[j]
            gap = sentence[prev.start + prev.len : nxt.start]
            if gap not in ("", " "):
                break
            j -= 1
        run = tokens[j:i]
        if not run or sentence[run[0].start - 1 : run[0].start] not in ("", " ", "(", "\u201c", "'", '"'):
            continue  # starts inside a word whose first part is not a noun
        start, end = run[0].start, run[-1].start + run[-1].len
        if end != tok.start:
            continue  # a space between the noun and its particle: not a particle
        answer = sentence[start:end]
        # a number phrase starts at its first number; a noun phrase after one ("1950년 파리") is the
        # words after the last number; at most 4 words, the last ones
        words = answer.split(" ")
        numbered = [k for k, word in enumerate(words) if any(c.isdigit() for c in word)]
        if numbered:
            words = words[numbered[-1] + 1 :] if numbered[-1] < len(words) - 1 else words[numbered[0] :]
        words = words[-4:]
        if len(words) < len(answer.split(" ")):
            start = end - len(" ".join(words))
            run = [t for t in run if t.start + t.len > start]
            start = max(start, run[0].start)
            answer = sentence[start:end]
        tags = [t.tag for t in run]
        particle = sentence[tok.start : tok.start + tok.len]
        if len(answer) < 2 or run[-1].form in _NOT_ANSWERS or tags[-1] == "NNB" and "SN" not in tags:
            continue
        if j > 0 and (tokens[j - 1].tag == "MM" or tokens[j - 1].tag == "NP"):
            continue  # "이 무엇은", "그의 무엇": the question would not say which
        if "SN" in tags and run[0].tag != "SN":
            continue  # "해 5월 스위스": a date inside a noun run is not one phrase
        if "SN" in tags:
            units = [t.form for t in run if t.tag != "SN"]
            if units and units[-1] in _DATE_UNITS and all(t.tag == "SN" or t.form in _DATE_UNITS for t in run):
                if particle not in ("에", "부터", "까지", "의"):
                    continue
                wh = "언제" + ("" if particle == "에" else particle)
            elif len(run) >= 2 and run[1].tag in ("NNB", "NNG") and run[1].start == run[0].start + run[0].len:
                unit = sentence[run[1].start : end]
                if " " in unit or len(run) > 3:
                    continue
                wh = "몇 " + unit + _particle_after(unit, particle)
            else:
                continue
        elif tags[0] == "XSN" or not (set(tags) & (_ENTITY | {"NNG"})):
            continue
        else:
            if particle == "의":
                continue  # "무엇의" rarely reads as a question
            wh = "무엇" + _particle_after("무엇", particle)
        found.append((start, end, wh, tok.start + tok.len))
    return found


def _clause_start(sentence: str, before: int) -> int:
    """Where the clause holding offset `before` starts: after the last ", " before it that follows a
    verb ending (…며, …고, …지만, …데), else 0."""
    cut = 0
    for m in re.finditer(r"(며|고|지만|는데|으나|면서|어|아|여|해), ", sentence[:before]):
        cut = m.end()
    return cut


def questions_from_sentence(sentence: str) -> list[tuple[str, str, int]]:
    """(question, answer, answer start in the sentence) for every phrase of the sentence that can be
    asked about."""
    body = sentence.rstrip()
    if not body.endswith("."):
        return []
    body = body[:-1].rstrip()
    out = []
    for start, end, wh, p_end in _answers_in(body):
        cut = _clause_start(body, start)
        question = _question_ending(body[cut:start] + wh + body[p_end:])
        answer = body[start:end]
        if question is None or answer in question or not 8 <= len(question) <= MAX_QUESTION_CHARS:
            continue
        out.append((question, answer, start))
    return out


def synthetic_questions(records: Sequence[QARecord], per_passage: int, seed: int = 42) -> SyntheticQuestions:
    """Up to `per_passage` synthetic questions on each passage of `records`, at most one a sentence,
    none whose answer is a real question's answer on that passage. Deterministic for a seed."""
    if per_passage < 0:
        raise ValueError(f"per_passage must be 0 or more, got {per_passage}")
    by_context: dict[str, list[QARecord]] = {}
    for r in records:
        by_context.setdefault(r.context, []).append(r)
    rng = random.Random(seed)
    out, passages, candidates = [], 0, 0
    for context, group in by_context.items():
        taken = {a for r in group for a in r.answers}
        per_sentence = []
        for sent in kiwi().split_into_sents(context):
            made = [
                (q, a, sent.start + s)
                for q, a, s in questions_from_sentence(context[sent.start : sent.end])
                if a not in taken
            ]
            made = [m for m in made if context[m[2] : m[2] + len(m[1])] == m[1]]
            if made:
                per_sentence.append(made)
        candidates += sum(len(m) for m in per_sentence)
        rng.shuffle(per_sentence)
        chosen = []
        for made in per_sentence:
            if len(chosen) == per_passage:
                break
            question, answer, start = rng.choice(made)
            if answer in taken:
                continue
            taken.add(answer)
            chosen.append(
                QARecord(
                    id=f"{group[0].id}#syn{len(chosen) + 1}",
                    context=context,
                    question=question,
                    answers=[answer],
                    answer_starts=[start],
                    source=group[0].source,
                    row=group[0].row,
                    title=group[0].title,
                )
            )
        out += chosen
        passages += bool(chosen)
    return SyntheticQuestions(out, passages, candidates)
