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


def run_eval(data: str, out_dir: str, config: EvalConfig, adapter: str | None = None, generator=None) -> dict:
    """Evaluate; `generator` (any object with `.generate`) replaces the backend, for tests."""
    from transformers import AutoTokenizer

    from koqa.merging import adapter_digest
    from koqa.model_store import resolve_model
    from koqa.prompting import PromptRenderer

    if config.span not in ("off", "snap"):
        raise KoqaError(f"span must be off or snap, got '{config.span}'", field="span")
    check_values(config, dict.fromkeys(("batch_size", "max_length", "max_context_chars", "max_new_tokens", "limit",
                                        "chunk_size"), POSITIVE))
    normalize = build_normalizer(config.answer_normalization)
    adapter_dir, run_info = resolve_adapter(adapter)
    model = resolve_model(config.model or run_info.get("model"))
    result = read_records(data, encoding=config.encoding, check_span=False)
    records = result.records
    if config.korquad_split:
        train, evaluation = korquad_article_split(records)
        records = evaluation if config.korquad_split == "eval" else train
    if config.limit:
        records = records[: config.limit]
    if not records:
        raise KoqaError("no questions to evaluate", file=data)

    tokenizer = AutoTokenizer.from_pretrained(model)
    template = _load_template(config, run_info)
    max_length = config.max_length or run_info.get("max_length") or 1024
    max_context_chars = config.max_context_chars or run_info.get("eval_max_context_chars")
    renderer = PromptRenderer(tokenizer, template, max_length=max_length, max_answer_tokens=config.max_new_tokens,
                              max_context_chars=max_context_chars)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the adapter by its weights, not only its folder: a run retrained in place must not reuse old answers
    fingerprint = {"model": model, "adapter": adapter_dir,
                   "adapter_digest": adapter_digest(adapter_dir, model) if adapter_dir else None,
                   "template": template.text, "max_length": max_length, "max_context_chars": max_context_chars,
                   "max_new_tokens": config.max_new_tokens, "dtype": config.dtype}
    answers = AnswerLog(out / "generations.jsonl", fingerprint)
    pending = [r for r in records if r.id not in answers.done]
    backend = generator.name if generator is not None else None
    elapsed = 0.0
    if pending:
        if generator is None:
            backend = choose_backend(config.backend, adapter_dir)
            options = {"compile": True} if backend == "vllm" and config.vllm_compile else {}
            generator = load_generator(backend, model, adapter_dir, dtype=config.dtype,
                                       max_model_len=max_length + config.max_new_tokens, **options)
        params = GenerationParams(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
        log.info("generating %d answers with the %s backend (%d already done)", len(pending), backend,
                 len(records) - len(pending))
        started = time.perf_counter()
        for start in range(0, len(pending), config.chunk_size):
            chunk = pending[start: start + config.chunk_size]
            prompts = [renderer.render(r.context, r.question).ids for r in chunk]
            raw = generator.generate(prompts, params)
            answers.append([(r.id, text) for r, text in zip(chunk, raw)])
            done = start + len(chunk)
            rate = done / (time.perf_counter() - started)
            log.info("answered %d/%d (%.2f questions/s)", done, len(pending), rate)
        elapsed = time.perf_counter() - started

    with_gold = all(r.answers for r in records)
    rows, totals = [], {"f1": 0.0, "exact_match": 0.0, "token_f1": 0.0}
    for r in records:
        prediction = postprocess(answers.done[r.id], r.context, normalize, config.span)
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
        metrics.update(n=len(rows), backend=backend, generated=len(pending),
                       generation_seconds=round(elapsed, 2),
                       questions_per_second=round(len(pending) / elapsed, 3) if elapsed else None)
        settings = {"data": data, "model": model, "adapter": adapter_dir, "template": template.name,
                    "max_length": max_length, "span": config.span,
                    "answer_normalization": ",".join(config.answer_normalization)}
        write_report(out, rows, metrics, settings)
    return {"metrics": metrics, "rows": rows}
