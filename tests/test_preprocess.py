import json
import os
import subprocess
import sys

import pytest

from conftest import DACON_ROWS, write_csv
from koqa.errors import KoqaError
from koqa.preprocess import PreprocessConfig, preprocess
from koqa.settings import load


def run_preprocess(inputs, out, config):
    """`preprocess` of `inputs` into `out` with `config`'s other settings."""
    config.inputs, config.out = inputs, out
    return preprocess(config)


def test_dacon_preprocess_writes_every_output(tmp_path, dacon_train, default_model_dir):
    out = tmp_path / "out"
    stats = run_preprocess([str(dacon_train)], str(out), PreprocessConfig(validation_fraction=0.3))
    assert {p.name for p in out.iterdir()} == {
        "train.jsonl",
        "validation.jsonl",
        "stats.json",
        "stats.md",
        "data.html",
        "prompt_tokens_hist.png",
    }
    assert (out / "prompt_tokens_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [
        json.loads(line)
        for f in ("train.jsonl", "validation.jsonl")
        for line in (out / f).read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(r["id"] for r in rows) == sorted(r[0] for r in DACON_ROWS)
    first = next(r for r in rows if r["id"] == "TRAIN_002")
    assert first["answer_tokens"] >= 1 and first["context_morphemes"] > first["answer_morphemes"]
    assert first["prompt_tokens"] > first["context_tokens"] + first["question_tokens"]
    assert first["context_sentences"] == 2  # two sentences ending with '.'
    assert stats["answer_in_context_rate"] == 1.0 and stats["records"] == 6
    assert stats["distributions"]["answer_words"]["max"] == 2
    assert "| prompt_tokens |" in (out / "stats.md").read_text(encoding="utf-8")


def test_skip_mode_writes_rejected_rows(tmp_path, default_model_dir):
    rows = DACON_ROWS[:3] + [("BAD", DACON_ROWS[0][1], "질문?", "없는 답")]
    path = write_csv(tmp_path / "train.csv", ["id", "context", "question", "answer"], rows)
    stats = run_preprocess([str(path)], str(tmp_path / "o"), PreprocessConfig(on_bad_row="skip"))
    assert stats["excluded_rows"] == 1 and stats["records"] == 3
    rejected = (tmp_path / "o" / "rejected.csv").read_text(encoding="utf-8")
    assert "5,answer" in rejected and "does not occur in the context" in rejected


def test_failure_leaves_no_partial_output(tmp_path, default_model_dir):
    rows = DACON_ROWS[:2] + [("BAD", DACON_ROWS[0][1], "", "x")]
    path = write_csv(tmp_path / "train.csv", ["id", "context", "question", "answer"], rows)
    with pytest.raises(KoqaError, match="row 4: field 'question'"):
        run_preprocess([str(path)], str(tmp_path / "o"), PreprocessConfig())
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "setting, match",
    [
        (
            {"validation_fraction": 1.5},
            "field 'validation_fraction': validation_fraction must be at least 0 and below 1, got 1.5",
        ),
        ({"validation_fraction": -0.1}, "validation_fraction must be at least 0 and below 1, got -0.1"),
        ({"max_length": 0}, "field 'max_length': max_length must be positive, got 0"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, dacon_train, setting, match):
    with pytest.raises(KoqaError, match=match):
        run_preprocess([str(dacon_train)], str(tmp_path / "o"), PreprocessConfig(**setting))
    assert not (tmp_path / "o").exists()


def test_test_csv_is_not_split(tmp_path, dacon_test, default_model_dir):
    stats = run_preprocess([str(dacon_test)], str(tmp_path / "o"), PreprocessConfig())
    assert stats["splits"] == {"all": 6} and stats["answer_in_context_rate"] is None


def test_normalisation_keeps_answers_that_stay_spans(tmp_path, default_model_dir):
    context = "《토지》는 박경리의 소설이다. 서울에서 열린 행사."
    path = write_csv(
        tmp_path / "t.csv",
        ["id", "context", "question", "answer"],
        [("a", context, "소설은?", "《토지》는"), ("b", context, "어디서?", "서울에서")],
    )
    config = load(
        PreprocessConfig,
        flags={
            "answer_normalization": ["josa", "quotes_brackets"],
            "split": "none",
            "inputs": [str(path)],
            "out": str(tmp_path / "o"),
        },
    )
    stats = run_preprocess([str(path)], str(tmp_path / "o"), config)
    rows = [json.loads(x) for x in (tmp_path / "o" / "all.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["id"]: r["answers"][0] for r in rows} == {"a": "토지", "b": "서울"}
    assert stats["answer_in_context_rate"] == 1.0


def test_korquad_dev_with_article_split(tmp_path, default_model_dir, korquad):
    stats = run_preprocess([str(korquad)], str(tmp_path / "k"), PreprocessConfig(split="korquad-articles"))
    assert stats["splits"] == {"train": 4487, "validation": 1287}
    assert stats["records"] == 5774 and stats["prompts_over_max_length"] > 0


def test_preprocess_counts_with_the_training_tokenizer_and_leaves_torch_out(tmp_path, dacon_train, default_model_dir):
    from transformers import AutoTokenizer

    from koqa.plain_tokenizer import PlainTokenizer, prompt_tokenizer
    from koqa.prompting import PromptRenderer, PromptTemplate

    plain, auto = prompt_tokenizer(str(default_model_dir)), AutoTokenizer.from_pretrained(default_model_dir)
    assert isinstance(plain, PlainTokenizer)
    texts = [row[1] + row[2] for row in DACON_ROWS] + ["  두 칸\n줄\t탭 <bos> English 123"]
    for text in texts:
        mine, theirs = plain(text, False, True), auto(text, add_special_tokens=False, return_offsets_mapping=True)
        assert mine.input_ids == theirs.input_ids and list(map(tuple, mine["offset_mapping"])) == list(
            map(tuple, theirs["offset_mapping"])
        )
    assert plain(texts, add_special_tokens=False)["input_ids"] == auto(texts, add_special_tokens=False)["input_ids"]
    assert (plain.bos_token_id, plain.eos_token_id, plain.pad_token_id) == (
        auto.bos_token_id,
        auto.eos_token_id,
        auto.pad_token_id,
    )
    template = PromptTemplate.load("ko_instruct")
    ours, reference = PromptRenderer(plain, template, max_length=110), PromptRenderer(auto, template, max_length=110)
    for row in DACON_ROWS:
        start = row[1].index(row[3])
        assert ours.render(row[1], row[2], start, len(row[3])) == reference.render(row[1], row[2], start, len(row[3]))
    assert ours.frame_lengths([r[2] for r in DACON_ROWS]) == reference.frame_lengths([r[2] for r in DACON_ROWS])
    assert not isinstance(prompt_tokenizer(str(default_model_dir), chat=True), PlainTokenizer)
    code = (
        "import sys\nfrom koqa.preprocess import PreprocessConfig, preprocess\n"
        f"preprocess(PreprocessConfig(inputs=[{str(dacon_train)!r}], out={str(tmp_path / 'pp')!r}))\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "False False", out.stderr[-2000:]


def test_batched_counts_with_morphemes_on_a_thread_or_in_a_process_equal_a_plain_per_row_loop(default_model_dir):
    from koqa.data_tools.records import QARecord
    from koqa.data_tools.stats import count_records, count_records_per_row
    from koqa.plain_tokenizer import prompt_tokenizer
    from koqa.prompting import PromptRenderer, PromptTemplate

    def record(id_, context, question, answers):
        return QARecord(id=id_, context=context, question=question, answers=answers, answer_starts=[0] * len(answers))

    # Dacon's rows share contexts; one question asked twice, one record without an answer, one more sentence
    records = [record(i, c, q, [a]) for i, c, q, a in DACON_ROWS]
    records += [
        record("again", DACON_ROWS[1][1], DACON_ROWS[1][2], [DACON_ROWS[1][3]]),
        record("none", DACON_ROWS[0][1], "답이 없는 질문은?", []),
        record("longer", DACON_ROWS[2][1] + " 끝.", DACON_ROWS[2][2], ["끝"]),
    ]
    tokenizer = prompt_tokenizer(str(default_model_dir))
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"))
    from koqa.data_tools.morphemes import KiwiProcess

    batched = count_records(records, tokenizer, renderer.frame_lengths)
    assert batched == count_records_per_row(records, tokenizer, renderer)
    assert count_records(records, tokenizer, renderer.frame_lengths, KiwiProcess()) == batched  # as preprocess
    assert batched[-2].answer_morphemes == 0 and batched[-1].context_sentences == batched[2].context_sentences + 1


def test_an_error_on_the_background_thread_reaches_the_caller():
    from koqa.data_tools.morphemes import Background

    def fails():
        raise KoqaError("the analyser failed", field="context")

    job = Background(fails)
    with pytest.raises(KoqaError, match="the analyser failed"):
        job.result()
    assert Background(sorted, [3, 1, 2]).result() == [1, 2, 3]


def test_a_kiwi_process_returns_the_job_s_result_and_raises_its_error():
    from koqa.data_tools.morphemes import KiwiProcess

    assert KiwiProcess().submit(sorted, [3, 1, 2]).result() == [1, 2, 3]
    assert KiwiProcess().submit(print, "what the job prints is not its answer").result() is None
    with pytest.raises(ValueError, match="invalid literal"):
        KiwiProcess().submit(int, "x").result()
    with pytest.raises(RuntimeError, match="ended without an answer \\(exit code 3\\)"):
        KiwiProcess().submit(os._exit, 3).result()
    with KiwiProcess() as unused:
        pass
    assert unused._process.returncode is not None  # ended with the block, not left loading


def test_preprocess_from_a_script_without_a_main_guard_runs_once(tmp_path, dacon_train):
    script = tmp_path / "notebook.py"
    script.write_text(
        "from koqa.preprocess import PreprocessConfig, preprocess\n"
        f"open({str(tmp_path / 'runs.txt')!r}, 'a').write('ran\\n')\n"
        f"preprocess(PreprocessConfig(inputs=[{str(dacon_train)!r}], out={str(tmp_path / 'pp')!r}))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "runs.txt").read_text() == "ran\n"
    assert json.loads((tmp_path / "pp" / "stats.json").read_text())["records"] > 0
