"""koqa's GRPO trainer: TRL's GRPOTrainer, with each question's prompt shared by its sampled answers.

GRPO samples N answers to one question and learns from how their rewards differ. Done plainly, the
prompt (instruction, passage, question: most of the tokens) is computed N times when sampling and
N times again in the loss. Here:

* sampling (`sample_answers`) runs the prompt once, copies its keys and values N times and decodes
  the N answers from them;
* the loss (`KoqaGRPOTrainer._get_per_token_logps_and_entropies`) packs each question into one
  sequence, the prompt once and then each answer as a branch, with koqa's shared-context masks
  (koqa/shared_context.py): every answer sees the prompt and itself only, at the positions it would
  have alone. The last prompt token starts every branch, since it is what predicts each answer's
  first token. The LM head runs only at the positions that predict an answer token. The loss and
  its gradients are those of TRL's unshared computation (tests/test_rl.py checks them in float64).

This module imports torch and TRL: only `koqa rl` imports it.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from koqa.shared_context import model_attention_masks

log = logging.getLogger(__name__)


@torch.no_grad()
def sample_answers(
    model,
    prompt_ids: list[int],
    n: int,
    *,
    max_new_tokens: int,
    temperature: float,
    eos_ids: set[int],
    pad_id: int,
    shared: bool = True,
) -> list[list[int]]:
    """`n` answers sampled to one prompt, each ending at its first end-of-sequence token (kept) or
    after `max_new_tokens`. `shared`: the prompt runs once and its cache is copied `n` times; else
    the prompt runs `n` times, as `generate` over repeated prompts does."""
    device = next(model.parameters()).device
    prompt = torch.tensor([prompt_ids], device=device)
    if shared:
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].expand(n, -1)
    else:
        out = model(input_ids=prompt.expand(n, -1), use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1]
    eos = torch.tensor(sorted(eos_ids), device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    steps = []
    for step in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        # a draw from `probs` as the exponential race (what multinomial computes, without its slow CPU path)
        token = (probs / torch.empty_like(probs).exponential_(1)).argmax(dim=-1)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        steps.append(token)
        done |= torch.isin(token, eos)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        out = model(input_ids=token[:, None], past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
    tokens = torch.stack(steps, dim=1).tolist()
    answers = []
    for row in tokens:
        end = next((k + 1 for k, t in enumerate(row) if t in eos_ids), len(row))
        answers.append(row[:end])
    return answers


def groups_of(prompts: list[list[int]]) -> list[tuple[int, int]]:
    """(first, end) row ranges of consecutive rows with the same prompt: GRPO's samples of one question."""
    spans, start = [], 0
    for k in range(1, len(prompts) + 1):
        if k == len(prompts) or prompts[k] != prompts[start]:
            spans.append((start, k))
            start = k
    return spans


def pack_groups(prompts: list[list[int]], answers: list[list[int]], pad_id: int):
    """One sequence per group of rows sharing a prompt: the prompt but its last token, then per answer a
    branch [last prompt token, answer]. Returns input_ids, position_ids, padding mask and shift_labels
    ([groups, length]; shift_labels[t] is the token position t predicts, -100 where none is scored),
    and for each row (group, index of its branch's first token)."""
    rows, where = [], []
    for g, (first, end) in enumerate(groups_of(prompts)):
        prompt = prompts[first]
        ids, pos, labels = list(prompt[:-1]), list(range(len(prompt) - 1)), [-100] * (len(prompt) - 1)
        for r in range(first, end):
            where.append((g, len(ids)))
            branch = [prompt[-1], *answers[r]]
            ids += branch
            pos += range(len(prompt) - 1, len(prompt) - 1 + len(branch))
            labels += [*answers[r], -100]
        rows.append((ids, pos, labels))
    width = max(len(ids) for ids, _, _ in rows)

    def padded(k, fill):
        return torch.tensor([row[k] + [fill] * (width - len(row[k])) for row in rows], dtype=torch.long)

    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _, _ in rows], dtype=torch.long)
    return padded(0, pad_id), padded(1, 0), mask, padded(2, -100), where


def shared_prompt_logps(
    model, input_ids, attention_mask, logits_to_keep: int, pad_id: int, temperature: float, compute_entropy=False
):
    """What GRPOTrainer._get_per_token_logps_and_entropies returns for TRL's batch (left-padded prompts
    then right-padded answers, `logits_to_keep` answer columns), computed over packed shared-prompt
    sequences: ([rows, logits_to_keep] log-probabilities, entropies or None), 0 past each answer's end.

    The LM head runs only where an answer token is predicted (a pre-hook hands it those hidden states,
    as koqa's SFT trainer does), and the log-softmax at `temperature` is taken over those rows: TRL's
    fused head, off CUDA, projects every position of the sequence, the prompt's included."""
    width = input_ids.size(1) - logits_to_keep
    prompts = [ids[m.bool()].tolist() for ids, m in zip(input_ids[:, :width], attention_mask[:, :width])]
    answers = [ids[m.bool()].tolist() for ids, m in zip(input_ids[:, width:], attention_mask[:, width:])]
    packed, positions, padding, shift_labels, where = pack_groups(prompts, answers, pad_id)
    device = input_ids.device
    packed, positions, padding, shift_labels = (t.to(device) for t in (packed, positions, padding, shift_labels))
    inner = model
    while hasattr(inner, "module"):  # DDP and the like
        inner = inner.module
    masks = model_attention_masks(inner.config, positions, padding, inner.get_input_embeddings().weight.dtype)
    scored = shift_labels != -100
    keep = scored.any(dim=0).nonzero().flatten()  # columns predicting an answer token in some sequence
    pairs = scored[:, keep]
    targets = shift_labels[:, keep][pairs]
    hook = inner.get_output_embeddings().register_forward_pre_hook(lambda _m, args: (args[0][pairs], *args[1:]))
    try:
        out = model(
            input_ids=packed, attention_mask=masks, position_ids=positions, logits_to_keep=keep, use_cache=False
        )
    finally:
        hook.remove()
    logits = out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))  # [answer tokens, vocab]
    log_probs = torch.log_softmax(logits / temperature, dim=-1)

    def per_position(values):  # [answer tokens] -> [sequences, length]
        kept = values.new_zeros(pairs.shape).masked_scatter(pairs, values)
        return values.new_zeros(shift_labels.shape).index_copy(1, keep, kept)

    chosen = per_position(log_probs.gather(-1, targets[:, None])[:, 0])
    spread = per_position(-(log_probs.exp() * log_probs).sum(-1)) if compute_entropy else None
    logps = chosen.new_zeros((input_ids.size(0), logits_to_keep))
    entropies = torch.zeros_like(logps) if compute_entropy else None
    for row, (g, start) in enumerate(where):
        k = len(answers[row])
        logps[row, :k] = chosen[g, start : start + k]
        if compute_entropy:
            entropies[row, :k] = spread[g, start : start + k]
    return logps, entropies


class KoqaGRPOTrainer(GRPOTrainer):
    """GRPOTrainer over koqa's rendered prompts: the dataset's prompts are question ids, `rendered` maps
    each to its prompt's token ids (the run's template and renderer), and the answers are sampled by
    `sample_answers`. `shared_prompt`: sample and score with the prompt shared (else as TRL does)."""

    def __init__(
        self, *args, rendered: dict[str, list[int]], max_new_tokens: int, shared_prompt: bool = True, **kwargs
    ):
        self.rendered, self.max_new_tokens, self.shared_prompt = rendered, max_new_tokens, shared_prompt
        super().__init__(*args, rollout_func=self.rollout, **kwargs)

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
    ):
        images = any(v is not None for k, v in kwargs.items() if k != "compute_aux_loss")
        if not self.shared_prompt or kwargs.get("compute_aux_loss") or images:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, **kwargs
            )
        with self.accelerator.autocast():
            logps, entropies = shared_prompt_logps(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                self._tokenizer.pad_token_id,
                self.temperature,
                compute_entropy,
            )
        return logps, entropies, None

    def rollout(self, prompts: list[str], trainer) -> dict:
        """TRL's rollout_func: `prompts` holds each question id once per sample, consecutively."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        prompt_ids, completion_ids = [], []
        try:
            for first, end in groups_of([[p] for p in prompts]):
                ids = self.rendered[prompts[first]]
                sampled = sample_answers(
                    model,
                    ids,
                    end - first,
                    max_new_tokens=self.max_new_tokens,
                    temperature=self.temperature,
                    eos_ids=set(self.eos_token_ids),
                    pad_id=self._tokenizer.pad_token_id,
                    shared=self.shared_prompt,
                )
                prompt_ids += [ids] * len(sampled)
                completion_ids += sampled
        finally:
            model.train(was_training)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


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
