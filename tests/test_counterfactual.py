"""Counterfactual passage copies: answers swapped consistently, gold offsets right, kinds kept."""

import re

from koqa.data_tools.counterfactual import answer_kind, asks_for, counterfactual_copies
from koqa.data_tools.records import QARecord


def record(rid, context, question, answer):
    return QARecord(id=rid, context=context, question=question, answers=[answer], answer_starts=[context.find(answer)])


SEOUL = "서울에서 1998년에 박람회가 열렸다. 1998년 박람회에는 12년 동안 준비한 전시가 나왔다. 개최는 김철수가 맡았다."
BUSAN = "부산에서 2003년에 영화제가 열렸다. 2003년 영화제의 위원장은 이영희였다."
DAEGU = (
    "대구에서 2011년에 육상 대회가 열렸다. 대회의 조직위원장은 박민수였다. "
    "대회는 2년 동안 준비했고, 경기장은 12년 전에 지어졌다."
)


def records():
    return [
        record("s-year", SEOUL, "박람회가 열린 해는 언제인가?", "1998년"),
        record("s-who", SEOUL, "박람회 개최를 맡은 사람은 누구인가?", "김철수"),
        record("b-year", BUSAN, "영화제가 열린 연도는?", "2003년"),
        record("b-who", BUSAN, "영화제의 위원장은 누구인가?", "이영희"),
        record("d-year", DAEGU, "육상 대회가 열린 연도는?", "2011년"),
        record("d-who", DAEGU, "대회의 조직위원장은 누구인가?", "박민수"),
        record("d-span", DAEGU, "대회를 준비한 기간은 몇 년인가?", "2년"),
    ]


def test_every_copy_has_its_new_answer_at_its_gold_offset_and_nowhere_the_old_one():
    result = counterfactual_copies(records(), copies=2, seed=1)
    originals = {r.id: r for r in records()}
    assert len(result.records) == 14 and result.passages == 6
    for copy in result.records:
        original = originals[copy.id.split("#")[0]]
        answer, start = copy.answers[0], copy.answer_starts[0]
        assert copy.context[start : start + len(answer)] == answer
        assert answer != original.answers[0]
        # every occurrence swapped ("2년" may stay inside "12년")
        assert not re.search("(?<![0-9])" + re.escape(original.answers[0]), copy.context)
        assert copy.question == original.question  # these questions name no answer


def test_a_number_keeps_its_unit_and_is_not_matched_inside_a_longer_number():
    result = counterfactual_copies(records(), copies=1, seed=3)
    seoul = next(r for r in result.records if r.id == "s-year#cf1")
    new_year = seoul.answers[0]
    assert new_year in ("2003년", "2011년")
    assert seoul.context.count(new_year) == 2
    daegu = next(r for r in result.records if r.id == "d-span#cf1")
    assert daegu.answers[0] != "2년" and "12년 전에" in daegu.context  # "2년" swapped, "12년" left whole
    who = next(r for r in result.records if r.id == "s-who#cf1")
    assert who.answers[0] in ("이영희", "박민수")  # a name for a name, never a year


def test_copies_are_deterministic_for_a_seed_and_differ_between_copies():
    first = counterfactual_copies(records(), copies=2, seed=7).records
    again = counterfactual_copies(records(), copies=2, seed=7).records
    assert [(r.id, r.answers, r.context) for r in first] == [(r.id, r.answers, r.context) for r in again]
    other = counterfactual_copies(records(), copies=2, seed=8).records
    assert [r.answers for r in first] != [r.answers for r in other]


def test_an_answer_named_in_another_question_is_swapped_there_too():
    context = "이순신은 1592년 한산도에서 싸웠다. 이 싸움에서 이순신은 학익진을 썼다."
    others = [
        record(
            "x", "원균은 1597년 칠천량에서 싸웠다. 그 뒤 거제도로 물러났다.", "원균이 물러난 곳은 어디인가?", "거제도"
        ),
        record(
            "y", "원균은 1597년 칠천량에서 싸웠다. 그 뒤 거제도로 물러났다.", "원균이 싸운 해는 언제인가?", "1597년"
        ),
    ]
    items = [
        record("a", context, "이순신이 1592년에 싸운 곳은 어디인가?", "한산도"),
        record("b", context, "한산도에서 싸운 해는 언제인가?", "1592년"),
    ]
    result = counterfactual_copies(items + others, copies=1, seed=0)
    by_id = {r.id: r for r in result.records}
    year = by_id["b#cf1"].answers[0]
    place = by_id["a#cf1"].answers[0]
    assert year == "1597년" and place == "거제도"
    assert by_id["a#cf1"].question == f"이순신이 {year}에 싸운 곳은 어디인가?"
    assert by_id["b#cf1"].question == f"{place}에서 싸운 해는 언제인가?"


def test_nested_answers_keep_their_text_and_are_counted():
    context = "대한민국의 수도는 서울특별시이다. 1948년부터 서울에는 정부가 있었다."
    items = [
        record("a", context, "대한민국의 수도는 어디인가?", "서울특별시"),
        record("b", context, "정부가 있는 곳은 어디인가?", "서울"),
        record("d", context, "정부가 들어선 해는 언제인가?", "1948년"),
        record("c", "일본의 수도는 1869년부터 도쿄이다.", "도쿄가 수도가 된 해는 언제인가?", "1869년"),
    ]
    result = counterfactual_copies(items, copies=1, seed=0)
    by_id = {r.id: r for r in result.records}
    assert by_id["d#cf1"].answers == ["1869년"] and by_id["c#cf1"].answers == ["1948년"]
    assert by_id["a#cf1"].answers == ["서울특별시"] and by_id["b#cf1"].answers == ["서울"]
    assert by_id["b#cf1"].context == "대한민국의 수도는 서울특별시이다. 1869년부터 서울에는 정부가 있었다."
    assert result.kept_answer == {"answer nested in another answer on the passage": 2}
    assert result.left_out == {}


def test_kinds_separate_final_consonants_units_and_what_the_question_asks():
    assert answer_kind("1998년") == ("number", "년")
    assert answer_kind("26,000명") == ("number", "명")
    assert answer_kind("서울", "어디인가?") != answer_kind("부산", "누구인가?")
    assert answer_kind("서울", "어디인가?")[3] == "b" and answer_kind("대구", "어디인가?")[3] == "o"
    assert asks_for("영화제가 열린 연도는?") == "when"
    assert asks_for("위원장은 누구인가?") == "who"
    assert asks_for("개최국은 어느 나라인가?") == "where"
    assert asks_for("참석자 수는?") == "how many"
