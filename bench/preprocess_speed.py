"""Preprocessing speed: 33,716 records (the Dacon train size, built by repeating KorQuAD records)
with model-tokenizer token counts, kiwipiepy morpheme counts and sentence counts.

    .venv/bin/python bench/preprocess_speed.py

Prints, side by side: koqa's batched counting, the same work as a plain per-row Python loop, and
the whole `koqa preprocess` (read, normalise, count, report, split, write).  Run twice: once as a
Dacon-like set (questions share contexts), once with every record given its own context (the worst
case: nothing is counted once for several questions).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import KORQUAD, Results  # noqa: E402

N = 33_716


def build(unique_contexts: bool):
    from koqa.data_tools.readers import read_squad_json

    base = read_squad_json(KORQUAD).records
    records = []
    for i in range(N):
        r = base[i % len(base)]
        copy = i // len(base)
        context = r.context + (f" (사본 {i})" if unique_contexts else "")
        records.append(
            type(r)(
                id=f"{r.id}-{copy}",
                context=context,
                question=r.question,
                answers=list(r.answers),
                answer_starts=list(r.answer_starts),
                source=r.source,
                row=r.row,
                title=r.title,
            )
        )
    return records


def as_squad(records, path: Path):
    paragraphs = {}
    for r in records:
        paragraphs.setdefault(r.context, []).append(
            {
                "id": r.id,
                "question": r.question,
                "answers": [{"text": r.answers[0], "answer_start": r.answer_starts[0]}],
            }
        )
    doc = {"data": [{"title": "bench", "paragraphs": [{"context": c, "qas": q} for c, q in paragraphs.items()]}]}
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def main() -> None:
    from transformers import AutoTokenizer

    from koqa.data_tools.morphemes import kiwi
    from koqa.data_tools.stats import count_records, count_records_per_row
    from koqa.model_store import prepare_default_model
    from koqa.preprocess import PreprocessConfig, preprocess
    from koqa.prompting import PromptRenderer, PromptTemplate

    model = prepare_default_model()
    tokenizer = AutoTokenizer.from_pretrained(model)
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"))
    kiwi()  # load the analyser outside the timings
    rows = []
    for label, unique in (("Dacon-like (shared contexts)", False), ("one context per record", True)):
        records = build(unique)
        started = time.perf_counter()
        fast = count_records(records, tokenizer, renderer.frame_lengths)
        batched = time.perf_counter() - started
        started = time.perf_counter()
        slow = count_records_per_row(records, tokenizer, renderer)
        loop = time.perf_counter() - started
        assert fast == slow, "the batched and per-row counts must agree"
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "bench.json"
            as_squad(records, data)
            started = time.perf_counter()
            preprocess(PreprocessConfig(inputs=[str(data)], out=str(Path(tmp) / "out")))
            whole = time.perf_counter() - started
        distinct = len({r.context for r in records})
        rows.append(
            [
                label,
                f"{len(records):,}",
                f"{distinct:,}",
                f"{batched:.1f}",
                f"{loop:.1f}",
                f"{loop / batched:.1f}x",
                f"{whole:.1f}",
                "yes" if whole <= 60 else "NO",
            ]
        )
    results = Results("preprocess_speed", "Preprocessing speed — bench/preprocess_speed.py")
    print(
        results.table(
            [
                "records",
                "n",
                "distinct contexts",
                "koqa counting s",
                "per-row loop s",
                "speed-up",
                "whole koqa preprocess s",
                "<= 60 s",
            ],
            rows,
        )
    )
    print(
        results.note(
            f"The {N:,} records repeat KorQuAD's 5,774 questions, so most questions are exact copies, "
            "which the counting does once; the Dacon training set has a distinct question on every row."
        )
    )
    results.write()


if __name__ == "__main__":
    main()
