"""`koqa rl`: continue a `koqa sft` run's LoRA adapter with GRPO on the leaderboard F1.

start -> read -> render -> build -> train -> save, as `koqa sft` (koqa/train/run.py) reads. The
prompts are the run's own template and renderer (the window kept around the answer, as in its
training); the reward is koqa/train/reward.py; sampling and the loss share each prompt across its
answers (koqa/train/rl_trainer.py). The held-out validation questions are answered greedily every
eval_steps, as `koqa eval` answers them, and RUN/best/ is chosen on that F1, not on the reward;
`RewardDivergence` says when the two part.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from koqa.atomic import write_json
from koqa.errors import KoqaError
from koqa.outputs import check_out
from koqa.runs import RunFolder, RunInfo, is_lora, locate_adapter
from koqa.train.rl_config import RL_CHANGEABLE_ON_RESUME, RLConfig

log = logging.getLogger(__name__)


class RewardDivergence(TrainerCallback):
    """After each evaluation: did the mean training reward since the last one rise while validation F1
    fell? After `patience` such evaluations in a row the run says so in one line, and with `stop` it
    stops (saving a checkpoint; RUN/best/ keeps the adapter from before)."""

    def __init__(self, patience: int, stop: bool):
        self.patience, self.stop = patience, stop
        self.rewards: list[float] = []
        self.last: tuple[float, float] | None = None  # (mean reward, F1) at the last evaluation
        self.first: tuple[float, float] | None = None  # where the current streak began
        self.streak = 0
        self.diverged = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "reward" in logs:
            self.rewards.append(float(logs["reward"]))
        if "eval_f1" not in logs or not self.rewards:
            return
        now = (sum(self.rewards) / len(self.rewards), float(logs["eval_f1"]))
        self.rewards = []
        if self.last is not None and now[0] > self.last[0] and now[1] < self.last[1]:
            self.first = self.first if self.streak else self.last
            self.streak += 1
        else:
            self.streak = 0
        self.last = now
        if self.streak >= self.patience and not self.diverged:
            self.diverged = True
            action = "stopping (stop_on_divergence: false goes on)" if self.stop else "going on (stop_on_divergence)"
            log.warning(
                "step %d: the mean reward rose from %.4f to %.4f while validation F1 fell from %.4f to %.4f over "
                "%d evaluations: the reward is being gamed; %s",
                state.global_step,
                self.first[0],
                now[0],
                self.first[1],
                now[1],
                self.streak,
                action,
            )
            if self.stop:
                control.should_training_stop = True
                control.should_save = True


def rl(config: RLConfig) -> dict:
    """GRPO from `config.adapter` on `config.data` into the run folder `config.out`; returns the summary."""
    run = RunFolder(config.out)
    inputs = [("--data", config.data), ("--validation", config.validation), ("--adapter", config.adapter)]
    check_out(config.out, inputs, command="rl", may_hold_a_run=True)
    if run.path.exists() and any(run.path.iterdir()) and not config.resume and run.holds_a_run():
        raise KoqaError("run folder already holds a run", file=str(run), fix="pass --resume, or choose another --out")
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
    from transformers import AutoTokenizer

    from koqa.eval.pipeline import refuse_no_answer_golds
    from koqa.model_store import resolve_model
    from koqa.prompting import PromptRenderer, PromptTemplate
    from koqa.train.data import read_training_records

    info = parent.info
    saved = parent.run.saved_config() or {}
    model_path = resolve_model(info.model)
    template = PromptTemplate.load(str(parent.template_path()))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    renderer = PromptRenderer(
        tokenizer,
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
    rows, rendered, excluded = [], {}, []
    for r in records:
        answer, start = renderer.target(r)
        prompt = renderer.render(r.context, r.question, answer_start=start, answer_len=len(answer))
        if not prompt.answer_in_window:
            excluded.append({"id": r.id, "reason": "answer not in the context window kept under max_length"})
            continue
        rendered[r.id] = prompt.ids
        rows.append({"prompt": r.id, "context": r.context, "answers": list(r.answers)})
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
    from koqa.train.rl_trainer import KoqaGRPOTrainer
    from koqa.train.trainer import JsonlLogger

    dtype = pick_dtype(config.dtype, pick_device())
    base = load_base_model(setup["model_path"], config, METHODS[parent.info.method], dtype)
    # with kl_weight, TRL copies this adapter as it starts into a frozen "ref" adapter: the reference
    # policy is the adapter started from (not the base model)
    model = PeftModel.from_pretrained(base, parent.dir, is_trainable=True)
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
    import torch
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(run.checkpoints_dir),
        per_device_train_batch_size=config.questions_per_step * config.num_generations,
        gradient_accumulation_steps=1,
        num_generations=config.num_generations,
        max_completion_length=max_new_tokens,
        temperature=config.temperature,
        beta=config.kl_weight,
        reward_weights=[config.reward_f1, config.reward_grounded, config.reward_length],
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # transformers 5 reads a value below 1 as the share of the run
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        save_strategy="steps",
        seed=config.seed,
        data_seed=config.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        gradient_checkpointing=config.gradient_checkpointing,
        report_to=list(config.report_to),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
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
