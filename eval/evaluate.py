"""`koqa eval`: render prompts, generate answers, post-process, score and report."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from koqa.config import POSITIVE, check_values
from koqa.data_tools.normalize import build_normalizer
from koqa.data_tools.readers import read_records
from koqa.data_tools.split import korquad_article_split
from koqa.errors import KoqaError
from koqa.eval.answer_log import AnswerLog
from koqa.eval.backends import GenerationParams, choose_backend, load_generator
from koqa.eval.metrics import score_one
from koqa.eval.report import write_predictions_csv, write_report
from koqa.eval.span import snap_to_span

log = logging.getLogger(__name__)
RUN_INFO = "koqa_run.json"


@dataclass
class EvalConfig:
    model: str | None = None
    backend: str = "auto"
    batch_size: int = 16
    max_length: int | None = None  # default: the adapter run's, else 1024
    max_context_chars: int | None = None
    max_new_tokens: int = 32
    template: str | None = None  # default: the adapter run's template file, else ko_instruct
    span: str = "off"  # off | snap
    answer_normalization: list[str] = field(default_factory=lambda: ["nfc", "whitespace"])
    limit: int | None = None
    korquad_split: str | None = None  # train | eval
    morphemes: bool = False
    encoding: str = "utf-8"
    dtype: str = "auto"
    chunk_size: int = 64  # answers are saved after every chunk
    vllm_compile: bool = False  # torch.compile in vLLM: 1.09-1.14x faster generation, 30-35 s more start-up on 2 cores


def resolve_adapter(path: str | None) -> tuple[str | None, dict]:
    """(adapter folder, run info) for a `koqa sft` run folder or a bare adapter folder."""
    if not path:
        return None, {}
    p = Path(path)
    for adapter, run_dir in ((p / "adapter", p), (p, p.parent)):
        if (adapter / "adapter_config.json").is_file():
            info_file = run_dir / RUN_INFO
            info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
            info["run_dir"] = str(run_dir)
            return str(adapter), info
    raise KoqaError("not a koqa run or adapter folder (no adapter_config.json)", file=str(p),
                    fix="pass the --out folder of `koqa sft`")


def _load_template(config: EvalConfig, run_info: dict):
    from koqa.prompting import DEFAULT_TEMPLATE, PromptTemplate

    if config.template:
        return PromptTemplate.load(config.template)
    if run_info.get("template_file") and Path(run_info["run_dir"], run_info["template_file"]).is_file():
        return PromptTemplate.load(str(Path(run_info["run_dir"], run_info["template_file"])))
    return PromptTemplate.load(DEFAULT_TEMPLATE)


def postprocess(raw: str, context: str, normalize, span: str) -> str:
    answer = raw.strip().split("\n")[0].strip()
    answer = normalize(answer)
    if span == "snap":
        answer = snap_to_span(answer, context)
    return answer


@dataclass
class PreparedEval:
    """What one adapter's evaluation reads before it generates: the questions, the prompt renderer
    (the run's own template and lengths) and the fingerprint its answer log is keyed by."""

    records: list
    renderer: object
    model: str
    adapter_dir: str | None
    fingerprint: dict
    template_name: str
    max_length: int


def check_eval_config(config: EvalConfig) -> None:
    if config.span not in ("off", "snap"):
        raise KoqaError(f"span must be off or snap, got '{config.span}'", field="span")
    check_values(config, dict.fromkeys(("batch_size", "max_length", "max_context_chars", "max_new_tokens", "limit",
                                        "chunk_size"), POSITIVE))


def read_eval_records(data: str, config: EvalConfig) -> list:
    result = read_records(data, encoding=config.encoding, check_span=False)
    records = result.records
    if config.korquad_split:
        train, evaluation = korquad_article_split(records)
        records = evaluation if config.korquad_split == "eval" else train
    if config.limit:
        records = records[: config.limit]
    if not records:
        raise KoqaError("no questions to evaluate", file=data)
    return records


def prepare_eval(records: list, config: EvalConfig, adapter: str | None = None) -> PreparedEval:
    from transformers import AutoTokenizer

    from koqa.merging import adapter_digest
    from koqa.model_store import resolve_model
    from koqa.prompting import PromptRenderer

    adapter_dir, run_info = resolve_adapter(adapter)
    model = resolve_model(config.model or run_info.get("model"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    template = _load_template(config, run_info)
    max_length = config.max_length or run_info.get("max_length") or 1024
    max_context_chars = config.max_context_chars or run_info.get("eval_max_context_chars")
    renderer = PromptRenderer(tokenizer, template, max_length=max_length, max_answer_tokens=config.max_new_tokens,
                              max_context_chars=max_context_chars)
    # the adapter by its weights, not only its folder: a run retrained in place must not reuse old answers
    fingerprint = {"model": model, "adapter": adapter_dir,
                   "adapter_digest": adapter_digest(adapter_dir, model) if adapter_dir else None,
                   "template": template.text, "max_length": max_length, "max_context_chars": max_context_chars,
                   "max_new_tokens": config.max_new_tokens, "dtype": config.dtype}
    return PreparedEval(records, renderer, model, adapter_dir, fingerprint, template.name, max_length)


def open_generator(prepared: PreparedEval, config: EvalConfig):
    """The backend `config.backend` picks for this adapter, loaded."""
    backend = choose_backend(config.backend, prepared.adapter_dir)
    options = {"compile": True} if backend == "vllm" and config.vllm_compile else {}
    return load_generator(backend, prepared.model, prepared.adapter_dir, dtype=config.dtype,
                          max_model_len=prepared.max_length + config.max_new_tokens, **options)


def close_generator(generator) -> None:
    close = getattr(generator, "close", None)
    if close is not None:
        close()


def generate_answers(prepared: PreparedEval, out: Path, config: EvalConfig, generator=None) -> dict:
    """Raw answers {id: text} for every question, appended to OUT/generations.jsonl as they come
    (a re-run skips the ones already there). Loads the backend only when something is left to answer;
    a backend it loaded is closed before it returns."""
    out.mkdir(parents=True, exist_ok=True)
    answers = AnswerLog(out / "generations.jsonl", prepared.fingerprint)
    pending = [r for r in prepared.records if r.id not in answers.done]
    backend = generator.name if generator is not None else None
    elapsed = 0.0
    if pending:
        owned = generator is None
        if owned:
            generator = open_generator(prepared, config)
            backend = generator.name
        params = GenerationParams(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
        log.info("generating %d answers with the %s backend (%d already done)", len(pending), backend,
                 len(prepared.records) - len(pending))
        started = time.perf_counter()
        try:
            for start in range(0, len(pending), config.chunk_size):
                chunk = pending[start: start + config.chunk_size]
                prompts = [prepared.renderer.render(r.context, r.question).ids for r in chunk]
                raw = generator.generate(prompts, params)
                answers.append([(r.id, text) for r, text in zip(chunk, raw)])
                done = start + len(chunk)
                rate = done / (time.perf_counter() - started)
                log.info("answered %d/%d (%.2f questions/s)", done, len(pending), rate)
        finally:
            if owned:
                close_generator(generator)
        elapsed = time.perf_counter() - started
    return {"raw": {r.id: answers.done[r.id] for r in prepared.records}, "backend": backend,
            "generated": len(pending), "seconds": elapsed}


def score_and_report(records: list, predictions: dict, out: Path, config: EvalConfig, settings: dict,
                     extra_metrics: dict | None = None) -> dict:
    """predictions.csv for {id: final answer}; with gold answers also metrics.json, report.md and
    the F1 histogram. Returns the metrics ({} without gold answers) and the rows."""
    with_gold = all(r.answers for r in records)
    rows, totals = [], {"f1": 0.0, "exact_match": 0.0, "token_f1": 0.0}
    for r in records:
        prediction = predictions[r.id]
        row = {"id": r.id, "question": r.question, "prediction": prediction, "answer": " | ".join(r.answers)}
        if with_gold:
            scores = score_one(prediction, r.answers, morphemes=config.morphemes)
            row.update(f1=scores["f1"], em=scores["exact_match"])
            for k in totals:
                totals[k] += scores[k]
        rows.append(row)
    write_predictions_csv(out / "predictions.csv", rows, with_gold)
    metrics = {}
    if with_gold:
        metrics = {k: v / len(rows) for k, v in totals.items()}
        metrics.update(n=len(rows), **(extra_metrics or {}))
        write_report(out, rows, metrics, settings)
    return {"metrics": metrics, "rows": rows}


def run_eval(data: str, out_dir: str, config: EvalConfig, adapter: str | None = None, generator=None) -> dict:
    """Evaluate; `generator` (any object with `.generate`) replaces the backend, for tests."""
    check_eval_config(config)
    normalize = build_normalizer(config.answer_normalization)
    records = read_eval_records(data, config)
    prepared = prepare_eval(records, config, adapter)
    out = Path(out_dir)
    generated = generate_answers(prepared, out, config, generator)
    predictions = {r.id: postprocess(generated["raw"][r.id], r.context, normalize, config.span) for r in records}
    elapsed = generated["seconds"]
    extra = dict(backend=generated["backend"], generated=generated["generated"], generation_seconds=round(elapsed, 2),
                 questions_per_second=round(generated["generated"] / elapsed, 3) if elapsed else None)
    settings = {"data": data, "model": prepared.model, "adapter": prepared.adapter_dir,
                "template": prepared.template_name, "max_length": prepared.max_length, "span": config.span,
                "answer_normalization": ",".join(config.answer_normalization)}
    result = score_and_report(records, predictions, out, config, settings, extra)
    result["raw"] = generated["raw"]
    return result
