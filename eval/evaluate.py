"""`koqa eval`: render prompts, generate answers, post-process, score and report.

`evaluate(config)` is the entry: one adapter (or none: the base model) is evaluated here, two or
more are an ensemble (koqa.eval.ensemble).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from koqa.config import check
from koqa.data_tools.morphemes import KiwiProcess
from koqa.data_tools.normalize import build_normalizer
from koqa.eval.config import EvalConfig
from koqa.eval.ensemble import evaluate_ensemble
from koqa.eval.errors import analyse_in_background
from koqa.eval.pipeline import generate_answers, postprocess, prepare_eval, read_eval_records
from koqa.eval.report import score_and_report


def evaluate(config: EvalConfig, generator=None, generators: list | None = None) -> dict:
    """Evaluate as `config` says; returns {"metrics": ..., "rows": ...}. `generator` (one adapter) or
    `generators` (one per ensemble member) replace the backends: any objects with `.generate` (and
    `.score` for an ensemble); the caller keeps them open."""
    check(config)
    if len(config.adapter) > 1:
        return evaluate_ensemble(config, generators)
    records = read_eval_records(config)
    with contextlib.ExitStack() as stack:  # a kiwipiepy process still running is ended on the way out
        analysed = None
        if all(r.has_gold for r in records):
            # the error analysis's morphemes of questions and gold answers come while the engine starts
            analysed = analyse_in_background(records, stack.enter_context(KiwiProcess()))
        return _evaluate_one(config, records, generator, analysed)


def _evaluate_one(config: EvalConfig, records: list, generator, analysed) -> dict:
    """One adapter (or the base model) on `records`; `analysed`: the error analysis's morphemes, coming."""
    prepared = prepare_eval(records, config, config.adapter[0] if config.adapter else None)
    out = Path(config.out)
    generated = generate_answers(prepared, out, config, generator)
    normalize = build_normalizer(config.answer_normalization)
    no_answer = prepared.renderer.no_answer
    predictions = {
        r.id: postprocess(generated["raw"][r.id], r.context, normalize, config.span, no_answer) for r in records
    }
    elapsed = generated["seconds"]
    extra = dict(
        backend=generated["backend"],
        generated=generated["generated"],
        generation_seconds=round(elapsed, 2),
        questions_per_second=round(generated["generated"] / elapsed, 3) if elapsed else None,
    )
    settings = {**prepared.settings(config), "answer_normalization": ",".join(config.answer_normalization)}
    result = score_and_report(records, predictions, out, config, settings, extra, analysed)
    if config.report_to and result["metrics"]:
        from koqa.trackers import log_scores

        run = prepared.adapter.run.path if prepared.adapter and prepared.adapter.run else None
        log_scores(config.report_to, result["metrics"], out, prefix="eval", joined_run=run)
    result["raw"] = generated["raw"]
    return result
