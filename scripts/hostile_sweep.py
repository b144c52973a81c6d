"""A hostile user's sweep of koqa's surfaces, through the real command line, checking the promises the
README makes for bad input:

- refused input exits with status 2 and one `koqa CMD: error: ...` line, no traceback;
- a refused command writes nothing and changes nothing; an accepted one writes only inside its --out;
- no file koqa did not write is removed or changed;
- a planted token-shaped secret never appears in what koqa prints or writes.

Each case names its class (the robustness issue's six), the command and what should happen:
`refused` (with words the error must contain), `ok`, or `ok+notice` (exit 0 with words on stderr).

    .venv/bin/python scripts/hostile_sweep.py [--out runs/hostile] [--only CLASS] [--python PY] [--timeout S]

`--python` runs the cases under another interpreter (another checkout's code, to count what failed
there). The table of cases and results goes to OUT/hostile_sweep.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECRET = "hf_" + "Qx7" * 10
HEADER = ["id", "context", "question", "answer"]
ROWS = [
    ("Q1", "한빛전자는 3분기 매출이 1,200억 원으로 늘었다고 밝혔다.", "한빛전자의 3분기 매출은?", "1,200억 원"),
    ("Q2", "한국은행은 기준금리를 연 3.25%로 동결했다. 물가는 2.4% 올랐다.", "기준금리는?", "3.25%"),
    ("Q3", "누리바이오의 김민준 대표는 2027년 완공을 목표로 한다고 말했다.", "누리바이오의 대표는?", "김민준"),
    ("Q4", "코스피는 2,650.12에 마감했다. 외국인이 순매수했다.", "코스피 종가는?", "2,650.12"),
]
CLASSES = ("data loss", "silent wrong result", "setting not honoured", "secret echoed", "traceback", "guidance")


@dataclass
class Case:
    cls: str
    name: str
    args: list  # koqa arguments; "{d}" is the case's folder; ["python", CODE] runs Python instead
    expect: str = "refused"  # refused | ok | ok+notice | raises (a KoqaError from the Python API)
    says: str = ""  # words the error (or notice) must contain
    out: str | None = None  # the --out this case may write in (relative to the case folder)
    files: dict = field(default_factory=dict)  # relative path -> text or bytes, written before
    setup: str | None = None  # a named fixture copied in: "run[+variant]" (a trained tiny run), "datasets"
    check: Callable[[Path], str | None] | None = None  # what an accepted case must have written (None: fine)


def csv_text(rows=ROWS, header=HEADER) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def squad_text(start_of=lambda context, answer: context.index(answer)) -> str:
    paragraphs = [
        {
            "context": c,
            "qas": [{"id": i, "question": q, "answers": [{"text": a, "answer_start": start_of(c, a)}]}],
        }
        for i, c, q, a in ROWS
    ]
    return json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}, ensure_ascii=False)


def predictions_csv(question="q") -> str:
    rows = [(i, f"{question}{i}", a, a, "1.0", "1.0") for i, _, _, a in ROWS]
    return csv_text(rows, ["id", "question", "answer", "prediction", "f1", "em"])


TRAIN = {"train.csv": csv_text()}
TINY = ["--set", "max_length=256", "--set", "batch_size=2", "--set", "validation_limit=0", "--max-steps", "1"]


def data_loss_cases() -> list[Case]:
    """--out over, inside or around an input, or over another command's folder, for every writer."""
    cases = []
    forms = {
        "the input file": "{d}/data/train.csv",
        "the input's folder": "{d}/data",
        "a folder above the input": "{d}",
    }
    files = {"data/train.csv": csv_text(), "data/keep.txt": "a user's own file"}
    for form, out in forms.items():
        cases += [
            Case(
                "data loss",
                f"preprocess --out {form}",
                ["preprocess", "{d}/data/train.csv", "--out", out],
                files=files,
            ),
            Case(
                "data loss",
                f"sft --out {form}",
                ["sft", "--data", "{d}/data/train.csv", "--out", out, *TINY],
                files=files,
            ),
            Case(
                "data loss",
                f"eval --out {form}",
                ["eval", "--data", "{d}/data/train.csv", "--out", out, "--backend", "hf"],
                files=files,
            ),
            Case(
                "data loss",
                f"score --out {form}",
                ["score", "--gold", "{d}/data/train.csv", "--pred", "{d}/data/train.csv", "--out", out],
                files=files,
            ),
            Case(
                "data loss",
                f"sweep --out {form}",
                ["sweep", "--data", "{d}/data/train.csv", "--out", out],
                files=files,
            ),
        ]
    for target in ("{d}/run", "{d}/run/adapter", "{d}/run/checkpoints"):
        cases += [
            Case(
                "data loss",
                f"merge --out {target[4:]}",
                ["merge", "--adapter", "{d}/run", "--out", target],
                setup="run",
            ),
            Case(
                "data loss",
                f"eval --adapter run --out {target[4:]}",
                ["eval", "--data", "{d}/train.csv", "--adapter", "{d}/run", "--out", target, "--backend", "hf"],
                setup="run",
                files=TRAIN,
            ),
        ]
    cases += [
        Case(
            "data loss",
            "sft --out another run",
            ["sft", "--data", "{d}/train.csv", "--out", "{d}/run"],
            setup="run",
            files=TRAIN,
        ),
        Case(
            "data loss",
            "preprocess --out a run",
            ["preprocess", "{d}/train.csv", "--out", "{d}/run"],
            setup="run",
            files=TRAIN,
        ),
        Case(
            "data loss",
            "compare --out one of its runs",
            ["compare", "{d}/a", "{d}/b", "--out", "{d}/a"],
            files={"a/predictions.csv": predictions_csv(), "b/predictions.csv": predictions_csv()},
        ),
        Case(
            "data loss",
            "submit --out over the sample",
            ["submit", "--pred", "{d}/p.csv", "--sample", "{d}/s.csv", "--out", "{d}/s.csv"],
            files={"p.csv": "id,answer\nQ1,a\n", "s.csv": "id,answer\nQ1,\n"},
        ),
        Case(
            "data loss",
            "sweep variant named ..",
            [
                "sweep",
                "--data",
                "{d}/train.csv",
                "--out",
                "{d}/s",
                "--variant",
                "..:lora_r=8",
                "--variant",
                "../x:lora_r=4",
            ],
            files=TRAIN,
            expect="refused",
        ),
        Case(
            "data loss",
            "preprocess twice into its input folder",
            ["preprocess", "{d}/pp/train.jsonl", "--out", "{d}/pp"],
            files={"pp/train.jsonl": "\n".join(json.dumps(dict(zip(HEADER, r)), ensure_ascii=False) for r in ROWS)},
        ),
    ]
    return cases


def silent_cases() -> list[Case]:
    cases = []
    starts = {
        "wrong offset": lambda c, a: 1,
        "negative offset": lambda c, a: -5,
        "offset past the end": lambda c, a: 10_000,
        "offset as a string": lambda c, a: "x",
        "offset as a boolean": lambda c, a: True,
        "offset as a float": lambda c, a: 1.5,
    }
    for name, start in starts.items():
        refused = name not in ("wrong offset", "negative offset", "offset past the end")
        cases.append(
            Case(
                "silent wrong result",
                f"SQuAD answer_start: {name}",
                ["preprocess", "{d}/d.json", "--out", "{d}/o"],
                expect="refused" if refused else "ok+notice",
                says="answer_start" if refused else "moved to the nearest occurrence",
                out="o",
                files={"d.json": squad_text(start)},
            )
        )
    nfd = [(i, unicodedata.normalize("NFD", c), q, unicodedata.normalize("NFD", a)) for i, c, q, a in ROWS]
    cases += [
        Case(
            "silent wrong result",
            "NFD gold scored against NFC predictions",
            ["score", "--gold", "{d}/g.csv", "--pred", "{d}/p.csv", "--out", "{d}/o"],
            expect="ok",
            out="o",
            files={"g.csv": csv_text(nfd), "p.csv": csv_text([(i, a) for i, _, _, a in ROWS], ["id", "answer"])},
            check=lambda d: metric_is(d / "o" / "metrics.json", "exact_match", 1.0),
        ),
        Case(
            "silent wrong result",
            "gold answer equal to the no-answer text",
            ["eval", "--data", "{d}/g.csv", "--out", "{d}/o", "--backend", "hf"],
            says="no-answer text",
            files={"g.csv": csv_text([*ROWS, ("Q9", "모르면 답 없음이라고 쓴다.", "무엇이라 쓰나?", "답 없음")])},
        ),
        Case(
            "silent wrong result",
            "answers column under another name",
            ["preprocess", "{d}/g.csv", "--out", "{d}/o"],
            expect="ok+notice",
            says="columns not read: gold",
            out="o",
            files={"g.csv": csv_text(header=["id", "context", "question", "gold"])},
        ),
        Case(
            "silent wrong result",
            "--columns maps two fields to one column",
            ["preprocess", "{d}/g.csv", "--out", "{d}/o", "--columns", "question=context"],
            files=TRAIN | {"g.csv": csv_text()},
        ),
        Case(
            "silent wrong result",
            "compare: same ids, other questions",
            ["compare", "{d}/a", "{d}/b"],
            says="other questions under the same ids",
            files={"a/predictions.csv": predictions_csv("q"), "b/predictions.csv": predictions_csv("other ")},
        ),
        Case(
            "silent wrong result",
            "a broken best/ beside the final adapter",
            ["eval", "--data", "{d}/train.csv", "--adapter", "{d}/run", "--out", "{d}/o", "--backend", "hf"],
            says="best adapter is missing",
            setup="run+broken-best",
            files=TRAIN,
        ),
        Case(
            "silent wrong result",
            "ensemble: one adapter in two spellings",
            ["eval", "--data", "{d}/train.csv", "--adapter", "{d}/run", "--adapter", "{d}/run/", "--out", "{d}/o"],
            says="same adapter",
            setup="run",
            files=TRAIN,
        ),
        Case(
            "silent wrong result",
            "ensemble: a run and its copy",
            ["eval", "--data", "{d}/train.csv", "--adapter", "{d}/run", "--adapter", "{d}/copy", "--out", "{d}/o"],
            says="same adapter",
            setup="run+copy",
            files=TRAIN,
        ),
        Case(
            "silent wrong result",
            "a question without an answer among answered ones",
            ["preprocess", "{d}/g.csv", "--out", "{d}/o"],
            says="field 'answer'",
            files={"g.csv": csv_text([*ROWS, ("Q9", "본문이다.", "질문?", "")])},
        ),
        Case(
            "silent wrong result",
            "duplicate ids",
            ["preprocess", "{d}/g.csv", "--out", "{d}/o"],
            says="duplicate",
            files={"g.csv": csv_text([*ROWS, ROWS[0]])},
        ),
    ]
    return cases


def settings_cases() -> list[Case]:
    cases = []
    # small runs: under code that accepts a case, it trains one short step, not a whole epoch
    sft = ["sft", "--data", "{d}/train.csv", "--out", "{d}/o", *TINY]
    others = {
        "lora": ["num_virtual_tokens=4", "prompt_init_text=x"],
        "prefix": ["lora_r=8", "lora_alpha=8", "lora_dropout=0.1", "target_modules=[q_proj]", "skip_layers=1"],
        "prompt": ["lora_r=8", "use_dora=true", "loraplus_lr_ratio=4"],
    }
    for method, sets in others.items():
        for item in sets:
            key = item.split("=")[0]
            cases.append(
                Case(
                    "setting not honoured",
                    f"{key} with --method {method}",
                    [*sft, "--method", method, "--set", item],
                    says=key,
                    files=TRAIN,
                )
            )
    for item in ("eval_limit=10", "eval_backend=hf", "early_stopping_patience=2", "max_questions_per_context=4"):
        cases.append(
            Case(
                "setting not honoured",
                f"{item} where it cannot act",
                [*sft, "--set", item],
                says=item.split("=")[0],
                files=TRAIN,
            )
        )
    cases += [
        Case(
            "setting not honoured",
            "lr_scheduler polynomial over minutes",
            [*sft, "--max-minutes", "1", "--set", "schedule_over=minutes", "--set", "lr_scheduler=polynomial"],
            says="lr_scheduler",
            files=TRAIN,
        ),
        Case(
            "setting not honoured",
            "lr_scheduler bogus",
            [*sft, "--set", "lr_scheduler=bogus"],
            says="lr_scheduler",
            files=TRAIN,
        ),
        Case(
            "setting not honoured",
            "warmup_ratio 1",
            [*sft, "--set", "warmup_ratio=1"],
            says="warmup_ratio",
            files=TRAIN,
        ),
        Case(
            "setting not honoured",
            "schedule over minutes without a budget",
            [*sft, "--set", "schedule_over=minutes"],
            says="max_minutes",
            files=TRAIN,
        ),
    ]
    ev = ["eval", "--data", "{d}/train.csv", "--out", "{d}/o"]
    for backend, flags, key in (
        ("hf", ["--vllm-compile"], "vllm_compile"),
        ("hf", ["--tensor-parallel-size", "2"], "tensor_parallel_size"),
        ("hf", ["--pipeline-parallel-size", "2"], "pipeline_parallel_size"),
        ("vllm", ["--batch-size", "4"], "batch_size"),
        ("vllm", ["--chunk-size", "4"], "chunk_size"),
    ):
        cases.append(
            Case(
                "setting not honoured",
                f"{key} with --backend {backend}",
                [*ev, "--backend", backend, *flags],
                says=key,
                files=TRAIN,
            )
        )
    parquet = {"d.parquet": None}  # written by the runner with pyarrow
    cases += [
        Case(
            "setting not honoured",
            "--encoding on parquet",
            ["preprocess", "{d}/d.parquet", "--out", "{d}/o", "--encoding", "cp949"],
            says="encoding",
            files=parquet,
        ),
        Case(
            "setting not honoured",
            "--columns on SQuAD JSON",
            ["preprocess", "{d}/d.json", "--out", "{d}/o", "--columns", "id=x"],
            says="columns",
            files={"d.json": squad_text()},
        ),
    ]
    for section, key, value in (
        ("sft", "out", "x"),
        ("sft", "data", "x"),
        ("sft", "resume", True),
        ("sft", "validation", "x"),
        ("eval", "adapter", ["x"]),
        ("eval", "data", "x"),
        ("eval", "out", "x"),
        ("eval", "limit", 3),
    ):
        sweep_file = json.dumps({section: {key: value}})
        cases.append(
            Case(
                "setting not honoured",
                f"sweep file's {section}: section sets {key}",
                ["sweep", "--config", "{d}/sweep.json", "--data", "{d}/pp", "--out", "{d}/s"],
                says=f"sets {key}",
                files={"sweep.json": sweep_file, "pp/train.jsonl": "{}\n", "pp/validation.jsonl": "{}\n"},
            )
        )
    grid = json.dumps({"grid": {f"k{i}": list(range(10)) for i in range(6)}})
    cases.append(
        Case(
            "setting not honoured",
            "a 10^6-variant grid",
            ["sweep", "--config", "{d}/g.json", "--data", "{d}/train.csv", "--out", "{d}/s"],
            says="variants",
            files=TRAIN | {"g.json": grid},
        )
    )
    for flag, value in (
        ("--max-length", "0"),
        ("--max-new-tokens", "-1"),
        ("--limit", "0"),
        ("--batch-size", "0"),
        ("--span", "bogus"),
        ("--checkpoint", "middle"),
        ("--dtype", "int3"),
        ("--korquad-split", "both"),
    ):
        cases.append(
            Case(
                "setting not honoured",
                f"eval {flag} {value}",
                [*ev, flag, value],
                says=flag.strip("-").split("-")[0],
                files=TRAIN,
            )
        )
    return cases


def secret_cases() -> list[Case]:
    s = SECRET
    sft = ["sft", "--data", "{d}/train.csv", "--out", "{d}/o"]
    return [
        Case("secret echoed", "token as a --set key", [*sft, "--set", f"{s}=1"], files=TRAIN),
        Case("secret echoed", "bare --set token", [*sft, "--set", s], files=TRAIN),
        Case("secret echoed", "token as a --set value", [*sft, "--set", f"template={s}"], files=TRAIN),
        Case("secret echoed", "token after a letter", [*sft, "--set", f"template=x{s}"], files=TRAIN),
        Case(
            "secret echoed",
            "token as hub_token in a config file",
            [*sft, "--config", "{d}/c.yaml"],
            files=TRAIN | {"c.yaml": f"hub_token: {s}\n"},
        ),
        Case(
            "secret echoed",
            "token as a column name (repeated header)",
            ["preprocess", "{d}/g.csv", "--out", "{d}/o"],
            files={"g.csv": f"id,context,question,answer,{s},{s}\nQ1,가,나,가,x,y\n"},
        ),
        Case(
            "secret echoed",
            "token in --columns",
            ["preprocess", "{d}/train.csv", "--out", "{d}/o", "--columns", f"answers={s}"],
            files=TRAIN,
        ),
        Case(
            "secret echoed",
            "token in a template file",
            [*sft, "--template", "{d}/t.txt"],
            files=TRAIN | {"t.txt": f"{s} {{context}} {{question}}\n"},
        ),
        Case("secret echoed", "token as --model", [*sft, "--model", s], files=TRAIN),
        Case("secret echoed", "token as an hf: id", ["preprocess", f"hf:{s}/x", "--out", "{d}/o"]),
        Case("secret echoed", "token in a data file's name", ["preprocess", f"{{d}}/{s}.csv", "--out", "{d}/o"]),
        Case(
            "secret echoed",
            "token in a bad row's field",
            ["preprocess", "{d}/g.csv", "--out", "{d}/o"],
            files={"g.csv": f"id,context,question,answer\nQ1,본문,질문,{s}\n"},
        ),
        Case("secret echoed", "token as --report-to", [*sft, "--report-to", s], files=TRAIN),
        Case(
            "secret echoed",
            "token in an eval --set",
            [
                "eval",
                "--data",
                "{d}/train.csv",
                "--out",
                "{d}/o",
                "--set",
                f"no_answer={s}",
                "--backend",
                "vllm",
                "--batch-size",
                "2",
            ],
            files=TRAIN,
        ),
        Case(
            "secret echoed",
            "token as a sweep variant name",
            ["sweep", "--data", "{d}/train.csv", "--out", "{d}/s", "--variant", f"{s}:lora_r=0"],
            files=TRAIN,
        ),
    ]


def traceback_cases() -> list[Case]:
    ev = ["eval", "--data", "{d}/train.csv", "--adapter", "{d}/run", "--out", "{d}/o", "--backend", "hf"]
    merge = ["merge", "--adapter", "{d}/run", "--out", "{d}/m"]
    cases = []
    for target in ("run/adapter/adapter_config.json", "run/koqa_run.json"):
        for what, content in (("bad JSON", "{"), ("a list", "[]"), ("binary", b"\xff\xfe\x00"), ("empty", "")):
            cases.append(
                Case(
                    "traceback",
                    f"eval: {target.split('/')[-1]} is {what}",
                    ev,
                    setup="run",
                    files=TRAIN | {target: content},
                )
            )
            cases.append(
                Case(
                    "traceback",
                    f"merge: {target.split('/')[-1]} is {what}",
                    merge,
                    setup="run",
                    files={target: content},
                )
            )
    cases += [
        Case("traceback", "eval: truncated adapter weights", ev, setup="run+truncated", files=TRAIN),
        Case("traceback", "merge: truncated adapter weights", merge, setup="run+truncated"),
        Case(
            "traceback",
            "compare: non-UTF-8 predictions.csv",
            ["compare", "{d}/a", "{d}/b"],
            files={
                "a/predictions.csv": predictions_csv(),
                "b/predictions.csv": predictions_csv("질문").encode("cp949"),
            },
        ),
        Case(
            "traceback",
            "compare: a folder with no predictions",
            ["compare", "{d}/a", "{d}/b"],
            files={"a/predictions.csv": predictions_csv(), "b/x": "x"},
        ),
        Case(
            "traceback",
            "eval --dtype fp16 with vLLM",
            [
                "eval",
                "--data",
                "{d}/train.csv",
                "--out",
                "{d}/o",
                "--dtype",
                "fp16",
                "--backend",
                "vllm",
                "--model",
                "{d}/../../fixtures/tiny-model",
                "--limit",
                "1",
            ],
            says="does not support float16",
            files=TRAIN,
        ),
        Case(
            "traceback",
            "eval --tensor-parallel-size 2 on a CPU",
            ["eval", "--data", "{d}/train.csv", "--out", "{d}/o", "--tensor-parallel-size", "2", "--backend", "vllm"],
            files=TRAIN,
        ),
        Case(
            "traceback",
            "sft --lr-scheduler bogus",
            ["sft", "--data", "{d}/train.csv", "--out", "{d}/o", "--set", "lr_scheduler=bogus"],
            files=TRAIN,
        ),
    ]
    for state in ("[]", "null", '{"_data_files": 3}', "{"):
        cases.append(
            Case(
                "traceback",
                f"datasets folder: state.json {state}",
                ["preprocess", "{d}/ds", "--out", "{d}/o"],
                setup="datasets",
                files={"ds/state.json": state},
            )
        )
    for hub in ("hf:csv:train", "hf:..", "hf:a", "hf:a/b/c", "hf:/etc", "hf:a/b:../x"):
        cases.append(Case("traceback", f"hub id {hub}", ["preprocess", hub, "--out", "{d}/o"]))
    for name, content in (
        ("binary config", b"\x00\xff\xfe"),
        ("a YAML list", "- a\n- b\n"),
        ("a YAML bomb", "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n"),
        ("a 10k-deep mapping", "a: " + "[" * 10000 + "]" * 10000 + "\n"),
    ):
        cases.append(
            Case(
                "traceback",
                f"--config is {name}",
                ["sft", "--config", "{d}/c.yaml", "--data", "{d}/train.csv", "--out", "{d}/o"],
                files=TRAIN | {"c.yaml": content},
            )
        )
    for name, content in (
        ("empty", ""),
        ("header only", "id,context,question,answer\n"),
        ("ragged", "id,context,question,answer\nQ1,가\n"),
        ("NUL byte", "id,context,question,answer\nQ1,가\x00,나,가\n"),
        ("UTF-16", csv_text().encode("utf-16")),
        ("a lone surrogate", csv_text().encode("utf-8") + b"Q9,\xed\xa0\x80,q,a\n"),
    ):
        cases.append(
            Case(
                "traceback",
                f"train.csv {name}",
                ["preprocess", "{d}/g.csv", "--out", "{d}/o"],
                files={"g.csv": content},
            )
        )
    for name, content in (
        ("truncated JSON", '{"data": [{"paragraphs": ['),
        ("data is a string", '{"data": "x"}'),
        ("qas a dict", '{"data": [{"paragraphs": [{"context": "가", "qas": {}}]}]}'),
    ):
        cases.append(
            Case(
                "traceback",
                f"SQuAD JSON {name}",
                ["preprocess", "{d}/d.json", "--out", "{d}/o"],
                files={"d.json": content},
            )
        )
    cases += [
        Case(
            "traceback",
            "eval: corrupted answer log on a re-run",
            ev,
            setup="run+answers",
            files=TRAIN | {"o/generations.jsonl": b"\xff\xfe{not json\n"},
            out="o",
        ),
        Case(
            "traceback",
            "sweep: corrupted variant settings on a re-run",
            ["sweep", "--data", "{d}/pp", "--out", "{d}/s"],
            files={"pp/train.jsonl": "{}\n", "s/base/run/koqa_run.json": "[", "s/base/run/checkpoints/x": ""},
        ),
    ]
    return cases


def guidance_cases() -> list[Case]:
    api = "from koqa import api as kq\n"
    return [
        Case(
            "guidance",
            "sweep --resume",
            ["sweep", "--data", "{d}/train.csv", "--out", "{d}/s", "--resume"],
            files=TRAIN,
        ),
        Case(
            "guidance",
            "eval of a run stopped before its adapter",
            ["eval", "--data", "{d}/train.csv", "--adapter", "{d}/run", "--out", "{d}/o"],
            says="--resume",
            setup="run+stopped",
            files=TRAIN,
        ),
        Case(
            "guidance",
            "score --format",
            ["score", "--gold", "{d}/train.csv", "--pred", "{d}/train.csv", "--format", "dacon"],
            files=TRAIN,
        ),
        Case(
            "guidance",
            "api.evaluate('train.csv')",
            ["python", api + "kq.evaluate('{d}/train.csv', out='{d}/o')"],
            expect="raises",
            says="data=",
            files=TRAIN,
        ),
        Case(
            "guidance",
            "sft --resume with no run",
            ["sft", "--data", "{d}/train.csv", "--out", "{d}/o", "--resume", *TINY],
            expect="ok+notice",
            says="no checkpoint to resume from",
            files=TRAIN,
        ),
        Case(
            "guidance",
            "eval of a folder that is no run",
            ["eval", "--data", "{d}/train.csv", "--adapter", "{d}/x", "--out", "{d}/o"],
            says="koqa sft",
            files=TRAIN | {"x/readme.txt": "x"},
        ),
        Case(
            "guidance",
            "submit without ids the sample has",
            ["submit", "--pred", "{d}/p.csv", "--sample", "{d}/s.csv", "--out", "{d}/sub.csv"],
            files={"p.csv": "id,answer\nQ1,a\n", "s.csv": "id,answer\nQ1,\nQ2,\n"},
        ),
    ]


def serve_export_cases() -> list[Case]:
    """koqa serve's settings (its requests have their own tests, tests/test_serve.py) and koqa export's
    outputs, settings and inputs."""
    export = ["export", "--adapter", "{d}/run"]
    serve = ["serve", "--port", "0", "--model", "{d}/none"]
    return [
        Case("data loss", "export --out the run", [*export, "--out", "{d}/run"], setup="run", says="is the"),
        Case("data loss", "export --out inside the run", [*export, "--out", "{d}/run/x"], setup="run", says="inside"),
        Case(
            "data loss",
            "export --out a user's folder",
            [*export, "--format", "hf", "--out", "{d}/mine"],
            setup="run",
            files={"mine/keep.txt": "a user's own file"},
            says="not a folder koqa export wrote",
        ),
        Case(
            "data loss",
            "export --out the --check data's folder",
            [*export, "--format", "hf", "--check", "{d}/data/train.csv", "--out", "{d}/data"],
            setup="run",
            files={"data/train.csv": csv_text()},
            says="contains",
        ),
        Case(
            "setting not honoured",
            "export --format hf with --quant",
            [*export, "--format", "hf", "--quant", "q4_0", "--out", "{d}/o"],
            setup="run",
            says="quant",
        ),
        Case(
            "setting not honoured",
            "export --limit without --check",
            [*export, "--limit", "5", "--out", "{d}/o"],
            setup="run",
            says="limit",
        ),  # fmt: skip
        Case(
            "setting not honoured",
            "export gguf of a Gemma 3 with another layer pattern",
            [*export, "--out", "{d}/o"],
            setup="run",
            says="every-sixth pattern",
        ),
        Case(
            "setting not honoured",
            "export --format hf writes the merged model",
            [*export, "--format", "hf", "--out", "{d}/o"],
            setup="run",
            expect="ok",
            out="o",
            check=lambda d: None if (d / "o" / "model" / "model.safetensors").is_file() else "no merged model",
        ),
        Case("setting not honoured", "serve --port 70000", [*serve, "--port", "70000"], says="port"),
        Case("setting not honoured", "serve on 0.0.0.0 without a token", [*serve, "--host", "0.0.0.0"], says="host"),
        Case("setting not honoured", "serve --set max_batch=0", [*serve, "--set", "max_batch=0"], says="max_batch"),
        Case(
            "setting not honoured",
            "serve --backend vllm with the batcher's max_batch",
            [*serve, "--backend", "vllm", "--set", "max_batch=8"],
            says="max_batch",
        ),
        Case("secret echoed", "serve: token as a --set key", [*serve, "--set", f"{SECRET}=1"]),
        Case(
            "secret echoed", "export: token as --model", [*export, "--model", SECRET, "--out", "{d}/o"], setup="run"
        ),  # fmt: skip
        Case(
            "traceback",
            "export of a run with truncated weights",
            [*export, "--format", "hf", "--out", "{d}/o"],
            setup="run+truncated",
            says="adapter",
        ),
        Case("traceback", "serve a folder that is not a model", ["serve", "--port", "0", "--model", "{d}"]),
    ]


CASES = [
    *data_loss_cases(),
    *silent_cases(),
    *settings_cases(),
    *secret_cases(),
    *traceback_cases(),
    *guidance_cases(),
    *serve_export_cases(),
]


def metric_is(path: Path, name: str, wanted: float) -> str | None:
    if not path.is_file():
        return f"no {path.name}"
    got = json.loads(path.read_text(encoding="utf-8")).get(name)
    return None if got == wanted else f"{name} {got}, not {wanted}"


def fingerprint(folder: Path) -> dict[str, str]:
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def prepare_fixtures(work: Path, python: str) -> dict[str, Path]:
    """A trained tiny run and a datasets folder, made once with this checkout's koqa."""
    sys.path.insert(0, str(REPO / "tests"))
    from koqa.model_store import prepare_default_model
    from tiny_model import build_tiny_model

    fixtures = {}
    model = work / "tiny-model"
    if not model.is_dir():
        build_tiny_model(model, prepare_default_model())
    run = work / "tiny-run"
    if not (run / "adapter").is_dir():
        (work / "train.csv").write_text(csv_text(), encoding="utf-8")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "koqa.cli",
                "sft",
                "--data",
                str(work / "train.csv"),
                "--out",
                str(run),
                "--model",
                str(model),
                *TINY,
            ],
            check=True,
            capture_output=True,
        )
    fixtures["run"] = run
    import datasets

    folder = work / "datasets"
    if not folder.is_dir():
        datasets.Dataset.from_list([dict(zip(HEADER, r)) for r in ROWS]).save_to_disk(str(folder))
    fixtures["datasets"] = folder
    return fixtures


def lay_out(case: Case, d: Path, fixtures: dict[str, Path]) -> None:
    if case.setup:
        kind, _, variant = case.setup.partition("+")
        if kind == "run":
            shutil.copytree(fixtures["run"], d / "run")
            if variant == "broken-best":
                (d / "run" / "best").mkdir()
            elif variant == "copy":
                shutil.copytree(fixtures["run"], d / "copy")
            elif variant == "truncated":
                weights = d / "run" / "adapter" / "adapter_model.safetensors"
                weights.write_bytes(weights.read_bytes()[:100])
            elif variant == "stopped":
                shutil.rmtree(d / "run" / "adapter")
            elif variant == "answers":
                pass
        elif kind == "datasets":
            shutil.copytree(fixtures["datasets"], d / "ds")
    for name, content in case.files.items():
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None and name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist([dict(zip(HEADER, r)) for r in ROWS]), path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def out_of(case: Case, args: list[str]) -> str | None:
    if case.out:
        return case.out
    for flag in ("--out",):
        if flag in args:
            return args[args.index(flag) + 1]
    return None


def outcome_problems(case: Case, rc: int, stdout: str, stderr: str, d: Path) -> list[str]:
    """The exit status and what was printed, against what the case expects."""
    broke = []
    if ("Traceback" in stderr and case.expect != "raises") or rc not in (0, 1, 2, 130):
        broke.append(f"traceback or crash (exit {rc})")
    if case.expect == "raises":  # the Python API: a KoqaError, its message one line naming the fix
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if rc != 1 or not last.startswith("koqa.errors.KoqaError: "):
            broke.append(f"exit {rc}, not a KoqaError: {last[:120]}")
        if case.says and case.says not in last:
            broke.append(f"the error does not say '{case.says}'")
        return broke
    if case.expect == "refused":
        errors = [line for line in stderr.splitlines() if "error" in line.lower()]
        if rc != 2:
            broke.append(f"exit {rc}, not 2")
        elif len(errors) != 1:
            broke.append(f"{len(errors)} error lines")
        if case.says and case.says not in stderr:
            broke.append(f"the error does not say '{case.says}'")
        return broke
    if rc != 0:
        broke.append(f"exit {rc}, not 0: {stderr.strip().splitlines()[-1][:160] if stderr.strip() else ''}")
    if case.expect == "ok+notice" and case.says and case.says not in stderr + stdout:
        broke.append(f"no notice saying '{case.says}'")
    problem = case.check(d) if case.check and rc == 0 else None
    return broke + ([problem] if problem else [])


def file_problems(case: Case, args: list[str], before: dict, after: dict, d: Path) -> list[str]:
    """A refused command changes nothing; an accepted one writes only inside its --out."""
    if case.expect == "refused" and before != after:
        return ["a refused command changed files"]
    out = out_of(case, args)
    out_rel = str(Path(out).relative_to(d)) if out and out.startswith(str(d) + "/") else (case.out or None)

    def inside(name: str) -> bool:
        return bool(out_rel) and (name == out_rel or name.startswith(out_rel + "/"))

    broke = [f"changed or removed {n}" for n, digest in before.items() if after.get(n) != digest and not inside(n)]
    return broke + [f"wrote {n} outside --out" for n in set(after) - set(before) if not inside(n)]


def secret_problems(case: Case, args: list[str], printed: str, before: dict, after: dict, d: Path) -> list[str]:
    """A planted secret is neither printed nor written into a new file."""
    planted = any(SECRET in a for a in args) or any(
        SECRET.encode() in (c if isinstance(c, bytes) else str(c).encode()) for c in case.files.values()
    )
    if not planted:
        return []
    broke = ["printed the secret"] if SECRET in printed else []
    return broke + [
        f"wrote the secret into {n}" for n in set(after) - set(before) if SECRET.encode() in (d / n).read_bytes()
    ]


def run_case(case: Case, d: Path, fixtures: dict, python: str, timeout: float = 300) -> dict:
    lay_out(case, d, fixtures)
    before = fingerprint(d)
    args = [a.replace("{d}", str(d)) for a in case.args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if args[0] == "python":
        command = [python, "-c", args[1]]
    else:
        command = [python, "-m", "koqa.cli", *args]
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=d, env=env, errors="replace"
        )
        rc, stdout, stderr = result.returncode, result.stdout, result.stderr
    except subprocess.TimeoutExpired:
        rc, stdout, stderr = -1, "", f"still running after {timeout} s (stopped)"
    seconds = time.perf_counter() - started
    after = fingerprint(d)
    broke = outcome_problems(case, rc, stdout, stderr, d) + file_problems(case, args, before, after, d)
    broke += secret_problems(case, args, stdout + stderr, before, after, d)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    return {
        "class": case.cls,
        "case": case.name,
        "expect": case.expect,
        "exit": rc,
        "held": not broke,
        "broke": broke,
        "said": last[:300],
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/hostile")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs koqa")
    parser.add_argument("--only", choices=CLASSES)
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds a case may run; one still running counts as broken"
    )
    args = parser.parse_args()
    out = Path(args.out).resolve()
    work = out / "fixtures"
    work.mkdir(parents=True, exist_ok=True)
    fixtures = prepare_fixtures(work, args.python)
    cases = [c for c in CASES if not args.only or c.cls == args.only]
    results = []
    for number, case in enumerate(cases, start=1):
        d = out / "cases" / f"{number:03d}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        result = run_case(case, d, fixtures, args.python, args.timeout)
        results.append(result)
        mark = "held " if result["held"] else "BROKE"
        print(
            f"{number:3d} {mark} [{case.cls}] {case.name}: {'; '.join(result['broke']) or result['said'][:100]}",
            flush=True,
        )
    by_class = {c: [r for r in results if r["class"] == c] for c in CLASSES}
    lines = ["| class | cases | held | broke |", "|---|---|---|---|"]
    for c, rows in by_class.items():
        if rows:
            lines.append(
                f"| {c} | {len(rows)} | {sum(r['held'] for r in rows)} | {sum(not r['held'] for r in rows)} |"
            )
    lines.append(
        f"| all | {len(results)} | {sum(r['held'] for r in results)} | {sum(not r['held'] for r in results)} |"
    )
    table = "\n".join(lines)
    print(table)
    (out / "hostile_sweep.json").write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    broken = [f"- [{r['class']}] {r['case']}: {'; '.join(r['broke'])}" for r in results if not r["held"]]
    (out / "hostile_sweep.md").write_text(table + "\n\n" + "\n".join(broken) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
