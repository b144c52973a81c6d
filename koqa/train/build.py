"""The trainer a `koqa sft` run trains with: the base model (quantised for QLoRA, with the attention
training wants on this device), TRL's arguments, koqa's callbacks and trainer, compiled layers.
`koqa.train.run` calls `build_trainer` once it has resolved a `RunSetup`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from koqa.errors import KoqaError
from koqa.runs import RunFolder
from koqa.train.methods import Method
from koqa.train.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class RunSetup:
    """What a run has resolved before it builds its trainer."""

    config: TrainConfig
    method: Method
    model_path: str
    tokenizer: Any
    dtype: Any
    run: RunFolder
    started: float  # perf_counter at the command's start
    clock: Any  # koqa.time_budget.TrainingClock
    checkpoint: str | None  # the checkpoint resumed from


def common_arguments(config, output_dir: str, dtype) -> dict:
    """The trainer arguments `koqa sft` and `koqa rl` share, from the settings of the same names."""
    import torch

    return {
        "output_dir": output_dir,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "warmup_steps": config.warmup_ratio,  # transformers 5 reads a value below 1 as the share of the run
        "lr_scheduler_type": config.lr_scheduler,
        "weight_decay": config.weight_decay,
        "logging_steps": config.logging_steps,
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "save_strategy": "steps",
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "report_to": list(config.report_to),
        "dataloader_num_workers": 0,
        "use_cpu": not torch.cuda.is_available(),
    }


def training_arguments(setup: RunSetup):
    """TRL's SFTConfig for the run: the optimiser, schedule, saving and logging `config` asks for."""
    from trl import SFTConfig

    config = setup.config
    return SFTConfig(
        **common_arguments(config, str(setup.run.checkpoints_dir), setup.dtype),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        max_length=None,
        completion_only_loss=True,
        remove_unused_columns=True,
        ddp_find_unused_parameters=False,
        neftune_noise_alpha=config.neftune_noise_alpha,
    )


def training_callbacks(setup: RunSetup, tokens_before: int, evaluation) -> list:
    """log.jsonl, the time budget and, with eval_steps, the F1 evaluations."""
    from koqa.time_budget import budget_callbacks
    from koqa.train.trainer import JsonlLogger

    return [
        JsonlLogger(setup.run, setup.started, setup.clock, tokens_before),
        *budget_callbacks(setup.clock),
        *([evaluation] if evaluation else []),
    ]


def build_trainer(setup: RunSetup, examples: list[dict], evaluation=None):
    """The base model, its PEFT config and koqa's trainer over the examples, set up as the config says."""
    from datasets import Dataset

    from koqa.time_budget import time_lr_lambda
    from koqa.train.resume import last_logged, questions_seen_at
    from koqa.train.trainer import AnswerOnlySFTTrainer, trainer_state

    config = setup.config
    model = load_base_model(setup.model_path, config, setup.method, setup.dtype)
    if config.report_to and int(os.environ.get("RANK", "0")) == 0:
        from koqa.trackers import start_training

        start_training(config.report_to, setup.run.path)
    state = trainer_state(setup.checkpoint) if setup.checkpoint else {}
    tokens_before = last_logged(state, "num_tokens")
    collator = None
    if config.shared_context:
        from koqa.shared_context import SharedContextCollator

        collator = SharedContextCollator(setup.tokenizer.pad_token_id)
    by_the_clock = config.schedule_over == "minutes"
    trainer = AnswerOnlySFTTrainer(
        model=model,
        args=training_arguments(setup),
        train_dataset=Dataset.from_list(examples),
        processing_class=setup.tokenizer,
        peft_config=setup.method.build_peft_config(config, model, setup.model_path),
        data_collator=collator,
        callbacks=training_callbacks(setup, tokens_before, evaluation),
        answer_only=config.answer_only_logits,
        shared_context=config.shared_context,
        virtual_tokens=config.num_virtual_tokens if setup.method.virtual_tokens_in_sequence else 0,
        questions_seen=questions_seen_at(state, config),
        tokens_seen=tokens_before,
        lr_lambda=time_lr_lambda(setup.clock, config.warmup_ratio, config.lr_scheduler) if by_the_clock else None,
        loraplus_lr_ratio=config.loraplus_lr_ratio,
    )
    if evaluation is not None:
        evaluation.attach(trainer)
    compile_for_speed(trainer, setup, len(examples))
    quiet_progress(trainer)
    return trainer


def compile_for_speed(trainer, setup: RunSetup, examples: int) -> None:
    """Compile the decoder layers (and the loss) where `compile_layers` says so (koqa/train/speed.py)."""
    from koqa.runtime import pick_device
    from koqa.train.speed import compile_layers, too_short_to_compile

    config = setup.config
    short = too_short_to_compile(config, examples, int(os.environ.get("WORLD_SIZE", "1")))
    trainer.compiled_loss = compile_layers(
        trainer.model, config.compile_layers, pick_device(), setup.method.quantized, short
    )


def quiet_progress(trainer) -> None:
    """Without -v, koqa logs a line per logging step instead of transformers' bar and dict dumps."""
    from koqa import console

    if console.quiet():
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)


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
