import json

import pytest

from conftest import DACON_ROWS, write_csv
from koqa.data_tools.predictions import read_predictions
from koqa.data_tools.readers import read_dacon_csv, read_records, read_squad_json
from koqa.errors import KoqaError

HEADER = ["id", "context", "question", "answer"]


def test_dacon_train_and_test(dacon_train, dacon_test):
    train = read_dacon_csv(dacon_train)
    assert train.has_answers and len(train.records) == len(DACON_ROWS)
    first = train.records[0]
    assert first.answers == ["1,200억 원"] and first.context[first.answer_starts[0] :].startswith("1,200억 원")
    assert first.row == "2"  # CSV line number, header is line 1
    test = read_dacon_csv(dacon_test)
    assert not test.has_answers and test.records[0].answers == []


def test_bom_prefixed_utf8_is_accepted(tmp_path):
    path = write_csv(tmp_path / "bom.csv", HEADER, DACON_ROWS[:2], encoding="utf-8-sig")
    assert [r.id for r in read_dacon_csv(path).records] == ["TRAIN_000", "TRAIN_001"]


def test_a_cp949_file_is_detected_with_a_notice_and_forced_encodings_are_kept(tmp_path, caplog):
    path = write_csv(tmp_path / "euckr.csv", HEADER, DACON_ROWS, encoding="cp949")
    with caplog.at_level("WARNING"):
        records = read_dacon_csv(path).records
    assert [r.context for r in records] == [r[1] for r in DACON_ROWS]
    assert [m for m in caplog.messages if "euckr.csv is not UTF-8: read as cp949 (detected" in m]
    assert len(read_dacon_csv(path, encoding="cp949").records) == len(DACON_ROWS)
    with pytest.raises(KoqaError, match=r"euckr\.csv: row 2: .*not valid utf-8.*--encoding auto"):
        read_dacon_csv(path, encoding="utf-8")


def test_a_file_no_korean_encoding_explains_stays_an_error(tmp_path):
    path = write_csv(
        tmp_path / "latin.csv", HEADER, [("a", "Olé, café crème à Paris", "Où?", "Paris")], encoding="latin-1"
    )
    with pytest.raises(KoqaError, match="latin.csv: row 2: bytes at offset .* are not valid UTF-8, nor CP949/EUC-KR"):
        read_dacon_csv(path)


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(KoqaError, match="empty.csv: file is empty"):
        read_dacon_csv(empty)
    header_only = write_csv(tmp_path / "header.csv", HEADER, [])
    with pytest.raises(KoqaError, match="header.csv: has a header but no rows"):
        read_dacon_csv(header_only)


def test_wrong_delimiter(tmp_path):
    path = write_csv(tmp_path / "tabs.csv", HEADER, DACON_ROWS[:1], delimiter="\t")
    with pytest.raises(KoqaError, match="tabs.csv: row 1: the header is one column: wrong delimiter"):
        read_dacon_csv(path)


def test_missing_column_is_named(tmp_path):
    path = write_csv(tmp_path / "nocontext.csv", ["id", "question", "answer"], [("a", "q", "x")])
    with pytest.raises(KoqaError, match="nocontext.csv: row 1: field 'context': missing column"):
        read_dacon_csv(path)


@pytest.mark.parametrize("bad_value", ["", "   ", "NaN", "nan"])
def test_empty_whitespace_and_nan_fields_fail_with_row_and_field(tmp_path, bad_value):
    rows = [DACON_ROWS[0], ("TRAIN_X", DACON_ROWS[1][1], bad_value, "반도체 소재")]
    path = write_csv(tmp_path / "nan.csv", HEADER, rows)
    with pytest.raises(KoqaError, match="nan.csv: row 3: field 'question': is empty, whitespace-only or NaN"):
        read_dacon_csv(path)


def test_skip_mode_reports_every_excluded_row(tmp_path):
    rows = [
        DACON_ROWS[0],
        ("TRAIN_X", DACON_ROWS[1][1], " ", "x"),
        DACON_ROWS[0],
        ("TRAIN_Y", DACON_ROWS[2][1], "질문?", "없는 답"),
    ]
    path = write_csv(tmp_path / "mixed.csv", HEADER, rows)
    result = read_dacon_csv(path, on_bad_row="skip")
    assert [r.id for r in result.records] == ["TRAIN_000"]
    reasons = {(b.row, b.field): b.reason for b in result.bad_rows}
    assert set(reasons) == {("3", "question"), ("4", "id"), ("5", "answer")}
    assert "duplicate id 'TRAIN_000' (first seen on row 2)" in reasons[("4", "id")]
    assert "does not occur in the context" in reasons[("5", "answer")]


def test_duplicate_id_fails_by_default(tmp_path):
    path = write_csv(tmp_path / "dup.csv", HEADER, [DACON_ROWS[0], DACON_ROWS[0]])
    with pytest.raises(KoqaError, match="dup.csv: row 3: field 'id': duplicate id"):
        read_dacon_csv(path)


def test_rows_are_named_by_the_line_they_start_on(tmp_path):
    # Dacon contexts may hold newlines inside quotes: the bad row is the one starting on line 7
    path = tmp_path / "train.csv"
    path.write_text(
        'id,context,question,answer\nA1,"첫 줄\n둘째 줄\n셋째 줄에 서울",어디?,서울\n'
        'B1,"대구\n",어디?,대구\nA2,"부산은\n항구",항구?,인천\n',
        encoding="utf-8",
    )
    result = read_dacon_csv(path, on_bad_row="skip")
    assert [r.row for r in result.records] == ["2", "5"]
    assert [(b.row, b.field) for b in result.bad_rows] == [("7", "answer")]
    with pytest.raises(KoqaError, match="train.csv: row 7: field 'answer'"):
        read_dacon_csv(path)


def test_list_like_answers_are_parsed_without_eval(tmp_path):
    context = "서울과 부산은 큰 도시다."
    rows = [("a", context, "큰 도시는?", "['서울', '부산']"), ("b", context, "무엇?", "__import__('os')")]
    result = read_dacon_csv(write_csv(tmp_path / "lists.csv", HEADER, rows), on_bad_row="skip")
    assert result.records[0].answers == ["서울", "부산"]
    # not a list of strings: read as plain text (and rejected because it is not in the context)
    assert result.bad_rows[0].field == "answer"


def test_very_long_context_is_accepted(tmp_path):
    context = "가" * 100_000 + " 정답은 서울이다."
    result = read_dacon_csv(write_csv(tmp_path / "long.csv", HEADER, [("a", context, "정답은?", "서울")]))
    assert len(result.records[0].context) > 100_000


def test_real_korquad_dev_set(korquad):
    result = read_squad_json(korquad)
    assert len(result.records) == 5774 and not result.bad_rows
    assert result.records[0].row.startswith("data[0].paragraphs[0].qas[0]")
    r = result.records[0]
    assert r.context[r.answer_starts[0] : r.answer_starts[0] + len(r.answers[0])] == r.answers[0]


@pytest.mark.parametrize(
    "doc, message",
    [
        ([1, 2], "expected an object with a list 'data'"),
        ({"version": "1"}, "expected an object with a list 'data'"),
        ({"data": [{"title": "x"}]}, r"row data\[0\]: field 'paragraphs'"),
        ({"data": [{"paragraphs": [{"context": "c"}]}]}, r"data\[0\]\.paragraphs\[0\]: field 'qas'"),
        (
            {
                "data": [
                    {"paragraphs": [{"context": "서울", "qas": [{"id": "q", "question": "?", "answers": "서울"}]}]}
                ]
            },
            "field 'answers': not SQuAD JSON",
        ),
        (
            {"data": [{"paragraphs": [{"context": "서울", "qas": [{"id": "q", "question": 12, "answers": []}]}]}]},
            r"qas\[0\] \(id q\): field 'question': is a JSON int, not text",
        ),
    ],
)
def test_squad_with_the_wrong_shape(tmp_path, doc, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(KoqaError, match=message):
        read_squad_json(path)


def test_squad_answer_not_in_context(tmp_path):
    doc = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "서울은 수도다.",
                        "qas": [{"id": "q1", "question": "수도는?", "answers": [{"text": "부산", "answer_start": 0}]}],
                    }
                ]
            }
        ]
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(KoqaError, match=r"qas\[0\] \(id q1\): field 'answers': answer '부산' does not occur"):
        read_squad_json(path)
    assert read_squad_json(path, on_bad_row="skip").bad_rows[0].row.endswith("(id q1)")


def test_unknown_extension_and_format(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(KoqaError, match="cannot tell the format"):
        read_records(path)


def test_predictions_csv_and_json(tmp_path):
    csv_path = write_csv(tmp_path / "p.csv", ["id", "prediction"], [("a", "서울"), ("b", "부산")])
    assert read_predictions(csv_path) == {"a": "서울", "b": "부산"}
    json_path = tmp_path / "p.json"
    json_path.write_text(json.dumps({"a": "서울"}, ensure_ascii=False), encoding="utf-8")
    assert read_predictions(json_path) == {"a": "서울"}
    dup = write_csv(tmp_path / "d.csv", ["id", "answer"], [("a", "x"), ("a", "y")])
    with pytest.raises(KoqaError, match=r"d.csv: row 3: field 'id': duplicate id 'a' \(also row 2\)"):
        read_predictions(dup)
    json_path.write_text('["서울"]', encoding="utf-8")
    with pytest.raises(KoqaError, match="p.json: expected a JSON object {id: answer}, found a list"):
        read_predictions(json_path)


def _squad_with_starts(path, starts, answers=("서울",)):
    context = "서울은 크다. 그래서 서울에 산다. 서울!"  # '서울' at 0, 12 and 20
    qas = [
        {"id": "q1", "question": "어디?", "answers": [{"text": a, "answer_start": s} for a, s in zip(answers, starts)]}
    ]
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("given", "expected"), [(12, 12), (11, 12), (17, 20), (-5, 0), (999, 20), (0, 0), (5, 0), (7, 12)]
)
def test_a_wrong_answer_start_moves_to_the_nearest_occurrence_and_is_counted(tmp_path, given, expected):
    result = read_records(str(_squad_with_starts(tmp_path / "s.json", [given])))
    assert result.records[0].answer_starts == [expected]
    assert len(result.corrected_starts) == (0 if given == expected else 1)


@pytest.mark.parametrize("given", ["11", True, 1.5, [3]])
def test_an_answer_start_that_is_not_an_offset_is_a_bad_row(tmp_path, given):
    path = _squad_with_starts(tmp_path / "s.json", [given])
    with pytest.raises(KoqaError, match="answer_start") as info:
        read_records(str(path))
    assert info.value.field == "answer_start"
    skipped = read_records(str(path), on_bad_row="skip")
    assert skipped.records == [] and skipped.bad_rows[0].field == "answer_start"
