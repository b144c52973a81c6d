"""Batched greedy generation with transformers (serves every PEFT adapter kind)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from koqa.eval.backends import GenerationParams, cut_at_stop, stop_token_ids

log = logging.getLogger(__name__)


class HFGenerator:
    """Generation with a transformers model (and PEFT adapter) in this process; `model_obj` and
    `tokenizer` serve a model already loaded (validation after training)."""

    name = "hf"
    streams = False

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        model_obj=None,
        tokenizer=None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from koqa.runtime import pick_device, pick_dtype

        self.device = device or pick_device()
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        if model_obj is None:
            model_obj = AutoModelForCausalLM.from_pretrained(model, dtype=pick_dtype(dtype, self.device))
            if adapter:
                from peft import PeftModel

                model_obj = PeftModel.from_pretrained(model_obj, adapter)
            model_obj.to(self.device)
        self.model = model_obj.eval()
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        self._stop_cache: dict[tuple, list[int]] = {}
        self._token_texts = None  # built on the first span-constrained batch
        self._torch = torch

    def _left_padded(self, sequences):
        """(ids, attention mask) with every sequence ending at the same, last column."""
        torch = self._torch
        width = max(len(seq) for seq in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        return ids, mask

    def generate(self, prompts: Sequence[list[int]], params: GenerationParams) -> list[str]:
        torch = self._torch
        stops = tuple(params.stop)
        if stops not in self._stop_cache:
            self._stop_cache[stops] = stop_token_ids(self.tokenizer, stops)
        eos_ids = self._stop_cache[stops]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        for start in range(0, len(order), params.batch_size):
            batch = order[start : start + params.batch_size]
            ids, mask = self._left_padded([prompts[i] for i in batch])
            width = ids.shape[1]
            constrain = {}
            if params.passages is not None:
                constrain["logits_processor"] = self._span_processor(
                    [params.passages[i] for i in batch], width, eos_ids
                )
            with torch.inference_mode():
                gen = self.model.generate(
                    **constrain,
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=params.max_new_tokens,
                    do_sample=False,
                    use_cache=True,  # a model the Trainer holds has config.use_cache False
                    eos_token_id=eos_ids,
                    pad_token_id=self.pad_id,
                )
            for row, i in enumerate(batch):
                text = self.tokenizer.decode(gen[row, width:], skip_special_tokens=True)
                out[i] = cut_at_stop(text, params.stop)
        return out

    def _span_processor(self, passages, width: int, stop_ids):
        from transformers import LogitsProcessorList

        from koqa.eval.span_constraint import HFSpanLogitsProcessor, TokenTexts

        if self._token_texts is None:
            self._token_texts = TokenTexts(self.tokenizer, stop_ids)
        return LogitsProcessorList([HFSpanLogitsProcessor(passages, self._token_texts, width)])

    def score(
        self, prompts: Sequence[list[int]], continuations: Sequence[list[int]], batch_size: int = 16
    ) -> list[float]:
        """Sum of the log-probabilities of each continuation's tokens after its prompt. Sequences are
        left-padded so that every continuation ends at the last column, and the LM head runs only on
        the last columns that predict a continuation token."""
        torch = self._torch
        scores: list[float] = [0.0] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(continuations[i])))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            sequences = [list(prompts[i]) + list(continuations[i]) for i in batch]
            keep = max(len(continuations[i]) for i in batch)
            ids, mask = self._left_padded(sequences)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=positions.to(self.device),
                    logits_to_keep=keep + 1,
                ).logits
            # logits[:, j] predicts the token at column width - keep + j
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            for row, i in enumerate(batch):
                n = len(continuations[i])
                if n == 0:
                    continue
                targets = torch.tensor(continuations[i], device=logprobs.device)
                picked = logprobs[row, keep - n :].gather(-1, targets[:, None])
                scores[i] = float(picked.sum())
        return scores

    def close(self) -> None:
        """Drop this generator's reference to the model, so that its memory can be freed."""
        self.model = None
