"""Synthetic questions from passages: the phrase becomes a question word, the particle and the
ending follow Korean grammar, offsets point at the answer, bad candidates are left out."""

import pytest

from koqa.data_tools.records import QARecord
from koqa.data_tools.synthetic_questions import questions_from_sentence, synthetic_questions


@pytest.mark.parametrize(
    "sentence, question, answer",
    [
        # object particle after 무엇 (consonant-final): 을; past tense: 지냈다 -> 지냈는가
        ("로널드 레이건 대통령 밑에서 국무장관을 지냈다.", "로널드 레이건 대통령 밑에서 무엇을 지냈는가?", "국무장관"),
        # a date becomes 언제 and its 에 goes
        ("이 학교는 1946년에 문을 열었다.", "이 학교는 언제 문을 열었는가?", "1946년"),
        ("2013년 6월에 협약을 체결하였다.", "언제 협약을 체결하였는가?", "2013년 6월"),
        # a counted number becomes 몇 + its unit; 명 ends in a consonant, so 이 stays 이
        ("그 회의에는 12명이 참석했다.", "그 회의에는 몇 명이 참석했는가?", "12명"),
        (
            "그는 미국 군대에서 2번째로 높은 직위에 올랐다.",
            "그는 미국 군대에서 몇 번째로 높은 직위에 올랐는가?",
            "2번째",
        ),
        # copula ending: 정치인이다 -> 정치인인가
        ("그는 미국의 국무 장관을 지낸 정치인이다.", "그는 미국의 무엇을 지낸 정치인인가?", "국무 장관"),
        # 로 after a vowel becomes 으로 after 무엇; the year before the noun is not part of the answer
        ("그는 1950년 파리로 떠났다.", "그는 1950년 무엇으로 떠났는가?", "파리"),
        # present tense in ㄴ: 입사한다 -> 입사하는가
        ("김철수는 서울에서 태어나 한국은행에 입사한다.", "김철수는 서울에서 태어나 무엇에 입사하는가?", "한국은행"),
        # the clause before ", " is left out
        (
            "공사는 2년 동안 진행되었으며, 다리는 시민들의 기부로 완공되었다.",
            "다리는 시민들의 무엇으로 완공되었는가?",
            "기부",
        ),
    ],
)
def test_a_phrase_becomes_a_question_word(sentence, question, answer):
    made = questions_from_sentence(sentence)
    assert (question, answer) in [(q, a) for q, a, _ in made]
    start = next(s for q, a, s in made if (q, a) == (question, answer))
    assert sentence[start : start + len(answer)] == answer


@pytest.mark.parametrize(
    "sentence",
    [
        "이 책을 읽었다.",  # a determiner before the noun: the question would not say which
        "그는 책을 읽었다",  # no final period: a title or a fragment
        "그는 책을 좋아해요.",  # not a written declarative ending
        "그는 그것을 했다.",  # a pronoun and a dependent noun, no phrase worth asking
    ],
)
def test_no_question_where_the_sentence_gives_none(sentence):
    assert questions_from_sentence(sentence) == []


def test_relative_place_nouns_are_not_answers():
    made = questions_from_sentence("로널드 레이건 대통령 밑에서 국무장관을 지냈다.")
    assert [a for _, a, _ in made] == ["국무장관"]  # not "로널드 레이건 대통령 밑"


PASSAGE = (
    "김철수는 서울에서 태어나 한국은행에 입사한다. 그 회의에는 12명이 참석했다. "
    "이 학교는 1946년에 문을 열었다. 그는 1950년 파리로 떠났다."
)
OTHER = "부산에서 2003년에 영화제가 열렸다. 영화제의 위원장은 이영희였다."


def records():
    return [
        QARecord(id="q1", context=PASSAGE, question="김철수가 태어난 곳은?", answers=["서울"], answer_starts=[5]),
        QARecord(
            id="q2",
            context=PASSAGE,
            question="학교가 문을 연 해는?",
            answers=["1946년"],
            answer_starts=[PASSAGE.find("1946년")],
        ),
        QARecord(
            id="o1",
            context=OTHER,
            question="영화제의 위원장은?",
            answers=["이영희"],
            answer_starts=[OTHER.find("이영희")],
        ),
    ]


def test_passage_questions_point_at_their_answers_and_skip_real_answers():
    result = synthetic_questions(records(), per_passage=10, seed=0)
    on_passage = [r for r in result.records if r.context == PASSAGE]
    # one a sentence; "서울" and "1946년" are real answers, so those sentences offer one other phrase or none
    assert len(on_passage) == 3
    answers = {r.answers[0] for r in on_passage}
    assert answers <= {"한국은행", "12명", "파리"} and not answers & {"서울", "1946년"}
    for r in result.records:
        start = r.answer_starts[0]
        assert r.context[start : start + len(r.answers[0])] == r.answers[0]
        assert r.answers[0] not in r.question and r.question.endswith("?")
    assert [r.id for r in on_passage] == ["q1#syn1", "q1#syn2", "q1#syn3"]
    assert result.passages == 2 and result.candidates >= len(result.records)


def test_the_cap_a_passage_and_the_seed():
    capped = synthetic_questions(records(), per_passage=1, seed=0)
    assert sum(r.context == PASSAGE for r in capped.records) == 1
    assert synthetic_questions(records(), per_passage=0).records == []
    first = synthetic_questions(records(), per_passage=2, seed=3).records
    assert [(r.id, r.question) for r in first] == [
        (r.id, r.question) for r in synthetic_questions(records(), 2, 3).records
    ]
    with pytest.raises(ValueError, match="0 or more"):
        synthetic_questions(records(), per_passage=-1)
