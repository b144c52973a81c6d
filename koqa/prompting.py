"""One prompt renderer, used by training and evaluation alike.

A template is a text file in ``prompts/`` with the placeholders ``{context}`` and ``{question}``;
the text after the last placeholder is the answer cue.  A file named ``*.chat.txt`` holds the user
message of a chat template instead: it is wrapped with the tokenizer's chat template, generation
prompt included.

The renderer works on token ids.  When the prompt would exceed ``max_length`` it shortens the
context only, so the instruction, the question and the answer cue always survive.  At training
time the kept context window contains the answer; at evaluation time the head is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from koqa.errors import SECRET_SHAPE, KoqaError

DEFAULT_TEMPLATE = "ko_instruct"
# what a model learns to answer an unanswerable (SQuAD 2.0) question; `koqa eval` reads it as no answer
NO_ANSWER = "답 없음"
_CONTEXT_MARK = "\u0000CONTEXT\u0000"


def template_dir() -> Path:
    return Path(str(resources.files("koqa.prompts")))


def available_templates() -> list[str]:
    return sorted(p.name.removesuffix(".txt") for p in template_dir().glob("*.txt"))


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str
    chat: bool

    @classmethod
    def load(cls, name_or_path: str) -> PromptTemplate:
        path = Path(name_or_path)
        if not path.is_file():
            path = template_dir() / f"{name_or_path}.txt"
        if not path.is_file():
            raise KoqaError(
                f"unknown prompt template '{name_or_path}'; shipped: {available_templates()}",
                field="template",
                fix="pass a shipped name or a path to a .txt file",
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise KoqaError(
                f"bytes at offset {exc.start} are not valid UTF-8", file=str(path), field="template"
            ) from None
        if SECRET_SHAPE.search(text):  # the template is copied into every run folder
            raise KoqaError(
                "template holds a string shaped like an access token; koqa never stores secrets",
                file=str(path),
                field="template",
            )
        for placeholder in ("{context}", "{question}"):
            if placeholder not in text:
                raise KoqaError(f"template lacks the placeholder {placeholder}", file=str(path))
        if text.count("{context}") != 1:
            raise KoqaError("template must contain {context} exactly once", file=str(path))
        return cls(name=path.name.removesuffix(".txt"), text=text, chat=path.name.endswith(".chat.txt"))


@dataclass
class RenderedPrompt:
    ids: list[int]
    context_cut: bool
    answer_in_window: bool = True


class PromptRenderer:
    def __init__(
        self,
        tokenizer,
        template: PromptTemplate,
        *,
        max_length: int = 1024,
        max_answer_tokens: int = 32,
        max_context_chars: int | None = None,
        no_answer: str = NO_ANSWER,
    ):
        self.tokenizer = tokenizer
        self.no_answer = no_answer
        self.template = template
        self.max_length = max_length
        self.max_answer_tokens = max_answer_tokens
        self.max_context_chars = max_context_chars
        self._bos = [tokenizer.bos_token_id] if (tokenizer.bos_token_id is not None and not template.chat) else []

    def frame_texts(self, question: str) -> tuple[str, str]:
        """The prompt text before and after the context, with the question filled in. The template is
        split at its one {context} first, so a question holding the text "{context}" stays text."""
        before, after = (part.replace("{question}", question) for part in self.template.text.split("{context}"))
        if not self.template.chat:
            return before, after
        if not getattr(self.tokenizer, "chat_template", None):
            raise KoqaError(
                f"template '{self.template.name}' is a chat template, but the model's tokenizer has none",
                field="template",
                fix="use --template ko_instruct",
            )
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": before + _CONTEXT_MARK + after}], tokenize=False, add_generation_prompt=True
        )
        before, _, after = text.rpartition(_CONTEXT_MARK)  # a NUL never reaches a question (data_tools.validation)
        return before, after

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def frame_ids(self, question: str) -> tuple[list[int], list[int]]:
        """Token ids before the context (BOS included) and after it, with the question filled in."""
        before, after = self.frame_texts(question)
        return self._bos + self._encode(before), self._encode(after)

    def frame_lengths(self, questions) -> list[int]:
        """Tokens around the context for each question, tokenized in batches."""
        from koqa.data_tools.stats import token_counts

        frames = [self.frame_texts(q) for q in questions]
        before = token_counts(self.tokenizer, [b for b, _ in frames])
        after = token_counts(self.tokenizer, [a for _, a in frames])
        return [len(self._bos) + b + a for b, a in zip(before, after)]

    def prompt_length(self, context: str, question: str) -> int:
        """Tokens of the whole prompt before any cutting."""
        before, after = self.frame_ids(question)
        return len(before) + len(self._encode(context)) + len(after)

    def render(
        self, context: str, question: str, answer_start: int | None = None, answer_len: int = 0
    ) -> RenderedPrompt:
        """Prompt ids; with `answer_start` (training) the kept context contains the answer."""
        cut = False
        if self.max_context_chars and len(context) > self.max_context_chars:
            lo = 0
            if answer_start is not None and answer_start >= 0:
                centre = answer_start + answer_len // 2
                lo = max(0, min(centre - self.max_context_chars // 2, len(context) - self.max_context_chars))
                answer_start -= lo
            context = context[lo : lo + self.max_context_chars]
            cut = True
        before, after = self.frame_ids(question)
        budget = self.max_length - len(before) - len(after) - self.max_answer_tokens
        if budget < 16:
            raise KoqaError(
                f"max_length {self.max_length} leaves {budget} tokens for the context "
                "after the instruction, question and answer cue",
                field="max_length",
                fix="raise max_length",
            )
        enc = self.tokenizer(context, add_special_tokens=False, return_offsets_mapping=answer_start is not None)
        ctx = enc.input_ids
        in_window = True
        if len(ctx) > budget:
            cut = True
            lo = 0
            if answer_start is not None and answer_start >= 0:
                offsets = enc["offset_mapping"]
                first = next((i for i, (s, e) in enumerate(offsets) if e > answer_start), len(ctx) - 1)
                last = next((i for i, (s, e) in enumerate(offsets) if e >= answer_start + answer_len), first)
                centre = (first + last) // 2
                lo = max(0, min(centre - budget // 2, len(ctx) - budget))
                in_window = lo <= first and last < lo + budget
            ctx = ctx[lo : lo + budget]
        elif answer_start is not None and answer_start < 0:
            in_window = False
        return RenderedPrompt(ids=before + ctx + after, context_cut=cut, answer_in_window=in_window)

    def target(self, record) -> tuple[str, int | None]:
        """(the answer a model is trained to give, where it starts in the context): the first gold
        answer, or the no-answer text for an unanswerable question (None: the context's head is kept)."""
        if record.unanswerable:
            return self.no_answer, None
        return record.answers[0], record.first_answer_start()

    def answer_ids(self, answer: str) -> list[int]:
        ids = self.tokenizer(answer, add_special_tokens=False).input_ids[: self.max_answer_tokens - 1]
        return ids + [self.tokenizer.eos_token_id]
