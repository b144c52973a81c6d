"""Hostile input through the real command line: every case exits with status 2 and one line on
stderr naming where the problem is, without a traceback, before any model loads."""

import json
import subprocess
import sys

import pytest

from conftest import DACON_ROWS, write_csv

HEADER = ["id", "context", "question", "answer"]


def files(tmp_path):
    """Name -> path of every hostile file the cases below use."""
    made = {}

    def text(name, content, encoding="utf-8"):
        made[name] = tmp_path / name
        made[name].write_bytes(content.encode(encoding) if isinstance(content, str) else content)

    made["train.csv"] = write_csv(tmp_path / "train.csv", HEADER, DACON_ROWS)
    made["sample.csv"] = write_csv(tmp_path / "sample.csv", ["id", "answer"], [(r[0], "") for r in DACON_ROWS])
    made["pred.csv"] = write_csv(tmp_path / "pred.csv", ["id", "answer"], [(r[0], r[3]) for r in DACON_ROWS])
    text("alias.yaml", "a: &a [x, x]\nb: [*a, *a]\n")
    text("utf16.yaml", "method: lora\n", "utf-16")
    text("list.yaml", "- method\n- lora\n")
    text("table.toml", "[target_modules]\nq = 1\n")
    text("float_rank.yaml", "lora_r: 16.9\n")
    text("bool_batch.yaml", "batch_size: true\n")
    text("inf_lr.yaml", "learning_rate: .inf\n")
    text("token.yaml", "hub_token: hf_" + "Z" * 30 + "\n")
    text("empty.csv", "")
    text("header_only.csv", "id,context,question,answer\n")
    text("tabs.csv", "id\tcontext\tquestion\tanswer\na\tb\tc\td\n")
    text("dup_col.csv", "id,context,question,answer,answer\na,서울,q,서울,서울\n")
    text("ragged.csv", "id,context,question,answer\na,서울,q\n")
    text("latin1.csv", "id,context,question,answer\na,Olé café à Paris,Où?,Paris\n", "latin-1")
    text("nul.csv", "id,context,question,answer\na,서울\x00,어디?,서울\n")
    text("blank_row.csv", "id,context,question,answer\na,서울,어디?,서울\n,,,\n")
    text("not_span.csv", "id,context,question,answer\na,서울,어디?,부산\n")
    text("empty_list.csv", 'id,context,question,answer\na,서울,어디?,"["""", ""서울""]"\n')
    text("broken.json", '{"data": [')
    text("deep.json", '{"data": ' + "[" * 50_000 + "]" * 50_000 + "}")
    text("not_squad.json", '{"version": 1}')
    text(
        "mixed.json",
        json.dumps(
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": "서울은 수도",
                                "qas": [
                                    {
                                        "id": "q1",
                                        "question": "수도?",
                                        "answers": [{"text": "서울", "answer_start": 0}],
                                    },
                                    {"id": "q2", "question": "어디?", "answers": []},
                                ],
                            }
                        ]
                    }
                ]
            }
        ),
    )
    text(
        "null_id.json",
        json.dumps(
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": "서울",
                                "qas": [
                                    {"id": None, "question": "수도?", "answers": [{"text": "서울", "answer_start": 0}]}
                                ],
                            }
                        ]
                    }
                ]
            }
        ),
    )
    text(
        "surrogate.json",
        '{"data": [{"paragraphs": [{"context": "서울", "qas": [{"id": "q", "question": "\\ud800?", '
        '"answers": [{"text": "서울", "answer_start": 0}]}]}]}]}',
    )
    text("broken.jsonl", '{"id": "a", "context": "서울", "question": "q", "answers": ["서울"]}\n{"id": \n')
    text("bad_type.jsonl", '{"id": "a", "context": "서울", "question": 3, "answers": ["서울"]}\n')
    text("bad_utf8.jsonl", b'{"id": "\xff\xfe"}\n')
    text("dup_key.json", '{"TRAIN_000": "a", "TRAIN_000": "b"}')
    text("number.json", '{"TRAIN_000": 5}')
    text("foreign.csv", "id,answer\nTEST_9,x\n")
    text("dup_pred.csv", "id,answer\nTRAIN_000,a\nTRAIN_000,b\n")
    text("secret_header.csv", "name,hf_" + "Q" * 30 + "\na,b\n")
    return made


CASES = [
    (["sft", "--config", "{alias.yaml}"], "alias.yaml: cannot parse config: YAML aliases"),
    (["sft", "--config", "{utf16.yaml}"], "utf16.yaml: bytes at offset 0 are not valid UTF-8"),
    (["sft", "--config", "{list.yaml}"], "list.yaml: config must be a mapping"),
    (["sft", "--config", "{table.toml}", "--data", "x", "--out", "y"], "target_modules must be a list, not dict"),
    (["sft", "--config", "{float_rank.yaml}", "--data", "x", "--out", "y"], "lora_r must be a whole number"),
    (["sft", "--config", "{bool_batch.yaml}", "--data", "x", "--out", "y"], "batch_size must be a whole number"),
    (["sft", "--config", "{inf_lr.yaml}", "--data", "x", "--out", "y"], "learning_rate must be a finite number"),
    (["sft", "--config", "{token.yaml}"], "token.yaml: field 'hub_token': config contains secret-like key"),
    (["sft", "--data", "x", "--out", "y", "--set", "lora_r=[1"], "cannot read the value of --set"),
    (["sft", "--data", "x", "--out", "y", "--set", "seed=-1"], "seed must be 0 or more, got -1"),
    (["sft", "--data", "x", "--out", "y", "--set", "dtype=int4"], "dtype must be one of auto"),
    (["sft", "--data", "x", "--out", "y", "--set", "nonsense=1"], "unknown key 'nonsense'"),
    (["sft"], "data is required"),
    (["eval", "--data", "x", "--out", "y", "--set", "span=maybe"], "span must be one of off, snap"),
    (["eval", "--data", "x", "--out", "y", "--normalize", "nfc,stem"], "answer_normalization must be one of"),
    (["demo", "--set", "sft.max_stepz=1"], "unknown key 'sft.max_stepz'"),
    (["score", "--gold", "{empty.csv}", "--pred", "{pred.csv}"], "empty.csv: file is empty"),
    (["score", "--gold", "{header_only.csv}", "--pred", "{pred.csv}"], "header_only.csv: has a header but no rows"),
    (["score", "--gold", "{tabs.csv}", "--pred", "{pred.csv}"], "wrong delimiter"),
    (["score", "--gold", "{dup_col.csv}", "--pred", "{pred.csv}"], "the column 'answer' appears twice"),
    (["score", "--gold", "{ragged.csv}", "--pred", "{pred.csv}"], "ragged.csv: row 2: has 3 fields"),
    (["score", "--gold", "{latin1.csv}", "--pred", "{pred.csv}"], "not valid UTF-8, nor CP949/EUC-KR"),
    (["score", "--gold", "{nul.csv}", "--pred", "{pred.csv}"], "nul.csv: row 2: field 'context': contains a NUL"),
    (["score", "--gold", "{blank_row.csv}", "--pred", "{pred.csv}"], "blank_row.csv: row 3: field 'row'"),
    (["score", "--gold", "{empty_list.csv}", "--pred", "{pred.csv}"], "field 'answer': an answer is empty"),
    (["score", "--gold", "{broken.json}", "--pred", "{pred.csv}"], "broken.json: not valid JSON"),
    (["score", "--gold", "{deep.json}", "--pred", "{pred.csv}"], "deep.json: not usable JSON: nested too deeply"),
    (["score", "--gold", "{not_squad.json}", "--pred", "{pred.csv}"], "not SQuAD JSON"),
    (["score", "--gold", "{mixed.json}", "--pred", "{pred.csv}"], "field 'answers': has no answer, while other"),
    (["score", "--gold", "{null_id.json}", "--pred", "{pred.csv}"], "field 'id': is missing"),
    (["score", "--gold", "{surrogate.json}", "--pred", "{pred.csv}"], "contains a lone surrogate"),
    (["score", "--gold", "{broken.jsonl}", "--pred", "{pred.csv}"], "broken.jsonl: row line 2: field 'line'"),
    (["score", "--gold", "{bad_type.jsonl}", "--pred", "{pred.csv}"], "field 'question': is a JSON int"),
    (["score", "--gold", "{bad_utf8.jsonl}", "--pred", "{pred.csv}"], "bad_utf8.jsonl: row 1: bytes at offset"),
    (["score", "--gold", "{train.csv}", "--pred", "{dup_key.json}"], "the key 'TRAIN_000' occurs twice"),
    (["score", "--gold", "{train.csv}", "--pred", "{number.json}"], "the answer for id 'TRAIN_000' is a JSON int"),
    (["score", "--gold", "{train.csv}", "--pred", "{foreign.csv}"], "predictions for another test set"),
    (["score", "--gold", "{train.csv}", "--pred", "{dup_pred.csv}"], "dup_pred.csv: row 3: field 'id': duplicate"),
    (["score", "--gold", "{secret_header.csv}", "--pred", "{pred.csv}"], "missing column(s) id, context, question"),
    (["submit", "--pred", "{pred.csv}", "--sample", "{sample.csv}", "--out", "{pred.csv}"], "is one of the input"),
    (["submit", "--pred", "{pred.csv}", "--sample", "{sample.csv}", "--out", "{sample.csv}"], "is one of the input"),
    (
        [
            "submit",
            "--pred",
            "{pred.csv}",
            "--sample",
            "{sample.csv}",
            "--out",
            "o.csv",
            "--empty",
            "fill",
            "--fill-text",
            "",
        ],
        "--empty fill needs a non-empty --fill-text",
    ),
    (["submit", "--pred", "{foreign.csv}", "--sample", "{sample.csv}", "--out", "o.csv"], "another test set"),
    (["preprocess", "{not_span.csv}", "--out", "o"], "not_span.csv: row 2: field 'answer': answer '부산' does not"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:3]) for a, _ in CASES])
def test_hostile_input_is_one_line_with_status_2(tmp_path, args, message):
    made = files(tmp_path)
    argv = [
        arg.format(**{k.replace(".", "_"): v for k, v in made.items()}) if arg.startswith("{") else arg
        for arg in [a.replace(".", "_") if a.startswith("{") else a for a in args]
    ]
    result = subprocess.run(
        [sys.executable, "-m", "koqa.cli", *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message in result.stderr
    assert "Z" * 30 not in result.stderr and "Q" * 30 not in result.stderr  # no secret echoed
