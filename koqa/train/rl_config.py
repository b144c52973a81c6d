"""`koqa rl` settings: reinforcement learning (GRPO) on the leaderboard metric, continuing a `koqa sft`
run's LoRA adapter. One dataclass, its fields the command's flags (koqa/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass

from koqa.runtime import DTYPES
from koqa.settings import (
    BELOW_ONE,
    NON_NEGATIVE,
    POSITIVE,
    STEPS_OR_NO_LIMIT,
    Rule,
    columns_setting,
    encoding_setting,
    setting,
)
from koqa.trackers import missing_packages, report_to_setting
from koqa.train.train_config import (
    CHANGEABLE_ON_RESUME,
    EVAL_BACKENDS,
    LR_SCHEDULERS,
    data_format_setting,
    data_setting,
    on_bad_row_setting,
    resume_setting,
)

AT_LEAST_TWO: Rule = ("2 or more (advantages compare the answers of one question)", lambda v: v >= 2)
# what may change when a run is resumed: as for koqa sft, with the divergence guard's settings
RL_CHANGEABLE_ON_RESUME = (CHANGEABLE_ON_RESUME - {"validation_limit", "eval_steps", "eval_max_length"}) | {
    "divergence_patience",
    "stop_on_divergence",
}


@dataclass
class RLConfig:
    # what to start from, train on and where
    adapter: str | None = setting(help="the `koqa sft` run (or its adapter folder) to continue", required=True)
    checkpoint: str = setting(
        "best",
        help="of a run trained with eval_steps: start from its best adapter or its final one",
        choices=("best", "final"),
    )
    data: str | None = data_setting("training questions")
    out: str | None = setting(help="run folder of the new adapter", required=True)
    validation: str | None = setting(help="held-out questions (default: validation.jsonl in the --data folder)")
    resume: bool = resume_setting()
    # sampling and the reward
    num_generations: int = setting(8, help="answers sampled per question", check=AT_LEAST_TWO)
    questions_per_step: int = setting(2, help="questions per optimiser step", check=POSITIVE)
    temperature: float = setting(1.0, help="sampling temperature of the answers", check=POSITIVE)
    kl_weight: float = setting(
        0.0, help="weight of the KL penalty against the starting adapter (0: no reference pass)", check=NON_NEGATIVE
    )
    reward_f1: float = setting(
        1.0, help="weight of the leaderboard F1 against the best gold answer", check=NON_NEGATIVE
    )
    reward_grounded: float = setting(
        0.2, help="weight of the grounding term: 1 when the answer is a span of the passage", check=NON_NEGATIVE
    )
    reward_length: float = setting(
        0.2, help="weight of the length term: minus the share by which the answer outruns the gold", check=NON_NEGATIVE
    )
    shared_prompt: bool = setting(
        True,
        help="sample and score a question's answers over one copy of its prompt: its keys and values computed once",
    )
    # optimisation
    learning_rate: float = setting(2e-5, help="learning rate of the adapter", check=POSITIVE)
    lr_scheduler: str = setting("constant", help="learning-rate schedule (transformers' name)", choices=LR_SCHEDULERS)
    warmup_ratio: float = setting(0.0, help="share of the run spent warming the learning rate up", check=BELOW_ONE)
    weight_decay: float = setting(0.0, help="AdamW weight decay", check=NON_NEGATIVE)
    epochs: float = setting(
        1.0, help="passes over the training questions; max_steps, where set, replaces it", check=POSITIVE
    )
    max_steps: int = setting(-1, help="stop after N optimiser steps (-1: no limit)", check=STEPS_OR_NO_LIMIT)
    max_minutes: float | None = setting(
        help="stop after N minutes of training (counted across --resume)", check=POSITIVE
    )
    seed: int = setting(42, help="seed of sampling and data order", check=NON_NEGATIVE)
    save_steps: int = setting(50, help="checkpoint every N steps", check=POSITIVE)
    save_total_limit: int = setting(2, help="checkpoints kept", check=POSITIVE)
    logging_steps: int = setting(5, help="a log.jsonl row every N steps", check=POSITIVE)
    # held-out truth
    eval_steps: int = setting(
        25,
        help="every N steps, answer the validation questions greedily, score them (leaderboard F1 / EM) and "
        "keep the best adapter in RUN/best/",
        check=POSITIVE,
    )
    eval_limit: int = setting(200, help="the validation questions scored", check=POSITIVE)
    eval_backend: str = setting(
        "hf",
        help="how the evaluations answer: hf over the live weights, vllm from a merged copy in a child process",
        choices=EVAL_BACKENDS,
    )
    validation_batch_size: int = setting(16, help="batch size of the validation scoring", check=POSITIVE)
    early_stopping_patience: int | None = setting(
        help="stop after K evaluations in a row without a better F1", check=POSITIVE
    )
    divergence_patience: int = setting(
        2,
        help="K evaluations in a row where the mean reward rose and validation F1 fell: the run says so "
        "(and stops, with stop_on_divergence)",
        check=POSITIVE,
    )
    stop_on_divergence: bool = setting(
        True, help="stop when the reward and validation F1 part for divergence_patience evaluations"
    )
    # lengths (default: those of the run continued)
    max_length: int | None = setting(
        help="prompt and answer token limit (default: the run's training max_length)", check=POSITIVE
    )
    max_answer_tokens: int | None = setting(help="answer token limit (default: the run's)", check=POSITIVE)
    # speed
    dtype: str = setting("auto", help="compute dtype; auto is bf16 where the CPU or GPU has it", choices=DTYPES)
    attn_implementation: str | None = setting(help="eager, sdpa... (default: eager when training on CPU)")
    gradient_checkpointing: bool = setting(False, help="recompute activations in the backward pass")
    # data
    data_format: str = data_format_setting()
    on_bad_row: str = on_bad_row_setting()
    columns: list[str] = columns_setting()
    encoding: str = encoding_setting()
    report_to: list[str] = report_to_setting("the rewards, their terms and the validation F1")

    def resolve(self) -> None:
        pass

    def problems(self) -> list[tuple[str, str]]:
        found = missing_packages(self.report_to)
        if self.reward_f1 == self.reward_grounded == self.reward_length == 0:
            found.append(("reward_f1", "every reward weight is 0: there is nothing to learn from (set reward_f1)"))
        return found
