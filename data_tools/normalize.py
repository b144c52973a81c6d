"""Answer normalisation as named, composable steps.

Each step is a function `str -> str`; `build_normalizer(["nfc", "whitespace", "josa"])` chains
them in the given order.  Pick steps by name in a config's `answer_normalization` list.

- ``whitespace``: collapse runs of whitespace to one space and strip the ends.
- ``nfc``: Unicode NFC (decomposed jamo compose into syllables).
- ``quotes_brackets``: remove quotes and brackets that wrap the whole answer, and unmatched ones
  left dangling at an end (``《토지》`` -> ``토지``; ``(주)삼성`` is kept).
- ``special_chars``: strip punctuation from the ends (``서울.`` -> ``서울``; ``3.14`` is kept).
- ``josa``: strip trailing Korean particles, only where kiwipiepy tags them as particles
  (``서울에서`` -> ``서울``; ``고양이`` is kept: there ``이`` is part of the noun).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

from koqa.data_tools.morphemes import PARTICLE_PREFIX, kiwi
from koqa.errors import KoqaError

Normalizer = Callable[[str], str]

_WHITESPACE = re.compile(r"\s+")
PAIRS = {
    "(": ")",
    "[": "]",
    "{": "}",
    "<": ">",
    "《": "》",
    "〈": "〉",
    "「": "」",
    "『": "』",
    "【": "】",
    "“": "”",
    "‘": "’",
    '"': '"',
    "'": "'",
}
_OPENERS = set(PAIRS)
_CLOSERS = set(PAIRS.values())
_END_PUNCT = ".,;:!?…·~、。，"
# Tags that a particle may follow: nouns, numbers, foreign words, Hanja, noun suffixes, closing
# brackets/quotes.  A "particle" after anything else (a verb stem, say) is an analysis we distrust.
_NOMINAL_TAGS = ("NNG", "NNP", "NNB", "NR", "NP", "SN", "SL", "SH", "XSN", "SSC", "SW", "W_")


def whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _balanced(text: str) -> bool:
    stack = []
    for ch in text:
        if ch in _OPENERS and not (ch in _CLOSERS and stack and stack[-1] == ch):
            stack.append(ch)
        elif ch in _CLOSERS:
            if not stack or PAIRS[stack[-1]] != ch:
                return False
            stack.pop()
    return not stack


def quotes_brackets(text: str) -> str:
    text = text.strip()
    while text:
        first, last = text[0], text[-1]
        if len(text) >= 2 and first in PAIRS and PAIRS[first] == last and _balanced(text[1:-1]):
            text = text[1:-1].strip()  # one pair wraps the whole answer
        elif first in _OPENERS and PAIRS[first] not in text[1:]:
            text = text[1:].strip()  # an opener whose closer never comes
        elif last in _CLOSERS and not any(PAIRS[o] == last for o in text[:-1] if o in _OPENERS):
            text = text[:-1].strip()  # a closer that was never opened
        elif last in _OPENERS and last not in _CLOSERS:
            text = text[:-1].strip()  # an opener left at the very end
        elif first in _CLOSERS and first not in _OPENERS:
            text = text[1:].strip()  # a closer at the very start
        else:
            break
    return text


def special_chars(text: str) -> str:
    return text.strip().strip(_END_PUNCT).strip()


def josa(text: str) -> str:
    """Strip trailing particles that kiwipiepy tags as particles after a nominal."""
    stripped = text.rstrip()
    if not stripped:
        return text
    tokens = kiwi().tokenize(stripped)
    cut = len(stripped)
    i = len(tokens) - 1
    while i > 0 and tokens[i].tag.startswith(PARTICLE_PREFIX) and tokens[i].start + tokens[i].len == cut:
        cut = tokens[i].start
        i -= 1
    if cut == len(stripped) or cut == 0 or not tokens[i].tag.startswith(_NOMINAL_TAGS):
        return text
    return stripped[:cut].rstrip()


STEPS: dict[str, Normalizer] = {
    "nfc": nfc,
    "whitespace": whitespace,
    "quotes_brackets": quotes_brackets,
    "special_chars": special_chars,
    "josa": josa,
}
DEFAULT_STEPS = ("nfc", "whitespace")


def build_normalizer(steps: Sequence[str] = DEFAULT_STEPS) -> Normalizer:
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise KoqaError(
            f"unknown answer normalisation step(s) {unknown}; known: {sorted(STEPS)}", field="answer_normalization"
        )
    chain = [STEPS[s] for s in steps]

    def normalize(text: str) -> str:
        for step in chain:
            text = step(text)
        return text

    return normalize


def span_in_context(answer: str, context: str) -> bool:
    """Is the (normalised) answer still a span of the context?"""
    return bool(answer) and answer in context
