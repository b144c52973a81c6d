"""`koqa preprocess`: read, normalise, count, report and split."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from koqa.atomic import OutputFolder, atomic_path, write_json, write_text
from koqa.data_tools.morphemes import KiwiProcess
from koqa.data_tools.normalize import DEFAULT_STEPS, STEPS, build_normalizer, span_in_context
from koqa.data_tools.readers import FORMATS, ON_BAD_ROW, read_records
from koqa.data_tools.records import BadRow, QARecord, write_jsonl
from koqa.data_tools.split import korquad_article_split, split_by_context
from koqa.data_tools.stats import (
    build_stats,
    combine_counts,
    count_morphemes_in_background,
    prompt_length_histogram,
    record_tokens,
    stats_markdown,
)
from koqa.errors import KoqaError
from koqa.outputs import check_out
from koqa.settings import BELOW_ONE, POSITIVE, check, columns_setting, encoding_setting, setting

log = logging.getLogger(__name__)
SPLITS = ("context", "korquad-articles", "none")
# every file `koqa preprocess` may write into its --out folder
OUTPUTS = (
    "train.jsonl",
    "validation.jsonl",
    "all.jsonl",
    "rejected.csv",
    "stats.json",
    "stats.md",
    "data.html",
    "prompt_tokens_hist.png",
)


@dataclass
class PreprocessConfig:
    inputs: list[str] = setting(
        [],
        positional=True,
        required=True,
        help="Dacon CSV, SQuAD/KorQuAD JSON, JSONL, parquet or Arrow files, datasets folders, hf:OWNER/NAME[:split]",
    )
    out: str | None = setting(help="output folder", required=True)
    format: str = setting("auto", help="input format", choices=FORMATS)
    encoding: str = encoding_setting()
    columns: list[str] = columns_setting()
    on_bad_row: str = setting(
        "fail", choices=ON_BAD_ROW, help="fail on the first bad row, or exclude bad rows and list them in rejected.csv"
    )
    model: str | None = setting(
        help="local HF model folder or cached hub id whose tokenizer counts tokens "
        "(default: the embedded Gemma 3 270M)"
    )
    template: str = setting("ko_instruct", help="prompt template name in prompts/ or a file")
    max_length: int = setting(1024, help="prompt token limit reported on", check=POSITIVE)
    answer_normalization: list[str] = setting(
        list(DEFAULT_STEPS),
        flag="--normalize",
        choices=tuple(STEPS),
        help="comma-separated answer normalisation steps",
    )
    split: str = setting(
        "context", choices=SPLITS, help="train/validation split: by context hash, KorQuAD article index, or none"
    )
    validation_fraction: float = setting(0.1, help="share of questions for validation", check=BELOW_ONE)
    seed: int = setting(0, help="split seed")


def normalise_answers(records: Sequence[QARecord], steps: Sequence[str]) -> list[bool]:
    """Apply the normalisation steps to every answer; keep a normalised answer only when it is
    still a span of its context.  Returns, per record, whether the normalised answer is a span."""
    normalize = build_normalizer(steps)
    still_span = []
    for record in records:
        ok = True
        for i, answer in enumerate(record.answers):
            norm = normalize(answer)
            if not span_in_context(norm, record.context):
                ok = False
                continue
            record.answers[i] = norm
            start = record.answer_starts[i]
            if start < 0 or record.context[start : start + len(norm)] != norm:
                # the normalised text may start later (a stripped quote); look for it near the old start
                found = record.context.find(norm, max(0, start))
                record.answer_starts[i] = found if found >= 0 else record.context.find(norm)
        still_span.append(ok)
    return still_span


def _write_rejected(path: Path, bad_rows: Sequence[BadRow]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "row", "field", "reason"])
        for bad in bad_rows:
            writer.writerow([bad.file, bad.row, bad.field, bad.reason])


def preprocess(config: PreprocessConfig) -> dict:
    """`koqa preprocess`: read, normalise, count, report and split `config.inputs` into `config.out`."""
    check(config)
    check_out(config.out, [("input", path) for path in config.inputs], command="preprocess")
    with KiwiProcess() as analyser:  # kiwipiepy loads in a process of its own while the input is read
        return _preprocess(config, analyser)


def _preprocess(config: PreprocessConfig, analyser: KiwiProcess) -> dict:
    from koqa.model_store import resolve_model
    from koqa.plain_tokenizer import prompt_tokenizer
    from koqa.prompting import PromptRenderer, PromptTemplate

    inputs, out_dir = config.inputs, config.out
    started = time.perf_counter()
    records: list[QARecord] = []
    bad_rows: list[BadRow] = []
    corrected = 0
    has_answers = True
    for path in inputs:
        result = read_records(
            path, fmt=config.format, on_bad_row=config.on_bad_row, encoding=config.encoding, columns=config.columns
        )
        records += result.records
        bad_rows += result.bad_rows
        corrected += len(result.corrected_starts)
        if result.corrected_starts:
            rows = ", ".join(result.corrected_starts[:5])
            log.info(
                "%s: %d answer_start offsets did not point at their answer and were moved to the nearest occurrence "
                "(rows %s%s)",
                path,
                len(result.corrected_starts),
                rows,
                "..." if len(result.corrected_starts) > 5 else "",
            )
        has_answers = has_answers and result.has_answers
        log.info("read %d records from %s (%d excluded)", len(result.records), path, len(result.bad_rows))
    ids = {}
    for r in records:
        if r.id in ids:
            raise KoqaError(
                f"id '{r.id}' occurs in two inputs (also {ids[r.id]})", file=r.source, row=r.row, field="id"
            )
        ids[r.id] = r.source
    if not records:
        raise KoqaError("no usable records in the input", file=", ".join(inputs))

    still_span = normalise_answers(records, config.answer_normalization)
    morphemes = count_morphemes_in_background(records, analyser)  # analysed there while the tokenizer counts
    template = PromptTemplate.load(config.template)
    tokenizer = prompt_tokenizer(resolve_model(config.model), chat=template.chat)
    renderer = PromptRenderer(tokenizer, template, max_length=config.max_length)
    if config.split == "none" or not has_answers:
        splits = {"all": records}
    elif config.split == "korquad-articles":
        train, validation = korquad_article_split(records)
        splits = {"train": train, "validation": validation}
    else:
        train, validation = split_by_context(records, config.validation_fraction, config.seed)
        splits = {"train": train, "validation": validation}
    # the outputs replace an earlier run's as one unit: no stale train.jsonl or rejected.csv stays behind
    with OutputFolder(out_dir, OUTPUTS) as out:
        tokens = record_tokens(records, tokenizer, renderer.frame_lengths)
        prompt_length_histogram(tokens.prompts, config.max_length, out / "prompt_tokens_hist.png")
        counts = combine_counts(records, tokens, morphemes.result())
        stats = build_stats(
            records,
            counts,
            max_length=config.max_length,
            answer_in_context=[s for s, r in zip(still_span, records) if r.answers],
        )
        stats["excluded_rows"] = len(bad_rows)
        stats["corrected_answer_starts"] = corrected
        stats["inputs"] = list(map(str, inputs))
        stats["splits"] = {name: len(part) for name, part in splits.items()}
        rows = {r.id: dict(r.to_json(), **vars(c)) for r, c in zip(records, counts)}
        for name, part in splits.items():
            write_jsonl(out / f"{name}.jsonl", (rows[r.id] for r in part))
        if bad_rows:
            _write_rejected(out / "rejected.csv", bad_rows)
        stats["seconds"] = round(time.perf_counter() - started, 2)
        write_json(out / "stats.json", stats)
        write_text(out / "stats.md", stats_markdown(stats))
        from koqa.eval.html_report import data_page, render

        write_text(out / "data.html", render(data_page(splits, stats, bad_rows)))
    return stats
