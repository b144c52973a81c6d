"""Property tests of the readers: any bytes, any JSON, any JSONL give records that keep the record
invariants, or a KoqaError; never another exception. Each property runs 300 examples in CI."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koqa.data_tools.predictions import read_predictions
from koqa.data_tools.readers import read_records
from koqa.errors import KoqaError

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
texts = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from('서울,"\n\x00 []{}'), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)


# the `datasets` form of answers, with any values inside
nested_answers = st.fixed_dictionaries(
    {"text": st.lists(texts, max_size=2) | json_values}, optional={"answer_start": json_values}
)


def keeps_the_invariants(result, check_span: bool) -> None:
    ids = [r.id for r in result.records]
    assert len(ids) == len(set(ids))
    for r in result.records:
        for value in (r.id, r.context, r.question, *r.answers):
            assert isinstance(value, str) and value.strip() and "\x00" not in value
            value.encode("utf-8")
        assert r.id == r.id.strip()
        assert len(r.answer_starts) == len(r.answers)
        if check_span:
            assert all(r.context[s : s + len(a)] == a for a, s in zip(r.answers, r.answer_starts))
        assert not (r.unanswerable and r.answers)  # an unanswerable question has no answers
    gold = [r.has_gold for r in result.records]
    assert all(gold) or not any(gold)  # data with gold (answers, or marked unanswerable), or test data


def read_or_refuse(path, check_span=True, on_bad_row="fail"):
    try:
        result = read_records(path, on_bad_row=on_bad_row, check_span=check_span)
    except KoqaError:
        return
    keeps_the_invariants(result, check_span)


@EXAMPLES
@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".json", ".jsonl", ".parquet", ".arrow"]))
def test_any_bytes(tmp_path, raw, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(raw)
    read_or_refuse(path)
    read_or_refuse(path, check_span=False, on_bad_row="skip")


@EXAMPLES
@given(rows=st.lists(st.lists(texts, min_size=4, max_size=4), max_size=5), skip=st.booleans())
def test_any_csv_cells(tmp_path, rows, skip):
    import csv

    path = tmp_path / "train.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "context", "question", "answer"])
        writer.writerows(rows)
    read_or_refuse(path, on_bad_row="skip" if skip else "fail")


squad_question = st.fixed_dictionaries(
    {"id": json_values | texts, "question": json_values | texts},
    optional={
        "answers": st.lists(
            st.fixed_dictionaries({"text": texts | json_values}, optional={"answer_start": json_values}), max_size=2
        ),
        "is_impossible": st.booleans(),
    },
)
squad_doc = (
    st.fixed_dictionaries(
        {
            "data": st.lists(
                st.fixed_dictionaries(
                    {
                        "paragraphs": st.lists(
                            st.fixed_dictionaries(
                                {"context": texts | json_values, "qas": st.lists(squad_question, max_size=3)}
                            ),
                            max_size=2,
                        )
                    }
                ),
                max_size=2,
            )
        }
    )
    | json_values
)


@EXAMPLES
@given(doc=squad_doc, skip=st.booleans())
def test_any_squad_shaped_json(tmp_path, doc, skip):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    read_or_refuse(path, on_bad_row="skip" if skip else "fail")


@EXAMPLES
@given(
    lines=st.lists(
        st.dictionaries(
            st.sampled_from(
                ["id", "context", "question", "answers", "answer_starts", "answer", "title", "is_impossible"]
            ),
            json_values | texts | nested_answers,
        ),
        max_size=4,
    ),
    skip=st.booleans(),
)
def test_any_jsonl_objects(tmp_path, lines, skip):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    read_or_refuse(path, on_bad_row="skip" if skip else "fail")


@EXAMPLES
@given(
    raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
    suffix=st.sampled_from([".csv", ".json"]),
)
def test_any_prediction_file(tmp_path, raw, suffix):
    path = tmp_path / f"pred{suffix}"
    path.write_bytes(raw)
    try:
        predictions = read_predictions(path)
    except KoqaError:
        return
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in predictions.items())


@EXAMPLES
@given(items=st.lists(texts | st.sampled_from(["id=guid", "answers=label", "=x", "id=", "title=t=x"]), max_size=4))
def test_any_column_mapping(items):
    from koqa.data_tools.rows import FIELDS, parse_columns

    try:
        mapping = parse_columns(items)
    except KoqaError as exc:
        assert "--columns" in str(exc)
        return
    assert set(mapping) <= set(FIELDS) and all(isinstance(c, str) and c for c in mapping.values())
