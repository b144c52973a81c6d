"""Error analysis (koqa.eval.error_analysis) on hand-made Korean cases, several chosen where the obvious rule
("differs by a character or two: a boundary error"; "shares characters: an overlap"; "a span of the
passage: another span") gives the wrong class; and the report files it adds to an evaluation."""

import csv
import json

import pytest

from koqa.data_tools.morphemes import KiwiProcess
from koqa.data_tools.records import QARecord
from koqa.eval.error_analysis import (
    analyse,
    analyse_in_background,
    answer_type,
    classify_error,
    quantities,
    question_type,
)

CONTEXT = (
    "한빛전자는 2024년 3분기 매출이 1,200억 원으로 전년보다 12% 늘었다고 밝혔다. 물가 상승률은 2.4%였다. "
    "서울에서 열린 설명회에서 김민준 대표는 반도체 소재 판매가 늘었다고 설명했다."
)


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("", "1,200억 원", "empty"),
        ("  ", "1,200억 원", "empty"),
        # one character apart, but another number: not a boundary error
        ("1,300억 원", "1,200억 원", "number/unit"),
        # a substring of the gold, but the unit is gone: not a boundary error
        ("1,200억", "1,200억 원", "number/unit"),
        ("2024", "2024년", "number/unit"),
        # a span of the passage, but a wrong figure: a number error, not "another span"
        ("2.4%", "12%", "number/unit"),
        # the same quantity with a particle: a boundary error
        ("1,200억 원으로", "1,200억 원", "boundary"),
        ("서울에서", "서울", "boundary"),
        ("김민준 대표", "김민준", "boundary"),
        # an extra whole quantity is a wider span, not a wrong number
        ("2024년 3분기", "3분기", "overlap"),
        ("반도체 소재 판매가 늘었다고", "반도체 소재", "overlap"),
        ("반도체 소재", "김민준", "other span"),
        # shares 전자 with the gold, but is no span of the passage: not an overlap
        ("삼성전자", "한빛전자", "not in passage"),
        ("이순신", "김민준", "not in passage"),
    ],
)
def test_error_classes_of_hand_made_cases(prediction, gold, expected):
    assert classify_error(prediction, [gold], CONTEXT) == expected


def test_the_gold_answer_scored_best_is_the_one_judged():
    # against 서울 the prediction is a boundary error; against 김민준 it would be another span
    assert classify_error("서울에서", ["김민준", "서울"], CONTEXT) == "boundary"


def test_quantities_read_number_and_unit_and_stop_at_particles():
    assert quantities("1,200억 원으로") == [("1200", "억원")]
    assert quantities("25.31포인트 오른 2,650.12에") == [("25.31", "포인트"), ("2650.12", "")]
    assert quantities("반도체 소재") == []


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("누리바이오의 대표는 누구인가?", "누구"),
        ("누가 공장을 짓는다고 말했나?", "누구"),  # 누가 is 누구 + 가
        ("공장은 언제 완공되나?", "언제"),
        ("공장을 어디에 짓나?", "어디"),
        ("한빛전자의 3분기 매출은 얼마인가?", "얼마/몇"),
        ("취업자는 몇 명 늘었나?", "얼마/몇"),
        ("회사는 무엇을 팔았나?", "무엇"),
        ("어떤 업종에서 취업자가 늘었나?", "무엇"),  # 어떤 asks which, not how
        ("매출은 왜 늘었나?", "왜"),
        ("회사는 증가를 어떻게 설명했나?", "어떻게"),
        ("취업자가 가장 많이 늘어난 업종은?", "기타"),
    ],
)
def test_question_types_from_wh_word_morphemes(question, expected):
    assert question_type(question) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1592년 4월 13일", "date"),
        ("10월", "date"),
        ("1,200억 원", "quantity"),
        ("3.25%", "quantity"),
        ("세종대왕", "proper noun"),
        ("반도체 소재", "noun phrase"),
        ("빠르게", "other"),
    ],
)
def test_answer_types(answer, expected):
    assert answer_type(answer) == expected


def test_analysis_counts_every_wrong_answer_once_and_groups_with_intervals():
    records = [
        QARecord(id="a", context=CONTEXT, question="매출은 얼마인가?", answers=["1,200억 원"]),
        QARecord(id="b", context=CONTEXT, question="대표는 누구인가?", answers=["김민준"]),
        QARecord(id="c", context=CONTEXT, question="대표는 누구인가?", answers=["김민준"]),
        QARecord(id="d", context=CONTEXT, question="설명회는 어디에서 열렸나?", answers=["서울"]),
        QARecord(id="e", context=CONTEXT, question="주가는 얼마인가?", unanswerable=True),
    ]
    rows = [
        {"id": "a", "prediction": "1,300억 원", "f1": 0.8, "em": 0.0},
        {"id": "b", "prediction": "김민준", "f1": 1.0, "em": 1.0},
        {"id": "c", "prediction": "", "f1": 0.0, "em": 0.0},
        {"id": "d", "prediction": "서울에서", "f1": 0.8, "em": 0.0},
        {"id": "e", "prediction": "1,200억 원", "f1": 0.0, "em": 0.0},
    ]
    # the morphemes of questions and gold answers analysed beforehand (as while an engine starts) change nothing
    early = [dict(row) for row in rows]
    assert analyse(records, early, analysed=analyse_in_background(records)) == analyse(records, rows)
    assert early == rows
    # and so does analysing them in a kiwipiepy process of their own, as koqa eval does
    in_process = [dict(row) for row in rows]
    with KiwiProcess() as process:
        assert analyse(records, in_process, analysed=analyse_in_background(records, process)) == analyse(records, rows)
    assert in_process == rows
    analysis = analyse(records, rows)
    assert analysis["errors"] == {
        "empty": 1,
        "answered": 1,
        "number/unit": 1,
        "boundary": 1,
        "overlap": 0,
        "other span": 0,
        "not in passage": 0,
    }
    who = analysis["by_question_type"]["누구"]
    assert who["n"] == 2 and who["f1"] == 0.5 and who["exact_match"] == 0.5
    assert who["f1_ci95"][0] <= 0.5 <= who["f1_ci95"][1]
    assert set(analysis["by_question_type"]) == {"누구", "얼마/몇", "어디"}  # empty groups are left out
    assert [row["error"] for row in rows] == ["number/unit", "", "empty", "boundary", "answered"]
    assert analysis["by_answer_type"]["no answer"]["n"] == 1


def test_an_evaluation_writes_errors_csv_and_the_breakdowns(tmp_path, dacon_train):
    from koqa.eval.eval_config import EvalConfig
    from koqa.eval.evaluate import evaluate

    class Echo:  # answers each question with its first gold answer's first word
        name = "echo"
        streams = False

        def __init__(self, answers):
            self.answers = answers

        def generate(self, prompts, params):
            return [self.answers.pop(0) for _ in prompts]

    rows = list(csv.DictReader(open(dacon_train, encoding="utf-8")))
    answers = [r["answer"].split()[0] for r in rows]
    out = tmp_path / "ev"
    evaluate(EvalConfig(data=str(dacon_train), out=str(out), backend="hf"), generator=Echo(list(answers)))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    wrong = [r for r, a in zip(rows, answers) if a != r["answer"]]
    errors = list(csv.DictReader(open(out / "errors.csv", encoding="utf-8")))
    assert [e["id"] for e in errors] == [r["id"] for r in wrong] and wrong
    assert sum(metrics["errors"].values()) == len(wrong)
    assert sum(g["n"] for g in metrics["by_question_type"].values()) == len(rows)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Errors" in report and "## By question type" in report and "## By answer type" in report
