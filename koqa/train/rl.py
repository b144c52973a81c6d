"""`koqa rl`: continue a `koqa sft` run's LoRA adapter with GRPO on the leaderboard F1.

start -> read -> render -> build -> train -> save, as `koqa sft` (koqa/train/run.py) reads. The
prompts are the run's own template and renderer (the window kept around the answer, as in its
training); the reward is koqa/train/reward.py; sampling and the loss share each prompt across its
answers (koqa/train/rl_trainer.py). The held-out validation questions are answered greedily every
eval_steps, as `koqa eval` answers them, and RUN/best/ is chosen on that F1, not on the reward;
`RewardDivergence` (rl_trainer.py) says when the two part. Torch, transformers and TRL are imported
once the settings and inputs have been checked, so a refusal comes at once.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from koqa.atomic import write_json
from koqa.errors import KoqaError
from koqa.runs import RunFolder, RunInfo, is_lora, locate_adapter
from koqa.train.rl_config import RL_CHANGEABLE_ON_RESUME, RLConfig

log = logging.getLogger(__name__)


def rl(config: RLConfig) -> dict:
    """GRPO from `config.adapter` on `config.data` into the run folder `config.out`; returns the summary."""
    inputs = [("--data", config.data), ("--validation", config.validation), ("--adapter", config.adapter)]
    run = RunFolder.claim(config.out, inputs, command="rl", resume=config.resume)
    started = time.perf_counter()
    parent = starting_adapter(config)
    from transformers import set_seed

    from koqa.settings import to_dict
    from koqa.time_budget import TrainingClock
    from koqa.train.resume import check_resume_matches

    set_seed(config.seed)
    setup = read_and_render(config, parent)
    info = describe(config, parent, setup)
    checkpoint = run.last_complete_checkpoint() if config.resume else None
    if checkpoint:
        check_resume_matches(run, config, setup["template"].text, info, RL_CHANGEABLE_ON_RESUME)
        run.truncate_log(int(Path(checkpoint).name.split("-")[-1]))
    elif config.resume:
        log.info("no checkpoint to resume from: starting at step 0")
    run.write_start(to_dict(config), setup["template"].text, info)
    clock = TrainingClock.resumed_from(config.max_minutes * 60 if config.max_minutes else None, checkpoint)
    trainer, evaluation, divergence = build(config, run, parent, setup, started, clock, checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    from koqa.train.evaluation import f1_curve_png, read_best
    from koqa.train.run import save_adapter

    save_adapter(trainer, setup["tokenizer"], run)
    f1_curve_png(run)
    summary = {
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "train_seconds": round(clock.elapsed(), 1),
        "questions": len(setup["rows"]),
        "best": read_best(run),
        "stopped_early": evaluation.stopped_early,
        "diverged": divergence.diverged,
        "started_from": info.parent,
    }
    write_json(run.metrics_file, summary)
    if config.report_to:
        from koqa.trackers import finish_training

        finish_training(config.report_to, run.path)
    summary["adapter"] = str(run.adapter_dir)
    return summary


def starting_adapter(config: RLConfig):
    """The sft run's adapter to continue: LoRA (or QLoRA), inside a run folder that says how it was made."""
    parent = locate_adapter(config.adapter, config.checkpoint)
    if not is_lora(parent.peft_type):
        raise KoqaError(
            f"koqa rl continues a LoRA adapter; this one is {parent.peft_type}",
            file=parent.dir,
            field="adapter",
            fix="train one with koqa sft --method lora (or qlora)",
        )
    if parent.info is None or parent.template_path() is None:
        raise KoqaError(
            "koqa rl needs the adapter's run folder (its koqa_run.json and template.txt say how it was trained)",
            file=parent.dir,
            field="adapter",
            fix="pass the --out folder of koqa sft",
        )
    return parent


def read_and_render(config: RLConfig, parent) -> dict:
    """The training questions as GRPO's dataset (one row per question, its id as the prompt) with each
    prompt's token ids, the validation questions, the tokenizer and the template."""
    from koqa.eval.pipeline import refuse_no_answer_golds
    from koqa.model_store import resolve_model
    from koqa.prompting import PromptTemplate
    from koqa.train.data import read_training_records, training_prompts
    from koqa.train.run import training_renderer

    info = parent.info
    saved = parent.run.saved_config() or {}
    model_path = resolve_model(info.model)
    template = PromptTemplate.load(str(parent.template_path()))
    tokenizer, renderer = training_renderer(
        model_path,
        template,
        max_length=config.max_length or info.train_max_length,
        max_answer_tokens=config.max_answer_tokens or info.max_answer_tokens or 32,
        max_context_chars=saved.get("max_context_chars", 1200),
        no_answer=info.no_answer,
    )
    records, validation = read_training_records(config)
    refuse_no_answer_golds(records + validation, renderer.no_answer)
    if not validation:
        raise KoqaError(
            "koqa rl scores held-out questions every eval_steps, and there are none",
            field="validation",
            fix="pass --validation FILE, or a `koqa preprocess` folder with validation.jsonl as --data",
        )
    prompts, excluded = training_prompts(records, renderer)
    rendered = {r.id: prompt.ids for r, prompt, _ in prompts}
    rows = [{"prompt": r.id, "context": r.context, "answers": list(r.answers)} for r, _, _ in prompts]
    if not rows:
        raise KoqaError(
            "no training question fits max_length", file=config.data, field="max_length", fix="raise max_length"
        )
    for item in excluded:
        log.warning("excluded %s: %s", item["id"], item["reason"])
    return {
        "model_path": model_path,
        "template": template,
        "tokenizer": tokenizer,
        "renderer": renderer,
        "rows": rows,
        "rendered": rendered,
        "excluded": excluded,
        "validation": validation,
        "eval_max_length": info.max_length,
    }


def describe(config: RLConfig, parent, setup: dict) -> RunInfo:
    from koqa.runs import adapter_digest
    from koqa.train.run import package_versions

    info = parent.info
    return RunInfo(
        model=info.model,
        model_path=setup["model_path"],
        method=info.method,
        template=info.template,
        max_length=info.max_length,
        train_max_length=setup["renderer"].max_length,
        seed=config.seed,
        versions=package_versions(),
        train_examples=len(setup["rows"]),
        train_questions=len(setup["rows"]),
        train_tokens=sum(len(ids) for ids in setup["rendered"].values()),
        excluded=setup["excluded"],
        no_answer=info.no_answer,
        max_answer_tokens=setup["renderer"].max_answer_tokens,
        parent={
            "adapter": parent.dir,
            "digest": adapter_digest(parent.dir, setup["model_path"]),
            "by": "koqa rl (GRPO)",
        },
    )


def build(config: RLConfig, run: RunFolder, parent, setup: dict, started: float, clock, checkpoint):
    """KoqaGRPOTrainer over the starting adapter, with koqa's log, time budget, F1 evaluation and
    divergence check."""
    from datasets import Dataset
    from peft import PeftModel

    from koqa.data_tools.normalize import build_normalizer
    from koqa.runtime import pick_device, pick_dtype
    from koqa.time_budget import budget_callbacks
    from koqa.train.build import load_base_model, quiet_progress
    from koqa.train.methods import METHODS
    from koqa.train.reward import AnswerReader, reward_functions
    from koqa.train.rl_trainer import KoqaGRPOTrainer, RewardDivergence
    from koqa.train.trainer import JsonlLogger

    dtype = pick_dtype(config.dtype, pick_device())
    base = load_base_model(setup["model_path"], config, METHODS[parent.info.method], dtype)
    # with kl_weight, TRL copies this adapter as it starts into a frozen "ref" adapter: the reference
    # policy is the adapter started from (not the base model)
    model = PeftModel.from_pretrained(base, parent.dir, is_trainable=True)
    if config.report_to and int(os.environ.get("RANK", "0")) == 0:
        from koqa.trackers import start_training

        start_training(config.report_to, run.path)
    evaluation = f1_evaluation(config, run, setup)
    divergence = RewardDivergence(config.divergence_patience, config.stop_on_divergence)
    rendered_tokens = 0
    if checkpoint:
        from koqa.train.resume import last_logged
        from koqa.train.trainer import trainer_state

        rendered_tokens = last_logged(trainer_state(checkpoint), "num_tokens")
    reader = AnswerReader(build_normalizer(evaluation.eval_config.answer_normalization), setup["renderer"].no_answer)
    trainer = KoqaGRPOTrainer(
        model=model,
        reward_funcs=reward_functions(reader),
        args=grpo_arguments(config, run, dtype, setup["renderer"].max_answer_tokens),
        train_dataset=Dataset.from_list(setup["rows"]),
        processing_class=setup["tokenizer"],
        callbacks=[
            JsonlLogger(run, started, clock, rendered_tokens),
            *budget_callbacks(clock),
            evaluation,
            divergence,
        ],
        rendered=setup["rendered"],
        max_new_tokens=setup["renderer"].max_answer_tokens,
        shared_prompt=config.shared_prompt,
    )
    evaluation.attach(trainer)
    quiet_progress(trainer)
    if int(os.environ.get("RANK", "0")) == 0:
        trainable, total = trainer.model.get_nb_trainable_parameters()
        log.info(
            "GRPO from %s: %d questions, %d answers each, %s trainable of %s parameters, dtype %s",
            parent.dir,
            len(setup["rows"]),
            config.num_generations,
            f"{trainable:,}",
            f"{total:,}",
            str(dtype).removeprefix("torch."),
        )
    return trainer, evaluation, divergence


def grpo_arguments(config: RLConfig, run: RunFolder, dtype, max_new_tokens: int):
    from trl import GRPOConfig

    from koqa.train.build import common_arguments

    return GRPOConfig(
        **common_arguments(config, str(run.checkpoints_dir), dtype),
        per_device_train_batch_size=config.questions_per_step * config.num_generations,
        gradient_accumulation_steps=1,
        num_generations=config.num_generations,
        max_completion_length=max_new_tokens,
        temperature=config.temperature,
        beta=config.kl_weight,
        reward_weights=[config.reward_f1, config.reward_grounded, config.reward_length],
        remove_unused_columns=False,
        log_completions=False,
    )


def f1_evaluation(config: RLConfig, run: RunFolder, setup: dict):
    from koqa.eval.backends import choose_backend
    from koqa.eval.eval_config import EvalConfig
    from koqa.train.evaluation import F1Evaluation

    backend = choose_backend(config.eval_backend, "LORA", caller="training")
    eval_config = EvalConfig(
        data=config.validation or config.data,
        out=None,
        model=setup["model_path"],
        backend=backend,
        template=str(run.template_file),
        max_length=setup["eval_max_length"],
        max_new_tokens=setup["renderer"].max_answer_tokens,
        no_answer=setup["renderer"].no_answer,
        batch_size=config.validation_batch_size if backend == "hf" else None,
    )
    return F1Evaluation(
        run,
        setup["validation"][: config.eval_limit],
        eval_config,
        setup["tokenizer"],
        every=config.eval_steps,
        model_path=setup["model_path"],
        patience=config.early_stopping_patience,
    )
