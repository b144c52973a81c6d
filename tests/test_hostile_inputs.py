"""Inputs a hostile or careless user gives koqa, one test per class of failure: each ends in a
`KoqaError` naming file, row and field, or in records that keep the invariants; none in a traceback,
a silent drop or a silent acceptance."""

import csv
import json
import time

import pytest

from conftest import DACON_ROWS, write_csv
from koqa.data_tools.predictions import read_predictions
from koqa.data_tools.readers import read_dacon_csv, read_records, read_squad_json
from koqa.errors import KoqaError
from koqa.settings import load, read_config_file
from koqa.train.train_config import TrainConfig

HEADER = ["id", "context", "question", "answer"]
CONTEXT = DACON_ROWS[0][1]


# --- resource exhaustion from a config file -------------------------------------------------------


def test_nested_yaml_aliases_are_refused_at_once(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)
    )
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb, encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(KoqaError, match="bomb.yaml: cannot parse config: YAML aliases"):
        read_config_file(path)
    with pytest.raises(KoqaError, match="cannot read the value of --set"):
        load(TrainConfig, sets=["target_modules=[&a x, *a]"])
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("suffix, text", [(".yaml", "[" * 100_000), (".toml", "a = " + "[" * 100_000)])
def test_deeply_nested_config_is_an_error(tmp_path, suffix, text):
    path = tmp_path / f"deep{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KoqaError, match="cannot parse config"):
        read_config_file(path)


# --- readers that trusted their input --------------------------------------------------------------


def _jsonl(tmp_path, *lines):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


GOOD = json.dumps({"id": "a", "context": CONTEXT, "question": "q?", "answers": ["1,200억 원"]}, ensure_ascii=False)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "b", "context": "x', "line 2: field 'line': not valid JSON"),
        ('{"id": "b", "question": "q?", "answers": []}', "line 2: field 'context': is missing"),
        ('{"id": 7, "context": "x", "question": "q?", "answers": ["x"]}', "line 2: field 'id': is a JSON int"),
        ('{"id": "b", "context": "x", "question": "", "answers": ["x"]}', "line 2: field 'question': is empty"),
        ('{"id": "b", "context": "x", "question": "q?", "answers": ["y"]}', "field 'answers': answer 'y' does not"),
        ('{"id": "b", "context": "x", "question": "q?", "answers": "x"}', "field 'answers': is a JSON str, not a"),
        ('["b", "x", "q?"]', "line 2: field 'line': is a JSON list, not an object"),
        ('{"id": "b", "context": "x", "question": "q?", "answers": []}', "line 2: field 'answers': has no answer"),
    ],
)
def test_jsonl_lines_are_checked_like_every_other_row(tmp_path, line, message):
    with pytest.raises(KoqaError, match=message):
        read_records(_jsonl(tmp_path, GOOD, line))


def test_jsonl_with_bad_utf8_names_its_line(tmp_path):
    with pytest.raises(KoqaError, match="data.jsonl: row 2: bytes at offset .* are not valid UTF-8, nor CP949"):
        read_records(_jsonl(tmp_path, GOOD, b'{"id": "\xff"}'))


def _squad(tmp_path, qas, context="서울은 수도다."):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}), encoding="utf-8")
    return path


def _qa(qid="q1", question="수도는?", answers=({"text": "서울", "answer_start": 0},), **extra):
    return {"id": qid, "question": question, "answers": list(answers), **extra}


@pytest.mark.parametrize(
    "qas, message",
    [
        ([_qa(), _qa("q2", answers=())], r"qas\[1\] \(id q2\): field 'answers': has no answer, while other"),
        ([_qa(), _qa("q2", is_impossible=True)], "field 'is_impossible': is true, but the question has answers"),
        ([_qa(), _qa("q2", answers=(), is_impossible="yes")], "field 'is_impossible': is a str, not true or false"),
        ([_qa(qid=None)], r"qas\[0\]: field 'id': is missing"),
        ([_qa(qid=12)], r"qas\[0\]: field 'id': is a JSON int, not text"),
        ([_qa(question="수도\ud800는?")], "field 'question': contains a lone surrogate"),
        ([_qa(answers=({"text": "", "answer_start": 0},))], "field 'answers': an answer is empty"),
        ([_qa(answers=({"text": "서울"}, {"text": "부산"}))], "field 'answers': answer '부산' does not occur"),
    ],
)
def test_squad_questions_keep_the_invariants(tmp_path, qas, message):
    with pytest.raises(KoqaError, match=message):
        read_squad_json(_squad(tmp_path, qas))


def test_squad_json_nested_too_deeply_is_an_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    with pytest.raises(KoqaError, match="deep.json: not usable JSON: nested too deeply"):
        read_squad_json(path)


def test_a_repeated_json_key_is_an_error_not_the_last_value(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text('{"a": "서울", "a": "부산"}', encoding="utf-8")
    with pytest.raises(KoqaError, match="pred.json: not usable JSON: the key 'a' occurs twice"):
        read_predictions(path)


def test_csv_with_a_repeated_column_is_refused(tmp_path):
    path = write_csv(tmp_path / "dup.csv", ["id", "context", "question", "answer", "answer"], [(*DACON_ROWS[0], "x")])
    with pytest.raises(KoqaError, match="dup.csv: row 1: field 'answer': the column 'answer' appears twice"):
        read_dacon_csv(path)


@pytest.mark.parametrize(
    "answer, message",
    [('["", "1,200억 원"]', "field 'answer': an answer is empty"), ('["1,200억 원", "3조"]', "answer '3조' does not")],
)
def test_every_answer_of_a_list_is_checked(tmp_path, answer, message):
    path = write_csv(tmp_path / "t.csv", HEADER, [(DACON_ROWS[0][0], CONTEXT, "q?", answer)])
    with pytest.raises(KoqaError, match=message):
        read_dacon_csv(path)


def test_a_long_field_is_read(tmp_path):
    long_context = "가" * 150_000 + " 서울"
    path = write_csv(tmp_path / "long.csv", HEADER, [("a", long_context, "어디?", "서울")])
    assert read_dacon_csv(path).records[0].context == long_context


def test_blank_and_separator_only_rows_are_counted_not_dropped(tmp_path):
    path = tmp_path / "blank.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerow(DACON_ROWS[0])
        handle.write(",,,\n   ,  , ,\n")
        writer.writerow(DACON_ROWS[2])
    result = read_dacon_csv(path, on_bad_row="skip")
    assert [r.id for r in result.records] == ["TRAIN_000", "TRAIN_002"]
    assert [(b.row, b.reason) for b in result.bad_rows] == [("3", "is a blank row"), ("4", "is a blank row")]
    with pytest.raises(KoqaError, match="blank.csv: row 3: field 'row': is a blank row"):
        read_dacon_csv(path)


def test_a_nul_byte_is_a_bad_field(tmp_path):
    path = write_csv(tmp_path / "nul.csv", HEADER, [("a", CONTEXT, "질문\x00?", "1,200억 원")])
    with pytest.raises(KoqaError, match="nul.csv: row 2: field 'question': contains a NUL byte"):
        read_dacon_csv(path)


def test_an_error_never_repeats_the_header_of_a_file_passed_by_mistake(tmp_path):
    secret = "hf_" + "S" * 30
    path = write_csv(tmp_path / "notes.csv", ["name", secret], [("a", "b")])
    with pytest.raises(KoqaError) as info:
        read_dacon_csv(path)
    assert secret not in str(info.value) and "missing column(s) id, context, question" in str(info.value)


# --- text that looks like a placeholder --------------------------------------------------------------


def test_a_question_holding_a_placeholder_is_text(default_model_dir):
    from transformers import AutoTokenizer

    from koqa.prompting import PromptRenderer, PromptTemplate

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"), max_length=256)
    text = tokenizer.decode(renderer.render("서울은 수도다.", "{context}와 {question}은 무엇인가?").ids)
    assert "{context}와 {question}은 무엇인가?" in text and text.count("서울은 수도다.") == 1


def test_a_template_that_is_not_utf8_is_an_error(tmp_path):
    from koqa.prompting import PromptTemplate

    path = tmp_path / "t.txt"
    path.write_bytes("{context}\n{question}\n답:".encode("utf-16"))
    with pytest.raises(KoqaError, match="t.txt: field 'template': bytes at offset 0 are not valid UTF-8"):
        PromptTemplate.load(str(path))


# --- output folders that were neither atomic nor clean -----------------------------------------------


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.exists() else None


def _fail_at_write(monkeypatch, k):
    """Make the k-th file move of koqa.atomic (every write ends in one) fail with a full disk."""
    import koqa.atomic

    calls, real = [0], koqa.atomic.os.replace

    def replace(src, dst):
        calls[0] += 1
        if calls[0] == k:
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(koqa.atomic.os, "replace", replace)
    return calls


def fail_at_each_write_in_turn(monkeypatch, out, run) -> tuple[dict, int]:
    """Run `run()` again and again, the k-th write failing on the k-th try, until a try writes without
    failing; after every failed try the folder `out` must be as it was. Returns the final folder and k."""
    old = _snapshot(out)
    k = 1
    while True:
        with monkeypatch.context() as patch:
            calls = _fail_at_write(patch, k)
            try:
                run()
            except OSError:
                assert _snapshot(out) == old, f"a failure at write {k} left a mix"
                k += 1
                continue
        assert calls[0] < k  # the try that finished made every write the failed tries had stopped at
        return _snapshot(out), k


def test_preprocess_outputs_are_replaced_as_one_unit(tmp_path, default_model_dir, monkeypatch, kiwi_in_process):
    from koqa.preprocess import PreprocessConfig, preprocess

    first = write_csv(tmp_path / "first.csv", HEADER, [*DACON_ROWS[:4], ("BAD", CONTEXT, "q?", "없는 답")])
    second = write_csv(tmp_path / "second.csv", ["id", "context", "question"], [r[:3] for r in DACON_ROWS])
    out = tmp_path / "out"
    preprocess(PreprocessConfig(inputs=[str(first)], out=str(out), on_bad_row="skip"))
    assert {"rejected.csv", "train.jsonl", "validation.jsonl"} <= set(_snapshot(out))
    state, tries = fail_at_each_write_in_turn(
        monkeypatch, out, lambda: preprocess(PreprocessConfig(inputs=[str(second)], out=str(out)))
    )
    assert tries > 5
    assert set(state) == {"all.jsonl", "stats.json", "stats.md", "data.html", "prompt_tokens_hist.png"}  # no stale
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_eval_reports_are_replaced_as_one_unit(tmp_path, dacon_train, default_model_dir, monkeypatch, kiwi_in_process):
    from koqa.eval.eval_config import EvalConfig
    from koqa.eval.evaluate import evaluate

    class Scripted:
        name = "scripted"
        streams = False

        def generate(self, prompts, params):
            return ["1,200억 원으로"] * len(prompts)

        def close(self):
            pass

    out = tmp_path / "eval"
    evaluate(EvalConfig(data=str(dacon_train), out=str(out)), generator=Scripted())
    old = _snapshot(out)
    # the same answers, post-processed otherwise: other predictions, other scores
    state, tries = fail_at_each_write_in_turn(
        monkeypatch, out, lambda: evaluate(EvalConfig(data=str(dacon_train), out=str(out), span="snap"), Scripted())
    )
    assert tries > 4 and state != old
    assert (
        set(state)
        == set(old)
        == {
            "generations.jsonl",
            "predictions.csv",
            "metrics.json",
            "report.md",
            "report.html",
            "f1_hist.png",
            "errors.csv",
        }
    )


def test_evaluating_test_data_into_a_scored_folder_leaves_no_stale_score(
    tmp_path, dacon_train, dacon_test, default_model_dir
):
    from koqa.eval.eval_config import EvalConfig
    from koqa.eval.evaluate import evaluate

    class Scripted:
        name = "scripted"
        streams = False

        def generate(self, prompts, params):
            return ["서울"] * len(prompts)

    out = tmp_path / "eval"
    evaluate(EvalConfig(data=str(dacon_train), out=str(out)), generator=Scripted())
    assert (out / "metrics.json").is_file()
    evaluate(EvalConfig(data=str(dacon_test), out=str(out)), generator=Scripted())
    assert sorted(p.name for p in out.iterdir()) == ["generations.jsonl", "predictions.csv"]


# --- commands that overwrote their inputs or changed data silently ---------------------------------


def _submit(tmp_path, pred, sample, out, **options):
    from koqa.eval.submission import SubmitConfig, submit

    return submit(SubmitConfig(pred=str(pred), sample=str(sample), out=str(out), **options))


def test_submit_never_writes_over_its_inputs(tmp_path):
    sample = write_csv(tmp_path / "sample.csv", ["id", "answer"], [("T1", "")])
    pred = write_csv(tmp_path / "pred.csv", ["id", "answer"], [("T1", "서울")])
    for out in (pred, sample, tmp_path / "." / "pred.csv"):
        with pytest.raises(KoqaError, match="field 'out': --out .* is one of the input files"):
            _submit(tmp_path, pred, sample, out)
    assert pred.read_text(encoding="utf-8") == "id,answer\nT1,서울\n"


def test_submit_keeps_the_sample_s_columns_and_ids(tmp_path):
    sample = write_csv(tmp_path / "sample.csv", ["id", "answer", "note"], [("T1 ", "", "x"), ("T2", "", "y")])
    pred = write_csv(tmp_path / "pred.csv", ["id", "answer"], [("T1", "서울"), ("T2", "부산")])
    _submit(tmp_path, pred, sample, tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text(encoding="utf-8") == "id,answer,note\nT1 ,서울,x\nT2,부산,y\n"


def test_empty_fill_needs_a_text(tmp_path):
    sample = write_csv(tmp_path / "sample.csv", ["id", "answer"], [("T1", "")])
    pred = write_csv(tmp_path / "pred.csv", ["id", "answer"], [("T1", "")])
    with pytest.raises(KoqaError, match="field 'fill_text': --empty fill needs a non-empty --fill-text"):
        _submit(tmp_path, pred, sample, tmp_path / "s.csv", empty="fill", fill_text=" ")


def test_a_literal_nan_answer_is_empty_for_score_and_submit_alike(tmp_path, dacon_train):
    from koqa.eval.scoring import ScoreConfig, score

    pred = write_csv(tmp_path / "pred.csv", ["id", "answer"], [(r[0], "NaN") for r in DACON_ROWS])
    assert set(read_predictions(pred).values()) == {""}
    assert score(ScoreConfig(gold=str(dacon_train), pred=str(pred)))["f1"] == 0.0
    sample = write_csv(tmp_path / "sample.csv", ["id", "answer"], [(r[0], "") for r in DACON_ROWS])
    with pytest.raises(KoqaError, match="field 'answer': empty answer for id 'TRAIN_000'"):
        _submit(tmp_path, pred, sample, tmp_path / "s.csv")
    assert _submit(tmp_path, pred, sample, tmp_path / "s.csv", empty="keep")["empty"] == len(DACON_ROWS)
