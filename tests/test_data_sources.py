"""Data where users keep it: `datasets` folders, parquet, Arrow, JSONL with nested answers, hub ids,
column mappings, and SQuAD 2.0 files with unanswerable questions, read through the same checks as
every other format and run through preprocess → sft → eval → score."""

import json
import os
import subprocess
import sys

import pytest

from conftest import DACON_ROWS, REPO, sft_command, write_csv
from koqa.data_tools.readers import read_records
from koqa.errors import KoqaError

datasets = pytest.importorskip("datasets")

UNANSWERABLE = [
    ("NOANS_000", DACON_ROWS[0][1], "한빛전자의 대표이사는 누구인가?"),
    ("NOANS_001", DACON_ROWS[2][1], "한국은행 총재의 임기는 언제 끝나는가?"),
]


def squad_answers(row):
    """The `datasets` (squad_kor_v1) form of a Dacon row's answer."""
    return {"text": [row[3]], "answer_start": [row[1].index(row[3])]}


def hf_rows(names=("id", "context", "question", "answers")):
    return {
        names[0]: [r[0] for r in DACON_ROWS],
        names[1]: [r[1] for r in DACON_ROWS],
        names[2]: [r[2] for r in DACON_ROWS],
        names[3]: [squad_answers(r) for r in DACON_ROWS],
    }


def squad2_file(path):
    paragraphs = {}
    for rid, context, question, answer in DACON_ROWS:
        qa = {"id": rid, "question": question, "is_impossible": False}
        qa["answers"] = [{"text": answer, "answer_start": context.index(answer)}]
        paragraphs.setdefault(context, []).append(qa)
    for rid, context, question in UNANSWERABLE:
        qa = {"id": rid, "question": question, "is_impossible": True, "answers": []}
        qa["plausible_answers"] = [{"text": "한빛전자", "answer_start": 0}]
        paragraphs.setdefault(context, []).append(qa)
    doc = {
        "version": "v2.0",
        "data": [{"title": "t", "paragraphs": [{"context": c, "qas": q} for c, q in paragraphs.items()]}],
    }
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def make_source(kind, tmp_path):
    if kind == "folder":
        datasets.Dataset.from_dict(hf_rows()).save_to_disk(str(tmp_path / "ds"))
        return tmp_path / "ds"
    if kind == "parquet":  # a set with its own column names, mapped with --columns
        datasets.Dataset.from_dict(hf_rows(("guid", "passage", "query", "label"))).to_parquet(tmp_path / "d.parquet")
        return tmp_path / "d.parquet"
    return squad2_file(tmp_path / "squad2.json")


COLUMNS = {"parquet": ["--columns", "id=guid,context=passage,question=query,answers=label"]}


def expected_answers():
    return {r[0]: [r[3]] for r in DACON_ROWS}


@pytest.mark.parametrize("kind", ["folder", "parquet", "squad2"])
def test_each_source_reads_into_the_same_records(tmp_path, kind):
    source = make_source(kind, tmp_path)
    columns = COLUMNS.get(kind, ["", ""])[1].split(",") if kind in COLUMNS else None
    result = read_records(source, columns=columns)
    got = {r.id: r.answers for r in result.records}
    expected = expected_answers()
    if kind == "squad2":
        expected.update({rid: [] for rid, _, _ in UNANSWERABLE})
    assert got == expected and result.has_answers and not result.bad_rows
    for r in result.records:
        assert r.unanswerable == r.id.startswith("NOANS")
        if r.answers:  # offsets taken from the source and right
            assert r.context[r.answer_starts[0] :].startswith(r.answers[0])


def test_arrow_files_and_jsonl_with_nested_answers(tmp_path):
    import pyarrow

    table = pyarrow.Table.from_pydict(hf_rows())
    with pyarrow.OSFile(str(tmp_path / "d.arrow"), "wb") as sink, pyarrow.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    with pyarrow.OSFile(str(tmp_path / "f.arrow"), "wb") as sink, pyarrow.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    datasets.Dataset.from_dict(hf_rows()).to_json(tmp_path / "d.jsonl", force_ascii=False)
    for name in ("d.arrow", "f.arrow", "d.jsonl"):
        records = read_records(tmp_path / name).records
        assert {r.id: r.answers for r in records} == expected_answers(), name


def test_a_dataset_dict_folder_names_its_splits(tmp_path):
    one = datasets.Dataset.from_dict(hf_rows())
    datasets.DatasetDict(train=one, validation=one).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(KoqaError, match=r"holds several splits \(it has train, validation\).*dd/train"):
        read_records(tmp_path / "dd")
    assert len(read_records(tmp_path / "dd" / "validation").records) == len(DACON_ROWS)


def test_a_bad_row_in_a_dataset_is_named_by_file_row_and_field(tmp_path):
    rows = hf_rows()
    rows["answers"][3] = {"text": ["없는 답"], "answer_start": [0]}
    datasets.Dataset.from_dict(rows).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(KoqaError, match=r"d.parquet: row 3: field 'answers': answer '없는 답' does not occur"):
        read_records(tmp_path / "d.parquet")
    skipped = read_records(tmp_path / "d.parquet", on_bad_row="skip")
    assert len(skipped.records) == len(DACON_ROWS) - 1 and skipped.bad_rows[0].row == "3"


@pytest.mark.parametrize(
    "columns, message",
    [
        (["id=guid", "answer=label"], "FIELD one of id, context, question, answers, title, is_impossible"),
        (["id="], "--columns takes FIELD=COLUMN pairs"),
        (["id=nope"], r"has no column nope \(for id\)"),
        (["id=guid", "question=context"], "gives column 'context' to question and to context: one column feeds one"),
        (["id=guid", "answers=guid"], "gives column 'guid' to id and to answers"),
        (["id=guid", "answers=label", "title=label"], "gives column 'label' to answers and to title"),
    ],
)
def test_column_mappings_are_checked(tmp_path, columns, message):
    datasets.Dataset.from_dict(hf_rows(("guid", "context", "question", "label"))).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(KoqaError, match=message):
        read_records(tmp_path / "d.parquet", columns=columns)


def test_unreadable_columnar_files_are_errors_not_tracebacks(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "x.arrow").write_bytes(b"not arrow either")
    (tmp_path / "folder").mkdir()
    for name, message in (
        ("x.parquet", "not a readable parquet"),
        ("x.arrow", "not a readable Arrow"),
        ("folder", "not one written by datasets"),
    ):
        with pytest.raises(KoqaError, match=message):
            read_records(tmp_path / name)


def test_a_hub_id_missing_offline_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = (
        "from koqa.data_tools.readers import read_records\n"
        "from koqa.errors import KoqaError\n"
        "try:\n    read_records('hf:nobody/no-such-set:train')\n"
        "except KoqaError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "dataset 'nobody/no-such-set' was not found in the local hub cache (offline)" in out
    assert "datasets.load_dataset('nobody/no-such-set')" in out


def test_a_hub_id_goes_through_load_dataset_with_its_split(monkeypatch):
    calls = []

    def load_dataset(name, split=None):
        calls.append((name, split))
        return datasets.Dataset.from_dict(hf_rows())

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    records = read_records("hf:KorQuAD/squad_kor_v1:validation").records
    assert calls == [("KorQuAD/squad_kor_v1", "validation")] and len(records) == len(DACON_ROWS)
    with pytest.raises(KoqaError, match="not a hub dataset id"):
        read_records("hf:/broken")


def koqa(*args):
    return subprocess.run(
        [sys.executable, "-m", "koqa.cli", *map(str, args)], capture_output=True, text=True, timeout=900
    )


@pytest.mark.parametrize("kind", ["folder", "parquet", "squad2"])
def test_preprocess_sft_eval_score_on_each_source(tmp_path, tiny_model_dir, kind):
    source = make_source(kind, tmp_path)
    columns = COLUMNS.get(kind, [])
    pp, run, ev = tmp_path / "pp", tmp_path / "run", tmp_path / "ev"
    steps = [
        ["preprocess", source, "--out", pp, "--model", tiny_model_dir, "--validation-fraction", "0.3", *columns],
        sft_command(pp, run, tiny_model_dir),
        ["eval", "--data", source, "--adapter", run, "--out", ev, "--backend", "hf", *columns],
        ["score", "--gold", source, "--pred", ev / "predictions.csv", "--out", tmp_path / "sc", *columns],
    ]
    for step in steps:
        result = koqa(*step)
        assert result.returncode == 0, (step[0], result.stderr[-3000:])
    stats = json.loads((pp / "stats.json").read_text(encoding="utf-8"))
    n = len(DACON_ROWS) + (len(UNANSWERABLE) if kind == "squad2" else 0)
    assert stats["records"] == n and stats["unanswerable"] == (2 if kind == "squad2" else 0)
    metrics = json.loads((ev / "metrics.json").read_text(encoding="utf-8"))
    scored = json.loads((tmp_path / "sc" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == scored["n"] == n and scored["f1"] == pytest.approx(metrics["f1"])
    assert ("unanswerable (NoAns): 2 questions" in (ev / "report.md").read_text(encoding="utf-8")) == (
        kind == "squad2"
    )
    if kind == "squad2":
        assert metrics["no_answer"]["n"] == 2 and metrics["has_answer"]["n"] == len(DACON_ROWS)
        weighted = (2 * metrics["no_answer"]["f1"] + len(DACON_ROWS) * metrics["has_answer"]["f1"]) / n
        assert metrics["f1"] == pytest.approx(weighted)
    else:
        assert "no_answer" not in metrics


def test_unanswerable_questions_score_as_squad2_does():
    from koqa.data_tools.records import QARecord
    from koqa.eval.metrics import score_one
    from koqa.eval.scoring import score_questions

    assert score_one("", []) == {"f1": 1.0, "exact_match": 1.0, "token_f1": 1.0}
    assert score_one(" . ", [])["f1"] == 1.0  # nothing left after normalisation is no answer
    assert score_one("서울", []) == {"f1": 0.0, "exact_match": 0.0, "token_f1": 0.0}
    assert score_one("", ["서울"])["f1"] == 0.0
    records = [
        QARecord("a", "서울은 수도다.", "수도는?", ["서울"]),
        QARecord("b", "서울은 수도다.", "인구는?", unanswerable=True),
        QARecord("c", "서울은 수도다.", "면적은?", unanswerable=True),
    ]
    _, means = score_questions(records, {"a": "서울", "b": "", "c": "서울"})
    assert means["has_answer"] == {"n": 1, "f1": 1.0, "exact_match": 1.0, "token_f1": 1.0}
    assert means["no_answer"] == {"n": 2, "f1": 0.5, "exact_match": 0.5, "token_f1": 0.5}
    assert means["f1"] == pytest.approx(2 / 3)


def test_an_unanswerable_question_trains_on_the_no_answer_text_and_reads_back_empty(tiny_model_dir):
    from transformers import AutoTokenizer

    from koqa.data_tools.records import QARecord
    from koqa.eval.pipeline import postprocess
    from koqa.prompting import NO_ANSWER, PromptRenderer, PromptTemplate
    from koqa.train.data import build_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"), max_length=256, no_answer="없음")
    record = QARecord("n", DACON_ROWS[0][1], "대표이사는?", unanswerable=True)
    (example,), excluded = build_examples([record], renderer)
    target = [t for t, m in zip(example["input_ids"], example["completion_mask"]) if m]
    assert not excluded and target == renderer.answer_ids("없음")
    assert postprocess(" 없음\n", record.context, str.strip, "snap", "없음") == ""
    assert postprocess(NO_ANSWER, record.context, str.strip, "off") == ""
    assert postprocess("한빛전자", record.context, str.strip, "off", "없음") == "한빛전자"


@pytest.mark.skipif(
    not os.environ.get("KOQA_SQUAD2_EVAL"),
    reason="KOQA_SQUAD2_EVAL names no copy of the official SQuAD 2.0 evaluate.py (see bench/squad2_agreement.py)",
)
def test_squad2_scores_agree_with_the_official_script():
    script = [
        sys.executable,
        str(REPO / "bench" / "squad2_agreement.py"),
        "--official",
        os.environ["KOQA_SQUAD2_EVAL"],
    ]
    result = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "source",
    ["hf:csv:train", "hf:json", "hf:..", "hf:../x", "hf:a/..", "hf:a/b/c", "hf:a/b:../x", "hf:./x", "hf:a b/c"],
)
def test_a_hub_id_that_is_not_owner_name_is_refused_before_anything_is_read(source, tmp_path, monkeypatch):
    import datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: pytest.fail(f"load_dataset reached: {a}"))
    with pytest.raises(KoqaError, match="is not a hub dataset id"):
        read_records(source)


def test_a_preprocess_folder_with_an_empty_validation_side_trains_without_validation(tmp_path, dacon_train):
    from types import SimpleNamespace

    from koqa.train.data import read_training_records

    records = read_records(str(dacon_train)).records
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    (tmp_path / "validation.jsonl").write_text("", encoding="utf-8")  # one passage: nothing on this side
    config = SimpleNamespace(
        data=str(tmp_path), validation=None, on_bad_row="fail", columns=[], encoding="auto", data_format="auto"
    )
    train, validation = read_training_records(config)
    assert len(train) == len(records) and validation == []


@pytest.mark.parametrize(
    "state",
    ["[]", "null", '{"_data_files": 3}', '{"_data_files": [{"filename": 5}]}', "{", '"text"', "\xff\xfe"],
)
def test_a_datasets_folder_with_a_malformed_state_json_is_one_line(tmp_path, state):
    datasets.Dataset.from_dict(hf_rows()).save_to_disk(str(tmp_path / "folder"))
    (tmp_path / "folder" / "state.json").write_text(state, encoding="latin-1")
    with pytest.raises(KoqaError, match=r"folder: not a readable datasets folder"):
        read_records(tmp_path / "folder")


@pytest.mark.parametrize("kind", ["folder", "parquet"])
def test_an_encoding_on_a_format_without_one_is_refused(tmp_path, kind):
    source = make_source(kind, tmp_path)
    columns = COLUMNS.get(kind, [None, None])[1]
    with pytest.raises(KoqaError, match="field 'encoding': --encoding does not apply to"):
        read_records(source, encoding="cp949", columns=columns.split(",") if columns else None)
    assert len(read_records(source, columns=columns.split(",") if columns else None).records) == len(DACON_ROWS)


def test_a_file_whose_answers_column_has_another_name_names_it(tmp_path, caplog):
    rows = hf_rows(("id", "context", "question", "gold_text"))
    rows["gold_text"] = [r[3] for r in DACON_ROWS]
    datasets.Dataset.from_dict(rows).to_parquet(tmp_path / "d.parquet")
    write_csv(tmp_path / "d.csv", ["id", "context", "question", "정답"], DACON_ROWS)
    for name, column in (("d.parquet", "gold_text"), ("d.csv", "정답")):
        caplog.clear()
        with caplog.at_level("WARNING"):
            result = read_records(tmp_path / name)
        assert not result.has_answers
        assert f"no answer column, so its questions have no gold answers; columns not read: {column}" in caplog.text
        caplog.clear()
        with caplog.at_level("WARNING"):
            mapped = read_records(tmp_path / name, columns=[f"answers={column}"])
        assert mapped.has_answers and not caplog.text
    caplog.clear()
    plain = {k: v for k, v in hf_rows().items() if k != "answers"}
    datasets.Dataset.from_dict(plain).to_parquet(tmp_path / "test.parquet")
    with caplog.at_level("WARNING"):  # a test file with only koqa's columns: nothing to say
        assert not read_records(tmp_path / "test.parquet").has_answers
    assert "no answer column" not in caplog.text


def test_training_on_a_gold_answer_equal_to_the_no_answer_text_is_refused(tmp_path, tiny_model_dir):
    rows = [*DACON_ROWS, ("NOANS", "질문에 답할 수 없으면 답 없음이라고 쓴다.", "무엇이라고 쓰나?", "답 없음")]
    data = write_csv(tmp_path / "d.csv", ["id", "context", "question", "answer"], rows)
    run = tmp_path / "run"
    result = koqa(*sft_command(data, run, tiny_model_dir, steps=1))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "d.csv: row 8: field 'answer': the gold answer is the no-answer text '답 없음'" in result.stderr
    assert "Traceback" not in result.stderr and not (run / "adapter").exists()
