"""Span-constrained decoding (`--span constrain`): every generated answer is a span of its passage.

The constraint works on characters, not on the passage's own tokens, so that an answer may start or
end inside a passage token (the passage's "원으로" may end an answer as "원"). Its state is the set of
passage positions where the text generated so far can end; a token is allowed when its text continues
the passage at one of them. At the start every position is open, so the first token may begin
anywhere (a leading space counts as passage text, as the prompt's "답:" is often followed by one).
The stop tokens (end of sequence, and any token holding a line break) are allowed once some
non-space text has been generated, so an answer ends where the model would end it, inside the
passage. Token texts come from the tokenizer once (each token decoded after an anchor, so that a
leading space stays), and a trie over them finds, for each passage position, the tokens that match
there.

The same `SpanConstraint` drives both backends: a transformers `LogitsProcessor` (hf_backend) and a
vLLM per-request logits processor (span_vllm, loaded into the engine by name).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

NEG_INF = float("-inf")


class TokenTexts:
    """The text of every token id of a tokenizer, and a character trie over those texts."""

    def __init__(self, tokenizer, stop_ids: Sequence[int]):
        anchor = tokenizer.encode("a", add_special_tokens=False)
        prefix = tokenizer.decode(anchor)
        special = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in special]
        decoded = tokenizer.batch_decode([anchor + [i] for i in ids])  # one call: the fast tokenizer's batch
        self.texts: dict[int, str] = {}
        for token_id, text in zip(ids, decoded):
            if not text.startswith(prefix):
                continue
            text = text[len(prefix) :]
            if text and "\ufffd" not in text and "\n" not in text:
                self.texts[token_id] = text
        self.trie: dict = {}
        for token_id, text in self.texts.items():
            node = self.trie
            for char in text:
                node = node.setdefault(char, {})
            node.setdefault(None, []).append(token_id)
        self.stop_ids = sorted(set(stop_ids))

    def matches_at(self, passage: str, start: int) -> list[tuple[int, int]]:
        """(token id, text length) of every token whose text equals passage[start:start + length]."""
        found, node, i = [], self.trie, start
        while i < len(passage):
            node = node.get(passage[i])
            if node is None:
                break
            i += 1
            found.extend((token_id, i - start) for token_id in node.get(None, ()))
        return found


@functools.lru_cache(maxsize=4)
def token_texts_for(tokenizer_path: str, stop: tuple[str, ...] = ("\n",)) -> TokenTexts:
    from transformers import AutoTokenizer

    from koqa.eval.backends import stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    return TokenTexts(tokenizer, stop_token_ids(tokenizer, stop))


class SpanConstraint:
    """The allowed next tokens of one answer that must be a span of `passage`."""

    def __init__(self, passage: str, texts: TokenTexts):
        self.texts = texts
        self.by_position = [texts.matches_at(passage, p) for p in range(len(passage))]
        self.passage = passage
        self.positions: set[int] | None = None  # None: nothing generated yet, every position open
        self.generated = ""
        self.seen = 0  # tokens of the answer consumed so far

    def advance(self, token_id: int) -> None:
        text = self.texts.texts.get(token_id)
        if text is None:  # a stop token (the answer is over) or one the mask never allowed
            self.positions = set()
            return
        starts = range(len(self.passage)) if self.positions is None else self.positions
        self.positions = {p + len(text) for p in starts if self.passage.startswith(text, p)}
        self.generated += text

    def follow(self, generated_ids: Sequence[int]) -> None:
        """Consume the tokens generated since the last call."""
        for token_id in generated_ids[self.seen :]:
            self.advance(token_id)
        self.seen = len(generated_ids)

    def allowed(self) -> list[int]:
        starts = range(len(self.passage)) if self.positions is None else self.positions
        ids = {token_id for p in starts if p < len(self.passage) for token_id, _ in self.by_position[p]}
        if self.generated.strip():
            ids.update(self.texts.stop_ids)
        if not ids:  # the passage is used up: only ending is left
            ids.update(self.texts.stop_ids)
        return sorted(ids)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` (one row) with every token but the allowed ones at -inf."""
        keep = torch.tensor(self.allowed(), dtype=torch.long, device=logits.device)
        masked = torch.full_like(logits, NEG_INF)
        masked[keep] = logits[keep]
        return masked


class HFSpanLogitsProcessor:
    """A transformers LogitsProcessor: row i of the batch must stay a span of passages[i]."""

    def __init__(self, passages: Sequence[str], texts: TokenTexts, prompt_width: int):
        self.constraints = [SpanConstraint(p, texts) for p in passages]
        self.width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for row, constraint in enumerate(self.constraints):
            constraint.follow(input_ids[row, self.width :].tolist())
            scores[row] = constraint.mask(scores[row])
        return scores
