"""The evaluation core: read the questions, prepare one adapter's renderer and answer-log
fingerprint, open its backend, generate, post-process, score.

`answer_questions` answers a list of questions with a model and returns the answers and scores;
every caller goes through it: `koqa eval` (koqa.eval.evaluate, which adds the reports), the
validation after training, and the evaluations every `eval_steps` during training
(koqa.train.evaluation). The ensemble uses its steps (`prepare_eval`, `generate_answers`,
`postprocess`) for each member before it chooses between their answers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from koqa.data_tools.readers import read_records
from koqa.data_tools.split import korquad_article_split
from koqa.errors import KoqaError
from koqa.eval.answer_log import AnswerLog, question_digest
from koqa.eval.backends import GenerationParams, choose_backend, load_generator
from koqa.eval.eval_config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_NEW_TOKENS,
    EvalConfig,
    backend_problems,
)
from koqa.eval.metrics import normalize_answer
from koqa.eval.span import snap_to_span
from koqa.prompting import NO_ANSWER
from koqa.runs import Adapter, adapter_digest, locate_adapter
from koqa.settings import raise_problems

log = logging.getLogger(__name__)
DEFAULT_MAX_LENGTH = 1024
# a progress bar over the answers (koqa.api turns it on: a widget in notebooks); the command line logs lines
PROGRESS_BAR = False
# streamed answers are saved at most this many seconds apart: what a killed run can lose
SAVE_EVERY = 2.0


def postprocess(raw: str, context: str, normalize, span: str, no_answer: str = NO_ANSWER) -> str:
    """The final answer of a generated text: its first line, normalised; the no-answer text (what a model
    trained on unanswerable questions says) becomes an empty answer."""
    answer = raw.strip().split("\n")[0].strip()
    if no_answer and normalize_answer(answer) == normalize_answer(no_answer):
        return ""
    answer = normalize(answer)
    if span == "snap" and answer:
        answer = snap_to_span(answer, context)
    return answer


def refuse_no_answer_golds(records, no_answer: str) -> None:
    """A gold answer that reads as the no-answer text would be blanked when predicted (postprocess):
    refused, naming its file and row, rather than scoring a right answer as wrong."""
    if not no_answer:
        return
    said = normalize_answer(no_answer)
    for r in records:
        if any(normalize_answer(a) == said for a in r.answers):
            raise KoqaError(
                f"the gold answer is the no-answer text '{no_answer}', which evaluation turns into an empty answer",
                file=r.source or None,
                row=r.row or r.id,
                field="answer",
                fix="set no_answer to a phrase no gold answer uses",
            )


def read_eval_records(config: EvalConfig) -> list:
    result = read_records(config.data, encoding=config.encoding, check_span=False, columns=config.columns)
    records = result.records
    if config.korquad_split:
        train, evaluation = korquad_article_split(records)
        records = evaluation if config.korquad_split == "eval" else train
    if config.limit:
        records = records[: config.limit]
    if not records:
        raise KoqaError("no questions to evaluate", file=config.data)
    return records


@dataclass
class PreparedEval:
    """What one adapter's evaluation reads before it generates: the questions, the prompt renderer
    (the run's own template and lengths) and the fingerprint its answer log is keyed by."""

    records: list
    renderer: object
    model: str
    adapter: Adapter | None
    fingerprint: dict
    template_name: str
    max_length: int
    max_new_tokens: int

    @property
    def adapter_dir(self) -> str | None:
        return self.adapter.dir if self.adapter else None

    def settings(self, config: EvalConfig) -> dict:
        """The settings report.md lists."""
        return {
            "data": config.data,
            "model": self.model,
            "adapter": self.adapter_dir,
            "template": self.template_name,
            "max_length": self.max_length,
            "span": config.span,
        }


def _template(config: EvalConfig, adapter: Adapter | None):
    from koqa.prompting import DEFAULT_TEMPLATE, PromptTemplate

    if config.template:
        return PromptTemplate.load(config.template)
    run_template = adapter.template_path() if adapter else None
    return PromptTemplate.load(str(run_template) if run_template else DEFAULT_TEMPLATE)


def prepare_eval(records: list, config: EvalConfig, adapter_path: str | None = None) -> PreparedEval:
    from koqa.model_store import resolve_model
    from koqa.plain_tokenizer import prompt_tokenizer
    from koqa.prompting import PromptRenderer

    adapter = locate_adapter(adapter_path, config.checkpoint) if adapter_path else None
    info = adapter.info if adapter else None
    if adapter and info and info.best and Path(adapter.dir).name == "best":
        best = info.best
        log.info("adapter: the best of the run (step %s, validation F1 %.4f)", best["step"], best["eval_f1"])
    model = resolve_model(config.model or (info.model if info else None))
    template = _template(config, adapter)
    tokenizer = prompt_tokenizer(model, chat=template.chat)
    max_length = config.max_length or (info.max_length if info else None) or DEFAULT_MAX_LENGTH
    max_new_tokens = config.max_new_tokens or (info.max_answer_tokens if info else None) or DEFAULT_MAX_NEW_TOKENS
    renderer = PromptRenderer(
        tokenizer,
        template,
        max_length=max_length,
        max_answer_tokens=max_new_tokens,
        max_context_chars=config.max_context_chars,
        no_answer=config.no_answer or (info.no_answer if info else NO_ANSWER),
    )
    refuse_no_answer_golds(records, renderer.no_answer)
    # the adapter by its weights, not only its folder: a run retrained in place must not reuse old answers
    fingerprint = {
        "model": model,
        "adapter": adapter.dir if adapter else None,
        "adapter_digest": adapter_digest(adapter.dir, model) if adapter else None,
        "template": template.text,
        "max_length": max_length,
        "max_context_chars": config.max_context_chars,
        "max_new_tokens": max_new_tokens,
        "dtype": config.dtype,
    }
    if config.span == "constrain":  # other answers, not other post-processing
        fingerprint["span_constrained"] = True
    return PreparedEval(records, renderer, model, adapter, fingerprint, template.name, max_length, max_new_tokens)


def open_generator(prepared: PreparedEval, config: EvalConfig, asynchronous: bool = False, more_problems=None):
    """The backend `config.backend` picks for this adapter, loaded; the caller closes it. A setting the
    chosen backend would not honour is refused here, before it loads: the evaluation settings, and
    the caller's own through `more_problems(backend)` (a list of (field, problem), as
    `backend_problems` gives). `asynchronous`: vLLM as its async engine (`koqa serve`; the
    transformers backend has none and is loaded as it is)."""
    backend = choose_backend(config.backend, prepared.adapter.peft_type if prepared.adapter else None)
    raise_problems(backend_problems(config, backend) + (more_problems(backend) if more_problems else []))
    options = {}
    if backend == "vllm":  # an engine sizes its KV cache for the longest sequence
        options["max_model_len"] = prepared.max_length + prepared.max_new_tokens
        if config.vllm_compile:
            options["compile"] = True
        if config.span == "constrain":
            options["span_constraint"] = True
        for key in ("tensor_parallel_size", "pipeline_parallel_size"):
            if getattr(config, key) > 1:
                options[key] = getattr(config, key)
    return load_generator(
        backend, prepared.model, prepared.adapter_dir, asynchronous=asynchronous, dtype=config.dtype, **options
    )


class Progress:
    """Answers done so far: a log line at most every LOG_EVERY seconds (and at the end), and the
    notebook bar where koqa.api turned it on."""

    LOG_EVERY = 10.0

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.started = self.logged = time.perf_counter()
        self.bar = None
        if PROGRESS_BAR:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="answers", unit="q")

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        now = time.perf_counter()
        if now - self.logged >= self.LOG_EVERY or self.done == self.total:
            self.logged = now
            rate = self.done / max(now - self.started, 1e-9)
            log.info("answered %d/%d (%.2f questions/s)", self.done, self.total, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def answer_in_chunks(generator, prepared, pending, params, config, answers: AnswerLog, progress: Progress) -> int:
    """chunk_size questions at a time, each chunk's answers saved before the next (the transformers
    backend, which generates a batch at a time anyway). Returns the prompt tokens."""
    size, prompt_tokens = config.chunk_size or DEFAULT_CHUNK_SIZE, 0
    for start in range(0, len(pending), size):
        chunk = pending[start : start + size]
        prompts = [prepared.renderer.render(r.context, r.question).ids for r in chunk]
        if config.span == "constrain":
            params.passages = [r.context for r in chunk]
        raw = generator.generate(prompts, params)
        answers.append([(r.id, text) for r, text in zip(chunk, raw)])
        progress.update(len(chunk))
        prompt_tokens += sum(map(len, prompts))
    return prompt_tokens


def answer_streaming(generator, prepared, pending, params, config, answers: AnswerLog, progress: Progress) -> int:
    """Every question in flight at once (vLLM), so that the device never waits on a chunk's last
    sequences. Finished answers are saved as they come, at most SAVE_EVERY seconds apart (a save is a
    write and an fsync; one per engine step would cost more than it keeps), and whatever is finished
    is saved when generation stops for any reason but a kill. Returns the prompt tokens."""
    prompts = [prepared.renderer.render(r.context, r.question).ids for r in pending]
    if config.span == "constrain":
        params.passages = [r.context for r in pending]
    unsaved, saved_at = [], time.perf_counter()
    try:
        for finished in generator.generate_stream(prompts, params):
            unsaved += [(pending[i].id, text) for i, text in finished]
            progress.update(len(finished))
            if time.perf_counter() - saved_at >= SAVE_EVERY:
                answers.append(unsaved)
                unsaved, saved_at = [], time.perf_counter()
    finally:
        if unsaved:
            answers.append(unsaved)
    return sum(map(len, prompts))


def generate_answers(prepared: PreparedEval, out: Path | None, config: EvalConfig, generator=None) -> dict:
    """Raw answers {id: text} for every question, appended to OUT/generations.jsonl as they come
    (a re-run skips the ones already there; with `out` None they are kept in memory). Loads the
    backend only when something is left to answer; a backend it loaded is closed before it returns."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    asked = {r.id: question_digest(r.context, r.question) for r in prepared.records}
    answers = AnswerLog(out / "generations.jsonl" if out is not None else None, prepared.fingerprint, asked)
    pending = [r for r in prepared.records if r.id not in answers.done]
    backend = generator.name if generator is not None else None
    elapsed, prompt_tokens = 0.0, 0
    if pending:
        owned = generator is None
        if owned:
            generator = open_generator(prepared, config)
            backend = generator.name
        params = GenerationParams(prepared.max_new_tokens, batch_size=config.batch_size or DEFAULT_BATCH_SIZE)
        log.info(
            "generating %d answers with the %s backend (%d already done)",
            len(pending),
            backend,
            len(prepared.records) - len(pending),
        )
        started = time.perf_counter()
        progress = Progress(len(pending))
        try:
            answer = answer_streaming if generator.streams else answer_in_chunks
            prompt_tokens = answer(generator, prepared, pending, params, config, answers, progress)
        finally:
            progress.close()
            if owned:
                generator.close()
        elapsed = time.perf_counter() - started
    return {
        "raw": {r.id: answers.done[r.id] for r in prepared.records},
        "backend": backend,
        "generated": len(pending),
        "seconds": elapsed,
        "prompt_tokens": prompt_tokens,
    }


@dataclass
class Answers:
    """What `answer_questions` returns."""

    raw: dict[str, str]  # {id: generated text}
    predictions: dict[str, str]  # {id: final answer}, post-processed
    metrics: dict  # F1, EM and token F1 over the questions ({} without gold answers)
    backend: str | None
    generated: int  # answers generated now (the rest came from the answer log)
    seconds: float
    prompt_tokens: int  # of the prompts generated now


def answer_questions(prepared: PreparedEval, config: EvalConfig, generator=None, out: Path | None = None) -> Answers:
    """The evaluation core: answer `prepared.records` with `generator` (live weights, or any object
    with the Generator interface) or the backend `config` chooses for `prepared`'s model and adapter,
    post-process as `config` says, and score where the questions have gold answers. With `out`, the
    raw answers go to its resumable answer log as they come."""
    from koqa.data_tools.normalize import build_normalizer
    from koqa.eval.scoring import score_questions

    generated = generate_answers(prepared, out, config, generator)
    normalize = build_normalizer(config.answer_normalization)
    no_answer = prepared.renderer.no_answer
    predictions = {
        r.id: postprocess(generated["raw"][r.id], r.context, normalize, config.span, no_answer)
        for r in prepared.records
    }
    metrics = {}
    if all(r.has_gold for r in prepared.records):
        _, metrics = score_questions(prepared.records, predictions, morphemes=config.morphemes)
    return Answers(
        generated["raw"],
        predictions,
        metrics,
        generated["backend"],
        generated["generated"],
        generated["seconds"],
        generated["prompt_tokens"],
    )
