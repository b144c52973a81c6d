"""Preprocessing speed: 33,716 records (the Dacon train size) with model-tokenizer token counts,
kiwipiepy morpheme counts and sentence counts.

    .venv/bin/python bench/preprocess_speed.py [--no-loop]

The records are KorQuAD's 5,774 questions copied until there are 33,716; each copy of a question opens
differently ("기사에 따르면 ...", "본문을 보면 ..."), so that every question is distinct, as in Dacon, while
the passages are shared as in Dacon. Prints, side by side: koqa's batched counting, the same work as a
plain per-row Python loop, and the whole `koqa preprocess` in a fresh process as a user runs it
(start-up, read, normalise, count, report, split, write), for that set (the headline), for the same
set with the copies left identical (which the counting does once: it measures deduplication), and
with every record given its own passage (the worst case: nothing is counted once for several
questions).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import KORQUAD, Results  # noqa: E402

N = 33_716
TARGET_SECONDS = 20  # the whole `koqa preprocess` of the Dacon-like set


# How a reader may ask the same thing again: the copies of a KorQuAD question differ by their opening,
# so that every question is distinct, as in Dacon (the wording varies, the passage does not).
OPENINGS = ("", "기사에 따르면 ", "본문을 보면 ", "글에 따르면 ", "위 글에서 ", "이 기사에서 ", "지문에서 ")


def build(unique_contexts: bool, distinct_questions: bool = True):
    from koqa.data_tools.readers import read_squad_json

    base = read_squad_json(KORQUAD).records
    records, seen = [], set()
    for i in range(N):
        r = base[i % len(base)]
        copy = i // len(base)
        context = r.context + (f" (사본 {i})" if unique_contexts else "")
        question = (OPENINGS[copy] + r.question) if distinct_questions else r.question
        if distinct_questions and question in seen:  # KorQuAD asks a few questions twice
            question = f"{question} ({copy + 1})"
        seen.add(question)
        records.append(
            type(r)(
                id=f"{r.id}-{copy}",
                context=context,
                question=question,
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
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-loop", action="store_true", help="leave the per-row loop out (it takes minutes)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of the headline command; its median is reported (default: 3)"
    )
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from koqa.data_tools.morphemes import kiwi
    from koqa.data_tools.stats import count_records, count_records_per_row
    from koqa.model_store import prepare_default_model
    from koqa.prompting import PromptRenderer, PromptTemplate

    model = prepare_default_model()
    tokenizer = AutoTokenizer.from_pretrained(model)
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"))
    kiwi()  # load the analyser outside the timings
    rows = []
    cases = (
        ("distinct questions, shared passages (Dacon-like)", False, True),
        ("identical copies of KorQuAD questions", False, False),
        ("distinct questions, one passage each", True, True),
    )
    for label, unique, distinct in cases:
        records = build(unique, distinct)
        started = time.perf_counter()
        fast = count_records(records, tokenizer, renderer.frame_lengths)
        batched = time.perf_counter() - started
        loop = None
        if not args.no_loop:
            started = time.perf_counter()
            slow = count_records_per_row(records, tokenizer, renderer)
            loop = time.perf_counter() - started
            assert fast == slow, "the batched and per-row counts must agree"
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "bench.json"
            as_squad(records, data)
            # the command as a user runs it: a fresh process, its imports and model loads included
            command = [sys.executable, "-m", "koqa.cli", "preprocess", str(data), "--out", str(Path(tmp) / "out")]
            times = []
            for _ in range(args.repeats if not rows else 1):  # the headline row is run --repeats times
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times.append(time.perf_counter() - started)
            whole = statistics.median(times)
        rows.append(
            [
                label,
                f"{len(records):,}",
                f"{len({r.question for r in records}):,}",
                f"{len({r.context for r in records}):,}",
                f"{batched:.1f}",
                f"{loop:.1f}" if loop else "—",
                f"{loop / batched:.1f}x" if loop else "—",
                f"{whole:.1f}" + (f" ({min(times):.1f}–{max(times):.1f})" if len(times) > 1 else ""),
                "yes" if whole <= TARGET_SECONDS else "NO",
            ]
        )
    results = Results("preprocess_speed", "Preprocessing speed — bench/preprocess_speed.py")
    print(
        results.table(
            [
                "records",
                "n",
                "distinct questions",
                "distinct passages",
                "koqa counting s",
                "per-row loop s",
                "speed-up",
                "`koqa preprocess` s (fresh process; headline: median (min–max))",
                f"<= {TARGET_SECONDS} s",
            ],
            rows,
        )
    )
    print(
        results.note(
            "The first row is the headline: every question distinct, as in Dacon, with the copies' wording "
            "made up by varied openings; its command ran --repeats times (the median against the target, "
            "the range beside it). The second row's copies are "
            "identical, so its counting mostly measures deduplication."
        )
    )
    results.write()


if __name__ == "__main__":
    main()
