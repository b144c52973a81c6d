"""`koqa sft` settings: one dataclass, its fields the command's flags (see koqa/settings.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from koqa.data_tools.readers import FORMATS, ON_BAD_ROW
from koqa.prompting import NO_ANSWER
from koqa.runtime import DTYPES
from koqa.settings import (
    AT_LEAST_ONE,
    BELOW_ONE,
    NON_NEGATIVE,
    POSITIVE,
    STEPS_OR_NO_LIMIT,
    columns_setting,
    encoding_setting,
    setting,
)
from koqa.time_budget import TIME_SCHEDULES
from koqa.trackers import missing_packages, report_to_setting
from koqa.train.methods import METHOD_SETTINGS, METHODS, Method

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SCHEDULE_OVER = ("steps", "minutes")
# transformers' schedulers that take no arguments beyond the warm-up (tests/test_settings.py checks
# the names against transformers); under schedule_over: minutes, those of koqa.time_budget.TIME_SCHEDULES
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
EVAL_BACKENDS = ("auto", "hf", "vllm")


# the settings every training command (koqa sft, koqa rl) reads its questions with
def data_setting(what: str):
    return setting(
        help=f"{what}: a `koqa preprocess` folder, or CSV, SQuAD JSON, JSONL, parquet, Arrow, "
        "a datasets folder or hf:OWNER/NAME[:split]",
        required=True,
    )


def resume_setting():
    return setting(False, help="continue from the last checkpoint in --out")


def data_format_setting():
    return setting("auto", help="input format", choices=FORMATS)


def on_bad_row_setting():
    return setting("fail", help="fail on the first bad row, or exclude bad rows", choices=ON_BAD_ROW)


# what may change when a run is resumed: how long it goes on, how it saves and logs, what is checked after
CHANGEABLE_ON_RESUME = frozenset(
    {
        "max_steps",
        "max_minutes",
        "epochs",
        "save_steps",
        "save_total_limit",
        "logging_steps",
        "report_to",
        "validation_limit",
        "validation_batch_size",
        "eval_steps",
        "eval_backend",
        "early_stopping_patience",
        "eval_max_length",
        "resume",
        "out",
        "data",
        "validation",
    }
)


@dataclass
class TrainConfig:
    # what to train on and where
    data: str | None = data_setting("training data")
    out: str | None = setting(help="run folder", required=True)
    validation: str | None = setting(help="validation file (default: validation.jsonl in the --data folder)")
    resume: bool = resume_setting()
    method: str = setting("lora", help="adapter method", choices=METHODS)
    model: str | None = setting(help="local HF model folder or cached hub id (default: the embedded Gemma 3 270M)")
    template: str = setting("ko_instruct", help="prompt template name in prompts/ or a file")
    # lengths
    max_length: int = setting(512, help="training sequence token limit", check=POSITIVE)
    max_context_chars: int | None = setting(
        1200, help="one-question training contexts are cut around the answer to this many characters", check=POSITIVE
    )
    max_answer_tokens: int = setting(32, help="answer token limit", check=POSITIVE)
    no_answer: str = setting(
        NO_ANSWER,
        help="the answer trained for an unanswerable (SQuAD 2.0) question; koqa eval reads it as no answer",
    )
    eval_max_length: int = setting(
        1024, help="the prompt limit `koqa eval` uses for this run's adapter", check=POSITIVE
    )
    # optimisation
    learning_rate: float | None = setting(
        help="default per method: lora/qlora 2e-4, prefix 1e-2, prompt 3e-2", check=POSITIVE
    )
    batch_size: int = setting(8, help="sequences per device and step", check=POSITIVE)
    gradient_accumulation_steps: int = setting(1, help="steps accumulated per optimiser step", check=POSITIVE)
    epochs: float = setting(
        1.0,
        help="passes over the training data; max_steps, where set, replaces it (transformers' rule)",
        check=POSITIVE,
    )
    max_steps: int = setting(-1, help="stop after N optimiser steps (-1: no limit)", check=STEPS_OR_NO_LIMIT)
    max_minutes: float | None = setting(
        help="stop after N minutes of training (counted across --resume); with "
        "schedule_over=minutes the cosine learning rate decays to 0 within them",
        check=POSITIVE,
    )
    # transformers reads a warm-up below 1 as a share of the run and 1 or more as a step count
    warmup_ratio: float = setting(0.03, help="share of the run spent warming the learning rate up", check=BELOW_ONE)
    lr_scheduler: str = setting("cosine", help="learning-rate schedule (transformers' name)", choices=LR_SCHEDULERS)
    schedule_over: str = setting(
        "steps",
        help="the learning-rate schedule runs over the steps, or over max_minutes of wall time",
        choices=SCHEDULE_OVER,
    )
    weight_decay: float = setting(0.0, help="AdamW weight decay", check=NON_NEGATIVE)
    seed: int = setting(42, help="seed of initialisation and data order", check=NON_NEGATIVE)
    save_steps: int = setting(50, help="checkpoint every N steps", check=POSITIVE)
    save_total_limit: int = setting(2, help="checkpoints kept", check=POSITIVE)
    logging_steps: int = setting(5, help="a log.jsonl row every N steps", check=POSITIVE)
    # LoRA / QLoRA
    lora_r: int = setting(16, help="LoRA rank", check=POSITIVE)
    lora_alpha: int = setting(32, help="LoRA scaling numerator", check=POSITIVE)
    lora_dropout: float = setting(
        0.0, help="dropout on the LoRA input; it draws a random mask for every adapted layer", check=BELOW_ONE
    )
    target_modules: list[str] = setting(DEFAULT_TARGETS, help="module names that get LoRA weights")
    skip_layers: int = setting(0, help="LoRA only on layers >= this index", check=NON_NEGATIVE)
    use_dora: bool = setting(False, help="DoRA: LoRA on the direction of each weight, plus a learnt magnitude")
    loraplus_lr_ratio: float | None = setting(
        help="LoRA+: the B matrices learn at this multiple of learning_rate", check=AT_LEAST_ONE
    )
    # prefix / prompt tuning
    num_virtual_tokens: int = setting(20, help="prefix / prompt tuning: virtual tokens", check=POSITIVE)
    prompt_init_text: str | None = setting(
        "다음 글을 읽고 질문에 답하세요. 답은 글에 나온 표현 그대로 짧게 쓰세요.",
        help="prompt tuning: the text its virtual tokens start from",
    )
    # regularisation: uniform noise on the input embeddings (NEFTune). Gemma scales its embeddings by
    # sqrt(hidden size), so a given relative noise needs a larger alpha there (docs/recipe.md)
    neftune_noise_alpha: float | None = setting(
        help="NEFTune noise on the input embeddings while training", check=POSITIVE
    )
    # speed
    answer_only_logits: bool = setting(True, help="run the LM head only where an answer token is predicted")
    shared_context: bool = setting(
        False, help="questions on one passage share one copy of it in a sequence (lora and qlora)"
    )
    max_questions_per_context: int = setting(8, help="with shared_context: questions per sequence", check=POSITIVE)
    group_by_length: bool = setting(True, help="batch sequences of similar length")
    dtype: str = setting("auto", help="compute dtype; auto is bf16 where the CPU or GPU has it", choices=DTYPES)
    attn_implementation: str | None = setting(
        help="eager, sdpa... (default: eager when training on CPU, where it is faster; the model's own elsewhere)"
    )
    gradient_checkpointing: bool = setting(False, help="recompute activations in the backward pass")
    compile_layers: bool | None = setting(
        help="torch.compile each decoder layer (fused norms, activations, LoRA and residuals); unset: on "
        "where the device's compiler is found, the method is not qlora and the run has 50+ steps or 5+ minutes",
    )
    # data augmentation (koqa/data_tools/counterfactual.py, synthetic_questions.py)
    counterfactual_copies: int = setting(0, help="copies of each passage with its answers swapped", check=NON_NEGATIVE)
    synthetic_questions: int = setting(0, help="questions made from each passage's own sentences", check=NON_NEGATIVE)
    # data
    data_format: str = data_format_setting()
    on_bad_row: str = on_bad_row_setting()
    columns: list[str] = columns_setting()
    encoding: str = encoding_setting()
    validation_limit: int = setting(
        200, help="validation questions scored after training; 0 for none", check=NON_NEGATIVE
    )
    validation_batch_size: int = setting(
        16, help="batch size of the validation scoring, after and during training", check=POSITIVE
    )
    eval_steps: int | None = setting(
        help="every N optimiser steps, score the validation questions (leaderboard F1 / EM) and keep the "
        "best adapter in RUN/best/",
        check=POSITIVE,
    )
    eval_limit: int = setting(200, help="with eval_steps: the validation questions scored", check=POSITIVE)
    eval_backend: str = setting(
        "auto",
        help="with eval_steps: hf generates in this process; vllm merges the adapter into a copy and serves "
        "it from a child process (LoRA); auto is vllm on a CPU where vLLM is installed, else hf",
        choices=EVAL_BACKENDS,
    )
    early_stopping_patience: int | None = setting(
        help="with eval_steps: stop after K evaluations in a row without a better F1", check=POSITIVE
    )
    report_to: list[str] = report_to_setting("the training loss, F1 during training and, later, koqa eval's scores")

    def resolve(self) -> None:
        if self.learning_rate is None and self.method in METHODS:
            self.learning_rate = METHODS[self.method].learning_rate

    def problems(self) -> list[tuple[str, str]]:
        method = METHODS.get(self.method)
        if method is None:
            return []
        found = missing_packages(self.report_to)
        found += unused_settings(self, method)
        if self.shared_context and not method.lora:
            found.append(
                (
                    "shared_context",
                    f"shared_context works with lora and qlora, not {self.method}: prefix "
                    "and prompt tuning put virtual tokens in front of every sequence (set shared_context: "
                    "false)",
                )
            )
        if self.shared_context and not self.answer_only_logits:
            found.append(
                (
                    "shared_context",
                    "shared_context needs answer_only_logits: true (TRL's own loss reads a plain padding mask)",
                )
            )
        if self.eval_backend == "vllm" and not method.lora:
            found.append(("eval_backend", f"eval_backend vllm serves LoRA adapters, not {self.method} (use hf)"))
        if self.schedule_over == "minutes" and self.lr_scheduler not in TIME_SCHEDULES:
            found.append(
                (
                    "lr_scheduler",
                    f"schedule_over: minutes follows {', '.join(TIME_SCHEDULES)} over the time budget, "
                    f"not {self.lr_scheduler}",
                )
            )
        if self.schedule_over == "minutes" and not self.max_minutes:
            found.append(
                (
                    "max_minutes",
                    "schedule_over: minutes needs a time budget (pass --max-minutes N or "
                    "set max_minutes in the config)",
                )
            )
        return found


# Settings that only act under another one: (setting, when it acts, what to set). Set to anything
# but its default where it would not act, it is refused, naming what would make it act.
CONDITIONAL_SETTINGS = (
    ("max_questions_per_context", lambda c: c.shared_context, "it packs questions with shared_context: true"),
    ("eval_limit", lambda c: c.eval_steps, "it counts the questions scored every eval_steps: set eval_steps"),
    ("eval_backend", lambda c: c.eval_steps, "it answers the questions scored every eval_steps: set eval_steps"),
    (
        "early_stopping_patience",
        lambda c: c.eval_steps,
        "early stopping needs evaluations during training: set eval_steps",
    ),
    (
        "validation_batch_size",
        lambda c: c.eval_steps or c.validation_limit,
        "it batches the validation scoring: set validation_limit above 0 or eval_steps",
    ),
)


def _default(name: str):
    f = TrainConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def unused_settings(config: TrainConfig, method: Method) -> list[tuple[str, str]]:
    """The settings given a value (other than their default) that this run would not read."""
    found = []
    for name in METHOD_SETTINGS:
        if name not in method.settings and getattr(config, name) != _default(name):
            users = ", ".join(m for m, spec in METHODS.items() if name in spec.settings)
            found.append((name, f"{name} is a setting of {users}, not of {config.method} (remove it)"))
    for name, acts, why in CONDITIONAL_SETTINGS:
        if getattr(config, name) != _default(name) and not acts(config):
            found.append((name, f"{name} would do nothing here: {why}"))
    return found
