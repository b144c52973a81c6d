"""Token, morpheme and sentence counts per record, and the length-statistics report.

Counting is batched: every distinct text is tokenized once (questions share contexts), the model
tokenizer encodes whole batches in Rust, and kiwipiepy analyses the batch on all cores while the
tokenizer counts: in a process of its own in `koqa preprocess` (`KiwiProcess`, which loads kiwipiepy
while the input is read), else on a thread.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from koqa.data_tools.morphemes import SENTENCE_FINAL, Background, KiwiProcess, kiwi
from koqa.data_tools.records import QARecord

PERCENTILES = (50, 90, 95, 99)


@dataclass
class RecordCounts:
    context_tokens: int
    question_tokens: int
    answer_tokens: int
    prompt_tokens: int
    context_morphemes: int
    question_morphemes: int
    answer_morphemes: int
    context_sentences: int
    answer_words: int


def _unique(texts: Sequence[str]) -> tuple[list[str], list[int]]:
    index: dict[str, int] = {}
    positions = [index.setdefault(t, len(index)) for t in texts]
    return list(index), positions


def token_counts(tokenizer, texts: Sequence[str], batch_size: int = 1024) -> list[int]:
    uniq, pos = _unique(texts)
    counts: list[int] = []
    for i in range(0, len(uniq), batch_size):
        enc = tokenizer(uniq[i : i + batch_size], add_special_tokens=False)
        counts.extend(len(ids) for ids in enc["input_ids"])
    return [counts[p] for p in pos]


def morpheme_counts(texts: Sequence[str]) -> tuple[list[int], list[int]]:
    """(morphemes, sentences) per text; a sentence ends at Kiwi's sentence-final punctuation."""
    uniq, pos = _unique(texts)
    morphemes, sentences = [], []
    for text, tokens in zip(uniq, kiwi().tokenize(uniq)):
        morphemes.append(len(tokens))
        ends = sum(1 for t in tokens if t.tag == SENTENCE_FINAL)
        tail = bool(tokens) and tokens[-1].tag != SENTENCE_FINAL
        sentences.append(ends + int(tail) if text.strip() else 0)
    return [morphemes[p] for p in pos], [sentences[p] for p in pos]


@dataclass
class RecordMorphemes:
    contexts: list[int]
    context_sentences: list[int]
    questions: list[int]
    answers: list[int]


def _answers(records: Sequence[QARecord]) -> list[str]:
    return [r.answers[0] if r.answers else "" for r in records]


def text_morphemes(contexts: Sequence[str], questions: Sequence[str], answers: Sequence[str]) -> RecordMorphemes:
    ctx_m, ctx_s = morpheme_counts(contexts)
    q_m, _ = morpheme_counts(questions)
    a_m, _ = morpheme_counts(answers)
    return RecordMorphemes(ctx_m, ctx_s, q_m, a_m)


def count_morphemes_in_background(
    records: Sequence[QARecord], process: KiwiProcess | None = None
) -> Background[RecordMorphemes] | KiwiProcess[RecordMorphemes]:
    """Start the kiwipiepy analysis, the longest part of counting, beside the caller: in `process`
    (started earlier, so that kiwipiepy has loaded there meanwhile), else on a thread of this process
    with its shared analyser. `.result()` waits for it."""
    texts = ([r.context for r in records], [r.question for r in records], _answers(records))
    if process is None:
        return Background(text_morphemes, *texts)
    return process.submit(text_morphemes, *texts)


@dataclass
class RecordTokens:
    contexts: list[int]
    questions: list[int]
    answers: list[int]
    prompts: list[int]  # the whole rendered prompt, before any cutting


def record_tokens(
    records: Sequence[QARecord], tokenizer, frame_lengths: Callable[[Sequence[str]], list[int]]
) -> RecordTokens:
    """Model-tokenizer counts; `frame_lengths(questions)` gives the prompt tokens around the context."""
    questions = [r.question for r in records]
    contexts = token_counts(tokenizer, [r.context for r in records])
    frame = frame_lengths(questions)
    return RecordTokens(
        contexts,
        token_counts(tokenizer, questions),
        token_counts(tokenizer, _answers(records)),
        [f + c for f, c in zip(frame, contexts)],
    )


def combine_counts(
    records: Sequence[QARecord], tokens: RecordTokens, morphemes: RecordMorphemes
) -> list[RecordCounts]:
    return [
        RecordCounts(
            tokens.contexts[i],
            tokens.questions[i],
            tokens.answers[i],
            tokens.prompts[i],
            morphemes.contexts[i],
            morphemes.questions[i],
            morphemes.answers[i],
            morphemes.context_sentences[i],
            len(answer.split()),
        )
        for i, answer in enumerate(_answers(records))
    ]


def count_records(
    records: Sequence[QARecord],
    tokenizer,
    frame_lengths: Callable[[Sequence[str]], list[int]],
    process: KiwiProcess | None = None,
) -> list[RecordCounts]:
    """Every count of every record, the morpheme analysis running alongside the token counts (in
    `process` if given, see count_morphemes_in_background)."""
    morphemes = count_morphemes_in_background(records, process)
    tokens = record_tokens(records, tokenizer, frame_lengths)
    return combine_counts(records, tokens, morphemes.result())


def count_records_per_row(records: Sequence[QARecord], tokenizer, renderer) -> list[RecordCounts]:
    """The same counts by a plain per-row loop: the baseline the benchmark compares against."""
    out = []
    analyser = kiwi()
    for r in records:
        answer = r.answers[0] if r.answers else ""
        ctx_tokens = analyser.tokenize(r.context)
        out.append(
            RecordCounts(
                len(tokenizer(r.context, add_special_tokens=False).input_ids),
                len(tokenizer(r.question, add_special_tokens=False).input_ids),
                len(tokenizer(answer, add_special_tokens=False).input_ids),
                renderer.prompt_length(r.context, r.question),
                len(ctx_tokens),
                len(analyser.tokenize(r.question)),
                len(analyser.tokenize(answer)),
                sum(1 for t in ctx_tokens if t.tag == SENTENCE_FINAL)
                + int(bool(ctx_tokens) and ctx_tokens[-1].tag != SENTENCE_FINAL),
                len(answer.split()),
            )
        )
    return out


def distribution(values: Sequence[float]) -> dict[str, float]:
    if not len(values):
        return {"count": 0}
    arr = np.asarray(values, dtype=float)
    out = {"count": int(arr.size), "mean": round(float(arr.mean()), 2), "min": float(arr.min())}
    out.update({f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES})
    out["max"] = float(arr.max())
    return out


def special_characters(texts: Sequence[str], top: int = 20) -> dict[str, int]:
    every = Counter("".join(texts))  # counted in C; the categories are looked up once per distinct character
    counter = Counter({ch: n for ch, n in every.items() if unicodedata.category(ch)[0] in "PS"})
    return dict(counter.most_common(top))


def build_stats(
    records: Sequence[QARecord], counts: Sequence[RecordCounts], *, max_length: int, answer_in_context: Sequence[bool]
) -> dict:
    field_names = RecordCounts.__dataclass_fields__
    has_answers = [bool(r.answers) for r in records]
    stats = {
        "records": len(records),
        "distinct_contexts": len({r.context for r in records}),
        "with_answers": int(sum(has_answers)),
        "unanswerable": sum(r.unanswerable for r in records),
        "max_length": max_length,
        "prompts_over_max_length": int(sum(c.prompt_tokens > max_length for c in counts)),
        "answer_in_context_rate": (round(sum(answer_in_context) / sum(has_answers), 4) if any(has_answers) else None),
        "distributions": {
            name: distribution(
                [getattr(c, name) for c, a in zip(counts, has_answers) if a or not name.startswith("answer")]
            )
            for name in field_names
        },
        "special_characters": {
            "answers": special_characters([r.answers[0] for r in records if r.answers]),
            "questions": special_characters([r.question for r in records]),
            "contexts": special_characters(list({r.context for r in records})),
        },
    }
    return stats


def stats_markdown(stats: dict, title: str = "koqa preprocess statistics") -> str:
    lines = [
        f"# {title}",
        "",
        f"- records: {stats['records']} ({stats['distinct_contexts']} distinct contexts, "
        f"{stats['with_answers']} with answers"
        + (f", {stats['unanswerable']} unanswerable)" if stats.get("unanswerable") else ")"),
        f"- prompts over max_length ({stats['max_length']} tokens): {stats['prompts_over_max_length']}"
        " (their context is shortened; instruction, question and answer cue are kept)",
    ]
    if stats.get("corrected_answer_starts"):
        moved = stats["corrected_answer_starts"]
        lines.append(f"- answer_start offsets moved to the nearest occurrence of their answer: {moved}")
    if stats["answer_in_context_rate"] is not None:
        lines.append(f"- normalised answer still a span of its context: {stats['answer_in_context_rate']:.2%}")
    lines += [
        "",
        "## Length distributions",
        "",
        "| field | mean | min | p50 | p90 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in stats["distributions"].items():
        if d.get("count"):
            lines.append(
                f"| {name} | {d['mean']} | {d['min']:g} | "
                + " | ".join(f"{d[f'p{p}']:g}" for p in PERCENTILES)
                + f" | {d['max']:g} |"
            )
    lines += ["", "## Special characters (most frequent)", ""]
    for where, freq in stats["special_characters"].items():
        shown = ", ".join(f"`{ch}` {n}" for ch, n in freq.items()) or "none"
        lines.append(f"- {where}: {shown}")
    return "\n".join(lines) + "\n"


def prompt_length_histogram(prompt_tokens: Sequence[int], max_length: int, path) -> None:
    from koqa.plots import new_figure, write_png

    fig, ax = new_figure()
    ax.hist(prompt_tokens, bins=50, color="#4477aa")
    ax.axvline(max_length, color="#cc3311", linestyle="--", label=f"max_length = {max_length}")
    ax.set_xlabel("prompt tokens (model tokenizer, before cutting)")
    ax.set_ylabel("records")
    ax.legend()
    write_png(fig, path)
