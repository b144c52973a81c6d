"""`koqa eval`: render prompts, generate answers, post-process, score and report.

`evaluate(config)` is the entry: one adapter (or none: the base model) is evaluated here, two or
more are an ensemble (koqa.eval.ensemble).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from koqa.data_tools.morphemes import KiwiProcess
from koqa.eval.ensemble import evaluate_ensemble
from koqa.eval.error_analysis import analyse_in_background
from koqa.eval.eval_config import EvalConfig
from koqa.eval.pipeline import answer_questions, prepare_eval, read_eval_records
from koqa.eval.report import score_and_report
from koqa.outputs import check_out
from koqa.settings import check


def evaluate(config: EvalConfig, generator=None, generators: list | None = None, *, inside_run: bool = False) -> dict:
    """Evaluate as `config` says; returns {"metrics": ..., "rows": ...}. `generator` (one adapter) or
    `generators` (one per ensemble member) replace the backends: any objects with `.generate` (and
    `.score` for an ensemble); the caller keeps them open. `inside_run`: the validation a training
    run writes into its own folder (koqa.train.run), the one evaluation whose --out lies in its adapter's run."""
    check(config)
    if not inside_run:
        inputs = [("--data", config.data), ("--model", config.model), ("--template", config.template)]
        check_out(config.out, inputs + [("--adapter", a) for a in config.adapter], command="eval")
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
    answers = answer_questions(prepared, config, generator, out)
    elapsed = answers.seconds
    extra = dict(
        backend=answers.backend,
        generated=answers.generated,
        generation_seconds=round(elapsed, 2),
        questions_per_second=round(answers.generated / elapsed, 3) if elapsed else None,
    )
    settings = {**prepared.settings(config), "answer_normalization": ",".join(config.answer_normalization)}
    result = score_and_report(records, answers.predictions, out, config, settings, extra, analysed)
    if config.report_to and result["metrics"]:
        from koqa.trackers import log_scores

        run = prepared.adapter.run.path if prepared.adapter and prepared.adapter.run else None
        log_scores(config.report_to, result["metrics"], out, prefix="eval", joined_run=run)
    result["raw"] = answers.raw
    return result
