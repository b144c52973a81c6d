"""The reward of `koqa rl`: the leaderboard itself, plus two terms that keep answers honest.

Each sampled answer is post-processed exactly as `koqa eval` post-processes a generated one (first
line, the answer normaliser, the no-answer text read as no answer), then:

  f1        character F1 against the best gold answer: the function `koqa score` uses. For an
            unanswerable question, 1 for no answer and 0 for any answer.
  grounded  1 when the answer is a span of its passage (an extractive answer can always be one), 0
            when it is not or is empty; for an unanswerable question, 1 for no answer.
  length    minus the share by which the answer outruns the longest gold answer, down to -1; for an
            unanswerable question, -1 for any answer.

Each term is its own reward function, so TRL logs each one (rewards/f1/mean, ...) and weighs them
with the run's reward weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from koqa.eval.metrics import normalize_answer, score_one
from koqa.eval.pipeline import postprocess


class AnswerReader:
    """Completions read as `koqa eval` reads generated text. Each term's reward function reads the
    same completions, so the last READ_CACHE readings are kept: a step post-processes each answer once."""

    READ_CACHE = 4096

    def __init__(self, normalize: Callable[[str], str], no_answer: str):
        self.normalize, self.no_answer = normalize, no_answer
        self.read = functools.lru_cache(maxsize=self.READ_CACHE)(self._postprocess)

    def _postprocess(self, completion: str, context: str) -> str:
        return postprocess(completion, context, self.normalize, "free", self.no_answer)

    def __call__(self, completion: str, context: str) -> str:
        return self.read(completion, context)


def f1_term(answer: str, golds: list[str], context: str) -> float:
    return score_one(answer, golds)["f1"]


def grounded_term(answer: str, golds: list[str], context: str) -> float:
    if not golds:
        return float(not answer)
    return float(bool(answer) and answer in context)


def length_term(answer: str, golds: list[str], context: str) -> float:
    said = len(normalize_answer(answer).replace(" ", ""))
    if not golds:
        return -float(said > 0)
    longest = max(len(normalize_answer(g).replace(" ", "")) for g in golds)
    return -min(1.0, max(0, said - longest) / max(longest, 1))


TERMS = {"f1": f1_term, "grounded": grounded_term, "length": length_term}


def reward_functions(read: AnswerReader) -> list[Callable]:
    """TRL reward functions, one per term (named for its log line), reading the dataset's `context`
    and `answers` columns."""

    def make(name: str, term: Callable) -> Callable:
        def reward(prompts, completions, context, answers, **_) -> list[float]:
            return [term(read(c, ctx), list(golds), ctx) for c, ctx, golds in zip(completions, context, answers)]

        reward.__name__ = name
        return reward

    return [make(name, term) for name, term in TERMS.items()]
