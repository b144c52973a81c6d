"""One shared kiwipiepy analyser (loading it takes about a second), and the Hangul facts around it."""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=1)
def kiwi():
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=max(1, min(4, os.cpu_count() or 1)))


# Sentence-final punctuation (SF) closes a sentence in Kiwi's tag set.
SENTENCE_FINAL = "SF"
# Josa: case markers (JK*), auxiliary particles (JX) and conjunctive particles (JC).
PARTICLE_PREFIX = "J"


def final_consonant(char: str) -> int | None:
    """The final consonant (받침) of a Hangul syllable as its index in Unicode's order: 0 for none,
    4 for ㄴ, 8 for ㄹ, 18 for ㅄ, 20 for ㅆ...; None for a character that is not a Hangul syllable.
    It decides a particle's form (이/가, 을/를, 으로/로) and how a verb ending changes."""
    code = ord(char)
    return (code - 0xAC00) % 28 if 0xAC00 <= code <= 0xD7A3 else None
