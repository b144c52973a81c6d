"""koqa's trainer: TRL's SFTTrainer with the loss on answer tokens and the LM head only where it is needed.

With Gemma 3's 262k vocabulary the logits of every position dominate a CPU training step, so the
columns holding a position whose next token is an answer token (in any row of the batch) go to the
model as `logits_to_keep`, and a pre-hook on the LM head keeps only the (row, column) pairs that
really predict an answer token: logits are [answer tokens, vocab] instead of [batch, sequence,
vocab].  The loss is the same token-mean cross-entropy (tests/test_train.py).

This module imports torch and TRL: only the training run imports it.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from trl import SFTTrainer

from koqa.runs import RunFolder

log = logging.getLogger(__name__)


class AnswerOnlySFTTrainer(SFTTrainer):
    """SFTTrainer with koqa's options, given to the constructor:

    answer_only        project the LM head only at answer positions (else TRL's own loss)
    virtual_tokens     trained embeddings prepended to every sequence (prompt tuning): they shift
                       the columns the head keeps
    shared_context     batches carry the position_ids of shared-context sequences, whose attention
                       masks are built here (koqa/shared_context.py)
    questions_seen     the count a resumed run goes on from
    tokens_seen        likewise for TRL's token count
    lr_lambda          a learning-rate schedule that follows the wall clock (koqa/time_budget.py)
    loraplus_lr_ratio  LoRA+: the B matrices learn at this multiple of the learning rate
    """

    def __init__(
        self,
        *args,
        answer_only: bool = True,
        virtual_tokens: int = 0,
        shared_context: bool = False,
        questions_seen: int = 0,
        tokens_seen: int = 0,
        lr_lambda=None,
        loraplus_lr_ratio: float | None = None,
        **kwargs,
    ):
        self.answer_only = answer_only
        self.virtual_tokens = virtual_tokens
        self.shared_context = shared_context
        self.questions_seen = questions_seen
        self.lr_lambda = lr_lambda
        self.loraplus_lr_ratio = loraplus_lr_ratio
        self.compiled_loss = False  # set where the decoder layers are compiled (koqa/train/speed.py)
        super().__init__(*args, **kwargs)
        self._total_train_tokens = tokens_seen  # TRL counts from 0 in every process; --resume continues

    def create_optimizer(self, model=None):
        if self.loraplus_lr_ratio is None or self.optimizer is not None:
            return super().create_optimizer(model)
        from peft.optimizers import create_loraplus_optimizer

        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model or self.model)
        kwargs.pop("lr", None)
        self.optimizer = create_loraplus_optimizer(
            model or self.model,
            optimizer_cls,
            lr=self.args.learning_rate,
            loraplus_lr_ratio=self.loraplus_lr_ratio,
            loraplus_weight_decay=self.args.weight_decay,
            **kwargs,
        )
        return self.optimizer

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "position_ids" not in self._signature_columns:  # shared-context examples carry them
            self._signature_columns = [*self._signature_columns, "position_ids"]

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_lambda is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.lr_lambda)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        padding = inputs.get("attention_mask")
        if model.training:  # an answer starts where a label follows a -100
            self.questions_seen += int(((labels[:, 1:] != -100) & (labels[:, :-1] == -100)).sum())
            self._metrics["train"]["questions_seen"] = [self.questions_seen]
        if self.shared_context:
            from koqa.shared_context import model_attention_masks

            unwrapped = self.accelerator.unwrap_model(model)
            inputs = {
                **inputs,
                "attention_mask": model_attention_masks(
                    unwrapped.config, inputs["position_ids"], padding, unwrapped.get_input_embeddings().weight.dtype
                ),
            }
        if not self.answer_only:
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
            outputs = model(**model_inputs, logits_to_keep=keep + self.virtual_tokens)
        finally:
            hook.remove()
        logits = outputs.logits  # [answer tokens, vocab]
        loss_sum = (compiled_loss_sum if self.compiled_loss else loss_sum_fp32)(logits, gathered)
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


def loss_sum_fp32(logits, target):
    """Summed cross-entropy of the answer tokens, computed in fp32."""
    return F.cross_entropy(logits.float(), target, reduction="sum")


# The same, compiled with the decoder layers: the log-softmax over [answer tokens, vocab] and its
# backward run as fused kernels instead of separate operators
compiled_loss_sum = torch.compile(loss_sum_fp32, dynamic=True)


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux), or None where /proc is absent."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class JsonlLogger(TrainerCallback):
    """loss, learning rate, tokens/s and memory, one JSON line per logging step in RUN/log.jsonl."""

    def __init__(self, run: RunFolder, started: float, clock, tokens_before: int = 0):
        self.run, self.started, self.clock = run, started, clock
        self.last_tokens, self.last_time = tokens_before, time.perf_counter()
        self.evaluating = 0.0  # seconds of held-out evaluations since the last rate: not training time

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time = time.perf_counter()  # the first rate counts training, not loading

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        row = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0, 4),
            "elapsed_s": round(now - self.started, 1),
            "trained_s": round(self.clock.elapsed(), 1),
            **logs,
        }
        if "num_tokens" in logs:  # a training row; an evaluation's row (at a logging step, just before it) is not
            trained = now - self.last_time - self.evaluating
            if trained > 0:
                row["tokens_per_s"] = round((logs["num_tokens"] - self.last_tokens) / trained, 1)
            self.last_tokens, self.last_time, self.evaluating = logs["num_tokens"], now, 0.0
        else:
            self.evaluating += logs.get("eval_seconds", 0.0)
        current = current_rss_mb()  # what the process holds now
        peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if current is not None:
            # the kernel's high-water mark can trail the page count by a few pages: the peak is at least now
            row["rss_mb"], peak = current, max(peak, current)
        row["max_rss_mb"] = peak
        if torch.cuda.is_available():
            row["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        self.run.append_log(row)
        if "loss" in logs:
            rate = f", {row['tokens_per_s']:,.0f} tokens/s" if "tokens_per_s" in row else ""
            log.info(
                "step %d/%d: loss %.4f, learning rate %.3g%s",
                state.global_step,
                state.max_steps,
                logs["loss"],
                logs.get("learning_rate", 0.0),
                rate,
            )


def loss_curve_png(run: RunFolder) -> None:
    from koqa.plots import new_figure, write_png

    rows = [r for r in run.log_rows() if "loss" in r]
    if not rows:
        return
    fig, ax = new_figure()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color="#4477aa")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (answer tokens)")
    write_png(fig, run.loss_curve)


def trainer_state(checkpoint: str) -> dict:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
